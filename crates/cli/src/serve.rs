//! `mixtral serve`: the OpenAI-compatible server (`mixtral-server`) over a batch scheduler.

use crate::args::ModelArgs;
use mixtral::{BatchOptions, Scheduler};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

/// Arguments of `mixtral serve`.
#[derive(clap::Args)]
#[command(allow_negative_numbers = true)]
pub(crate) struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0: any free port; the address is printed).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// The most sequences generating at once.
    #[arg(long, default_value_t = 16)]
    max_batch: usize,
    /// KV cache memory for all sequences together: bytes, or with a K, M or G suffix
    /// (powers of 1024). Default: room for `--max-batch` sequences of 4,096 positions.
    #[arg(long, value_parser = parse_bytes)]
    kv_memory: Option<usize>,
    /// The most requests waiting to start; more get 429 Too Many Requests.
    #[arg(long, default_value_t = 256)]
    max_queue: usize,
    /// Prompt tokens a joining sequence prefills per step (beside the others' decode steps).
    #[arg(long, default_value_t = 128)]
    prefill_chunk: usize,
    /// The model's name in responses (default: the repo id, or the model path's last component).
    #[arg(long)]
    served_model_name: Option<String>,
    /// Seconds running requests get to finish after SIGINT/SIGTERM before they are cancelled.
    #[arg(long, default_value_t = 10.0)]
    shutdown_timeout: f64,
    /// An API key clients must send as `Authorization: Bearer KEY` on /v1 routes; repeat
    /// (or separate with commas in MIXTRAL_API_KEY) for several. Default: none needed.
    #[arg(
        long = "api-key",
        env = "MIXTRAL_API_KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    api_keys: Vec<String>,
    /// Host names the `Host` header may name besides the bound address's own (`*`: any);
    /// comma-separated or repeated. Needed behind a proxy or a DNS name on loopback.
    #[arg(long, value_delimiter = ',')]
    allowed_hosts: Vec<String>,
    /// An origin (`https://app.example`) whose web pages may call the server (CORS); `*`
    /// for any; comma-separated or repeated. Default: requests from web pages are refused.
    #[arg(long = "cors-origin", value_delimiter = ',')]
    cors_origins: Vec<String>,
    /// Share the keys and values of whole 64-token pages between requests that begin with
    /// the same tokens (a system prompt, a chat's earlier turns), and keep pages no request
    /// holds until their memory is needed: `auto` (on the CPU, off on a GPU), `on` or `off`.
    #[arg(long, value_enum, default_value_t = Toggle::Auto)]
    prefix_caching: Toggle,
    /// Reserve each request's prompt plus max_tokens of KV memory when it starts. By
    /// default sequences take memory as they grow, and when it runs out the newest is
    /// preempted (its tokens computed again later): more run at once, none waits for memory
    /// mid-answer with this flag.
    #[arg(long)]
    reserve_max_tokens: bool,
    /// The access log on standard error, a line per request once its response is sent:
    /// `text` (key=value pairs), `json` or `off`.
    #[arg(long, default_value = "text")]
    log_format: mixtral_server::LogFormat,
    /// Seconds a client may take to send a request's headers.
    #[arg(long, default_value_t = 10.0)]
    header_timeout: f64,
    /// Seconds a client may take to send a request's body.
    #[arg(long, default_value_t = 30.0)]
    body_timeout: f64,
    /// The most connections open at once (more wait to be accepted).
    #[arg(long, default_value_t = 512)]
    max_connections: usize,
    /// The largest request body: bytes, or with a K, M or G suffix.
    #[arg(long, value_parser = parse_bytes, default_value = "4M")]
    max_body: usize,
    /// Memory all requests being read, parsed and tokenized may take together (each counts
    /// 32 times its body); a request that does not fit gets 429. Bytes, or K, M, G.
    #[arg(long, value_parser = parse_bytes, default_value = "1G")]
    request_memory: usize,
}

impl Args {
    /// The server's access rules and limits.
    fn options(&self) -> Result<mixtral_server::Options, String> {
        // Up to a day: far past any sane timeout, and far from the overflow of an `Instant`.
        let secs = |name: &str, s: f64| {
            Duration::try_from_secs_f64(s)
                .ok()
                .filter(|d| !d.is_zero() && d.as_secs() <= MAX_TIMEOUT_S)
                .ok_or_else(|| {
                    format!(
                        "--{name} must be a positive number of seconds, at most {MAX_TIMEOUT_S}"
                    )
                })
        };
        if !(1..=MAX_CONNECTIONS).contains(&self.max_connections) {
            return Err(format!(
                "--max-connections must be from 1 to {MAX_CONNECTIONS}"
            ));
        }
        // Trimmed as the server trims the key a client sends (`MIXTRAL_API_KEY="k1, k2"`).
        let keys: Vec<String> = self.api_keys.iter().map(|k| k.trim().to_string()).collect();
        for (i, key) in keys.iter().enumerate() {
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "API key {} is empty or holds a character other than visible ASCII \
                     (a client could not send it in a header)",
                    i + 1
                ));
            }
        }
        let per_request = self
            .max_body
            .saturating_mul(mixtral_server::REQUEST_MEMORY_FACTOR);
        if per_request > self.request_memory {
            return Err(format!(
                "--request-memory ({} bytes) must hold one request of --max-body ({} bytes), \
                 counted {} times: at least {per_request} bytes",
                self.request_memory,
                self.max_body,
                mixtral_server::REQUEST_MEMORY_FACTOR
            ));
        }
        let mut o = mixtral_server::Options::default();
        o.api_keys = keys;
        if !self.allowed_hosts.is_empty() {
            // The bound address's own names stay allowed.
            let mut names = self.allowed_hosts.clone();
            names.extend(["localhost", "127.0.0.1", "::1", &self.host].map(String::from));
            o.allowed_hosts = Some(names);
        }
        o.cors_origins = self.cors_origins.clone();
        o.header_timeout = secs("header-timeout", self.header_timeout)?;
        o.body_timeout = secs("body-timeout", self.body_timeout)?;
        o.max_connections = self.max_connections;
        o.max_body = self.max_body;
        o.request_memory = self.request_memory;
        o.log_format = self.log_format;
        Ok(o)
    }
}

/// The longest `--header-timeout`, `--body-timeout` and `--shutdown-timeout`, seconds.
const MAX_TIMEOUT_S: u64 = 86_400;
/// The most `--max-connections` (a file descriptor each).
const MAX_CONNECTIONS: usize = 1 << 20;

/// A feature on, off, or chosen for the device.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(crate) enum Toggle {
    Auto,
    On,
    Off,
}

impl Toggle {
    /// `None` for `auto`.
    pub(crate) fn as_option(self) -> Option<bool> {
        match self {
            Toggle::Auto => None,
            Toggle::On => Some(true),
            Toggle::Off => Some(false),
        }
    }
}

/// `123`, `64K`, `512M`, `2G` (powers of 1024).
pub(crate) fn parse_bytes(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (digits, scale) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let scale: usize = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                _ => return Err(format!("unknown suffix `{c}` (expected K, M or G)")),
            };
            (&s[..i], scale)
        }
        _ => (s, 1),
    };
    let n: usize = digits
        .parse()
        .map_err(|_| format!("`{s}` is not a byte count (e.g. 2G, 512M, 1048576)"))?;
    n.checked_mul(scale)
        .ok_or_else(|| format!("`{s}` is too large"))
}

pub(crate) fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let deadline = Duration::try_from_secs_f64(args.shutdown_timeout)
        .ok()
        .filter(|d| d.as_secs() <= MAX_TIMEOUT_S)
        .ok_or_else(|| {
            format!("--shutdown-timeout must be a non-negative number of seconds, at most {MAX_TIMEOUT_S}")
        })?;
    let options = args.options()?;
    let engine = Arc::new(args.model.load()?);
    let opts = BatchOptions {
        max_batch: args.max_batch,
        kv_memory: args.kv_memory,
        max_queue: args.max_queue,
        prefill_chunk: args.prefill_chunk,
        prefix_caching: args.prefix_caching.as_option(),
        reserve_max_tokens: args.reserve_max_tokens,
    };
    let scheduler = Arc::new(Scheduler::new(engine, opts)?);
    // A repo id names the model as vLLM names it (`mistralai/Mixtral-8x7B-Instruct-v0.1`); a
    // path by its last component.
    let name = args
        .served_model_name
        .unwrap_or_else(|| match args.model.model.as_deref() {
            Some(p) if !p.exists() => p.to_string_lossy().into_owned(),
            Some(p) => p
                .file_name()
                .map_or_else(|| "mixtral".into(), |n| n.to_string_lossy().into_owned()),
            None => "mixtral".into(),
        });
    let m = scheduler.metrics();
    // The async threads only move bytes; the engine's own threads compute.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
            .await
            .map_err(|e| format!("cannot listen on {}:{}: {e}", args.host, args.port))?;
        let addr = listener.local_addr()?;
        if !addr.ip().is_loopback() && options.api_keys.is_empty() {
            eprintln!(
                "warning: listening on {addr}, beyond this machine, without an API key: anyone \
                 who can reach it can use it (set --api-key or MIXTRAL_API_KEY)"
            );
        }
        eprintln!(
            "serving {name} (max batch {}, KV budget {} blocks of {} bytes, prefix caching \
             {}); Ctrl-C stops",
            args.max_batch,
            m.kv_blocks_total,
            m.kv_block_bytes,
            if m.prefix_caching { "on" } else { "off" }
        );
        println!("listening on http://{addr}");
        std::io::stdout().flush()?;
        let app = mixtral_server::App::with_options(scheduler, name, options);
        mixtral_server::serve(listener, app, shutdown_signal(), deadline).await?;
        Ok::<(), Box<dyn std::error::Error>>(())
    })?;
    // A request stuck past the deadline (its parser, say) must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_secs(1));
    eprintln!("stopped");
    Ok(())
}

/// Completes at SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn byte_counts_parse_with_suffixes_and_refuse_nonsense() {
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes("512M"), Ok(512 << 20));
        assert_eq!(parse_bytes("2g"), Ok(2 << 30));
        assert_eq!(parse_bytes("64K"), Ok(64 << 10));
        for bad in ["", "G", "1.5G", "-1", "12X", "99999999999999999999G"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }
}
