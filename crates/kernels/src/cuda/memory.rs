//! Device memory: typed buffers, and weights streamed to the device as bf16 with progress.

use super::{CudaBackend, Result};
use crate::Weight;
use cudarc::driver::CudaSlice;
use half::bf16;
use half::slice::HalfFloatSliceExt;

/// A bf16 element on the device, carried as its bits (the upper half of an f32), which is how
/// the kernels' `bf16_t` sees it. Convert with `half::bf16::{to_bits, from_bits}`.
pub type Bf16 = u16;

/// An IEEE f16 element on the device, carried as its bits (`half::f16::{to_bits, from_bits}`);
/// a type of its own so an f16 buffer is never taken for a bf16 one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(transparent)]
pub struct F16(pub u16);

// SAFETY: `F16` is `repr(transparent)` over `u16`, which cudarc already treats as a plain
// device value; every bit pattern (all zeros included) is a valid f16.
unsafe impl cudarc::driver::DeviceRepr for F16 {}
// SAFETY: as above: all-zero bits are the f16 +0.0.
unsafe impl cudarc::driver::ValidAsZeroBits for F16 {}

/// An element type a KV cache can hold on the device (`--kv-dtype`), with the names of the
/// kernels that write and read such a cache.
pub trait KvElement:
    cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits + Copy + Default + 'static
{
    /// `rope_kv_<dtype>`.
    const ROPE_KV: &'static str;
    /// `attention_prefill_<dtype>`.
    const PREFILL: &'static str;
    /// `attention_decode_<dtype>`.
    const DECODE: &'static str;
}

impl KvElement for Bf16 {
    const ROPE_KV: &'static str = "rope_kv_bf16";
    const PREFILL: &'static str = "attention_prefill_bf16";
    const DECODE: &'static str = "attention_decode_bf16";
}

impl KvElement for F16 {
    const ROPE_KV: &'static str = "rope_kv_f16";
    const PREFILL: &'static str = "attention_prefill_f16";
    const DECODE: &'static str = "attention_decode_f16";
}

impl KvElement for f32 {
    const ROPE_KV: &'static str = "rope_kv_f32";
    const PREFILL: &'static str = "attention_prefill_f32";
    const DECODE: &'static str = "attention_decode_f32";
}

/// Elements converted and copied per step when streaming a weight (16 MiB of bf16): bounds the
/// host-side staging memory and sets the progress granularity.
const CHUNK: usize = 8 << 20;

/// A device allocation of `len` elements of `T`, freed when dropped (stream-ordered).
#[derive(Debug)]
pub struct DeviceBuffer<T> {
    slice: CudaSlice<T>,
    len: usize,
}

impl<T> DeviceBuffer<T> {
    pub(crate) fn new(slice: CudaSlice<T>, len: usize) -> DeviceBuffer<T> {
        DeviceBuffer { slice, len }
    }

    /// Elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the buffer holds no element.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes.
    pub fn bytes(&self) -> usize {
        self.len * std::mem::size_of::<T>()
    }

    pub(crate) fn slice(&self) -> &CudaSlice<T> {
        &self.slice
    }

    pub(crate) fn slice_mut(&mut self) -> &mut CudaSlice<T> {
        &mut self.slice
    }
}

/// Progress of a multi-tensor upload: calls `f(done_bytes, total_bytes)` after every chunk.
pub struct Progress<'a> {
    done: usize,
    total: usize,
    f: &'a mut dyn FnMut(usize, usize),
}

impl<'a> Progress<'a> {
    /// A tracker for `total` device bytes.
    pub fn new(total: usize, f: &'a mut dyn FnMut(usize, usize)) -> Progress<'a> {
        Progress { done: 0, total, f }
    }

    /// Bytes written so far.
    pub fn done(&self) -> usize {
        self.done
    }

    pub(crate) fn advance(&mut self, bytes: usize) {
        self.done += bytes;
        (self.f)(self.done, self.total);
    }
}

impl CudaBackend {
    /// Writes `w` (any float dtype) as bf16 into `dst[offset..offset + w.len()]`, in chunks.
    ///
    /// bf16 weights are copied as they are; f32 and f16 weights are rounded to bf16 (nearest
    /// even) on the host while streaming, so an f32 checkpoint runs with bf16 weights.
    pub fn write_weight_bf16(
        &self,
        dst: &mut DeviceBuffer<Bf16>,
        offset: usize,
        w: Weight<'_>,
        progress: &mut Progress<'_>,
    ) -> Result<()> {
        super::error::at_least("write_weight_bf16", "dst", dst.len(), offset + w.len())?;
        let mut staging: Vec<Bf16> = Vec::new();
        let mut at = 0;
        while at < w.len() {
            let n = CHUNK.min(w.len() - at);
            let bits: &[Bf16] = match w {
                Weight::BF16(v) => v[at..at + n].reinterpret_cast(),
                Weight::F32(v) => {
                    staging.clear();
                    staging.extend(v[at..at + n].iter().map(|&x| bf16::from_f32(x).to_bits()));
                    &staging
                }
                Weight::F16(v) => {
                    staging.clear();
                    staging.extend(
                        v[at..at + n]
                            .iter()
                            .map(|x| bf16::from_f32(x.to_f32()).to_bits()),
                    );
                    &staging
                }
                Weight::Quant(q) => {
                    // Quantized weights run on the GPU as bf16 (decoded while streaming).
                    let mut values = vec![0f32; n];
                    q.decode_into(at, &mut values);
                    staging.clear();
                    staging.extend(values.iter().map(|&x| bf16::from_f32(x).to_bits()));
                    &staging
                }
            };
            self.write(dst, offset + at, bits)?;
            progress.advance(n * std::mem::size_of::<Bf16>());
            at += n;
        }
        Ok(())
    }

    /// `w` as a new bf16 device buffer (see [`CudaBackend::write_weight_bf16`]).
    pub fn upload_weight_bf16(
        &self,
        w: Weight<'_>,
        what: &str,
        progress: &mut Progress<'_>,
    ) -> Result<DeviceBuffer<Bf16>> {
        let mut buf = self.alloc::<Bf16>(w.len(), what)?;
        self.write_weight_bf16(&mut buf, 0, w, progress)?;
        Ok(buf)
    }

    /// Host f32 values rounded to bf16 in a new device buffer (tests and small tensors).
    pub fn upload_f32_as_bf16(&self, host: &[f32], what: &str) -> Result<DeviceBuffer<Bf16>> {
        let bits: Vec<Bf16> = host.iter().map(|&x| bf16::from_f32(x).to_bits()).collect();
        self.upload(&bits, what)
    }

    /// The first `len` bf16 elements of `src`, widened to f32 on the host.
    pub fn read_bf16_as_f32(&self, src: &DeviceBuffer<Bf16>, len: usize) -> Result<Vec<f32>> {
        Ok(self
            .read(src, len)?
            .into_iter()
            .map(|b| bf16::from_bits(b).to_f32())
            .collect())
    }
}
