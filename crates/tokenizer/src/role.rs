//! `Role`: who wrote a message. Its own file because both the chat format and the errors
//! (which name an unexpected role) use it, and neither should import the other.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions for the assistant; folded into the first user message.
    System,
    /// The person asking.
    User,
    /// The model's earlier answers.
    Assistant,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        })
    }
}
