//! A tokenizer from a bare SentencePiece vocabulary: pieces, scores and piece types, as a GGUF
//! file's `tokenizer.ggml.*` metadata (or a `tokenizer.model`) carries them, with no
//! `tokenizer.json`.
//!
//! SentencePiece's BPE encodes by repeatedly merging the adjacent pair of symbols whose
//! concatenation is the highest-scoring normal piece. The `tokenizers` crate's BPE merges by
//! rank instead, so the vocabulary becomes a merge list ranked by score exactly as Hugging
//! Face's `convert_slow_tokenizer` (`SentencePieceExtractor`) builds it for Llama and Mistral:
//! every split of every piece into two pieces, ordered by the merged piece's score (ties in
//! the order the pieces appear). The normalizer (`▁` prefix, spaces → `▁`) and byte fallback
//! are those of the legacy Llama conversion; the rest of the crate then encodes and decodes as
//! it does for a `tokenizer.json`.

use crate::decode::{PieceKind, parse_byte_piece};
use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;
use std::collections::HashMap;
use std::path::Path;

/// SentencePiece's piece types (`ModelProto.SentencePiece.Type`; GGUF's `token_type` uses the
/// same numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PieceType {
    /// 1: an ordinary piece, produced by merging.
    Normal,
    /// 2: the unknown piece.
    Unknown,
    /// 3: a control symbol (`<s>`, `</s>`): never produced from text.
    Control,
    /// 4: a user-defined symbol, matched whole in text.
    UserDefined,
    /// 5: unused.
    Unused,
    /// 6: a byte-fallback piece `<0xHH>`.
    Byte,
}

impl PieceType {
    /// SentencePiece's (and GGUF's `token_type`) number for this type: the inverse of
    /// [`PieceType::from_number`].
    pub fn number(self) -> i32 {
        match self {
            PieceType::Normal => 1,
            PieceType::Unknown => 2,
            PieceType::Control => 3,
            PieceType::UserDefined => 4,
            PieceType::Unused => 5,
            PieceType::Byte => 6,
        }
    }

    /// The type with SentencePiece's number `n`, or `None` for an unknown number.
    pub fn from_number(n: i64) -> Option<PieceType> {
        Some(match n {
            1 => PieceType::Normal,
            2 => PieceType::Unknown,
            3 => PieceType::Control,
            4 => PieceType::UserDefined,
            5 => PieceType::Unused,
            6 => PieceType::Byte,
            _ => return None,
        })
    }
}

/// A SentencePiece BPE vocabulary: id `i` is `pieces[i]` with `scores[i]` and `types[i]`.
#[derive(Clone, Debug, Default)]
pub struct SentencePieceVocab {
    /// The pieces, by id (`▁` for spaces, `<0xHH>` for bytes).
    pub pieces: Vec<String>,
    /// Their scores (higher merges first).
    pub scores: Vec<f32>,
    /// Their types.
    pub types: Vec<PieceType>,
    /// BOS id, if the source names one (else `<s>`, else 1).
    pub bos_id: Option<u32>,
    /// EOS id, if the source names one (else `</s>`, else 2).
    pub eos_id: Option<u32>,
    /// Unknown id, if the source names one (else the first piece of type unknown).
    pub unk_id: Option<u32>,
}

/// Normal pieces longer than this many characters are not split into merges. SentencePiece's
/// trainer makes no piece longer than 16 by default; the bound keeps a hostile vocabulary
/// (one huge piece) from costing time quadratic in its length.
pub const MAX_MERGED_PIECE_CHARS: usize = 64;

/// The merge list Hugging Face's `SentencePieceExtractor` derives from a vocabulary: for each
/// normal piece in id order, each split into two normal pieces (ordered by the pieces' ids),
/// all sorted by the merged piece's score, highest first (stable). Pieces longer than
/// [`MAX_MERGED_PIECE_CHARS`] are left out.
pub fn merges(vocab: &SentencePieceVocab) -> Vec<(String, String)> {
    let ids: HashMap<&str, usize> = vocab
        .pieces
        .iter()
        .enumerate()
        .filter(|(i, _)| vocab.types[*i] == PieceType::Normal)
        .map(|(i, p)| (p.as_str(), i))
        .rev() // the first id of a repeated piece wins, as in a SentencePiece model
        .collect();
    let mut out: Vec<(f32, usize, usize, usize)> = Vec::new();
    for (id, piece) in vocab.pieces.iter().enumerate() {
        if vocab.types[id] != PieceType::Normal
            || ids.get(piece.as_str()) != Some(&id)
            || piece.chars().nth(MAX_MERGED_PIECE_CHARS).is_some()
        {
            continue;
        }
        let mut local: Vec<(usize, usize)> = piece
            .char_indices()
            .skip(1)
            .filter_map(|(at, _)| Some((*ids.get(&piece[..at])?, *ids.get(&piece[at..])?)))
            .collect();
        local.sort_unstable();
        out.extend(local.into_iter().map(|(l, r)| (vocab.scores[id], id, l, r)));
    }
    // Stable: equal scores keep the order above.
    out.sort_by(|a, b| b.0.total_cmp(&a.0));
    out.into_iter()
        .map(|(_, _, l, r)| (vocab.pieces[l].clone(), vocab.pieces[r].clone()))
        .collect()
}

impl Tokenizer {
    /// A tokenizer from a bare SentencePiece BPE vocabulary; `source` names the file it came
    /// from in errors.
    ///
    /// # Errors
    /// [`Error::BadVocab`] when the arrays differ in length, a special id is out of range, or
    /// the vocabulary has no byte pieces (SentencePiece BPE with byte fallback is what Mixtral
    /// and llama.cpp's `llama` tokenizer use).
    pub fn from_vocab(vocab: &SentencePieceVocab, source: &Path) -> Result<Tokenizer> {
        let bad = |field: &str, reason: String| Error::BadVocab {
            path: source.to_path_buf(),
            field: field.to_string(),
            reason,
        };
        let n = vocab.pieces.len();
        if n == 0 {
            return Err(bad("tokens", "the vocabulary is empty".into()));
        }
        if vocab.scores.len() != n {
            let reason = format!("{} scores for {n} pieces", vocab.scores.len());
            return Err(bad("scores", reason));
        }
        if vocab.types.len() != n {
            let reason = format!("{} types for {n} pieces", vocab.types.len());
            return Err(bad("token_type", reason));
        }
        let bytes = vocab
            .types
            .iter()
            .filter(|t| **t == PieceType::Byte)
            .count();
        if bytes == 0 {
            return Err(bad(
                "token_type",
                "no byte pieces: only SentencePiece BPE with byte fallback is supported".into(),
            ));
        }
        for (field, id) in [
            ("bos", vocab.bos_id),
            ("eos", vocab.eos_id),
            ("unk", vocab.unk_id),
        ] {
            if let Some(id) = id
                && id as usize >= n
            {
                return Err(bad(field, format!("id {id} is outside the {n} pieces")));
            }
        }
        let unk_id = vocab.unk_id.or_else(|| {
            let at = vocab.types.iter().position(|t| *t == PieceType::Unknown)?;
            Some(at as u32)
        });
        let inner = build_tokenizers(vocab, unk_id, source)?;
        let pieces = vocab
            .pieces
            .iter()
            .map(|p| Some(p.clone().into_boxed_str()))
            .collect();
        let kinds = vocab
            .pieces
            .iter()
            .zip(&vocab.types)
            .enumerate()
            .map(|(id, (piece, ty))| {
                Some(match ty {
                    _ if Some(id as u32) == unk_id => PieceKind::Unknown,
                    PieceType::Unknown => PieceKind::Unknown,
                    PieceType::Control | PieceType::Unused => PieceKind::Control,
                    PieceType::Byte => match parse_byte_piece(piece) {
                        Some(b) => PieceKind::Byte(b),
                        None => PieceKind::text(piece),
                    },
                    PieceType::Normal | PieceType::UserDefined => PieceKind::text(piece),
                })
            })
            .collect();
        let find = |text: &str| {
            vocab
                .pieces
                .iter()
                .position(|p| p == text)
                .map(|i| i as u32)
        };
        let bos_id = vocab
            .bos_id
            .or_else(|| find("<s>"))
            .unwrap_or(crate::FALLBACK_BOS_ID);
        let eos_id = vocab
            .eos_id
            .or_else(|| find("</s>"))
            .unwrap_or(crate::FALLBACK_EOS_ID);
        Ok(Tokenizer::from_parts(inner, pieces, kinds, bos_id, eos_id))
    }
}

/// The `tokenizers` pipeline of the legacy Llama conversion over this vocabulary.
fn build_tokenizers(
    vocab: &SentencePieceVocab,
    unk_id: Option<u32>,
    source: &Path,
) -> Result<tokenizers::Tokenizer> {
    use serde_json::{Map, Value, json};
    let mut map = Map::with_capacity(vocab.pieces.len());
    for (i, p) in vocab.pieces.iter().enumerate().rev() {
        // A repeated piece keeps its first id (iterating backwards, the first insert wins last).
        map.insert(p.clone(), json!(i));
    }
    let merges: Vec<Value> = merges(vocab)
        .into_iter()
        .map(|(l, r)| json!([l, r]))
        .collect();
    let added: Vec<Value> = vocab
        .types
        .iter()
        .enumerate()
        .filter(|(i, t)| {
            matches!(
                t,
                PieceType::Control | PieceType::Unknown | PieceType::UserDefined
            ) || Some(*i as u32) == unk_id
        })
        .map(|(i, t)| {
            json!({
                "id": i, "content": vocab.pieces[i], "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false,
                "special": *t != PieceType::UserDefined,
            })
        })
        .collect();
    let unk = unk_id.map(|i| vocab.pieces[i as usize].clone());
    let spec = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u{2581}"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}
        ]},
        "pre_tokenizer": null,
        "post_processor": null,
        "decoder": null,
        "model": {
            "type": "BPE", "dropout": null, "unk_token": unk,
            "continuing_subword_prefix": null, "end_of_word_suffix": null,
            "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
            "vocab": Value::Object(map), "merges": merges,
        },
    });
    let mut inner: tokenizers::Tokenizer =
        serde_json::from_value(spec).map_err(|e| Error::BadVocab {
            path: source.to_path_buf(),
            field: "tokens".into(),
            reason: format!("cannot build the BPE model: {e}"),
        })?;
    inner.set_encode_special_tokens(true);
    Ok(inner)
}

#[cfg(test)]
mod tests {
    use super::PieceType;

    #[test]
    fn piece_type_numbers_round_trip() {
        for n in 1..=6 {
            let t = PieceType::from_number(n).unwrap();
            assert_eq!(i64::from(t.number()), n);
        }
        assert_eq!(PieceType::from_number(7), None);
    }
}
