//! Computation off the Python thread: each call runs on a thread of its own while the caller
//! waits with the GIL released, running Python's signal handlers after every message and
//! every [`POLL`] without one. So other Python threads run meanwhile, and Ctrl-C raises
//! `KeyboardInterrupt` in the caller within one layer's time: the call's [`CancelToken`] is
//! set (the model checks it before every layer and every token), the thread is waited for,
//! and the handler's exception is raised.

use mixtral::CancelToken;
use pyo3::prelude::*;
use std::cell::Cell;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often a waiting call looks for a pending signal (Ctrl-C). Python's own handler only
/// sets a flag; this is the longest a `KeyboardInterrupt` waits on top of one layer.
const POLL: Duration = Duration::from_millis(20);

/// Messages a computation may send ahead of its reader: a stream nobody reads pauses its
/// generation after this many tokens instead of queueing all of them.
const AHEAD: usize = 64;

thread_local! {
    /// Set on an engine thread while it runs a Python router hook. A hook that calls the
    /// engine would wait for the engine's worker threads, which are running the hook's own
    /// layer: refused instead of a deadlock.
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` (a router hook's Python call) marked as inside a hook.
pub(crate) fn in_hook<T>(f: impl FnOnce() -> T) -> T {
    IN_HOOK.with(|h| h.set(true));
    let out = f();
    IN_HOOK.with(|h| h.set(false));
    out
}

/// The first exception a Python callback (a router hook) raised during a computation. The
/// hook cannot return it through the engine, so it is kept here, the computation is
/// cancelled, and the caller raises it instead of the cancellation.
#[derive(Clone, Default)]
pub(crate) struct Failure(Arc<Mutex<Option<PyErr>>>);

impl Failure {
    /// Keeps `err` unless an earlier one is kept.
    pub(crate) fn set(&self, err: PyErr) {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(err);
    }

    /// Whether a callback has failed.
    pub(crate) fn is_set(&self) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// The kept exception, if any.
    pub(crate) fn take(&self) -> Option<PyErr> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Where a worker's messages are read from.
enum Channel<T> {
    /// Waiting to be read.
    Idle(Receiver<T>),
    /// A thread is waiting on it (with the GIL released).
    Busy,
    /// The computation has ended and every message was read.
    Done,
}

/// A computation on its own thread, sending `T`s as it goes (tokens, or one result).
pub(crate) struct Worker<T> {
    channel: Mutex<Channel<T>>,
    cancel: CancelToken,
    failure: Failure,
}

impl<T: Send + 'static> Worker<T> {
    /// Starts `job` on a new thread; it sends its messages on the sender it is given and
    /// ends when it returns (or when a send fails: the receiver is gone). Refused inside a
    /// router hook (see [`IN_HOOK`]).
    pub(crate) fn spawn(
        cancel: CancelToken,
        failure: Failure,
        job: impl FnOnce(SyncSender<T>) + Send + 'static,
    ) -> PyResult<Worker<T>> {
        if IN_HOOK.with(Cell::get) {
            return Err(pyo3::exceptions::PyRuntimeError::new_err(
                "the engine cannot be called from inside its own on_router hook (the hook runs \
                 in the middle of the engine's layer)",
            ));
        }
        let (tx, rx) = mpsc::sync_channel(AHEAD);
        std::thread::Builder::new()
            .name("mixtral-python".into())
            .spawn(move || job(tx))
            .map_err(|e| {
                crate::errors::InternalError::new_err(format!("cannot start a thread: {e}"))
            })?;
        Ok(Worker {
            channel: Mutex::new(Channel::Idle(rx)),
            cancel,
            failure,
        })
    }

    /// The next message, waiting with the GIL released; `None` once the thread has ended.
    /// A pending signal whose handler raises (Ctrl-C) cancels the computation, waits for the
    /// thread and raises the handler's exception; a failed callback's exception is raised in
    /// place of whatever the computation reported after it.
    pub(crate) fn next(&self, py: Python<'_>) -> PyResult<Option<T>> {
        self.next_or_abandon(py, false)
    }

    /// [`Worker::next`]; with `abandon`, a signal returns at once, leaving the cancelled
    /// thread to finish on its own (for work that checks no token, such as loading).
    fn next_or_abandon(&self, py: Python<'_>, abandon: bool) -> PyResult<Option<T>> {
        let mut rx = {
            let mut channel = self.channel.lock().unwrap_or_else(|p| p.into_inner());
            match std::mem::replace(&mut *channel, Channel::Busy) {
                Channel::Idle(rx) => rx,
                Channel::Busy => {
                    return Err(pyo3::exceptions::PyRuntimeError::new_err(
                        "another thread is already waiting on this computation",
                    ));
                }
                Channel::Done => {
                    *channel = Channel::Done;
                    return Ok(None);
                }
            }
        };
        loop {
            let (back, got) = recv_detached(py, rx);
            rx = back;
            let message = match got {
                Ok(message) => Some(message),
                Err(RecvTimeoutError::Disconnected) => {
                    self.set(Channel::Done);
                    return match self.failure.take() {
                        Some(err) => Err(err),
                        None => Ok(None),
                    };
                }
                Err(RecvTimeoutError::Timeout) => None,
            };
            if let Err(err) = py.check_signals() {
                self.cancel.cancel();
                if !abandon {
                    drain(py, rx);
                }
                self.set(Channel::Done);
                return Err(err);
            }
            if let Some(err) = self.failure.take() {
                self.cancel.cancel();
                drain(py, rx);
                self.set(Channel::Done);
                return Err(err);
            }
            if let Some(message) = message {
                self.set(Channel::Idle(rx));
                return Ok(Some(message));
            }
        }
    }

    fn set(&self, state: Channel<T>) {
        *self.channel.lock().unwrap_or_else(|p| p.into_inner()) = state;
    }

    /// Cancels the computation without waiting (the caller is gone, or asks from another
    /// thread).
    pub(crate) fn cancel(&self) {
        self.cancel.cancel();
    }
}

/// Waits up to [`POLL`] for a message with the GIL released. The receiver is moved into the
/// GIL-free closure and handed back: it is not `Sync`, so it cannot be borrowed there.
fn recv_detached<T: Send>(
    py: Python<'_>,
    rx: Receiver<T>,
) -> (Receiver<T>, Result<T, RecvTimeoutError>) {
    py.detach(move || {
        let got = rx.recv_timeout(POLL);
        (rx, got)
    })
}

/// Reads `rx` until its (cancelled) thread has ended, with the GIL released; a second signal
/// gives up waiting (the thread then ends on its own).
fn drain<T: Send>(py: Python<'_>, mut rx: Receiver<T>) {
    loop {
        let (back, got) = recv_detached(py, rx);
        rx = back;
        match got {
            Ok(_) => {}
            Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {
                if py.check_signals().is_err() {
                    return;
                }
            }
        }
    }
}

/// Runs `job` on its own thread and returns its result, as [`Worker::next`] waits. With
/// `abandon_on_signal`, Ctrl-C returns at once and the thread finishes on its own (for work
/// that no token stops, such as loading a model).
pub(crate) fn run<T: Send + 'static>(
    py: Python<'_>,
    cancel: CancelToken,
    failure: Failure,
    abandon_on_signal: bool,
    job: impl FnOnce() -> T + Send + 'static,
) -> PyResult<T> {
    let worker = Worker::spawn(cancel, failure, move |tx| {
        let _ = tx.send(job());
    })?;
    match worker.next_or_abandon(py, abandon_on_signal)? {
        Some(result) => Ok(result),
        None => Err(crate::errors::InternalError::new_err(
            "the computation's thread ended without a result (a panic in the engine)",
        )),
    }
}
