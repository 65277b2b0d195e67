//! `config.json` and `params.json`: `Config::from_json` and `Config::from_params_json`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mixtral_fuzz::model::config(data);
});
