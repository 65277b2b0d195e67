//! The seedable random number generator: xoshiro256** seeded through SplitMix64.
//!
//! Both are the public-domain generators of Blackman and Vigna
//! (<https://prng.di.unimi.it/>): xoshiro256** is the recommended all-purpose
//! 64-bit generator, and SplitMix64 is the recommended way to expand a 64-bit
//! seed into its 256-bit state. Written here so that a seed gives the same
//! stream on every platform and with every version of every dependency.

/// SplitMix64: one step of the seed expander. Advances `state` and returns the next output.
pub(crate) fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A xoshiro256** generator.
///
/// Deterministic: the same seed always yields the same stream, on every
/// platform. Not cryptographically secure.
///
/// ```
/// use mixtral_sampler::Rng;
/// let mut a = Rng::seed_from_u64(7);
/// let mut b = Rng::seed_from_u64(7);
/// assert_eq!(a.next_u64(), b.next_u64());
/// let u = a.next_f64();
/// assert!((0.0..1.0).contains(&u));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// Seeds the generator by running SplitMix64 from `seed` four times, as the
    /// xoshiro authors recommend. Never yields the all-zero state.
    pub fn seed_from_u64(seed: u64) -> Self {
        let mut sm = seed;
        let s = [
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
        ];
        Rng { s }
    }

    /// Builds a generator from a raw state (used to check the published test vector).
    #[cfg(test)]
    fn from_state(s: [u64; 4]) -> Self {
        Rng { s }
    }

    /// The next 64 random bits (xoshiro256**).
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// A uniform draw from `[0, 1)`: the top 53 bits of [`Rng::next_u64`] times 2⁻⁵³.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_reference_vector() {
        // First outputs of the reference splitmix64.c for the seed 1234567.
        let mut s = 1_234_567u64;
        let want = [
            6_457_827_717_110_365_317u64,
            3_203_168_211_198_807_973,
            9_817_491_932_198_370_423,
            4_593_380_528_125_082_431,
            16_408_922_859_458_223_821,
        ];
        for w in want {
            assert_eq!(splitmix64(&mut s), w);
        }
        let mut zero = 0u64;
        assert_eq!(splitmix64(&mut zero), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn xoshiro256starstar_matches_reference_vector() {
        // Published outputs of the reference xoshiro256starstar.c from the state {1, 2, 3, 4}
        // (also the test vector of the rand_xoshiro crate).
        let mut r = Rng::from_state([1, 2, 3, 4]);
        let want = [
            11520u64,
            0,
            1_509_978_240,
            1_215_971_899_390_074_240,
            1_216_172_134_540_287_360,
            607_988_272_756_665_600,
            16_172_922_978_634_559_625,
            8_476_171_486_693_032_832,
            10_595_114_339_597_558_777,
            2_904_607_092_377_533_576,
        ];
        for w in want {
            assert_eq!(r.next_u64(), w);
        }
    }

    #[test]
    fn next_f64_is_in_unit_interval_and_seeds_differ() {
        let mut a = Rng::seed_from_u64(0);
        let mut b = Rng::seed_from_u64(1);
        let mut differ = false;
        for _ in 0..1000 {
            let (x, y) = (a.next_f64(), b.next_f64());
            assert!((0.0..1.0).contains(&x) && (0.0..1.0).contains(&y));
            differ |= x != y;
        }
        assert!(differ);
    }
}
