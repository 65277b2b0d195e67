//! Ctrl-C: the first press stops generation cleanly; a second one exits at once.

use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Installs the handler (once per process).
pub(crate) fn install() {
    let _ = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
    });
}

/// True once Ctrl-C was pressed; clears the flag so the next turn of a chat can run.
pub(crate) fn take() -> bool {
    INTERRUPTED.swap(false, Ordering::SeqCst)
}
