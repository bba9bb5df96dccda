//! [`Draws`]: the uniform numbers behind a seeded random pick, made as
//! llama.cpp makes them, so that a seed draws the same token in cria as in
//! llama.cpp (given the same probabilities).
//!
//! llama.cpp's `dist` sampler (`src/llama-sampler.cpp`) seeds a
//! `std::mt19937` with its 32-bit seed and takes one
//! `std::uniform_real_distribution<double>(0, 1)` per pick. With libstdc++
//! (GCC's standard library, what llama.cpp's Linux builds use) that number
//! is `generate_canonical<double, 53>`: two 32-bit outputs `a` then `b`,
//! `(a + b * 2^32) / 2^64` in double arithmetic, and `nextafter(1, 0)` in
//! the (rounding) case where that gives 1. The Mersenne Twister is
//! `rand_mt`'s `Mt`, the reference MT19937 (the tests check it against
//! outputs of `std::mt19937`).
//!
//! Seeds: cria's seed is 64 bits, llama.cpp's 32. A seed below 2^32 seeds
//! the generator exactly as `std::mt19937(seed)`; a larger one (which
//! llama.cpp cannot take) seeds it from both 32-bit halves with MT19937's
//! own array seeding (`init_by_array`), so no two seeds are folded together.

use rand_mt::Mt;

/// The random source of one sampler.
#[derive(Clone)]
pub(crate) struct Draws {
    mt: Mt,
}

impl std::fmt::Debug for Draws {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Draws(mt19937)")
    }
}

/// 2^32 and 2^64, exactly, as doubles.
const TWO_32: f64 = 4_294_967_296.0;
const TWO_64: f64 = 18_446_744_073_709_551_616.0;

impl Draws {
    pub(crate) fn new(seed: u64) -> Draws {
        let mt = match u32::try_from(seed) {
            Ok(s) => Mt::new(s),
            Err(_) => Mt::new_with_key([seed as u32, (seed >> 32) as u32]),
        };
        Draws { mt }
    }

    /// One number in [0, 1): libstdc++'s `uniform_real_distribution<double>(0, 1)`
    /// on an `std::mt19937`.
    pub(crate) fn uniform(&mut self) -> f64 {
        let a = f64::from(self.mt.next_u32());
        let b = f64::from(self.mt.next_u32());
        // One rounding (the sum), as in C++: `a * 1.0 + b * 2^32` is exact
        // up to the addition, and dividing by 2^64 is exact.
        let r = (a + b * TWO_32) / TWO_64;
        if r >= 1.0 {
            // nextafter(1.0, 0.0)
            1.0 - f64::EPSILON / 2.0
        } else {
            r
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_is_std_mt19937() {
        // The C++ standard fixes this: the 10000th output of a
        // default-constructed std::mt19937 (seed 5489) is 4123659995.
        let mut mt = Mt::new(5489);
        for _ in 0..9999 {
            mt.next_u32();
        }
        assert_eq!(mt.next_u32(), 4_123_659_995);
    }

    /// Printed by this C++ program, built with g++ 12.2 (libstdc++) on
    /// x86-64 Linux, the standard library of llama.cpp's Linux builds:
    ///
    /// ```text
    /// std::mt19937 rng(seed);
    /// std::uniform_real_distribution<double> dist(0.0f, 1.0f);
    /// for (int i = 0; i < 4; i++) printf(" %.17g", dist(rng));
    /// ```
    #[test]
    // The values as C++ printed them (17 digits), not shortened.
    #[allow(clippy::excessive_precision)]
    fn uniform_numbers_are_libstdcxx_ones() {
        let golden: [(u64, [f64; 4]); 6] = [
            (
                0,
                [
                    0.592_844_616_516_682_63,
                    0.844_265_744_256_598_28,
                    0.857_945_619_989_829_88,
                    0.847_251_737_384_331_24,
                ],
            ),
            (
                1,
                [
                    0.997_184_808_230_265_56,
                    0.932_557_361_368_165_47,
                    0.128_124_447_772_306,
                    0.999_040_515_465_273_62,
                ],
            ),
            (
                42,
                [
                    0.796_542_984_287_845_98,
                    0.183_434_787_893_368_48,
                    0.779_690_997_612_661_25,
                    0.596_850_161_580_056_55,
                ],
            ),
            (
                4242,
                [
                    0.808_569_069_561_769_55,
                    0.241_041_336_660_369_89,
                    0.452_804_007_314_613_07,
                    0.333_800_647_707_308_94,
                ],
            ),
            (
                5489,
                [
                    0.135_477_004_296_780_5,
                    0.835_008_589_994_579_5,
                    0.968_867_771_124_231_39,
                    0.221_034_042_982_704_9,
                ],
            ),
            (
                4_294_967_295,
                [
                    0.111_606_665_444_009_02,
                    0.562_693_374_211_057_81,
                    0.526_321_307_008_395_74,
                    0.770_614_742_017_351_92,
                ],
            ),
        ];
        for (seed, want) in golden {
            let mut d = Draws::new(seed);
            let got: Vec<f64> = (0..4).map(|_| d.uniform()).collect();
            // Bit for bit: %.17g round-trips a double.
            assert_eq!(got, want, "seed {seed}");
        }
    }

    #[test]
    fn seeds_past_32_bits_are_not_folded() {
        let first = |s: u64| Draws::new(s).uniform();
        assert_ne!(first(1 << 32), first(0));
        assert_ne!(first((1 << 32) | 42), first(42));
        assert_ne!(first(u64::MAX), first(u64::from(u32::MAX)));
        assert_eq!(first(u64::MAX), first(u64::MAX));
    }
}
