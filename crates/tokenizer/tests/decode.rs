//! Decoding and streaming against SentencePiece on every case of `decode_cases.jsonl`.

mod common;

use common::{Failures, read_cases, read_values, tokenizer};
use mixtral_tokenizer::{Error, Tokenizer};
use serde::Deserialize;

#[derive(Deserialize)]
struct DecodeCase {
    name: String,
    ids: Vec<u32>,
    text: String,
    prefix_texts: Option<Vec<String>>,
    stream_deltas: Option<Vec<String>>,
}

const FILE: &str = "decode_cases.jsonl";

/// Streams `ids`, reporting each delta as a string (`None` -> `""`); the output of `finish` is
/// appended to the last delta, as the fixture's streamer releases everything at the last token.
fn stream_deltas(tok: &Tokenizer, ids: &[u32]) -> Vec<String> {
    let mut stream = tok.stream();
    let mut deltas: Vec<String> = ids
        .iter()
        .map(|&id| stream.push(id).expect("push").unwrap_or_default())
        .collect();
    let rest = stream.finish().unwrap_or_default();
    match deltas.last_mut() {
        Some(last) => last.push_str(&rest),
        None => assert!(rest.is_empty(), "finish without ids gave {rest:?}"),
    }
    deltas
}

#[test]
fn decode_matches_sentencepiece_text_on_every_case() {
    let tok = tokenizer();
    let cases: Vec<DecodeCase> = read_cases(FILE);
    let mut failures = Failures::default();
    for case in &cases {
        let got = tok.decode(&case.ids).expect("decode");
        if got != case.text {
            failures.push(format!(
                "{} ids={:?}\n  expected {:?}\n  got      {:?}",
                case.name, case.ids, case.text, got
            ));
        }
    }
    assert_eq!(cases.len(), read_values(FILE).len());
    assert_eq!(cases.len(), 40, "decode_cases.jsonl should hold 40 cases");
    failures.check("decode vs sentencepiece text", cases.len());
}

#[test]
fn decode_of_every_prefix_matches_fixture_prefix_texts() {
    let tok = tokenizer();
    let cases: Vec<DecodeCase> = read_cases(FILE);
    let mut failures = Failures::default();
    let mut checked = 0;
    for case in &cases {
        let Some(prefixes) = &case.prefix_texts else {
            continue;
        };
        assert_eq!(prefixes.len(), case.ids.len(), "{}", case.name);
        for (k, expected) in prefixes.iter().enumerate() {
            let got = tok.decode(&case.ids[..=k]).expect("decode");
            if &got != expected {
                failures.push(format!(
                    "{} prefix of {} ids {:?}\n  expected {expected:?}\n  got      {got:?}",
                    case.name,
                    k + 1,
                    &case.ids[..=k]
                ));
            }
        }
        checked += 1;
    }
    let with_field = read_values(FILE)
        .iter()
        .filter(|v| v.get("prefix_texts").is_some())
        .count();
    assert_eq!(checked, with_field);
    assert!(
        checked >= 10,
        "expected the fixture's streaming cases, found {checked}"
    );
    failures.check("decode(prefix) vs prefix_texts", checked);
}

#[test]
fn stream_deltas_match_fixture_on_every_streaming_case() {
    let tok = tokenizer();
    let cases: Vec<DecodeCase> = read_cases(FILE);
    let mut failures = Failures::default();
    let mut checked = 0;
    for case in &cases {
        let Some(expected) = &case.stream_deltas else {
            continue;
        };
        let got = stream_deltas(tok, &case.ids);
        if &got != expected {
            failures.push(format!(
                "{} ids={:?}\n  expected {expected:?}\n  got      {got:?}",
                case.name, case.ids
            ));
        }
        checked += 1;
    }
    let with_field = read_values(FILE)
        .iter()
        .filter(|v| v.get("stream_deltas").is_some())
        .count();
    assert_eq!(checked, with_field);
    assert!(
        checked >= 10,
        "expected the fixture's streaming cases, found {checked}"
    );
    failures.check("stream deltas", checked);
}

#[test]
fn streamed_text_equals_decode_on_every_decode_and_encode_case() {
    #[derive(Deserialize)]
    struct Ids {
        name: String,
        ids: Vec<u32>,
    }
    let tok = tokenizer();
    let mut cases: Vec<Ids> = read_cases(FILE);
    cases.extend(read_cases::<Ids>("encode_cases.jsonl"));
    let mut failures = Failures::default();
    for case in &cases {
        let streamed: String = stream_deltas(tok, &case.ids).concat();
        let whole = tok.decode(&case.ids).expect("decode");
        if streamed != whole {
            failures.push(format!(
                "{}\n  decode   {whole:?}\n  streamed {streamed:?}",
                case.name
            ));
        }
    }
    assert_eq!(cases.len(), 40 + 296);
    failures.check("streamed == decode", cases.len());
}

/// Byte id of a raw byte in the Mixtral vocabulary (`<0x00>` is id 3).
fn byte(tok: &Tokenizer, b: u8) -> u32 {
    tok.piece_to_id(&format!("<0x{b:02X}>"))
        .expect("byte piece")
}

#[test]
fn byte_fallback_pieces_become_one_character_when_complete() {
    let tok = tokenizer();
    let mut stream = tok.stream();
    let euro = [0xE2, 0x82, 0xAC].map(|b| byte(tok, b));
    assert_eq!(stream.push(euro[0]).expect("push"), None);
    assert_eq!(stream.push(euro[1]).expect("push"), None);
    assert_eq!(stream.push(euro[2]).expect("push").as_deref(), Some("€"));
    assert_eq!(stream.finish(), None);
    assert_eq!(tok.decode(&euro).expect("decode"), "€");
}

/// A lead byte followed by a byte that can never continue it is settled at once: the streamer
/// does not wait for bytes that cannot help (the whole-prefix decode already ends in `A`), and
/// every bad byte is its own U+FFFD (not one per maximal bad run, as `String::from_utf8_lossy`).
#[test]
fn broken_sequence_followed_by_ascii_byte_is_released_at_once() {
    let tok = tokenizer();
    let bad2a = "\u{FFFD}\u{FFFD}A";
    for (bytes, expected) in [
        (&[0xE2, 0x41][..], &["", "\u{FFFD}A"][..]),
        (&[0xF0, 0x9F, 0x41], &["", "", bad2a]),
        (&[0xE0, 0x80, 0x41], &["", "", bad2a]), // E0 80 is an overlong prefix
        (&[0xED, 0xA0, 0x41], &["", "", bad2a]), // ED A0 would be a surrogate
        (&[0xE2, 0x82, 0x41], &["", "", bad2a]),
        (&[0xF0, 0x9F, 0x41, 0x42], &["", "", bad2a, "B"]),
        (&[0xC3, 0xA9], &["", "é"]),
    ] {
        let ids: Vec<u32> = bytes.iter().map(|&b| byte(tok, b)).collect();
        let got = stream_deltas(tok, &ids);
        assert_eq!(got, expected, "bytes {bytes:02X?}");
        assert_eq!(got, naive_stream(tok, &ids), "bytes {bytes:02X?}");
        assert_eq!(
            tok.decode(&ids).expect("decode"),
            expected.concat(),
            "bytes {bytes:02X?}"
        );
    }
}

/// Reference streamer, the fixture's definition: decode the whole prefix after each id, hold
/// back while it ends in U+FFFD, emit the new suffix; release everything at the end.
fn naive_stream(tok: &Tokenizer, ids: &[u32]) -> Vec<String> {
    let mut emitted = String::new();
    let mut out = Vec::new();
    for k in 1..=ids.len() {
        let full = tok.decode(&ids[..k]).expect("decode");
        if full.ends_with('\u{FFFD}') && k < ids.len() {
            out.push(String::new());
            continue;
        }
        assert!(
            full.starts_with(&emitted),
            "prefix decode not monotone: {full:?} vs {emitted:?}"
        );
        out.push(full[emitted.len()..].to_owned());
        emitted = full;
    }
    out
}

#[test]
fn stream_equals_whole_prefix_streamer_on_random_byte_heavy_sequences() {
    let tok = tokenizer();
    // Deterministic xorshift; ids drawn mostly from byte pieces, plus specials, `▁`, words.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let words = [0, 1, 2, 28705, 22557, 288, 259, 29383];
    let mut checked = 0;
    for _ in 0..2000 {
        let len = (next() % 12) as usize + 1;
        let ids: Vec<u32> = (0..len)
            .map(|_| match next() % 10 {
                0..=6 => 3 + (next() % 256) as u32,
                7 => [0xC3, 0xE2, 0xF0, 0x82, 0x9F, 0xA9][(next() % 6) as usize] + 3,
                _ => words[(next() % words.len() as u64) as usize],
            })
            .collect();
        assert_eq!(
            stream_deltas(tok, &ids),
            naive_stream(tok, &ids),
            "ids {ids:?}"
        );
        checked += 1;
    }
    assert_eq!(checked, 2000);
}

#[test]
fn leading_space_rule_follows_sentencepiece() {
    let tok = tokenizer();
    let id = |p: &str| tok.piece_to_id(p).unwrap_or_else(|| panic!("piece {p}"));
    let (sp, hello, world) = (id("▁"), id("▁Hello"), id("▁world"));
    // Dropped from the first word only, even after control tokens.
    assert_eq!(
        tok.decode(&[1, hello, world]).expect("decode"),
        "Hello world"
    );
    // A bare `▁` first consumes the dummy space; the next word keeps its own.
    assert_eq!(tok.decode(&[sp, hello]).expect("decode"), " Hello");
    // Anything printed first (a byte, `<unk>`) means no space is dropped afterwards.
    assert_eq!(
        tok.decode(&[byte(tok, b'A'), hello]).expect("decode"),
        "A Hello"
    );
    assert_eq!(tok.decode(&[0, hello]).expect("decode"), " \u{2047}  Hello");
    let deltas = stream_deltas(tok, &[1, sp, hello, world]);
    assert_eq!(deltas, ["", "", " Hello", " world"]);
}

#[test]
fn unknown_id_is_a_typed_error_and_leaves_the_stream_unchanged() {
    let tok = tokenizer();
    let bad = tok.vocab_size() as u32;
    let err = tok.decode(&[22557, bad]).expect_err("id out of range");
    assert!(
        matches!(err, Error::UnknownId { id, vocab_size: 32000 } if id == bad),
        "{err:?}"
    );
    assert!(err.to_string().contains("32000"), "{err}");

    let mut stream = tok.stream();
    assert_eq!(stream.push(byte(tok, 0xC3)).expect("push"), None);
    assert!(matches!(
        stream.push(u32::MAX),
        Err(Error::UnknownId { .. })
    ));
    assert_eq!(
        stream.push(byte(tok, 0xA9)).expect("push").as_deref(),
        Some("é")
    );
}

#[test]
fn finish_releases_truncated_bytes_and_resets_the_stream() {
    let tok = tokenizer();
    let hello = tok.piece_to_id("▁Hello").expect("piece");
    let mut stream = tok.stream();
    assert_eq!(stream.push(hello).expect("push").as_deref(), Some("Hello"));
    assert_eq!(stream.push(byte(tok, 0xF0)).expect("push"), None);
    assert_eq!(stream.finish().as_deref(), Some("\u{FFFD}"));
    // A new sequence: its first word loses the dummy space again.
    assert_eq!(stream.push(hello).expect("push").as_deref(), Some("Hello"));
    assert_eq!(stream.finish(), None);
}

/// `token_bytes` is what each id adds to the text: on every fixture case without control or
/// unknown tokens and of valid UTF-8, the ids' bytes joined are SentencePiece's text, but for the one leading
/// space the decoder drops (the dummy prefix), and control tokens have no bytes.
#[test]
fn token_bytes_join_to_the_decoded_text() {
    let tok = tokenizer();
    let cases: Vec<DecodeCase> = read_cases(FILE);
    let mut checked = 0;
    for case in &cases {
        let bytes: Option<Vec<Vec<u8>>> = case.ids.iter().map(|&id| tok.token_bytes(id)).collect();
        let Some(bytes) = bytes else {
            continue;
        };
        // Broken UTF-8 decodes to one U+FFFD per byte; only whole text is compared.
        let Ok(joined) = String::from_utf8(bytes.concat()) else {
            continue;
        };
        let want = &case.text;
        assert!(
            joined == *want || joined.strip_prefix(' ') == Some(want.as_str()),
            "{}: token bytes give {joined:?}, SentencePiece {want:?}",
            case.name
        );
        checked += 1;
    }
    assert!(
        checked >= cases.len() / 2,
        "only {checked} of {} cases checked",
        cases.len()
    );
    assert_eq!(tok.token_bytes(tok.bos_id()), None);
    assert_eq!(tok.token_bytes(tok.eos_id()), None);
    assert_eq!(tok.token_bytes(u32::MAX), None);
}
