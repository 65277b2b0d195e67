//! `Isa`: the CPU instruction sets the fast kernels can use, detected once at run time.
//!
//! Dispatch follows memchr: detect once, then every fast kernel matches on the [`Isa`] it is
//! handed. The scalar path is always compiled and always tested ([`Isa::available`] lists it
//! on every machine), so a machine without AVX2 runs the same tested code as CI's scalar leg.
//!
//! Soundness rests on one fact: a SIMD variant carries a [`Detected`] token, which only
//! [`Isa::detect`] and [`Isa::available`] can create, and only after the CPU reported the
//! features. Every `unsafe` call into a `#[target_feature]` function cites that token.

use std::fmt;
use std::sync::OnceLock;

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "aarch64")]
pub(crate) mod neon;

/// An instruction set the fast CPU kernels can run with.
///
/// Match on it freely; a SIMD variant can only be obtained from [`Isa::detect`] or
/// [`Isa::available`], never built by hand, because its [`Detected`] field has no public
/// constructor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable Rust; the compiler may auto-vectorise it for the build's baseline target.
    Scalar,
    /// x86-64 with AVX2, FMA and F16C (Haswell / Zen and later).
    #[cfg(target_arch = "x86_64")]
    Avx2Fma(Detected),
    /// x86-64 with all of [`Isa::Avx2Fma`] plus AVX-512 (F, BW, VL, VNNI) and AVX512-BF16
    /// (Cooper Lake, Sapphire Rapids, Zen 4 and later: every CPU with AVX512-BF16 has VNNI).
    /// It adds two kernels, the bf16-activation matmul (`vdpbf16ps`, twice the f32 FMA rate)
    /// and the integer dots of quantized weights (`vpdpbusd`); every other op runs its AVX2
    /// code.
    #[cfg(target_arch = "x86_64")]
    Avx512Bf16(Detected),
    /// aarch64 with Advanced SIMD (every aarch64 CPU: Apple silicon, Graviton, Ampere,
    /// Grace, Cortex-A). 4 f32 lanes per register and 32 registers; every op has a NEON
    /// kernel, the integer dots of quantized weights multiply with `smull` and add pairs
    /// with `sadalp`.
    #[cfg(target_arch = "aarch64")]
    Neon(Detected),
    /// [`Isa::Neon`] plus the dot-product extension (`sdot`: sixteen i8 products summed
    /// four by four into i32 lanes; Apple M1 and later, Graviton 2 and later, Ampere Altra,
    /// Neoverse N1/V1/V2): the integer dots of quantized weights take it, as x86 takes VNNI.
    #[cfg(target_arch = "aarch64")]
    Dotprod(Detected),
    /// [`Isa::Dotprod`] plus the int8 and bf16 matrix multiplies of ARMv8.6, which CPUs have
    /// together (Apple M2 and later, Graviton 3 and later, Grace, Neoverse N2/V1/V2):
    /// `smmla` (a 2×8 by 8×2 i8 product into a 2×2 i32 tile) for the prefill GEMM of
    /// quantized weights, and `bfmmla` (2×4 by 4×2 bf16) for that of bf16 weights at
    /// `Precision::Bf16`; both take two tokens by two weight rows per instruction.
    #[cfg(target_arch = "aarch64")]
    I8mm(Detected),
}

/// Proof that the features of the enclosing [`Isa`] variant were detected on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Detected(());

/// Environment variable that caps the detected ISA at one of [`Isa::available`] by its
/// [`Isa::name`] (`scalar`; `avx2`, `avx512bf16` on x86-64; `neon`, `dotprod`, `i8mm` on
/// aarch64), for debugging and for timing one path against another; other values are
/// ignored.
pub const ISA_ENV: &str = "MIXTRAL_CPU_ISA";

impl Isa {
    /// The best ISA this CPU supports, detected on the first call and cached; capped by
    /// `MIXTRAL_CPU_ISA` (an [`Isa::name`], e.g. `scalar`, `avx2`, `neon`) when set.
    pub fn detect() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| {
            let cap = std::env::var(ISA_ENV)
                .unwrap_or_default()
                .to_ascii_lowercase();
            let all = Isa::available();
            let capped = all.iter().rposition(|isa| isa.name() == cap);
            all[capped.unwrap_or(all.len() - 1)]
        })
    }

    /// Every ISA this CPU can run, scalar first and best last (what the tests iterate over).
    pub fn available() -> Vec<Isa> {
        #[allow(unused_mut)] // only x86-64 and aarch64 push more entries
        let mut all = vec![Isa::Scalar];
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
        {
            all.push(Isa::Avx2Fma(Detected(())));
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx512bf16")
                && std::arch::is_x86_feature_detected!("avx512vnni")
            {
                all.push(Isa::Avx512Bf16(Detected(())));
            }
        }
        #[cfg(target_arch = "aarch64")]
        if std::arch::is_aarch64_feature_detected!("neon") {
            all.push(Isa::Neon(Detected(())));
            if std::arch::is_aarch64_feature_detected!("dotprod") {
                all.push(Isa::Dotprod(Detected(())));
                if std::arch::is_aarch64_feature_detected!("i8mm")
                    && std::arch::is_aarch64_feature_detected!("bf16")
                {
                    all.push(Isa::I8mm(Detected(())));
                }
            }
        }
        all
    }

    /// A short lowercase name (`scalar`, `avx2`, `avx512bf16`), used in benchmark and test
    /// names and by `MIXTRAL_CPU_ISA`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma(_) => "avx2",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Bf16(_) => "avx512bf16",
            #[cfg(target_arch = "aarch64")]
            Isa::Neon(_) => "neon",
            #[cfg(target_arch = "aarch64")]
            Isa::Dotprod(_) => "dotprod",
            #[cfg(target_arch = "aarch64")]
            Isa::I8mm(_) => "i8mm",
        }
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An element type the fast kernels read (weights, and the KV cache): f32, bf16 or f16,
/// widened to f32 on load. Sealed: only these three implement it.
pub trait Elem: Copy + Send + Sync + std::fmt::Debug + sealed::Sealed + 'static {
    /// The element as f32 (exact for all three types).
    fn widen(self) -> f32;

    /// Loads 8 consecutive elements from `p` and widens them to f32 lanes.
    ///
    /// # Safety
    /// `p..p+8` must be readable and the CPU must support AVX2, FMA and F16C (an
    /// `Isa::Avx2Fma` exists); callers are `#[target_feature]` functions, into which this
    /// `#[inline(always)]` body is inlined.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256;

    /// Loads 4 consecutive elements from `p` and widens them to f32 lanes.
    ///
    /// # Safety
    /// `p..p+4` must be readable and the CPU must support NEON (an `Isa::Neon` exists);
    /// callers are `#[target_feature]` functions, into which this body is inlined.
    #[cfg(target_arch = "aarch64")]
    unsafe fn load4(p: *const Self) -> std::arch::aarch64::float32x4_t;
}

mod sealed {
    /// Keeps [`super::Elem`] to the three types the kernels are written for.
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::bf16 {}
    impl Sealed for half::f16 {}
}

impl Elem for f32 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const f32) -> std::arch::x86_64::__m256 {
        // SAFETY: the caller guarantees 8 readable f32s and AVX support.
        unsafe { std::arch::x86_64::_mm256_loadu_ps(p) }
    }

    #[cfg(target_arch = "aarch64")]
    #[inline(always)]
    unsafe fn load4(p: *const f32) -> std::arch::aarch64::float32x4_t {
        // SAFETY: the caller guarantees 4 readable f32s and NEON.
        unsafe { std::arch::aarch64::vld1q_f32(p) }
    }
}

impl Elem for half::bf16 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self.to_f32()
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const half::bf16) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        // SAFETY: the caller guarantees 8 readable bf16s (16 bytes) and AVX2. A bf16 is the
        // top half of an f32, so zero-extending to 32 bits and shifting left by 16 widens it
        // exactly.
        unsafe {
            let h = _mm_loadu_si128(p.cast::<__m128i>());
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
        }
    }

    #[cfg(target_arch = "aarch64")]
    #[inline(always)]
    unsafe fn load4(p: *const half::bf16) -> std::arch::aarch64::float32x4_t {
        use std::arch::aarch64::*;
        // SAFETY: the caller guarantees 4 readable bf16s (8 bytes) and NEON. Widening each
        // u16 to u32 and shifting it into the top half is the exact bf16 → f32 conversion.
        unsafe { vreinterpretq_f32_u32(vshlq_n_u32::<16>(vmovl_u16(vld1_u16(p.cast::<u16>())))) }
    }
}

impl Elem for half::f16 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self.to_f32()
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const half::f16) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        // SAFETY: the caller guarantees 8 readable f16s (16 bytes) and F16C.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast::<__m128i>())) }
    }

    #[cfg(target_arch = "aarch64")]
    #[inline(always)]
    unsafe fn load4(p: *const half::f16) -> std::arch::aarch64::float32x4_t {
        use std::arch::aarch64::*;
        // SAFETY: the caller guarantees 4 readable f16s (8 bytes) and NEON. `fcvtl` is base
        // ARMv8 (no FP16 arithmetic extension needed) and converts exactly, subnormals too.
        // Inline assembly because its intrinsic (`vcvt_f32_f16`) is newer than our MSRV; it
        // touches registers only.
        unsafe {
            let h = vld1_u16(p.cast::<u16>());
            let wide: float32x4_t;
            std::arch::asm!(
                "fcvtl {wide:v}.4s, {h:v}.4h",
                wide = lateout(vreg) wide,
                h = in(vreg) h,
                options(pure, nomem, nostack, preserves_flags)
            );
            wide
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scalar first, then each detected ISA; every aarch64 CPU has NEON. When
    /// `MIXTRAL_EXPECT_ISAS` is set (CI sets it for each CPU model qemu emulates), the list is
    /// exactly that: dispatch falls back as far as the CPU requires, and no further.
    #[test]
    fn available_isas_follow_the_cpu() {
        let names: Vec<_> = Isa::available().iter().map(|i| i.name()).collect();
        println!("isa {}", names.join(","));
        assert_eq!(names[0], "scalar");
        #[cfg(target_arch = "aarch64")]
        assert_eq!(names.get(1), Some(&"neon"), "every aarch64 CPU has NEON");
        if let Ok(want) = std::env::var("MIXTRAL_EXPECT_ISAS") {
            assert_eq!(names.join(","), want, "ISAs detected on this CPU");
        }
    }
}
