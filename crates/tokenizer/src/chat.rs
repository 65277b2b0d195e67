//! The Mixtral v1 instruct (chat) format, as mistral-common's v1 instruct tokenizer renders it:
//! `<s>[INST] {user} [/INST] {assistant}</s>[INST] {user} [/INST]`.
//!
//! Rules, in mistral-common's order (`MistralRequestValidator`, `InstructRequestNormalizer`,
//! `InstructTokenizerV1`):
//! 1. Validation: at least one message; the last message may not be an assistant message
//!    (a prompt asks for a reply); a system message may not follow an assistant message;
//!    assistant messages need non-empty content. User and system content may be empty.
//! 2. Normalisation: all non-empty system messages, wherever they are, are joined with `"\n\n"`
//!    into the system prompt and removed; consecutive messages of one role are merged, their
//!    non-empty contents joined with `"\n\n"`; if the first message left is not a user message,
//!    an empty user message is put first.
//! 3. Rendering: BOS id, then for each user message the ids of the text
//!    `"[INST] {content} [/INST]"` (the system prompt folded into the first one as
//!    `system + "\n\n" + content`), for each assistant message the ids of its content followed
//!    by the EOS id. Each such text is encoded on its own as SentencePiece `encode` does (dummy
//!    prefix space, no BOS/EOS), so `[INST]` and `[/INST]` are ordinary text, while `<s>`/`</s>`
//!    exist only as ids: user text never becomes a control token.
//!
//! Note that the user turn `"[INST] {content} [/INST]"` is encoded as one text, as
//! mistral-common does, not as three separately encoded pieces; the two differ where BPE
//! merges across the boundary (e.g. content ending in a space).

use serde::{Deserialize, Serialize};

use crate::Tokenizer;
use crate::error::{Error, Result};
pub use crate::role::Role;

/// One message of a conversation; reads from JSON as `{"role": "user", "content": "…"}`.
///
/// ```
/// use mixtral_tokenizer::chat::{Message, Role};
/// let messages: Vec<Message> =
///     serde_json::from_str(r#"[{"role": "user", "content": "Hello!"}]"#).unwrap();
/// assert_eq!(messages, [Message::user("Hello!")]);
/// assert_eq!(messages[0].role, Role::User);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// Its text.
    pub content: String,
}

impl Message {
    /// A message with this role and content.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
        }
    }

    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new(Role::System, content)
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }

    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
    }
}

/// Checks the conversation as mistral-common's validator does (structure first, then content).
fn validate(messages: &[Message]) -> Result<()> {
    let last = messages
        .len()
        .checked_sub(1)
        .ok_or(Error::EmptyConversation)?;
    if messages[last].role == Role::Assistant {
        return Err(Error::EndsWithAssistant { index: last });
    }
    for (index, pair) in messages.windows(2).enumerate() {
        if pair[0].role == Role::Assistant && pair[1].role == Role::System {
            return Err(Error::UnexpectedRole {
                index: index + 1,
                role: pair[1].role,
                previous: pair[0].role,
            });
        }
    }
    for (index, m) in messages.iter().enumerate() {
        if m.role == Role::Assistant && m.content.is_empty() {
            return Err(Error::EmptyAssistantMessage { index });
        }
    }
    Ok(())
}

/// Joins the non-empty texts with `"\n\n"`.
fn join_non_empty<'a>(texts: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for text in texts.into_iter().filter(|t| !t.is_empty()) {
        if !out.is_empty() {
            out.push_str("\n\n");
        }
        out.push_str(text);
    }
    out
}

/// A turn of the normalised conversation.
enum Turn {
    User(String),
    Assistant(String),
}

/// The system prompt and the user and assistant turns after normalisation.
fn normalize(messages: &[Message]) -> (String, Vec<Turn>) {
    let system = join_non_empty(
        messages
            .iter()
            .filter(|m| m.role == Role::System)
            .map(|m| m.content.as_str()),
    );
    let mut turns = Vec::new();
    // Runs of one role; a system run separates runs but yields no turn.
    for run in messages.chunk_by(|a, b| a.role == b.role) {
        let content = || join_non_empty(run.iter().map(|m| m.content.as_str()));
        match run[0].role {
            Role::System => {}
            Role::User => turns.push(Turn::User(content())),
            Role::Assistant => turns.push(Turn::Assistant(content())),
        }
    }
    if !matches!(turns.first(), Some(Turn::User(_))) {
        turns.insert(0, Turn::User(String::new()));
    }
    (system, turns)
}

impl Tokenizer {
    /// The prompt ids (BOS first) of a conversation in the Mixtral v1 instruct format, ready for
    /// generation; identical to mistral-common's `encode_chat_completion` with its v1
    /// tokenizer. See the [module docs](crate::chat) for the rules.
    ///
    /// ```
    /// # fn main() -> Result<(), mixtral_tokenizer::Error> {
    /// use std::path::Path;
    /// use mixtral_tokenizer::{Tokenizer, chat::Message};
    ///
    /// let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/models/tiny-bf16"));
    /// let tok = Tokenizer::from_dir(dir)?;
    /// let ids = tok.encode_chat(&[
    ///     Message::user("Hi"),
    ///     Message::assistant("Hello"),
    ///     Message::user("Bye"),
    /// ])?;
    /// let mut expected = vec![tok.bos_id()];
    /// expected.extend(tok.encode("[INST] Hi [/INST]")?);
    /// expected.extend(tok.encode("Hello")?);
    /// expected.push(tok.eos_id());
    /// expected.extend(tok.encode("[INST] Bye [/INST]")?);
    /// assert_eq!(ids, expected);
    /// // A conversation that ends with the assistant asks for nothing.
    /// assert!(tok.encode_chat(&[Message::user("Hi"), Message::assistant("Hello")]).is_err());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::EmptyConversation`], [`Error::EndsWithAssistant`], [`Error::UnexpectedRole`]
    /// (a system message right after an assistant message), [`Error::EmptyAssistantMessage`];
    /// [`Error::Encode`] if encoding fails.
    pub fn encode_chat(&self, messages: &[Message]) -> Result<Vec<u32>> {
        validate(messages)?;
        let (system, turns) = normalize(messages);
        let mut ids = vec![self.bos_id()];
        for (i, turn) in turns.iter().enumerate() {
            match turn {
                Turn::User(content) => {
                    // After normalisation the first turn is always the first user message.
                    let text = if i == 0 && !system.is_empty() {
                        format!("[INST] {system}\n\n{content} [/INST]")
                    } else {
                        format!("[INST] {content} [/INST]")
                    };
                    ids.extend(self.encode(&text)?);
                }
                Turn::Assistant(content) => {
                    ids.extend(self.encode(content)?);
                    ids.push(self.eos_id());
                }
            }
        }
        Ok(ids)
    }

    /// The ids of a conversation that ends with an assistant message, for the model to
    /// **continue** that message (mistral-common's `prefix=True`; vLLM's
    /// `continue_final_message`): the conversation before it as [`Tokenizer::encode_chat`]
    /// renders it, then the message's content with no EOS after it.
    ///
    /// ```
    /// # fn main() -> Result<(), mixtral_tokenizer::Error> {
    /// # use std::path::Path;
    /// use mixtral_tokenizer::{Tokenizer, chat::Message};
    /// # let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/models/tiny-bf16"));
    /// let tok = Tokenizer::from_dir(dir)?;
    /// let ids = tok.encode_chat_continuing(&[Message::user("Hi"), Message::assistant("Hello, I")])?;
    /// let mut expected = tok.encode_chat(&[Message::user("Hi")])?;
    /// expected.extend(tok.encode("Hello, I")?);
    /// assert_eq!(ids, expected);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::ContinueWithoutAssistant`] unless the last message is an assistant message with
    /// content; otherwise those of [`Tokenizer::encode_chat`] for the messages before it.
    pub fn encode_chat_continuing(&self, messages: &[Message]) -> Result<Vec<u32>> {
        let (last, before) = final_assistant(messages)?;
        let mut ids = self.encode_chat(before)?;
        ids.extend(self.encode(&last.content)?);
        Ok(ids)
    }
}

/// The final assistant message with content and the messages before it, or
/// [`Error::ContinueWithoutAssistant`].
pub(crate) fn final_assistant(messages: &[Message]) -> Result<(&Message, &[Message])> {
    match messages.split_last() {
        Some((last, before)) if last.role == Role::Assistant && !last.content.is_empty() => {
            Ok((last, before))
        }
        _ => Err(Error::ContinueWithoutAssistant),
    }
}
