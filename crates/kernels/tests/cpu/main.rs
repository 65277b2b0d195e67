//! Property tests of every fast CPU kernel against its reference twin, for every ISA this
//! machine can run (the scalar path included), plus the named scenario tests.
//!
//! One test binary (one link) with a module per op. Cases default to 64 per property;
//! `PROPTEST_CASES` overrides that.

mod attention;
mod matmul;
mod moe;
mod qdot;
mod quant;
mod quantize;
mod small_ops;

use half::{bf16, f16};
use mixtral_kernels::Weight;
use proptest::prelude::*;
use proptest::test_runner::Config;

/// 64 cases unless `PROPTEST_CASES` says otherwise.
pub fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    Config {
        cases,
        ..Config::default()
    }
}

/// Sizes that stress the edges: every small size, and sizes either side of the 8-lane vector
/// width, the 16-row blocks and powers of two.
pub fn dim() -> impl Strategy<Value = usize> {
    prop_oneof![
        3 => 1usize..=17,
        2 => prop::sample::select(vec![31usize, 32, 33, 63, 64, 65, 127, 129]),
    ]
}

/// The same random values as f32, bf16 and f16, so each dtype's test can hand the reference
/// and the kernel the very same weights.
pub struct Weights {
    f32: Vec<f32>,
    bf16: Vec<bf16>,
    f16: Vec<f16>,
}

impl Weights {
    /// `n` values uniform in `[-1, 1)` scaled by `scale`.
    pub fn uniform(n: usize, seed: u64, scale: f32) -> Weights {
        let f32: Vec<f32> = mixtral_testkit::uniform(n, seed)
            .into_iter()
            .map(|v| v * scale)
            .collect();
        Weights {
            bf16: f32.iter().map(|&v| bf16::from_f32(v)).collect(),
            f16: f32.iter().map(|&v| f16::from_f32(v)).collect(),
            f32,
        }
    }

    /// The f32 values the other dtypes were rounded from.
    pub fn values(&self) -> &[f32] {
        &self.f32
    }

    /// The view in dtype `which` (0: f32, 1: bf16, 2: f16).
    pub fn view(&self, which: usize) -> Weight<'_> {
        match which {
            0 => Weight::F32(&self.f32),
            1 => Weight::BF16(&self.bf16),
            _ => Weight::F16(&self.f16),
        }
    }
}

/// Names a dtype index for failure messages.
pub fn dtype_name(which: usize) -> &'static str {
    ["f32", "bf16", "f16"][which]
}
