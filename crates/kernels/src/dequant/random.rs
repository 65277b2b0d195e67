//! Random blocks of a GGUF type: every bit of the quants and packed scales random, the f16
//! scales finite and sized so values stay near a chosen magnitude. For checking a decoder on
//! every bit pattern (the CUDA twins) and for benchmarks at real sizes with no file.

use half::f16;
use mixtral_tensor::DType;

/// Byte offsets of a block's f16 scale fields, and the largest |quant × packed scale| its
/// values reach (so `d = magnitude / that` keeps values within about `magnitude`).
fn scale_fields(dtype: DType) -> Option<(&'static [usize], f32)> {
    Some(match dtype {
        DType::Q8_0 => (&[0], 127.0),
        DType::Q4_0 => (&[0], 8.0),
        DType::Q4_K => (&[0, 2], 15.0 * 63.0),
        DType::Q5_K => (&[0, 2], 31.0 * 63.0),
        DType::Q6_K => (&[208], 32.0 * 127.0),
        _ => return None,
    })
}

/// `blocks` random blocks of `dtype` (Q8_0, Q4_0, Q4_K, Q5_K or Q6_K; `None` for others),
/// reproducible from `seed`, with values within about ±`magnitude`.
pub fn random_blocks(dtype: DType, blocks: usize, seed: u64, magnitude: f32) -> Option<Vec<u8>> {
    let (fields, reach) = scale_fields(dtype)?;
    let bb = dtype.block_bytes();
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        // splitmix64: fast, and every output bit is usable.
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut out = vec![0u8; blocks.checked_mul(bb)?];
    for block in out.chunks_exact_mut(bb) {
        for chunk in block.chunks_mut(8) {
            let r = next().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
        for &at in fields {
            // A scale in [0.25, 1] · magnitude / reach, either sign.
            let r = next();
            let unit = 0.25 + 0.75 * (r >> 11) as f32 / (1u64 << 53) as f32;
            let sign = if r & 1 == 0 { 1.0 } else { -1.0 };
            let d = f16::from_f32(sign * unit * magnitude / reach);
            block[at..at + 2].copy_from_slice(&d.to_bits().to_le_bytes());
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_finite_and_near_the_magnitude() {
        for dtype in [
            DType::Q8_0,
            DType::Q4_0,
            DType::Q4_K,
            DType::Q5_K,
            DType::Q6_K,
        ] {
            let bytes = random_blocks(dtype, 64, 7, 0.5).expect("a block type");
            let mut v = vec![0f32; 64 * dtype.block_len()];
            super::super::dequantize(dtype, &bytes, &mut v);
            let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
            assert!(v.iter().all(|x| x.is_finite()), "{dtype}");
            assert!(max > 0.05 && max <= 1.01, "{dtype}: max |v| = {max}");
            assert_ne!(
                bytes,
                random_blocks(dtype, 64, 8, 0.5).unwrap(),
                "{dtype}: seed"
            );
        }
        assert!(random_blocks(DType::Q2_K, 1, 0, 1.0).is_none());
    }
}
