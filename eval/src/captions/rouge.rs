//! ROUGE-L as pycocoevalcap 1.2's `rouge/rouge.py` computes it: tokens by `split(" ")`, the
//! longest common subsequence with each reference, the maximum precision and the maximum recall
//! over the references (taken separately), and F with beta = 1.2.

const BETA: f64 = 1.2;

/// `my_lcs`: the length of the longest common subsequence.
fn lcs(a: &[u32], b: &[u32]) -> usize {
    let (long, short) = if a.len() >= b.len() { (a, b) } else { (b, a) };
    let mut row = vec![0usize; short.len() + 1];
    for &x in long {
        let mut diagonal = 0;
        for (j, &y) in short.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if x == y {
                diagonal + 1
            } else {
                above.max(row[j])
            };
            diagonal = above;
        }
    }
    row[short.len()]
}

/// `calc_score` for one candidate against its references.
pub(crate) fn rouge_l(candidate: &[u32], refs: &[Vec<u32>]) -> f64 {
    let (mut prec_max, mut rec_max) = (0.0f64, 0.0f64);
    for reference in refs {
        let l = lcs(reference, candidate) as f64;
        prec_max = prec_max.max(l / candidate.len() as f64);
        rec_max = rec_max.max(l / reference.len() as f64);
    }
    if prec_max != 0.0 && rec_max != 0.0 {
        let b2 = BETA.powi(2);
        ((1.0 + b2) * prec_max * rec_max) / (rec_max + b2 * prec_max)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lcs_is_symmetric_and_counts_subsequences() {
        assert_eq!(lcs(&[1, 2, 3, 4], &[1, 3, 4]), 3);
        assert_eq!(lcs(&[1, 3, 4], &[1, 2, 3, 4]), 3);
        assert_eq!(lcs(&[5], &[1, 2]), 0);
    }

    #[test]
    fn f_measure_uses_the_best_precision_and_recall_separately() {
        // P = 2/2 from the first reference, R = 2/2 from the second: F = 1.
        let f = rouge_l(&[1, 2], &[vec![1, 2, 3, 4], vec![1, 2]]);
        assert!((f - 1.0).abs() < 1e-12, "{f}");
        assert_eq!(rouge_l(&[9], &[vec![1, 2]]), 0.0);
    }
}
