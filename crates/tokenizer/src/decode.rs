//! SentencePiece-exact decoding: the per-id piece table, the decode state machine shared by
//! [`Tokenizer::decode`](crate::Tokenizer::decode) and the streaming [`IncrementalDecoder`].
//!
//! The rules are those of SentencePiece's `DecodeIds` for a model with `add_dummy_prefix`:
//! control tokens (`<s>`, `</s>`) print nothing; `<unk>` prints `" ⁇ "`; `▁` prints a space;
//! runs of byte pieces (`<0xE2><0x82><0xAC>`) are joined into UTF-8, and every byte that is not
//! part of a valid character becomes U+FFFD on its own; the first non-byte piece that starts
//! with `▁` loses that `▁` if nothing has been printed before it (the dummy prefix), and once
//! something has been printed or that space has been consumed, no later piece loses its space.

use crate::error::{Error, Result};

/// What one vocabulary id prints as.
#[derive(Debug, Clone)]
pub(crate) enum PieceKind {
    /// A control token such as `<s>` or `</s>`: prints nothing.
    Control,
    /// The unknown token `<unk>`: prints `" ⁇ "`.
    Unknown,
    /// A byte-fallback piece `<0xHH>`.
    Byte(u8),
    /// Ordinary text, with `▁` already turned into spaces.
    Text {
        /// The piece's text with every `▁` replaced by `' '`.
        text: Box<str>,
        /// Whether the piece started with `▁` (so `text` starts with a space that the dummy-prefix
        /// rule may drop).
        space_prefix: bool,
    },
}

/// SentencePiece's surface for `<unk>` (its `kDefaultUnknownSymbol`).
pub(crate) const UNK_SURFACE: &str = " \u{2047} ";

/// The SentencePiece whitespace marker.
pub(crate) const SPACE_SYMBOL: char = '\u{2581}';

/// Parses a byte-fallback piece `<0xHH>` (two upper-case hex digits, as SentencePiece writes them).
pub(crate) fn parse_byte_piece(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
    {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

impl PieceKind {
    /// Classifies an ordinary (non-control, non-unknown, non-byte) piece.
    pub(crate) fn text(piece: &str) -> Self {
        PieceKind::Text {
            space_prefix: piece.starts_with(SPACE_SYMBOL),
            text: piece.replace(SPACE_SYMBOL, " ").into_boxed_str(),
        }
    }
}

/// Length of the UTF-8 sequence a lead byte announces, as SentencePiece's `DecodeUTF8` reads it
/// (0 for a byte that cannot start a sequence).
fn sequence_len(lead: u8) -> usize {
    match lead {
        0x00..=0x7F => 1,
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => 0,
    }
}

/// Whether `prefix` (shorter than its lead byte announces) can still be completed into a valid
/// UTF-8 character by bytes that have not arrived yet.
fn completable(prefix: &[u8]) -> bool {
    let (lo, hi) = match prefix[0] {
        0xC2..=0xDF | 0xE1..=0xEC | 0xEE..=0xEF | 0xF1..=0xF3 => (0x80, 0xBF),
        0xE0 => (0xA0, 0xBF),
        0xED => (0x80, 0x9F),
        0xF0 => (0x90, 0xBF),
        0xF4 => (0x80, 0x8F),
        _ => return false,
    };
    prefix.get(1).is_none_or(|b| (lo..=hi).contains(b))
        && prefix.iter().skip(2).all(|b| (0x80..=0xBF).contains(b))
}

/// The decode state after some prefix of ids: O(1) to advance by one id (amortised; a step costs
/// the length of the id's piece).
#[derive(Debug, Clone)]
pub(crate) struct DecodeState {
    /// Bytes of the current byte-piece run not yet resolved: at most 3, a prefix of a character
    /// that later bytes may complete.
    tail: Vec<u8>,
    /// SentencePiece's `is_bos_ws`: a leading `▁` would still be dropped.
    bos_ws: bool,
    /// SentencePiece's `bos_ws_seen`: the previous non-byte piece had its `▁` dropped.
    bos_ws_seen: bool,
    /// Whether anything has been printed (byte pieces always print something).
    printed: bool,
}

impl Default for DecodeState {
    fn default() -> Self {
        Self {
            tail: Vec::with_capacity(4),
            bos_ws: true,
            bos_ws_seen: false,
            printed: false,
        }
    }
}

impl DecodeState {
    /// Whether bytes are held that a later byte piece could complete into a character.
    pub(crate) fn has_incomplete_bytes(&self) -> bool {
        !self.tail.is_empty()
    }

    /// Advances by one piece, appending the text it settles to `out`.
    pub(crate) fn step(&mut self, kind: &PieceKind, out: &mut String) {
        if let PieceKind::Byte(b) = *kind {
            self.tail.push(b);
            self.printed = true;
            self.resolve(false, out);
            return;
        }
        // A non-byte piece ends the byte run: settle every byte left.
        self.resolve(true, out);
        if self.bos_ws_seen || self.printed {
            self.bos_ws = false;
        }
        let surface: &str = match kind {
            PieceKind::Control | PieceKind::Byte(_) => {
                self.bos_ws_seen = false;
                ""
            }
            PieceKind::Unknown => {
                self.bos_ws_seen = false;
                UNK_SURFACE
            }
            PieceKind::Text { text, space_prefix } => {
                if self.bos_ws && *space_prefix {
                    self.bos_ws_seen = true;
                    &text[1..]
                } else {
                    self.bos_ws_seen = false;
                    text
                }
            }
        };
        if !surface.is_empty() {
            self.printed = true;
            out.push_str(surface);
        }
    }

    /// Ends the sequence: settles the held bytes (each becomes U+FFFD).
    pub(crate) fn finish(&mut self, out: &mut String) {
        self.resolve(true, out);
    }

    /// SentencePiece's greedy UTF-8 reading of a byte run: a valid character is taken whole,
    /// anything else costs one byte and prints U+FFFD. With `at_end` false, stops before a
    /// trailing partial character that later bytes could still complete.
    fn resolve(&mut self, at_end: bool, out: &mut String) {
        let mut start = 0;
        while start < self.tail.len() {
            let rest = &self.tail[start..];
            let len = sequence_len(rest[0]);
            if len == 0 {
                out.push(char::REPLACEMENT_CHARACTER);
                start += 1;
            } else if rest.len() >= len {
                match std::str::from_utf8(&rest[..len]) {
                    Ok(s) => {
                        out.push_str(s);
                        start += len;
                    }
                    Err(_) => {
                        out.push(char::REPLACEMENT_CHARACTER);
                        start += 1;
                    }
                }
            } else if !at_end && completable(rest) {
                break;
            } else {
                out.push(char::REPLACEMENT_CHARACTER);
                start += 1;
            }
        }
        self.tail.drain(..start);
    }
}

/// Streaming decoder: turns ids one at a time into text deltas whose concatenation is exactly
/// [`Tokenizer::decode`](crate::Tokenizer::decode) of all the ids.
///
/// It never emits a broken UTF-8 sequence: while the text so far ends in an incomplete
/// byte-fallback character, or in U+FFFD, the text is held back; `<0xE2>`, `<0x82>`, `<0xAC>` give `None`, `None`,
/// `Some("€")`. The dummy-prefix space is dropped from the first word only, as in
/// [`Tokenizer::decode`](crate::Tokenizer::decode). Each step costs O(length of the piece);
/// the prefix is never decoded again.
///
/// The deltas are those of a streamer that decodes the whole prefix after every id, emits the
/// new suffix, and holds back while that prefix ends in U+FFFD; [`finish`](Self::finish)
/// releases whatever is still held (truncated bytes at the end become U+FFFD).
///
/// ```
/// # fn main() -> Result<(), mixtral_tokenizer::Error> {
/// use std::path::Path;
/// let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/models/tiny-bf16"));
/// let tok = mixtral_tokenizer::Tokenizer::from_dir(dir)?;
/// let mut stream = tok.stream();
/// // "▁I", "▁love", "▁", "<0xF0>", "<0x9F>", "<0xA6>", "<0x80>": the crab comes as 4 byte pieces
/// let mut deltas = Vec::new();
/// for id in [315, 2016, 28705, 243, 162, 169, 131] {
///     deltas.push(stream.push(id)?);
/// }
/// let text: String = deltas.iter().flatten().map(String::as_str).collect();
/// assert_eq!(text, "I love 🦀");
/// assert_eq!(deltas[3..6], [None, None, None]); // held until the character is complete
/// assert_eq!(deltas[6].as_deref(), Some("🦀"));
/// assert_eq!(stream.finish(), None);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct IncrementalDecoder<'t> {
    tokenizer: &'t crate::Tokenizer,
    state: DecodeState,
    /// Settled text not yet emitted because it ends in U+FFFD.
    held: String,
}

impl<'t> IncrementalDecoder<'t> {
    pub(crate) fn new(tokenizer: &'t crate::Tokenizer) -> Self {
        Self {
            tokenizer,
            state: DecodeState::default(),
            held: String::new(),
        }
    }

    /// Feeds one id. Returns the new text, or `None` when this id adds nothing printable yet
    /// (a control token, the dropped dummy-prefix space, or bytes held back until the character
    /// they start is complete).
    ///
    /// # Errors
    /// [`Error::UnknownId`] if `id` is not in the vocabulary; the decoder is then unchanged.
    pub fn push(&mut self, id: u32) -> Result<Option<String>> {
        let kind = self.tokenizer.piece_kind(id).ok_or(Error::UnknownId {
            id,
            vocab_size: self.tokenizer.vocab_size(),
        })?;
        self.state.step(kind, &mut self.held);
        if self.state.has_incomplete_bytes() || self.held.ends_with(char::REPLACEMENT_CHARACTER) {
            return Ok(None);
        }
        Ok(self.take_held())
    }

    /// Ends the sequence: returns whatever was held back (bytes of a character that never
    /// completed come out as U+FFFD, one per byte), and resets the decoder for a new sequence.
    pub fn finish(&mut self) -> Option<String> {
        self.state.finish(&mut self.held);
        self.state = DecodeState::default();
        self.take_held()
    }

    fn take_held(&mut self) -> Option<String> {
        if self.held.is_empty() {
            None
        } else {
            Some(std::mem::take(&mut self.held))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_pieces_are_exactly_two_upper_case_hex_digits() {
        assert_eq!(parse_byte_piece("<0x00>"), Some(0));
        assert_eq!(parse_byte_piece("<0xE2>"), Some(0xE2));
        assert_eq!(parse_byte_piece("<0xFF>"), Some(0xFF));
        for not_byte in [
            "<0xe2>", "<0x1>", "<0x100>", "0xE2", "<0xG0>", "<0x+1>", "<s>", "",
        ] {
            assert_eq!(parse_byte_piece(not_byte), None, "{not_byte:?}");
        }
    }

    #[test]
    fn completable_prefixes_are_those_some_valid_character_starts_with() {
        // Brute force: a prefix is completable iff some valid UTF-8 character starts with it.
        let mut starts = std::collections::HashSet::new();
        for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
            let mut buf = [0; 4];
            let bytes = c.encode_utf8(&mut buf).as_bytes();
            for k in 1..bytes.len() {
                starts.insert(bytes[..k].to_vec());
            }
        }
        let mut prefixes = Vec::new();
        for a in 0x80..=0xFFu8 {
            prefixes.push(vec![a]);
            for b in 0..=0xFFu8 {
                prefixes.push(vec![a, b]);
                prefixes.push(vec![a, b, 0x80]);
                prefixes.push(vec![a, 0x80, b]);
            }
        }
        for p in prefixes.iter().filter(|p| p.len() < sequence_len(p[0])) {
            assert_eq!(completable(p), starts.contains(p), "prefix {p:02X?}");
        }
    }

    #[test]
    fn unk_surface_is_sentencepieces() {
        assert_eq!(UNK_SURFACE.as_bytes(), b" \xE2\x81\x87 ");
    }
}
