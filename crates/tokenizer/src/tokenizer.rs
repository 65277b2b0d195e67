//! [`Tokenizer`]: loading a model directory's tokenizer files, SentencePiece-exact encode and
//! decode, and the BOS/EOS ids.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use tokenizers::models::ModelWrapper;

use crate::decode::{DecodeState, IncrementalDecoder, PieceKind, parse_byte_piece};
use crate::error::{Error, Result};

/// BOS id used when no tokenizer file names a BOS token and `tokenizer.json` has no `<s>`.
pub const FALLBACK_BOS_ID: u32 = 1;
/// EOS id used when no tokenizer file names an EOS token and `tokenizer.json` has no `</s>`.
pub const FALLBACK_EOS_ID: u32 = 2;

/// The Mixtral tokenizer: SentencePiece BPE with byte fallback, loaded from `tokenizer.json`.
///
/// Encoding runs the `tokenizers` crate's pipeline (normalizer `Prepend("▁")` +
/// `Replace(" ", "▁")`, BPE with byte fallback) with special-token matching switched off, so it
/// equals SentencePiece's `encode(text)`: a dummy-prefix space, no BOS/EOS, and text such as a
/// literal `<s>` encoded as ordinary text, never as a control id. Decoding follows SentencePiece's
/// rules exactly (see [`decode`](Self::decode)), not the `tokenizers` decoder, which differs on
/// `<unk>` and on invalid UTF-8.
///
/// The `tokenizer.json` must be a SentencePiece conversion (Llama/Mistral style: `▁` for spaces,
/// `<0xHH>` byte pieces); a byte-level (GPT-2 style) BPE would load but decode wrongly, and
/// non-BPE models are refused.
///
/// ```
/// # fn main() -> Result<(), mixtral_tokenizer::Error> {
/// use std::path::Path;
/// use mixtral_tokenizer::Tokenizer;
///
/// let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/models/tiny-bf16"));
/// let tok = Tokenizer::from_dir(dir)?;
/// let ids = tok.encode("Hello world")?;
/// assert_eq!(ids, [22557, 1526]); // "▁Hello", "▁world"
/// assert_eq!(tok.decode(&ids)?, "Hello world");
/// assert_eq!((tok.bos_id(), tok.eos_id(), tok.vocab_size()), (1, 2, 32000));
/// // User text never becomes a control token.
/// assert!(!tok.encode("<s>")?.contains(&tok.bos_id()));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Raw piece of each id (`None` for an id the vocabulary skips).
    pieces: Vec<Option<Box<str>>>,
    /// How each id decodes (`None` as in `pieces`).
    kinds: Vec<Option<PieceKind>>,
    bos_id: u32,
    eos_id: u32,
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .finish_non_exhaustive()
    }
}

/// `bos_token` / `eos_token` as `tokenizer_config.json` and `special_tokens_map.json` write them.
#[derive(Debug, Default, Deserialize)]
struct SpecialTokensConfig {
    #[serde(default)]
    bos_token: Option<TokenSpec>,
    #[serde(default)]
    eos_token: Option<TokenSpec>,
}

impl SpecialTokensConfig {
    fn bos(&self) -> Option<&TokenSpec> {
        self.bos_token.as_ref()
    }

    fn eos(&self) -> Option<&TokenSpec> {
        self.eos_token.as_ref()
    }
}

/// A token written either as its text or as an `AddedToken` object.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum TokenSpec {
    Text(String),
    Object { content: String },
}

impl TokenSpec {
    fn content(&self) -> &str {
        match self {
            TokenSpec::Text(s) | TokenSpec::Object { content: s } => s,
        }
    }
}

/// The largest `tokenizer.json` read (Mixtral's is 1.8 MB; the largest vocabularies' are
/// tens of MB).
pub const MAX_TOKENIZER_JSON_BYTES: u64 = 256 << 20;
/// The largest `tokenizer_config.json` / `special_tokens_map.json` read.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// Reads a file, or `None` if it does not exist (for optional files).
pub(crate) fn read_optional(path: &Path, max: u64) -> Result<Option<Vec<u8>>> {
    match read_bounded(path, max) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads `path`, which must be a regular file (links followed) of at most `max` bytes: a FIFO
/// would block, `/dev/zero` would never end, a huge file would exhaust memory.
pub(crate) fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    let refuse = |why: String| {
        Err(Error::Io {
            path: path.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, why),
        })
    };
    if !meta.is_file() {
        return refuse("not a regular file".into());
    }
    if meta.len() > max {
        return refuse(format!(
            "{} bytes, more than the {max} accepted",
            meta.len()
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    std::fs::File::open(path)
        .and_then(|f| f.take(max + 1).read_to_end(&mut bytes))
        .map_err(io)?;
    if bytes.len() as u64 > max {
        return refuse(format!("more than the {max} bytes accepted"));
    }
    Ok(bytes)
}

pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| Error::Json {
        path: path.to_owned(),
        source,
    })
}

impl Tokenizer {
    /// Loads the tokenizer of a model directory: `tokenizer.json` (required), and the BOS/EOS
    /// tokens named by `tokenizer_config.json`, else `special_tokens_map.json` (both optional).
    ///
    /// A token named in those files is looked up in `tokenizer.json`; when neither file names
    /// one, `<s>` / `</s>` are looked up there; when `tokenizer.json` has no such token either,
    /// the ids fall back to [`FALLBACK_BOS_ID`] (1) and [`FALLBACK_EOS_ID`] (2), Mixtral's ids.
    ///
    /// # Errors
    /// [`Error::Io`] if `tokenizer.json` is missing or a file cannot be read, [`Error::Json`] if
    /// one is malformed, [`Error::UnsupportedModel`] if `tokenizer.json` is not a BPE model,
    /// [`Error::SpecialTokenNotInVocab`] if a config file names a BOS/EOS token the vocabulary
    /// lacks. Each names the file.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let mut configs = Vec::new();
        for name in ["tokenizer_config.json", "special_tokens_map.json"] {
            let path = dir.join(name);
            if let Some(bytes) = read_optional(&path, MAX_CONFIG_BYTES)? {
                let config: SpecialTokensConfig = parse_json(&path, &bytes)?;
                configs.push((path, config));
            }
        }
        Self::load(&dir.join("tokenizer.json"), &configs)
    }

    /// Loads a `tokenizer.json` on its own; BOS/EOS are its `<s>` / `</s>` tokens (falling back
    /// to ids 1 / 2 if it has none). Use [`from_dir`](Self::from_dir) to honour a model
    /// directory's config files.
    ///
    /// # Errors
    /// As [`from_dir`](Self::from_dir), for this one file.
    pub fn from_file(tokenizer_json: &Path) -> Result<Self> {
        Self::load(tokenizer_json, &[])
    }

    fn load(path: &Path, configs: &[(PathBuf, SpecialTokensConfig)]) -> Result<Self> {
        let bytes = read_bounded(path, MAX_TOKENIZER_JSON_BYTES)?;
        let mut inner: tokenizers::Tokenizer = parse_json(path, &bytes)?;
        // SentencePiece (and mistral-common) treat `<s>`, `</s>`, `<unk>` in input text as
        // ordinary text; keep the added special tokens known (ids, decoding) but never match
        // them in the input.
        inner.set_encode_special_tokens(true);

        let (unk_token, byte_fallback) = match inner.get_model() {
            ModelWrapper::BPE(bpe) => (bpe.unk_token.clone(), bpe.byte_fallback),
            other => {
                let found = match other {
                    ModelWrapper::WordPiece(_) => "WordPiece",
                    ModelWrapper::WordLevel(_) => "WordLevel",
                    ModelWrapper::Unigram(_) => "Unigram",
                    ModelWrapper::BPE(_) => "BPE",
                };
                return Err(Error::UnsupportedModel {
                    path: path.to_owned(),
                    found: found.to_owned(),
                });
            }
        };

        let vocab = inner.get_vocab(true);
        let size = vocab.values().map(|&id| id as usize + 1).max().unwrap_or(0);
        // The id table is sized by the largest id: ids must be the vocabulary's own (dense),
        // or a single id of 4294967295 would ask for a 64 GiB table.
        if size > vocab.len() {
            let (piece, id) = vocab.iter().max_by_key(|(_, id)| **id).expect("non-empty");
            return Err(Error::BadVocab {
                path: path.to_owned(),
                field: "model.vocab".into(),
                reason: format!(
                    "token {:?} has id {id}, but the vocabulary has only {} tokens (ids must \
                     be below the vocabulary size)",
                    shown(piece),
                    vocab.len()
                ),
            });
        }
        let mut pieces: Vec<Option<Box<str>>> = vec![None; size];
        for (piece, id) in vocab {
            pieces[id as usize] = Some(piece.into_boxed_str());
        }
        let control: HashSet<u32> = inner
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, token)| token.special)
            .map(|(id, _)| id)
            .collect();
        let unk_id = unk_token.as_deref().and_then(|t| inner.token_to_id(t));
        let kinds = pieces
            .iter()
            .enumerate()
            .map(|(id, piece)| {
                let piece = piece.as_deref()?;
                let id = id as u32;
                Some(if Some(id) == unk_id {
                    PieceKind::Unknown
                } else if control.contains(&id) {
                    PieceKind::Control
                } else if let Some(b) = parse_byte_piece(piece).filter(|_| byte_fallback) {
                    PieceKind::Byte(b)
                } else {
                    PieceKind::text(piece)
                })
            })
            .collect();

        let bos = ("bos", SpecialTokensConfig::bos as _);
        let eos = ("eos", SpecialTokensConfig::eos as _);
        let bos_id = resolve_special(&inner, configs, bos, "<s>", FALLBACK_BOS_ID)?;
        let eos_id = resolve_special(&inner, configs, eos, "</s>", FALLBACK_EOS_ID)?;
        Ok(Self::from_parts(inner, pieces, kinds, bos_id, eos_id))
    }

    /// A tokenizer from its parts (the `tokenizers` pipeline must not match special tokens in
    /// the input).
    pub(crate) fn from_parts(
        inner: tokenizers::Tokenizer,
        pieces: Vec<Option<Box<str>>>,
        kinds: Vec<Option<PieceKind>>,
        bos_id: u32,
        eos_id: u32,
    ) -> Self {
        Self {
            inner,
            pieces,
            kinds,
            bos_id,
            eos_id,
        }
    }

    /// SentencePiece `encode(text)`: the dummy-prefix space is added (`"Hello"` -> `▁Hello`),
    /// no BOS/EOS, and special-token text (`<s>`, `</s>`, `<unk>`) is encoded as ordinary text.
    ///
    /// # Errors
    /// [`Error::Encode`] if the `tokenizers` pipeline fails (it does not on valid models).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode_fast(text, false)
            .map_err(|source| Error::Encode { source })?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Encodes text in which the tokenizer's special added tokens (`<s>`, `<|im_start|>` …)
    /// are matched as their ids, as Hugging Face's tokenizers do when they encode a rendered
    /// chat template: each stretch of text between them is encoded by [`Tokenizer::encode`]
    /// (its own dummy-prefix space included). Only for text made entirely by the model's own
    /// template, never for text holding user input (which must not be able to forge a
    /// control token): [`Tokenizer::encode_chat_template`] renders and encodes a
    /// conversation with the user's text kept out of the control tokens.
    ///
    /// # Errors
    /// As [`Tokenizer::encode`].
    pub fn encode_with_special_tokens(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_split_on_specials(text, &self.special_tokens(), |stretch| {
            std::borrow::Cow::Borrowed(stretch)
        })
    }

    /// The special added tokens (`<s>`, `<|im_start|>` …) as (text, id), longest first, so
    /// that a token that begins with another wins.
    pub(crate) fn special_tokens(&self) -> Vec<(String, u32)> {
        let mut specials: Vec<(String, u32)> = self
            .inner
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special && !t.content.is_empty())
            .map(|(id, t)| (t.content, id))
            .collect();
        specials.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        specials
    }

    /// `text` split on `specials` (longest first): each special becomes its id, each stretch
    /// between them is `map`ped and encoded as ordinary text.
    pub(crate) fn encode_split_on_specials(
        &self,
        text: &str,
        specials: &[(String, u32)],
        map: impl Fn(&str) -> std::borrow::Cow<'_, str>,
    ) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        let (mut start, mut i) = (0, 0);
        while i < text.len() {
            let hit = specials
                .iter()
                .find(|(content, _)| text[i..].starts_with(content.as_str()));
            match hit {
                Some((content, id)) => {
                    if start < i {
                        ids.extend(self.encode(&map(&text[start..i]))?);
                    }
                    ids.push(*id);
                    i += content.len();
                    start = i;
                }
                None => i += text[i..].chars().next().map_or(1, char::len_utf8),
            }
        }
        if start < text.len() {
            ids.extend(self.encode(&map(&text[start..]))?);
        }
        Ok(ids)
    }

    /// SentencePiece decode: control tokens print nothing, `<unk>` prints `" ⁇ "`, the leading
    /// dummy-prefix space is dropped once, byte pieces are joined into UTF-8 and each byte that
    /// is not part of a valid character becomes U+FFFD.
    ///
    /// # Errors
    /// [`Error::UnknownId`] for an id outside the vocabulary.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let mut state = DecodeState::default();
        let mut out = String::new();
        for &id in ids {
            let kind = self.piece_kind(id).ok_or(Error::UnknownId {
                id,
                vocab_size: self.vocab_size(),
            })?;
            state.step(kind, &mut out);
        }
        state.finish(&mut out);
        Ok(out)
    }

    /// A streaming decoder over this tokenizer; see [`IncrementalDecoder`].
    pub fn stream(&self) -> IncrementalDecoder<'_> {
        IncrementalDecoder::new(self)
    }

    /// Id of the beginning-of-sequence token (`<s>`, 1 for Mixtral).
    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }

    /// Id of the end-of-sequence token (`</s>`, 2 for Mixtral).
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// Number of ids (one more than the largest id; 32000 for Mixtral).
    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    /// The vocabulary piece of `id` (`"▁Hello"`, `"<0x0A>"`, `"<s>"`), or `None` outside the
    /// vocabulary.
    pub fn id_to_piece(&self, id: u32) -> Option<&str> {
        self.pieces.get(id as usize)?.as_deref()
    }

    /// The id of a vocabulary piece, or `None` if there is no such piece.
    pub fn piece_to_id(&self, piece: &str) -> Option<u32> {
        self.inner.token_to_id(piece)
    }

    /// What `id` puts into the text, for byte-level consumers such as a constrained decoder's
    /// token trie: a text piece's UTF-8 with `▁` as a space (the leading space included), a
    /// byte-fallback piece's byte, or `None` for a token that is not text (control and unknown
    /// tokens, ids the vocabulary skips), which must never be matched against text.
    pub fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        match self.piece_kind(id)? {
            PieceKind::Text { text, .. } => Some(text.as_bytes().to_vec()),
            PieceKind::Byte(b) => Some(vec![*b]),
            PieceKind::Control | PieceKind::Unknown => None,
        }
    }

    pub(crate) fn piece_kind(&self, id: u32) -> Option<&PieceKind> {
        self.kinds.get(id as usize)?.as_ref()
    }
}

/// The id of the BOS or EOS token: named by the first config file that names it, else
/// `default_text`'s id, else `fallback`.
fn resolve_special(
    inner: &tokenizers::Tokenizer,
    configs: &[(PathBuf, SpecialTokensConfig)],
    (which, field): (&'static str, fn(&SpecialTokensConfig) -> Option<&TokenSpec>),
    default_text: &str,
    fallback: u32,
) -> Result<u32> {
    for (path, config) in configs {
        if let Some(spec) = field(config) {
            return inner.token_to_id(spec.content()).ok_or_else(|| {
                Error::SpecialTokenNotInVocab {
                    path: path.clone(),
                    which,
                    token: spec.content().to_owned(),
                }
            });
        }
    }
    Ok(inner.token_to_id(default_text).unwrap_or(fallback))
}

/// A token read from a file, for a message: escaped, and cut after 200 bytes (a crafted
/// vocabulary may hold a token of megabytes).
fn shown(piece: &str) -> String {
    const MAX: usize = 200;
    let mut cut = MAX.min(piece.len());
    while !piece.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut out = piece[..cut].escape_debug().to_string();
    if cut < piece.len() {
        out.push_str(&format!("… ({} bytes)", piece.len()));
    }
    out
}
