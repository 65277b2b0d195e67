//! `model.safetensors.index.json`: `TensorStore::open_index` on the input, next to two valid
//! shards.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mixtral_fuzz::tensor::safetensors_index(data);
});
