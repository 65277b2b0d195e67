//! Keeping message text out of the control tokens a chat template emits.
//!
//! A template's output is one string: once rendered, `</s>` written by the template and
//! `</s>` typed by a user look the same, and encoding with special tokens matched would turn
//! both into the control id (a user could close the turn and forge a system message). So,
//! as mistral-common and vLLM keep user text apart from control tokens, every occurrence of
//! a special token's text in a message is replaced *before* rendering by a placeholder made
//! of private-use characters the template cannot confuse with a token; after rendering, the
//! output is split on the special tokens it holds (all of them the template's own), and the
//! placeholders in the text between them are turned back into the user's text, which is
//! then encoded as ordinary text (`</s>` becomes `▁</`, `s`, `>` as in the `[INST]` path).
//!
//! Placeholders: `START` hex digits `END` for special token number *k*, `LITERAL` hex digits
//! `END` for a character of the reserved range that the user typed, so the escaping is
//! injective and text the user writes in the reserved range cannot pass for a placeholder.
//! Private-use characters have no case and are not whitespace, so templates that `trim`,
//! `upper` or `title` the content keep placeholders intact; one that slices through one
//! leaves its characters as plain text (never a control token).

use crate::chat::Message;
use crate::{ChatTemplate, Result, Tokenizer};
use std::borrow::Cow;

impl Tokenizer {
    /// The ids of `messages` rendered by `template` (the assistant's turn opened when
    /// `add_generation_prompt` is set): the special tokens the template itself prints
    /// (`bos_token`, `<|im_start|>` …) become their ids, while the same text inside a message
    /// is encoded as ordinary text, as the `[INST]` renderer ([`Tokenizer::encode_chat`])
    /// does: special-token text in messages is swapped for private-use placeholders before
    /// rendering, and restored as text between the template's own special tokens after.
    ///
    /// # Errors
    /// The template's ([`ChatTemplate::render`]) and [`Tokenizer::encode`]'s.
    pub fn encode_chat_template(
        &self,
        template: &ChatTemplate,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<Vec<u32>> {
        let ending = match add_generation_prompt {
            true => Ending::Reply,
            false => Ending::AsRendered,
        };
        self.encode_template(template, messages, ending)
    }

    /// [`Tokenizer::encode_chat_template`] for a conversation that ends with an assistant
    /// message the model is to **continue**, as transformers' `continue_final_message` does:
    /// the template renders the conversation without a generation prompt, and the text is cut
    /// right after the final message's content (its surrounding whitespace trimmed), so the
    /// template's end-of-turn markup after it is dropped.
    ///
    /// # Errors
    /// [`crate::Error::ContinueWithoutAssistant`] unless the last message is an assistant message with
    /// content; [`crate::Error::ChatTemplate`] when the rendered text does not contain that content
    /// (the template rewrites or drops it); the template's own errors.
    pub fn encode_chat_template_continuing(
        &self,
        template: &ChatTemplate,
        messages: &[Message],
    ) -> Result<Vec<u32>> {
        crate::chat::final_assistant(messages)?;
        self.encode_template(template, messages, Ending::Continue)
    }

    /// The ids of `messages` rendered by `template`, ending as `ending` says.
    fn encode_template(
        &self,
        template: &ChatTemplate,
        messages: &[Message],
        ending: Ending,
    ) -> Result<Vec<u32>> {
        let specials = self.special_tokens();
        let escaped: Vec<Message> = messages
            .iter()
            .map(|m| Message::new(m.role, escape(&m.content, &specials)))
            .collect();
        let mut text = template.render(&escaped, ending == Ending::Reply)?;
        if ending == Ending::Continue {
            let last = escaped.last().map_or("", |m| m.content.trim());
            let end = text
                .rfind(last)
                .ok_or_else(|| template.error("the final assistant message is not in the rendered text, so it cannot be continued".into()))?;
            text.truncate(end + last.len());
        }
        let ids = self.encode_split_on_specials(&text, &specials, |stretch| {
            match stretch.contains([START, LITERAL]) {
                true => Cow::Owned(unescape(stretch, &specials)),
                false => Cow::Borrowed(stretch),
            }
        })?;
        // The library has no logger; the CLI and server print warnings to stderr too.
        if let Some(warning) = template.note_missing_bos(&ids, self.bos_id()) {
            eprintln!("warning: {warning}");
        }
        Ok(ids)
    }
}

/// How a rendered conversation ends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// With the assistant's turn opened (`add_generation_prompt`).
    Reply,
    /// As the template renders it without a generation prompt.
    AsRendered,
    /// Cut after the final (assistant) message's content, for the model to continue it.
    Continue,
}

/// Opens the placeholder of a special token.
const START: char = '\u{E000}';
/// Closes a placeholder.
const END: char = '\u{E001}';
/// Opens the placeholder of a reserved character the user typed.
const LITERAL: char = '\u{E002}';
/// Hex digit 0 (digits are `DIGIT0..DIGIT0 + 16`).
const DIGIT0: u32 = 0xE010;
/// The reserved range: markers and digits.
const RESERVED: std::ops::RangeInclusive<u32> = 0xE000..=0xE01F;

fn push_number(out: &mut String, opener: char, n: usize) {
    out.push(opener);
    for digit in format!("{n:x}").bytes() {
        let d = (digit as char).to_digit(16).unwrap_or(0);
        out.extend(char::from_u32(DIGIT0 + d));
    }
    out.push(END);
}

/// `text` with every special token (`specials`, longest first) and every reserved character
/// replaced by its placeholder.
pub(crate) fn escape(text: &str, specials: &[(String, u32)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if let Some(k) = specials
            .iter()
            .position(|(s, _)| rest.starts_with(s.as_str()))
        {
            push_number(&mut out, START, k);
            rest = &rest[specials[k].0.len()..];
            continue;
        }
        if RESERVED.contains(&(c as u32)) {
            push_number(&mut out, LITERAL, (c as u32 - RESERVED.start()) as usize);
        } else {
            out.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// The placeholder at the start of `text` (which begins with `START` or `LITERAL`): what it
/// stands for and its length in bytes, or `None` if it is not a whole placeholder.
fn placeholder<'a>(text: &str, specials: &'a [(String, u32)]) -> Option<(Restored<'a>, usize)> {
    let mut chars = text.char_indices();
    let (_, opener) = chars.next()?;
    let mut n: usize = 0;
    for (i, c) in chars {
        if c == END {
            let end = i + c.len_utf8();
            return match opener {
                START => Some((Restored::Text(&specials.get(n)?.0), end)),
                _ => Some((
                    Restored::Char(char::from_u32(RESERVED.start() + n as u32)?),
                    end,
                )),
            };
        }
        let d = (c as u32).checked_sub(DIGIT0).filter(|d| *d < 16)?;
        n = n.checked_mul(16)?.checked_add(d as usize)?;
        if n > 0xFFFF {
            return None;
        }
    }
    None
}

enum Restored<'a> {
    Text(&'a str),
    Char(char),
}

/// `text` with the placeholders [`escape`] made turned back into what they stand for; a
/// broken placeholder (the template cut one) stays as the characters it is.
pub(crate) fn unescape(text: &str, specials: &[(String, u32)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if (c == START || c == LITERAL)
            && let Some((restored, len)) = placeholder(rest, specials)
        {
            match restored {
                Restored::Text(s) => out.push_str(s),
                Restored::Char(c) => out.push(c),
            }
            rest = &rest[len..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specials() -> Vec<(String, u32)> {
        vec![("</s>".into(), 2), ("<s>".into(), 1), ("<unk>".into(), 0)]
    }

    #[test]
    fn escaped_text_holds_no_special_and_round_trips() {
        let s = specials();
        for text in [
            "a </s><s> [INST] b [/INST] <unk>",
            "\u{E000}\u{E010}\u{E001} forged placeholder",
            "\u{E002}\u{E01F}\u{E001}<s>\u{E000}",
            "",
            "plain",
        ] {
            let escaped = escape(text, &s);
            assert!(
                s.iter().all(|(t, _)| !escaped.contains(t.as_str())),
                "{text:?}"
            );
            assert_eq!(unescape(&escaped, &s), text);
        }
    }

    #[test]
    fn a_cut_placeholder_stays_text() {
        let s = specials();
        let escaped = escape("</s>", &s);
        let cut: String = escaped.chars().take(1).collect();
        assert_eq!(unescape(&cut, &s), cut);
    }
}
