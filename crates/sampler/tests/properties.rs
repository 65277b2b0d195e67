//! Property tests (proptest): the filters keep exactly what they should, seeded sampling is
//! deterministic, greedy is argmax, and the stop-string holder never prints a stop string.

use mixtral_sampler::{Sampler, SamplerConfig, StopConfig, StopReason, Stopper};
use proptest::prelude::*;

/// Logits with frequent exact ties (small integers) mixed with arbitrary values.
fn logits(len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(
        prop_oneof![-10.0f32..10.0, (-3i32..3).prop_map(|i| i as f32)],
        len,
    )
}

/// Softmax of `logits / t` in `f64`.
fn softmax(logits: &[f32], t: f32) -> Vec<f64> {
    let x: Vec<f64> = logits
        .iter()
        .map(|&l| f64::from(l) / f64::from(t))
        .collect();
    let m = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = x.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

fn dist(cfg: SamplerConfig, logits: &[f32]) -> Vec<(u32, f64)> {
    Sampler::new(cfg)
        .unwrap()
        .distribution(logits, &[])
        .unwrap()
}

/// Index of the first maximum.
fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best as u32
}

fn run_seq(cfg: &SamplerConfig, logits: &[f32], steps: usize) -> Vec<u32> {
    let mut s = Sampler::new(cfg.clone()).unwrap();
    let mut history = Vec::new();
    for _ in 0..steps {
        let t = s.sample(logits, &history).unwrap().token;
        history.push(t);
    }
    history
}

/// Text pieces over a small alphabet (with a two-byte character) so stop strings occur often.
fn piece() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!['a', 'b', '#', 'é', '\n']), 0..4)
        .prop_map(|v| v.into_iter().collect())
}

fn stop_string() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!['a', 'b', '#', 'é']), 1..4)
        .prop_map(|v| v.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn top_p_keeps_at_least_p_and_no_more_than_needed(
        logits in logits(1..2000),
        t in 0.2f32..3.0,
        p in 0.01f32..=1.0,
    ) {
        let d = dist(SamplerConfig { temperature: t, top_p: p, ..Default::default() }, &logits);
        let q = softmax(&logits, t);
        let p = f64::from(p);
        let kept: f64 = d.iter().map(|&(id, _)| q[id as usize]).sum();
        prop_assert!(kept >= p - 1e-9, "kept mass {kept} < p {p}");
        let least = d.last().unwrap().0 as usize;
        if d.len() > 1 {
            prop_assert!(kept - q[least] < p + 1e-9,
                "dropping the least likely still leaves {} >= p {p}", kept - q[least]);
        }
        // The kept tokens are the most likely ones, renormalised.
        let mut is_kept = vec![false; logits.len()];
        for &(id, prob) in &d {
            is_kept[id as usize] = true;
            prop_assert!((prob - q[id as usize] / kept).abs() < 1e-9);
        }
        let dropped_max = (0..logits.len()).filter(|&i| !is_kept[i]).map(|i| q[i]).fold(0.0, f64::max);
        prop_assert!(q[least] >= dropped_max);
    }

    #[test]
    fn top_k_keeps_exactly_min_k_vocab_the_highest_ties_to_lowest_id(
        logits in logits(1..500),
        k in 1usize..600,
        t in 0.5f32..2.0,
    ) {
        let d = dist(SamplerConfig { temperature: t, top_k: Some(k), ..Default::default() }, &logits);
        prop_assert_eq!(d.len(), k.min(logits.len()));
        let mut is_kept = vec![false; logits.len()];
        for &(id, _) in &d {
            is_kept[id as usize] = true;
        }
        let kept_min = d.iter().map(|&(id, _)| logits[id as usize]).fold(f32::INFINITY, f32::min);
        for (i, &l) in logits.iter().enumerate().filter(|&(i, _)| !is_kept[i]) {
            prop_assert!(l <= kept_min, "dropped {i} ({l}) above kept minimum {kept_min}");
            if l == kept_min {
                // Documented tie handling: at the boundary value, lower ids are kept.
                let last_tied_kept = d.iter().filter(|&&(id, _)| logits[id as usize] == l)
                    .map(|&(id, _)| id as usize).max().unwrap();
                prop_assert!(i > last_tied_kept);
            }
        }
    }

    #[test]
    fn min_p_keeps_exactly_the_tokens_above_min_p_times_max(
        logits in logits(1..500),
        t in 0.2f32..3.0,
        m in 0.0f32..=1.0,
    ) {
        let d = dist(SamplerConfig { temperature: t, min_p: m, ..Default::default() }, &logits);
        let q = softmax(&logits, t);
        let qmax = q.iter().copied().fold(0.0, f64::max);
        let threshold = f64::from(m) * qmax;
        let mut is_kept = vec![false; logits.len()];
        for &(id, _) in &d {
            is_kept[id as usize] = true;
        }
        for (i, &qi) in q.iter().enumerate() {
            // Exact comparison up to floating-point rounding at the boundary.
            if qi >= threshold * (1.0 + 1e-9) {
                prop_assert!(is_kept[i], "token {i} (p {qi}) >= {threshold} was dropped");
            } else if qi <= threshold * (1.0 - 1e-9) {
                prop_assert!(!is_kept[i], "token {i} (p {qi}) < {threshold} was kept");
            }
        }
    }

    #[test]
    fn seeded_sampling_is_deterministic(
        logits in logits(2..300),
        seed in any::<u64>(),
        t in 0.3f32..2.0,
        top_k in prop::option::of(1usize..50),
        top_p in 0.5f32..=1.0,
        steps in 1usize..40,
    ) {
        let cfg = SamplerConfig {
            temperature: t, top_k, top_p, seed,
            repetition_penalty: 1.2, presence_penalty: 0.1, frequency_penalty: 0.1,
            ..Default::default()
        };
        prop_assert_eq!(run_seq(&cfg, &logits, steps), run_seq(&cfg, &logits, steps));
    }

    #[test]
    fn different_seeds_differ_on_a_high_entropy_distribution(
        a in any::<u64>(),
        b in any::<u64>(),
    ) {
        prop_assume!(a != b);
        // Uniform over 1000 tokens: 16 equal draws by chance has probability 1e-48.
        let logits = vec![0.0f32; 1000];
        let cfg = |seed| SamplerConfig { temperature: 1.0, seed, ..Default::default() };
        prop_assert_ne!(run_seq(&cfg(a), &logits, 16), run_seq(&cfg(b), &logits, 16));
    }

    #[test]
    fn greedy_is_argmax_whatever_the_filters(
        logits in logits(1..500),
        top_k in prop::option::of(1usize..10),
        top_p in 0.01f32..=1.0,
        min_p in 0.0f32..=1.0,
        seed in any::<u64>(),
    ) {
        let mut s = Sampler::new(SamplerConfig {
            temperature: 0.0, top_k, top_p, min_p, seed, ..Default::default()
        }).unwrap();
        prop_assert_eq!(s.sample(&logits, &[]).unwrap().token, argmax(&logits));
    }

    #[test]
    fn temperature_to_zero_is_greedy(
        mut logits in logits(1..500),
        t in 1e-30f32..1e-3,
        seed in any::<u64>(),
    ) {
        // Make the maximum unique by a margin, so the limit is a single token.
        let best = argmax(&logits);
        logits[best as usize] += 0.05;
        let cfg = SamplerConfig { temperature: t, seed, ..Default::default() };
        let d = dist(cfg.clone(), &logits);
        // All the mass (up to exp(-0.05 / t) <= exp(-50) per other token) is on the argmax.
        prop_assert_eq!(d[0].0, best);
        prop_assert!(d[0].1 > 1.0 - 1e-15, "argmax has only {}", d[0].1);
        prop_assert!(run_seq(&cfg, &logits, 8).iter().all(|&x| x == best));
    }

    #[test]
    fn sampled_tokens_and_logprobs_are_consistent(
        logits in logits(1..300),
        t in 0.2f32..3.0,
        top_k in prop::option::of(1usize..20),
        top_p in 0.1f32..=1.0,
        min_p in 0.0f32..0.5,
        n in 0usize..8,
        seed in any::<u64>(),
    ) {
        let cfg = SamplerConfig { temperature: t, top_k, top_p, min_p, seed, top_logprobs: n, ..Default::default() };
        let d = dist(cfg.clone(), &logits);
        let total: f64 = d.iter().map(|x| x.1).sum();
        prop_assert!((total - 1.0).abs() < 1e-9);
        let mut s = Sampler::new(cfg).unwrap();
        let out = s.sample(&logits, &[]).unwrap();
        prop_assert!(d.iter().any(|&(id, _)| id == out.token), "drew a filtered-out token");
        // Log-probs are the log-softmax at temperature 1, whatever the sampling settings.
        let q1 = softmax(&logits, 1.0);
        prop_assert!((f64::from(out.logprob) - q1[out.token as usize].ln()).abs() < 1e-4);
        prop_assert_eq!(out.top.len(), n.min(logits.len()));
        if n > 0 {
            prop_assert_eq!(out.top[0].0, argmax(&logits));
        }
        for w in out.top.windows(2) {
            prop_assert!(w[0].1 >= w[1].1);
        }
    }

    #[test]
    fn stopper_never_prints_a_stop_string_and_prints_the_rest_once(
        pieces in prop::collection::vec(piece(), 0..40),
        stops in prop::collection::vec(stop_string(), 1..4),
        eos_at in prop::option::of(0usize..40),
        max in prop::option::of(1usize..50),
    ) {
        let mut st = Stopper::new(StopConfig {
            eos_token_ids: vec![2],
            stop_strings: stops.clone(),
            max_new_tokens: max,
            ..Default::default()
        }).unwrap();
        let mut out = String::new();
        let mut reason = None;
        for (i, p) in pieces.iter().enumerate() {
            let token = if Some(i) == eos_at { 2 } else { 10 };
            let step = st.push(token, p);
            out += &step.text;
            if step.stop.is_some() {
                reason = step.stop;
                break;
            }
        }
        out += &st.flush();

        // Reference: the text of the pieces pushed before EOS and within the limit...
        let inf = usize::MAX;
        let len = pieces.len();
        let (e, m) = (eos_at.unwrap_or(inf), max.unwrap_or(inf));
        let pushed = pieces[..len.min(e).min(m)].concat();
        // ...cut at the stop string that completes first (earliest end, then earliest start).
        let first = stops.iter()
            .filter_map(|s| pushed.find(s.as_str()).map(|start| (start + s.len(), start, s)))
            .min();
        let (want, want_reason) = match first {
            Some((_, start, s)) => (&pushed[..start], Some(StopReason::StopString(s.clone()))),
            None if e < len && e < m => (&pushed[..], Some(StopReason::Eos)),
            None if m <= len => (&pushed[..], Some(StopReason::MaxTokens)),
            None => (&pushed[..], None),
        };
        prop_assert_eq!(&out, want);
        prop_assert_eq!(reason, want_reason);
        for s in &stops {
            prop_assert!(!out.contains(s.as_str()), "printed stop string {s:?} in {out:?}");
        }
    }
}

#[test]
fn seeded_sampling_is_the_same_on_any_thread() {
    let logits: Vec<f32> = (0..32_000)
        .map(|i| ((i * 7919) % 1000) as f32 / 100.0)
        .collect();
    let cfg = SamplerConfig {
        temperature: 0.8,
        top_k: Some(50),
        top_p: 0.9,
        seed: 42,
        ..Default::default()
    };
    let want = run_seq(&cfg, &logits, 50);
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (cfg, logits) = (cfg.clone(), logits.clone());
            std::thread::spawn(move || run_seq(&cfg, &logits, 50))
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), want);
    }
}
