//! Reading the resource report of `ptxas -v` and the SASS listing of `cuobjdump -sass`.

/// What ptxas reports for one entry point on one architecture.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Kernel name.
    pub name: String,
    /// Registers per thread.
    pub registers: u32,
    /// Static shared memory per block, bytes (dynamic shared memory is not known to ptxas).
    pub smem: u32,
    /// Stack frame per thread, bytes.
    pub stack: u32,
    /// Bytes of register spill stores per thread.
    pub spill_stores: u32,
    /// Bytes of register spill loads per thread.
    pub spill_loads: u32,
}

impl Usage {
    /// Any spill, in either direction.
    pub fn spills(&self) -> bool {
        self.spill_stores > 0 || self.spill_loads > 0
    }
}

/// The number just before `unit` in `line` (`"… 40 registers …"`, unit `"registers"`).
fn number_before(line: &str, unit: &str) -> Option<u32> {
    let words: Vec<&str> = line.split([' ', ',']).filter(|w| !w.is_empty()).collect();
    let at = words.iter().position(|w| *w == unit)?;
    words.get(at.checked_sub(1)?)?.parse().ok()
}

/// Parses `ptxas -v` output (stderr) into one [`Usage`] per entry function, in report order.
///
/// ```text
/// ptxas info    : Compiling entry function 'rmsnorm_bf16' for 'sm_80'
/// ptxas info    : Function properties for rmsnorm_bf16
///     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
/// ptxas info    : Used 18 registers, used 1 barriers, 128 bytes smem, 380 bytes cmem[0]
/// ```
pub fn parse_verbose(log: &str) -> Vec<Usage> {
    let mut out: Vec<Usage> = Vec::new();
    // Whose "Function properties" the next stack/spill line describes: the entry itself, or a
    // device function it calls (whose spills count against the entry, its stack does not).
    let mut props_of_entry = false;
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or_default();
            out.push(Usage {
                name: name.to_owned(),
                ..Usage::default()
            });
            continue;
        }
        let Some(cur) = out.last_mut() else { continue };
        if let Some(name) = line.split("Function properties for ").nth(1) {
            props_of_entry = name.trim() == cur.name;
        } else if line.contains("stack frame") {
            if props_of_entry {
                cur.stack = number_before(line, "bytes").unwrap_or(0);
            }
            for p in line.split(',') {
                if p.contains("spill stores") {
                    cur.spill_stores += number_before(p, "bytes").unwrap_or(0);
                } else if p.contains("spill loads") {
                    cur.spill_loads += number_before(p, "bytes").unwrap_or(0);
                }
            }
        } else if line.contains("Used") && line.contains("registers") {
            cur.registers = number_before(line, "registers").unwrap_or(0);
            for p in line.split(',') {
                if p.trim_end().ends_with("smem") {
                    cur.smem = number_before(p, "bytes").unwrap_or(0);
                }
            }
        }
    }
    out
}

/// The SASS of each function in a `cuobjdump -sass` listing: `(name, instructions)`.
pub fn sass_functions(listing: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in listing.lines() {
        if let Some(name) = line.trim().strip_prefix("Function : ") {
            out.push((name.trim().to_owned(), String::new()));
        } else if let Some((_, body)) = out.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_ptxas_report() {
        let log = "ptxas info    : 0 bytes gmem\n\
            ptxas info    : Compiling entry function 'a_bf16' for 'sm_80'\n\
            ptxas info    : Function properties for a_bf16\n    \
            8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads\n\
            ptxas info    : Used 40 registers, used 1 barriers, 30720 bytes smem, 380 bytes cmem[0]\n\
            ptxas info    : Compiling entry function 'b_f32' for 'sm_80'\n\
            ptxas info    : Function properties for b_f32\n    \
            0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
            ptxas info    : Used 9 registers, used 0 barriers, 372 bytes cmem[0]\n\
            ptxas info    : Function properties for __internal_accurate_pow\n    \
            16 bytes stack frame, 0 bytes spill stores, 4 bytes spill loads\n";
        let u = parse_verbose(log);
        assert_eq!(
            u[0],
            Usage {
                name: "a_bf16".into(),
                registers: 40,
                smem: 30720,
                stack: 8,
                spill_stores: 4,
                spill_loads: 12
            }
        );
        assert!(u[0].spills());
        // A callee's spills count against the entry that calls it; its stack does not.
        assert_eq!((u[1].registers, u[1].smem, u[1].stack), (9, 0, 0));
        assert_eq!((u[1].spill_stores, u[1].spill_loads), (0, 4));
    }

    #[test]
    fn splits_a_sass_listing_by_function() {
        let l = "\tcode for sm_80\n\t\tFunction : f_bf16\n\t/*0000*/ HMMA.16816.F32.BF16 R0;\n\
                 \t\tFunction : g_f32\n\t/*0000*/ FFMA R1;\n";
        let f = sass_functions(l);
        assert_eq!(f.len(), 2);
        assert!(f[0].1.contains("HMMA") && !f[1].1.contains("HMMA"));
    }
}
