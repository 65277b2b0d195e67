//! Checks for `mixtral-model`'s config parsers: Hugging Face `config.json` and Mistral's
//! `params.json`.

use mixtral_model::Config;
use std::path::Path;

/// Parses `data` both as `config.json` and as `params.json`; each result is the config's
/// debug rendering or the error's message.
pub fn config(data: &[u8]) -> [Result<String, String>; 2] {
    let render = |r: mixtral_model::Result<Config>| match r {
        Ok(c) => Ok(format!("{c:?}")),
        Err(e) => Err(e.to_string()),
    };
    [
        render(Config::from_json(Path::new("config.json"), data)),
        render(Config::from_params_json(Path::new("params.json"), data)),
    ]
}
