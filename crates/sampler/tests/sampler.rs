//! Hand-computed cases for the public `Sampler` API: greedy, temperature, filters, penalties,
//! log-probabilities and errors.

use mixtral_sampler::{Error, Sampler, SamplerConfig};

fn sampler(cfg: SamplerConfig) -> Sampler {
    Sampler::new(cfg).unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

#[test]
fn greedy_is_argmax_with_ties_to_the_lowest_id() {
    let mut s = sampler(SamplerConfig::default());
    assert_eq!(s.sample(&[0.1, 3.0, -2.0, 3.0], &[]).unwrap().token, 1);
    assert_eq!(s.sample(&[f32::NEG_INFINITY, -5.0], &[]).unwrap().token, 1);
    assert_eq!(s.distribution(&[1.0, 2.0], &[]).unwrap(), vec![(1, 1.0)]);
}

#[test]
fn temperature_reshapes_the_distribution() {
    // logits 0 and ln 4 at temperature 2: weights 1 and 2, so probabilities 1/3 and 2/3.
    let mut s = sampler(SamplerConfig {
        temperature: 2.0,
        ..Default::default()
    });
    let d = s.distribution(&[0.0, 4f32.ln()], &[]).unwrap();
    assert_eq!(d[0].0, 1);
    assert!(
        close(d[0].1, 2.0 / 3.0) && close(d[1].1, 1.0 / 3.0),
        "{d:?}"
    );
    // At temperature 0.5 they are 1 and 16: 1/17 and 16/17.
    let mut s = sampler(SamplerConfig {
        temperature: 0.5,
        ..Default::default()
    });
    let d = s.distribution(&[0.0, 4f32.ln()], &[]).unwrap();
    assert!(close(d[0].1, 16.0 / 17.0), "{d:?}");
}

#[test]
fn filters_compose_in_order_top_k_top_p_min_p() {
    // Probabilities 0.4, 0.3, 0.2, 0.1 (ids 0..4).
    let logits: Vec<f32> = [0.4f32, 0.3, 0.2, 0.1].iter().map(|p| p.ln()).collect();
    let ids = |cfg: SamplerConfig| -> Vec<u32> {
        let mut s = sampler(SamplerConfig {
            temperature: 1.0,
            ..cfg
        });
        s.distribution(&logits, &[])
            .unwrap()
            .iter()
            .map(|x| x.0)
            .collect()
    };
    let d = SamplerConfig::default;
    assert_eq!(ids(d()), vec![0, 1, 2, 3]);
    assert_eq!(
        ids(SamplerConfig {
            top_k: Some(3),
            ..d()
        }),
        vec![0, 1, 2]
    );
    assert_eq!(ids(SamplerConfig { top_p: 0.65, ..d() }), vec![0, 1]);
    // top-p after top-k sees the renormalised 4/9, 3/9, 2/9: two already hold 7/9 >= 0.75,
    // while over the full distribution two hold only 0.7 < 0.75.
    assert_eq!(ids(SamplerConfig { top_p: 0.75, ..d() }), vec![0, 1, 2]);
    assert_eq!(
        ids(SamplerConfig {
            top_k: Some(3),
            top_p: 0.75,
            ..d()
        }),
        vec![0, 1]
    );
    // min-p 0.45: keep probability >= 0.18; min-p 0.55: keep probability >= 0.22.
    assert_eq!(ids(SamplerConfig { min_p: 0.45, ..d() }), vec![0, 1, 2]);
    assert_eq!(ids(SamplerConfig { min_p: 0.55, ..d() }), vec![0, 1]);
    assert_eq!(
        ids(SamplerConfig {
            top_k: Some(3),
            top_p: 0.75,
            min_p: 0.8,
            ..d()
        }),
        vec![0]
    );
    // Kept probabilities are renormalised.
    let mut s = sampler(SamplerConfig {
        temperature: 1.0,
        top_k: Some(2),
        ..d()
    });
    let dist = s.distribution(&logits, &[]).unwrap();
    assert!(close(dist[0].1, 4.0 / 7.0) && close(dist[1].1, 3.0 / 7.0));
}

#[test]
fn penalties_change_the_choice_and_the_logprobs() {
    let logits = [2.0f32, 1.5, -1.0];
    let mut s = sampler(SamplerConfig {
        repetition_penalty: 2.0,
        ..Default::default()
    });
    // Token 0 seen: 2 -> 1, so token 1 (1.5) wins.
    let out = s.sample(&logits, &[0]).unwrap();
    assert_eq!(out.token, 1);
    // Log-probs come from the penalised logits [1, 1.5, -1].
    let z = (1f64.exp() + 1.5f64.exp() + (-1f64).exp()).ln();
    assert!(close(f64::from(out.logprob), 1.5 - z), "{}", out.logprob);
    // Without history nothing is penalised.
    assert_eq!(s.sample(&logits, &[]).unwrap().token, 0);

    let mut s = sampler(SamplerConfig {
        presence_penalty: 0.4,
        frequency_penalty: 0.1,
        ..Default::default()
    });
    // Token 0 seen twice: 2 - 0.4 - 0.2 = 1.4 < 1.5.
    assert_eq!(s.sample(&logits, &[0, 0]).unwrap().token, 1);
    // Seen once: 2 - 0.5 = 1.5 ties with token 1: the lower id wins.
    assert_eq!(s.sample(&logits, &[0]).unwrap().token, 0);
}

#[test]
fn logprobs_of_the_chosen_token_and_the_top_alternatives() {
    // Probabilities 0.5, 0.25, 0.125, 0.125.
    let logits: Vec<f32> = [0.5f32, 0.25, 0.125, 0.125]
        .iter()
        .map(|p| p.ln())
        .collect();
    let mut s = sampler(SamplerConfig {
        top_logprobs: 3,
        ..Default::default()
    });
    let out = s.sample(&logits, &[]).unwrap();
    assert_eq!(out.token, 0);
    assert!(close(f64::from(out.logprob), 0.5f64.ln()));
    let ids: Vec<u32> = out.top.iter().map(|x| x.0).collect();
    assert_eq!(ids, vec![0, 1, 2], "ties to the lower id");
    assert!(close(f64::from(out.top[1].1), 0.25f64.ln()));
    assert!(close(f64::from(out.top[2].1), 0.125f64.ln()));

    // Temperature and filters do not change the reported log-probs.
    let mut hot = sampler(SamplerConfig {
        temperature: 5.0,
        top_k: Some(1),
        top_logprobs: 3,
        ..Default::default()
    });
    let out_hot = hot.sample(&logits, &[]).unwrap();
    assert_eq!(out_hot, out);
}

#[test]
fn bad_input_gives_typed_errors() {
    let mut greedy = sampler(SamplerConfig::default());
    let mut hot = sampler(SamplerConfig {
        temperature: 1.0,
        ..Default::default()
    });
    for s in [&mut greedy, &mut hot] {
        assert!(matches!(s.sample(&[], &[]), Err(Error::EmptyLogits)));
        let e = s.sample(&[0.0, f32::NAN], &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "logits must be finite or -inf, got NaN at token 1"
        );
        assert!(matches!(
            s.sample(&[f32::INFINITY], &[]),
            Err(Error::InvalidLogit { index: 0, .. })
        ));
        let e = s
            .sample(&[f32::NEG_INFINITY, f32::NEG_INFINITY], &[])
            .unwrap_err();
        assert!(matches!(e, Error::NoCandidates), "{e}");
        let e = s.sample(&[0.0, 1.0], &[2]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "history tokens must be below the vocabulary size 2, got 2"
        );
        assert!(s.distribution(&[], &[]).is_err());
    }
    let e = Sampler::new(SamplerConfig {
        top_p: 1.5,
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(e.to_string(), "top_p must be in (0, 1], got 1.5");
}

#[test]
fn masked_tokens_are_never_chosen() {
    let mut s = sampler(SamplerConfig {
        temperature: 100.0,
        seed: 3,
        ..Default::default()
    });
    let logits = [f32::NEG_INFINITY, 0.0, f32::NEG_INFINITY, 0.0];
    for _ in 0..1000 {
        let t = s.sample(&logits, &[]).unwrap().token;
        assert!(t == 1 || t == 3);
    }
}

#[test]
fn tiny_temperature_does_not_overflow() {
    let mut s = sampler(SamplerConfig {
        temperature: 1e-38,
        ..Default::default()
    });
    let logits = [3.0e38f32, -3.0e38, 3.0e38 - 1.0e32];
    for _ in 0..100 {
        assert_eq!(s.sample(&logits, &[]).unwrap().token, 0);
    }
}

#[test]
fn logit_bias_is_added_after_the_penalties() {
    // Greedy would pick token 1; a bias of +3 on token 2 makes it the argmax, and -100 on
    // token 1 all but bans it under sampling.
    let mut s = sampler(SamplerConfig {
        logit_bias: vec![(2, 3.0)],
        ..Default::default()
    });
    assert_eq!(s.sample(&[0.0, 2.0, 0.5], &[]).unwrap().token, 2);
    // After the presence penalty: token 1 (seen) drops to 2 - 1 = 1, then the bias of +0.25
    // on token 0 lifts it to 1.25, above it.
    let mut s = sampler(SamplerConfig {
        presence_penalty: 1.0,
        logit_bias: vec![(0, 0.25)],
        ..Default::default()
    });
    assert_eq!(s.sample(&[1.0, 2.0], &[1]).unwrap().token, 0);
    let mut s = sampler(SamplerConfig {
        temperature: 1.0,
        logit_bias: vec![(1, -100.0)],
        ..Default::default()
    });
    let d = s.distribution(&[0.0, 0.0], &[]).unwrap();
    assert_eq!(d[0].0, 0);
    assert!(d[0].1 > 0.999_999, "{d:?}");
}

#[test]
fn logit_bias_refuses_unknown_tokens_and_non_finite_biases() {
    let mut s = sampler(SamplerConfig {
        logit_bias: vec![(5, 1.0)],
        ..Default::default()
    });
    assert!(matches!(
        s.sample(&[0.0, 1.0], &[]),
        Err(Error::BiasTokenOutOfRange { token: 5, vocab: 2 })
    ));
    let bad = SamplerConfig {
        logit_bias: vec![(0, f32::NAN)],
        ..Default::default()
    };
    let e = Sampler::new(bad).unwrap_err().to_string();
    assert!(e.contains("logit_bias") && e.contains("token 0"), "{e}");
}
