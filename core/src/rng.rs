//! A small counter-based random source: SplitMix64 seeded from (seed, purpose, pair id).
//!
//! Every random decision of a stage (which caption tokens are dropped, which neighbours are
//! sampled, where CM3 masks a span) depends only on the run's seed, the decision's purpose and
//! the pair's id, never on batch sizes, thread timing, shard order or worker split, so the output
//! is byte-identical however the work is divided. The generator is written out here (not taken
//! from a crate) so that the stream can never change under a dependency upgrade.

#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// SplitMix64 (Steele, Lea and Flood 2014; the generator `java.util.SplittableRandom` uses).
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The stream of `purpose` for pair `id` under the run's `seed`.
    pub fn for_pair(seed: u64, purpose: u64, id: u64) -> Self {
        Self::new(mix(seed ^ mix(purpose ^ mix(id))))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.state)
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Poisson-distributed with mean `lambda` (Knuth's product of uniforms; fine for the small
    /// means used here).
    pub fn poisson(&mut self, lambda: f64) -> u64 {
        if lambda <= 0.0 {
            return 0;
        }
        let limit = (-lambda).exp();
        let mut k = 0;
        let mut p = self.next_f64();
        while p > limit {
            k += 1;
            p *= self.next_f64();
        }
        k
    }

    /// Uniform in `0..n` (`n > 0`), without modulo bias (Lemire's multiply-and-reject).
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = u128::from(self.next_u64()) * u128::from(n);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_splitmix64_stream() {
        // First outputs of SplitMix64 seeded with 0, as printed by the reference C code
        // (https://prng.di.unimi.it/splitmix64.c).
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(r.next_u64(), 0x06c4_5d18_8009_454f);
    }

    #[test]
    fn below_is_uniform_enough_and_in_range() {
        let mut r = SplitMix64::new(7);
        let mut counts = [0u32; 5];
        for _ in 0..50_000 {
            let v = r.below(5);
            counts[v as usize] += 1;
        }
        for c in counts {
            assert!((9_500..10_500).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn poisson_has_its_mean_and_variance() {
        let mut r = SplitMix64::new(3);
        let n = 100_000;
        let draws: Vec<f64> = (0..n).map(|_| r.poisson(1.0) as f64).collect();
        let mean = draws.iter().sum::<f64>() / n as f64;
        let var = draws.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / n as f64;
        assert!((mean - 1.0).abs() < 0.02, "{mean}");
        assert!((var - 1.0).abs() < 0.03, "{var}");
        let zeros = draws.iter().filter(|&&d| d == 0.0).count() as f64 / n as f64;
        assert!((zeros - (-1.0f64).exp()).abs() < 0.01, "{zeros}");
    }

    #[test]
    fn streams_differ_by_pair_and_purpose() {
        let a = SplitMix64::for_pair(1, 10, 42).next_u64();
        let b = SplitMix64::for_pair(1, 10, 43).next_u64();
        let c = SplitMix64::for_pair(1, 11, 42).next_u64();
        let d = SplitMix64::for_pair(2, 10, 42).next_u64();
        assert!(a != b && a != c && a != d);
        assert_eq!(a, SplitMix64::for_pair(1, 10, 42).next_u64());
    }
}
