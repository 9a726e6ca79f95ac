//! The matrix product at the heart of exact search: the inner products of a block of stored
//! vectors with a set of queries, both row-major along the dimension.
//!
//! A register-blocked kernel in safe SIMD (`pulp`, dispatched at run time to AVX-512 or AVX2/FMA):
//! the queries are packed once per search into panels of 64 (AVX-512) or 16 (AVX2) queries laid
//! out dimension-major, and the block's stored vectors into tiles of 6, interleaved. A panel's slice
//! of [`KC`] dimensions stays in L1 while every tile goes past it, with 6 × 64 (or 6 × 16) partial
//! sums in registers.
//! General-purpose sgemm crates here either stop at AVX2 (`matrixmultiply`) or expose only an
//! `unsafe` API (`gemm`), which the workspace forbids.
use pulp::{Simd, WithSimd};

use crate::topk::TopK;

/// Stored vectors per tile (rows of the register block).
const MR: usize = 6;
/// Dimensions per pass: a panel's 128 dimensions (32 KiB at AVX-512) stay in L1 while every tile
/// of the block goes past it; a whole 512-dimension panel would be read from L2 at every tile.
const KC: usize = 128;

/// The instruction set the kernels run on. Searches use the best the CPU has ([`SimdLevel::detect`]);
/// tests run every level the CPU has, so that the AVX2 and scalar paths are checked on an
/// AVX-512 machine too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimdLevel {
    /// x86-64 v4 (AVX-512F/BW/CD/DQ/VL).
    Avx512,
    /// x86-64 v3 (AVX2, FMA).
    Avx2,
    /// Whatever `pulp` detects on other architectures (NEON on aarch64).
    Native,
    /// One lane, no SIMD.
    Scalar,
}

/// The best level of this CPU, detected once.
static DETECTED: std::sync::LazyLock<SimdLevel> = std::sync::LazyLock::new(|| {
    SimdLevel::available()
        .first()
        .copied()
        .unwrap_or(SimdLevel::Scalar)
});

impl SimdLevel {
    /// The best level this CPU runs.
    pub fn detect() -> Self {
        *DETECTED
    }

    /// Every level this CPU runs, best first.
    pub fn available() -> Vec<Self> {
        let mut levels = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if pulp::x86::V4::is_available() {
                levels.push(Self::Avx512);
            }
            if pulp::x86::V3::is_available() {
                levels.push(Self::Avx2);
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        levels.push(Self::Native);
        levels.push(Self::Scalar);
        levels
    }

    /// Runs `op` at this level (scalar where the CPU lacks it).
    fn run<Op: WithSimd>(self, op: Op) -> Op::Output {
        #[cfg(target_arch = "x86_64")]
        match self {
            Self::Avx512 => {
                if let Some(simd) = pulp::x86::V4::try_new() {
                    return Simd::vectorize(simd, op);
                }
            }
            Self::Avx2 => {
                if let Some(simd) = pulp::x86::V3::try_new() {
                    return Simd::vectorize(simd, op);
                }
            }
            Self::Native | Self::Scalar => {}
        }
        #[cfg(not(target_arch = "x86_64"))]
        if self == Self::Native {
            return pulp::Arch::new().dispatch(op);
        }
        Simd::vectorize(pulp::Scalar::new(), op)
    }
}

/// Queries packed for [`inner_products`]: panel `p` holds queries `p * width..` as
/// `[dim][width]`, missing queries zero. Packed once per search, shared by every block; the
/// product runs at the level the queries were packed for, which fixes the panel width.
#[derive(Debug)]
pub struct PackedQueries {
    data: Vec<f32>,
    nq: usize,
    dim: usize,
    width: usize,
    level: SimdLevel,
}

/// The widest SIMD vector, in f32 lanes.
struct Lanes;

impl WithSimd for Lanes {
    type Output = usize;

    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) -> usize {
        std::mem::size_of::<S::f32s>() / 4
    }
}

impl PackedQueries {
    /// `queries` holds `queries.len() / dim` vectors of dimension `dim`; packed for the CPU's
    /// best level.
    pub fn new(queries: &[f32], dim: usize) -> Self {
        Self::for_level(queries, dim, SimdLevel::detect())
    }

    /// Packed for the product at `level`.
    pub fn for_level(queries: &[f32], dim: usize, level: SimdLevel) -> Self {
        let lanes = level.run(Lanes);
        // 6 × 4 accumulators fill 24 of AVX-512's 32 registers; AVX2 has 16, so 6 × 2.
        let width = if lanes >= 16 { 4 * lanes } else { 2 * lanes };
        let nq = queries.len().checked_div(dim).unwrap_or(0);
        let mut data = vec![0.0; nq.div_ceil(width) * dim * width];
        for (q, v) in queries.chunks_exact(dim.max(1)).take(nq).enumerate() {
            let (p, j) = (q / width, q % width);
            let panel = &mut data[p * dim * width..(p + 1) * dim * width];
            for (k, &x) in v.iter().enumerate() {
                panel[k * width + j] = x;
            }
        }
        Self {
            data,
            nq,
            dim,
            width,
            level,
        }
    }

    /// The level the queries were packed for.
    pub fn level(&self) -> SimdLevel {
        self.level
    }

    pub fn len(&self) -> usize {
        self.nq
    }

    pub fn is_empty(&self) -> bool {
        self.nq == 0
    }
}

/// Offers `row[j]` (stored position `offset + j`) to `heap` where `admits(score, position)`,
/// skipping with SIMD comparisons the runs of scores below the heap's floor: after the first few
/// blocks almost every score is, and a scalar test of each took a tenth of a search's time.
pub fn push_row(
    level: SimdLevel,
    row: &[f32],
    offset: usize,
    heap: &mut TopK,
    admits: impl Fn(f32, usize) -> bool,
) {
    level.run(PushRow {
        row,
        offset,
        heap,
        admits,
    });
}

struct PushRow<'a, F> {
    row: &'a [f32],
    offset: usize,
    heap: &'a mut TopK,
    admits: F,
}

impl<F: Fn(f32, usize) -> bool> WithSimd for PushRow<'_, F> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let PushRow {
            row,
            offset,
            heap,
            admits,
        } = self;
        let offer = |heap: &mut TopK, j: usize, s: f32| {
            if heap.would_accept(s) && admits(s, offset + j) {
                heap.push(s, offset + j);
            }
        };
        let lanes = std::mem::size_of::<S::f32s>() / 4;
        let (vectors, _) = S::as_simd_f32s(row);
        let (groups, _) = vectors.as_chunks::<4>();
        for (g, v) in groups.iter().enumerate() {
            let m = simd.max_f32s(simd.max_f32s(v[0], v[1]), simd.max_f32s(v[2], v[3]));
            if simd.reduce_max_f32s(m) < heap.floor() {
                continue;
            }
            let start = g * 4 * lanes;
            for (j, &s) in row[start..start + 4 * lanes].iter().enumerate() {
                offer(heap, start + j, s);
            }
        }
        let done = groups.len() * 4 * lanes;
        for (j, &s) in row[done..].iter().enumerate() {
            offer(heap, done + j, s);
        }
    }
}

/// Reusable buffers (a search reuses them across blocks: fresh allocations cost page faults).
#[derive(Debug, Default)]
pub struct Scratch {
    tile: Vec<f32>,
    sums: Vec<f32>,
}

/// `out[q * rows + r] = <query q, base[r]>` for every packed query `q` and stored row `r`, where
/// `rows = base.len() / dim`. `out` is resized to `queries × rows`.
pub fn inner_products(
    queries: &PackedQueries,
    base: &[f32],
    out: &mut Vec<f32>,
    scratch: &mut Scratch,
) {
    let rows = base.len().checked_div(queries.dim).unwrap_or(0);
    // Not cleared first: every element is written below, and zeroing a 1 MiB score matrix for
    // each slice of stored vectors is a pass over memory for nothing.
    out.resize(queries.nq * rows, 0.0);
    if queries.nq == 0 || rows == 0 {
        return;
    }
    queries.level.run(Product {
        queries,
        base: &base[..rows * queries.dim],
        out,
        scratch,
    });
}

struct Product<'a> {
    queries: &'a PackedQueries,
    base: &'a [f32],
    out: &'a mut [f32],
    scratch: &'a mut Scratch,
}

impl WithSimd for Product<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        // Packing and product run at the same level (the queries carry it), so the panel width
        // is 4 or 2 vectors of this `S`.
        let lanes = std::mem::size_of::<S::f32s>() / 4;
        if self.queries.width == 4 * lanes {
            product::<S, 4>(simd, self);
        } else {
            product::<S, 2>(simd, self);
        }
    }
}

#[inline(always)]
fn product<S: Simd, const NV: usize>(simd: S, p: Product<'_>) {
    let Product {
        queries,
        base,
        out,
        scratch,
    } = p;
    let PackedQueries {
        data,
        nq,
        dim,
        width,
        ..
    } = queries;
    let (nq, dim, width) = (*nq, *dim, *width);
    let rows = base.len() / dim;
    let tiles = rows.div_ceil(MR);
    let panels = nq.div_ceil(width);
    let (packed, _) = S::as_simd_f32s(data);

    // Tile t holds stored rows t*MR.. interleaved as [dim][MR] (missing rows repeat the last).
    let tile = &mut scratch.tile;
    tile.resize(tiles * dim * MR, 0.0);
    for t in 0..tiles {
        for i in 0..MR {
            let r = (t * MR + i).min(rows - 1);
            let dst = &mut tile[t * dim * MR..(t + 1) * dim * MR];
            for (k, &x) in base[r * dim..(r + 1) * dim].iter().enumerate() {
                dst[k * MR + i] = x;
            }
        }
    }
    let (tile_rows, _) = tile.as_chunks::<MR>();
    // Partial sums of one panel against every tile: [tile][MR][NV] vectors.
    let sums = &mut scratch.sums;
    sums.resize(tiles * MR * width, 0.0);

    for p in 0..panels {
        let (panel_rows, _) = packed[p * dim * NV..(p + 1) * dim * NV].as_chunks::<NV>();
        let (sums_simd, _) = S::as_mut_simd_f32s(sums);
        for k0 in (0..dim).step_by(KC) {
            let k1 = (k0 + KC).min(dim);
            for t in 0..tiles {
                let slot = &mut sums_simd[t * MR * NV..(t + 1) * MR * NV];
                let mut acc = [[simd.splat_f32s(0.0); NV]; MR];
                if k0 > 0 {
                    for i in 0..MR {
                        acc[i].copy_from_slice(&slot[i * NV..(i + 1) * NV]);
                    }
                }
                let tile_k = &tile_rows[t * dim + k0..t * dim + k1];
                for (qv, b) in panel_rows[k0..k1].iter().zip(tile_k) {
                    for i in 0..MR {
                        let bi = simd.splat_f32s(b[i]);
                        for v in 0..NV {
                            acc[i][v] = simd.mul_add_e_f32s(bi, qv[v], acc[i][v]);
                        }
                    }
                }
                for i in 0..MR {
                    slot[i * NV..(i + 1) * NV].copy_from_slice(&acc[i]);
                }
            }
        }
        let q0 = p * width;
        for j in 0..width.min(nq - q0) {
            let row = &mut out[(q0 + j) * rows..(q0 + j + 1) * rows];
            for (r, o) in row.iter_mut().enumerate() {
                *o = sums[r * width + j];
            }
        }
    }
}
