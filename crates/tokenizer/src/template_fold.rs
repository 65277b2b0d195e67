//! Bounding what minijinja computes while *compiling* a template.
//!
//! minijinja folds constant expressions when it compiles: `{{ 'x' * 100000000 }}` becomes a
//! 100 MB constant before any conversation is rendered, and a tree of such products
//! concatenated reaches gigabytes. No render-time guard sees that, so the parsed template is
//! measured first: every expression minijinja would fold is sized (an upper bound, from the
//! sizes of its literals and the integers they are multiplied by), and a template whose
//! folded constants together pass [`MAX_FOLDED_BYTES`] is refused before it is compiled.

use minijinja::machinery::ast::{BinOpKind, CallArg, Expr, Macro, Stmt};

/// The most bytes a template's folded constants may take together.
pub(crate) const MAX_FOLDED_BYTES: u128 = 4 << 20;

/// Bytes charged per element of a list (so `[0] * n` counts as n words).
const WORD: u128 = 16;

/// What folding a constant expression costs: its value's size, the largest value made on
/// the way (upper bounds, in bytes), and whether the value is a scalar (a number, a bool).
#[derive(Clone, Copy)]
struct Info {
    size: u128,
    peak: u128,
    scalar: bool,
}

impl Info {
    fn scalar(peak: u128) -> Info {
        Info {
            size: WORD,
            peak: peak.max(WORD),
            scalar: true,
        }
    }

    fn sized(size: u128, peak: u128) -> Info {
        Info {
            size,
            peak: peak.max(size),
            scalar: false,
        }
    }
}

/// The largest scalar expression folded to learn a repetition count (cheap to fold).
const SMALL: u128 = 1 << 10;

/// What minijinja folding `expr` costs (whenever `Expr::as_const` is `Some`), or `None`
/// when it is not constant.
fn const_info(expr: &Expr<'_>) -> Option<Info> {
    let items = |exprs: &mut dyn Iterator<Item = &Expr<'_>>| -> Option<Info> {
        let (mut size, mut peak) = (0u128, 0u128);
        for e in exprs {
            let i = const_info(e)?;
            size = size.saturating_add(i.size).saturating_add(WORD);
            peak = peak.max(i.peak);
        }
        Some(Info::sized(size, peak))
    };
    Some(match expr {
        Expr::Const(c) => match c.value.as_str() {
            Some(s) => Info::sized(s.len() as u128, 0),
            None => Info::scalar(0),
        },
        // minijinja folds a list or map only when every item is a literal.
        Expr::List(l) if l.items.iter().all(|i| matches!(i, Expr::Const(_))) => {
            items(&mut l.items.iter())?
        }
        Expr::Map(m)
            if m.keys
                .iter()
                .chain(&m.values)
                .all(|i| matches!(i, Expr::Const(_))) =>
        {
            items(&mut m.keys.iter().chain(&m.values))?
        }
        Expr::UnaryOp(u) => Info::scalar(const_info(&u.expr)?.peak),
        Expr::Compare(c) => {
            let first = const_info(&c.expr)?.peak;
            let rest = items(&mut c.ops.iter().map(|op| &op.expr))?.peak;
            Info::scalar(first.max(rest))
        }
        Expr::BinOp(b) => {
            let (l, r) = (const_info(&b.left)?, const_info(&b.right)?);
            let peak = l.peak.max(r.peak);
            match b.op {
                BinOpKind::Mul if l.scalar && r.scalar => Info::scalar(peak),
                BinOpKind::Mul => {
                    // A string or list times a count: the count is a scalar, folded here
                    // only when that is cheap; otherwise assume the worst.
                    let (repeated, count) = if l.scalar {
                        (r, &b.left)
                    } else {
                        (l, &b.right)
                    };
                    let n = match const_info(count) {
                        Some(c) if c.scalar && c.peak <= SMALL => count
                            .as_const()
                            .and_then(|v| v.as_usize())
                            .map_or(1, |n| n as u128),
                        _ => u128::MAX,
                    };
                    Info::sized(repeated.size.saturating_mul(n), peak)
                }
                BinOpKind::Add if l.scalar && r.scalar => Info::scalar(peak),
                BinOpKind::Add | BinOpKind::Concat => {
                    Info::sized(l.size.saturating_add(r.size), peak)
                }
                BinOpKind::ScAnd | BinOpKind::ScOr => Info {
                    size: l.size.max(r.size),
                    peak,
                    scalar: l.scalar && r.scalar,
                },
                _ => Info::scalar(peak),
            }
        }
        _ => return None,
    })
}

/// Sums the folded constants of a parsed template.
#[derive(Default)]
struct Folded {
    bytes: u128,
}

impl Folded {
    fn expr(&mut self, expr: &Expr<'_>) {
        // What minijinja folds is the outermost constant expression: count it, whole.
        if let Some(info) = const_info(expr) {
            self.bytes = self.bytes.saturating_add(info.peak);
            return;
        }
        match expr {
            Expr::Slice(s) => {
                self.expr(&s.expr);
                for e in [&s.start, &s.stop, &s.step].into_iter().flatten() {
                    self.expr(e);
                }
            }
            Expr::UnaryOp(u) => self.expr(&u.expr),
            Expr::BinOp(b) => {
                self.expr(&b.left);
                self.expr(&b.right);
            }
            Expr::Compare(c) => {
                self.expr(&c.expr);
                c.ops.iter().for_each(|op| self.expr(&op.expr));
            }
            Expr::IfExpr(i) => {
                self.expr(&i.test_expr);
                self.expr(&i.true_expr);
                self.opt(&i.false_expr);
            }
            Expr::Filter(f) => {
                self.opt(&f.expr);
                self.args(&f.args);
            }
            Expr::Test(t) => {
                self.expr(&t.expr);
                self.args(&t.args);
            }
            Expr::GetAttr(g) => self.expr(&g.expr),
            Expr::GetItem(g) => {
                self.expr(&g.expr);
                self.expr(&g.subscript_expr);
            }
            Expr::Call(c) => {
                self.expr(&c.expr);
                self.args(&c.args);
            }
            Expr::List(l) => l.items.iter().for_each(|e| self.expr(e)),
            Expr::Map(m) => m.keys.iter().chain(&m.values).for_each(|e| self.expr(e)),
            Expr::Var(_) | Expr::Const(_) => {}
        }
    }

    fn opt(&mut self, expr: &Option<Expr<'_>>) {
        if let Some(e) = expr {
            self.expr(e);
        }
    }

    fn args(&mut self, args: &[CallArg<'_>]) {
        for arg in args {
            match arg {
                CallArg::Pos(e)
                | CallArg::Kwarg(_, e)
                | CallArg::PosSplat(e)
                | CallArg::KwargSplat(e) => self.expr(e),
            }
        }
    }

    fn macro_decl(&mut self, m: &Macro<'_>) {
        m.args.iter().chain(&m.defaults).for_each(|e| self.expr(e));
        self.body(&m.body);
    }

    fn body(&mut self, stmts: &[Stmt<'_>]) {
        stmts.iter().for_each(|s| self.stmt(s));
    }

    fn stmt(&mut self, stmt: &Stmt<'_>) {
        match stmt {
            Stmt::Template(t) => self.body(&t.children),
            Stmt::EmitExpr(e) => self.expr(&e.expr),
            Stmt::ForLoop(f) => {
                self.expr(&f.target);
                self.expr(&f.iter);
                self.opt(&f.filter_expr);
                self.body(&f.body);
                self.body(&f.else_body);
            }
            Stmt::IfCond(i) => {
                self.expr(&i.expr);
                self.body(&i.true_body);
                self.body(&i.false_body);
            }
            Stmt::WithBlock(w) => {
                for (target, value) in &w.assignments {
                    self.expr(target);
                    self.expr(value);
                }
                self.body(&w.body);
            }
            Stmt::Set(s) => {
                self.expr(&s.target);
                self.expr(&s.expr);
            }
            Stmt::SetBlock(s) => {
                self.expr(&s.target);
                self.opt(&s.filter);
                self.body(&s.body);
            }
            Stmt::AutoEscape(a) => {
                self.expr(&a.enabled);
                self.body(&a.body);
            }
            Stmt::FilterBlock(f) => {
                self.expr(&f.filter);
                self.body(&f.body);
            }
            Stmt::Block(b) => self.body(&b.body),
            Stmt::Import(i) => {
                self.expr(&i.expr);
                self.expr(&i.name);
            }
            Stmt::FromImport(f) => {
                self.expr(&f.expr);
                for (name, alias) in &f.names {
                    self.expr(name);
                    self.opt(alias);
                }
            }
            Stmt::Extends(e) => self.expr(&e.name),
            Stmt::Include(i) => self.expr(&i.name),
            Stmt::Macro(m) => self.macro_decl(m),
            Stmt::CallBlock(c) => {
                self.expr(&c.call.expr);
                self.args(&c.call.args);
                self.macro_decl(&c.macro_decl);
            }
            Stmt::Do(d) => {
                self.expr(&d.call.expr);
                self.args(&d.call.args);
            }
            // Raw text, `continue`, `break`: no expression.
            #[allow(unreachable_patterns)]
            _ => {}
        }
    }
}

/// The bytes minijinja would fold into constants compiling `ast` (an upper bound).
pub(crate) fn folded_bytes(ast: &Stmt<'_>) -> u128 {
    let mut folded = Folded::default();
    folded.stmt(ast);
    folded.bytes
}
