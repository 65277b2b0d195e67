//! Chat templates: source and a message, compiled, rendered and encoded with small limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mixtral_tokenizer::Tokenizer;
use std::path::Path;
use std::sync::LazyLock;

/// The real Mixtral tokenizer files of the tiny fixture model, loaded once.
static TOKENIZER: LazyLock<Tokenizer> = LazyLock::new(|| {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/models/tiny-bf16"
    );
    Tokenizer::from_dir(Path::new(dir)).expect("load the fixture tokenizer")
});

fuzz_target!(|data: &[u8]| {
    let _ = mixtral_fuzz::template::template(&TOKENIZER, data);
});
