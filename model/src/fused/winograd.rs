//! 3 × 3 convolutions at stride 1 by Winograd's minimal filtering F(2 × 2, 3 × 3) (Lavin & Gray,
//! "Fast Algorithms for Convolutional Neural Networks", CVPR 2016): each 2 × 2 block of outputs
//! comes from a 4 × 4 input tile in 16 multiplications instead of 36, computed as 16 matrix
//! products `[co, ci] × [ci, tiles]` of transformed filters by transformed tiles, then one
//! output transform. 2.25 times fewer multiply-adds than the direct sum, which is most of a VQ
//! encode. The transforms' constants are 0, ±1 and ±½ (exact in f32), so the result differs from
//! the direct convolution only in rounding.
//!
//! With `d` a tile, `g` a filter and `m = (G g Gᵀ) ⊙ (Bᵀ d B)` summed over input channels, the
//! outputs are `Aᵀ m A`:
//! ```text
//! Bᵀ = [1  0 −1  0]    G = [1    0    0]    Aᵀ = [1 1  1  0]
//!      [0  1  1  0]        [½    ½    ½]         [0 1 −1 −1]
//!      [0 −1  1  0]        [½   −½    ½]
//!      [0  1  0 −1]        [0    0    1]
//! ```

use rayon::prelude::*;

use super::ARCH;
use super::gemm_into::matmul_into;

/// Elements of one band's transformed tiles, `16 · max(ci, co) · tiles` (16 MiB of `f32`).
pub(super) const WINOGRAD_BAND_ELEMS: usize = 4 << 20;

/// The geometry of one convolution.
#[derive(Debug, Clone, Copy)]
pub(super) struct Geometry {
    pub ci: usize,
    pub co: usize,
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
    pub top: usize,
    pub left: usize,
}

/// The transformed filters `G g Gᵀ` as `[16, co, ci]`, from `weight` `[co, ci, 3, 3]`.
fn filter_transform(weight: &[f32], co: usize, ci: usize) -> Vec<f32> {
    let mut u = vec![0f32; 16 * co * ci];
    let g_rows = |[a, b, c]: [f32; 3]| [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c];
    for (oi, g) in weight.chunks_exact(9).enumerate() {
        // G g (4 × 3), column by column; then each of its rows times Gᵀ.
        let cols: [[f32; 4]; 3] = std::array::from_fn(|c| g_rows([g[c], g[3 + c], g[6 + c]]));
        for k in 0..4 {
            for (l, v) in g_rows([cols[0][k], cols[1][k], cols[2][k]])
                .into_iter()
                .enumerate()
            {
                u[(k * 4 + l) * co * ci + oi] = v;
            }
        }
    }
    u
}

/// `Bᵀ d B` of every tile of one input channel for tile rows `ty0..ty0 + rows`, into `v`
/// `[16, rows · tw]`. Columns are split into even and odd ones first, so that every step below
/// is a loop over contiguous slices.
struct InputTransform<'a> {
    plane: &'a [f32],
    v: &'a mut [f32],
    ty0: usize,
    rows: usize,
    tw: usize,
    g: Geometry,
}

impl pulp::WithSimd for InputTransform<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let Geometry {
            h, w, top, left, ..
        } = self.g;
        let (tw, te) = (self.tw, self.tw + 1);
        let nt = self.rows * tw;
        // The tile's four input rows, zero-padded to 2·te columns: the even columns in the first
        // half, the odd ones in the second.
        let mut padded = vec![0f32; 2 * te];
        let mut d = vec![0f32; 4 * 2 * te];
        let mut t = vec![0f32; 4 * 2 * te];
        for r in 0..self.rows {
            let ty = self.ty0 + r;
            for (k, row) in d.chunks_exact_mut(2 * te).enumerate() {
                let iy = (2 * ty + k).checked_sub(top).filter(|&iy| iy < h);
                let Some(iy) = iy else {
                    row.fill(0.0);
                    continue;
                };
                // 2·te ≥ left + w: the output width is w + left + right − 2 ≤ 2·tw.
                padded[left..left + w].copy_from_slice(&self.plane[iy * w..(iy + 1) * w]);
                let (even, odd) = row.split_at_mut(te);
                for ((e, o), pair) in even.iter_mut().zip(odd).zip(padded.chunks_exact(2)) {
                    *e = pair[0];
                    *o = pair[1];
                }
            }
            // Bᵀ d: along the rows.
            let n = 2 * te;
            let (d0, rest) = d.split_at(n);
            let (d1, rest) = rest.split_at(n);
            let (d2, d3) = rest.split_at(n);
            let (t0, rest) = t.split_at_mut(n);
            let (t1, rest) = rest.split_at_mut(n);
            let (t2, t3) = rest.split_at_mut(n);
            for j in 0..n {
                t0[j] = d0[j] - d2[j];
                t1[j] = d1[j] + d2[j];
                t2[j] = d2[j] - d1[j];
                t3[j] = d1[j] - d3[j];
            }
            // (Bᵀ d) B: along the columns, tile tx reading columns 2tx..2tx+3.
            for (k, tk) in t.chunks_exact(n).enumerate() {
                let (e, o) = tk.split_at(te);
                let (e0, e1, o0, o1) = (&e[..tw], &e[1..], &o[..tw], &o[1..]);
                let at = |l: usize| (k * 4 + l) * nt + r * tw;
                let (v0, rest) = self.v[at(0)..].split_at_mut(nt);
                let (v1, rest) = rest.split_at_mut(nt);
                let (v2, v3) = rest.split_at_mut(nt);
                for tx in 0..tw {
                    v0[tx] = e0[tx] - e1[tx];
                    v1[tx] = o0[tx] + e1[tx];
                    v2[tx] = e1[tx] - o0[tx];
                    v3[tx] = o0[tx] - o1[tx];
                }
            }
        }
    }
}

/// `Aᵀ m A` (+ bias) of one output channel's tiles in tile rows `ty0..ty0 + rows`, from `m`
/// `[16, co, nt]`, into `out` (the channel's `oh × ow` plane).
struct OutputTransform<'a> {
    m: &'a [f32],
    out: &'a mut [f32],
    o: usize,
    bias: f32,
    ty0: usize,
    rows: usize,
    tw: usize,
    /// Tiles in the band: `m`'s row length.
    nt: usize,
    g: Geometry,
}

impl pulp::WithSimd for OutputTransform<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let Geometry { co, oh, ow, .. } = self.g;
        let (tw, nt) = (self.tw, self.nt);
        let mut y = vec![0f32; 4 * tw];
        let mut line = vec![0f32; 2 * tw];
        for r in 0..self.rows {
            let m: [&[f32]; 16] =
                std::array::from_fn(|kl| &self.m[(kl * co + self.o) * nt + r * tw..][..tw]);
            let (y00, rest) = y.split_at_mut(tw);
            let (y01, rest) = rest.split_at_mut(tw);
            let (y10, y11) = rest.split_at_mut(tw);
            for tx in 0..tw {
                // Aᵀ m: along the rows, then times A along the columns.
                let s0: [f32; 4] = std::array::from_fn(|l| m[l][tx] + m[4 + l][tx] + m[8 + l][tx]);
                let s1: [f32; 4] =
                    std::array::from_fn(|l| m[4 + l][tx] - m[8 + l][tx] - m[12 + l][tx]);
                y00[tx] = s0[0] + s0[1] + s0[2] + self.bias;
                y01[tx] = s0[1] - s0[2] - s0[3] + self.bias;
                y10[tx] = s1[0] + s1[1] + s1[2] + self.bias;
                y11[tx] = s1[1] - s1[2] - s1[3] + self.bias;
            }
            let oy = 2 * (self.ty0 + r);
            for (dy, (left, right)) in [(&*y00, &*y01), (&*y10, &*y11)].into_iter().enumerate() {
                if oy + dy >= oh {
                    break;
                }
                for ((pair, &a), &b) in line.chunks_exact_mut(2).zip(left).zip(right) {
                    pair[0] = a;
                    pair[1] = b;
                }
                self.out[(oy + dy) * ow..(oy + dy + 1) * ow].copy_from_slice(&line[..ow]);
            }
        }
    }
}

/// The convolution of the contiguous `[b, ci, h, w]` values `xv` by `weight` `[co, ci, 3, 3]`
/// (+ `bias`), at stride 1, as `[b, co, oh, ow]` values; `None` should a product's extents not
/// fit its buffers (they always do).
pub(super) fn conv3x3_winograd(
    xv: &[f32],
    b: usize,
    weight: &[f32],
    bias: &[f32],
    g: Geometry,
    band_elems: usize,
) -> Option<Vec<f32>> {
    let Geometry {
        ci,
        co,
        h,
        w,
        oh,
        ow,
        ..
    } = g;
    let (th, tw) = (oh.div_ceil(2), ow.div_ceil(2));
    let band = (band_elems / (16 * ci.max(co) * tw)).clamp(1, th);
    let (hw, ohw) = (h * w, oh * ow);
    let u = filter_transform(weight, co, ci);
    let mut out = vec![0f32; b * co * ohw];
    // The transformed tiles of a band, `[ci, 16, tiles]` so that each input channel fills a
    // contiguous block, and their products `[16, co, tiles]`: both reused for every band.
    let mut v = vec![0f32; 16 * ci * band * tw];
    let mut m = vec![0f32; 16 * co * band * tw];
    for img in 0..b {
        let planes = &xv[img * ci * hw..(img + 1) * ci * hw];
        for ty0 in (0..th).step_by(band) {
            let rows = band.min(th - ty0);
            let nt = rows * tw;
            let v = &mut v[..16 * ci * nt];
            v.par_chunks_mut(16 * nt)
                .zip(planes.par_chunks(hw))
                .for_each(|(v, plane)| {
                    ARCH.dispatch(InputTransform {
                        plane,
                        v,
                        ty0,
                        rows,
                        tw,
                        g,
                    })
                });
            let v: &[f32] = v;
            // Product kl: U[kl] `[co, ci]` times the tiles' kl-th values, rows 16·nt apart.
            let fits = m[..16 * co * nt]
                .par_chunks_mut(co * nt)
                .zip(u.par_chunks(co * ci))
                .enumerate()
                .map(|(kl, (dst, lhs))| {
                    matmul_into(
                        dst,
                        nt,
                        lhs,
                        ci,
                        &v[kl * nt..],
                        16 * nt,
                        [co, nt, ci],
                        false,
                        false,
                    )
                })
                .all(|fits| fits);
            if !fits {
                return None;
            }
            let m: &[f32] = &m;
            out[img * co * ohw..(img + 1) * co * ohw]
                .par_chunks_mut(ohw)
                .zip(bias.par_iter())
                .enumerate()
                .for_each(|(o, (out, &bias))| {
                    ARCH.dispatch(OutputTransform {
                        m,
                        out,
                        o,
                        bias,
                        ty0,
                        rows,
                        tw,
                        nt,
                        g,
                    })
                });
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The filter transform against `G g Gᵀ` multiplied out by hand for one filter.
    #[test]
    fn filter_transform_is_g_g_gt() {
        let g: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        let gm = [
            [1.0, 0.0, 0.0],
            [0.5, 0.5, 0.5],
            [0.5, -0.5, 0.5],
            [0.0, 0.0, 1.0],
        ];
        let u = filter_transform(&g, 1, 1);
        for k in 0..4 {
            for l in 0..4 {
                let mut want = 0f32;
                for (r, grow) in gm[k].iter().enumerate() {
                    for (c, gcol) in gm[l].iter().enumerate() {
                        want += grow * g[r * 3 + c] * gcol;
                    }
                }
                assert_eq!(u[k * 4 + l], want, "({k}, {l})");
            }
        }
    }
}
