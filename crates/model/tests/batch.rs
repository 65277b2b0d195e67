//! `Model::forward_batch`: several sequences stepped as one forward call give each sequence
//! the logits it gets alone: its prompt prefilled in chunks interleaved with the others'
//! decode steps, and each decode step run beside the others'.
//!
//! With [`Model::with_batch_invariance`], bit for bit on every kernel set. Without it, a
//! one-token product (GEMV) and a many-token one (GEMM) sum in different orders, so the rows
//! agree to about one ulp of the logits' range (measured: at most 1.2e-6), with the same
//! greedy tokens.

use mixtral_kernels::Isa;
use mixtral_kernels::matmul::Precision;
use mixtral_model::{BatchItem, BatchScratch, ForwardOptions, Kernels, KvCache, Model};
mod common;
use common::fixture;
use mixtral_testkit::argmax;

/// Prompt lengths of the sequences: a 1-token prompt, short ones, and ones longer than a chunk.
const PROMPTS: [usize; 6] = [1, 5, 37, 9, 70, 3];
/// Prompt tokens a sequence prefills per batched step.
const CHUNK: usize = 16;
const STEPS: usize = 6;

fn prompt(len: usize, seed: usize, vocab: usize) -> Vec<u32> {
    (0..len)
        .map(|i| 1 + ((i * 131 + seed * 977 + 7) % (vocab - 1)) as u32)
        .collect()
}

/// Greedy alone: the whole prompt as one prefill, then one decode call per token. Returns the
/// logits row that chose each token.
fn alone(m: &Model, prompt: &[u32]) -> Vec<Vec<f32>> {
    let mut cache = m.new_cache();
    let pos: Vec<usize> = (0..prompt.len()).collect();
    let out = m
        .prefill(prompt, &pos, &mut cache, ForwardOptions::default())
        .unwrap();
    let mut rows = vec![out.last().to_vec()];
    for _ in 1..STEPS {
        let next = argmax(rows.last().unwrap()) as u32;
        let row = m.decode_logits(next, cache.len(), &mut cache).unwrap();
        rows.push(row.to_vec());
    }
    rows
}

struct Seq {
    prompt: Vec<u32>,
    cache: KvCache,
    /// Prompt tokens prefilled so far.
    done: usize,
    /// The token to run next once the prompt is in.
    next: Option<u32>,
    rows: Vec<Vec<f32>>,
}

/// Greedy batched: every step runs each unfinished sequence's next prompt chunk or its next
/// token, all in one call; sequences join at different steps.
fn batched(m: &Model, prompts: &[Vec<u32>]) -> Vec<Vec<Vec<f32>>> {
    let mut seqs: Vec<Seq> = prompts
        .iter()
        .map(|p| Seq {
            prompt: p.clone(),
            cache: m.new_cache(),
            done: 0,
            next: None,
            rows: vec![],
        })
        .collect();
    let mut scratch = BatchScratch::default();
    for step in 0.. {
        // Sequence i joins at step i: the others are mid-prompt or decoding by then.
        let live: Vec<usize> = (0..seqs.len().min(step + 1))
            .filter(|&i| seqs[i].rows.len() < STEPS)
            .collect();
        if live.is_empty() && step >= seqs.len() {
            break;
        }
        let mut next_ids = vec![];
        let mut items = vec![];
        let mut wants = vec![];
        let seqs_ptr: Vec<&mut Seq> = seqs
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| live.contains(i))
            .map(|(_, s)| s)
            .collect();
        for s in seqs_ptr {
            let (tokens, logits): (Vec<u32>, bool) = match s.next {
                Some(t) => (vec![t], true),
                None => {
                    let end = (s.done + CHUNK).min(s.prompt.len());
                    let chunk = s.prompt[s.done..end].to_vec();
                    s.done = end;
                    (chunk, end == s.prompt.len())
                }
            };
            next_ids.push(tokens);
            wants.push(logits);
            items.push(&mut s.cache);
        }
        let mut batch: Vec<BatchItem> = items
            .into_iter()
            .zip(&next_ids)
            .zip(&wants)
            .map(|((cache, tokens), &logits)| BatchItem {
                tokens,
                cache,
                logits,
            })
            .collect();
        let out = m.forward_batch(&mut batch, &mut scratch).unwrap().to_vec();
        drop(batch);
        let v = m.config().vocab_size;
        let mut rows = out.chunks_exact(v);
        for (&i, &w) in live.iter().zip(&wants) {
            if w {
                let row = rows.next().unwrap().to_vec();
                seqs[i].next = Some(argmax(&row) as u32);
                seqs[i].rows.push(row);
            }
        }
        assert!(rows.next().is_none(), "one row per sequence that asked");
    }
    seqs.into_iter().map(|s| s.rows).collect()
}

#[test]
fn batched_steps_give_each_sequence_its_logits_alone() {
    let mut cases = vec![];
    for isa in Isa::available() {
        for invariant in [false, true] {
            for precision in [Precision::F32, Precision::Bf16] {
                cases.push(("tiny-f32", Kernels::cpu(isa, precision), invariant));
                cases.push(("tiny-bf16", Kernels::cpu(isa, precision), invariant));
            }
            for precision in [Precision::F32, Precision::Int8] {
                let kernels = Kernels::cpu(isa, precision);
                cases.push(("tiny-q/Q4_K_M.gguf", kernels, invariant));
            }
        }
    }
    for (name, kernels, invariant) in cases {
        let path = if name.ends_with(".gguf") {
            fixture("").join("../quant").join(name)
        } else {
            fixture(name)
        };
        let m = Model::open(&path)
            .unwrap()
            .with_kernels(kernels)
            .with_batch_invariance(invariant);
        let v = m.config().vocab_size;
        let prompts: Vec<Vec<u32>> = PROMPTS
            .iter()
            .enumerate()
            .map(|(i, &n)| prompt(n, i, v))
            .collect();
        let got = batched(&m, &prompts);
        for (i, p) in prompts.iter().enumerate() {
            let want = alone(&m, p);
            assert_eq!(got[i].len(), want.len());
            for (step, (g, w)) in got[i].iter().zip(&want).enumerate() {
                let at =
                    format!("{name} {kernels:?} invariant {invariant} sequence {i} step {step}");
                if invariant {
                    let same = g.iter().zip(w).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{at}: not bit-identical");
                } else {
                    let range = w.iter().fold(0f32, |m, x| m.max(x.abs()));
                    let max = g
                        .iter()
                        .zip(w)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0f32, f32::max);
                    assert!(
                        max <= 1e-5 * range,
                        "{at}: max |diff| {max:e} over range {range}"
                    );
                }
                assert_eq!(argmax(g), argmax(w), "{at}: greedy token");
            }
        }
    }
}
