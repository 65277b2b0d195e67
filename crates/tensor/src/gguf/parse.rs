//! Parsing a GGUF header from bytes: every length checked against the bytes that remain
//! before anything is allocated, every size computed with checked arithmetic.

use super::ggml_type::{GgmlType, ggml_type};
use super::value::{Array, Value, ValueType};
use super::{GgufError, Metadata};
use crate::escape;
use crate::{DType, Shape};
use std::collections::HashMap;
use std::ops::Range;

/// The magic: the bytes `GGUF` read as a little-endian u32.
pub const MAGIC: u32 = 0x4655_4747;
/// Data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// The metadata key that sets the alignment.
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// Deepest array nesting accepted (real files nest at most once; the bound keeps a crafted
/// file from exhausting the stack).
pub const MAX_NESTING: usize = 16;
/// ggml's `GGML_MAX_DIMS`.
pub const MAX_DIMS: u32 = 4;

/// Most items reserved ahead of reading them. Counts are checked against the bytes left in
/// the file, which for a real model include gigabytes of tensor data, and an item in memory is
/// several times its smallest encoding: reserving a corrupt count in full would allocate
/// several times the file's size before the first item failed to parse. Past this, vectors
/// grow as items are actually read.
const MAX_RESERVE: usize = 1024;

/// Capacity to reserve for `n` items not yet read.
fn reserve(n: usize) -> usize {
    n.min(MAX_RESERVE)
}

/// One tensor as the header describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufTensorInfo {
    /// Its name.
    pub name: String,
    /// Its type.
    pub dtype: DType,
    /// `ne`, innermost (contiguous) dimension first, as in the file.
    pub ne: Vec<u64>,
    /// The same dimensions outermost first (row-major, as everywhere else in this engine):
    /// `ne` reversed.
    pub shape: Shape,
    /// Offset relative to the data section.
    pub offset: u64,
    /// Absolute byte range in the file.
    pub range: Range<usize>,
}

/// A parsed and validated GGUF header.
#[derive(Clone, Debug)]
pub struct Header {
    /// 2 or 3.
    pub version: u32,
    /// Every key/value pair, in file order.
    pub metadata: Metadata,
    /// Every tensor, in file order.
    pub tensors: Vec<GgufTensorInfo>,
    /// The data alignment.
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_start: u64,
}

/// A parse error and the field it was found in.
type Located = (String, GgufError);

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn file_len(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                needed: n,
                at: self.pos as u64,
                file_len: self.file_len(),
            });
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.bytes[start..self.pos])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        let b = self.take(N as u64)?;
        Ok(b.try_into().expect("took N bytes"))
    }

    fn u32(&mut self) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn string(&mut self) -> Result<String, GgufError> {
        let len = self.u64()?;
        let at = self.pos as u64;
        if len > self.remaining() {
            return Err(GgufError::StringPastEnd {
                len,
                at,
                file_len: self.file_len(),
            });
        }
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| GgufError::BadUtf8 { at })
    }

    /// A count of items of at least `min_bytes` each, checked against the bytes left.
    fn count(&mut self, what: impl FnOnce() -> String, min_bytes: u64) -> Result<usize, GgufError> {
        let count = self.u64()?;
        let remaining = self.remaining();
        if count
            .checked_mul(min_bytes)
            .is_none_or(|need| need > remaining)
        {
            return Err(GgufError::CountPastEnd {
                count,
                what: what(),
                min_bytes,
                remaining,
            });
        }
        // Fits: count ≤ remaining ≤ the file's length, which is a usize.
        Ok(count as usize)
    }

    fn value_type(&mut self) -> Result<ValueType, GgufError> {
        let id = self.u32()?;
        ValueType::from_id(id).ok_or(GgufError::UnknownValueType { id })
    }

    fn value(&mut self, ty: ValueType, depth: usize) -> Result<Value, GgufError> {
        Ok(match ty {
            ValueType::U8 => Value::U8(u8::from_le_bytes(self.array()?)),
            ValueType::I8 => Value::I8(i8::from_le_bytes(self.array()?)),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array()?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array()?)),
            ValueType::U32 => Value::U32(self.u32()?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array()?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array()?)),
            // ggml reads any nonzero byte as true.
            ValueType::Bool => Value::Bool(self.array::<1>()?[0] != 0),
            ValueType::String => Value::String(self.string()?),
            ValueType::Array => Value::Array(self.array_value(depth + 1)?),
            ValueType::U64 => Value::U64(self.u64()?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array()?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array()?)),
        })
    }

    fn array_value(&mut self, depth: usize) -> Result<Array, GgufError> {
        if depth > MAX_NESTING {
            return Err(GgufError::NestedTooDeep { max: MAX_NESTING });
        }
        let ty = self.value_type()?;
        let what = || format!("array elements of type {ty}");
        let n = self.count(what, ty.min_encoded_bytes())?;
        macro_rules! elems {
            ($variant:ident, $read:expr) => {{
                let mut v = Vec::with_capacity(reserve(n));
                for _ in 0..n {
                    v.push($read);
                }
                Array::$variant(v)
            }};
        }
        Ok(match ty {
            ValueType::U8 => Array::U8(self.take(n as u64)?.to_vec()),
            ValueType::I8 => Array::I8(self.take(n as u64)?.iter().map(|&b| b as i8).collect()),
            ValueType::Bool => Array::Bool(self.take(n as u64)?.iter().map(|&b| b != 0).collect()),
            ValueType::U16 => elems!(U16, u16::from_le_bytes(self.array()?)),
            ValueType::I16 => elems!(I16, i16::from_le_bytes(self.array()?)),
            ValueType::U32 => elems!(U32, self.u32()?),
            ValueType::I32 => elems!(I32, i32::from_le_bytes(self.array()?)),
            ValueType::F32 => elems!(F32, f32::from_le_bytes(self.array()?)),
            ValueType::U64 => elems!(U64, self.u64()?),
            ValueType::I64 => elems!(I64, i64::from_le_bytes(self.array()?)),
            ValueType::F64 => elems!(F64, f64::from_le_bytes(self.array()?)),
            ValueType::String => elems!(String, self.string()?),
            ValueType::Array => elems!(Array, self.array_value(depth + 1)?),
        })
    }
}

impl Header {
    /// Parses and validates the header of a GGUF file whose whole contents are `bytes`.
    /// Tensor data is not read, only its placement checked.
    pub fn parse(bytes: &[u8]) -> Result<Header, (String, GgufError)> {
        let mut c = Cursor { bytes, pos: 0 };
        fn at(field: &'static str) -> impl Fn(GgufError) -> Located {
            move |e| (field.to_string(), e)
        }
        let magic = c.u32().map_err(at("magic"))?;
        if magic != MAGIC {
            let found: Vec<u8> = bytes.iter().take(4).copied().collect();
            let found = found.escape_ascii().to_string();
            return Err(("magic".into(), GgufError::BadMagic { found }));
        }
        let version = c.u32().map_err(at("version"))?;
        check_version(version)?;
        let n_tensors = c
            .count(|| "tensor infos".into(), 32)
            .map_err(at("tensor_count"))?;
        let n_kv = c
            .count(|| "metadata pairs".into(), 13)
            .map_err(at("metadata_kv_count"))?;
        let metadata = parse_metadata(&mut c, n_kv)?;
        let alignment = alignment(&metadata)?;
        let mut raw = Vec::with_capacity(reserve(n_tensors));
        let mut names: HashMap<String, usize> = HashMap::with_capacity(reserve(n_tensors));
        for i in 0..n_tensors {
            let info = parse_tensor_info(&mut c, i)?;
            if names.insert(info.0.clone(), i).is_some() {
                return Err((tensor_field(i, &info.0, ""), GgufError::Duplicate));
            }
            raw.push(info);
        }
        // The data section starts at the next multiple of the alignment. A file with no
        // tensors may end before it (vocabulary-only files do).
        let end_of_infos = c.pos as u64;
        let data_start = end_of_infos
            .div_ceil(alignment)
            .checked_mul(alignment)
            .ok_or_else(|| {
                let e = GgufError::BadAlignment { value: alignment };
                (ALIGNMENT_KEY.to_string(), e)
            })?;
        let file_len = bytes.len() as u64;
        let mut tensors = Vec::with_capacity(raw.len());
        for (i, info) in raw.into_iter().enumerate() {
            tensors.push(locate(i, info, (data_start, alignment, file_len))?);
        }
        check_overlaps(&tensors)?;
        Ok(Header {
            version,
            metadata,
            tensors,
            alignment,
            data_start,
        })
    }
}

/// Refuses versions other than 2 and 3 (and names a byte-swapped one: a big-endian file).
fn check_version(version: u32) -> Result<(), Located> {
    match version {
        2 | 3 => Ok(()),
        v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => {
            Err(("version".into(), GgufError::BigEndian))
        }
        v => Err((
            "version".into(),
            GgufError::UnsupportedVersion { version: v },
        )),
    }
}

/// `general.alignment` (a power-of-two uint32), or the default.
fn alignment(metadata: &Metadata) -> Result<u64, Located> {
    let Some(v) = metadata.get(ALIGNMENT_KEY) else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    let value = match v {
        Value::U32(a) => u64::from(*a),
        other => {
            let e = GgufError::WrongType {
                expected: "uint32",
                found: other.value_type(),
            };
            return Err((ALIGNMENT_KEY.into(), e));
        }
    };
    if !value.is_power_of_two() {
        return Err((ALIGNMENT_KEY.into(), GgufError::BadAlignment { value }));
    }
    Ok(value)
}

/// Tensor `i`'s bytes in the file: its offset aligned, its size without overflow, and all of
/// it before the end (given the data start, the alignment and the file's length).
fn locate(
    i: usize,
    (name, ne, dtype, offset): RawInfo,
    (data_start, alignment, file_len): (u64, u64, u64),
) -> Result<GgufTensorInfo, Located> {
    let field = |what: &str| tensor_field(i, &name, what);
    if offset % alignment != 0 {
        let e = GgufError::Misaligned {
            offset,
            align: alignment,
        };
        return Err((field(".offset"), e));
    }
    let overflow = || (field(".ne"), GgufError::DimsOverflow { ne: ne.clone() });
    // Multiplied outermost first, as `Shape::checked_numel` (and `numel`) do: innermost
    // first, a zero `ne[0]` hid an overflowing product of the other dimensions (`ne` =
    // [0, 2^32, 2^32]), and the header was accepted with a shape that `Shape` finds
    // overflowing (the tensor then failed to open, `Shape::numel` panicked in debug).
    let numel = ne
        .iter()
        .rev()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(overflow)?;
    let n_bytes = dtype.storage_bytes(numel).ok_or_else(overflow)? as u64;
    let start = data_start.checked_add(offset);
    let end = start.and_then(|s| s.checked_add(n_bytes));
    let (Some(start), Some(end)) = (start, end) else {
        let e = GgufError::DataPastEnd {
            start: start.unwrap_or(u64::MAX),
            end: u64::MAX,
            file_len,
        };
        return Err((field(".offset"), e));
    };
    if end > file_len {
        let e = GgufError::DataPastEnd {
            start,
            end,
            file_len,
        };
        return Err((field(".offset"), e));
    }
    let shape = Shape::new(ne.iter().rev().map(|&d| d as usize).collect());
    Ok(GgufTensorInfo {
        name,
        dtype,
        ne,
        shape,
        offset,
        range: start as usize..end as usize,
    })
}

fn tensor_field(i: usize, name: &str, what: &str) -> String {
    format!("tensor_info[{i}] `{}`{what}", escape(name))
}

fn parse_metadata(c: &mut Cursor<'_>, n_kv: usize) -> Result<Metadata, Located> {
    let mut metadata = Metadata::with_capacity(reserve(n_kv));
    for i in 0..n_kv {
        let key = c.string().map_err(|e| (format!("metadata[{i}].key"), e))?;
        let field = || format!("metadata[{i}] `{}`", escape(&key));
        let ty = c.value_type().map_err(|e| (field(), e))?;
        let value = c.value(ty, 0).map_err(|e| (field(), e))?;
        if !metadata.insert(key.clone(), value) {
            return Err((field(), GgufError::Duplicate));
        }
    }
    Ok(metadata)
}

/// Name, `ne`, type and offset of tensor info `i`.
/// A tensor info as the header states it: name, `ne`, dtype, offset in the data section.
type RawInfo = (String, Vec<u64>, DType, u64);

fn parse_tensor_info(c: &mut Cursor<'_>, i: usize) -> Result<RawInfo, Located> {
    let name = c
        .string()
        .map_err(|e| (format!("tensor_info[{i}].name"), e))?;
    let field = |what: &str| tensor_field(i, &name, what);
    let n_dims = c.u32().map_err(|e| (field(".n_dims"), e))?;
    if n_dims == 0 || n_dims > MAX_DIMS {
        return Err((field(".n_dims"), GgufError::BadRank { n_dims }));
    }
    let ne = (0..n_dims)
        .map(|_| c.u64())
        .collect::<Result<Vec<u64>, _>>()
        .map_err(|e| (field(".ne"), e))?;
    let id = c.u32().map_err(|e| (field(".type"), e))?;
    let dtype = match ggml_type(id) {
        Some(GgmlType::Supported(d)) => d,
        Some(GgmlType::Unimplemented(name)) => {
            return Err((field(".type"), GgufError::UnsupportedGgmlType { name, id }));
        }
        None => return Err((field(".type"), GgufError::UnknownGgmlType { id })),
    };
    let block = dtype.block_len();
    if ne[0] % block as u64 != 0 {
        let e = GgufError::PartialBlock {
            ne0: ne[0],
            dtype,
            block,
        };
        return Err((field(".ne"), e));
    }
    let offset = c.u64().map_err(|e| (field(".offset"), e))?;
    Ok((name, ne, dtype, offset))
}

/// Tensors' data must not overlap (each byte belongs to at most one tensor).
fn check_overlaps(tensors: &[GgufTensorInfo]) -> Result<(), Located> {
    let mut order: Vec<usize> = (0..tensors.len())
        .filter(|&i| !tensors[i].range.is_empty())
        .collect();
    order.sort_by_key(|&i| tensors[i].range.start);
    for pair in order.windows(2) {
        let (a, b) = (&tensors[pair[0]], &tensors[pair[1]]);
        if b.range.start < a.range.end {
            let e = GgufError::Overlap {
                start: b.range.start as u64,
                end: b.range.end as u64,
                other: escape(&a.name),
            };
            return Err((tensor_field(pair[1], &b.name, ".offset"), e));
        }
    }
    Ok(())
}
