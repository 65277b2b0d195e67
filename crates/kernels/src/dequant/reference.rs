//! Reference dequantization, one block at a time, transcribed from ggml's
//! `ggml-quants.c` (`dequantize_row_q4_0` … `dequantize_row_q6_K`). Byte layouts are in
//! ggml's `ggml-common.h`; offsets below are within one block.

use half::f16;
use mixtral_tensor::DType;

/// f16 at byte offset `at` of `b`, widened.
#[inline]
fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

/// Decodes one block of `dtype` (`dtype.block_bytes()` bytes) into `out`
/// (`dtype.block_len()` values). Plain dtypes decode their single element.
///
/// # Panics
/// If `block` or `out` has the wrong length.
pub fn dequantize_block(dtype: DType, block: &[u8], out: &mut [f32]) {
    assert_eq!(block.len(), dtype.block_bytes(), "{dtype} block bytes");
    assert_eq!(out.len(), dtype.block_len(), "{dtype} block values");
    match dtype {
        DType::F32 => out[0] = f32::from_le_bytes(block.try_into().expect("4 bytes")),
        DType::F16 => out[0] = f16_at(block, 0),
        DType::BF16 => {
            out[0] = half::bf16::from_bits(u16::from_le_bytes([block[0], block[1]])).to_f32()
        }
        DType::Q8_0 => q8_0(block, out),
        DType::Q4_0 => q4_0(block, out),
        DType::Q4_1 => q4_1(block, out),
        DType::Q5_0 => q5_0(block, out),
        DType::Q5_1 => q5_1(block, out),
        DType::Q2_K => q2_k(block, out),
        DType::Q3_K => q3_k(block, out),
        DType::Q4_K => q45_k(block, out, false),
        DType::Q5_K => q45_k(block, out, true),
        DType::Q6_K => q6_k(block, out),
        other => panic!("{other} is not a weight dtype"),
    }
}

/// Decodes whole blocks: `bytes` holds `out.len() / dtype.block_len()` blocks.
///
/// # Panics
/// If the lengths do not describe whole blocks.
pub fn dequantize(dtype: DType, bytes: &[u8], out: &mut [f32]) {
    let (bl, bb) = (dtype.block_len(), dtype.block_bytes());
    assert!(
        out.len().is_multiple_of(bl) && bytes.len() == out.len() / bl * bb,
        "dequantize {dtype}: {} bytes for {} values",
        bytes.len(),
        out.len()
    );
    for (block, o) in bytes.chunks_exact(bb).zip(out.chunks_exact_mut(bl)) {
        dequantize_block(dtype, block, o);
    }
}

/// `d` f16 @0, `qs` i8[32] @2.
fn q8_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for (y, &q) in y.iter_mut().zip(&b[2..34]) {
        *y = f32::from(q as i8) * d;
    }
}

/// `d` @0, `qs`[16] @2: low nibbles are values 0..16, high nibbles 16..32.
fn q4_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for (j, &q) in b[2..18].iter().enumerate() {
        y[j] = f32::from((q & 0x0F) as i8 - 8) * d;
        y[j + 16] = f32::from((q >> 4) as i8 - 8) * d;
    }
}

/// `d` @0, `m` @2, `qs`[16] @4.
fn q4_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    for (j, &q) in b[4..20].iter().enumerate() {
        y[j] = f32::from(q & 0x0F) * d + m;
        y[j + 16] = f32::from(q >> 4) * d + m;
    }
}

/// Fifth bits of a Q5 block: value `j` takes bit `j` of `qh`, value `j + 16` bit `j + 16`.
#[inline]
fn q5_high(qh: u32, j: usize) -> (u8, u8) {
    let h0 = (((qh >> j) << 4) & 0x10) as u8;
    let h1 = ((qh >> (j + 12)) & 0x10) as u8;
    (h0, h1)
}

/// `d` @0, `qh` u32 @2, `qs`[16] @6.
fn q5_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let qh = u32::from_le_bytes(b[2..6].try_into().expect("4 bytes"));
    for (j, &q) in b[6..22].iter().enumerate() {
        let (h0, h1) = q5_high(qh, j);
        y[j] = f32::from(((q & 0x0F) | h0) as i8 - 16) * d;
        y[j + 16] = f32::from(((q >> 4) | h1) as i8 - 16) * d;
    }
}

/// `d` @0, `m` @2, `qh` u32 @4, `qs`[16] @8.
fn q5_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let qh = u32::from_le_bytes(b[4..8].try_into().expect("4 bytes"));
    for (j, &q) in b[8..24].iter().enumerate() {
        let (h0, h1) = q5_high(qh, j);
        y[j] = f32::from((q & 0x0F) | h0) * d + m;
        y[j + 16] = f32::from((q >> 4) | h1) * d + m;
    }
}

/// `scales`[16] @0 (4-bit scale low, 4-bit min high), `qs`[64] @16, `d` @80, `dmin` @82.
fn q2_k(b: &[u8], y: &mut [f32]) {
    let (d, min) = (f16_at(b, 80), f16_at(b, 82));
    let scales = &b[0..16];
    let mut out = y.iter_mut();
    let mut is = 0;
    for n in 0..2 {
        let q = &b[16 + 32 * n..16 + 32 * (n + 1)];
        for shift in [0, 2, 4, 6] {
            for half in [&q[..16], &q[16..]] {
                let sc = scales[is];
                is += 1;
                let (dl, ml) = (d * f32::from(sc & 0x0F), min * f32::from(sc >> 4));
                for &qv in half {
                    *out.next().expect("256 values") = dl * f32::from((qv >> shift) & 3) - ml;
                }
            }
        }
    }
}

/// `hmask`[32] @0, `qs`[64] @32, `scales`[12] @96 (sixteen 6-bit scales), `d` @108.
fn q3_k(b: &[u8], y: &mut [f32]) {
    let d_all = f16_at(b, 108);
    let (hm, scales) = (&b[0..32], q3_k_scales(&b[96..108]));
    let mut out = y.iter_mut();
    let (mut is, mut m) = (0, 1u8);
    for n in 0..2 {
        let q = &b[32 + 32 * n..32 + 32 * (n + 1)];
        for shift in [0, 2, 4, 6] {
            for (lo, hi) in [(0, 16), (16, 32)] {
                let dl = d_all * f32::from(scales[is] - 32);
                is += 1;
                for l in lo..hi {
                    let sub = if hm[l] & m != 0 { 0 } else { 4 };
                    let v = ((q[l] >> shift) & 3) as i8 - sub;
                    *out.next().expect("256 values") = dl * f32::from(v);
                }
            }
            m <<= 1;
        }
    }
}

/// Q3_K's sixteen 6-bit scales from their 12 packed bytes (low 4 bits in bytes 0..8, high 2
/// bits in bytes 8..12), as ggml unpacks them with `kmask1`/`kmask2`.
fn q3_k_scales(packed: &[u8]) -> [i8; 16] {
    let mut s = [0i8; 16];
    for (j, v) in s.iter_mut().enumerate() {
        let low = if j < 8 {
            packed[j] & 0x0F
        } else {
            packed[j - 8] >> 4
        };
        let high = (packed[8 + j % 4] >> (2 * (j / 4))) & 3;
        *v = (low | (high << 4)) as i8;
    }
    s
}

/// Scale and min `j` (of 8) of a Q4_K/Q5_K block's 12 packed bytes (`get_scale_min_k4`).
#[inline]
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Q4_K (`fifth_bit` false) and Q5_K: `d` @0, `dmin` @2, `scales`[12] @4, then for Q5_K
/// `qh`[32] @16 (bit `2c` / `2c + 1` of `qh[l]` adds 16 to the low / high nibble of chunk `c`),
/// then `qs`[128] (@16 or @48). Chunk `c` of 64 values uses scales and mins `2c` and `2c + 1`.
fn q45_k(b: &[u8], y: &mut [f32], fifth_bit: bool) {
    let (d, min) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    let (qh, qs) = if fifth_bit {
        (Some(&b[16..48]), &b[48..176])
    } else {
        (None, &b[16..144])
    };
    for c in 0..4 {
        let q = &qs[32 * c..32 * (c + 1)];
        let (sc1, m1) = scale_min_k4(2 * c, scales);
        let (sc2, m2) = scale_min_k4(2 * c + 1, scales);
        let (d1, m1) = (d * f32::from(sc1), min * f32::from(m1));
        let (d2, m2) = (d * f32::from(sc2), min * f32::from(m2));
        let high = |l: usize, bit: u8| qh.map_or(0, |h| if h[l] & bit != 0 { 16 } else { 0 });
        let (u1, u2) = (1u8 << (2 * c), 2u8 << (2 * c));
        let y = &mut y[64 * c..64 * (c + 1)];
        for (l, &qv) in q.iter().enumerate() {
            y[l] = d1 * f32::from((qv & 0x0F) + high(l, u1)) - m1;
            y[l + 32] = d2 * f32::from((qv >> 4) + high(l, u2)) - m2;
        }
    }
}

/// `ql`[128] @0, `qh`[64] @128, `scales` i8[16] @192, `d` @208.
fn q6_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 208);
    for h in 0..2 {
        let ql = &b[64 * h..64 * (h + 1)];
        let qh = &b[128 + 32 * h..128 + 32 * (h + 1)];
        let sc = &b[192 + 8 * h..192 + 8 * (h + 1)];
        let y = &mut y[128 * h..128 * (h + 1)];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i8 - 32;
            let q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
            let s = |i: usize| d * f32::from(sc[is + i] as i8);
            y[l] = s(0) * f32::from(q1);
            y[l + 32] = s(2) * f32::from(q2);
            y[l + 64] = s(4) * f32::from(q3);
            y[l + 96] = s(6) * f32::from(q4);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_hand_block() {
        let mut b = vec![0u8; 34];
        b[..2].copy_from_slice(&f16::from_f32(0.5).to_bits().to_le_bytes());
        b[2] = 4;
        b[3] = (-6i8) as u8;
        let mut y = [0f32; 32];
        dequantize_block(DType::Q8_0, &b, &mut y);
        assert_eq!((y[0], y[1], y[2]), (2.0, -3.0, 0.0));
    }

    #[test]
    fn q4_0_nibble_order_is_halves_not_interleaved() {
        let mut b = vec![0u8; 18];
        b[..2].copy_from_slice(&f16::from_f32(1.0).to_bits().to_le_bytes());
        b[2] = 0xA3; // low nibble 3 → value 0, high nibble 10 → value 16
        let mut y = [0f32; 32];
        dequantize_block(DType::Q4_0, &b, &mut y);
        assert_eq!((y[0], y[16], y[1]), (3.0 - 8.0, 10.0 - 8.0, -8.0));
    }

    #[test]
    fn q3_k_scales_unpack_like_ggml_masks() {
        // ggml's own unpacking, word-wise with kmask1/kmask2, on every byte pattern position.
        let ggml = |packed: &[u8; 12]| -> [i8; 16] {
            let (k1, k2) = (0x0303_0303u32, 0x0f0f_0f0fu32);
            let w = |i: usize| u32::from_le_bytes(packed[4 * i..4 * i + 4].try_into().unwrap());
            let (a0, a1, tmp) = (w(0), w(1), w(2));
            let aux = [
                (a0 & k2) | ((tmp & k1) << 4),
                (a1 & k2) | (((tmp >> 2) & k1) << 4),
                ((a0 >> 4) & k2) | (((tmp >> 4) & k1) << 4),
                ((a1 >> 4) & k2) | (((tmp >> 6) & k1) << 4),
            ];
            let bytes: Vec<u8> = aux.iter().flat_map(|a| a.to_le_bytes()).collect();
            std::array::from_fn(|j| bytes[j] as i8)
        };
        let mut packed = [0u8; 12];
        for seed in 0..64u32 {
            for (i, b) in packed.iter_mut().enumerate() {
                *b = (seed.wrapping_mul(2654435761).rotate_left(i as u32 * 3) >> 8) as u8;
            }
            assert_eq!(q3_k_scales(&packed), ggml(&packed), "{packed:?}");
        }
    }
}
