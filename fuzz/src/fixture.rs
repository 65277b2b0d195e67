//! The tokenizer the chat and template targets encode with: the real Mixtral tokenizer files
//! of the tiny fixture model, loaded once per fuzzing process. (Only the targets use this;
//! the replay tests load the same files their own way.)

use mixtral_tokenizer::Tokenizer;
use std::path::Path;
use std::sync::LazyLock;

static TOKENIZER: LazyLock<Tokenizer> = LazyLock::new(|| {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/models/tiny-bf16"
    );
    Tokenizer::from_dir(Path::new(dir)).expect("load the fixture tokenizer")
});

/// The fixture tokenizer.
pub fn tokenizer() -> &'static Tokenizer {
    &TOKENIZER
}
