//! Test data shared by the index tests.
#![allow(dead_code)]

use cm3_index::vectors::check_unit_rows;

/// A seeded stream of uniform values in [-0.5, 0.5): each call gives the next `len` of them.
pub fn uniform(seed: u64) -> impl FnMut(usize) -> Vec<f32> {
    let mut s = seed | 1;
    move |len| {
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }
}

/// Seeded clustered unit vectors: `clusters` random centres, points scattered around them, the
/// shape of CLIP embeddings of a web crawl (many near-duplicates, a few dense topics).
pub fn clustered(n: usize, dim: usize, clusters: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut gauss = move || {
        // xorshift + Box-Muller: enough for test data, no dependency.
        let mut u = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        let (a, b) = (u(), u());
        ((-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()) as f32
    };
    let centres: Vec<f32> = (0..clusters * dim).map(|_| gauss()).collect();
    let mut out = Vec::with_capacity(n * dim);
    for i in 0..n {
        let c = &centres[(i % clusters) * dim..(i % clusters + 1) * dim];
        out.extend(c.iter().map(|&x| x + 0.6 * gauss()));
    }
    check_unit_rows("clustered", &mut out, dim, false).expect("norm");
    out
}
