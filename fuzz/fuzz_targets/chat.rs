//! `mixtral --chat` files: a JSON message list, rendered with the fixture tokenizer.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mixtral_fuzz::chat::chat(mixtral_fuzz::fixture::tokenizer(), data);
});
