//! Safetensors headers: `SafetensorsFile::parse_header` on the input as a whole file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mixtral_fuzz::tensor::safetensors(data);
});
