//! The calls into the `gemm` crate (the matrix-product kernels Burn's flex backend runs),
//! writing into buffers of our own. Through Burn, every product allocates its output as a zeroed
//! byte vector and then copies it into a 16-byte-aligned one (`FlexTensor::empty`), and glibc
//! hands such buffers back to the system between products: in a VQ encode that was about 30% of
//! the samples (page faults, `memcpy`), next to 31% in the product itself; in a decoder training
//! step, most of the 40% of the main thread's samples in `memset` and `memcpy`, while the other
//! core waited.
//!
//! `gemm::gemm` takes raw pointers and strides, so this module is the workspace's only `unsafe`:
//! every extent the kernel will touch is checked against the slices first, and a buffer left
//! uninitialised for a product to fill is made visible only after the product wrote all of it.
#![allow(unsafe_code)]

/// `dst[i·dst_rs + j] = Σ_p lhs[i·lhs_rs + p] · rhs[p·rhs_rs + j]` for `i < m`, `j < n`, `p < k`
/// (row-major matrices at the given row strides, contiguous within a row), added to what `dst`
/// holds when `accumulate` (a bias written first). `parallel` lets gemm split the product over
/// rayon's threads. False, with nothing written, when a slice is too short for its extents or
/// rows of `dst` would overlap.
#[allow(clippy::too_many_arguments)]
pub(super) fn matmul_into(
    dst: &mut [f32],
    dst_rs: usize,
    lhs: &[f32],
    lhs_rs: usize,
    rhs: &[f32],
    rhs_rs: usize,
    [m, n, k]: [usize; 3],
    accumulate: bool,
    parallel: bool,
) -> bool {
    // The last element a row-major [rows, cols] matrix at row stride `rs` reaches, plus one.
    let extent = |rows: usize, cols: usize, rs: usize| {
        (rows - 1).checked_mul(rs).and_then(|e| e.checked_add(cols))
    };
    if m == 0 || n == 0 {
        return true;
    }
    if dst_rs < n || extent(m, n, dst_rs).is_none_or(|e| e > dst.len()) {
        return false;
    }
    if k == 0 {
        if !accumulate {
            for row in dst.chunks_mut(dst_rs).take(m) {
                row[..n].fill(0.0);
            }
        }
        return true;
    }
    if extent(m, k, lhs_rs).is_none_or(|e| e > lhs.len())
        || extent(k, n, rhs_rs).is_none_or(|e| e > rhs.len())
    {
        return false;
    }
    let (Ok(dst_rs), Ok(lhs_rs), Ok(rhs_rs)) = (
        isize::try_from(dst_rs),
        isize::try_from(lhs_rs),
        isize::try_from(rhs_rs),
    ) else {
        return false;
    };
    let parallelism = if parallel {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: gemm reads lhs[i·lhs_rs + p] and rhs[p·rhs_rs + j] and writes (and, when
    // accumulating, reads) dst[i·dst_rs + j] for i < m, j < n, p < k only; the checks above put
    // each of those offsets inside its slice. dst_rs ≥ n keeps the rows of dst apart, so
    // gemm's threads write disjoint elements, and the borrows keep dst apart from lhs and rhs.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs,
            accumulate,
            lhs.as_ptr(),
            1,
            lhs_rs,
            rhs.as_ptr(),
            1,
            rhs_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
    true
}

/// One operand of a batch of products: product `(i, j)` reads the matrix at
/// `base + i·batch[0] + j·batch[1]`, element `(r, c)` at `r·mat[0] + c·mat[1]` from there (a
/// strided view of a tensor, transposed or not, read where it lies).
#[derive(Clone, Copy, Debug)]
pub(super) struct Operand<'a> {
    pub data: &'a [f32],
    pub base: usize,
    pub batch: [usize; 2],
    pub mat: [usize; 2],
}

impl Operand<'_> {
    /// One past the last element the `[b0, b1]` batch of `rows × cols` matrices reaches.
    fn extent(&self, [b0, b1]: [usize; 2], rows: usize, cols: usize) -> Option<usize> {
        let last = |n: usize, s: usize| (n - 1).checked_mul(s);
        self.base
            .checked_add(last(b0, self.batch[0])?)?
            .checked_add(last(b1, self.batch[1])?)?
            .checked_add(last(rows, self.mat[0])?)?
            .checked_add(last(cols, self.mat[1])?)?
            .checked_add(1)
    }
}

/// The `[b0, b1]` batch of products `lhs_ij · rhs_ij` (`m × k` times `k × n`), each read
/// through its strides (so a transpose is a choice of strides, not a copy), each row-major and
/// contiguous in the new vector. A batch is spread over rayon's threads (one single-threaded
/// gemm per product); a single product is split by gemm itself. The products write every
/// element of a buffer that is never zeroed or copied (Burn zeroes each product's output, then
/// copies it to align it). `None` when an operand's slice is too short for its extents.
pub(super) fn batched_matmul_new(
    lhs: Operand<'_>,
    rhs: Operand<'_>,
    batch: [usize; 2],
    dims: [usize; 3],
) -> Option<Vec<f32>> {
    batched_matmul_over(Vec::new(), lhs, rhs, batch, dims)
}

/// [`batched_matmul_new`] into the allocation of `out` (its values are never read): the tests
/// hand it one full of NaN, which any element the products did not write would keep.
fn batched_matmul_over(
    mut out: Vec<f32>,
    lhs: Operand<'_>,
    rhs: Operand<'_>,
    [b0, b1]: [usize; 2],
    [m, n, k]: [usize; 3],
) -> Option<Vec<f32>> {
    use rayon::prelude::*;
    let per = m.checked_mul(n)?;
    let len = per.checked_mul(b0)?.checked_mul(b1)?;
    out.clear();
    if len == 0 {
        return Some(out);
    }
    if k == 0 {
        out.resize(len, 0.0);
        return Some(out);
    }
    if lhs.extent([b0, b1], m, k)? > lhs.data.len() || rhs.extent([b0, b1], k, n)? > rhs.data.len()
    {
        return None;
    }
    let s = |v: usize| isize::try_from(v).ok();
    let strides = [lhs.mat[0], lhs.mat[1], rhs.mat[0], rhs.mat[1], n].map(s);
    let [Some(lrs), Some(lcs), Some(rrs), Some(rcs), Some(dst_rs)] = strides else {
        return None;
    };
    let parallelism = if len == per {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    out.reserve_exact(len);
    out.spare_capacity_mut()[..len]
        .par_chunks_mut(per)
        .enumerate()
        .for_each(|(p, dst)| {
            let (i, j) = (p / b1, p % b1);
            let at = |o: &Operand<'_>| o.base + i * o.batch[0] + j * o.batch[1];
            // SAFETY: `dst` is this product's own m·n elements (disjoint chunks of the reserved
            // capacity), all written and none read (`read_dst` false). It reads lhs at at(lhs) +
            // r·lhs.mat[0] + c·lhs.mat[1] for r < m, c < k (and rhs likewise for k × n): inside
            // the slices, as the extents over the whole batch were checked above. Rows of dst
            // are n apart, so gemm's own threads (a single product) write disjoint elements.
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    dst.as_mut_ptr().cast::<f32>(),
                    1,
                    dst_rs,
                    false,
                    lhs.data.as_ptr().add(at(&lhs)),
                    lcs,
                    lrs,
                    rhs.data.as_ptr().add(at(&rhs)),
                    rcs,
                    rrs,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    parallelism,
                );
            }
        });
    // SAFETY: every one of the `len` elements was written by its product above.
    unsafe { out.set_len(len) };
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the triple loop for each of the four transposes (by strides), writing every
    /// element of a buffer full of NaN; short slices are refused.
    #[test]
    fn batched_matmul_new_is_the_triple_loop_at_any_strides() {
        let (m, n, k) = (37, 29, 23);
        let a: Vec<f32> = (0..m * k).map(|i| (i % 11) as f32 - 5.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32 * 0.25).collect();
        // a as [m, k] row-major or its transpose stored [k, m]; the same for b.
        let a_t: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
        let b_t: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        let want: Vec<f32> = (0..m * n)
            .map(|e| (0..k).map(|p| a[e / n * k + p] * b[p * n + e % n]).sum())
            .collect();
        // One matrix as an operand (batch strides 0: every product of a batch reads it).
        let op = |data, mat| Operand {
            data,
            base: 0,
            batch: [0, 0],
            mat,
        };
        for (lhs, ls, rhs, rs) in [
            (&a, [k, 1], &b, [n, 1]),
            (&a_t, [1, m], &b, [n, 1]),
            (&a, [k, 1], &b_t, [1, k]),
            (&a_t, [1, m], &b_t, [1, k]),
        ] {
            let nan = vec![f32::NAN; m * n + 5];
            let got = batched_matmul_over(nan, op(lhs, ls), op(rhs, rs), [1, 1], [m, n, k])
                .expect("fits");
            assert_eq!(got.len(), m * n);
            for (e, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-4 * w.abs().max(1.0),
                    "{ls:?} {rs:?} ({e}): {g} {w}"
                );
            }
        }
        // A batch of 2 × 3 products (the same matrices), each written whole.
        let nan = vec![f32::NAN; 6 * m * n];
        let got = batched_matmul_over(nan, op(&a, [k, 1]), op(&b_t, [1, k]), [2, 3], [m, n, k]);
        let got = got.expect("fits");
        assert_eq!(got.len(), 6 * m * n);
        for (e, g) in got.iter().enumerate() {
            let w = want[e % (m * n)];
            assert!(
                (g - w).abs() <= 1e-4 * w.abs().max(1.0),
                "batch ({e}): {g} {w}"
            );
        }
        let one = |lhs, rhs, dims| batched_matmul_new(lhs, rhs, [1, 1], dims);
        assert_eq!(
            one(op(&a, [k, 1]), op(&b, [n, 1]), [m, n, 0]),
            Some(vec![0.0; m * n])
        );
        assert!(one(op(&a[1..], [k, 1]), op(&b, [n, 1]), [m, n, k]).is_none());
        assert!(one(op(&a, [k, 1]), op(&b, [1, k + 1]), [m, n, k]).is_none());
    }

    /// Against the triple loop, at row strides wider than the rows, with and without
    /// accumulating; short slices are refused untouched.
    #[test]
    fn matmul_into_is_the_triple_loop() {
        let (m, n, k) = (5, 7, 3);
        let (dst_rs, lhs_rs, rhs_rs) = (9, 4, 8);
        let lhs: Vec<f32> = (0..(m - 1) * lhs_rs + k)
            .map(|i| (i % 7) as f32 - 3.0)
            .collect();
        let rhs: Vec<f32> = (0..(k - 1) * rhs_rs + n)
            .map(|i| (i % 5) as f32 * 0.5)
            .collect();
        for (accumulate, parallel) in [(false, false), (true, false), (false, true)] {
            let mut dst = vec![2.0f32; (m - 1) * dst_rs + n];
            assert!(matmul_into(
                &mut dst,
                dst_rs,
                &lhs,
                lhs_rs,
                &rhs,
                rhs_rs,
                [m, n, k],
                accumulate,
                parallel
            ));
            for i in 0..m {
                for j in 0..dst_rs {
                    let got = dst.get(i * dst_rs + j).copied();
                    if j >= n {
                        // Between rows: untouched.
                        assert!(got.is_none_or(|v| v == 2.0), "({i}, {j})");
                        continue;
                    }
                    let sum: f32 = (0..k)
                        .map(|p| lhs[i * lhs_rs + p] * rhs[p * rhs_rs + j])
                        .sum();
                    let want = if accumulate { sum + 2.0 } else { sum };
                    assert_eq!(got, Some(want), "({i}, {j}), accumulate {accumulate}");
                }
            }
        }
        let mut dst = vec![2.0f32; (m - 1) * dst_rs + n];
        let refused = |dst: &mut [f32], dst_rs: usize, lhs: &[f32], rhs: &[f32]| {
            !matmul_into(
                dst,
                dst_rs,
                lhs,
                lhs_rs,
                rhs,
                rhs_rs,
                [m, n, k],
                false,
                false,
            )
        };
        assert!(refused(&mut dst, dst_rs, &lhs[1..], &rhs), "lhs short");
        assert!(refused(&mut dst, dst_rs, &lhs, &rhs[1..]), "rhs short");
        assert!(refused(&mut dst[1..], dst_rs, &lhs, &rhs), "dst short");
        assert!(refused(&mut dst, n - 1, &lhs, &rhs), "rows of dst overlap");
        assert!(
            dst.iter().all(|&v| v == 2.0),
            "a refused product writes nothing"
        );
    }
}
