//! Checks for a model's chat template: the input is a template's source, then (after the
//! first NUL byte, if any) a user message, rendered and encoded as the engine does with
//! small limits. Templates come with models from anyone: none may crash, hang or exhaust
//! memory, and the output must keep to its cap.

use mixtral_tokenizer::chat::Message;
use mixtral_tokenizer::{ChatTemplate, RenderLimits, Tokenizer};

/// The cap the checks render under: small, so that a template that keeps to no limit is
/// found fast.
pub const LIMITS: (u64, usize) = (100_000, 64 << 10);

/// Compiles `data`'s template, renders a short conversation with its message and encodes
/// it with `tok`: any error is fine, a panic or an output past the cap is a bug.
pub fn template(tok: &Tokenizer, data: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(data);
    let (source, content) = text.split_once('\0').unwrap_or((&text, "hi </s><s>"));
    let (fuel, cap) = LIMITS;
    let template = ChatTemplate::new(source, "<s>", "</s>")
        .map_err(|e| e.to_string())?
        .with_limits(RenderLimits::new(fuel, cap));
    let messages = [
        Message::system("be brief"),
        Message::user(content),
        Message::assistant("ok"),
        Message::user(content),
    ];
    let rendered = template
        .render(&messages, true)
        .map_err(|e| e.to_string())?;
    assert!(
        rendered.len() <= cap,
        "{} bytes past the cap",
        rendered.len()
    );
    let ids = tok
        .encode_chat_template(&template, &messages, true)
        .map_err(|e| e.to_string())?;
    assert!(ids.iter().all(|&id| (id as usize) < tok.vocab_size()));
    Ok(())
}
