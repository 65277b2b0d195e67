//! A team of worker threads that stays awake between parallel regions.
//!
//! A decode step is dozens of short parallel regions (weight matrices, attention), 15–300 µs each.
//! Handing each to a rayon pool costs a wake-up per region: the other thread starts several
//! microseconds late and sleeps again between regions. A [`Team`] instead keeps its helpers
//! spinning on a shared counter for [`SPIN`] after each region, so the next one starts on every
//! core within a fraction of a microsecond (what llama.cpp's thread pool does inside a graph);
//! after that they sleep on a condition variable and cost nothing.

use std::cell::{Cell, UnsafeCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a helper spins for the next region before it sleeps: far longer than the gaps
/// inside a decode step and between tokens (tens of microseconds), far shorter than a human
/// pause.
const SPIN: Duration = Duration::from_millis(2);

/// A leader that waits longer than this for the helpers at the end of a region (and longer
/// than half its own share of the region) takes it as a helper descheduled by another process:
/// on a quiet machine the wait is at most one chunk (tens of microseconds in decode) plus the
/// odd interrupt, while a preempted helper costs a scheduler time slice (several ms). 300 us
/// also caught quiet-machine blips (23 per bench run, decode 3.5% slower than before).
const PREEMPTED_WAIT: Duration = Duration::from_millis(1);
/// How long the team then runs regions on the leader alone before trying its helpers again;
/// doubled each time the retry is preempted too, up to [`MAX_SERIAL`].
const FIRST_SERIAL: Duration = Duration::from_millis(20);
/// The longest serial stretch between retries.
const MAX_SERIAL: Duration = Duration::from_millis(640);
/// Two preempted regions this close together mean another process competes for the cores.
const CONFIRM: Duration = Duration::from_millis(100);

/// What the current thread may do with a parallel region.
#[derive(Clone, Copy)]
enum Role {
    /// Not inside a team: regions go to the current rayon pool.
    Free,
    /// Leading `team` (inside [`Team::run`]): regions go to its helpers.
    Leader(*const Shared),
    /// Running a chunk of a region (or a helper thread): nested regions run serially here.
    Busy,
}

thread_local! {
    static ROLE: Cell<Role> = const { Cell::new(Role::Free) };
}

/// How the current thread runs a parallel region.
#[derive(Clone, Copy)]
pub(crate) enum Dispatch {
    /// Through the current rayon pool.
    Rayon,
    /// Through the team whose [`Team::run`] this thread is inside.
    Team(TeamHandle),
    /// On this thread alone.
    Serial,
}

/// The team a leader thread hands its regions to; valid on that thread inside [`Team::run`].
#[derive(Clone, Copy)]
pub(crate) struct TeamHandle(*const Shared);

/// How the current thread should run a parallel region, and with how many threads.
pub(crate) fn dispatch() -> (Dispatch, usize) {
    match ROLE.get() {
        Role::Free => (Dispatch::Rayon, rayon::current_num_threads()),
        Role::Busy => (Dispatch::Serial, 1),
        Role::Leader(shared) => {
            // SAFETY: `Leader` is set only inside `Team::run`, which keeps the team (and so
            // its shared state) alive until it restores the previous role.
            let threads = unsafe { (*shared).helpers } + 1;
            (Dispatch::Team(TeamHandle(shared)), threads)
        }
    }
}

/// A region's work as the helpers see it: a lifetime-erased closure over chunk indices.
#[derive(Clone, Copy)]
struct Job {
    f: *const (dyn Fn(usize) + Sync),
    chunks: usize,
}

/// A value alone on its 64-byte cache line (128 covers adjacent-line prefetch pairs).
#[repr(align(128))]
struct Padded<T>(T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// State shared by a team's leader and helpers.
struct Shared {
    helpers: usize,
    /// Bumped once per region (and once to stop); helpers wait for it to change.
    epoch: AtomicU64,
    stop: AtomicBool,
    /// The current region. Written by the leader only while every helper has finished the
    /// previous one (`done == helpers`), read by helpers only after seeing a new `epoch`.
    job: UnsafeCell<Job>,
    /// Next chunk to hand out (on its own cache line: every thread increments it while the
    /// others read `epoch`, `job` and `done`).
    next: Padded<AtomicUsize>,
    /// Helpers finished with the current region.
    done: Padded<AtomicUsize>,
    /// A chunk panicked on a helper.
    panicked: AtomicBool,
    /// Helpers sleeping (not spinning) on `wake`.
    sleepers: AtomicUsize,
    sleep: Mutex<()>,
    wake: Condvar,
    /// Contention state, touched by the leader only (one at a time, under `Team::lead`).
    contention: Contention,
}

/// The leader's record of helpers descheduled by other processes (see [`PREEMPTED_WAIT`]):
/// while one competes for the cores, a region that waits for a preempted helper waits a whole
/// scheduler time slice (milliseconds), so the team runs regions on the leader alone for a
/// while and then tries its helpers again.
struct Contention {
    /// The team's clock origin.
    origin: Instant,
    /// Regions run serially until this many nanoseconds after `origin`.
    serial_until: AtomicU64,
    /// The next serial stretch, in nanoseconds (0: no preemption seen lately).
    backoff: AtomicU64,
    /// Regions that found a helper preempted (for tests and diagnostics).
    preemptions: AtomicU64,
    /// When the last such region ended, in nanoseconds after `origin` (0: never).
    last_preemption: AtomicU64,
}

impl Contention {
    fn new() -> Contention {
        Contention {
            origin: Instant::now(),
            serial_until: AtomicU64::new(0),
            backoff: AtomicU64::new(0),
            preemptions: AtomicU64::new(0),
            last_preemption: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    /// True while the team should run regions on the leader alone.
    fn serial(&self) -> bool {
        self.now() < self.serial_until.load(Ordering::Relaxed)
    }

    /// Records how a parallel region ended: the leader's own working time and how long it then
    /// waited for the helpers.
    fn record(&self, own: Duration, waited: Duration) {
        if waited > PREEMPTED_WAIT && waited > own / 2 {
            self.preemptions.fetch_add(1, Ordering::Relaxed);
            // One preempted region in a while is a blip (an interrupt, the hypervisor taking
            // a vCPU: about one a second on a quiet VM here); two within `CONFIRM` are
            // competition.
            let now = self.now();
            let last = self.last_preemption.swap(now.max(1), Ordering::Relaxed);
            if last == 0 || now - last > CONFIRM.as_nanos() as u64 {
                return;
            }
            let first = FIRST_SERIAL.as_nanos() as u64;
            let stretch = match self.backoff.load(Ordering::Relaxed) {
                0 => first,
                b => (2 * b).min(MAX_SERIAL.as_nanos() as u64),
            };
            self.backoff.store(stretch, Ordering::Relaxed);
            self.serial_until
                .store(self.now() + stretch, Ordering::Relaxed);
        } else if self.backoff.load(Ordering::Relaxed) != 0 {
            // A clean parallel region: the competition has gone (or was a blip).
            self.backoff.store(0, Ordering::Relaxed);
        }
    }
}

// SAFETY: `job` is the only non-Sync field; its accesses are ordered by `epoch` (the leader
// writes before a SeqCst increment; helpers read after observing it) and `done` (the leader
// writes again only after every helper has counted itself done with the previous job), and the
// closure it points to is `Sync`.
unsafe impl Sync for Shared {}
// SAFETY: as above; the raw pointer in `job` is only dereferenced under that protocol.
unsafe impl Send for Shared {}

/// Worker threads that run the parallel regions of the kernels called inside [`Team::run`].
///
/// ```
/// use mixtral_kernels::threads::Team;
/// let team = Team::new(2).unwrap();
/// assert_eq!(team.threads(), 2);
/// let sum = team.run(|| (1..=10).sum::<u32>()); // kernels called here use both threads
/// assert_eq!(sum, 55);
/// ```
pub struct Team {
    shared: Arc<Shared>,
    helpers: Vec<JoinHandle<()>>,
    /// One leader at a time: a second thread calling `run` waits for the first.
    lead: Mutex<()>,
}

impl std::fmt::Debug for Team {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Team")
            .field("threads", &self.threads())
            .finish()
    }
}

impl Team {
    /// A team of `threads` threads: the caller of [`Team::run`] and `threads - 1` helpers
    /// (none for 0 or 1).
    pub fn new(threads: usize) -> std::io::Result<Team> {
        let helpers = threads.saturating_sub(1);
        let noop: &'static (dyn Fn(usize) + Sync) = &|_| {};
        let shared = Arc::new(Shared {
            helpers,
            epoch: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            job: UnsafeCell::new(Job { f: noop, chunks: 0 }),
            next: Padded(AtomicUsize::new(0)),
            done: Padded(AtomicUsize::new(helpers)),
            panicked: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
            contention: Contention::new(),
        });
        let mut team = Team {
            shared,
            helpers: Vec::with_capacity(helpers),
            lead: Mutex::new(()),
        };
        for i in 0..helpers {
            let shared = Arc::clone(&team.shared);
            let handle = std::thread::Builder::new()
                .name(format!("mixtral-{}", i + 1))
                .spawn(move || helper(&shared))?; // on error, Drop stops those started
            team.helpers.push(handle);
        }
        Ok(team)
    }

    /// Threads working on each region: the caller and the helpers.
    pub fn threads(&self) -> usize {
        self.shared.helpers + 1
    }

    /// Regions so far that found a helper descheduled by another process, after which the team
    /// ran on the leader alone for a while.
    pub fn preemptions(&self) -> u64 {
        self.shared.contention.preemptions.load(Ordering::Relaxed)
    }

    /// Runs `f` on the calling thread with this team serving the parallel regions of every
    /// kernel it calls. Calls from several threads take turns; a nested call just runs `f`.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> T {
        let me = Arc::as_ptr(&self.shared);
        match ROLE.get() {
            // Nested, or from inside a region's chunk: the regions already have their threads.
            Role::Leader(p) if p == me => return f(),
            Role::Busy => return f(),
            _ => {}
        }
        let _lead = self.lead.lock().unwrap_or_else(PoisonError::into_inner);
        let _role = RoleGuard::set(Role::Leader(me));
        f()
    }
}

impl Drop for Team {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.epoch.fetch_add(1, Ordering::SeqCst);
        self.shared.wake_sleepers();
        for h in self.helpers.drain(..) {
            let _ = h.join(); // a helper never panics: chunk panics are caught
        }
    }
}

impl TeamHandle {
    /// Runs `f(c)` for every `c` in `0..chunks` on the leader and the helpers, chunks handed
    /// out one at a time; returns when all are done. Call only on the thread [`dispatch`]
    /// returned this handle to, before that thread leaves [`Team::run`].
    pub(crate) fn for_each_chunk(self, chunks: usize, f: &(dyn Fn(usize) + Sync)) {
        // SAFETY: per this function's contract the leader is inside `Team::run`, which keeps
        // the shared state alive.
        let s = unsafe { &*self.0 };
        if s.helpers == 0 || chunks <= 1 || s.contention.serial() {
            let _busy = RoleGuard::set(Role::Busy);
            (0..chunks).for_each(f);
            return;
        }
        // SAFETY: erases the closure's lifetime for the helpers; `WaitForHelpers` below makes
        // this function return (or unwind) only after every helper is done with it.
        let f: &'static (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(f) };
        // SAFETY: the leader is the only writer, and every helper finished the previous job
        // (the last call waited for `done == helpers`), so nobody reads `job` now.
        unsafe { *s.job.get() = Job { f, chunks } };
        s.next.store(0, Ordering::Relaxed);
        s.done.store(0, Ordering::Relaxed);
        s.epoch.fetch_add(1, Ordering::SeqCst); // publishes job, next and done
        s.wake_sleepers();
        let wait = WaitForHelpers(s);
        let start = Instant::now();
        s.work(Job { f, chunks });
        let own = start.elapsed();
        drop(wait);
        s.contention.record(own, start.elapsed() - own);
        if s.panicked.swap(false, Ordering::Relaxed) {
            panic!("a parallel region panicked on a helper thread");
        }
    }
}

impl Shared {
    /// Takes chunks until none is left.
    fn work(&self, job: Job) {
        let _busy = RoleGuard::set(Role::Busy);
        loop {
            let c = self.next.fetch_add(1, Ordering::Relaxed);
            if c >= job.chunks {
                return;
            }
            // SAFETY: `job.f` stays valid until every helper has counted itself done (see
            // `for_each_chunk`), and this thread has not yet.
            unsafe { (*job.f)(c) };
        }
    }

    fn wake_sleepers(&self) {
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            let _g = self.sleep.lock().unwrap_or_else(PoisonError::into_inner);
            self.wake.notify_all();
        }
    }

    /// Waits for `epoch` to move past `seen`: spins for [`SPIN`], then sleeps.
    fn wait(&self, seen: u64) -> u64 {
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            let e = self.epoch.load(Ordering::Acquire);
            if e != seen {
                return e;
            }
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(256) && start.elapsed() > SPIN {
                break;
            }
        }
        let mut g = self.sleep.lock().unwrap_or_else(PoisonError::into_inner);
        // Counted before the epoch is read again, both SeqCst: a leader that bumps the epoch
        // after this read sees the sleeper and notifies (under the lock, so not too early).
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        loop {
            let e = self.epoch.load(Ordering::SeqCst);
            if e != seen {
                self.sleepers.fetch_sub(1, Ordering::SeqCst);
                return e;
            }
            g = self.wake.wait(g).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// A helper thread's life: wait for a region, take its chunks, count itself done.
fn helper(s: &Shared) {
    ROLE.set(Role::Busy);
    let mut seen = 0;
    loop {
        seen = s.wait(seen);
        if s.stop.load(Ordering::SeqCst) {
            return;
        }
        // SAFETY: a new epoch was observed (Acquire), so the leader's write of `job` is
        // visible and it will not write again before this helper counts itself done.
        let job = unsafe { *s.job.get() };
        if catch_unwind(AssertUnwindSafe(|| s.work(job))).is_err() {
            // Stop handing out this region's chunks; the leader reports the panic.
            s.next.store(usize::MAX / 2, Ordering::Relaxed);
            s.panicked.store(true, Ordering::Relaxed);
        }
        s.done.fetch_add(1, Ordering::Release);
    }
}

/// On drop (return or unwind), waits until every helper is done with the current region.
struct WaitForHelpers<'a>(&'a Shared);

impl Drop for WaitForHelpers<'_> {
    fn drop(&mut self) {
        let mut spins = 0u32;
        while self.0.done.load(Ordering::Acquire) < self.0.helpers {
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(4096) {
                std::thread::yield_now(); // a helper was descheduled: let it run
            }
        }
    }
}

/// Sets this thread's role until dropped.
struct RoleGuard(Role);

impl RoleGuard {
    fn set(role: Role) -> RoleGuard {
        RoleGuard(ROLE.replace(role))
    }
}

impl Drop for RoleGuard {
    fn drop(&mut self) {
        ROLE.set(self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_wait_for_helpers_runs_regions_serially_for_a_while() {
        let c = Contention::new();
        let us = Duration::from_micros;
        // Normal imbalance: short waits, or waits short next to the leader's own work.
        c.record(us(100), us(40));
        c.record(us(100), us(900));
        c.record(us(5000), us(1500));
        assert!(!c.serial());
        assert_eq!(c.preemptions.load(Ordering::Relaxed), 0);
        // A helper descheduled for a time slice: once is a blip, twice in a row competition.
        c.record(us(50), us(4000));
        assert!(!c.serial());
        c.record(us(50), us(4000));
        assert!(c.serial());
        assert_eq!(
            c.backoff.load(Ordering::Relaxed),
            FIRST_SERIAL.as_nanos() as u64
        );
        // Preempted again on the retry: the stretch doubles, up to the cap.
        for _ in 0..10 {
            c.record(us(50), us(4000));
        }
        assert_eq!(
            c.backoff.load(Ordering::Relaxed),
            MAX_SERIAL.as_nanos() as u64
        );
        // A clean region forgets it.
        c.record(us(100), us(10));
        assert_eq!(c.backoff.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn regions_stay_complete_with_busy_threads_competing() {
        use std::sync::atomic::AtomicU32;
        let team = Team::new(2).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let spinners: Vec<_> = (0..cores)
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        let hits: Vec<AtomicU32> = (0..257).map(|_| AtomicU32::new(0)).collect();
        team.run(|| {
            for _ in 0..300 {
                crate::threads::for_each_range(hits.len(), 1, 1 << 20, 4, |r| {
                    for i in r {
                        hits[i].fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        stop.store(true, Ordering::Relaxed);
        spinners.into_iter().for_each(|h| h.join().unwrap());
        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 300));
    }
}
