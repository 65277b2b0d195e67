//! Writing GGUF files (version 3): metadata, tensor infos, aligned data. Used to write test
//! files and converted checkpoints; what it writes, gguf-py and llama.cpp read.

use super::value::{Array, Value};
use super::{DEFAULT_ALIGNMENT, ggml_type_id};
use crate::{DType, Error, Result, Shape};
use std::io::Write;
use std::path::Path;

/// One tensor to write: its name, type, row-major shape and bytes (whole blocks).
#[derive(Clone, Debug)]
pub struct WriteTensor<'a> {
    /// The name.
    pub name: String,
    /// The type.
    pub dtype: DType,
    /// Outermost first (written reversed, as `ne`).
    pub shape: Shape,
    /// `dtype.storage_bytes(shape.numel())` bytes.
    pub bytes: &'a [u8],
}

/// A GGUF file being assembled in memory order: metadata in insertion order, then tensors.
#[derive(Clone, Debug, Default)]
pub struct GgufWriter<'a> {
    metadata: Vec<(String, Value)>,
    tensors: Vec<WriteTensor<'a>>,
}

impl<'a> GgufWriter<'a> {
    /// An empty file.
    pub fn new() -> GgufWriter<'a> {
        GgufWriter::default()
    }

    /// Adds a key/value pair (written in the order added).
    pub fn metadata(&mut self, key: impl Into<String>, value: Value) -> &mut Self {
        self.metadata.push((key.into(), value));
        self
    }

    /// Adds a tensor (its data written in the order added, each aligned).
    pub fn tensor(&mut self, t: WriteTensor<'a>) -> &mut Self {
        self.tensors.push(t);
        self
    }

    /// The alignment the metadata asks for (`general.alignment`), else the default 32.
    fn alignment(&self) -> usize {
        match self
            .metadata
            .iter()
            .find(|(k, _)| k == super::ALIGNMENT_KEY)
        {
            Some((_, Value::U32(a))) => *a as usize,
            _ => DEFAULT_ALIGNMENT as usize,
        }
    }

    /// Header, metadata and the infos of `specs`, padded to the alignment: everything before
    /// the first tensor's data. Each spec's data is `storage_bytes` long, padded.
    fn header(&self, specs: &[TensorSpec]) -> Vec<u8> {
        let align = self.alignment();
        let mut out = Vec::new();
        out.extend_from_slice(&super::MAGIC.to_le_bytes());
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(specs.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            put_str(&mut out, key);
            out.extend_from_slice(&value.value_type().id().to_le_bytes());
            put_value(&mut out, value);
        }
        let mut offset = 0usize;
        for t in specs {
            put_str(&mut out, &t.name);
            out.extend_from_slice(&(t.shape.rank() as u32).to_le_bytes());
            for &d in t.shape.dims().iter().rev() {
                out.extend_from_slice(&(d as u64).to_le_bytes());
            }
            out.extend_from_slice(&ggml_type_id(t.dtype).to_le_bytes());
            out.extend_from_slice(&(offset as u64).to_le_bytes());
            offset = (offset + t.bytes()).next_multiple_of(align);
        }
        out.resize(out.len().next_multiple_of(align), 0);
        out
    }

    /// The file's bytes. Panics if a tensor's byte length does not match its shape and type
    /// (the caller built it).
    pub fn to_bytes(&self) -> Vec<u8> {
        let align = self.alignment();
        let specs: Vec<TensorSpec> = self
            .tensors
            .iter()
            .map(|t| {
                let spec = TensorSpec {
                    name: t.name.clone(),
                    dtype: t.dtype,
                    shape: t.shape.clone(),
                };
                assert_eq!(spec.bytes(), t.bytes.len(), "tensor `{}` bytes", t.name);
                spec
            })
            .collect();
        let mut out = self.header(&specs);
        for t in &self.tensors {
            out.extend_from_slice(t.bytes);
            out.resize(out.len().next_multiple_of(align), 0);
        }
        out
    }

    /// Writes the file to `path`, which must not exist yet (nothing is ever overwritten).
    pub fn write_new(&self, path: &Path) -> Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        file.write_all(&self.to_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io(path, e))
    }

    /// Writes a file whose tensors' bytes are produced one tensor at a time, so that a file
    /// larger than memory can be written: the metadata added so far and `specs` form the
    /// header (tensors added with [`GgufWriter::tensor`] are not written), then
    /// `data(i, sink)` writes tensor `i`'s bytes in order. `path` must not exist yet; on any
    /// error the partial file (which this call created) is removed.
    ///
    /// # Errors
    /// I/O errors, what `data` returns, and [`Error::Io`] when `data` wrote a different
    /// number of bytes than the spec calls for.
    pub fn write_streaming(
        &self,
        path: &Path,
        specs: &[TensorSpec],
        mut data: impl FnMut(usize, &mut TensorSink<'_>) -> Result<()>,
    ) -> Result<()> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        let align = self.alignment();
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        let mut run = || -> Result<()> {
            let header = self.header(specs);
            let mut at = header.len();
            out.write_all(&header).map_err(|e| Error::io(path, e))?;
            for (i, spec) in specs.iter().enumerate() {
                let mut sink = TensorSink {
                    out: &mut out,
                    path,
                    written: 0,
                };
                data(i, &mut sink)?;
                let written = sink.written;
                if written != spec.bytes() {
                    let msg = format!(
                        "tensor `{}`: {written} bytes written, {} expected",
                        spec.name,
                        spec.bytes()
                    );
                    return Err(Error::io(path, std::io::Error::other(msg)));
                }
                at += written;
                let pad = at.next_multiple_of(align) - at;
                out.write_all(&vec![0u8; pad])
                    .map_err(|e| Error::io(path, e))?;
                at += pad;
            }
            out.flush().map_err(|e| Error::io(path, e))?;
            out.get_ref().sync_all().map_err(|e| Error::io(path, e))
        };
        let result = run();
        if result.is_err() {
            let _ = std::fs::remove_file(path);
        }
        result
    }
}

/// A tensor of [`GgufWriter::write_streaming`]: its bytes come later.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    /// The name.
    pub name: String,
    /// The type.
    pub dtype: DType,
    /// Outermost first (written reversed, as `ne`).
    pub shape: Shape,
}

impl TensorSpec {
    /// The tensor's data bytes (whole blocks; a shape that is not whole blocks panics, as the
    /// caller built it).
    pub fn bytes(&self) -> usize {
        self.shape
            .checked_numel()
            .and_then(|n| self.dtype.storage_bytes(n))
            .unwrap_or_else(|| {
                panic!(
                    "tensor `{}`: {:?} is not whole {} blocks",
                    self.name, self.shape, self.dtype
                )
            })
    }
}

/// Where one tensor's bytes go during [`GgufWriter::write_streaming`].
pub struct TensorSink<'a> {
    out: &'a mut std::io::BufWriter<std::fs::File>,
    path: &'a Path,
    written: usize,
}

impl TensorSink<'_> {
    /// Appends `bytes` to the tensor.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.written += bytes.len();
        self.out
            .write_all(bytes)
            .map_err(|e| Error::io(self.path, e))
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(u8::from(*x)),
        Value::String(s) => put_str(out, s),
        Value::Array(a) => put_array(out, a),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

fn put_array(out: &mut Vec<u8>, a: &Array) {
    out.extend_from_slice(&a.element_type().id().to_le_bytes());
    out.extend_from_slice(&(a.len() as u64).to_le_bytes());
    macro_rules! each {
        ($v:expr, $put:expr) => {
            for x in $v {
                $put(out, x)
            }
        };
    }
    match a {
        Array::U8(v) => out.extend_from_slice(v),
        Array::I8(v) => each!(v, |o: &mut Vec<u8>, x: &i8| o
            .extend_from_slice(&x.to_le_bytes())),
        Array::U16(v) => each!(v, |o: &mut Vec<u8>, x: &u16| o
            .extend_from_slice(&x.to_le_bytes())),
        Array::I16(v) => each!(v, |o: &mut Vec<u8>, x: &i16| o
            .extend_from_slice(&x.to_le_bytes())),
        Array::U32(v) => each!(v, |o: &mut Vec<u8>, x: &u32| o
            .extend_from_slice(&x.to_le_bytes())),
        Array::I32(v) => each!(v, |o: &mut Vec<u8>, x: &i32| o
            .extend_from_slice(&x.to_le_bytes())),
        Array::F32(v) => each!(v, |o: &mut Vec<u8>, x: &f32| o
            .extend_from_slice(&x.to_le_bytes())),
        Array::Bool(v) => each!(v, |o: &mut Vec<u8>, x: &bool| o.push(u8::from(*x))),
        Array::String(v) => each!(v, |o: &mut Vec<u8>, x: &String| put_str(o, x)),
        Array::Array(v) => each!(v, put_array),
        Array::U64(v) => each!(v, |o: &mut Vec<u8>, x: &u64| o
            .extend_from_slice(&x.to_le_bytes())),
        Array::I64(v) => each!(v, |o: &mut Vec<u8>, x: &i64| o
            .extend_from_slice(&x.to_le_bytes())),
        Array::F64(v) => each!(v, |o: &mut Vec<u8>, x: &f64| o
            .extend_from_slice(&x.to_le_bytes())),
    }
}
