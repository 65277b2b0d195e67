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
    /// Every generated token / the time from submission to the last request's end: what a
    /// KV budget's admission policy changes (sequences waiting for memory count).
    pub total_tokens_per_s: f64,
    /// Sequences preempted per run (their blocks taken for others, recomputed later).
    pub preemptions: f64,
}

/// How the scheduler is set up for the runs.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Setup {
    /// `--kv-memory`.
    pub kv_memory: Option<usize>,
    /// `--reserve-max-tokens`.
    pub reserve_max_tokens: bool,
}

/// Runs each level `repeat` times after one untimed warm-up run.
pub(crate) fn run(
    engine: Engine,
    prompts: &dyn Fn(usize) -> Vec<u32>,
    params: &GenerateParams,
    levels: &[usize],
    repeat: usize,
    setup: Setup,
) -> Result<Vec<Level>, Box<dyn std::error::Error>> {
    let max = levels.iter().copied().max().unwrap_or(1);
    let opts = BatchOptions {
        max_batch: max,
        max_queue: max,
        kv_memory: setup.kv_memory,
        reserve_max_tokens: setup.reserve_max_tokens,
        // Every run sends the same prompts: from the cache, the timed runs would compute
        // nothing of them.
        prefix_caching: Some(false),
        ..BatchOptions::default()
    };
    let scheduler = Scheduler::new(Arc::new(engine), opts)?;
    let mut out = vec![];
    for &n in levels {
        let (mut pp, mut tg, mut first) = (vec![], vec![], vec![]);
        let (mut total, mut preempted) = (vec![], vec![]);
        for run in 0..=repeat {
            let preemptions = scheduler.metrics().preemptions;
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
            let all: usize = done.iter().map(|f| f.generated_tokens).sum();
            total.push(all as f64 / end.as_secs_f64());
            preempted.push((scheduler.metrics().preemptions - preemptions) as f64);
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
            total_tokens_per_s: median(total),
            preemptions: median(preempted),
        });
    }
    Ok(out)
}
