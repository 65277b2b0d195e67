//! The v1 instruct format against mistral-common on every case of `chat_cases.jsonl`, and the
//! conversations it refuses.

mod common;

use common::{Failures, read_cases, read_values, tokenizer};
use mixtral_tokenizer::chat::{Message, Role};
use mixtral_tokenizer::{Error, Tokenizer};
use serde::Deserialize;

#[derive(Deserialize)]
struct ChatCase {
    name: String,
    messages: Vec<Message>,
    ids: Option<Vec<u32>>,
    prompt: Option<String>,
    error: Option<String>,
}

const FILE: &str = "chat_cases.jsonl";

/// The fixture's text form of a prompt: control tokens spelled out, each run between them
/// decoded on its own.
fn render_prompt(tok: &Tokenizer, ids: &[u32]) -> String {
    let mut out = String::new();
    for run in ids.split_inclusive(|&id| id == tok.bos_id() || id == tok.eos_id()) {
        let (text, control) = match run.split_last() {
            Some((&last, rest)) if last == tok.bos_id() || last == tok.eos_id() => {
                (rest, Some(last))
            }
            _ => (run, None),
        };
        out.push_str(&tok.decode(text).expect("decode"));
        if let Some(id) = control {
            out.push_str(tok.id_to_piece(id).expect("piece"));
        }
    }
    out
}

#[test]
fn chat_ids_match_mistral_common_on_every_case() {
    let tok = tokenizer();
    let cases: Vec<ChatCase> = read_cases(FILE);
    let mut failures = Failures::default();
    let (mut with_ids, mut with_error) = (0, 0);
    for case in &cases {
        let got = tok.encode_chat(&case.messages);
        match (&case.ids, &case.error, got) {
            (Some(expected), None, Ok(got)) => {
                with_ids += 1;
                if &got != expected {
                    failures.push(format!(
                        "{} messages={:?}\n  expected {expected:?}\n  got      {got:?}",
                        case.name, case.messages
                    ));
                }
            }
            (None, Some(reference), Err(err)) => {
                with_error += 1;
                // The fixture's only refusal: the conversation ends with an assistant turn.
                if !(reference.contains("Expected last role")
                    && matches!(err, Error::EndsWithAssistant { .. }))
                {
                    failures.push(format!(
                        "{}: mistral-common: {reference}; got {err:?}",
                        case.name
                    ));
                }
            }
            (ids, error, got) => failures.push(format!(
                "{} messages={:?}\n  expected ids={ids:?} error={error:?}\n  got {got:?}",
                case.name, case.messages
            )),
        }
    }
    assert_eq!(cases.len(), read_values(FILE).len());
    assert_eq!(
        (cases.len(), with_ids + with_error),
        (16, 16),
        "{} ids, {} errors",
        with_ids,
        with_error
    );
    assert_eq!(with_error, 1);
    failures.check("encode_chat vs mistral-common", cases.len());
}

#[test]
fn chat_prompt_text_matches_fixture_prompt_on_every_case() {
    let tok = tokenizer();
    let cases: Vec<ChatCase> = read_cases(FILE);
    let mut failures = Failures::default();
    let mut checked = 0;
    for case in &cases {
        let Some(expected) = &case.prompt else {
            continue;
        };
        let got = render_prompt(tok, &tok.encode_chat(&case.messages).expect("encode_chat"));
        if &got != expected {
            failures.push(format!(
                "{}\n  expected {expected:?}\n  got      {got:?}",
                case.name
            ));
        }
        checked += 1;
    }
    assert_eq!(checked, 15);
    failures.check("rendered prompt", checked);
}

#[test]
fn chat_prompt_starts_with_bos_and_closes_assistant_turns_with_eos() {
    let tok = tokenizer();
    let ids = tok
        .encode_chat(&[
            Message::user("a"),
            Message::assistant("b"),
            Message::user("c"),
        ])
        .expect("encode_chat");
    assert_eq!(ids[0], tok.bos_id());
    assert_eq!(ids.iter().filter(|&&id| id == tok.bos_id()).count(), 1);
    assert_eq!(ids.iter().filter(|&&id| id == tok.eos_id()).count(), 1);
    let eos_at = ids.iter().position(|&id| id == tok.eos_id()).expect("eos");
    assert_eq!(
        &ids[eos_at - 1..eos_at],
        tok.encode("b").expect("encode").as_slice()
    );
}

#[test]
fn control_token_text_in_messages_stays_ordinary_text() {
    let tok = tokenizer();
    let text = "<s> and </s> and <unk> and [INST] and [/INST]";
    for messages in [
        vec![Message::user(text)],
        vec![Message::system(text), Message::user(text)],
        vec![
            Message::user(text),
            Message::assistant(text),
            Message::user(text),
        ],
    ] {
        let ids = tok.encode_chat(&messages).expect("encode_chat");
        let bos = ids.iter().filter(|&&id| id == tok.bos_id()).count();
        let eos = ids.iter().filter(|&&id| id == tok.eos_id()).count();
        let assistant_turns = messages
            .iter()
            .filter(|m| m.role == Role::Assistant)
            .count();
        assert_eq!(
            (bos, eos),
            (1, assistant_turns),
            "messages {messages:?}: ids {ids:?}"
        );
        assert!(
            !ids.contains(&0),
            "messages {messages:?}: <unk> id in {ids:?}"
        );
    }
}

/// mistral-common encodes each user turn as the one text `"[INST] {content} [/INST]"`; for an
/// empty user message (which it accepts) that differs from encoding `[INST]`, the content and
/// `[/INST]` separately: the two spaces give an extra `▁`.
#[test]
fn user_turn_is_encoded_as_one_text_as_mistral_common_does() {
    let tok = tokenizer();
    for content in ["", "  spaced out  ", "Hello!"] {
        let ids = tok
            .encode_chat(&[Message::user(content)])
            .expect("encode_chat");
        let mut expected = vec![tok.bos_id()];
        expected.extend(
            tok.encode(&format!("[INST] {content} [/INST]"))
                .expect("encode"),
        );
        assert_eq!(ids, expected, "content {content:?}");
    }
    let mut separately = vec![tok.bos_id()];
    for part in ["[INST]", "", "[/INST]"] {
        separately.extend(tok.encode(part).expect("encode"));
    }
    assert_ne!(
        tok.encode_chat(&[Message::user("")]).expect("encode_chat"),
        separately
    );
}

#[test]
fn system_messages_are_joined_and_folded_into_the_first_user_message() {
    let tok = tokenizer();
    let ids = tok
        .encode_chat(&[
            Message::system("Be brief."),
            Message::system(""),
            Message::system("Answer in French."),
            Message::user("Hi"),
            Message::assistant("Salut"),
            Message::user("Bye"),
        ])
        .expect("encode_chat");
    let mut expected = vec![tok.bos_id()];
    expected.extend(
        tok.encode("[INST] Be brief.\n\nAnswer in French.\n\nHi [/INST]")
            .expect("encode"),
    );
    expected.extend(tok.encode("Salut").expect("encode"));
    expected.push(tok.eos_id());
    expected.extend(tok.encode("[INST] Bye [/INST]").expect("encode"));
    assert_eq!(ids, expected);
}

/// mistral-common merges runs of one role only: a system message between two user messages
/// leaves two user turns, rendered one after the other.
#[test]
fn system_message_between_user_messages_keeps_them_apart() {
    let tok = tokenizer();
    let ids = tok
        .encode_chat(&[Message::user("A"), Message::system("S"), Message::user("B")])
        .expect("encode_chat");
    let mut expected = vec![tok.bos_id()];
    expected.extend(tok.encode("[INST] S\n\nA [/INST]").expect("encode"));
    expected.extend(tok.encode("[INST] B [/INST]").expect("encode"));
    assert_eq!(ids, expected);
}

#[test]
fn consecutive_messages_of_one_role_are_joined_and_empty_ones_skipped() {
    let tok = tokenizer();
    let ids = tok
        .encode_chat(&[
            Message::user("First."),
            Message::user(""),
            Message::user("Second."),
            Message::assistant("A."),
            Message::assistant("B."),
            Message::user("Third."),
        ])
        .expect("encode_chat");
    let mut expected = vec![tok.bos_id()];
    expected.extend(
        tok.encode("[INST] First.\n\nSecond. [/INST]")
            .expect("encode"),
    );
    expected.extend(tok.encode("A.\n\nB.").expect("encode"));
    expected.push(tok.eos_id());
    expected.extend(tok.encode("[INST] Third. [/INST]").expect("encode"));
    assert_eq!(ids, expected);
}

/// As in mistral-common's normaliser: a conversation that does not start with a user turn gets
/// an empty one first (here a system-only conversation, and one opening with the assistant).
#[test]
fn missing_first_user_turn_becomes_an_empty_one() {
    let tok = tokenizer();
    let mut expected = vec![tok.bos_id()];
    expected.extend(tok.encode("[INST] Be brief.\n\n [/INST]").expect("encode"));
    assert_eq!(
        tok.encode_chat(&[Message::system("Be brief.")])
            .expect("encode_chat"),
        expected
    );

    let mut expected = vec![tok.bos_id()];
    expected.extend(tok.encode("[INST]  [/INST]").expect("encode"));
    expected.extend(tok.encode("Hello").expect("encode"));
    expected.push(tok.eos_id());
    expected.extend(tok.encode("[INST] Hi [/INST]").expect("encode"));
    let ids = tok
        .encode_chat(&[Message::assistant("Hello"), Message::user("Hi")])
        .expect("encode_chat");
    assert_eq!(ids, expected);
}

#[test]
fn conversations_that_break_the_format_are_typed_errors() {
    let tok = tokenizer();
    let check = |messages: &[Message], matches: fn(&Error) -> bool, words: &[&str]| {
        let err = tok.encode_chat(messages).expect_err("should be refused");
        assert!(matches(&err), "messages {messages:?}: got {err:?}");
        let text = err.to_string();
        for word in words {
            assert!(
                text.contains(word),
                "message {text:?} should mention {word:?}"
            );
        }
    };
    check(
        &[],
        |e| matches!(e, Error::EmptyConversation),
        &["no messages"],
    );
    check(
        &[Message::user("Hi"), Message::assistant("Hello")],
        |e| matches!(e, Error::EndsWithAssistant { index: 1 }),
        &["assistant", "message 1"],
    );
    check(
        &[Message::assistant("Hello")],
        |e| matches!(e, Error::EndsWithAssistant { index: 0 }),
        &["assistant"],
    );
    check(
        &[
            Message::user("Hi"),
            Message::assistant("Hello"),
            Message::system("S"),
            Message::user("Bye"),
        ],
        |e| {
            matches!(
                e,
                Error::UnexpectedRole {
                    index: 2,
                    role: Role::System,
                    previous: Role::Assistant
                }
            )
        },
        &["message 2", "system", "assistant"],
    );
    check(
        &[
            Message::user("Hi"),
            Message::assistant(""),
            Message::user("Bye"),
        ],
        |e| matches!(e, Error::EmptyAssistantMessage { index: 1 }),
        &["assistant message 1", "empty"],
    );
}

#[test]
fn messages_read_from_json() {
    let json = r#"[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Bye"}
    ]"#;
    let messages: Vec<Message> = serde_json::from_str(json).expect("parse messages");
    assert_eq!(
        messages,
        [
            Message::system("Be brief."),
            Message::user("Hi"),
            Message::assistant("Hello"),
            Message::user("Bye"),
        ]
    );
    assert!(serde_json::from_str::<Vec<Message>>(r#"[{"role": "tool", "content": "x"}]"#).is_err());
    assert!(serde_json::from_str::<Vec<Message>>(r#"[{"role": "user"}]"#).is_err());
}
