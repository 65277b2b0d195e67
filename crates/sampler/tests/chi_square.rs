//! Statistical tests: a seeded sampler's draws match the intended distribution (chi-square
//! goodness of fit), and the test is strong enough to reject a wrong distribution.

use mixtral_sampler::{Sampler, SamplerConfig};

/// Draws per test: 100k over <= 10 categories gives expected counts of hundreds or more.
const DRAWS: usize = 100_000;

/// The 0.999 quantile of the chi-square distribution with `df` degrees of freedom, from the
/// standard tables (equal to `scipy.stats.chi2.ppf(0.999, df)` to 3 decimals; rechecked by
/// bisection on the regularised incomplete gamma function). A correct sampler exceeds it with
/// probability 0.001; the seeds are fixed, so each test is deterministic.
fn chi2_999(df: usize) -> f64 {
    const TABLE: [f64; 9] = [
        10.828, 13.816, 16.266, 18.467, 20.515, 22.458, 24.322, 26.124, 27.877,
    ];
    TABLE[df - 1]
}

/// Pearson's statistic of `counts` against probabilities `p` (tokens with `p == 0` must have
/// count 0, else the statistic is infinite).
fn chi_square(counts: &[u64], p: &[f64]) -> f64 {
    let n: u64 = counts.iter().sum();
    counts
        .iter()
        .zip(p)
        .map(|(&c, &p)| {
            if p == 0.0 {
                return if c == 0 { 0.0 } else { f64::INFINITY };
            }
            let e = n as f64 * p;
            (c as f64 - e).powi(2) / e
        })
        .sum()
}

fn counts(cfg: SamplerConfig, logits: &[f32], history: &[u32]) -> Vec<u64> {
    let mut s = Sampler::new(cfg).unwrap();
    let mut c = vec![0u64; logits.len()];
    for _ in 0..DRAWS {
        c[s.sample(logits, history).unwrap().token as usize] += 1;
    }
    c
}

fn softmax(x: &[f64]) -> Vec<f64> {
    let m = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = x.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

/// Asserts the fit; `df` is the number of categories with positive probability minus one.
fn assert_fits(counts: &[u64], p: &[f64]) {
    let df = p.iter().filter(|&&x| x > 0.0).count() - 1;
    let stat = chi_square(counts, p);
    let bound = chi2_999(df);
    assert!(
        stat < bound,
        "chi-square {stat:.2} >= {bound} (df {df}); counts {counts:?}, expected probs {p:?}"
    );
}

const PROBS: [f64; 10] = [0.25, 0.18, 0.14, 0.11, 0.09, 0.07, 0.06, 0.05, 0.03, 0.02];

fn logits_of(p: &[f64]) -> Vec<f32> {
    // Any offset: softmax is shift-invariant.
    p.iter().map(|p| (p.ln() + 3.0) as f32).collect()
}

#[test]
fn plain_sampling_matches_softmax() {
    let logits = logits_of(&PROBS);
    let cfg = SamplerConfig {
        temperature: 1.0,
        seed: 12_345,
        ..Default::default()
    };
    assert_fits(&counts(cfg, &logits, &[]), &PROBS);
}

#[test]
fn temperature_sampling_matches_scaled_softmax() {
    let logits: Vec<f32> = (0..10).map(|i| -0.3 * i as f32).collect();
    let t = 0.6;
    let want = softmax(&logits.iter().map(|&l| f64::from(l) / t).collect::<Vec<_>>());
    let cfg = SamplerConfig {
        temperature: t as f32,
        seed: 7,
        ..Default::default()
    };
    assert_fits(&counts(cfg, &logits, &[]), &want);
}

#[test]
fn filtered_sampling_matches_the_renormalised_distribution() {
    let logits = logits_of(&PROBS);
    let t = 1.3;
    // Reference, written out directly: softmax at temperature t, top-8, renormalise, top-p
    // 0.8, renormalise, min-p 0.3.
    let q = softmax(&logits.iter().map(|&l| f64::from(l) / t).collect::<Vec<_>>());
    // PROBS is already in decreasing order, so the ranking is the index order.
    let mut keep: Vec<usize> = (0..8).collect();
    let mass8: f64 = keep.iter().map(|&i| q[i]).sum();
    let mut cum = 0.0;
    let mut n = 0;
    for &i in &keep {
        cum += q[i] / mass8;
        n += 1;
        if cum >= 0.8 {
            break;
        }
    }
    keep.truncate(n);
    let qmax = q[0];
    keep.retain(|&i| q[i] >= 0.3 * qmax);
    assert!(
        keep.len() >= 3,
        "the test should keep a few tokens: {keep:?}"
    );
    let mass: f64 = keep.iter().map(|&i| q[i]).sum();
    let mut want = vec![0.0; 10];
    for &i in &keep {
        want[i] = q[i] / mass;
    }
    let cfg = SamplerConfig {
        temperature: t as f32,
        top_k: Some(8),
        top_p: 0.8,
        min_p: 0.3,
        seed: 99,
        ..Default::default()
    };
    assert_fits(&counts(cfg, &logits, &[]), &want);
}

#[test]
fn penalised_sampling_matches_the_penalised_softmax() {
    let logits = logits_of(&PROBS);
    let history = [0u32, 0, 3, 9];
    // repetition 1.5 (HF: divide positive, multiply negative) then frequency 0.2, by hand.
    // Tokens 0 and 3 have positive logits, token 9 a negative one.
    let mut x: Vec<f64> = logits.iter().map(|&l| f64::from(l)).collect();
    for (tok, count) in [(0usize, 2.0), (3, 1.0), (9, 1.0)] {
        let r = if x[tok] > 0.0 {
            x[tok] / 1.5
        } else {
            x[tok] * 1.5
        };
        x[tok] = r - 0.2 * count;
    }
    assert!(x[0] > 0.0 && x[9] < 0.0);
    let want = softmax(&x);
    let cfg = SamplerConfig {
        temperature: 1.0,
        repetition_penalty: 1.5,
        frequency_penalty: 0.2,
        seed: 2024,
        ..Default::default()
    };
    assert_fits(&counts(cfg, &logits, &history), &want);
}

#[test]
fn the_test_rejects_a_wrong_distribution() {
    // Draws at temperature 0.8 tested against the temperature-1 distribution must fail:
    // the test has the power to see a sampler that ignores temperature.
    let logits = logits_of(&PROBS);
    let cfg = SamplerConfig {
        temperature: 0.8,
        seed: 12_345,
        ..Default::default()
    };
    let stat = chi_square(&counts(cfg, &logits, &[]), &PROBS);
    assert!(stat > 10.0 * chi2_999(9), "statistic only {stat}");
}
