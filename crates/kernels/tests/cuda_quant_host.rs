//! The CUDA block decoders (`kernels/quant.cuh`), compiled for the host with the system's C++
//! compiler and checked bit for bit against `dequant::reference` (ggml's arithmetic) on random
//! blocks: every quant bit, packed scale and sign pattern, at several row lengths. This runs
//! the GPU's decoding code without a GPU: the kernels add only loads, the bf16 activations and
//! the f32 sums around it (checked by `cuda_ops` on a device).
//!
//! Without a C++ compiler (`$CXX`, else `c++`) it prints why it is skipped and passes, unless
//! `MIXTRAL_REQUIRE_CXX` is set (CI sets it).

use mixtral_kernels::dequant::{dequantize, random_blocks};
use mixtral_tensor::DType;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Builds `tests/host/quant_check.cpp` against `cuda/quant.cuh`; `None` (printed) without a
/// compiler.
fn build(dir: &Path) -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let exe = dir.join("quant_check");
    let status = Command::new(&cxx)
        .args(["-std=c++17", "-O1", "-ffp-contract=off", "-Wall", "-Werror"])
        .args(["-Wno-unknown-pragmas", "-I"])
        .arg(root.join("cuda"))
        .arg(root.join("tests/host/quant_check.cpp"))
        .arg("-o")
        .arg(&exe)
        .status();
    match status {
        Ok(s) if s.success() => Some(exe),
        Ok(s) => panic!("{cxx} failed to compile quant.cuh for the host: {s}"),
        Err(e) if std::env::var_os("MIXTRAL_REQUIRE_CXX").is_some() => {
            panic!("MIXTRAL_REQUIRE_CXX is set but `{cxx}` did not run: {e}")
        }
        Err(e) => {
            eprintln!("skipped: no C++ compiler `{cxx}` ({e})");
            None
        }
    }
}

/// The host build's values for `rows` rows of `k` values in `bytes`.
fn decode(exe: &Path, name: &str, rows: usize, k: usize, bytes: &[u8]) -> Vec<f32> {
    let mut child = Command::new(exe)
        .args([name, &rows.to_string(), &k.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run quant_check");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(bytes)
        .expect("write blocks");
    let out = child.wait_with_output().expect("quant_check output");
    assert!(out.status.success(), "quant_check {name}: {}", out.status);
    out.stdout
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
        .collect()
}

#[test]
fn quant_cuh_decodes_every_type_like_the_reference() {
    let dir = std::env::temp_dir().join(format!("mixtral-quant-host-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let Some(exe) = build(&dir) else { return };
    let types = [
        (DType::Q8_0, "q80"),
        (DType::Q4_0, "q40"),
        (DType::Q4_K, "q4k"),
        (DType::Q5_K, "q5k"),
        (DType::Q6_K, "q6k"),
    ];
    for (dtype, name) in types {
        for (seed, rows, blocks_per_row) in [(1, 1, 1), (2, 3, 2), (3, 5, 7)] {
            let k = blocks_per_row * dtype.block_len();
            let bytes = random_blocks(dtype, rows * blocks_per_row, seed, 2.0).expect("a type");
            let mut want = vec![0f32; rows * k];
            dequantize(dtype, &bytes, &mut want);
            let got = decode(&exe, name, rows, k, &bytes);
            assert_eq!(got.len(), want.len(), "{dtype}");
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(
                    g.to_bits(),
                    w.to_bits(),
                    "{dtype} seed {seed}: value {i} (row {}, column {}) is {g}, reference {w}",
                    i / k,
                    i % k
                );
            }
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}
