//! `mixtral bench --concurrency 1,4,8,16`: N requests at once through the batch scheduler
//! (what `mixtral serve` runs), reporting aggregate prefill and decode tokens/s and time to
//! first token at each N, as llama.cpp's `llama-batched-bench` reports S_PP and S_TG.

use crate::bench::median;
use mixtral::{BatchOptions, Engine, GenerateParams, Prompt, Scheduler};
use std::sync::Arc;
use std::time::Duration;

/// One concurrency level's figures (medians over the timed runs).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Level {
    pub concurrency: usize,
    /// Prompt tokens of all requests / time until the last request's first token.
    pub prefill_tokens_per_s: f64,
    /// Tokens generated after each request's first / time from the last first token to the
    /// last request's end: every sequence decoding, as `llama-batched-bench`'s S_TG.
    pub decode_tokens_per_s: f64,
    /// Mean time to first token.
    pub ttft: Duration,
}

/// Runs each level `repeat` times after one untimed warm-up run.
pub(crate) fn run(
    engine: Engine,
    prompts: &dyn Fn(usize) -> Vec<u32>,
    params: &GenerateParams,
    levels: &[usize],
    repeat: usize,
) -> Result<Vec<Level>, Box<dyn std::error::Error>> {
    let max = levels.iter().copied().max().unwrap_or(1);
    let opts = BatchOptions {
        max_batch: max,
        max_queue: max,
        ..BatchOptions::default()
    };
    let scheduler = Scheduler::new(Arc::new(engine), opts)?;
    let mut out = vec![];
    for &n in levels {
        let (mut pp, mut tg, mut first) = (vec![], vec![], vec![]);
        for run in 0..=repeat {
            let handles = (0..n)
                .map(|i| scheduler.submit(&Prompt::Tokens(prompts(i)), params))
                .collect::<Result<Vec<_>, _>>()?;
            let mut done = vec![];
            for h in handles {
                let (_, f) = h.collect_all()?;
                done.push(f);
            }
            if run == 0 {
                continue;
            }
            let prompt: usize = done.iter().map(|f| f.prompt_tokens).sum();
            let generated: usize = done.iter().map(|f| f.generated_tokens - 1).sum();
            let last_first = done
                .iter()
                .filter_map(|f| f.time_to_first_token)
                .max()
                .unwrap_or_default();
            let end = done.iter().map(|f| f.total_time).max().unwrap_or_default();
            pp.push(prompt as f64 / last_first.as_secs_f64());
            tg.push(generated as f64 / (end - last_first).as_secs_f64());
            let ttfts: Vec<f64> = done
                .iter()
                .filter_map(|f| f.time_to_first_token)
                .map(|d| d.as_secs_f64())
                .collect();
            first.push(ttfts.iter().sum::<f64>() / ttfts.len() as f64);
        }
        out.push(Level {
            concurrency: n,
            prefill_tokens_per_s: median(pp),
            decode_tokens_per_s: median(tg),
            ttft: Duration::from_secs_f64(median(first)),
        });
    }
    Ok(out)
}
