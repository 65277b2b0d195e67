//! The Mixtral forward pass, written once for every device ([`crate::device::Device`]):
//!
//! embedding → per layer [RMSNorm → attention → residual add → RMSNorm → router logits →
//! observe and steer → top-k → sparse MoE → residual add] → final RMSNorm → lm_head.

use crate::device::{Acts, AttentionIo, Device, KvStore, Seq, Stack};
use crate::steer::Intervention;
use crate::{Config, LayerRouting, Recorded, Result, RoutingTrace};
use std::sync::atomic::{AtomicBool, Ordering};

/// The rows of `h` the head turns into logits.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Head<'a> {
    /// The last `n` rows.
    Tail(usize),
    /// These rows.
    Rows(&'a [usize]),
}

/// One forward call: the tokens of one or more sequences, what to steer, record and return,
/// and the flag that stops it.
pub(crate) struct Step<'a> {
    /// `[T]` token ids, the sequences' rows one after another.
    pub tokens: &'a [u32],
    /// `[T]` their positions, each sequence continuing its cache.
    pub positions: &'a [usize],
    /// The router intervention (the default changes nothing).
    pub steer: &'a Intervention,
    /// Which rows get logits.
    pub head: Head<'a>,
    /// Checked before each layer: a set flag ends the call with [`crate::Error::Stopped`].
    pub stop: Option<&'a AtomicBool>,
}

/// What a forward call records, allocated only when asked for.
#[derive(Debug, Default)]
pub(crate) struct Records {
    /// The router's choices per layer.
    pub routing: Option<RoutingTrace>,
    /// `[L][T][E]` router logits after steering.
    pub router_logits: Option<Recorded>,
    /// `[L+2][T][D]` residual stream.
    pub hidden: Option<Recorded>,
}

impl Records {
    pub(crate) fn new(c: &Config, n: usize, opts: crate::ForwardOptions, top_k: usize) -> Records {
        Records {
            routing: opts.trace_routing.then(|| RoutingTrace {
                top_k,
                layers: vec![],
            }),
            router_logits: opts
                .router_logits
                .then(|| Recorded::new(n, c.num_local_experts)),
            hidden: opts.hidden_states.then(|| Recorded::new(n, c.hidden_size)),
        }
    }
}

/// Runs `step` through `w` on `d`: appends the tokens' keys and values to their sequences'
/// caches (the caller commits the new lengths) and leaves the head rows' logits in
/// `a.logits` (`[rows, V]`, the count returned).
#[expect(
    clippy::too_many_arguments,
    reason = "the device and model, the sequences and activations, and the step and its records"
)]
pub(crate) fn forward<D: Device>(
    d: &D,
    c: &Config,
    w: &Stack<D::Weight, D::Experts>,
    seqs: &mut [Seq<'_, D::Kv>],
    a: &mut Acts<D>,
    step: &Step<'_>,
    rec: &mut Records,
) -> Result<usize> {
    let (n, dim) = (step.tokens.len(), c.hidden_size);
    let k = step.steer.top_k(c);
    d.begin(c, a, step.tokens, step.positions, seqs)?;
    for seq in seqs.iter_mut() {
        seq.kv.reserve(seq.cached + seq.rows.len())?;
    }
    d.embed(&w.embed, &a.ids, dim, &mut a.h)?; // h: [T, D]
    record(d, &a.h, n * dim, &mut rec.hidden)?;
    for (l, lw) in w.layers.iter().enumerate() {
        if let Some(stop) = step.stop {
            // On a GPU the launches run ahead of the host: wait for the layers before, so a
            // stop lands between two layers there too.
            d.sync()?;
            if stop.load(Ordering::Relaxed) {
                for seq in seqs.iter_mut() {
                    seq.kv.truncate(seq.cached); // the caches stay as they were before the call
                }
                return Err(crate::Error::Stopped { layer: l });
            }
        }
        // Attention.
        d.rms_norm(c.norm(n), &a.h, &lw.attn_norm, &mut a.x)?; // x: [T, D]
        let mut qkv = [(&lw.wq, &mut a.q), (&lw.wk, &mut a.k), (&lw.wv, &mut a.v)];
        d.matmul(n, &a.x, &mut qkv, false)?; // q: [T, H·Dh], k, v: [T, G·Dh]
        let io = AttentionIo {
            pos: &a.pos,
            q: &mut a.q,
            k: &mut a.k,
            v: &a.v,
        };
        let rope = [c.rope(c.num_attention_heads), c.rope(c.num_key_value_heads)];
        d.attention(l, c.attention(), rope, io, seqs, &mut a.work, &mut a.att)?; // [T, H·Dh]
        d.matmul(n, &a.att, &mut [(&lw.wo, &mut a.out)], false)?; // out: [T, D]
        d.add(&mut a.h, &a.out, n * dim)?; // h += out
        // Sparse MoE.
        d.rms_norm(c.norm(n), &a.h, &lw.moe_norm, &mut a.x)?; // x: [T, D]
        d.matmul(n, &a.x, &mut [(&lw.router, &mut a.router)], true)?; // router: [T, E]
        let forced = observe_and_steer(d, c, l, step, &mut a.router, rec)?;
        d.top_k(c.router(n, k), &a.router, &mut a.routing)?; // routing: [T, K]
        choose(d, c, l, step, k, forced, &mut a.routing, rec)?;
        d.moe(
            c.moe(n, k),
            &a.x,
            &a.routing,
            &lw.experts,
            &mut a.work,
            &mut a.out,
        )?; // [T, D]
        d.add(&mut a.h, &a.out, n * dim)?; // h += out
        record(d, &a.h, n * dim, &mut rec.hidden)?;
    }
    if rec.hidden.is_some() {
        // The final norm of every row (the head normalises only the rows it returns).
        d.rms_norm(c.norm(n), &a.h, &w.norm, &mut a.x)?;
        if let Some(r) = &mut rec.hidden {
            let mut row = Vec::with_capacity(n * dim);
            d.read_act(&a.x, n * dim, &mut row)?;
            r.push(&row);
        }
    }
    head(d, c, w, step.head, n, a)
}

/// Records `[T, C]` of `x` into `r`, when asked for.
fn record<D: Device>(d: &D, x: &D::F32, len: usize, r: &mut Option<Recorded>) -> Result<()> {
    if let Some(r) = r {
        let mut slice = Vec::with_capacity(len);
        d.read(x, len, &mut slice)?;
        r.push(&slice);
    }
    Ok(())
}

/// The one place between the router's logits and its top-k where a request observes and
/// changes them: ablations and the hook edit the logits, the logits are recorded, and the
/// host copy forced routings need is kept. Touches the host only when something is asked.
fn observe_and_steer<D: Device>(
    d: &D,
    c: &Config,
    l: usize,
    step: &Step<'_>,
    logits: &mut D::F32,
    rec: &mut Records,
) -> Result<Option<Vec<f32>>> {
    let (steer, e, n) = (step.steer, c.num_local_experts, step.tokens.len());
    if steer.is_none() {
        // Nothing to change: read what is recorded, and write nothing back.
        record(d, logits, n * e, &mut rec.router_logits)?;
        return Ok(None);
    }
    let force = steer.force.iter().any(|f| f.layer == l);
    let mut kept = None;
    d.edit(logits, n * e, &mut |logits| {
        steer.edit_logits(l, step.positions, e, logits);
        if let Some(r) = &mut rec.router_logits {
            r.push(logits);
        }
        if force {
            kept = Some(logits.to_vec());
        }
    })?;
    Ok(kept)
}

/// After the top-k: forced routings replace the choices at their positions, and the choices
/// are traced when asked for.
#[expect(
    clippy::too_many_arguments,
    reason = "the layer and step, the routing, and the forced logits"
)]
fn choose<D: Device>(
    d: &D,
    c: &Config,
    l: usize,
    step: &Step<'_>,
    k: usize,
    forced: Option<Vec<f32>>,
    routing: &mut D::Routing,
    rec: &mut Records,
) -> Result<()> {
    if forced.is_none() && rec.routing.is_none() {
        return Ok(());
    }
    let (e, n) = (c.num_local_experts, step.tokens.len());
    d.edit_routing(routing, n * k, &mut |ids, weights| {
        if let Some(logits) = &forced {
            step.steer
                .force_choices(l, step.positions, logits, e, ids, weights);
        }
        if let Some(trace) = &mut rec.routing {
            trace.layers.push(LayerRouting {
                experts: ids.to_vec(),
                weights: weights.to_vec(),
            });
        }
    })
}

/// Final norm and lm_head over the `head` rows of `h`: `[rows, D] → [rows, V]`. Returns the
/// row count.
fn head<D: Device>(
    d: &D,
    c: &Config,
    w: &Stack<D::Weight, D::Experts>,
    head: Head<'_>,
    n: usize,
    a: &mut Acts<D>,
) -> Result<usize> {
    let last: [usize; 1];
    let tail: Vec<usize>;
    let rows = match head {
        // A decode step's one row, without an allocation.
        Head::Tail(1) => {
            last = [n - 1];
            &last[..]
        }
        Head::Tail(r) => {
            tail = (n - r.min(n)..n).collect();
            &tail[..]
        }
        Head::Rows(rows) => rows,
    };
    if rows.is_empty() {
        return Ok(0);
    }
    let r = rows.len();
    if r == n && matches!(head, Head::Tail(_)) {
        // Every row, in order: no gather.
        d.rms_norm(c.norm(n), &a.h, &w.norm, &mut a.last_x)?; // [T, D]
    } else {
        d.gather(&a.h, rows, c.hidden_size, &mut a.last)?; // [rows, D]
        d.rms_norm(c.norm(r), &a.last, &w.norm, &mut a.last_x)?;
    }
    d.matmul(r, &a.last_x, &mut [(&w.lm_head, &mut a.logits)], false)?; // [rows, V]
    Ok(r)
}
