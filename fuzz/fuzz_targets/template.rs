//! Chat templates: source and a message, compiled, rendered and encoded with small limits.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mixtral_fuzz::template::template(mixtral_fuzz::fixture::tokenizer(), data);
});
