//! CIDEr-D as pycocoevalcap 1.2's `cider/cider_scorer.py` computes it: 1..4-gram tf-idf vectors
//! with document frequencies from the references of the evaluated images (idf =
//! log(number of images) - log(max(1, df))), the candidate's weights clipped at the reference's,
//! a Gaussian penalty (sigma = 6) on the difference of the two captions' bigram counts (the
//! scorer's `length`), the mean over n, the mean over references, times 10.

use super::ngrams::{Counts, N};

const SIGMA: f64 = 6.0;

/// `counts2vec`: tf-idf weights (in the order of `counts.grams`), their norm per n, and the
/// caption's "length" as the scorer counts it (its number of bigrams: `if n == 1`).
struct Vector {
    weights: Vec<f64>,
    norm: [f64; N],
    length: i64,
}

fn vector(counts: &Counts, idf: &[f64], order: &[u8], ref_len: f64) -> Vector {
    let mut norm = [0.0; N];
    let mut length = 0i64;
    let weights = counts
        .grams
        .iter()
        .map(|(g, tf)| {
            let n = usize::from(order[*g as usize]) - 1;
            let w = f64::from(*tf) * (ref_len - idf[*g as usize]);
            norm[n] += w * w;
            if n == 1 {
                length += i64::from(*tf);
            }
            w
        })
        .collect();
    Vector {
        weights,
        norm: norm.map(f64::sqrt),
        length,
    }
}

/// `sim`: per-n clipped cosine similarity times the length penalty.
fn sim(hyp: &Vector, hyp_counts: &Counts, r: &Vector, r_counts: &Counts, order: &[u8]) -> [f64; N] {
    let delta = (hyp.length - r.length) as f64;
    let mut val = [0.0; N];
    for ((g, _), &w) in hyp_counts.grams.iter().zip(&hyp.weights) {
        if let Ok(i) = r_counts.grams.binary_search_by(|(x, _)| x.cmp(g)) {
            let wr = r.weights[i];
            val[usize::from(order[*g as usize]) - 1] += w.min(wr) * wr;
        }
    }
    let penalty = std::f64::consts::E.powf(-(delta * delta) / (2.0 * SIGMA * SIGMA));
    for ((v, &nh), &nr) in val.iter_mut().zip(&hyp.norm).zip(&r.norm) {
        if nh != 0.0 && nr != 0.0 {
            *v /= nh * nr;
        }
        *v *= penalty;
    }
    val
}

/// Per-image CIDEr-D of each candidate against its references; `order` gives each n-gram id's
/// order.
pub(crate) fn cider_d(tests: &[Counts], refs: &[Vec<Counts>], order: &[u8]) -> Vec<f64> {
    // Document frequency: in how many images' reference sets an n-gram occurs.
    let mut df = vec![0u32; order.len()];
    let mut seen: Vec<u32> = Vec::new();
    for image_refs in refs {
        seen.clear();
        seen.extend(
            image_refs
                .iter()
                .flat_map(|r| r.grams.iter().map(|(g, _)| *g)),
        );
        seen.sort_unstable();
        seen.dedup();
        for &g in &seen {
            df[g as usize] += 1;
        }
    }
    // log(max(1, df)): n-grams of no reference count as df = 1.
    let idf: Vec<f64> = df.iter().map(|&d| f64::from(d).max(1.0).ln()).collect();
    let ref_len = (refs.len() as f64).ln();
    tests
        .iter()
        .zip(refs)
        .map(|(test, image_refs)| {
            let hyp = vector(test, &idf, order, ref_len);
            let mut score = [0.0; N];
            for r_counts in image_refs {
                let r = vector(r_counts, &idf, order, ref_len);
                let val = sim(&hyp, test, &r, r_counts, order);
                for n in 0..N {
                    score[n] += val[n];
                }
            }
            let mean = score.iter().sum::<f64>() / N as f64;
            mean / image_refs.len() as f64 * 10.0
        })
        .collect()
}
