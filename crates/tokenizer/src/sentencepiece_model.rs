//! Reading a SentencePiece `tokenizer.model` (a `sentencepiece_model.proto` `ModelProto`):
//! the pieces, scores and types, the special ids and the normalizer flags that decide whether
//! this crate can encode like it. Mistral's own checkpoint directories carry this file and no
//! `tokenizer.json`.
//!
//! Only the fields needed are decoded; every other field is skipped by its wire type. Every
//! length is checked against the bytes left, so a hostile file is an error, never a panic or
//! an allocation larger than the file.

use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;
use crate::vocab::{PieceType, SentencePieceVocab};
use std::path::Path;

/// The largest `tokenizer.model` read (real ones are under 1 MiB; Mixtral's is 482 KiB).
pub const MAX_MODEL_BYTES: u64 = 64 << 20;

/// What `tokenizer.model` says beyond the vocabulary.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSpec {
    /// `TrainerSpec.model_type`: 1 unigram, 2 BPE, 3 word, 4 char.
    pub model_type: u64,
    /// `TrainerSpec.byte_fallback`.
    pub byte_fallback: bool,
    /// `NormalizerSpec.add_dummy_prefix`.
    pub add_dummy_prefix: bool,
    /// `NormalizerSpec.remove_extra_whitespaces`.
    pub remove_extra_whitespaces: bool,
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

/// A protobuf decoding failure, before the path is attached.
type Fail = String;

impl<'a> Reader<'a> {
    fn done(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn varint(&mut self) -> std::result::Result<u64, Fail> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self
                .bytes
                .get(self.pos)
                .ok_or_else(|| format!("truncated varint at byte {}", self.pos))?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(format!("varint longer than 10 bytes at byte {}", self.pos))
    }

    fn take(&mut self, n: u64) -> std::result::Result<&'a [u8], Fail> {
        let left = (self.bytes.len() - self.pos) as u64;
        if n > left {
            return Err(format!(
                "field of {n} bytes at byte {} runs past the end",
                self.pos
            ));
        }
        let s = &self.bytes[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    /// The next field: its number and its value.
    fn field(&mut self) -> std::result::Result<(u64, Wire<'a>), Fail> {
        let key = self.varint()?;
        let (number, wire) = (key >> 3, key & 7);
        let value = match wire {
            0 => Wire::Varint(self.varint()?),
            1 => Wire::Fixed(self.take(8)?),
            2 => {
                let n = self.varint()?;
                Wire::Bytes(self.take(n)?)
            }
            5 => Wire::Fixed(self.take(4)?),
            other => {
                return Err(format!(
                    "unsupported wire type {other} at byte {}",
                    self.pos
                ));
            }
        };
        Ok((number, value))
    }
}

enum Wire<'a> {
    Varint(u64),
    Fixed(&'a [u8]),
    Bytes(&'a [u8]),
}

/// Reads every field of a message, handing each to `f`.
fn each_field<'a>(
    bytes: &'a [u8],
    mut f: impl FnMut(u64, Wire<'a>) -> std::result::Result<(), Fail>,
) -> std::result::Result<(), Fail> {
    let mut r = Reader { bytes, pos: 0 };
    while !r.done() {
        let (n, w) = r.field()?;
        f(n, w)?;
    }
    Ok(())
}

/// Parses a `ModelProto`.
pub fn parse_model(bytes: &[u8]) -> std::result::Result<(SentencePieceVocab, ModelSpec), Fail> {
    let mut vocab = SentencePieceVocab::default();
    let mut spec = ModelSpec {
        model_type: 1, // the proto's default: unigram
        byte_fallback: false,
        add_dummy_prefix: true,
        remove_extra_whitespaces: true,
    };
    let (mut unk, mut bos, mut eos) = (Some(0i64), Some(1i64), Some(2i64));
    each_field(bytes, |n, w| {
        match (n, w) {
            (1, Wire::Bytes(piece)) => {
                let (mut text, mut score, mut ty) = (None, 0f32, 1u64);
                each_field(piece, |n, w| {
                    match (n, w) {
                        (1, Wire::Bytes(s)) => {
                            let s = std::str::from_utf8(s).map_err(|_| {
                                format!("piece {} is not UTF-8", vocab.pieces.len())
                            })?;
                            text = Some(s.to_string());
                        }
                        (2, Wire::Fixed(b)) if b.len() == 4 => {
                            score = f32::from_le_bytes(b.try_into().expect("4 bytes"));
                        }
                        (3, Wire::Varint(t)) => ty = t,
                        _ => {}
                    }
                    Ok(())
                })?;
                let i = vocab.pieces.len();
                let ty = i64::try_from(ty).ok().and_then(PieceType::from_number);
                let ty = ty.ok_or_else(|| format!("piece {i} has an unknown type"))?;
                vocab
                    .pieces
                    .push(text.ok_or_else(|| format!("piece {i} has no text"))?);
                vocab.scores.push(score);
                vocab.types.push(ty);
            }
            (2, Wire::Bytes(trainer)) => each_field(trainer, |n, w| {
                match (n, w) {
                    (3, Wire::Varint(v)) => spec.model_type = v,
                    (35, Wire::Varint(v)) => spec.byte_fallback = v != 0,
                    // int32 fields: negative values (-1 = none) are 10-byte varints.
                    (40, Wire::Varint(v)) => unk = Some(v as i64),
                    (41, Wire::Varint(v)) => bos = Some(v as i64),
                    (42, Wire::Varint(v)) => eos = Some(v as i64),
                    _ => {}
                }
                Ok(())
            })?,
            (3, Wire::Bytes(normalizer)) => each_field(normalizer, |n, w| {
                match (n, w) {
                    (3, Wire::Varint(v)) => spec.add_dummy_prefix = v != 0,
                    (4, Wire::Varint(v)) => spec.remove_extra_whitespaces = v != 0,
                    _ => {}
                }
                Ok(())
            })?,
            _ => {}
        }
        Ok(())
    })?;
    let id = |v: Option<i64>| v.and_then(|v| u32::try_from(v).ok());
    vocab.unk_id = id(unk).filter(|&i| (i as usize) < vocab.pieces.len());
    vocab.bos_id = id(bos).filter(|&i| (i as usize) < vocab.pieces.len());
    vocab.eos_id = id(eos).filter(|&i| (i as usize) < vocab.pieces.len());
    Ok((vocab, spec))
}

impl Tokenizer {
    /// Loads a SentencePiece `tokenizer.model` (BPE with byte fallback, dummy prefix on,
    /// extra-whitespace removal off: Mistral's and Llama's tokenizers).
    ///
    /// # Errors
    /// [`Error::Io`] if it cannot be read, [`Error::BadVocab`] if it is malformed, larger than
    /// [`MAX_MODEL_BYTES`], or a kind of SentencePiece model this crate does not encode like.
    pub fn from_sentencepiece_model(path: &Path) -> Result<Tokenizer> {
        Tokenizer::from_vocab(&read_sentencepiece_vocab(path)?, path)
    }
}

/// The vocabulary of a SentencePiece `tokenizer.model`, checked to be a kind this crate
/// encodes exactly (see [`Tokenizer::from_sentencepiece_model`]).
///
/// # Errors
/// As [`Tokenizer::from_sentencepiece_model`].
pub fn read_sentencepiece_vocab(path: &Path) -> Result<SentencePieceVocab> {
    {
        let bad = |field: &str, reason: String| Error::BadVocab {
            path: path.to_path_buf(),
            field: field.into(),
            reason,
        };
        let bytes = crate::tokenizer::read_bounded(path, MAX_MODEL_BYTES)?;
        let (vocab, spec) = parse_model(&bytes).map_err(|e| bad("ModelProto", e))?;
        let unsupported = match spec {
            ModelSpec { model_type, .. } if model_type != 2 => Some(format!(
                "model type {model_type} (only BPE, 2, is supported)"
            )),
            ModelSpec {
                byte_fallback: false,
                ..
            } => Some("byte fallback is off".into()),
            ModelSpec {
                add_dummy_prefix: false,
                ..
            } => Some("add_dummy_prefix is off".into()),
            ModelSpec {
                remove_extra_whitespaces: true,
                ..
            } => Some("remove_extra_whitespaces is on".into()),
            _ => None,
        };
        if let Some(reason) = unsupported {
            return Err(bad(
                "spec",
                format!("{reason}: not a tokenizer this crate encodes exactly"),
            ));
        }
        Ok(vocab)
    }
}
