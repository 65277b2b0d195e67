//! The tokenizer a GGUF file carries in its metadata, against SentencePiece: the merge list
//! equals the one Hugging Face's converter wrote for the same vocabulary, and encoding gives
//! `SentencePieceProcessor.encode` ids on every case (the 1024-piece fixture vocabulary of the
//! quantized models, and Mixtral's real 32000-piece vocabulary in a vocabulary-only GGUF).

use mixtral::gguf_vocab::{tokenizer_from_gguf, vocab_from_gguf};
use mixtral::tensor::gguf::GgufFile;
use mixtral::tokenizer::merges;
use mixtral_testkit::fixtures_dir;
use mixtral_testkit::json_ids as ids;
use serde_json::Value;
use std::path::Path;

fn json_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The merges of a `tokenizer.json`, as pairs.
fn hf_merges(path: &Path) -> Vec<(String, String)> {
    let v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    v["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| match m {
            Value::Array(p) => (p[0].as_str().unwrap().into(), p[1].as_str().unwrap().into()),
            Value::String(s) => {
                let (l, r) = s.split_once(' ').unwrap();
                (l.into(), r.into())
            }
            other => panic!("merge {other}"),
        })
        .collect()
}

fn q4_k_m() -> GgufFile {
    GgufFile::open(fixtures_dir().join("quant/tiny-q/Q4_K_M.gguf")).unwrap()
}

fn vocab_only() -> GgufFile {
    GgufFile::open(fixtures_dir().join("tokenizer/vocab.gguf")).unwrap()
}

#[test]
fn merges_from_scores_equal_the_hugging_face_conversion() {
    for (file, tokenizer_json) in [
        (
            q4_k_m(),
            fixtures_dir().join("quant/tokenizer/tokenizer.json"),
        ),
        (
            vocab_only(),
            fixtures_dir().join("models/tiny-bf16/tokenizer.json"),
        ),
    ] {
        let vocab = vocab_from_gguf(&file).unwrap().unwrap();
        let want = hf_merges(&tokenizer_json);
        let got = merges(&vocab);
        assert_eq!(got.len(), want.len(), "{}", file.path().display());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g, w, "{}: merge {i}", file.path().display());
        }
    }
}

#[test]
fn fixture_vocabulary_encodes_as_sentencepiece() {
    let tok = tokenizer_from_gguf(&q4_k_m()).unwrap().unwrap();
    assert_eq!((tok.vocab_size(), tok.bos_id(), tok.eos_id()), (1024, 1, 2));
    let cases = json_lines(&fixtures_dir().join("quant/tokenizer_cases.jsonl"));
    assert!(cases.len() > 300);
    for case in &cases {
        let text = case["text"].as_str().unwrap();
        assert_eq!(
            tok.encode(text).unwrap(),
            ids(&case["ids"]),
            "{}",
            case["name"]
        );
    }
    // The model prompts' ids are BOS + encode(text), as llama.cpp's tokenizer gives them.
    let exp: Value = serde_json::from_slice(
        &std::fs::read(fixtures_dir().join("quant/tiny-q/expected.json")).unwrap(),
    )
    .unwrap();
    for p in exp["prompts"].as_array().unwrap() {
        let mut want = vec![tok.bos_id()];
        want.extend(tok.encode(p["text"].as_str().unwrap()).unwrap());
        assert_eq!(want, ids(&p["text_ids_with_bos"]));
    }
}

#[test]
fn mixtral_vocabulary_encodes_and_decodes_as_sentencepiece() {
    let tok = tokenizer_from_gguf(&vocab_only()).unwrap().unwrap();
    assert_eq!(
        (tok.vocab_size(), tok.bos_id(), tok.eos_id()),
        (32000, 1, 2)
    );
    let dir = fixtures_dir().join("tokenizer");
    let cases = json_lines(&dir.join("encode_cases.jsonl"));
    for case in &cases {
        let text = case["text"].as_str().unwrap();
        assert_eq!(
            tok.encode(text).unwrap(),
            ids(&case["ids"]),
            "{}",
            case["name"]
        );
    }
    for case in json_lines(&dir.join("decode_cases.jsonl")) {
        let got = tok.decode(&ids(&case["ids"])).unwrap();
        assert_eq!(got, case["text"].as_str().unwrap(), "{}", case["name"]);
    }
}

#[test]
fn sentencepiece_model_file_gives_the_same_tokenizer() {
    // Mistral's directories carry `tokenizer.model` only: its pieces, scores and types give the
    // merge list of the Hugging Face conversion and SentencePiece's ids.
    use mixtral::tokenizer::{Tokenizer, parse_model};
    let path = fixtures_dir().join("models/tiny-bf16/tokenizer.model");
    let (vocab, spec) = parse_model(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!((spec.model_type, spec.byte_fallback), (2, true));
    assert!(spec.add_dummy_prefix && !spec.remove_extra_whitespaces);
    let want = hf_merges(&fixtures_dir().join("models/tiny-bf16/tokenizer.json"));
    assert_eq!(merges(&vocab), want);
    let tok = Tokenizer::from_sentencepiece_model(&path).unwrap();
    assert_eq!(
        (tok.vocab_size(), tok.bos_id(), tok.eos_id()),
        (32000, 1, 2)
    );
    for case in json_lines(&fixtures_dir().join("tokenizer/encode_cases.jsonl")) {
        let text = case["text"].as_str().unwrap();
        assert_eq!(
            tok.encode(text).unwrap(),
            ids(&case["ids"]),
            "{}",
            case["name"]
        );
    }
    // Truncated or garbled files are errors naming the file, never panics.
    let bytes = std::fs::read(&path).unwrap();
    for cut in [1usize, 7, 1000, bytes.len() / 2] {
        assert!(
            parse_model(&bytes[..cut]).is_err() || cut < 2,
            "cut at {cut}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("tokenizer.model");
    std::fs::write(&bad, &bytes[..bytes.len() / 3]).unwrap();
    let err = Tokenizer::from_sentencepiece_model(&bad)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tokenizer.model") && err.contains("ModelProto"),
        "{err}"
    );
}

#[test]
fn auto_precision_is_int8_for_quantized_files_and_f32_otherwise() {
    use mixtral::kernels::matmul::Precision as Kernel;
    use mixtral::{LoadOptions, Precision};
    let quantized = fixtures_dir().join("quant/tiny-q/Q4_K_M.gguf");
    let float = fixtures_dir().join("models/tiny-bf16");
    let resolved = |path: &std::path::Path, precision| {
        let opts = LoadOptions {
            precision,
            threads: Some(1),
            ..LoadOptions::default()
        };
        let engine = mixtral::Engine::load_with(path, opts, |_, _| {}).unwrap();
        engine.model().precision()
    };
    assert_eq!(resolved(&quantized, Precision::Auto), Kernel::Int8);
    assert_eq!(resolved(&float, Precision::Auto), Kernel::F32);
    assert_eq!(resolved(&quantized, Precision::F32), Kernel::F32);
    assert_eq!(resolved(&float, Precision::Int8), Kernel::Int8);
}
