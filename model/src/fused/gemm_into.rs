//! The one call into the `gemm` crate (the matrix-product kernels Burn's flex backend runs),
//! writing into buffers of our own. Through Burn, every product allocates its output as a zeroed
//! byte vector and then copies it into a 16-byte-aligned one (`FlexTensor::empty`), and glibc
//! hands such buffers back to the system between products: in a VQ encode that was about 30% of
//! the samples (page faults, `memcpy`), next to 31% in the product itself.
//!
//! `gemm::gemm` takes raw pointers and strides, so this module is the workspace's only `unsafe`:
//! every extent the kernel will touch is checked against the slices first.
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

#[cfg(test)]
mod tests {
    use super::*;

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
