//! Stop conditions: [`Stopper`] decides when generation ends and which text is safe to print.

use std::fmt;

use crate::error::{Error, Result};

/// When to stop generating. Validated once, by [`Stopper::new`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StopConfig {
    /// End-of-sequence token ids (Mistral/Mixtral: `[2]`). Their text is never printed.
    pub eos_token_ids: Vec<u32>,
    /// Further token ids that stop generation. Their text is never printed.
    pub stop_token_ids: Vec<u32>,
    /// Strings that stop generation when they appear in the generated text; they may span
    /// several tokens. The stop string and anything after it are never printed. Each must be
    /// non-empty.
    pub stop_strings: Vec<String>,
    /// The most tokens to generate (every pushed token counts, the stopping one included);
    /// `None` = no limit. Must be at least 1.
    pub max_new_tokens: Option<usize>,
}

/// Why generation stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// An end-of-sequence token was generated.
    Eos,
    /// One of [`StopConfig::stop_token_ids`] was generated.
    StopToken(u32),
    /// One of [`StopConfig::stop_strings`] appeared in the text.
    StopString(String),
    /// [`StopConfig::max_new_tokens`] tokens were generated.
    MaxTokens,
    /// The output constraint's grammar was complete: no further token could follow (the
    /// generator sets this; the stopper never does).
    Constraint,
}

impl StopReason {
    /// The OpenAI-style finish reason: [`FinishReason::Length`] for
    /// [`StopReason::MaxTokens`], [`FinishReason::Stop`] for the rest.
    pub fn finish_reason(&self) -> FinishReason {
        match self {
            StopReason::MaxTokens => FinishReason::Length,
            StopReason::Eos
            | StopReason::StopToken(_)
            | StopReason::StopString(_)
            | StopReason::Constraint => FinishReason::Stop,
        }
    }
}

impl fmt::Display for StopReason {
    /// `eos`, `stop token 13`, `stop string "\n\n"`, `max tokens`, `constraint complete`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::Eos => f.write_str("eos"),
            StopReason::StopToken(id) => write!(f, "stop token {id}"),
            StopReason::StopString(s) => write!(f, "stop string {s:?}"),
            StopReason::MaxTokens => f.write_str("max tokens"),
            StopReason::Constraint => f.write_str("constraint complete"),
        }
    }
}

/// The coarse, OpenAI-compatible finish reason, for machine-readable (`--json`) output.
///
/// Serialise it with [`FinishReason::as_str`]: `"stop"` (natural end: EOS, a stop token or a
/// stop string) or `"length"` (the token limit was reached).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FinishReason {
    /// `"stop"`: the model ended, or a stop token or stop string was hit.
    Stop,
    /// `"length"`: [`StopConfig::max_new_tokens`] was reached.
    Length,
}

impl FinishReason {
    /// `"stop"` or `"length"`.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

impl fmt::Display for FinishReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What [`Stopper::push`] says about one token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Text that is safe to print now (possibly empty).
    pub text: String,
    /// `Some(reason)` when generation must stop; `None` to continue.
    pub stop: Option<StopReason>,
}

/// Watches generated tokens for stop conditions and releases the text that is safe to print.
///
/// Feed it each new token id with its decoded text piece ([`Stopper::push`]); print
/// [`Step::text`]; stop when [`Step::stop`] is `Some`; at the end, print [`Stopper::flush`].
///
/// Semantics:
/// - Checks, in order: EOS token, stop token, stop string, token limit. A stopping EOS or stop
///   token's piece is not printed; text held back so far is released with it.
/// - Text that could be the beginning of a stop string is held back until it is known not to
///   be. A stop string and everything after it (in that piece) are never printed.
/// - The first stop string to be completed in the text wins, as if the text arrived one byte
///   at a time; of two that complete at the same byte, the longer (earlier-starting) one wins.
///   Matching is on bytes, and pieces are whole UTF-8 strings, so held-back text is always cut
///   at a character boundary.
/// - Once stopped, further pushes print nothing, count nothing and repeat the reason.
///
/// ```
/// use mixtral_sampler::{StopConfig, StopReason, Stopper};
/// let mut stop = Stopper::new(StopConfig {
///     stop_strings: vec!["\nUser:".into()],
///     ..Default::default()
/// })?;
/// let mut out = String::new();
/// for (id, piece) in [(1, "Hi"), (2, " there\n"), (3, "User"), (4, ": more")] {
///     let step = stop.push(id, piece);
///     out += &step.text;
///     if let Some(reason) = step.stop {
///         assert_eq!(reason, StopReason::StopString("\nUser:".into()));
///         assert_eq!(reason.finish_reason().as_str(), "stop");
///         break;
///     }
/// }
/// out += &stop.flush();
/// assert_eq!(out, "Hi there");
/// # Ok::<(), mixtral_sampler::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Stopper {
    cfg: StopConfig,
    /// Text received but not yet released: a possible beginning of a stop string.
    pending: String,
    /// Tokens pushed so far (until stopped).
    generated: usize,
    /// Why generation stopped, once it has.
    stopped: Option<StopReason>,
}

impl Stopper {
    /// Validates `cfg` (non-empty stop strings, `max_new_tokens >= 1`) and builds a stopper.
    pub fn new(cfg: StopConfig) -> Result<Self> {
        if let Some(i) = cfg.stop_strings.iter().position(String::is_empty) {
            let name = "stop_strings";
            return Err(Error::param(
                name,
                "non-empty",
                format!("\"\" at index {i}"),
            ));
        }
        if cfg.max_new_tokens == Some(0) {
            return Err(Error::param("max_new_tokens", "at least 1", 0));
        }
        Ok(Stopper {
            cfg,
            pending: String::new(),
            generated: 0,
            stopped: None,
        })
    }

    /// Takes the next generated token and its decoded text; says whether to stop and what to
    /// print now.
    pub fn push(&mut self, token: u32, piece: &str) -> Step {
        if let Some(reason) = &self.stopped {
            return Step {
                text: String::new(),
                stop: Some(reason.clone()),
            };
        }
        self.generated += 1;
        if self.cfg.eos_token_ids.contains(&token) {
            return self.stop_releasing(StopReason::Eos);
        }
        if self.cfg.stop_token_ids.contains(&token) {
            return self.stop_releasing(StopReason::StopToken(token));
        }
        let searched_from = self.pending.len();
        self.pending.push_str(piece);
        if let Some((start, s)) = self.first_stop_string(searched_from) {
            let reason = StopReason::StopString(s.to_owned());
            self.pending.truncate(start);
            return self.stop_releasing(reason);
        }
        if self.cfg.max_new_tokens == Some(self.generated) {
            return self.stop_releasing(StopReason::MaxTokens);
        }
        let keep_from = self.held_back_from();
        let rest = self.pending.split_off(keep_from);
        Step {
            text: std::mem::replace(&mut self.pending, rest),
            stop: None,
        }
    }

    /// Releases the held-back text (call once generation is over). Empty after a stop, since
    /// stopping releases or discards everything.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }

    /// How many tokens have been pushed (up to and including the stopping one).
    pub fn generated(&self) -> usize {
        self.generated
    }

    /// Why generation stopped, or `None` while it goes on.
    pub fn reason(&self) -> Option<&StopReason> {
        self.stopped.as_ref()
    }

    /// Records `reason` and releases all pending text.
    fn stop_releasing(&mut self, reason: StopReason) -> Step {
        self.stopped = Some(reason.clone());
        Step {
            text: std::mem::take(&mut self.pending),
            stop: Some(reason),
        }
    }

    /// The stop string that completes first in `pending` (earliest end; for equal ends the
    /// earliest start), as `(start, string)`. Only matches ending after `searched_from` can be
    /// new: earlier text was searched on earlier pushes.
    fn first_stop_string(&self, searched_from: usize) -> Option<(usize, &str)> {
        let hay = self.pending.as_bytes();
        let mut best: Option<(usize, usize, &str)> = None; // (end, start, s)
        for s in &self.cfg.stop_strings {
            let needle = s.as_bytes();
            // A match must end after `searched_from`, so it starts after this.
            let from = (searched_from + 1).saturating_sub(needle.len());
            if let Some(pos) = find(&hay[from..], needle) {
                let (start, end) = (from + pos, from + pos + needle.len());
                if best.is_none_or(|(be, bs, _)| (end, start) < (be, bs)) {
                    best = Some((end, start, s));
                }
            }
        }
        best.map(|(_, start, s)| (start, s))
    }

    /// The earliest byte offset from which `pending` is a proper prefix of some stop string
    /// (`pending.len()` when there is none): the text from there on must be held back.
    fn held_back_from(&self) -> usize {
        let hay = self.pending.as_bytes();
        let longest = self.cfg.stop_strings.iter().map(String::len).max();
        let Some(longest) = longest else {
            return hay.len();
        };
        let first = hay.len().saturating_sub(longest - 1);
        (first..hay.len())
            .find(|&q| {
                self.pending.is_char_boundary(q)
                    && self
                        .cfg
                        .stop_strings
                        .iter()
                        .any(|s| s.as_bytes().starts_with(&hay[q..]))
            })
            .unwrap_or(hay.len())
    }
}

/// The first position of `needle` (non-empty) in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stopper(strings: &[&str], max: Option<usize>) -> Stopper {
        Stopper::new(StopConfig {
            eos_token_ids: vec![2],
            stop_token_ids: vec![7],
            stop_strings: strings.iter().map(|s| s.to_string()).collect(),
            max_new_tokens: max,
        })
        .unwrap()
    }

    #[test]
    fn holds_back_a_possible_stop_string_then_releases_it() {
        let mut s = stopper(&["###"], None);
        assert_eq!(s.push(10, "a#").text, "a");
        assert_eq!(s.push(10, "#b").text, "##b");
        assert_eq!(s.push(10, "##").text, "");
        let step = s.push(10, "#tail");
        assert_eq!(step.text, "");
        assert_eq!(step.stop, Some(StopReason::StopString("###".into())));
        assert_eq!(s.flush(), "");
        assert_eq!(s.generated(), 4);
    }

    #[test]
    fn stop_string_inside_one_piece_cuts_the_piece() {
        let mut s = stopper(&["END"], None);
        let step = s.push(10, "abcENDxyz");
        assert_eq!(step.text, "abc");
        assert_eq!(step.stop, Some(StopReason::StopString("END".into())));
    }

    #[test]
    fn eos_and_stop_tokens_release_held_text_but_not_their_piece() {
        let mut s = stopper(&["###"], None);
        assert_eq!(s.push(10, "x#").text, "x");
        let step = s.push(2, "</s>");
        assert_eq!(step.text, "#");
        assert_eq!(step.stop, Some(StopReason::Eos));
        assert_eq!(step.stop.unwrap().finish_reason(), FinishReason::Stop);
        // After stopping: nothing more, same reason, not counted.
        let again = s.push(10, "more");
        assert_eq!(again.text, "");
        assert_eq!(again.stop, Some(StopReason::Eos));
        assert_eq!(s.generated(), 2);

        let mut s = stopper(&[], None);
        let step = s.push(7, "<stop>");
        assert_eq!(step.text, "");
        assert_eq!(step.stop, Some(StopReason::StopToken(7)));
        assert_eq!(s.reason(), Some(&StopReason::StopToken(7)));
    }

    #[test]
    fn max_tokens_releases_everything_and_reports_length() {
        let mut s = stopper(&["###"], Some(2));
        assert_eq!(s.push(10, "a").stop, None);
        let step = s.push(10, "b#");
        assert_eq!(step.text, "b#");
        assert_eq!(step.stop, Some(StopReason::MaxTokens));
        assert_eq!(FinishReason::Length.as_str(), "length");
        assert_eq!(StopReason::MaxTokens.finish_reason().to_string(), "length");
    }

    #[test]
    fn a_stop_string_on_the_last_token_wins_over_the_limit() {
        let mut s = stopper(&["b"], Some(2));
        s.push(10, "a");
        assert_eq!(
            s.push(10, "b").stop,
            Some(StopReason::StopString("b".into()))
        );
    }

    #[test]
    fn first_completed_stop_string_wins() {
        // "bc" completes before "abcd" could; "abc" and "bc" complete together: the longer wins.
        let mut s = stopper(&["abcd", "bc"], None);
        let step = s.push(10, "xabcd");
        assert_eq!(step.text, "xa");
        assert_eq!(step.stop, Some(StopReason::StopString("bc".into())));
        let mut s = stopper(&["bc", "abc"], None);
        let step = s.push(10, "xab");
        assert_eq!(step.text, "x");
        let step = s.push(10, "c");
        assert_eq!(step.text, "");
        assert_eq!(step.stop, Some(StopReason::StopString("abc".into())));
    }

    #[test]
    fn multibyte_text_is_held_and_cut_on_char_boundaries() {
        let mut s = stopper(&["é!"], None);
        assert_eq!(s.push(10, "café").text, "caf");
        assert_eq!(s.push(10, "é").text, "é");
        assert_eq!(s.flush(), "é");
    }

    #[test]
    fn flush_returns_held_text_when_generation_ends_otherwise() {
        let mut s = stopper(&["\n\n"], None);
        assert_eq!(s.push(10, "line\n").text, "line");
        assert_eq!(s.flush(), "\n");
        assert_eq!(s.flush(), "");
    }

    #[test]
    fn config_is_validated() {
        let e = Stopper::new(StopConfig {
            stop_strings: vec!["ok".into(), String::new()],
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "stop_strings must be non-empty, got \"\" at index 1"
        );
        let e = Stopper::new(StopConfig {
            max_new_tokens: Some(0),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "max_new_tokens must be at least 1, got 0");
    }

    #[test]
    fn display_of_reasons() {
        assert_eq!(StopReason::Eos.to_string(), "eos");
        assert_eq!(StopReason::StopToken(13).to_string(), "stop token 13");
        assert_eq!(
            StopReason::StopString("\n\n".into()).to_string(),
            "stop string \"\\n\\n\""
        );
        assert_eq!(StopReason::MaxTokens.to_string(), "max tokens");
    }
}
