//! Checks for the CLI's `--chat` file: a JSON list of messages (`read_chat` in
//! `crates/cli/src/args.rs`) rendered in the instruct format.

use mixtral_tokenizer::Tokenizer;
use mixtral_tokenizer::chat::Message;

/// Parses `data` as `mixtral --chat` does and renders the conversation with `tok`; when it
/// renders, the ids must start with BOS and lie in the vocabulary.
pub fn chat(tok: &Tokenizer, data: &[u8]) -> Result<(), String> {
    let messages: Vec<Message> = serde_json::from_slice(data).map_err(|e| e.to_string())?;
    let ids = tok.encode_chat(&messages).map_err(|e| e.to_string())?;
    assert_eq!(ids.first(), Some(&tok.bos_id()));
    assert!(ids.iter().all(|&id| (id as usize) < tok.vocab_size()));
    Ok(())
}
