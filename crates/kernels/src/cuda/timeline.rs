//! Where a GPU step's time goes: timing events recorded on the stream after each op group,
//! only while a timeline is open (one atomic load per op otherwise).
//!
//! The interval between two marks is charged to the later mark's name: the op that ended
//! there, plus any time the device sat idle waiting for the host to launch it. So a step
//! bound by launches shows it as time spread over many small ops, and the sum of the
//! intervals is the stream's time from the first mark to the last, host gaps included (the
//! model marks its host-side work too: reading logits back, uploading the next ids).
//! Events come from a pool made when the timeline opens, so a mark costs one
//! `cuEventRecord`, not an event creation: the timing should not make the gaps it measures.

use super::{CudaBackend, Error, Result};
use cudarc::driver::CudaEvent;
use cudarc::driver::sys::CUevent_flags;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// The marks of an open timeline, and the events they use.
#[derive(Default)]
pub(crate) struct Timeline {
    open: AtomicBool,
    marks: Mutex<Marks>,
}

/// Names recorded so far (event `i` of `pool` holds mark `i`), and the events.
#[derive(Default)]
struct Marks {
    names: Vec<String>,
    pool: Vec<CudaEvent>,
}

/// Milliseconds of device time per op group over a timeline, and how many marks each had.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Breakdown {
    /// `(group, total ms, marks)`, largest total first.
    pub groups: Vec<(String, f64, usize)>,
    /// Sum of every interval: the stream's time from the first mark to the last, host gaps
    /// included.
    pub total_ms: f64,
}

impl Breakdown {
    /// Adds `ms` of `group` (one mark).
    fn add(totals: &mut BTreeMap<String, (f64, usize)>, group: &str, ms: f64) {
        let e = totals.entry(group.to_owned()).or_default();
        e.0 += ms;
        e.1 += 1;
    }

    /// Charges each interval between consecutive `(name, ms since the first mark)` to the
    /// later name.
    pub fn from_offsets(marks: &[(String, f64)]) -> Breakdown {
        let mut totals = BTreeMap::new();
        for pair in marks.windows(2) {
            Breakdown::add(&mut totals, &pair[1].0, pair[1].1 - pair[0].1);
        }
        let mut groups: Vec<(String, f64, usize)> =
            totals.into_iter().map(|(g, (ms, n))| (g, ms, n)).collect();
        groups.sort_by(|a, b| b.1.total_cmp(&a.1));
        let total_ms = groups.iter().map(|g| g.1).sum();
        Breakdown { groups, total_ms }
    }
}

impl CudaBackend {
    /// Starts recording a timing event after every op group (see [`CudaBackend::mark`]), with
    /// `capacity` events made now (more are made as needed); the first mark is `start`.
    pub fn open_timeline(&self, capacity: usize) -> Result<()> {
        let timeline = self.timeline();
        {
            let mut marks = timeline.marks.lock().unwrap_or_else(|p| p.into_inner());
            marks.names.clear();
            while marks.pool.len() < capacity {
                let event = self.timing_event()?;
                marks.pool.push(event);
            }
        }
        timeline.open.store(true, Ordering::Release);
        self.mark("start")
    }

    /// A new event that records time.
    fn timing_event(&self) -> Result<CudaEvent> {
        self.stream()
            .context()
            .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(Error::driver("creating a timing event"))
    }

    /// Whether a timeline is open (callers that build a mark's name check this first).
    pub fn timing(&self) -> bool {
        self.timeline().open.load(Ordering::Acquire)
    }

    /// Records a timing event named `group` on the stream when a timeline is open.
    pub fn mark(&self, group: &str) -> Result<()> {
        let timeline = self.timeline();
        if !timeline.open.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut marks = timeline.marks.lock().unwrap_or_else(|p| p.into_inner());
        let i = marks.names.len();
        if i == marks.pool.len() {
            let event = self.timing_event()?;
            marks.pool.push(event);
        }
        marks.pool[i]
            .record(self.stream())
            .map_err(Error::driver("recording a timing event"))?;
        marks.names.push(group.to_owned());
        Ok(())
    }

    /// Stops recording, waits for the stream, and returns where the time went.
    pub fn close_timeline(&self) -> Result<Breakdown> {
        let timeline = self.timeline();
        timeline.open.store(false, Ordering::Release);
        let marks = timeline.marks.lock().unwrap_or_else(|p| p.into_inner());
        let Some(first) = marks.pool.first().filter(|_| !marks.names.is_empty()) else {
            return Ok(Breakdown::default());
        };
        let mut offsets = Vec::with_capacity(marks.names.len());
        for (name, event) in marks.names.iter().zip(&marks.pool) {
            let ms = first
                .elapsed_ms(event)
                .map_err(Error::driver("reading a timing event"))?;
            offsets.push((name.clone(), f64::from(ms)));
        }
        Ok(Breakdown::from_offsets(&offsets))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_go_to_the_later_mark_and_sum_to_the_span() {
        let marks: Vec<(String, f64)> = [
            ("start", 0.0),
            ("attention", 1.0),
            ("moe", 4.0),
            ("attention", 4.5),
            ("moe", 7.5),
            ("head", 8.0),
        ]
        .iter()
        .map(|(n, t)| (n.to_string(), *t))
        .collect();
        let b = Breakdown::from_offsets(&marks);
        assert_eq!(
            b.groups,
            vec![
                ("moe".to_string(), 6.0, 2),
                ("attention".to_string(), 1.5, 2),
                ("head".to_string(), 0.5, 1),
            ]
        );
        assert_eq!(b.total_ms, 8.0);
        assert_eq!(Breakdown::from_offsets(&marks[..1]).total_ms, 0.0);
    }
}
