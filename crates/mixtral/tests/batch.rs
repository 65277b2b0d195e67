//! The batch scheduler: concurrent requests get exactly the tokens they get alone, the KV
//! budget holds, cancelled requests free their memory at once, and a full queue says so.
//!
//! "Alone" is [`Engine::generate`]. With `LoadOptions::batch_invariant` batched logits equal
//! alone ones bit for bit, so greedy and seeded tokens are the same. Without it they agree to
//! about one ulp of their range (model crate, `tests/batch.rs`): greedy tokens are the same,
//! but a seeded draw from the random fixtures' nearly flat distributions can land on a
//! neighbour (an ulp reorders tokens of almost equal probability), so there the seeded
//! requests check count and finish only.

use mixtral::{
    BatchOptions, Device, Engine, Error, ErrorKind, Event, FinishReason, GenerateParams,
    LoadOptions, Prompt, SamplerConfig, Scheduler,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

fn fixture(rel: &str) -> String {
    format!("{}/../../tests/fixtures/{rel}", env!("CARGO_MANIFEST_DIR"))
}

/// Requests of mixed prompt lengths (one longer than a prefill chunk), greedy and seeded.
fn requests(engine: &Engine) -> Vec<(Prompt, GenerateParams)> {
    let v = engine.config().vocab_size;
    (0..10usize)
        .map(|i| {
            let len = [3, 40, 1, 150, 9][i % 5] + i;
            let ids = (0..len)
                .map(|j| 1 + ((j * 131 + i * 977 + 7) % (v - 1)) as u32)
                .collect();
            let mut params = engine.params();
            params.max_new_tokens = 12 + i;
            params.ignore_eos = true;
            params.sampling = if i % 3 != 2 {
                SamplerConfig::default()
            } else {
                SamplerConfig {
                    temperature: 0.8,
                    top_p: 0.95,
                    seed: i as u64,
                    top_logprobs: 2,
                    ..SamplerConfig::default()
                }
            };
            (Prompt::Tokens(ids), params)
        })
        .collect()
}

/// On every device: the CPU with and without batch invariance, and a GPU when one answers
/// (printed skip otherwise; `MIXTRAL_REQUIRE_GPU=1` fails). On the GPU a batched step runs its
/// matmuls over more rows (a tensor-core GEMM instead of the GEMV), so bf16 rounding may move a
/// greedy token: there counts, finishes and the KV accounting are checked and the token
/// agreement is printed.
#[test]
fn concurrent_requests_get_the_tokens_they_get_alone() {
    let cases = [
        (fixture("models/tiny-bf16"), false, Device::Cpu),
        (fixture("quant/tiny-q/Q4_K_M.gguf"), false, Device::Cpu),
        (fixture("models/tiny-bf16"), true, Device::Cpu),
        (fixture("quant/tiny-q/Q4_K_M.gguf"), true, Device::Cpu),
        (fixture("models/tiny-bf16"), false, Device::Cuda(0)),
        (fixture("quant/tiny-q/Q4_K_M.gguf"), false, Device::Cuda(0)),
    ];
    for (path, invariant, device) in cases {
        let opts = LoadOptions {
            batch_invariant: invariant,
            device,
            ..LoadOptions::default()
        };
        let engine = match Engine::load_with(&path, opts, |_, _| {}) {
            Ok(e) => Arc::new(e),
            Err(e) if e.kind() == ErrorKind::Device => {
                assert!(
                    std::env::var_os("MIXTRAL_REQUIRE_GPU").is_none(),
                    "MIXTRAL_REQUIRE_GPU is set but {device} does not load: {e}"
                );
                println!("skipped on {device}: {e}");
                continue;
            }
            Err(e) => panic!("{path} on {device}: {e}"),
        };
        let exact = device == Device::Cpu;
        let reqs = requests(&engine);
        let alone: Vec<Vec<u32>> = reqs
            .iter()
            .map(|(p, params)| {
                engine
                    .generate(p, params)
                    .unwrap()
                    .map(|t| t.unwrap().id)
                    .collect()
            })
            .collect();
        let opts = BatchOptions {
            max_batch: 6,
            prefill_chunk: 32,
            ..BatchOptions::default()
        };
        let scheduler = Arc::new(Scheduler::new(engine.clone(), opts).unwrap());
        // Submitted from one thread each, all at once.
        let start = Arc::new(Barrier::new(reqs.len()));
        let threads: Vec<_> = reqs
            .into_iter()
            .map(|(prompt, params)| {
                let (scheduler, start) = (scheduler.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    let handle = scheduler.submit(&prompt, &params).unwrap();
                    let (tokens, done) = handle.collect_all().unwrap();
                    assert_eq!(done.reason.as_str(), "length");
                    assert_eq!(done.generated_tokens, tokens.len());
                    assert!(tokens.iter().all(|t| t.logprob <= 0.0));
                    tokens.into_iter().map(|t| t.id).collect::<Vec<u32>>()
                })
            })
            .collect();
        for (i, (t, want)) in threads.into_iter().zip(alone).enumerate() {
            let got = t.join().unwrap();
            if exact && (invariant || i % 3 != 2) {
                assert_eq!(got, want, "{path} (invariant {invariant}): request {i}");
            } else {
                assert_eq!(got.len(), want.len(), "{path} on {device}: request {i}");
                let same = got.iter().zip(&want).take_while(|(a, b)| a == b).count();
                println!(
                    "{path} on {device}: request {i} equal for {same}/{}",
                    want.len()
                );
            }
        }
        assert!(scheduler.wait_idle(Duration::from_secs(10)));
        let m = scheduler.metrics();
        assert_eq!((m.requests_total, m.kv_blocks_used), (10, 0), "{m:?}");
        // Batching happened: fewer forward steps than one per token and prompt chunk.
        assert!(m.steps_total < m.generated_tokens_total, "{m:?}");
    }
}

#[test]
fn the_kv_budget_holds_and_requests_wait_for_it() {
    let engine = Arc::new(Engine::load(fixture("models/tiny-bf16")).unwrap());
    let block = scheduler_block_bytes(&engine);
    // Room for two one-block sequences only.
    let opts = BatchOptions {
        max_batch: 8,
        kv_memory: Some(2 * block),
        ..BatchOptions::default()
    };
    let scheduler = Scheduler::new(engine.clone(), opts).unwrap();
    let mut params = engine.params();
    params.max_new_tokens = 20;
    params.ignore_eos = true;
    let handles: Vec<_> = (0..6)
        .map(|i| {
            scheduler
                .submit(&Prompt::Tokens(vec![1, 100 + i, 7]), &params)
                .unwrap()
        })
        .collect();
    let done = AtomicBool::new(false);
    let peak_active = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let mut peak = 0;
            while !done.load(Ordering::Relaxed) {
                let m = scheduler.metrics();
                assert!(m.kv_blocks_used <= m.kv_blocks_total, "{m:?}");
                peak = peak.max(m.active);
                std::thread::sleep(Duration::from_micros(200));
            }
            peak
        });
        for h in handles {
            let (tokens, done) = h.collect_all().unwrap();
            assert_eq!((tokens.len(), done.reason.as_str()), (20, "length"));
        }
        done.store(true, Ordering::Relaxed);
        watcher.join().unwrap()
    });
    assert!(
        peak_active <= 2,
        "{peak_active} sequences in a budget of two blocks"
    );
    assert_eq!(scheduler.metrics().kv_blocks_total, 2);
    // A request that could never fit is refused up front.
    params.max_new_tokens = 3 * 256;
    let err = scheduler
        .submit(&Prompt::Tokens(vec![1, 2]), &params)
        .unwrap_err();
    assert!(matches!(err, Error::KvBudget { .. }), "{err}");
}

fn scheduler_block_bytes(engine: &Arc<Engine>) -> usize {
    let s = Scheduler::new(engine.clone(), BatchOptions::default()).unwrap();
    s.metrics().kv_block_bytes
}

#[test]
fn cancelling_or_dropping_a_request_frees_its_blocks_and_the_rest_go_on() {
    let engine = Arc::new(Engine::load(fixture("models/tiny-bf16")).unwrap());
    let scheduler = Scheduler::new(engine.clone(), BatchOptions::default()).unwrap();
    let mut params = engine.params();
    params.max_new_tokens = 100_000;
    params.ignore_eos = true;
    let long = scheduler
        .submit(&Prompt::Tokens(vec![1, 5, 6]), &params)
        .unwrap();
    let dropped = scheduler
        .submit(&Prompt::Tokens(vec![1, 8, 9]), &params)
        .unwrap();
    params.max_new_tokens = 5;
    let short = scheduler
        .submit(&Prompt::Tokens(vec![1, 10]), &params)
        .unwrap();
    drop(dropped);
    let (tokens, _) = short.collect_all().unwrap();
    assert_eq!(tokens.len(), 5);
    let cancel = long.cancel_token();
    let mut events = long.into_iter();
    assert!(matches!(events.next(), Some(Event::Token(_))));
    cancel.cancel();
    let last = events.find(|e| !matches!(e, Event::Token(_))).unwrap();
    let Event::Done(done) = last else {
        panic!("{last:?}")
    };
    assert_eq!(done.reason, FinishReason::Interrupted);
    assert!(scheduler.wait_idle(Duration::from_secs(10)));
    let m = scheduler.metrics();
    assert_eq!((m.active, m.kv_blocks_used, m.requests_finished), (0, 0, 3));
}

#[test]
fn a_full_queue_is_refused_and_bad_requests_fail_at_submission() {
    let engine = Arc::new(Engine::load(fixture("models/tiny-bf16")).unwrap());
    let opts = BatchOptions {
        max_batch: 1,
        max_queue: 1,
        ..BatchOptions::default()
    };
    let scheduler = Scheduler::new(engine.clone(), opts).unwrap();
    let mut params = engine.params();
    params.max_new_tokens = 4;
    // The first request's stream holds the scheduler's thread at its first token, so the
    // second stays queued and the third finds the queue full.
    let (release, held) = (Arc::new(Barrier::new(2)), Arc::new(Barrier::new(2)));
    let sink = {
        let (release, held) = (release.clone(), held.clone());
        let mut first = true;
        Box::new(move |_e: Event| {
            if std::mem::take(&mut first) {
                held.wait();
                release.wait();
            }
            true
        })
    };
    scheduler.submit_with(vec![1, 2, 3], &params, sink).unwrap();
    held.wait();
    let second = scheduler
        .submit(&Prompt::Tokens(vec![1, 4]), &params)
        .unwrap();
    let err = scheduler
        .submit(&Prompt::Tokens(vec![1, 5]), &params)
        .unwrap_err();
    assert!(matches!(err, Error::QueueFull { queued: 1 }), "{err}");
    release.wait();
    assert_eq!(second.collect_all().unwrap().0.len(), 4);
    // Checked before queueing: token ids, context, sampler parameters.
    let v = engine.config().vocab_size as u32;
    let bad = [
        (vec![1, v], params.clone()),
        (vec![], params.clone()),
        (vec![1; 40_000], params.clone()),
        (vec![1, 2], {
            let mut p = params.clone();
            p.sampling.temperature = -1.0;
            p
        }),
        (vec![1, 2], {
            let mut p = params.clone();
            p.max_new_tokens = 0;
            p
        }),
    ];
    for (ids, p) in bad {
        let len = ids.len();
        assert!(
            scheduler.submit_with(ids, &p, Box::new(|_| true)).is_err(),
            "{len} ids"
        );
    }
}

#[test]
fn cancel_all_when_idle_spares_later_requests_and_bad_options_are_refused() {
    let engine = Arc::new(Engine::load(fixture("models/tiny-bf16")).unwrap());
    let scheduler = Scheduler::new(engine.clone(), BatchOptions::default()).unwrap();
    assert!(scheduler.wait_idle(Duration::from_secs(10)));
    scheduler.cancel_all();
    std::thread::sleep(Duration::from_millis(20));
    let mut params = engine.params();
    params.max_new_tokens = 3;
    let (tokens, done) = scheduler
        .submit(&Prompt::Tokens(vec![1, 2]), &params)
        .unwrap()
        .collect_all()
        .unwrap();
    assert_eq!((tokens.len(), done.reason.as_str()), (3, "length"));
    assert_eq!(
        scheduler.metrics().generated_tokens_per_s,
        0.0,
        "idle: no rate"
    );
    for opts in [
        BatchOptions {
            max_batch: 0,
            ..BatchOptions::default()
        },
        BatchOptions {
            max_queue: 0,
            ..BatchOptions::default()
        },
        BatchOptions {
            prefill_chunk: 0,
            ..BatchOptions::default()
        },
        BatchOptions {
            kv_memory: Some(1),
            ..BatchOptions::default()
        },
    ] {
        assert!(Scheduler::new(engine.clone(), opts).is_err(), "{opts:?}");
    }
}

/// A batch-invariant engine on one thread, with greedy parameters for `max_new_tokens`.
fn invariant_engine(model: &str, max_new_tokens: usize) -> (Arc<Engine>, GenerateParams) {
    let opts = LoadOptions {
        threads: Some(1),
        batch_invariant: true,
        ..LoadOptions::default()
    };
    let engine = Arc::new(Engine::load_with(fixture(model), opts, |_, _| {}).unwrap());
    let mut params = engine.params();
    params.max_new_tokens = max_new_tokens;
    params.ignore_eos = true;
    params.sampling = SamplerConfig::default();
    (engine, params)
}

fn with_prefix_caching(engine: &Arc<Engine>, on: bool, kv_memory: Option<usize>) -> Scheduler {
    let opts = BatchOptions {
        prefix_caching: Some(on),
        kv_memory,
        ..BatchOptions::default()
    };
    Scheduler::new(engine.clone(), opts).unwrap()
}

fn ids_of(tokens: &[mixtral::Token]) -> Vec<u32> {
    tokens.iter().map(|t| t.id).collect()
}

/// A conversation's turns, each its predecessor's prompt and answer plus new tokens, on a
/// scheduler with the prefix cache and one without: each later turn starts from the whole
/// 64-token pages of what the previous turn computed (its prompt and all but its last
/// token), and gets the same tokens as the cold one. Batch-invariant engines, so "the same"
/// is bit for bit whatever the prefix's chunking was.
#[test]
fn a_growing_conversation_reuses_its_whole_pages_and_gets_the_same_tokens() {
    for model in ["models/tiny-bf16", "models/tiny-f32"] {
        let (engine, params) = invariant_engine(model, 6);
        let hot = with_prefix_caching(&engine, true, None);
        let cold = with_prefix_caching(&engine, false, None);
        let page = hot.metrics().kv_block_positions;
        assert_eq!(page, 64);
        let mut ids: Vec<u32> = std::iter::once(1).chain(100..200).collect();
        let (mut expected_cached, mut reused) = (0, 0);
        for turn in 0..4u32 {
            let prompt = Prompt::Tokens(ids.clone());
            let (got, done) = hot.submit(&prompt, &params).unwrap().collect_all().unwrap();
            let (want, cold_done) = cold
                .submit(&prompt, &params)
                .unwrap()
                .collect_all()
                .unwrap();
            let got = ids_of(&got);
            assert_eq!(got, ids_of(&want), "{model} turn {turn}");
            assert_eq!(done.cached_tokens, expected_cached, "{model} turn {turn}");
            assert_eq!(cold_done.cached_tokens, 0);
            reused += expected_cached;
            // What this turn's cache holds, in whole pages: its prompt and all but its last
            // token.
            expected_cached = (ids.len() + got.len() - 1) / page * page;
            ids.extend(&got);
            ids.extend((0..40).map(|j| 300 + 40 * turn + j));
        }
        assert!(reused >= 64 + 128 + 192, "{reused}");
        assert!(hot.wait_idle(Duration::from_secs(10)));
        let m = hot.metrics();
        assert_eq!(
            (m.prefix_cache_queries, m.prefix_cache_hits),
            (4, 3),
            "{m:?}"
        );
        assert_eq!(m.prefix_cache_tokens, reused as u64);
        // Nothing runs; the last turn's three whole pages (two of them shared with the
        // turns before) stay cached in so large a budget, the partial ones were freed.
        assert_eq!(m.kv_blocks_used, 0);
        assert_eq!(m.kv_blocks_cached, 3, "{m:?}");
        assert!(m.prefix_caching && !cold.metrics().prefix_caching);
        assert_eq!(cold.metrics().prefix_cache_hits, 0);
    }
}

/// A request that arrives while another with the same system prompt is still running
/// shares that one's published pages (two sequences, one copy of the prefix) and gets the
/// tokens it gets alone.
#[test]
fn a_running_request_shares_its_prefix_with_a_newcomer() {
    let (engine, mut params) = invariant_engine("models/tiny-bf16", 40);
    let hot = with_prefix_caching(&engine, true, None);
    let system: Vec<u32> = std::iter::once(1).chain(1000..1130).collect();
    let first: Vec<u32> = system.iter().copied().chain([7, 8, 9]).collect();
    let second: Vec<u32> = system.iter().copied().chain([17, 18]).collect();
    let alone = |ids: &Vec<u32>, params: &GenerateParams| -> Vec<u32> {
        engine
            .generate(&Prompt::Tokens(ids.clone()), params)
            .unwrap()
            .map(|t| t.unwrap().id)
            .collect()
    };
    let long = {
        let mut p = params.clone();
        p.max_new_tokens = 400;
        p
    };
    let running = hot.submit(&Prompt::Tokens(first.clone()), &long).unwrap();
    // Wait until the first has decoded: its prompt's pages are published.
    let mut running = running.into_iter();
    assert!(matches!(running.next(), Some(Event::Token(_))));
    params.max_new_tokens = 8;
    let (got, done) = hot
        .submit(&Prompt::Tokens(second.clone()), &params)
        .unwrap()
        .collect_all()
        .unwrap();
    assert_eq!(
        done.cached_tokens, 128,
        "two whole pages of the system prompt"
    );
    assert_eq!(ids_of(&got), alone(&second, &params));
    let rest: Vec<u32> = running
        .filter_map(|e| match e {
            Event::Token(t) => Some(t.id),
            _ => None,
        })
        .collect();
    assert_eq!(rest.len(), 399);
    assert_eq!(&alone(&first, &long)[1..], &rest[..]);
}

/// Two requests with the same system prompt admitted in one step compute its first page
/// twice; the second to publish holds the first's copy instead, so its own later pages
/// stay findable: its conversation's next turn reuses all of them.
#[test]
fn a_prefix_computed_twice_at_once_keeps_the_chain_findable() {
    let (engine, params) = invariant_engine("models/tiny-bf16", 4);
    let hot = with_prefix_caching(&engine, true, None);
    let system: Vec<u32> = std::iter::once(1).chain(1000..1100).collect();
    let a: Vec<u32> = system.iter().copied().chain(7..40).collect();
    let b: Vec<u32> = system.iter().copied().chain(50..90).collect();
    // A long request keeps the scheduler busy so that both arrive before the next
    // admission.
    let busy: Vec<u32> = std::iter::once(1).chain(2000..2400).collect();
    let busy = hot.submit(&Prompt::Tokens(busy), &params).unwrap();
    let ha = hot.submit(&Prompt::Tokens(a), &params).unwrap();
    let hb = hot.submit(&Prompt::Tokens(b.clone()), &params).unwrap();
    let (_, _) = ha.collect_all().unwrap();
    let (got, _) = hb.collect_all().unwrap();
    busy.collect_all().unwrap();
    let mut next = b.clone();
    next.extend(ids_of(&got));
    next.extend(500..520);
    let (_, done) = hot
        .submit(&Prompt::Tokens(next), &params)
        .unwrap()
        .collect_all()
        .unwrap();
    // b computed 141 + 3 positions: two whole pages.
    assert_eq!(done.cached_tokens, 128);
}

/// `cache_salt`: requests share cached pages only with requests of the same salt (none
/// being a salt of its own), and a bad salt is refused at submission.
#[test]
fn salts_keep_cached_prefixes_apart() {
    let (engine, params) = invariant_engine("models/tiny-f32", 4);
    let hot = with_prefix_caching(&engine, true, None);
    let prompt = Prompt::Tokens(std::iter::once(1).chain(200..330).collect());
    let run = |salt: Option<&str>| {
        let mut p = params.clone();
        p.cache_salt = salt.map(str::to_string);
        let (tokens, done) = hot.submit(&prompt, &p).unwrap().collect_all().unwrap();
        (ids_of(&tokens), done.cached_tokens)
    };
    let (first, cached) = run(Some("alice"));
    assert_eq!(cached, 0);
    for (salt, want) in [
        (Some("bob"), 0),
        (None, 0),
        (Some("alice"), 128),
        (None, 128),
    ] {
        let (tokens, cached) = run(salt);
        assert_eq!(cached, want, "salt {salt:?}");
        assert_eq!(tokens, first, "salt {salt:?}");
    }
    for bad in [String::new(), "x".repeat(mixtral::MAX_CACHE_SALT_BYTES + 1)] {
        let mut p = params.clone();
        p.cache_salt = Some(bad);
        let err = hot.submit(&prompt, &p).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        assert!(err.to_string().contains("cache_salt"), "{err}");
    }
}

/// Cached pages give their memory up to requests that need it, least recently released
/// first: in a budget of four pages, distinct two-page requests one after another leave the
/// last three cached (each takes a free page and the oldest cached one), a hit renews its
/// page, and a request for an evicted prefix computes it again.
#[test]
fn cached_pages_are_evicted_least_recently_released_first() {
    let (engine, params) = invariant_engine("models/tiny-f32", 4);
    let page = Scheduler::new(engine.clone(), BatchOptions::default())
        .unwrap()
        .metrics()
        .kv_block_bytes;
    let hot = with_prefix_caching(&engine, true, Some(4 * page));
    let prompt = |i: u32| -> Vec<u32> { (0..100).map(|j| 1 + (i * 337 + j) % 1000).collect() };
    for i in 0..4u32 {
        let (tokens, done) = hot
            .submit(&Prompt::Tokens(prompt(i)), &params)
            .unwrap()
            .collect_all()
            .unwrap();
        assert_eq!((tokens.len(), done.cached_tokens), (4, 0), "request {i}");
        assert!(hot.wait_idle(Duration::from_secs(10)));
        let m = hot.metrics();
        // 100 + 3 positions computed: one whole page published each; the partial second
        // page is freed, not cached.
        assert_eq!(m.kv_blocks_used, 0, "{m:?}");
        assert_eq!(m.kv_blocks_cached, (i as usize + 1).min(3), "{m:?}");
    }
    // The newest prefix is still cached.
    let (_, done) = hot
        .submit(&Prompt::Tokens(prompt(3)), &params)
        .unwrap()
        .collect_all()
        .unwrap();
    assert_eq!(done.cached_tokens, 64);
    // Four more distinct requests: prompt 3's page, released before theirs, goes third.
    for i in 4..8u32 {
        hot.submit(&Prompt::Tokens(prompt(i)), &params)
            .unwrap()
            .collect_all()
            .unwrap();
    }
    let (_, done) = hot
        .submit(&Prompt::Tokens(prompt(3)), &params)
        .unwrap()
        .collect_all()
        .unwrap();
    assert_eq!(done.cached_tokens, 0, "evicted");
}

/// A budget that holds two sequences at their longest serves 16 at once: each takes blocks
/// as it grows, and when they run out the newest is preempted and computed again later.
/// Every request still gets exactly the tokens it gets alone (a batch-invariant engine, so
/// recomputing a cache by prefill gives the bits decoding gave), preemption happened, and
/// the budget held throughout. Reserving `max_tokens` up front instead never preempts and
/// runs at most two at a time.
#[test]
fn sequences_grow_into_the_budget_and_the_newest_is_preempted_when_it_runs_out() {
    let opts = LoadOptions {
        threads: Some(1),
        batch_invariant: true,
        ..LoadOptions::default()
    };
    let engine = Arc::new(Engine::load_with(fixture("models/tiny-bf16"), opts, |_, _| {}).unwrap());
    let m = Scheduler::new(engine.clone(), BatchOptions::default())
        .unwrap()
        .metrics();
    let (block, bp) = (m.kv_block_bytes, m.kv_block_positions);
    let mut params = engine.params();
    params.ignore_eos = true;
    params.sampling = SamplerConfig::default();
    // Each sequence starts in one block and ends in several: 40 prompt tokens, 260 generated.
    params.max_new_tokens = 260;
    let longest = 300usize.div_ceil(bp);
    assert!(longest >= 2 && 41 <= bp, "blocks of {bp} positions");
    let prompts: Vec<Vec<u32>> = (0..16u32)
        .map(|i| (0..40).map(|j| 1 + (i * 131 + j * 7) % 30000).collect())
        .collect();
    let alone: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| {
            engine
                .generate(&Prompt::Tokens(p.clone()), &params)
                .unwrap()
                .map(|t| t.unwrap().id)
                .collect()
        })
        .collect();
    for reserve_max_tokens in [false, true] {
        let scheduler = Scheduler::new(
            engine.clone(),
            BatchOptions {
                max_batch: 16,
                kv_memory: Some(2 * longest * block),
                prefill_chunk: 64,
                reserve_max_tokens,
                ..BatchOptions::default()
            },
        )
        .unwrap();
        let handles: Vec<_> = prompts
            .iter()
            .map(|p| {
                scheduler
                    .submit(&Prompt::Tokens(p.clone()), &params)
                    .unwrap()
            })
            .collect();
        let done = AtomicBool::new(false);
        let peak_active = std::thread::scope(|s| {
            let watcher = s.spawn(|| {
                let mut peak = 0;
                while !done.load(Ordering::Relaxed) {
                    let m = scheduler.metrics();
                    assert!(m.kv_blocks_used <= m.kv_blocks_total, "{m:?}");
                    peak = peak.max(m.active);
                    std::thread::sleep(Duration::from_micros(200));
                }
                peak
            });
            for (i, (h, want)) in handles.into_iter().zip(&alone).enumerate() {
                let (tokens, done) = h.collect_all().unwrap();
                let got: Vec<u32> = tokens.iter().map(|t| t.id).collect();
                assert_eq!(&got, want, "request {i} (reserve {reserve_max_tokens})");
                assert_eq!(done.generated_tokens, 260);
            }
            done.store(true, Ordering::Relaxed);
            watcher.join().unwrap()
        });
        assert!(scheduler.wait_idle(Duration::from_secs(10)));
        let m = scheduler.metrics();
        assert_eq!((m.requests_finished, m.kv_blocks_used), (16, 0), "{m:?}");
        if reserve_max_tokens {
            assert_eq!(m.preemptions, 0, "{m:?}");
            assert!(peak_active <= 2, "{peak_active} running in reserved mode");
        } else {
            assert!(m.preemptions > 0, "{m:?}");
            assert!(peak_active > 2, "{peak_active} running: growth admits more");
        }
    }
}
