//! Dense f64 linear algebra for the Fréchet distance: covariance, pivoted Cholesky, a symmetric
//! product, Householder tridiagonalisation and implicit QL eigenvalues. Row-major storage; the
//! O(d³) loops run over rows with rayon, on contiguous slices the compiler vectorises.
use rayon::prelude::*;

use crate::error::{EvalError, Result};

/// Rows handled together in the covariance, so that a block of centred rows stays in cache.
const ROW_BLOCK: usize = 64;

/// `np.cov(x, rowvar=False)` of row-major [n, d] f32 rows given their mean: Σ (x - mu)(x - mu)ᵀ
/// / (n - 1), row-major [d, d].
pub(super) fn covariance(x: &[f32], mu: &[f64], n: usize) -> Vec<f64> {
    let d = mu.len();
    let mut sigma = vec![0f64; d * d];
    // Centred block, transposed: feature i's values over the block's rows are contiguous.
    let mut block = vec![0f64; d * ROW_BLOCK];
    for rows in x.chunks(d * ROW_BLOCK) {
        let m = rows.len() / d;
        for (r, row) in rows.chunks_exact(d).enumerate() {
            for i in 0..d {
                block[i * ROW_BLOCK + r] = f64::from(row[i]) - mu[i];
            }
        }
        let block = &block;
        sigma.par_chunks_mut(d).enumerate().for_each(|(i, out)| {
            let bi = &block[i * ROW_BLOCK..i * ROW_BLOCK + m];
            for (j, o) in out.iter_mut().enumerate().skip(i) {
                *o += dot(bi, &block[j * ROW_BLOCK..j * ROW_BLOCK + m]);
            }
        });
    }
    let scale = 1.0 / (n as f64 - 1.0);
    for i in 0..d {
        for j in i..d {
            let v = sigma[i * d + j] * scale;
            sigma[i * d + j] = v;
            sigma[j * d + i] = v;
        }
    }
    sigma
}

/// Dot product with four independent sums (vectorisable; the order differs from a plain loop by
/// rounding only).
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..4 {
            acc[k] += x[k] * y[k];
        }
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

fn axpy(y: &mut [f64], alpha: f64, x: &[f64]) {
    y.iter_mut().zip(x).for_each(|(y, x)| *y += alpha * x);
}

/// tr(sqrtm(S1 S2)) for symmetric positive semi-definite S1, S2 (row-major d x d): the sum of
/// the square roots of the eigenvalues of S1 S2, which equal those of Lᵀ S2 L for S1 = L Lᵀ
/// (plus zeros). L comes from a pivoted Cholesky factorisation, so a singular S1 (fewer images
/// than dimensions) gives a thinner L instead of a failure. Rounding can make tiny eigenvalues
/// negative; they count as 0.
pub fn trace_sqrt_product(s1: &[f64], s2: &[f64], d: usize) -> Result<f64> {
    if s1.len() != d * d || s2.len() != d * d {
        return Err(EvalError::Numeric(format!(
            "covariances of {} and {} values for dimension {d}",
            s1.len(),
            s2.len()
        )));
    }
    let lt = pivoted_cholesky(s1, d)?;
    let r = lt.len() / d.max(1);
    if r == 0 {
        return Ok(0.0);
    }
    let mut m = congruence(&lt, s2, d, r);
    let (diag, off) = tridiagonalize(&mut m, r);
    let eig = tridiagonal_eigenvalues(diag, off)?;
    Ok(eig.iter().map(|&l| l.max(0.0).sqrt()).sum())
}

/// Lᵀ of the pivoted Cholesky factorisation S = L Lᵀ of a symmetric positive semi-definite S,
/// row-major [r, d] (row k = column k of L, in S's own index order); r is the numerical rank:
/// the factorisation stops when the largest remaining diagonal is below d·ε·max(diag S).
fn pivoted_cholesky(s: &[f64], d: usize) -> Result<Vec<f64>> {
    let mut residual: Vec<f64> = (0..d).map(|i| s[i * d + i]).collect();
    let max_diag = residual.iter().copied().fold(0.0, f64::max);
    if let Some(i) = residual
        .iter()
        .position(|&v| v < -f64::EPSILON * max_diag * d as f64)
    {
        return Err(EvalError::Numeric(format!(
            "covariance is not positive semi-definite: diagonal {i} is {}",
            residual[i]
        )));
    }
    let tol = d as f64 * f64::EPSILON * max_diag;
    let mut used = vec![false; d];
    let mut lt: Vec<f64> = Vec::new();
    for _ in 0..d {
        let (p, &pivot) = residual
            .iter()
            .enumerate()
            .filter(|(i, _)| !used[*i])
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap_or((0, &0.0));
        if pivot <= tol {
            break;
        }
        used[p] = true;
        let mut col = s[p * d..(p + 1) * d].to_vec();
        // col -= Σ_j<k L[:, j] L[p, j], split over ranges of rows for the two cores.
        let chunk = d.div_ceil(rayon::current_num_threads().max(1)).max(256);
        col.par_chunks_mut(chunk).enumerate().for_each(|(c, part)| {
            let start = c * chunk;
            for row in lt.chunks_exact(d) {
                axpy(part, -row[p], &row[start..start + part.len()]);
            }
        });
        let root = pivot.sqrt();
        for (i, v) in col.iter_mut().enumerate() {
            if used[i] && i != p {
                *v = 0.0;
            } else {
                *v /= root;
            }
        }
        col[p] = root;
        for (i, v) in col.iter().enumerate() {
            if !used[i] {
                residual[i] -= v * v;
            }
        }
        residual[p] = 0.0;
        lt.extend_from_slice(&col);
    }
    Ok(lt)
}

/// M = Lᵀ S L, r x r, from Lᵀ ([r, d]) and symmetric S ([d, d]).
fn congruence(lt: &[f64], s: &[f64], d: usize, r: usize) -> Vec<f64> {
    // T = Lᵀ S, row k = Σ_j L[j, k] S[j, :] (S symmetric), four rows of Lᵀ per pass over S.
    let mut t = vec![0f64; r * d];
    t.par_chunks_mut(4 * d)
        .zip(lt.par_chunks(4 * d))
        .for_each(|(tk, lk)| {
            let rows = lk.len() / d;
            for j in 0..d {
                let srow = &s[j * d..(j + 1) * d];
                for q in 0..rows {
                    let a = lk[q * d + j];
                    if a != 0.0 {
                        axpy(&mut tk[q * d..(q + 1) * d], a, srow);
                    }
                }
            }
        });
    let mut m = vec![0f64; r * r];
    m.par_chunks_mut(r).enumerate().for_each(|(k, out)| {
        let tk = &t[k * d..(k + 1) * d];
        for (l, o) in out.iter_mut().enumerate().skip(k) {
            *o = dot(tk, &lt[l * d..(l + 1) * d]);
        }
    });
    for k in 0..r {
        for l in k + 1..r {
            m[l * r + k] = m[k * r + l];
        }
    }
    m
}

/// Householder reduction of symmetric row-major `a` (n x n, destroyed) to tridiagonal form:
/// (diagonal, sub-diagonal). Eigenvalues only, so the reflections are not accumulated.
fn tridiagonalize(a: &mut [f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut diag = vec![0f64; n];
    let mut off = vec![0f64; n.saturating_sub(1)];
    let mut v = vec![0f64; n];
    let mut p = vec![0f64; n];
    for k in 0..n.saturating_sub(2) {
        let lo = k + 1;
        // x = A[k+1.., k] (= row k by symmetry); v = x + sign(x0) |x| e1, H = I - beta v vᵀ.
        let x = &a[k * n + lo..(k + 1) * n];
        let norm = x.iter().map(|v| v * v).sum::<f64>().sqrt();
        diag[k] = a[k * n + k];
        if norm == 0.0 {
            off[k] = 0.0;
            continue;
        }
        let alpha = if x[0] > 0.0 { -norm } else { norm };
        let v = &mut v[lo..];
        v.copy_from_slice(x);
        v[0] -= alpha;
        let vv: f64 = v.iter().map(|x| x * x).sum();
        off[k] = alpha;
        if vv == 0.0 {
            continue;
        }
        let beta = 2.0 / vv;
        // p = beta A v over the trailing block; w = p - (beta pᵀv / 2) v.
        let m = n - lo;
        let p = &mut p[lo..];
        let v: &[f64] = v;
        p.par_iter_mut().enumerate().for_each(|(i, pi)| {
            let row = &a[(lo + i) * n + lo..(lo + i + 1) * n];
            *pi = beta * dot(row, v);
        });
        let k2 = beta * dot(p, v) / 2.0;
        p.iter_mut().zip(v).for_each(|(pi, vi)| *pi -= k2 * vi);
        let w: &[f64] = p;
        // A -= v wᵀ + w vᵀ on the trailing block.
        a[lo * n..]
            .par_chunks_mut(n)
            .enumerate()
            .for_each(|(i, row)| {
                let row = &mut row[lo..lo + m];
                let (vi, wi) = (v[i], w[i]);
                row.iter_mut()
                    .zip(w.iter().zip(v))
                    .for_each(|(r, (wj, vj))| *r -= vi * wj + wi * vj);
            });
    }
    if n >= 2 {
        diag[n - 2] = a[(n - 2) * n + n - 2];
        off[n - 2] = a[(n - 1) * n + n - 2];
    }
    if n >= 1 {
        diag[n - 1] = a[(n - 1) * n + n - 1];
    }
    (diag, off)
}

/// Eigenvalues of the symmetric tridiagonal matrix (diagonal `d`, sub-diagonal `e`) by the
/// implicit QL method with Wilkinson shifts (EISPACK's tql1).
fn tridiagonal_eigenvalues(mut d: Vec<f64>, e: Vec<f64>) -> Result<Vec<f64>> {
    let n = d.len();
    let mut e: Vec<f64> = e.into_iter().chain(std::iter::once(0.0)).collect();
    e.truncate(n);
    for l in 0..n {
        let mut iter = 0;
        loop {
            // Find a negligible sub-diagonal element e[m] to split at.
            let mut m = l;
            while m + 1 < n {
                let dd = d[m].abs() + d[m + 1].abs();
                if e[m].abs() <= f64::EPSILON * dd {
                    break;
                }
                m += 1;
            }
            if m == l {
                break;
            }
            iter += 1;
            if iter > 60 {
                return Err(EvalError::Numeric(
                    "eigenvalues did not converge (QL, 60 iterations)".into(),
                ));
            }
            let mut g = (d[l + 1] - d[l]) / (2.0 * e[l]);
            let mut r = g.hypot(1.0);
            g = d[m] - d[l] + e[l] / (g + r.copysign(g));
            let (mut s, mut c, mut p) = (1.0, 1.0, 0.0);
            let mut i = m;
            let mut underflow = false;
            while i > l {
                i -= 1;
                let f = s * e[i];
                let b = c * e[i];
                r = f.hypot(g);
                e[i + 1] = r;
                if r == 0.0 {
                    d[i + 1] -= p;
                    e[m] = 0.0;
                    underflow = true;
                    break;
                }
                s = f / r;
                c = g / r;
                g = d[i + 1] - p;
                r = (d[i] - g) * s + 2.0 * c * b;
                p = s * r;
                d[i + 1] = g + p;
                g = c * r - b;
            }
            if underflow {
                continue;
            }
            d[l] -= p;
            e[l] = g;
            e[m] = 0.0;
        }
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pseudo-random generator for test matrices (no extra dependency).
    fn lcg(seed: &mut u64) -> f64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 11) as f64 / (1u64 << 53) as f64) - 0.5
    }

    fn gram(d: usize, n: usize, seed: &mut u64) -> Vec<f64> {
        let x: Vec<f32> = (0..n * d).map(|_| lcg(seed) as f32).collect();
        let mu = vec![0.0; d];
        covariance(&x, &mu, n)
    }

    #[test]
    fn tridiagonal_eigenvalues_of_a_known_matrix() {
        // The path graph's Laplacian-like matrix 2 on the diagonal, -1 off it: 2 - 2cos(kπ/(n+1)).
        let n = 7;
        let mut eig = tridiagonal_eigenvalues(vec![2.0; n], vec![-1.0; n - 1]).expect("converges");
        eig.sort_by(f64::total_cmp);
        for (k, l) in eig.iter().enumerate() {
            let want = 2.0 - 2.0 * ((k + 1) as f64 * std::f64::consts::PI / (n + 1) as f64).cos();
            assert!((l - want).abs() < 1e-12, "{l} vs {want}");
        }
    }

    #[test]
    fn tridiagonalisation_keeps_trace_and_frobenius_norm() {
        let mut seed = 3;
        let d = 20;
        let s = gram(d, 50, &mut seed);
        let (trace, frob): (f64, f64) = (
            (0..d).map(|i| s[i * d + i]).sum(),
            s.iter().map(|v| v * v).sum(),
        );
        let mut a = s.clone();
        let (diag, off) = tridiagonalize(&mut a, d);
        let t_trace: f64 = diag.iter().sum();
        let t_frob: f64 =
            diag.iter().map(|v| v * v).sum::<f64>() + 2.0 * off.iter().map(|v| v * v).sum::<f64>();
        assert!((trace - t_trace).abs() < 1e-12 * trace.abs());
        assert!((frob - t_frob).abs() < 1e-12 * frob);
        // Eigenvalues of a Gram matrix are >= 0 and sum to the trace.
        let eig = tridiagonal_eigenvalues(diag, off).expect("converges");
        assert!(eig.iter().all(|&l| l > -1e-12));
        assert!((eig.iter().sum::<f64>() - trace).abs() < 1e-10 * trace);
    }

    #[test]
    fn pivoted_cholesky_reconstructs_singular_matrices() {
        let mut seed = 11;
        let d = 16;
        let s = gram(d, 6, &mut seed); // rank 6
        let lt = pivoted_cholesky(&s, d).expect("psd");
        assert_eq!(lt.len() / d, 6);
        for i in 0..d {
            for j in 0..d {
                let v: f64 = lt.chunks_exact(d).map(|r| r[i] * r[j]).sum();
                assert!(
                    (v - s[i * d + j]).abs() < 1e-12,
                    "({i},{j}) {v} vs {}",
                    s[i * d + j]
                );
            }
        }
    }

    #[test]
    fn trace_sqrt_of_a_square_is_the_trace() {
        // tr sqrt(S S) = tr S for S positive semi-definite, singular or not.
        let mut seed = 5;
        for (d, n) in [(12, 40), (12, 5)] {
            let s = gram(d, n, &mut seed);
            let tr: f64 = (0..d).map(|i| s[i * d + i]).sum();
            let got = trace_sqrt_product(&s, &s, d).expect("ok");
            assert!((got - tr).abs() < 1e-7 * tr, "d={d} n={n}: {got} vs {tr}");
        }
    }
}
