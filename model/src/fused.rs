//! Fused CPU kernels, with their own backward passes, for the two widest element-wise chains of a
//! decoder training step on Burn's `flex` backend: the next-token cross-entropy over the
//! vocabulary, and the causal softmax of attention.
//!
//! Composed from Burn's tensor operations, each is a chain of single-threaded passes over the
//! whole tensor (max, subtract, `exp`, sum, divide or log; then as many again in the backward
//! pass, which recomputes `exp`), with a scalar `expf` per element. Here each is one
//! multi-threaded pass forward and one backward, with a vectorised `exp`:
//! - cross-entropy: `lse(x_i) − x_i[t_i]` per row; backward `g_i (softmax(x_i) − onehot(t_i))`;
//! - causal softmax: row `i` of a block that starts at query `s` attends keys `0..=s+i` (the rest
//!   are 0, never computed); backward `y (g − Σ g y)`.
//!
//! Both apply only to `f32` tensors on flex (with or without autodiff); callers fall back to the
//! composed operations everywhere else (wgpu, CUDA), which compute the same function.
//!
//! Two more serve the rest of a training step, under the same rule: LayerNorm without parameters
//! (one pass each way, where the composed form is 7 single-threaded operations, each with its
//! own backward), and one matrix product for the decoder's linear maps `x Wᵀ` and attention's two
//! batched products, which goes straight to gemm ([`gemm_into`]) into buffers of its own,
//! reading transposes and views through strides, where Burn's matmul zeroes and copies every
//! output on one thread.
//!
//! For the VQ tokenizer at inference (plain flex, no autodiff) there are three more, forward
//! only: GroupNorm (+ SiLU) in one pass per (image, group), the argmax over channels plane by
//! plane, and 3 × 3 convolutions: Winograd's F(2 × 2, 3 × 3) at stride 1 ([`winograd`]), one
//! matrix product per band of output rows otherwise.
// `Err` carries the caller's own tensor back, untouched, when the kernel does not apply: a
// 256-byte move once per call, not an error passed up through `?` chains.
#![allow(clippy::result_large_err)]
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, binary, unary};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{
    Autodiff, BackendTensor, DType, DispatchAutodiffContext, DispatchTensor, DispatchTensorKind,
    Flex, GradientCheckpointingStrategy,
};
use burn::tensor::Tensor;
use rayon::prelude::*;

mod gemm_into;
mod winograd;

/// The CPU's SIMD level, detected once.
static ARCH: std::sync::LazyLock<pulp::Arch> = std::sync::LazyLock::new(pulp::Arch::new);

/// Lanes of the element-wise loops: written over `[f32; LANES]` so that the compiler vectorises
/// them at the width `pulp` dispatches to (AVX-512, or two AVX2 registers).
const LANES: usize = 16;

/// Below this, `exp` is 0 to within f32's normal range: `exp(EXP_MIN)` is the smallest normal
/// value, 2^−126 (a little above ln 2^−126 = −87.3365447, so that the result is never subnormal,
/// which some CPUs multiply slowly).
const EXP_MIN: f32 = -87.336_54;

/// `exp(x)` for `x ≤ 0` (and NaN), without branches or library calls, so that loops over it
/// vectorise: `2^k · p(r)` with `k = round(x / ln 2)`, `r = x − k ln 2` in `[−ln2/2, ln2/2]`,
/// `p` the degree-6 Taylor polynomial (relative error below 2e−7 on that interval). Arguments
/// below [`EXP_MIN`] give `exp(EXP_MIN)`; NaN stays NaN.
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    // `x < EXP_MIN` is false for NaN, which then propagates through the polynomial.
    let x = if x < EXP_MIN { EXP_MIN } else { x };
    // Round to nearest by adding 1.5·2^23 (no `round` call, which does not vectorise).
    const SHIFTER: f32 = 12_582_912.0;
    let k = (x * std::f32::consts::LOG2_E + SHIFTER) - SHIFTER;
    let r = x - k * 0.693_145_75 - k * 1.428_606_8e-6;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // k is in [−126, 0]: 2^k is a normal f32 built from its exponent bits.
    let scale = f32::from_bits((((k as i32) + 127) as u32) << 23);
    p * scale
}

/// The largest element of `x` (NaN ignored; −∞ for an empty slice).
#[inline(always)]
fn row_max(x: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (m, &v) in lanes.iter_mut().zip(c) {
            *m = if v > *m { v } else { *m };
        }
    }
    let mut m = tail
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    for &l in &lanes {
        m = if l > m { l } else { m };
    }
    m
}

/// `x[j] ← exp(x[j] − shift)`, returning `Σ x` (summed in lanes, as a vector unit would).
#[inline(always)]
fn exp_shifted(x: &mut [f32], shift: f32) -> f32 {
    let mut lanes = [0f32; LANES];
    let mut chunks = x.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for (v, s) in c.iter_mut().zip(lanes.iter_mut()) {
            *v = exp_nonpositive(*v - shift);
            *s += *v;
        }
    }
    let mut sum = 0.0;
    for v in chunks.into_remainder() {
        *v = exp_nonpositive(*v - shift);
        sum += *v;
    }
    sum + lanes.iter().sum::<f32>()
}

/// Rows per parallel task: enough work per task to pay for rayon's scheduling.
fn rows_per_task(row_len: usize) -> usize {
    (16_384 / row_len.max(1)).max(1)
}

/// `Σ a_j b_j`, summed in lanes.
#[inline(always)]
fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; LANES];
    let (ac, bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for ((s, &x), &y) in lanes.iter_mut().zip(x).zip(y) {
            *s += x * y;
        }
    }
    tail + lanes.iter().sum::<f32>()
}

/// The row loops below run inside `pulp`'s dispatch (`WithSimd::with_simd`, inlined into a
/// function compiled for AVX-512 or AVX2), one call per rayon task: a closure handed to rayon is
/// compiled for the baseline x86-64 (SSE2) whatever its caller was.
struct NllRowsKernel<'a> {
    /// The logits on entry, their exponentials (shifted by each row's maximum) on return.
    x: &'a mut [f32],
    nll: &'a mut [f32],
    inv_sum: &'a mut [f32],
    targets: &'a [u32],
    v: usize,
}

impl pulp::WithSimd for NllRowsKernel<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let outs = self
            .nll
            .iter_mut()
            .zip(self.inv_sum.iter_mut())
            .zip(self.targets);
        for (x, ((nll, inv), &t)) in self.x.chunks_exact_mut(self.v).zip(outs) {
            let target = x[t as usize];
            let max = row_max(x);
            let sum = exp_shifted(x, max);
            *nll = max + sum.ln() - target;
            *inv = 1.0 / sum;
        }
    }
}

struct NllGradKernel<'a> {
    exps: &'a mut [f32],
    g: &'a [f32],
    inv_sum: &'a [f32],
    targets: &'a [u32],
    v: usize,
}

impl pulp::WithSimd for NllGradKernel<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let rows = self.exps.chunks_exact_mut(self.v);
        for (row, ((&g, &inv), &t)) in rows.zip(self.g.iter().zip(self.inv_sum).zip(self.targets)) {
            let scale = g * inv;
            for e in row.iter_mut() {
                *e *= scale;
            }
            row[t as usize] -= g;
        }
    }
}

/// Rows `first..` of a causal softmax (in place) whose rows cycle through `tq` queries starting
/// at `start`.
struct CausalRowsKernel<'a> {
    x: &'a mut [f32],
    first: usize,
    start: usize,
    tq: usize,
    tk: usize,
}

impl pulp::WithSimd for CausalRowsKernel<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        for (r, x) in self.x.chunks_exact_mut(self.tk).enumerate() {
            let keys = self.start + (self.first + r) % self.tq + 1;
            let (live, dead) = x.split_at_mut(keys);
            let max = row_max(live);
            let inv = 1.0 / exp_shifted(live, max);
            for e in live.iter_mut() {
                *e *= inv;
            }
            dead.fill(0.0);
        }
    }
}

struct CausalGradKernel<'a> {
    y: &'a [f32],
    g: &'a mut [f32],
    first: usize,
    start: usize,
    tq: usize,
    tk: usize,
}

impl pulp::WithSimd for CausalGradKernel<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let tk = self.tk;
        for (r, (g, y)) in self
            .g
            .chunks_exact_mut(tk)
            .zip(self.y.chunks_exact(tk))
            .enumerate()
        {
            let keys = self.start + (self.first + r) % self.tq + 1;
            let (live, dead) = g.split_at_mut(keys);
            let y = &y[..keys];
            let dot = dot_lanes(live, y);
            for (g, &y) in live.iter_mut().zip(y) {
                *g = y * (*g - dot);
            }
            dead.fill(0.0);
        }
    }
}

/// `t` with its elements in row-major order from the start of its storage (copied only when they
/// are not).
fn contiguous(t: FlexTensor) -> FlexTensor {
    if t.is_contiguous() && t.layout().start_offset() == 0 {
        t
    } else {
        t.to_contiguous()
    }
}

// ------------------------------------------------------------------------------------------------
// Cross-entropy

/// Forward over `[n, v]` logits (shape, type and targets checked by the caller): the per-row
/// negative log-likelihoods `[n]`, and the state of the backward pass (the logits' buffer, now
/// holding their exponentials shifted by each row's maximum, and each row's `1 / Σ exp`).
fn nll_forward(logits: FlexTensor, targets: &[u32]) -> (FlexTensor, NllState) {
    let v = logits.layout().shape().to_vec()[1];
    let n = targets.len();
    // In place: the logits are this operation's alone (copied first if anything shares them).
    let mut exps = contiguous(logits);
    let mut nll = vec![0f32; n];
    let mut inv_sum = vec![0f32; n];
    let rows = rows_per_task(v);
    exps.storage_mut::<f32>()[..n * v]
        .par_chunks_mut(rows * v)
        .zip(nll.par_chunks_mut(rows))
        .zip(inv_sum.par_chunks_mut(rows))
        .zip(targets.par_chunks(rows))
        .for_each(|(((x, nll), inv_sum), targets)| {
            ARCH.dispatch(NllRowsKernel {
                x,
                nll,
                inv_sum,
                targets,
                v,
            })
        });
    let nll = FlexTensor::from_data(burn::tensor::TensorData::new(nll, [n]));
    let state = NllState {
        exps,
        inv_sum: inv_sum.into(),
        targets: targets.to_vec().into(),
    };
    (nll, state)
}

#[derive(Debug, Clone)]
struct NllState {
    exps: FlexTensor,
    inv_sum: std::sync::Arc<[f32]>,
    targets: std::sync::Arc<[u32]>,
}

/// Backward: `grad[i, j] = g_i (exp_ij / Σ_i − [j = t_i])`, written over the saved exponentials
/// (copied first only if something else still holds them).
fn nll_backward(state: NllState, grad: FlexTensor) -> FlexTensor {
    let NllState {
        exps,
        inv_sum,
        targets,
    } = state;
    let g = contiguous(grad);
    let g: &[f32] = g.storage();
    let v = exps.layout().shape().to_vec()[1];
    let rows = rows_per_task(v);
    let mut out = exps;
    let numel = inv_sum.len() * v;
    out.storage_mut::<f32>()[..numel]
        .par_chunks_mut(rows * v)
        .zip(g.par_chunks(rows))
        .zip(inv_sum.par_chunks(rows))
        .zip(targets.par_chunks(rows))
        .for_each(|(((exps, g), inv_sum), targets)| {
            ARCH.dispatch(NllGradKernel {
                exps,
                g,
                inv_sum,
                targets,
                v,
            })
        });
    out
}

#[derive(Debug)]
struct NllBackward;

impl Backward<Flex, 1> for NllBackward {
    type State = NllState;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let state = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |g| nll_backward(state, g));
    }
}

/// A tensor taken out of Burn's dispatch layer when it is an `f32` tensor on flex.
enum OnFlex {
    Plain(FlexTensor),
    Tracked(FloatTensor<Autodiff<Flex>>),
}

/// `t` as a flex primitive (with its autodiff node, when it has one and no gradient
/// checkpointing), or `t` back, unchanged, for any other backend or type.
fn on_flex<const D: usize>(t: Tensor<D>) -> Result<OnFlex, Tensor<D>> {
    if t.dtype() != DType::F32 {
        return Err(t);
    }
    let DispatchTensor { kind, autodiff } = t.into_dispatch();
    let no_checkpointing =
        DispatchAutodiffContext::Enabled(GradientCheckpointingStrategy::Disabled);
    match (kind, autodiff) {
        (DispatchTensorKind::Flex(BackendTensor::Float(x)), DispatchAutodiffContext::Disabled) => {
            Ok(OnFlex::Plain(x))
        }
        (DispatchTensorKind::Autodiff(inner), ctx) if ctx == no_checkpointing => match *inner {
            DispatchTensorKind::Flex(BackendTensor::Autodiff(x)) => Ok(OnFlex::Tracked(x)),
            other => Err(Tensor::from_dispatch(DispatchTensor {
                kind: DispatchTensorKind::Autodiff(Box::new(other)),
                autodiff,
            })),
        },
        (kind, autodiff) => Err(Tensor::from_dispatch(DispatchTensor { kind, autodiff })),
    }
}

/// Per-row negative log-likelihood of `targets` under `logits` `[n, v]`
/// (`log Σ_j exp x_ij − x_i[t_i]`, as `-log_softmax(x).gather(t)`), fused; or the logits back when
/// they are not `f32` on flex or do not fit the targets (the caller then composes it from tensor
/// operations).
pub(crate) fn nll_rows(logits: Tensor<2>, targets: &[u32]) -> Result<Tensor<1>, Tensor<2>> {
    let [n, v] = logits.dims();
    if n != targets.len() || v == 0 || targets.iter().any(|&t| t as usize >= v) {
        return Err(logits);
    }
    Ok(match on_flex(logits)? {
        OnFlex::Tracked(ad) => {
            let (x, node) = ad.into_parts();
            let (nll, state) = nll_forward(x, targets);
            let out = match NllBackward
                .prepare::<NoCheckpointing>([node])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => prep.finish(state, nll),
                OpsKind::UnTracked(prep) => prep.finish(nll),
            };
            Tensor::from_primitive::<Autodiff<Flex>>(out)
        }
        OnFlex::Plain(x) => Tensor::from_primitive::<Flex>(nll_forward(x, targets).0),
    })
}

// ------------------------------------------------------------------------------------------------
// Causal softmax

/// Forward over `[.., tq, tk]` scores (checked by the caller) whose row `i` is query
/// `start + i`: softmax over keys `0..=start+i`, zeros after, in the scores' buffer.
fn causal_softmax_forward(scores: FlexTensor, start: usize) -> FlexTensor {
    let dims = scores.layout().shape().to_vec();
    let (tq, tk) = (dims[dims.len() - 2], dims[dims.len() - 1]);
    let numel: usize = dims.iter().product();
    let mut y = contiguous(scores);
    let rows = rows_per_task(tk);
    // The tensor's own elements: a view may start a longer buffer.
    y.storage_mut::<f32>()[..numel]
        .par_chunks_mut(rows * tk)
        .enumerate()
        .for_each(|(task, x)| {
            let first = task * rows;
            ARCH.dispatch(CausalRowsKernel {
                x,
                first,
                start,
                tq,
                tk,
            })
        });
    y
}

/// Backward: `dx = y (g − Σ_j g_j y_j)` on each row's attended keys, 0 elsewhere.
fn causal_softmax_backward(y: &FlexTensor, grad: FlexTensor, start: usize) -> FlexTensor {
    let dims = y.layout().shape().to_vec();
    let (tq, tk) = (dims[dims.len() - 2], dims[dims.len() - 1]);
    let numel: usize = dims.iter().product();
    let mut g = contiguous(grad);
    let y: &[f32] = &y.storage()[..numel];
    let rows = rows_per_task(tk);
    g.storage_mut::<f32>()[..numel]
        .par_chunks_mut(rows * tk)
        .zip(y.par_chunks(rows * tk))
        .enumerate()
        .for_each(|(task, (g, y))| {
            let first = task * rows;
            ARCH.dispatch(CausalGradKernel {
                y,
                g,
                first,
                start,
                tq,
                tk,
            })
        });
    g
}

#[derive(Debug)]
struct CausalSoftmaxBackward;

impl Backward<Flex, 1> for CausalSoftmaxBackward {
    /// The softmax and the block's first query.
    type State = (FlexTensor, usize);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (y, start) = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |g| {
            causal_softmax_backward(&y, g, start)
        });
    }
}

/// Softmax over the last axis of `scores` `[.., tq, tk]` where row `i` (query `start + i`)
/// attends keys `0..=start + i` only, fused; or the scores back when they are not `f32` on flex
/// or have more queries than keys.
pub(crate) fn causal_softmax(scores: Tensor<4>, start: usize) -> Result<Tensor<4>, Tensor<4>> {
    let [_, _, tq, tk] = scores.dims();
    if tq == 0 || tk == 0 || start + tq > tk {
        return Err(scores);
    }
    Ok(match on_flex(scores)? {
        OnFlex::Tracked(ad) => {
            let (x, node) = ad.into_parts();
            let y = causal_softmax_forward(x, start);
            let out = match CausalSoftmaxBackward
                .prepare::<NoCheckpointing>([node])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => prep.finish((y.clone(), start), y),
                OpsKind::UnTracked(prep) => prep.finish(y),
            };
            Tensor::from_primitive::<Autodiff<Flex>>(out)
        }
        OnFlex::Plain(x) => Tensor::from_primitive::<Flex>(causal_softmax_forward(x, start)),
    })
}

// ------------------------------------------------------------------------------------------------
// Matrix products: the linear maps and attention's two products

/// A 2-D or 4-D flex tensor read where it lies: its start, the strides of the (up to two) batch
/// axes and the `[row, column]` strides of its matrices; `None` for another rank or a negative
/// stride.
#[derive(Debug, Clone, Copy)]
struct View {
    base: usize,
    batch: [usize; 2],
    mat: [usize; 2],
}

fn view(t: &FlexTensor) -> Option<View> {
    let s: Vec<usize> = t
        .layout()
        .strides()
        .iter()
        .map(|&v| usize::try_from(v).ok())
        .collect::<Option<_>>()?;
    let (batch, mat) = match s[..] {
        [r, c] => ([0, 0], [r, c]),
        [b0, b1, r, c] => ([b0, b1], [r, c]),
        _ => return None,
    };
    Some(View {
        base: t.layout().start_offset(),
        batch,
        mat,
    })
}

/// Operand of [`gemm_into::batched_matmul_new`]: `t`'s matrices as `v` describes them,
/// transposed when `transposed`.
fn operand(t: &FlexTensor, v: View, transposed: bool) -> gemm_into::Operand<'_> {
    gemm_into::Operand {
        data: t.storage(),
        base: v.base,
        batch: v.batch,
        mat: if transposed {
            [v.mat[1], v.mat[0]]
        } else {
            v.mat
        },
    }
}

/// The products of the operands, `[b0, b1, m, n]` (`[m, n]` for rank 2).
fn batched_product<const D: usize>(
    lhs: gemm_into::Operand<'_>,
    rhs: gemm_into::Operand<'_>,
    [b0, b1, m, n, k]: [usize; 5],
) -> FlexTensor {
    let out = gemm_into::batched_matmul_new(lhs, rhs, [b0, b1], [m, n, k])
        .unwrap_or_else(|| unreachable!("extents checked against the tensors' own layouts"));
    let shape = if D == 2 {
        vec![m, n]
    } else {
        vec![b0, b1, m, n]
    };
    FlexTensor::from_data(burn::tensor::TensorData::new(out, shape))
}

#[derive(Debug)]
struct MatmulBackward<const D: usize>;

/// What the backward pass of `a · b` keeps: both operands as they lie, their views, whether `b`
/// is read transposed, and `[b0, b1, m, n, k]`.
#[derive(Debug, Clone)]
struct MatmulState {
    a: FlexTensor,
    b: FlexTensor,
    views: [View; 2],
    b_transposed: bool,
    dims: [usize; 5],
}

impl<const D: usize> Backward<Flex, 2> for MatmulBackward<D> {
    type State = MatmulState;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let MatmulState {
            a,
            b,
            views: [va, vb],
            b_transposed: bt,
            dims: [b0, b1, m, n, k],
        } = ops.state;
        // The output's gradient, contiguous: [b0, b1, m, n].
        let gv = View {
            base: 0,
            batch: [b1 * m * n, m * n],
            mat: [n, 1],
        };
        binary::<Flex, _, _>(
            ops.parents,
            ops.node,
            grads,
            // dA = g Bᵀ, with B as the product read it: [m, n] · [n, k].
            |g| {
                let g = contiguous(g);
                let b_t = operand(&b, vb, !bt);
                batched_product::<D>(operand(&g, gv, false), b_t, [b0, b1, m, k, n])
            },
            // dB = Aᵀ g: [k, m] · [m, n]; for a `b` read transposed, its own gradient is
            // (Aᵀ g)ᵀ = gᵀ A: [n, m] · [m, k].
            |g| {
                let g = contiguous(g);
                if bt {
                    let a = operand(&a, va, false);
                    batched_product::<D>(operand(&g, gv, true), a, [b0, b1, n, k, m])
                } else {
                    let g = operand(&g, gv, false);
                    batched_product::<D>(operand(&a, va, true), g, [b0, b1, k, n, m])
                }
            },
        );
    }
}

/// `a · b` over the last two axes of `a` `[.., m, k]` and `b` `[.., k, n]` (or `[.., n, k]`
/// read transposed, when `b_transposed`), rank 2 or 4, with its own backward pass: each product
/// reads its operands where they lie (a PyTorch weight transposed, heads split by a transpose,
/// `k` transposed, slices of a block) instead of copying them, and writes a buffer of its own
/// that is never zeroed or copied, where Burn's matmul zeroes and then copies every output on
/// one thread. Both `f32` on flex with non-negative strides, both tracked or neither; or both
/// back, untouched.
fn matmul<const D: usize>(
    a: Tensor<D>,
    b: Tensor<D>,
    b_transposed: bool,
) -> Result<Tensor<D>, (Tensor<D>, Tensor<D>)> {
    let (ad, bd) = (a.dims(), b.dims());
    let batch = |d: &[usize; D]| if D == 4 { [d[0], d[1]] } else { [1, 1] };
    let (m, k) = (ad[D - 2], ad[D - 1]);
    let (kb, n) = if b_transposed {
        (bd[D - 1], bd[D - 2])
    } else {
        (bd[D - 2], bd[D - 1])
    };
    if !(D == 2 || D == 4) || batch(&ad) != batch(&bd) || k != kb {
        return Err((a, b));
    }
    let [b0, b1] = batch(&ad);
    let dims = [b0, b1, m, n, k];
    let a = match on_flex(a) {
        Ok(a) => a,
        Err(a) => return Err((a, b)),
    };
    let b = match on_flex(b) {
        Ok(b) => b,
        Err(b) => return Err((given_back(a), b)),
    };
    let views = |fa: &FlexTensor, fb: &FlexTensor| Some([view(fa)?, view(fb)?]);
    match (a, b) {
        (OnFlex::Tracked(a), OnFlex::Tracked(b)) => {
            let Some(views) = views(a.primitive(), b.primitive()) else {
                return Err((
                    given_back(OnFlex::Tracked(a)),
                    given_back(OnFlex::Tracked(b)),
                ));
            };
            let ((fa, a_node), (fb, b_node)) = (a.into_parts(), b.into_parts());
            let [va, vb] = views;
            let y = batched_product::<D>(
                operand(&fa, va, false),
                operand(&fb, vb, b_transposed),
                dims,
            );
            let out = match MatmulBackward::<D>
                .prepare::<NoCheckpointing>([a_node, b_node])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => {
                    let state = MatmulState {
                        a: fa,
                        b: fb,
                        views,
                        b_transposed,
                        dims,
                    };
                    prep.finish(state, y)
                }
                OpsKind::UnTracked(prep) => prep.finish(y),
            };
            Ok(Tensor::from_primitive::<Autodiff<Flex>>(out))
        }
        (OnFlex::Plain(fa), OnFlex::Plain(fb)) => match views(&fa, &fb) {
            Some([va, vb]) => Ok(Tensor::from_primitive::<Flex>(batched_product::<D>(
                operand(&fa, va, false),
                operand(&fb, vb, b_transposed),
                dims,
            ))),
            None => Err((
                Tensor::from_primitive::<Flex>(fa),
                Tensor::from_primitive::<Flex>(fb),
            )),
        },
        (a, b) => Err((given_back(a), given_back(b))),
    }
}

/// Attention's products, `a` `[b0, b1, m, k]` times `b` `[b0, b1, k, n]`: see [`matmul`].
pub(crate) fn batched_matmul(
    a: Tensor<4>,
    b: Tensor<4>,
) -> Result<Tensor<4>, (Tensor<4>, Tensor<4>)> {
    matmul(a, b, false)
}

/// `x Wᵀ` for `x` `[n, k]` and a weight `w` `[o, k]` stored as PyTorch stores it (read
/// transposed, never copied): see [`matmul`].
pub(crate) fn linear(x: Tensor<2>, w: Tensor<2>) -> Result<Tensor<2>, (Tensor<2>, Tensor<2>)> {
    matmul(x, w, true)
}

/// A tensor given back to the caller as it came.
fn given_back<const D: usize>(t: OnFlex) -> Tensor<D> {
    match t {
        OnFlex::Plain(x) => Tensor::from_primitive::<Flex>(x),
        OnFlex::Tracked(ad) => Tensor::from_primitive::<Autodiff<Flex>>(ad),
    }
}

// ------------------------------------------------------------------------------------------------
// LayerNorm without parameters

/// Rows of a LayerNorm forward: `y = (x − mean) / sqrt(var + eps)` (biased variance), each
/// row's `1 / sqrt(var + eps)` kept for the backward pass.
struct LayerNormRowsKernel<'a> {
    x: &'a [f32],
    y: &'a mut [f32],
    inv_std: &'a mut [f32],
    d: usize,
    eps: f32,
}

impl pulp::WithSimd for LayerNormRowsKernel<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let d = self.d;
        let rows = self.x.chunks_exact(d).zip(self.y.chunks_exact_mut(d));
        for ((x, y), inv_std) in rows.zip(self.inv_std.iter_mut()) {
            let mean = sum_lanes(x) / d as f32;
            for (y, &x) in y.iter_mut().zip(x) {
                *y = x - mean;
            }
            let var = dot_lanes(y, y) / d as f32;
            let std = (var + self.eps).sqrt();
            for y in y.iter_mut() {
                *y /= std;
            }
            *inv_std = 1.0 / std;
        }
    }
}

/// Rows of a LayerNorm backward, in place over the output's gradient `g`:
/// `dx = (g − mean(g) − y · mean(g y)) / sqrt(var + eps)`.
struct LayerNormGradKernel<'a> {
    g: &'a mut [f32],
    y: &'a [f32],
    inv_std: &'a [f32],
    d: usize,
}

impl pulp::WithSimd for LayerNormGradKernel<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let d = self.d;
        let rows = self.g.chunks_exact_mut(d).zip(self.y.chunks_exact(d));
        for ((g, y), &inv_std) in rows.zip(self.inv_std) {
            let mean_g = sum_lanes(g) / d as f32;
            let mean_gy = dot_lanes(g, y) / d as f32;
            for (g, &y) in g.iter_mut().zip(y) {
                *g = (*g - mean_g - y * mean_gy) * inv_std;
            }
        }
    }
}

/// `Σ x`, summed in lanes.
#[inline(always)]
fn sum_lanes(x: &[f32]) -> f32 {
    let mut lanes = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (s, &v) in lanes.iter_mut().zip(c) {
            *s += v;
        }
    }
    tail + lanes.iter().sum::<f32>()
}

/// Forward over the last axis of `x`: the normalised rows (a new buffer: the residual stream
/// still holds `x`) and each row's `1 / sqrt(var + eps)`.
fn layer_norm_forward(x: FlexTensor, eps: f32) -> (FlexTensor, std::sync::Arc<[f32]>) {
    let dims = x.layout().shape().to_vec();
    let d = dims[dims.len() - 1];
    let numel: usize = dims.iter().product();
    let n = numel / d.max(1);
    let x = contiguous(x);
    let xs: &[f32] = &x.storage()[..numel];
    let mut y = vec![0f32; numel];
    let mut inv_std = vec![0f32; n];
    let rows = rows_per_task(d);
    y.par_chunks_mut(rows * d)
        .zip(xs.par_chunks(rows * d))
        .zip(inv_std.par_chunks_mut(rows))
        .for_each(|((y, x), inv_std)| {
            ARCH.dispatch(LayerNormRowsKernel {
                x,
                y,
                inv_std,
                d,
                eps,
            })
        });
    let y = FlexTensor::from_data(burn::tensor::TensorData::new(y, dims));
    (y, inv_std.into())
}

fn layer_norm_backward(y: &FlexTensor, inv_std: &[f32], grad: FlexTensor) -> FlexTensor {
    let dims = y.layout().shape().to_vec();
    let d = dims[dims.len() - 1];
    let numel: usize = dims.iter().product();
    let mut g = contiguous(grad);
    let y: &[f32] = &y.storage()[..numel];
    let rows = rows_per_task(d);
    g.storage_mut::<f32>()[..numel]
        .par_chunks_mut(rows * d)
        .zip(y.par_chunks(rows * d))
        .zip(inv_std.par_chunks(rows))
        .for_each(|((g, y), inv_std)| ARCH.dispatch(LayerNormGradKernel { g, y, inv_std, d }));
    g
}

#[derive(Debug)]
struct LayerNormBackward;

impl Backward<Flex, 1> for LayerNormBackward {
    /// The normalised rows and each row's `1 / sqrt(var + eps)`.
    type State = (FlexTensor, std::sync::Arc<[f32]>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (y, inv_std) = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |g| {
            layer_norm_backward(&y, &inv_std, g)
        });
    }
}

/// LayerNorm without parameters over the last axis of `x`, fused (one multi-threaded pass each
/// way, where the composed form is 7 single-threaded operations, each with its own backward); or
/// `x` back when it is not `f32` on flex.
pub(crate) fn layer_norm<const D: usize>(x: Tensor<D>, eps: f64) -> Result<Tensor<D>, Tensor<D>> {
    if x.dims()[D - 1] == 0 {
        return Err(x);
    }
    let eps = eps as f32;
    Ok(match on_flex(x)? {
        OnFlex::Tracked(ad) => {
            let (x, node) = ad.into_parts();
            let (y, inv_std) = layer_norm_forward(x, eps);
            let out = match LayerNormBackward
                .prepare::<NoCheckpointing>([node])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => prep.finish((y.clone(), inv_std), y),
                OpsKind::UnTracked(prep) => prep.finish(y),
            };
            Tensor::from_primitive::<Autodiff<Flex>>(out)
        }
        OnFlex::Plain(x) => Tensor::from_primitive::<Flex>(layer_norm_forward(x, eps).0),
    })
}

// ------------------------------------------------------------------------------------------------
// Inference: GroupNorm (+ SiLU) and the argmax over channels, for the VQ tokenizer on flex

/// `t` as a plain (no autodiff) `f32` flex tensor, or `t` back.
fn plain_flex<const D: usize>(t: Tensor<D>) -> Result<FlexTensor, Tensor<D>> {
    match on_flex(t)? {
        OnFlex::Plain(x) => Ok(x),
        OnFlex::Tracked(ad) => Err(Tensor::from_primitive::<Autodiff<Flex>>(ad)),
    }
}

/// `y · sigmoid(y)`, with the exponential's argument kept non-positive.
#[inline(always)]
fn silu(y: f32) -> f32 {
    let e = exp_nonpositive(-y.abs());
    let s = if y >= 0.0 {
        1.0 / (1.0 + e)
    } else {
        e / (1.0 + e)
    };
    y * s
}

/// One (image, group) block of `channels × hw` values, normalised in place.
struct GroupNormKernel<'a> {
    x: &'a mut [f32],
    /// Per channel of the group: scale (γ) and shift (β).
    gamma: &'a [f32],
    beta: &'a [f32],
    hw: usize,
    eps: f64,
    silu: bool,
}

impl pulp::WithSimd for GroupNormKernel<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let n = self.x.len() as f64;
        // Two passes, summed in f64 lanes: the mean, then the biased variance about it.
        let mut lanes = [0f64; 8];
        let chunks = self.x.chunks_exact(8);
        let mut sum: f64 = chunks.remainder().iter().map(|&v| f64::from(v)).sum();
        for c in chunks {
            for (l, &v) in lanes.iter_mut().zip(c) {
                *l += f64::from(v);
            }
        }
        let mean = (sum + lanes.iter().sum::<f64>()) / n;
        lanes = [0f64; 8];
        let chunks = self.x.chunks_exact(8);
        sum = chunks
            .remainder()
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum();
        for c in chunks {
            for (l, &v) in lanes.iter_mut().zip(c) {
                let d = f64::from(v) - mean;
                *l += d * d;
            }
        }
        let var = (sum + lanes.iter().sum::<f64>()) / n;
        let rstd = 1.0 / (var + self.eps).sqrt();
        for ((x, &g), &b) in self
            .x
            .chunks_exact_mut(self.hw)
            .zip(self.gamma)
            .zip(self.beta)
        {
            let scale = (rstd * f64::from(g)) as f32;
            let shift = (f64::from(b) - mean * rstd * f64::from(g)) as f32;
            if self.silu {
                for v in x.iter_mut() {
                    *v = silu(*v * scale + shift);
                }
            } else {
                for v in x.iter_mut() {
                    *v = *v * scale + shift;
                }
            }
        }
    }
}

/// GroupNorm of `x` `[b, c, h, w]` (statistics over each group's `c / groups` channels and all
/// positions, biased variance, as PyTorch), scaled by `gamma` and shifted by `beta` per channel,
/// then SiLU when `silu`; fused, or `x` back when it is not a plain `f32` flex tensor (autodiff
/// included: training composes it) or the shapes do not fit.
pub(crate) fn group_norm(
    x: Tensor<4>,
    gamma: &[f32],
    beta: &[f32],
    groups: usize,
    eps: f64,
    silu: bool,
) -> Result<Tensor<4>, Tensor<4>> {
    let [b, c, h, w] = x.dims();
    if groups == 0 || c == 0 || c % groups != 0 || gamma.len() != c || beta.len() != c || h * w == 0
    {
        return Err(x);
    }
    let mut y = contiguous(plain_flex(x)?);
    let (per_group, hw) = (c / groups, h * w);
    let params = gamma
        .chunks_exact(per_group)
        .zip(beta.chunks_exact(per_group));
    let params: Vec<_> = (0..b).flat_map(|_| params.clone()).collect();
    y.storage_mut::<f32>()[..b * c * hw]
        .par_chunks_mut(per_group * hw)
        .zip(params)
        .for_each(|(x, (gamma, beta))| {
            ARCH.dispatch(GroupNormKernel {
                x,
                gamma,
                beta,
                hw,
                eps,
                silu,
            })
        });
    Ok(Tensor::from_primitive::<Flex>(y))
}

/// Positions per argmax task.
const ARGMAX_POSITIONS: usize = 256;

/// The first maximal channel at each of `best.len()` positions, the channels `stride` apart in `x`.
struct ArgmaxKernel<'a> {
    x: &'a [f32],
    best: &'a mut [f32],
    index: &'a mut [i64],
    channels: usize,
    stride: usize,
}

impl pulp::WithSimd for ArgmaxKernel<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let n = self.best.len();
        self.best.copy_from_slice(&self.x[..n]);
        self.index.fill(0);
        for ch in 1..self.channels {
            let row = &self.x[ch * self.stride..ch * self.stride + n];
            for ((b, i), &v) in self.best.iter_mut().zip(self.index.iter_mut()).zip(row) {
                // As Burn's argmax: the first NaN wins and keeps its place.
                let better = !b.is_nan() && (v.is_nan() || v > *b);
                *b = if better { v } else { *b };
                *i = if better { ch as i64 } else { *i };
            }
        }
    }
}

/// `x.argmax(1)` of `x` `[b, c, h, w]` as `[b, h, w]` (the first maximal channel, or the first
/// NaN, as Burn's), reading each channel's plane in order rather than striding across planes per
/// position; or `x` back when it is not a plain `f32` flex tensor.
pub(crate) fn argmax_channels(x: Tensor<4>) -> Result<Tensor<3, burn::tensor::Int>, Tensor<4>> {
    let [b, c, h, w] = x.dims();
    if c == 0 || h * w == 0 {
        return Err(x);
    }
    let x = contiguous(plain_flex(x)?);
    let v: &[f32] = x.storage();
    let hw = h * w;
    let mut best = vec![0f32; b * hw];
    let mut index = vec![0i64; b * hw];
    best.par_chunks_mut(hw)
        .zip(index.par_chunks_mut(hw))
        .enumerate()
        .for_each(|(image, (best, index))| {
            best.par_chunks_mut(ARGMAX_POSITIONS)
                .zip(index.par_chunks_mut(ARGMAX_POSITIONS))
                .enumerate()
                .for_each(|(task, (best, index))| {
                    let first = image * c * hw + task * ARGMAX_POSITIONS;
                    let x = &v[first..first + (c - 1) * hw + best.len()];
                    ARCH.dispatch(ArgmaxKernel {
                        x,
                        best,
                        index,
                        channels: c,
                        stride: hw,
                    })
                })
        });
    let data = burn::tensor::TensorData::new(index, [b, h, w]);
    Ok(Tensor::from_primitive::<Flex>(FlexTensor::from_data(data)))
}

/// Elements of one band's column matrix in [`conv3x3`] (16 MiB of `f32`).
const CONV_BAND_ELEMS: usize = 4 << 20;

/// Input channels from which a stride-1 [`conv3x3`] runs as Winograd's F(2 × 2, 3 × 3): below,
/// its 16 products are too thin (an image's 3 channels) to pay for writing 16 values per tile.
const WINOGRAD_MIN_CHANNELS: usize = 16;

/// How [`conv3x3_in_bands`] computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConvMethod {
    /// One product of the weights by a band's column matrix.
    Columns,
    /// Winograd's F(2 × 2, 3 × 3), stride 1 only ([`winograd`]).
    Winograd,
}

/// A 3 × 3 convolution of `x` `[b, ci, h, w]` by `weight` `[co, ci, 3, 3]` (+ `bias` `[co]`), of
/// stride 1 or 2, zero padding `pad` (top, left, bottom, right). At stride 1 from
/// [`WINOGRAD_MIN_CHANNELS`] input channels it is Winograd's F(2 × 2, 3 × 3), 2.25 times fewer
/// multiply-adds ([`winograd`]). Otherwise it is one matrix product per band of output rows: the
/// band's column matrix `[9 ci, rows · ow]` is built from shifted rows of the NCHW planes
/// (whole-row copies at stride 1), and `weight` as `[co, 9 ci]` multiplies it straight into NCHW
/// output. flex's own convolution transposes the input to NHWC and gathers its columns element
/// by element. `x` comes back when it is not a plain `f32` flex tensor (autodiff included) or the
/// shapes do not fit; the caller checks the dilation (1) and groups (1).
pub(crate) fn conv3x3(
    x: Tensor<4>,
    weight: &Tensor<4>,
    bias: Option<&Tensor<1>>,
    stride: usize,
    pad: [usize; 4],
) -> Result<Tensor<4>, Tensor<4>> {
    let [_, ci, _, _] = x.dims();
    let method = if stride == 1 && ci >= WINOGRAD_MIN_CHANNELS {
        ConvMethod::Winograd
    } else {
        ConvMethod::Columns
    };
    let band_elems = match method {
        ConvMethod::Columns => CONV_BAND_ELEMS,
        ConvMethod::Winograd => winograd::WINOGRAD_BAND_ELEMS,
    };
    conv3x3_in_bands(x, weight, bias, stride, pad, band_elems, method)
}

/// The geometry of one [`conv3x3`].
#[derive(Debug, Clone, Copy)]
struct Taps {
    h: usize,
    w: usize,
    ow: usize,
    stride: usize,
    top: usize,
    left: usize,
}

/// [`conv3x3`] by `method`, with column matrices (or transformed tiles) of at most `band_elems`
/// elements (at least one row).
fn conv3x3_in_bands(
    x: Tensor<4>,
    weight: &Tensor<4>,
    bias: Option<&Tensor<1>>,
    stride: usize,
    [top, left, bottom, right]: [usize; 4],
    band_elems: usize,
    method: ConvMethod,
) -> Result<Tensor<4>, Tensor<4>> {
    let [b, ci, h, w] = x.dims();
    let [co, wci, kh, kw] = weight.dims();
    let (ph, pw) = (h + top + bottom, w + left + right);
    let empty = [ci, co, h, w].contains(&0);
    if wci != ci || kh != 3 || kw != 3 || empty || !(1..=2).contains(&stride) || ph < 3 || pw < 3 {
        return Err(x);
    }
    if method == ConvMethod::Winograd && stride != 1 {
        return Err(x);
    }
    if bias.is_some_and(|b| b.dims() != [co]) {
        return Err(x);
    }
    let (oh, ow) = ((ph - 3) / stride + 1, (pw - 3) / stride + 1);
    // Read, never written: kept to hand back should a step below not apply after all.
    let original = x.clone();
    // The input first: the parameters are read to the host only for a flex input.
    let x = contiguous(plain_flex(x)?);
    let bias: Vec<f32> = match bias.map(|b| crate::read::read_f32(b.clone(), "bias")) {
        Some(Ok(v)) => v,
        Some(Err(_)) => return Err(original),
        None => vec![0.0; co],
    };
    let Ok(weight) = plain_flex(weight.clone()) else {
        return Err(original);
    };
    let weight = contiguous(weight);
    let weight: &[f32] = &weight.storage::<f32>()[..co * ci * 9];
    let xv: &[f32] = x.storage();
    let out = match method {
        ConvMethod::Winograd => {
            let geometry = winograd::Geometry {
                ci,
                co,
                h,
                w,
                oh,
                ow,
                top,
                left,
            };
            winograd::conv3x3_winograd(xv, b, weight, &bias, geometry, band_elems)
        }
        ConvMethod::Columns => {
            let taps = Taps {
                h,
                w,
                ow,
                stride,
                top,
                left,
            };
            conv3x3_columns(xv, b, [ci, co, oh], weight, &bias, taps, band_elems)
        }
    };
    let Some(out) = out else {
        return Err(original);
    };
    let data = burn::tensor::TensorData::new(out, [b, co, oh, ow]);
    Ok(Tensor::from_primitive::<Flex>(FlexTensor::from_data(data)))
}

/// The column path of [`conv3x3_in_bands`] over the contiguous `[b, ci, h, w]` values `xv`, as
/// `[b, co, oh, ow]` values; `None` should a product's extents not fit its buffers (they
/// always do).
fn conv3x3_columns(
    xv: &[f32],
    b: usize,
    [ci, co, oh]: [usize; 3],
    weight: &[f32],
    bias: &[f32],
    taps: Taps,
    band_elems: usize,
) -> Option<Vec<f32>> {
    let Taps { h, w, ow, .. } = taps;
    let (k, hw, ohw) = (9 * ci, h * w, oh * ow);
    let band = (band_elems / (k * ow)).clamp(1, oh);
    let mut out = vec![0f32; b * co * ohw];
    // Each band of rows starts as the bias, and the product adds to it in place.
    out.par_chunks_mut(ohw)
        .enumerate()
        .for_each(|(i, plane)| plane.fill(bias[i % co]));
    // One column buffer for every band: each band overwrites all of its part.
    let mut cols = vec![0f32; k * band * ow];
    for img in 0..b {
        let planes = &xv[img * ci * hw..(img + 1) * ci * hw];
        for y0 in (0..oh).step_by(band) {
            let rows = band.min(oh - y0);
            let n = rows * ow;
            cols[..k * n]
                .par_chunks_mut(9 * n)
                .zip(planes.par_chunks(hw))
                .for_each(|(block, plane)| shifted_rows(block, plane, y0, rows, taps));
            // weight `[co, 9 ci]` times the columns `[9 ci, n]`, straight into rows y0.. of
            // every output plane of this image (planes ohw apart).
            let dst = &mut out[img * co * ohw + y0 * ow..(img + 1) * co * ohw];
            if !gemm_into::matmul_into(dst, ohw, weight, k, &cols, n, [co, n, k], true, true) {
                return None;
            }
        }
    }
    Some(out)
}

/// The nine rows (ky, kx) of one input channel's column block for output rows `y0..y0+rows`:
/// row (ky, kx) holds, at output (y, x), the input at (y·s + ky − top, x·s + kx − left), 0
/// outside the plane.
fn shifted_rows(block: &mut [f32], plane: &[f32], y0: usize, rows: usize, t: Taps) {
    let n = rows * t.ow;
    for (tap, row) in block.chunks_exact_mut(n).enumerate() {
        let (ky, kx) = (tap / 3, tap % 3);
        for (r, dst) in row.chunks_exact_mut(t.ow).enumerate() {
            let iy = ((y0 + r) * t.stride + ky)
                .checked_sub(t.top)
                .filter(|&iy| iy < t.h);
            let Some(iy) = iy else {
                dst.fill(0.0);
                continue;
            };
            let src = &plane[iy * t.w..(iy + 1) * t.w];
            if t.stride == 1 {
                // dst[x] = src[x + kx − left]: a run of whole copies between zero edges.
                let lo = t.left.saturating_sub(kx).min(t.ow);
                let hi = (t.w + t.left).saturating_sub(kx).clamp(lo, t.ow);
                dst[..lo].fill(0.0);
                if hi > lo {
                    // lo ≥ left − kx here (lo was not clamped to ow), so no underflow.
                    dst[lo..hi].copy_from_slice(&src[lo + kx - t.left..hi + kx - t.left]);
                }
                dst[hi..].fill(0.0);
            } else {
                for (x, d) in dst.iter_mut().enumerate() {
                    let ix = (x * t.stride + kx)
                        .checked_sub(t.left)
                        .filter(|&ix| ix < t.w);
                    *d = ix.map_or(0.0, |ix| src[ix]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::activation::{log_softmax, softmax};
    use burn::tensor::{Device, Int, TensorData};
    use cm3_core::rng::SplitMix64;

    use super::*;

    fn read(t: Tensor<1>) -> Vec<f32> {
        t.into_data().try_into_vec_as::<f32>().expect("f32 values")
    }

    fn random(n: usize, scale: f32, seed: u64) -> Vec<f32> {
        let mut rng = SplitMix64::new(seed);
        (0..n)
            .map(|_| (rng.next_f64() as f32 * 2.0 - 1.0) * scale)
            .collect()
    }

    /// Largest difference relative to the largest magnitude of `want` (at least 1).
    fn worst(got: &[f32], want: &[f32]) -> f32 {
        assert_eq!(got.len(), want.len());
        assert!(!want.is_empty(), "nothing compared");
        let scale = want.iter().map(|x| x.abs()).fold(1.0, f32::max);
        got.iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max)
            / scale
    }

    /// `got` within `tol` of `want`, as [`worst`] measures it.
    fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
        let w = worst(got, want);
        assert!(w < tol, "{what}: {w}");
    }

    #[test]
    fn exp_is_within_three_ulp_of_libm_and_keeps_nan() {
        let mut max_rel = 0f64;
        for i in 0..=200_000 {
            let x = -87.0 * i as f32 / 200_000.0;
            let want = f64::from(x).exp();
            let rel = ((f64::from(exp_nonpositive(x)) - want) / want).abs();
            max_rel = max_rel.max(rel);
        }
        assert!(max_rel < 3.6e-7, "largest relative error {max_rel}");
        assert!(exp_nonpositive(f32::NAN).is_nan());
        assert_eq!(exp_nonpositive(0.0), 1.0);
        // Far below the range: the smallest normal value, 0 for any sum it joins.
        for x in [-100.0, -1e30, f32::NEG_INFINITY] {
            let e = exp_nonpositive(x);
            assert!((f32::MIN_POSITIVE..1.3e-38).contains(&e), "exp({x}) = {e}");
        }
    }

    /// The fused loss and its gradient equal the composed `-log_softmax(x)[t]`'s, on an autodiff
    /// flex device, over rows that are not a multiple of the lanes or the rows per task.
    #[test]
    fn fused_nll_matches_the_composed_log_softmax() {
        let device = Device::flex().autodiff();
        let (n, v) = (37, 1_001);
        let x = random(n * v, 30.0, 1);
        let targets: Vec<u32> = (0..n as u32).map(|i| (i * 97 + 5) % v as u32).collect();
        let w = random(n, 1.0, 2);
        let run = |fused: bool| {
            let logits =
                Tensor::<2>::from_data(TensorData::new(x.clone(), [n, v]), &device).require_grad();
            let nll = if fused {
                nll_rows(logits.clone(), &targets).expect("f32 on flex")
            } else {
                let t: Vec<i64> = targets.iter().map(|&t| i64::from(t)).collect();
                let t = Tensor::<2, Int>::from_data(TensorData::new(t, [n, 1]), &device);
                log_softmax(logits.clone(), 1)
                    .gather(1, t)
                    .reshape([n])
                    .neg()
            };
            let weights = Tensor::<1>::from_data(TensorData::new(w.clone(), [n]), &device);
            let grads = (nll.clone() * weights).sum().backward();
            let g = logits.grad(&grads).expect("a gradient");
            (
                read(nll),
                g.into_data().try_into_vec_as::<f32>().expect("f32 values"),
            )
        };
        let (fused, fused_grad) = run(true);
        let (composed, composed_grad) = run(false);
        assert_close(&fused, &composed, 1e-6, "loss");
        assert_close(&fused_grad, &composed_grad, 1e-6, "gradient");
        // Without autodiff: the same values.
        let plain = Tensor::<2>::from_data(TensorData::new(x.clone(), [n, v]), &Device::flex());
        let values = read(nll_rows(plain, &targets).expect("f32 on flex"));
        assert!(worst(&values, &composed) < 1e-6);
    }

    #[test]
    fn fused_nll_of_a_nan_row_is_nan_and_bad_targets_are_refused() {
        let device = Device::flex();
        let mut x = random(3 * 40, 5.0, 3);
        x[40 + 7] = f32::NAN;
        let logits = Tensor::<2>::from_data(TensorData::new(x, [3, 40]), &device);
        let nll = read(nll_rows(logits.clone(), &[1, 2, 3]).expect("f32 on flex"));
        assert!(
            nll[0].is_finite() && nll[1].is_nan() && nll[2].is_finite(),
            "{nll:?}"
        );
        // A target outside the vocabulary is for the caller to report: no fused result.
        assert!(nll_rows(logits.clone(), &[1, 40, 3]).is_err());
        assert!(nll_rows(logits, &[1, 2]).is_err());
    }

    /// A block of queries starting at `start` attends keys `0..=start + i`: values and gradients
    /// equal the composed softmax under the −∞ mask.
    #[test]
    fn fused_causal_softmax_matches_the_masked_softmax() {
        let device = Device::flex().autodiff();
        let (b, h, tq, start) = (2, 3, 21, 11);
        let tk = start + tq;
        let shape = [b, h, tq, tk];
        let n = b * h * tq * tk;
        let x = random(n, 8.0, 4);
        let w = random(n, 1.0, 5);
        let mut mask = vec![0f32; tq * tk];
        for i in 0..tq {
            for j in start + i + 1..tk {
                mask[i * tk + j] = f32::NEG_INFINITY;
            }
        }
        let run = |fused: bool| {
            let s =
                Tensor::<4>::from_data(TensorData::new(x.clone(), shape), &device).require_grad();
            let y = if fused {
                causal_softmax(s.clone(), start).expect("f32 on flex")
            } else {
                let m =
                    Tensor::<4>::from_data(TensorData::new(mask.clone(), [1, 1, tq, tk]), &device);
                softmax(s.clone() + m, 3)
            };
            let weights = Tensor::<4>::from_data(TensorData::new(w.clone(), shape), &device);
            let grads = (y.clone() * weights).sum().backward();
            let g = s.grad(&grads).expect("a gradient");
            (
                y.into_data().try_into_vec_as::<f32>().expect("f32 values"),
                g.into_data().try_into_vec_as::<f32>().expect("f32 values"),
            )
        };
        let (fused, fused_grad) = run(true);
        let (composed, composed_grad) = run(false);
        assert_close(&fused, &composed, 1e-6, "softmax");
        assert_close(&fused_grad, &composed_grad, 1e-6, "gradient");
        // Above the diagonal: exactly 0.
        assert_eq!(fused[tk - 1], 0.0);
        // More queries than keys allow is not this kernel's: no result.
        let s = Tensor::<4>::from_data(TensorData::new(x, shape), &device);
        assert!(causal_softmax(s, start + 1).is_err());
    }

    /// `x Wᵀ` equals Burn's matmul forward and back (both gradients), for a contiguous `x` and
    /// for a transposed view of one, without autodiff too; a tracked `x` with a plain weight is
    /// handed back for the caller's matmul.
    #[test]
    fn fused_linear_matches_burns_matmul() {
        let (n, k, o) = (45, 37, 19);
        let (xv, wv, gv) = (
            random(n * k, 2.0, 9),
            random(o * k, 1.0, 10),
            random(n * o, 1.0, 11),
        );
        let device = Device::flex().autodiff();
        let floats = |t: Tensor<2>| t.into_data().try_into_vec_as::<f32>().expect("f32");
        for transposed in [false, true] {
            let run = |fused: bool| {
                let x = if transposed {
                    let stored: Vec<f32> = (0..k * n).map(|i| xv[(i % n) * k + i / n]).collect();
                    Tensor::<2>::from_data(TensorData::new(stored, [k, n]), &device).require_grad()
                } else {
                    Tensor::<2>::from_data(TensorData::new(xv.clone(), [n, k]), &device)
                        .require_grad()
                };
                let input = if transposed {
                    x.clone().transpose()
                } else {
                    x.clone()
                };
                let w = Tensor::<2>::from_data(TensorData::new(wv.clone(), [o, k]), &device)
                    .require_grad();
                let y = if fused {
                    linear(input, w.clone())
                        .map_err(|_| "refused")
                        .expect("f32 on flex")
                } else {
                    input.matmul(w.clone().transpose())
                };
                let g = Tensor::<2>::from_data(TensorData::new(gv.clone(), [n, o]), &device);
                let grads = (y.clone() * g).sum().backward();
                (
                    floats(y),
                    floats(x.grad(&grads).expect("dx")),
                    floats(w.grad(&grads).expect("dw")),
                )
            };
            let (y, dx, dw) = run(true);
            let (want_y, want_dx, want_dw) = run(false);
            assert_close(&y, &want_y, 1e-6, "x Wᵀ");
            assert_close(&dx, &want_dx, 1e-6, "dx");
            assert_close(&dw, &want_dw, 1e-6, "dW");
        }
        let plain = |v: &[f32], shape: [usize; 2]| {
            Tensor::<2>::from_data(TensorData::new(v.to_vec(), shape), &Device::flex())
        };
        let y = linear(plain(&xv, [n, k]), plain(&wv, [o, k])).map_err(|_| "refused");
        let want = plain(&xv, [n, k]).matmul(plain(&wv, [o, k]).transpose());
        assert_close(&floats(y.expect("plain")), &floats(want), 1e-6, "plain");
        let x = Tensor::<2>::from_data(TensorData::new(xv.clone(), [n, k]), &device).require_grad();
        let w = Tensor::<2>::from_data(TensorData::new(wv.clone(), [o, k]), &Device::flex());
        assert!(linear(x, w).is_err(), "a tracked x with a plain weight");
    }

    /// Attention's products equal Burn's matmul forward and back on the views attention makes:
    /// heads split by a transpose, a block of queries sliced out (a start offset), keys
    /// transposed; and on plain contiguous tensors.
    #[test]
    fn fused_batched_matmul_matches_burns_matmul_on_views() {
        let (b, t, h, hd) = (2, 13, 3, 8);
        let (s, e) = (4, 11);
        let device = Device::flex().autodiff();
        let (qv, kv) = (
            random(b * t * h * hd, 1.5, 12),
            random(b * t * h * hd, 1.5, 13),
        );
        let gv = random(b * h * (e - s) * e, 1.0, 14);
        let floats = |t: Tensor<4>| t.into_data().try_into_vec_as::<f32>().expect("f32");
        let run = |fused: bool| {
            let leaf = |v: &[f32]| {
                Tensor::<4>::from_data(TensorData::new(v.to_vec(), [b, t, h, hd]), &device)
                    .require_grad()
            };
            let (q0, k0) = (leaf(&qv), leaf(&kv));
            let q = q0.clone().swap_dims(1, 2).slice([0..b, 0..h, s..e, 0..hd]);
            let k = k0
                .clone()
                .swap_dims(1, 2)
                .slice([0..b, 0..h, 0..e, 0..hd])
                .swap_dims(2, 3);
            let y = if fused {
                batched_matmul(q, k)
                    .map_err(|_| "refused")
                    .expect("f32 on flex")
            } else {
                q.matmul(k)
            };
            let g = Tensor::<4>::from_data(TensorData::new(gv.clone(), [b, h, e - s, e]), &device);
            let grads = (y.clone() * g).sum().backward();
            let (dq, dk) = (q0.grad(&grads).expect("dq"), k0.grad(&grads).expect("dk"));
            (floats(y), floats(dq), floats(dk))
        };
        let (y, dq, dk) = run(true);
        let (want_y, want_dq, want_dk) = run(false);
        assert_close(&y, &want_y, 1e-6, "q kᵀ");
        assert_close(&dq, &want_dq, 1e-6, "dq");
        assert_close(&dk, &want_dk, 1e-6, "dk");
        let plain = |v: &[f32], shape: [usize; 4]| {
            Tensor::<4>::from_data(TensorData::new(v.to_vec(), shape), &Device::flex())
        };
        let (a, c) = (plain(&qv, [b, h, t, hd]), plain(&kv, [b, h, hd, t]));
        let got = batched_matmul(a.clone(), c.clone()).map_err(|_| "refused");
        assert_close(
            &floats(got.expect("plain")),
            &floats(a.matmul(c)),
            1e-6,
            "plain",
        );
    }

    /// LayerNorm equals the composed form (the decoder's before this kernel) forward and back,
    /// with `x` also used beside it (a residual stream: the kernel must leave it as it was), at
    /// a width that is not a multiple of the lanes and at the bench model's 256, with and
    /// without autodiff.
    #[test]
    fn fused_layer_norm_matches_the_composed_one() {
        use crate::decoder::layer_norm_composed;
        for (shape, seed) in [([3, 7, 37], 6), ([2, 5, 256], 8)] {
            let n: usize = shape.iter().product();
            // An offset and a spread per row, as a residual stream has.
            let x: Vec<f32> = random(n, 3.0, seed)
                .iter()
                .enumerate()
                .map(|(i, v)| v * (1.0 + (i / shape[2] % 5) as f32) + (i / shape[2]) as f32 * 0.7)
                .collect();
            let (w1, w2) = (random(n, 1.0, seed + 1), random(n, 1.0, seed + 2));
            let device = Device::flex().autodiff();
            let t = |v: &[f32]| Tensor::<3>::from_data(TensorData::new(v.to_vec(), shape), &device);
            let run = |fused: bool| {
                let x = t(&x).require_grad();
                let y = if fused {
                    layer_norm(x.clone(), 1e-5).expect("f32 on flex")
                } else {
                    layer_norm_composed(x.clone(), 1e-5)
                };
                let out = x.clone() * t(&w1) + y.clone() * t(&w2);
                let grads = out.sum().backward();
                let g = x.grad(&grads).expect("a gradient");
                (
                    y.into_data().try_into_vec_as::<f32>().expect("f32 values"),
                    g.into_data().try_into_vec_as::<f32>().expect("f32 values"),
                )
            };
            let (fused, fused_grad) = run(true);
            let (composed, composed_grad) = run(false);
            assert_close(&fused, &composed, 2e-6, "layer norm");
            assert_close(&fused_grad, &composed_grad, 2e-6, "gradient");
            // Without autodiff: the same values.
            let plain = Tensor::<3>::from_data(TensorData::new(x.clone(), shape), &Device::flex());
            let plain = layer_norm(plain, 1e-5).expect("f32 on flex");
            let plain = plain.into_data().try_into_vec_as::<f32>().expect("f32");
            assert_eq!(plain, fused);
        }
    }

    /// GroupNorm (+ SiLU) equals Burn's GroupNorm module (then `silu`) within 1e-5, on a shape
    /// whose planes are not a multiple of the lanes.
    #[test]
    fn fused_group_norm_matches_burns_module() {
        use burn::nn::GroupNormConfig;
        let device = Device::flex();
        let (b, c, h, w, groups) = (2, 64, 5, 7, 32);
        let x = random(b * c * h * w, 3.0, 6)
            .iter()
            .map(|v| v + 1.5)
            .collect::<Vec<_>>();
        let gamma = random(c, 2.0, 7);
        let beta = random(c, 1.0, 8);
        let mut module = GroupNormConfig::new(groups, c)
            .with_epsilon(1e-6)
            .init(&device);
        let param = |v: &[f32]| {
            burn::module::Param::from_tensor(Tensor::<1>::from_data(
                TensorData::new(v.to_vec(), [c]),
                &device,
            ))
        };
        module.gamma = Some(param(&gamma));
        module.beta = Some(param(&beta));
        let input = || Tensor::<4>::from_data(TensorData::new(x.clone(), [b, c, h, w]), &device);
        for then_silu in [false, true] {
            let want = module.forward(input());
            let want = if then_silu {
                burn::tensor::activation::silu(want)
            } else {
                want
            };
            let got = group_norm(input(), &gamma, &beta, groups, 1e-6, then_silu)
                .unwrap_or_else(|_| panic!("f32 on flex"));
            let (got, want) = (
                read(got.reshape([b * c * h * w])),
                read(want.reshape([b * c * h * w])),
            );
            assert!(
                worst(&got, &want) < 1e-5,
                "silu {then_silu}: {}",
                worst(&got, &want)
            );
        }
        // Channels that do not split into the groups, or an autodiff input: handed back.
        assert!(group_norm(input(), &gamma, &beta, 3, 1e-6, false).is_err());
        let tracked =
            Tensor::<4>::from_data(TensorData::new(x.clone(), [b, c, h, w]), &device.autodiff());
        assert!(group_norm(tracked, &gamma, &beta, groups, 1e-6, false).is_err());
    }

    /// The channel argmax equals Burn's `argmax(1)`, ties included (the first maximal channel).
    #[test]
    fn fused_argmax_over_channels_matches_burn() {
        let device = Device::flex();
        let (b, c, h, w) = (2, 300, 17, 19);
        // Few distinct values: many ties.
        let mut x: Vec<f32> = random(b * c * h * w, 1.0, 9)
            .iter()
            .map(|v| (v * 8.0).round())
            .collect();
        // NaN at channel 0 of one position, at two later channels of another: Burn's argmax
        // keeps the first NaN.
        x[5] = f32::NAN;
        x[40 * h * w + 6] = f32::NAN;
        x[90 * h * w + 6] = f32::NAN;
        let input = || Tensor::<4>::from_data(TensorData::new(x.clone(), [b, c, h, w]), &device);
        let want = input().argmax(1).reshape([b, h, w]);
        let got = argmax_channels(input()).unwrap_or_else(|_| panic!("f32 on flex"));
        let read = |t: Tensor<3, Int>| t.into_data().try_into_vec_as::<i64>().expect("ids");
        let (got, want) = (read(got), read(want));
        assert_eq!(got.len(), b * h * w);
        assert_eq!((got[5], got[6]), (0, 40));
        assert_eq!(got, want);
    }

    /// The band products equal Burn's `conv2d` (stride 1, padding 1), in one band and in bands
    /// of two rows and of one, with and without a bias, and for planes one pixel wide.
    #[test]
    fn fused_conv3x3_matches_burns_conv2d() {
        use burn::tensor::module::conv2d;
        use burn::tensor::ops::ConvOptions;
        let device = Device::flex();
        // Stride 1, both methods: odd and even sizes (a last tile half outside the output),
        // one-pixel planes, and uneven paddings (Burn's by explicit zeros first).
        let shapes = [
            (2, 5, 6, 7, 9),
            (1, 3, 4, 4, 1),
            (1, 17, 3, 6, 5),
            (2, 4, 2, 3, 3),
        ];
        let pads = [[1; 4], [0; 4], [2, 0, 1, 3]];
        for ((b, ci, co, h, w), pad) in shapes.into_iter().flat_map(|s| pads.map(|p| (s, p))) {
            let [top, left, bottom, right] = pad;
            if h + top + bottom < 3 || w + left + right < 3 {
                continue;
            }
            let x = random(b * ci * h * w, 2.0, 10);
            let wt = random(co * ci * 9, 0.5, 11);
            let bias = random(co, 1.0, 12);
            let input =
                || Tensor::<4>::from_data(TensorData::new(x.clone(), [b, ci, h, w]), &device);
            let weight =
                Tensor::<4>::from_data(TensorData::new(wt.clone(), [co, ci, 3, 3]), &device);
            let bias = Tensor::<1>::from_data(TensorData::new(bias.clone(), [co]), &device);
            let padded = input().pad(
                (left, right, top, bottom),
                burn::tensor::ops::PadMode::Constant(0.0),
            );
            let options = ConvOptions::new([1, 1], [0, 0], [1, 1], 1);
            for with_bias in [true, false] {
                let want = conv2d(
                    padded.clone(),
                    weight.clone(),
                    with_bias.then(|| bias.clone()),
                    options.clone(),
                );
                let dims = want.dims();
                let n: usize = dims.iter().product();
                let want = read(want.reshape([n]));
                let methods = [ConvMethod::Columns, ConvMethod::Winograd];
                for (method, band_elems) in methods
                    .into_iter()
                    .flat_map(|m| [usize::MAX / 2, 2 * 16 * ci.max(co) * w, 1].map(|e| (m, e)))
                {
                    let got = conv3x3_in_bands(
                        input(),
                        &weight,
                        with_bias.then_some(&bias),
                        1,
                        pad,
                        band_elems,
                        method,
                    )
                    .unwrap_or_else(|_| panic!("f32 on flex"));
                    assert_eq!(got.dims(), dims);
                    assert_close(
                        &read(got.reshape([n])),
                        &want,
                        1e-5,
                        &format!(
                            "{method:?} {b}x{ci}x{h}x{w}, pad {pad:?}, bias {with_bias}, band {band_elems}"
                        ),
                    );
                }
            }
        }
        // Stride 2 after padding the bottom and right by one (taming's Downsample), odd and
        // even sizes.
        for (h, w) in [(8, 8), (7, 10)] {
            let (b, ci, co) = (2, 3, 5);
            let x = random(b * ci * h * w, 2.0, 14);
            let wt = random(co * ci * 9, 0.5, 15);
            let input = Tensor::<4>::from_data(TensorData::new(x, [b, ci, h, w]), &device);
            let weight = Tensor::<4>::from_data(TensorData::new(wt, [co, ci, 3, 3]), &device);
            let padded = input
                .clone()
                .pad((0, 1, 0, 1), burn::tensor::ops::PadMode::Constant(0.0));
            let want = conv2d(
                padded,
                weight.clone(),
                None,
                ConvOptions::new([2, 2], [0, 0], [1, 1], 1),
            );
            let dims = want.dims();
            let got = conv3x3(input, &weight, None, 2, [0, 0, 1, 1])
                .unwrap_or_else(|_| panic!("f32 on flex"));
            assert_eq!(got.dims(), dims);
            let n: usize = dims.iter().product();
            let (got, want) = (read(got.reshape([n])), read(want.reshape([n])));
            assert!(
                worst(&got, &want) < 1e-5,
                "stride 2 {h}x{w}: {}",
                worst(&got, &want)
            );
        }
        // Not a 3 x 3 kernel, or an autodiff input: handed back.
        let x = Tensor::<4>::from_data(
            TensorData::new(random(2 * 3 * 3, 1.0, 13), [1, 2, 3, 3]),
            &device,
        );
        let one = Tensor::<4>::from_data(TensorData::new(vec![1f32; 4], [2, 2, 1, 1]), &device);
        assert!(conv3x3(x.clone(), &one, None, 1, [1; 4]).is_err());
        let three = Tensor::<4>::from_data(TensorData::new(vec![1f32; 36], [2, 2, 3, 3]), &device);
        let tracked = Tensor::<4>::from_data(x.clone().into_data(), &device.clone().autodiff());
        assert!(conv3x3(tracked, &three, None, 1, [1; 4]).is_err());
        // No output channels, or an empty plane: handed back, not a panic.
        let none =
            Tensor::<4>::from_data(TensorData::new(Vec::<f32>::new(), [0, 2, 3, 3]), &device);
        assert!(conv3x3(x, &none, None, 1, [1; 4]).is_err());
        let flat =
            Tensor::<4>::from_data(TensorData::new(Vec::<f32>::new(), [1, 2, 0, 3]), &device);
        assert!(conv3x3(flat, &three, None, 1, [2; 4]).is_err());
    }
}
