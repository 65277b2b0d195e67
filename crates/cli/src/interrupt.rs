//! Ctrl-C: the first press stops generation cleanly; a second one exits at once. At the chat
//! prompt, after one Ctrl-C, the next one exits (see [`arm_exit`]).

use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static EXIT_ARMED: AtomicBool = AtomicBool::new(false);

/// Installs the handler (once per process).
pub(crate) fn install() {
    let _ = ctrlc::set_handler(|| {
        if EXIT_ARMED.load(Ordering::SeqCst) || INTERRUPTED.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
    });
}

/// True once Ctrl-C was pressed; clears the flag so the next turn of a chat can run.
pub(crate) fn take() -> bool {
    INTERRUPTED.swap(false, Ordering::SeqCst)
}

/// Makes the next Ctrl-C that arrives as a signal exit at once (`true`), or not. The chat
/// prompt arms it after a first Ctrl-C: a second one pressed quickly can arrive between two
/// reads of the line editor, when the terminal sends it as a signal rather than a key.
pub(crate) fn arm_exit(armed: bool) {
    EXIT_ARMED.store(armed, Ordering::SeqCst);
}
