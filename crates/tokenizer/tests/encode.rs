//! Encoding against SentencePiece's ids on every case of `encode_cases.jsonl`.

mod common;

use common::{Failures, read_cases, read_values, tokenizer};
use serde::Deserialize;

#[derive(Deserialize)]
struct EncodeCase {
    name: String,
    text: String,
    ids: Vec<u32>,
    hf_ids: Vec<u32>,
    agree: bool,
    sp_decode: String,
}

const FILE: &str = "encode_cases.jsonl";

fn short(text: &str) -> String {
    let mut s: String = text.chars().take(80).collect();
    if s.len() < text.len() {
        s.push('…');
    }
    format!("{s:?}")
}

#[test]
fn encode_matches_sentencepiece_ids_on_every_case() {
    let tok = tokenizer();
    let cases: Vec<EncodeCase> = read_cases(FILE);
    let mut failures = Failures::default();
    let mut checked = 0;
    for case in &cases {
        let got = tok.encode(&case.text).expect("encode");
        checked += 1;
        if got != case.ids {
            failures.push(format!(
                "{} text={}\n  expected {:?}\n  got      {:?}",
                case.name,
                short(&case.text),
                case.ids,
                got
            ));
        }
    }
    assert_eq!(checked, read_values(FILE).len());
    assert_eq!(checked, 296, "encode_cases.jsonl should hold 296 cases");
    failures.check("encode vs sentencepiece ids", checked);
}

/// The 9 cases where `tokenizer.json` alone disagrees with SentencePiece are exactly the texts
/// with a literal `<s>`, `</s>` or `<unk>`: we follow SentencePiece (and mistral-common), so
/// such text never becomes a control id.
#[test]
fn literal_special_token_text_encodes_as_text_like_sentencepiece() {
    let tok = tokenizer();
    let cases: Vec<EncodeCase> = read_cases(FILE);
    let disagreeing: Vec<&EncodeCase> = cases.iter().filter(|c| !c.agree).collect();
    assert_eq!(
        disagreeing.len(),
        9,
        "fixture README: 9 sp/hf disagreements"
    );
    for case in disagreeing {
        assert!(
            ["<s>", "</s>", "<unk>"]
                .iter()
                .any(|s| case.text.contains(s)),
            "{}: disagreement without a literal special token: {:?}",
            case.name,
            case.text
        );
        let got = tok.encode(&case.text).expect("encode");
        assert_eq!(
            got, case.ids,
            "{} text={:?}: expected sentencepiece ids",
            case.name, case.text
        );
        assert_ne!(
            got, case.hf_ids,
            "{}: should differ from tokenizer.json's",
            case.name
        );
        for control in [tok.bos_id(), tok.eos_id(), 0] {
            assert!(
                !got.contains(&control),
                "{} text={:?}: got control id {control} in {got:?}",
                case.name,
                case.text
            );
        }
    }
}

#[test]
fn decode_of_encoded_text_matches_sentencepiece_decode_on_every_case() {
    let tok = tokenizer();
    let cases: Vec<EncodeCase> = read_cases(FILE);
    let mut failures = Failures::default();
    for case in &cases {
        let got = tok.decode(&case.ids).expect("decode");
        if got != case.sp_decode {
            failures.push(format!(
                "{} ids={:?}\n  expected {}\n  got      {}",
                case.name,
                case.ids,
                short(&case.sp_decode),
                short(&got)
            ));
        }
    }
    assert_eq!(cases.len(), 296);
    failures.check("decode(encode cases) vs sentencepiece decode", cases.len());
}

#[test]
fn empty_text_encodes_to_no_ids() {
    assert_eq!(tokenizer().encode("").expect("encode"), Vec::<u32>::new());
}

#[test]
fn dummy_prefix_space_is_added_once() {
    let tok = tokenizer();
    let hello = tok.piece_to_id("▁Hello").expect("piece ▁Hello");
    let space = tok.piece_to_id("▁").expect("piece ▁");
    assert_eq!(tok.encode("Hello").expect("encode"), [hello]);
    assert_eq!(tok.encode(" Hello").expect("encode"), [space, hello]);
}
