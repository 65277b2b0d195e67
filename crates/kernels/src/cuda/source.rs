//! The CUDA kernel sources, embedded with `include_str!` from the crate's `cuda/` folder (the
//! repository's top-level `kernels/` links to it, where contributors look for them), so the
//! crate's package carries them.

/// One kernel file: its name under `kernels/` and its text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Source {
    /// File name under `kernels/`, e.g. `"rmsnorm.cu"`.
    pub file: &'static str,
    /// The file's text, without [`COMMON`].
    pub code: &'static str,
}

impl Source {
    /// The op family: the file name without `.cu`; every entry point starts with it and `_`.
    pub fn family(&self) -> &'static str {
        self.file.strip_suffix(".cu").unwrap_or(self.file)
    }

    /// Names of the `extern "C" __global__` entry points, in source order.
    pub fn entry_points(&self) -> Vec<&'static str> {
        entry_points(self.code)
    }

    /// The full text NVRTC compiles: [`COMMON`], [`QUANT`], then this file, each behind a
    /// `#line` directive so compile errors name the right file and line.
    pub fn nvrtc_source(&self) -> String {
        format!(
            "#line 1 \"common.cuh\"\n{COMMON}\n#line 1 \"quant.cuh\"\n{QUANT}\n#line 1 \"{}\"\n{}",
            self.file, self.code
        )
    }
}

/// Embeds `kernels/$f` as a [`Source`].
macro_rules! cu {
    ($f:literal) => {
        Source {
            file: $f,
            code: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/cuda/", $f)),
        }
    };
}

/// `kernels/common.cuh`: bf16 helpers, reductions, cp.async and the bf16 MMA, prepended to
/// every source.
pub const COMMON: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/cuda/common.cuh"));

/// `kernels/quant.cuh`: GGUF blocks decoded eight values at a time, prepended after
/// [`COMMON`] (the host test `tests/cuda_quant_host.rs` compiles it on its own too).
pub const QUANT: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/cuda/quant.cuh"));

/// Every kernel file, one per op family.
pub const ALL: &[Source] = &[
    cu!("embedding.cu"),
    cu!("rmsnorm.cu"),
    cu!("rope.cu"),
    cu!("router.cu"),
    cu!("moe.cu"),
    cu!("matmul.cu"),
    cu!("attention.cu"),
    cu!("argmax.cu"),
    cu!("add.cu"),
];

/// Options every NVRTC compile passes besides the architecture (xtask and the launcher alike).
pub const NVRTC_OPTIONS: &[&str] = &["--std=c++17"];

/// The source named `file` (e.g. `"moe.cu"`).
pub fn find(file: &str) -> Option<&'static Source> {
    ALL.iter().find(|s| s.file == file)
}

/// Element types an entry point name may end with: floats, indices, and the GGUF block types
/// kept on the device (Q8_0, Q4_0, Q4_K, Q5_K, Q6_K).
pub const DTYPES: &[&str] = &[
    "bf16", "f16", "f32", "u32", "q80", "q40", "q4k", "q5k", "q6k",
];

/// Names of the functions declared `extern "C" __global__` in `code`, in source order. The
/// marker counts only at the start of a line (so comments mentioning it are ignored); the
/// declaration may span lines and carry `__launch_bounds__(…)` before the name.
pub fn entry_points(code: &str) -> Vec<&str> {
    const MARKER: &str = "extern \"C\" __global__";
    let mut names = Vec::new();
    let mut at = 0;
    while let Some(i) = code[at..].find(MARKER).map(|i| at + i) {
        at = i + MARKER.len();
        let line_start = code[..i].rfind('\n').map_or(0, |n| n + 1);
        if !code[line_start..i].trim().is_empty() {
            continue;
        }
        let mut rest = code[at..].trim_start();
        loop {
            if let Some(r) = rest.strip_prefix("void") {
                rest = r.trim_start();
            } else if let Some(r) = rest.strip_prefix("__launch_bounds__") {
                rest = r.find(')').map_or("", |c| r[c + 1..].trim_start());
            } else {
                break;
            }
        }
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if end > 0 {
            names.push(&rest[..end]);
        }
    }
    names
}

/// Whether `name` follows `<family>_<variant…>_<dtype>`: lowercase snake case, starting with
/// the file's family, ending with one of [`DTYPES`], variants optional.
pub fn follows_naming_rule(family: &str, name: &str) -> bool {
    let Some(rest) = name.strip_prefix(family).and_then(|r| r.strip_prefix('_')) else {
        return false;
    };
    let parts: Vec<&str> = rest.split('_').collect();
    let words_ok = parts.iter().all(|p| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    });
    words_ok && parts.last().is_some_and(|d| DTYPES.contains(d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::Path;

    #[test]
    fn every_cu_file_on_disk_is_listed() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("cuda");
        let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
            .expect("cuda/ folder")
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|n| n.ends_with(".cu"))
            .collect();
        let listed: BTreeSet<String> = ALL.iter().map(|s| s.file.to_owned()).collect();
        assert_eq!(on_disk, listed, "kernels/*.cu vs cuda::source::ALL");
    }

    #[test]
    fn entry_points_follow_the_naming_rule_and_are_unique() {
        let mut seen = BTreeSet::new();
        for s in ALL {
            let names = s.entry_points();
            assert!(!names.is_empty(), "{}: no extern \"C\" __global__", s.file);
            for n in names {
                assert!(
                    follows_naming_rule(s.family(), n),
                    "{}: `{n}` is not `{}_<variant>_<dtype>` with dtype in {DTYPES:?}",
                    s.file,
                    s.family()
                );
                assert!(seen.insert(n), "{}: `{n}` is defined twice", s.file);
            }
        }
    }

    #[test]
    fn every_file_opens_with_a_header_naming_its_reference_twin() {
        for s in ALL {
            assert!(s.code.starts_with("//"), "{}: no header comment", s.file);
            let header: String = s.code.lines().take_while(|l| l.starts_with("//")).collect();
            assert!(
                header.contains("Reference twin: ") && header.contains("mixtral_"),
                "{}: the header names no reference twin",
                s.file
            );
        }
    }

    #[test]
    fn nvrtc_source_prepends_common_and_needs_no_includes() {
        let text = ALL[0].nvrtc_source();
        assert!(text.starts_with("#line 1 \"common.cuh\"\n"));
        assert!(text.contains(COMMON) && text.contains(QUANT) && text.ends_with(ALL[0].code));
        let includes = |code: &str| code.lines().any(|l| l.trim_start().starts_with("#include"));
        for s in ALL {
            assert!(!includes(s.code), "{}: #include needs a path", s.file);
        }
        assert!(!includes(COMMON), "common.cuh: #include needs a path");
        assert!(!includes(QUANT), "quant.cuh: #include needs a path");
    }

    #[test]
    fn naming_rule_examples() {
        assert!(follows_naming_rule("rmsnorm", "rmsnorm_bf16"));
        assert!(follows_naming_rule("moe", "moe_gemm_swiglu_bf16"));
        assert!(!follows_naming_rule("moe", "moe_gemm"));
        assert!(!follows_naming_rule("moe", "rmsnorm_bf16"));
        assert!(!follows_naming_rule("moe", "moe_Gemm_bf16"));
        assert!(!follows_naming_rule("moe", "moe__bf16"));
        assert_eq!(
            entry_points("extern \"C\" __global__ void __launch_bounds__(128) a_f32(int x)\n"),
            ["a_f32"]
        );
        assert_eq!(
            entry_points("  extern \"C\" __global__ void b_bf16(\n"),
            ["b_bf16"]
        );
        let two_lines = "extern \"C\" __global__ void __launch_bounds__(256)\nc_f32(int x) {}\n\
                         // extern \"C\" __global__ void not_me_f32()\n";
        assert_eq!(entry_points(two_lines), ["c_f32"]);
    }
}
