//! The paper's initialisers, which Burn does not have: a truncated normal (resampled outside the
//! cut, like PyTorch's `trunc_normal_`), a plain normal, zeros; seeded and reproducible.
use cm3_core::rng::SplitMix64;

/// One standard normal draw (Box–Muller; `1 - u` keeps the logarithm finite).
fn standard_normal(rng: &mut SplitMix64) -> f64 {
    let u1 = 1.0 - rng.next_f64();
    let u2 = rng.next_f64();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// `n` draws of N(0, std²) restricted to ±`truncation` standard deviations: a draw outside is
/// drawn again, so the result has the truncated distribution (not values clipped to the edge).
pub fn truncated_normal(n: usize, std: f64, truncation: f64, rng: &mut SplitMix64) -> Vec<f32> {
    (0..n)
        .map(|_| {
            loop {
                let z = standard_normal(rng);
                if z.abs() <= truncation {
                    break (z * std) as f32;
                }
            }
        })
        .collect()
}

/// `n` draws of N(0, std²).
pub fn normal(n: usize, std: f64, rng: &mut SplitMix64) -> Vec<f32> {
    (0..n)
        .map(|_| (standard_normal(rng) * std) as f32)
        .collect()
}

/// Mean and standard deviation (population), for the initialisation tests.
#[cfg(test)]
pub(crate) fn moments(x: &[f32]) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = x
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    (mean, var.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_normal_has_the_truncated_moments_and_bounds() {
        let mut rng = SplitMix64::new(7);
        let x = truncated_normal(400_000, 0.006, 3.0, &mut rng);
        assert!(x.iter().all(|&v| f64::from(v).abs() <= 0.018 + 1e-9));
        let (mean, std) = moments(&x);
        // A standard normal cut at ±3 has standard deviation 0.98658 (1 − 2·3·φ(3)/(2Φ(3) − 1)).
        assert!(mean.abs() < 3e-5, "mean {mean}");
        assert!((std / 0.006 - 0.98658).abs() < 3e-3, "std {std}");
        // Truncation resamples: the edges are not piled up.
        let near_edge = x.iter().filter(|&&v| f64::from(v).abs() > 0.0179).count();
        assert!(near_edge < 100, "{near_edge} draws at the edge");
        // Seeded.
        assert_eq!(
            truncated_normal(10, 0.006, 3.0, &mut SplitMix64::new(7)),
            x[..10]
        );
    }

    #[test]
    fn normal_has_its_moments() {
        let x = normal(400_000, 0.0002, &mut SplitMix64::new(1));
        let (mean, std) = moments(&x);
        assert!(mean.abs() < 1e-6, "mean {mean}");
        assert!((std / 0.0002 - 1.0).abs() < 5e-3, "std {std}");
        // About 0.27% of a normal lies beyond 3 standard deviations: not truncated.
        let beyond = x.iter().filter(|&&v| f64::from(v).abs() > 0.0006).count();
        assert!((800..1400).contains(&beyond), "{beyond} beyond 3 std");
    }
}
