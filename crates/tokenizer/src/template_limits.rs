//! Rendering a chat template within bounds of time and memory.
//!
//! A template comes with the model, from whoever published it, and runs on every chat
//! request: `{{ 'x' * 100000000 }}` (21 bytes) would allocate 100 MB per request, a loop
//! that doubles a string reaches gigabytes in 31 steps, and nested `range(100000)` loops
//! spin for hours. minijinja's fuel bounds the number of instructions (time), but a single
//! instruction can double a value, so fuel alone bounds neither the values nor the output.
//!
//! So the compiled template is patched before it runs (minijinja's `unstable_machinery`,
//! pinned to one minijinja version in Cargo.toml): every instruction that can build a large
//! value (`~`, `+`, `*`, the filters that grow their input) is replaced by a jump to a
//! stretch appended after the code that first calls a guard with the operands, which
//! checks the size of the result *before* it is built and charges it to the render's
//! budget, then runs the original instruction and jumps back. Raw template text is emitted
//! through the formatter like `{{ }}` output, and the formatter writes through a counter, so
//! the output is capped where it is written. String methods (`'x'.center(n)` …) are checked
//! in the method callback. Each guard that refuses records why, so the error names the
//! limit, not just minijinja's message.

use minijinja::machinery::{Instruction, Instructions};
use minijinja::value::{Object, Value};
use minijinja::{Error as MjError, ErrorKind, State};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Bounds on one rendering of a chat template.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RenderLimits {
    /// The most template instructions one rendering may run (minijinja's fuel).
    pub fuel: u64,
    /// The most bytes the rendered text may have. Each value built while rendering is held
    /// to this too, and all of them together to [`RenderLimits::WORK_FACTOR`] times it.
    pub max_output_bytes: usize,
}

impl RenderLimits {
    /// The default fuel: a 10,000-message conversation through a template that spends 100
    /// instructions a message.
    pub const DEFAULT_FUEL: u64 = 1_000_000;
    /// The default output cap when the model's context is not known.
    pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 4 << 20;
    /// Bytes of rendered text allowed per token of context: a prompt longer than the
    /// context is refused later anyway, and no token stands for 64 bytes of text.
    pub const BYTES_PER_CONTEXT_TOKEN: usize = 64;
    /// How many times the output cap all values built while rendering may take together
    /// (each concatenation is charged whole, so a template that rebuilds a string per
    /// message is charged its prefixes: room for that, while memory stays bounded).
    pub const WORK_FACTOR: usize = 16;

    /// Limits with this fuel and output cap.
    pub fn new(fuel: u64, max_output_bytes: usize) -> RenderLimits {
        RenderLimits {
            fuel,
            max_output_bytes,
        }
    }

    /// The default fuel, and an output cap of [`Self::BYTES_PER_CONTEXT_TOKEN`] bytes per
    /// token of a `context`-token model (at least 64 KiB).
    pub fn for_context(context: usize) -> RenderLimits {
        let bytes = context.saturating_mul(Self::BYTES_PER_CONTEXT_TOKEN);
        RenderLimits::new(Self::DEFAULT_FUEL, bytes.max(64 << 10))
    }
}

impl Default for RenderLimits {
    fn default() -> RenderLimits {
        RenderLimits::new(Self::DEFAULT_FUEL, Self::DEFAULT_MAX_OUTPUT_BYTES)
    }
}

/// What one rendering may still spend, and the limit it ran into.
#[derive(Debug)]
pub(crate) struct Budget {
    limits: RenderLimits,
    /// Bytes that values built from here on may still take.
    work_left: AtomicUsize,
    /// Bytes the output may still take.
    output_left: AtomicUsize,
    /// Values the namespace-cycle check ([`Check::SetAttr`]) may still visit.
    visits_left: AtomicUsize,
    /// The limit a guard refused on, for the error.
    tripped: Mutex<Option<String>>,
}

impl Budget {
    pub(crate) fn new(limits: RenderLimits) -> Arc<Budget> {
        Arc::new(Budget {
            limits,
            work_left: AtomicUsize::new(limits.max_output_bytes.saturating_mul(Self::factor())),
            output_left: AtomicUsize::new(limits.max_output_bytes),
            visits_left: AtomicUsize::new(MAX_STORE_VISITS),
            tripped: Mutex::new(None),
        })
    }

    fn factor() -> usize {
        RenderLimits::WORK_FACTOR
    }

    /// The limit that stopped the rendering, if one did.
    pub(crate) fn tripped(&self) -> Option<String> {
        self.tripped.lock().map(|t| t.clone()).unwrap_or(None)
    }

    fn refuse(&self, why: String) -> MjError {
        if let Ok(mut t) = self.tripped.lock() {
            t.get_or_insert_with(|| why.clone());
        }
        MjError::new(ErrorKind::InvalidOperation, why)
    }

    /// Takes `bytes` from `left`, or refuses naming `what`.
    fn take(&self, left: &AtomicUsize, bytes: usize, what: &str) -> Result<(), MjError> {
        let ok = left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| {
                l.checked_sub(bytes)
            })
            .is_ok();
        match ok {
            true => Ok(()),
            false => Err(self.refuse(format!(
                "{what} exceeds the {} byte limit of a chat template's output",
                self.limits.max_output_bytes
            ))),
        }
    }

    /// Charges a value of `bytes` about to be built: it must fit the output cap, and all
    /// values built so far the work budget.
    fn charge_value(&self, bytes: usize) -> Result<(), MjError> {
        if bytes > self.limits.max_output_bytes {
            return Err(self.refuse(format!(
                "a value of {bytes} bytes exceeds the {} byte limit of a chat template's output",
                self.limits.max_output_bytes
            )));
        }
        self.take(&self.work_left, bytes, "the values built while rendering")
    }
}

/// A fmt sink that counts bytes and fails past `cap` (so measuring a huge value stops early).
struct Counter {
    n: usize,
    cap: usize,
}

impl fmt::Write for Counter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.n = self.n.saturating_add(s.len());
        match self.n > self.cap {
            true => Err(fmt::Error),
            false => Ok(()),
        }
    }
}

/// How long `value` prints, or `cap + 1` when longer than `cap`.
fn display_len(value: &Value, cap: usize) -> usize {
    if let Some(s) = value.as_str() {
        return s.len();
    }
    let mut c = Counter { n: 0, cap };
    match fmt::write(&mut c, format_args!("{value}")) {
        Ok(()) => c.n,
        Err(_) => cap.saturating_add(1),
    }
}

/// A value's elements when it is a sequence (lists are charged a word per element).
fn seq_len(value: &Value) -> Option<usize> {
    match value.kind() {
        minijinja::value::ValueKind::Seq | minijinja::value::ValueKind::Iterable => value.len(),
        _ => None,
    }
}

const WORD: usize = 16;

/// The most values one rendering's `{% set ns.attr = value %}` checks may visit together: a
/// template that appends to a list held in a namespace once per message visits the list
/// each time, so this bounds that quadratic walk (10^6 is a 1,400-message conversation).
const MAX_STORE_VISITS: usize = 1_000_000;

/// Whether `value` is one of minijinja's namespaces, the only mutable value a template can
/// make. Its type is private to minijinja, so it is told by its `Debug` name (checked by
/// `a_namespace_is_told_from_other_values`; minijinja is pinned).
fn is_namespace(value: &Value) -> bool {
    const NAME: &str = "Namespace";
    struct Prefix(String);
    impl fmt::Write for Prefix {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            let room = NAME.len().saturating_sub(self.0.len());
            self.0.extend(s.chars().take(room));
            match self.0.len() >= NAME.len() {
                true => Err(fmt::Error),
                false => Ok(()),
            }
        }
    }
    // The object's own `Debug` (a `Value`'s prints what the object renders as).
    let Some(object) = value.as_object() else {
        return false;
    };
    let mut prefix = Prefix(String::new());
    let _ = fmt::write(&mut prefix, format_args!("{object:?}"));
    prefix.0 == NAME
}

impl Budget {
    /// Refuses to store a value that holds a namespace in a namespace: that is the only way
    /// a template can make a reference cycle (`{% set ns.me = [ns] %}`), which minijinja
    /// never frees, so a template could leak memory on every request.
    fn check_store(&self, value: &Value) -> Result<(), MjError> {
        let mut todo = vec![value.clone()];
        while let Some(v) = todo.pop() {
            if self
                .visits_left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| l.checked_sub(1))
                .is_err()
            {
                return Err(self.refuse(format!(
                    "the values stored in namespaces exceed the {MAX_STORE_VISITS} a chat \
                     template may store while rendering"
                )));
            }
            if is_namespace(&v) {
                return Err(self.refuse(
                    "a namespace cannot be stored in a namespace in a chat template (the \
                     reference cycle would never be freed)"
                        .into(),
                ));
            }
            match v.kind() {
                minijinja::value::ValueKind::Seq => todo.extend(v.try_iter().into_iter().flatten()),
                minijinja::value::ValueKind::Map => {
                    if let Ok(keys) = v.try_iter() {
                        todo.extend(keys.filter_map(|k| v.get_item(&k).ok()));
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Which checks a guard runs; each is called with the operands of the instruction it
/// guards, and returns them for that instruction to use.
#[derive(Clone, Copy, Debug)]
enum Check {
    Concat,
    Add,
    Mul,
    /// `{% set ns.attr = value %}`: no namespace inside `value`.
    SetAttr,
    Filter(Grows),
}

/// The filters that can return more than they are given, and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Grows {
    /// `join(sep)`: the items and a separator between each two.
    Join,
    /// `replace(old, new[, count])`.
    Replace,
    /// `center(width)`, `indent(width)`, `wordwrap(width)` …: integers arguments are widths.
    Width,
    /// `tojson`, `pprint`, `string`, `list` …: about the size of what they print.
    Print,
    /// `format`: what its arguments print, padded to the widths its format string names.
    Format,
}

fn grows(filter: &str) -> Option<Grows> {
    Some(match filter {
        "join" => Grows::Join,
        "replace" => Grows::Replace,
        "center" | "indent" | "wordwrap" | "truncate" | "batch" | "slice" => Grows::Width,
        "tojson" | "pprint" | "string" | "list" | "urlencode" | "dictsort" | "items" | "escape"
        | "e" => Grows::Print,
        "format" => Grows::Format,
        _ => return None,
    })
}

/// The global function a guard is called as (a `&'static str`: instructions name their
/// functions by the template source's lifetime).
fn guard_name(check: Check) -> &'static str {
    match check {
        Check::Concat => "__mixtral_guard_concat",
        Check::Add => "__mixtral_guard_add",
        Check::Mul => "__mixtral_guard_mul",
        Check::SetAttr => "__mixtral_guard_set_attr",
        Check::Filter(Grows::Join) => "__mixtral_guard_join",
        Check::Filter(Grows::Replace) => "__mixtral_guard_replace",
        Check::Filter(Grows::Width) => "__mixtral_guard_width",
        Check::Filter(Grows::Print) => "__mixtral_guard_print",
        Check::Filter(Grows::Format) => "__mixtral_guard_format",
    }
}

const CHECKS: [Check; 9] = [
    Check::Concat,
    Check::Add,
    Check::Mul,
    Check::SetAttr,
    Check::Filter(Grows::Join),
    Check::Filter(Grows::Replace),
    Check::Filter(Grows::Width),
    Check::Filter(Grows::Print),
    Check::Filter(Grows::Format),
];

/// A guard as a callable object: objects receive their arguments as they are (keyword
/// arguments included, unconsumed), so the guarded instruction gets them back unchanged.
#[derive(Debug)]
struct Guard {
    check: Check,
    budget: Arc<Budget>,
}

impl Object for Guard {
    fn call(self: &Arc<Self>, _: &State<'_, '_>, args: &[Value]) -> Result<Value, MjError> {
        let cap = self.budget.limits.max_output_bytes;
        match (self.check, args) {
            (Check::Concat, [a, b]) => {
                let len = display_len(a, cap).saturating_add(display_len(b, cap));
                self.budget.charge_value(len)?;
            }
            (Check::Add, [a, b]) => {
                if let (Some(x), Some(y)) = (a.as_str(), b.as_str()) {
                    self.budget.charge_value(x.len().saturating_add(y.len()))?;
                } else if let (Some(x), Some(y)) = (seq_len(a), seq_len(b)) {
                    self.budget
                        .charge_value(x.saturating_add(y).saturating_mul(WORD))?;
                }
            }
            (Check::Mul, [a, b]) => {
                let (value, n) = match a.as_usize() {
                    Some(n) => (b, n),
                    None => (a, b.as_usize().unwrap_or(0)),
                };
                if let Some(s) = value.as_str() {
                    self.budget.charge_value(s.len().saturating_mul(n))?;
                } else if let Some(len) = seq_len(value) {
                    self.budget
                        .charge_value(len.saturating_mul(n).saturating_mul(WORD))?;
                }
            }
            (Check::SetAttr, [value, _namespace]) => self.budget.check_store(value)?,
            (Check::Filter(grows), args) => self.check_filter(grows, args)?,
            _ => {}
        }
        // Back in an order `UnpackList` restores (it reverses what it pushes).
        Ok(Value::from(args.iter().rev().cloned().collect::<Vec<_>>()))
    }
}

impl Guard {
    fn check_filter(&self, grows: Grows, args: &[Value]) -> Result<(), MjError> {
        let cap = self.budget.limits.max_output_bytes;
        let printed = |v: &Value| display_len(v, cap);
        let input = args.first().map_or(0, printed);
        let estimate = match grows {
            Grows::Join => {
                let items = args.first().and_then(Value::len).unwrap_or(0);
                let sep = args.get(1).map_or(0, printed);
                input.saturating_add(items.saturating_mul(sep))
            }
            Grows::Replace => {
                let count = match (args.first().and_then(Value::as_str), args.get(1)) {
                    (Some(s), Some(old)) => match old.as_str() {
                        Some("") => s.chars().count() + 1,
                        Some(old) => s.matches(old).count(),
                        None => 0,
                    },
                    _ => 0,
                };
                let new = args.get(2).map_or(0, printed);
                input.saturating_add(count.saturating_mul(new))
            }
            Grows::Width => {
                let lines = args
                    .first()
                    .and_then(Value::as_str)
                    .map_or(1, |s| s.lines().count() + 1);
                let width = args[1.min(args.len())..]
                    .iter()
                    .filter_map(Value::as_usize)
                    .max()
                    .unwrap_or(0);
                input.saturating_add(lines.saturating_mul(width))
            }
            // Printing escapes and indents: a few times what the input prints as.
            Grows::Print => args.iter().map(printed).sum::<usize>().saturating_mul(6),
            Grows::Format => {
                let widths = args
                    .first()
                    .and_then(Value::as_str)
                    .map_or(0, format_widths);
                args.iter()
                    .map(printed)
                    .sum::<usize>()
                    .saturating_add(widths)
            }
        };
        self.budget.charge_value(estimate)
    }
}

/// An upper bound on the padding a format string (`%10s`, `{:>10}`) adds: the sum of every
/// number written in it (each width or precision is one of them).
fn format_widths(format: &str) -> usize {
    format
        .split(|c: char| !c.is_ascii_digit())
        .filter(|run| !run.is_empty())
        .map(|run| run.parse::<usize>().unwrap_or(usize::MAX))
        .fold(0, usize::saturating_add)
}

/// Checks a string method before minijinja-contrib's Python compatibility layer runs it:
/// `center`, `ljust`, `rjust`, `zfill` (widths), `replace`, `join` and `format`.
pub(crate) fn check_method(
    budget: &Budget,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<(), MjError> {
    let cap = budget.limits.max_output_bytes;
    let Some(s) = value.as_str() else {
        return Ok(());
    };
    let estimate = match method {
        "center" | "ljust" | "rjust" | "zfill" | "expandtabs" => {
            let width = args.iter().filter_map(Value::as_usize).max().unwrap_or(0);
            s.len()
                .saturating_add(width.saturating_mul(s.lines().count() + 1))
        }
        "replace" => {
            let count = match args.first().and_then(Value::as_str) {
                Some("") => s.chars().count() + 1,
                Some(old) => s.matches(old).count(),
                None => 0,
            };
            let new = args.get(1).map_or(0, |v| display_len(v, cap));
            s.len().saturating_add(count.saturating_mul(new))
        }
        "join" => {
            let items = args.first().and_then(Value::len).unwrap_or(0);
            let printed = args.first().map_or(0, |v| display_len(v, cap));
            printed.saturating_add(items.saturating_mul(s.len()))
        }
        "format" => args
            .iter()
            .map(|v| display_len(v, cap))
            .sum::<usize>()
            .saturating_add(s.len())
            .saturating_add(format_widths(s)),
        _ => return Ok(()),
    };
    budget.charge_value(estimate)
}

/// Registers the guards the patched instructions call.
pub(crate) fn add_guards(env: &mut minijinja::Environment<'_>, budget: &Arc<Budget>) {
    for check in CHECKS {
        let guard = Guard {
            check,
            budget: budget.clone(),
        };
        env.add_global(guard_name(check), Value::from_object(guard));
    }
}

/// Emits every value through the output budget (raw text too, once [`patch`] routes it
/// here): the output is capped where it is written.
pub(crate) fn formatter(
    budget: Arc<Budget>,
) -> impl Fn(&mut minijinja::Output, &State, &Value) -> Result<(), MjError> + Send + Sync {
    move |out, state, value| {
        struct Capped<'a, 'o> {
            out: &'a mut minijinja::Output<'o>,
            budget: &'a Budget,
            err: Option<MjError>,
        }
        impl fmt::Write for Capped<'_, '_> {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                let left = &self.budget.output_left;
                if let Err(e) = self.budget.take(left, s.len(), "the rendered text") {
                    self.err = Some(e);
                    return Err(fmt::Error);
                }
                self.out.write_str(s)
            }
        }
        if state.auto_escape() != minijinja::AutoEscape::None {
            // Escaping grows text at most six times (`&` to `&amp;`…): charge that first.
            let len = display_len(value, budget.limits.max_output_bytes);
            budget.take(
                &budget.output_left,
                len.saturating_mul(6),
                "the rendered text",
            )?;
            return minijinja::escape_formatter(out, state, value);
        }
        let mut capped = Capped {
            out,
            budget: &budget,
            err: None,
        };
        match fmt::write(&mut capped, format_args!("{value}")) {
            Ok(()) => Ok(()),
            Err(_) => Err(capped
                .err
                .unwrap_or_else(|| MjError::from(ErrorKind::WriteFailure))),
        }
    }
}

/// Routes the instructions that build values or emit raw text through the guards: each is
/// replaced by a jump to a stretch appended after the code (which now ends in `Return`, so
/// it cannot run into them) that calls the guard, restores the operands, runs the original
/// instruction and jumps back.
pub(crate) fn patch(code: &mut Instructions<'_>) {
    let n = code.len() as u32;
    code.add(Instruction::Return);
    for i in 0..n {
        let Some(original) = code.get(i).cloned() else {
            continue;
        };
        // An instruction that builds a value: its guard takes the operands and gives them
        // back (`UnpackList` restores them), then the instruction runs.
        let guarded = |check: Check, arity: u16| {
            vec![
                Instruction::CallFunction(guard_name(check), Some(arity)),
                Instruction::UnpackList(arity as usize),
                original.clone(),
            ]
        };
        let stretch = match &original {
            Instruction::StringConcat => guarded(Check::Concat, 2),
            Instruction::Add => guarded(Check::Add, 2),
            Instruction::Mul => guarded(Check::Mul, 2),
            Instruction::SetAttr(_) => guarded(Check::SetAttr, 2),
            Instruction::ApplyFilter(name, Some(arity), _) => match grows(name) {
                Some(g) => guarded(Check::Filter(g), *arity),
                None => continue,
            },
            // Splatted arguments (`f(*args)`): the count is on the stack; refuse growing
            // filters called so rather than guess.
            Instruction::ApplyFilter(name, None, _) if grows(name).is_some() => vec![
                Instruction::LoadConst(Value::from(format!(
                    "filter {name} with splatted arguments is not allowed in a chat template"
                ))),
                Instruction::CallFunction("raise_exception", Some(1)),
            ],
            Instruction::EmitRaw(text) => vec![
                Instruction::LoadConst(Value::from(*text)),
                Instruction::Emit,
            ],
            _ => continue,
        };
        let line = code.get_line(i).unwrap_or(0).min(u16::MAX as usize) as u16;
        let start = code.len() as u32;
        if let Some(slot) = code.get_mut(i) {
            *slot = Instruction::Jump(start);
        }
        for instruction in stretch {
            code.add_with_line(instruction, line);
        }
        code.add(Instruction::Jump(i + 1));
    }
}
