//! Weight matrices on the device: bf16 elements, or a GGUF file's blocks kept as they are.
//!
//! A quantized Mixtral is uploaded block for block (no bf16 copy: a 26 GB Q4_K_M file takes
//! 26 GB of device memory, not 93), and the matmul, MoE and embedding launchers pick the
//! entry point of the matrix's type (`matmul_gemv_q4k`, `moe_gemm_swiglu_q4k`, …), which
//! decode the blocks as they stream them (`kernels/quant.cuh`).

use super::memory::{Bf16, DeviceBuffer, Progress};
use super::{CudaBackend, Result};
use crate::weight::{BlockLayout, QuantBlocks};
use mixtral_tensor::DType;

/// The GGUF block types the kernels decode on the device (named as ggml names them).
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BlockType {
    /// 32 values: f16 scale, 32 × i8.
    Q8_0,
    /// 32 values: f16 scale, 32 × 4 bits.
    Q4_0,
    /// 256 values: 4 bits, 6-bit scales and mins.
    Q4_K,
    /// 256 values: 5 bits, 6-bit scales and mins.
    Q5_K,
    /// 256 values: 6 bits, 8-bit scales.
    Q6_K,
}

impl BlockType {
    /// Every type, in the order the kernels list them.
    pub const ALL: [BlockType; 5] = [
        BlockType::Q8_0,
        BlockType::Q4_0,
        BlockType::Q4_K,
        BlockType::Q5_K,
        BlockType::Q6_K,
    ];

    /// The device type of `dtype`, or `None` where the device has no kernels for it (other
    /// block types are decoded to bf16 at upload).
    pub fn of(dtype: DType) -> Option<BlockType> {
        Some(match dtype {
            DType::Q8_0 => BlockType::Q8_0,
            DType::Q4_0 => BlockType::Q4_0,
            DType::Q4_K => BlockType::Q4_K,
            DType::Q5_K => BlockType::Q5_K,
            DType::Q6_K => BlockType::Q6_K,
            _ => return None,
        })
    }

    /// The file's dtype.
    pub fn dtype(self) -> DType {
        match self {
            BlockType::Q8_0 => DType::Q8_0,
            BlockType::Q4_0 => DType::Q4_0,
            BlockType::Q4_K => DType::Q4_K,
            BlockType::Q5_K => DType::Q5_K,
            BlockType::Q6_K => DType::Q6_K,
        }
    }

    /// Bytes of a row of `k` values (`k` a multiple of the block length).
    pub fn row_bytes(self, k: usize) -> usize {
        k / self.dtype().block_len() * self.dtype().block_bytes()
    }

    /// Index into the entry-point tables below.
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// How a device matrix stores its values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Storage {
    /// bf16 elements.
    Bf16,
    /// GGUF blocks, row after row.
    Blocks(BlockType),
}

impl Storage {
    /// Where `entries[0]` is the bf16 entry point and `entries[1 + t]` block type `t`'s.
    pub(crate) fn pick(self, entries: &[&'static str; 6]) -> &'static str {
        match self {
            Storage::Bf16 => entries[0],
            Storage::Blocks(t) => entries[1 + t.index()],
        }
    }

    /// Values per block (1 for bf16): a matrix's `k` must be a multiple of it.
    pub fn block_len(self) -> usize {
        match self {
            Storage::Bf16 => 1,
            Storage::Blocks(t) => t.dtype().block_len(),
        }
    }

    /// Device bytes of `values` values (whole blocks).
    pub fn bytes(self, values: usize) -> usize {
        match self {
            Storage::Bf16 => values * std::mem::size_of::<Bf16>(),
            Storage::Blocks(t) => values / t.dtype().block_len() * t.dtype().block_bytes(),
        }
    }

    /// The storage a weight of `dtype` gets on the device: its blocks where the kernels decode
    /// them, bf16 for every float type and every other block type.
    pub fn for_dtype(dtype: DType) -> Storage {
        BlockType::of(dtype).map_or(Storage::Bf16, Storage::Blocks)
    }
}

/// A weight matrix (or stack of experts' matrices) on the device.
#[derive(Debug)]
pub enum DeviceMatrix {
    /// bf16 elements.
    Bf16(DeviceBuffer<Bf16>),
    /// GGUF blocks, row after row, as the file holds them.
    Blocks(BlockType, DeviceBuffer<u8>),
}

impl DeviceMatrix {
    /// How the values are stored.
    pub fn storage(&self) -> Storage {
        match self {
            DeviceMatrix::Bf16(_) => Storage::Bf16,
            DeviceMatrix::Blocks(t, _) => Storage::Blocks(*t),
        }
    }

    /// Values held (whole blocks' worth for blocks).
    pub fn values(&self) -> usize {
        match self {
            DeviceMatrix::Bf16(b) => b.len(),
            DeviceMatrix::Blocks(t, b) => b.len() / t.dtype().block_bytes() * t.dtype().block_len(),
        }
    }

    /// Device bytes.
    pub fn bytes(&self) -> usize {
        match self {
            DeviceMatrix::Bf16(b) => b.bytes(),
            DeviceMatrix::Blocks(_, b) => b.bytes(),
        }
    }

    /// The bf16 buffer, for ops that only read bf16 (norm vectors).
    pub fn as_bf16(&self) -> Option<&DeviceBuffer<Bf16>> {
        match self {
            DeviceMatrix::Bf16(b) => Some(b),
            DeviceMatrix::Blocks(..) => None,
        }
    }
}

impl CudaBackend {
    /// A zeroed matrix of `values` values stored as `storage`; `what` names it in an
    /// out-of-memory error.
    pub fn alloc_matrix(
        &self,
        storage: Storage,
        values: usize,
        what: &str,
    ) -> Result<DeviceMatrix> {
        super::error::limit(
            values.is_multiple_of(storage.block_len()),
            "alloc_matrix",
            "values",
            values,
            "whole blocks",
        )?;
        Ok(match storage {
            Storage::Bf16 => DeviceMatrix::Bf16(self.alloc(values, what)?),
            Storage::Blocks(t) => DeviceMatrix::Blocks(t, self.alloc(storage.bytes(values), what)?),
        })
    }

    /// Writes `w` into `dst` from value `offset`: a bf16 matrix takes any weight (see
    /// [`CudaBackend::write_weight_bf16`]); a block matrix takes blocks of its own type in the
    /// file's row order, copied as they are, in chunks.
    pub fn write_matrix(
        &self,
        dst: &mut DeviceMatrix,
        offset: usize,
        w: crate::Weight<'_>,
        progress: &mut Progress<'_>,
    ) -> Result<()> {
        match dst {
            DeviceMatrix::Bf16(buf) => self.write_weight_bf16(buf, offset, w, progress),
            DeviceMatrix::Blocks(t, buf) => {
                let blocks = match w {
                    crate::Weight::Quant(QuantBlocks {
                        dtype,
                        bytes,
                        layout: BlockLayout::Rows,
                    }) if dtype == t.dtype() => bytes,
                    other => {
                        return Err(super::Error::Input {
                            op: "write_matrix",
                            what: format!(
                                "a {} weight written into a matrix of {} blocks in file order",
                                other.dtype(),
                                t.dtype()
                            ),
                        });
                    }
                };
                let at = Storage::Blocks(*t).bytes(offset);
                super::error::limit(
                    offset.is_multiple_of(t.dtype().block_len()),
                    "write_matrix",
                    "offset",
                    offset,
                    "whole blocks",
                )?;
                self.write_bytes(buf, at, blocks, progress)
            }
        }
    }

    /// Copies `bytes` into `dst[at..]` in chunks of at most 16 MiB, advancing `progress`.
    fn write_bytes(
        &self,
        dst: &mut DeviceBuffer<u8>,
        at: usize,
        bytes: &[u8],
        progress: &mut Progress<'_>,
    ) -> Result<()> {
        const CHUNK: usize = 16 << 20;
        super::error::at_least("write_bytes", "dst", dst.len(), at + bytes.len())?;
        for (i, chunk) in bytes.chunks(CHUNK).enumerate() {
            self.write(dst, at + i * CHUNK, chunk)?;
            progress.advance(chunk.len());
        }
        Ok(())
    }

    /// Fills `m` with random values of about ±`scale` from `seed`: bf16 from the device's
    /// uniform generator; blocks from [`crate::dequant::random_blocks`], made on the host as
    /// one pattern of at most 16 MiB and copied over the matrix on the device (benchmarks
    /// read every byte once, so a repeating pattern times as a random one does).
    pub fn fill_random(&self, m: &mut DeviceMatrix, seed: u64, scale: f32) -> Result<()> {
        const PATTERN: usize = 16 << 20;
        let (t, buf) = match m {
            DeviceMatrix::Bf16(buf) => return self.fill_uniform_bf16(buf, seed, scale),
            DeviceMatrix::Blocks(t, buf) => (*t, buf),
        };
        let bb = t.dtype().block_bytes();
        let blocks = (PATTERN / bb).min(buf.len() / bb).max(1);
        let host = crate::dequant::random_blocks(t.dtype(), blocks, seed, scale)
            .expect("every BlockType has random blocks");
        let pattern = self.upload(&host, "random block pattern")?;
        let whole = buf.len() / bb * bb;
        let mut at = 0;
        while at < whole {
            let n = host.len().min(whole - at);
            self.copy(&pattern, 0, buf, at, n)?;
            at += n;
        }
        Ok(())
    }

    /// `w` as a new matrix stored as `storage`.
    pub fn upload_matrix(
        &self,
        storage: Storage,
        w: crate::Weight<'_>,
        what: &str,
        progress: &mut Progress<'_>,
    ) -> Result<DeviceMatrix> {
        let mut m = self.alloc_matrix(storage, w.len(), what)?;
        self.write_matrix(&mut m, 0, w, progress)?;
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_points_of_every_storage_exist_in_the_sources() {
        let tables: [(&str, [&str; 6]); 4] = [
            ("matmul.cu", super::super::ops::GEMV_OPS),
            ("moe.cu", super::super::ops::SWIGLU_OPS),
            ("moe.cu", super::super::ops::DOWN_OPS),
            ("embedding.cu", super::super::ops::EMBEDDING_OPS),
        ];
        let storages = std::iter::once(Storage::Bf16).chain(BlockType::ALL.map(Storage::Blocks));
        for s in storages {
            for (file, table) in tables {
                let name = s.pick(&table);
                let src = super::super::source::find(file).expect("listed");
                assert!(src.entry_points().contains(&name), "{file}: {name}");
                if let Storage::Blocks(t) = s {
                    let suffix = match t {
                        BlockType::Q8_0 => "q80",
                        BlockType::Q4_0 => "q40",
                        BlockType::Q4_K => "q4k",
                        BlockType::Q5_K => "q5k",
                        BlockType::Q6_K => "q6k",
                    };
                    assert!(name.ends_with(suffix), "{name} is not {t:?}'s");
                }
            }
        }
    }

    #[test]
    fn moe_gemv_entry_points_exist_for_every_block_type() {
        let src = super::super::source::find("moe.cu").expect("listed");
        for t in BlockType::ALL {
            for table in [
                super::super::ops::SWIGLU_GEMV_OPS,
                super::super::ops::DOWN_GEMV_OPS,
            ] {
                let name = table[t.index()];
                assert!(src.entry_points().contains(&name), "moe.cu: {name}");
                let gemm = Storage::Blocks(t).pick(&super::super::ops::DOWN_OPS);
                assert_eq!(
                    name.rsplit('_').next(),
                    gemm.rsplit('_').next(),
                    "{name} vs {gemm}"
                );
            }
        }
    }

    #[test]
    fn sizes_of_each_storage() {
        assert_eq!(Storage::Bf16.bytes(4096), 8192);
        assert_eq!(Storage::Blocks(BlockType::Q4_K).bytes(4096), 16 * 144);
        assert_eq!(Storage::Blocks(BlockType::Q8_0).bytes(64), 68);
        assert_eq!(BlockType::Q6_K.row_bytes(14336), 56 * 210);
        assert_eq!(
            Storage::for_dtype(DType::Q5_K),
            Storage::Blocks(BlockType::Q5_K)
        );
        assert_eq!(Storage::for_dtype(DType::Q2_K), Storage::Bf16);
        assert_eq!(Storage::for_dtype(DType::F32), Storage::Bf16);
    }
}
