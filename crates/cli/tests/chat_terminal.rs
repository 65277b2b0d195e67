//! `mixtral chat` in a real terminal (tmux): Ctrl-C at the prompt clears the line without
//! cutting the next answer short, twice in a row quits; empty lines are ignored; history
//! recalls a line; `/system`, `/reset`, `/exit`. Piped input drives the same commands.
//!
//! tmux must be installed where `MIXTRAL_REQUIRE_TMUX` is set (CI installs it); elsewhere the
//! terminal test says so and passes without running.

mod common;

use common::fixture;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A tmux server of this test's own (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(command: &str) -> Option<Tmux> {
        let have = Command::new("tmux")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success());
        if !have {
            assert!(
                std::env::var_os("MIXTRAL_REQUIRE_TMUX").is_none(),
                "MIXTRAL_REQUIRE_TMUX is set but tmux is not installed"
            );
            eprintln!("tmux not installed: the terminal test did not run");
            return None;
        }
        let tmux = Tmux {
            socket: format!("mixtral-chat-test-{}", std::process::id()),
        };
        tmux.run(&[
            "new-session",
            "-d",
            "-s",
            "chat",
            "-x",
            "160",
            "-y",
            "50",
            command,
        ]);
        Some(tmux)
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "chat"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    /// Types `text` literally (no key names).
    fn type_text(&self, text: &str) {
        self.run(&["send-keys", "-t", "chat", "-l", text]);
    }

    fn screen(&self) -> String {
        String::from_utf8(
            self.run(&["capture-pane", "-p", "-t", "chat", "-S", "-200"])
                .stdout,
        )
        .unwrap()
    }

    /// Waits until `done(screen)` holds (20 s at most) and returns that screen.
    fn wait(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if done(&screen) {
                return screen;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "waiting for {what}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

fn count(screen: &str, needle: &str) -> usize {
    screen.matches(needle).count()
}

#[test]
fn chat_in_a_terminal_edits_lines_and_survives_ctrl_c() {
    // The shell reports the exit status (tmux's own `pane_dead_status` was seen missing the
    // exit now and then); its `trap` keeps a Ctrl-C from ending the shell itself.
    let command = format!(
        "trap : INT; '{}' chat -m '{}' -n 4 -t 1; echo \"EXIT STATUS $?\"; sleep 60",
        env!("CARGO_BIN_EXE_mixtral"),
        fixture("tiny-bf16").display()
    );
    let Some(tmux) = Tmux::start(&command) else {
        return;
    };
    tmux.wait("the banner", |s| {
        // (capture-pane drops the prompt's trailing space.)
        s.contains("chatting with") && s.lines().any(|l| l.starts_with('>'))
    });
    tmux.type_text("Hello");
    tmux.keys(&["Enter"]);
    tmux.wait("the first answer", |s| count(s, "4 generated]") == 1);

    // An empty line is ignored: the chat goes on, nothing is generated.
    tmux.keys(&["Enter"]);
    tmux.keys(&["Enter"]);
    // Ctrl-C at the prompt clears what was typed and says how to quit.
    tmux.type_text("draft that is abandoned");
    tmux.keys(&["C-c"]);
    tmux.wait("the cleared line", |s| s.contains("line cleared"));
    // The next answer is a whole one: the Ctrl-C did not leak into it.
    tmux.type_text("Hi");
    tmux.keys(&["Enter"]);
    let screen = tmux.wait("the second answer", |s| count(s, "4 generated]") == 2);
    assert!(!screen.contains("draft that is abandonedHi"), "{screen}");
    assert!(screen.contains("> Hi"), "{screen}");
    assert!(
        !screen.contains("EXIT STATUS"),
        "the empty lines ended the chat:\n{screen}"
    );

    // History: Up recalls the last line, which Enter sends again.
    tmux.keys(&["Up"]);
    tmux.wait("the recalled line", |s| s.trim_end().ends_with("> Hi"));
    tmux.keys(&["Enter"]);
    tmux.wait("the third answer", |s| count(s, "4 generated]") == 3);

    tmux.type_text("/system Answer briefly.");
    tmux.keys(&["Enter"]);
    tmux.wait("the system prompt", |s| s.contains("(system prompt set)"));
    tmux.type_text("/reset");
    tmux.keys(&["Enter"]);
    tmux.wait("the reset", |s| s.contains("(conversation forgotten)"));
    tmux.type_text("Again");
    tmux.keys(&["Enter"]);
    let screen = tmux.wait("the answer after the reset", |s| {
        count(s, "4 generated]") == 4
    });
    // After /reset the prompt is the system prompt and one turn again, computed afresh.
    let last = screen
        .lines()
        .rev()
        .find(|l| l.contains("generated]"))
        .unwrap();
    assert!(last.contains("computed"), "{last}");

    // Ctrl-C twice in a row at the prompt quits (however fast the second one comes: as a
    // key to the line editor or as a signal between two reads).
    tmux.keys(&["C-c"]);
    // Wait for the new prompt: the line editor, while it starts reading, consumes what is
    // typed at that instant (a person cannot type that fast; a test can).
    tmux.wait("the prompt after the first Ctrl-C", |s| {
        count(s, "line cleared") == 2 && s.trim_end().ends_with("quits)\n>")
    });
    std::thread::sleep(Duration::from_millis(100));
    tmux.keys(&["C-c"]);
    let screen = tmux.wait("the exit", |s| s.contains("EXIT STATUS"));
    let status: i32 = screen
        .split("EXIT STATUS ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    assert_eq!(status, 130, "quit as a Ctrl-C does:\n{screen}");
}

fn piped(input: &str) -> Output {
    piped_with(&fixture("tiny-bf16"), &[], input)
}

fn piped_with(model: &std::path::Path, extra: &[&str], input: &str) -> Output {
    let mut args = vec!["chat", "-m", model.to_str().unwrap(), "-n", "4", "-t", "1"];
    args.extend_from_slice(extra);
    common::mixtral_with_stdin(&args, input)
}

/// The `[N prompt tokens, M computed; K generated]` lines, as (N, M).
fn turns(stderr: &str) -> Vec<(usize, usize)> {
    stderr
        .lines()
        .filter_map(|l| l.split_once(" prompt tokens, "))
        .map(|(n, rest)| {
            let n = n.rsplit('[').next().unwrap().parse().unwrap();
            let m = rest.split_once(" computed").unwrap().0.parse().unwrap();
            (n, m)
        })
        .collect()
}

#[test]
fn piped_chat_ignores_empty_lines_and_obeys_commands() {
    let out = piped(
        "Hello\n\n   \nHow are you?\n/system Be brief.\n/nonsense\nAnd now?\n/reset\nHello\n/exit\nnever sent\n",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("(system prompt set)"), "{stderr}");
    assert!(stderr.contains("unknown command /nonsense"), "{stderr}");
    assert!(stderr.contains("(conversation forgotten)"), "{stderr}");
    let t = turns(&stderr);
    assert_eq!(
        t.len(),
        4,
        "four messages answered (none for blank lines, none after /exit): {stderr}"
    );
    // The second turn continues the first: only the new turn is computed.
    assert!(t[1].0 > t[0].0 && t[1].1 < t[1].0, "{t:?}");
    // After /reset: one turn again with the system prompt, computed from scratch, the same
    // as the first turn plus the system prompt.
    assert_eq!(t[3].0, t[3].1, "{t:?}");
    assert!(t[3].0 > t[0].0 && t[3].0 < t[2].0, "{t:?}");
    // Ctrl-D (end of input) quits as /exit does.
    let out = piped("Hello\n");
    assert!(out.status.success());
    assert_eq!(turns(&String::from_utf8_lossy(&out.stderr)).len(), 1);
}

#[test]
fn a_failed_or_empty_turn_does_not_end_the_chat() {
    // The tiny model's answer to "hi" starts with "б": stopping there leaves it empty, which
    // no chat format can render as an assistant turn.
    let out = piped_with(&fixture("tiny-bf16"), &["--stop", "б"], "hi\nagain\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("(no answer; that message was not kept)"),
        "{stderr}"
    );
    assert_eq!(turns(&stderr).len(), 2, "{stderr}");
    // A message the context cannot hold is refused; the chat goes on.
    let model = common::copy_of("tiny-bf16");
    let config = model.path().join("config.json");
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    json["max_position_embeddings"] = 40.into();
    std::fs::write(&config, json.to_string()).unwrap();
    let long = "a long message that the forty positions of this context cannot hold ".repeat(3);
    let out = piped_with(model.path(), &[], &format!("{long}\nhi\n"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("exceeds max_position_embeddings") && stderr.contains("not kept"),
        "{stderr}"
    );
    assert_eq!(
        turns(&stderr).len(),
        1,
        "the short message is answered: {stderr}"
    );
}
