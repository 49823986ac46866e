//! Mixture-of-experts feed-forward block (qwen3moe).
//!
//! For each token the router `ffn_gate_inp` gives one logit per expert; their softmax is
//! taken over all experts, the `n_expert_used` most probable experts are selected, and
//! their probabilities (renormalised to sum to 1 when the model asks for it) weight the
//! selected experts' gated FFN outputs:
//! `out = sum_e w_e * down_e(act(gate_e h) * up_e h)`.
//!
//! Only the selected experts are computed. The tokens of a batch are grouped by expert, so
//! each expert's matrices (zero-copy views into the stacked 3-D tensors) are streamed once
//! per batch, as one GEMM over the tokens that chose it. All buffers live in
//! [`MoeScratch`] and are reused, so a decode step allocates nothing once they have grown.

use openweight_kernels::formats::format;
use openweight_kernels::matmul::{can_fuse, matmul, matmul_many, MatRef, MatmulScratch};

use crate::gguf::GgufFile;

use super::config::MoeConfig;
use super::weights::Matrix;

/// Reusable buffers for [`moe_ffn`].
#[derive(Default, Debug)]
pub struct MoeScratch {
    /// Router logits, then probabilities `[n][n_expert]`.
    probs: Vec<f32>,
    /// Selected `(expert, weight)` per token `[n][n_expert_used]`.
    chosen: Vec<(usize, f32)>,
    /// Start of each expert's group in `order` (`n_expert + 1` entries).
    group_start: Vec<usize>,
    /// Next free index of each expert's group while filling `order`.
    next: Vec<usize>,
    /// `(token, weight)` pairs sorted by expert.
    order: Vec<(usize, f32)>,
    /// Gathered inputs of one expert's tokens `[m][n_embd]`.
    x: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    /// One expert's outputs `[m][n_embd]`.
    y: Vec<f32>,
}

fn sized(buf: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if buf.len() < n {
        buf.resize(n, 0.0);
    }
    &mut buf[..n]
}

/// The stacked experts' matrices of one layer.
#[derive(Clone, Copy, Debug)]
pub struct Experts<'a> {
    /// Router, `n_expert` x `n_embd`.
    pub router: &'a Matrix,
    /// Gate projections, `n_expert * n_ff_exp` x `n_embd`.
    pub gate: &'a Matrix,
    /// Up projections, `n_expert * n_ff_exp` x `n_embd`.
    pub up: &'a Matrix,
    /// Down projections, `n_expert * n_embd` x `n_ff_exp`.
    pub down: &'a Matrix,
}

/// Expert `e` of a stacked matrix holding `n_expert` experts: a view, no copy.
fn expert<'a>(m: &Matrix, file: &'a GgufFile, e: usize, n_expert: usize) -> MatRef<'a> {
    let full = m.mat(file);
    let rows = m.rows / n_expert;
    let bytes = rows * format(m.ty).row_bytes(m.cols);
    MatRef {
        ty: m.ty,
        data: &full.data[e * bytes..(e + 1) * bytes],
        rows,
        cols: m.cols,
    }
}

/// Softmax of `row` in place (max subtracted, f32 as the reference).
fn softmax(row: &mut [f32]) {
    let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|v| *v *= inv);
}

/// Writes the `k` most probable experts of `probs` with their weights into `out`, most
/// probable first (ties go to the lower expert index); renormalised to sum to 1 if `norm`.
/// `out.len()` must be at most `probs.len()`.
fn select_top_k(probs: &[f32], norm: bool, out: &mut [(usize, f32)]) {
    let k = out.len();
    for slot in 0..k {
        let mut best: Option<(usize, f32)> = None;
        for (e, &p) in probs.iter().enumerate() {
            if out[..slot].iter().any(|&(c, _)| c == e) {
                continue;
            }
            // (NaN probabilities never win, but an expert is always chosen.)
            if best.is_none_or(|(_, b)| p > b) {
                best = Some((e, p));
            }
        }
        out[slot] = best.expect("k <= n_expert");
    }
    if norm {
        // The reference clamps the sum from below; with softmax weights it cannot get there
        // unless the router produced NaNs.
        let sum = out.iter().map(|&(_, w)| w).sum::<f32>().max(6.103_515_6e-5);
        out.iter_mut().for_each(|(_, w)| *w /= sum);
    }
}

/// Runs the mixture-of-experts FFN on `h` (`[n][n_embd]`), writing `out` (`[n][n_embd]`).
/// `act(gate, up)` turns each expert's gate rows into `act(gate) * up`.
#[allow(clippy::too_many_arguments)]
pub fn moe_ffn(
    pool: &rayon::ThreadPool,
    file: &GgufFile,
    w: Experts<'_>,
    cfg: &MoeConfig,
    act: &dyn Fn(&mut [f32], &[f32]),
    h: &[f32],
    out: &mut [f32],
    s: &mut MoeScratch,
    mm: &mut MatmulScratch,
) {
    let (n_expert, k, n_ff) = (cfg.n_expert, cfg.n_expert_used, cfg.n_ff_exp);
    let n_embd = w.router.cols;
    let n = h.len() / n_embd;

    // Route.
    let probs = sized(&mut s.probs, n * n_expert);
    matmul(pool, &w.router.mat(file), h, probs, mm);
    s.chosen.resize(n * k, (0, 0.0));
    for (row, chosen) in probs
        .chunks_exact_mut(n_expert)
        .zip(s.chosen.chunks_exact_mut(k))
    {
        softmax(row);
        select_top_k(row, cfg.norm_weights, chosen);
    }

    // Group the (token, weight) pairs by expert (counting sort, stable in token order).
    s.group_start.clear();
    s.group_start.resize(n_expert + 1, 0);
    for &(e, _) in &s.chosen[..n * k] {
        s.group_start[e + 1] += 1;
    }
    for e in 0..n_expert {
        s.group_start[e + 1] += s.group_start[e];
    }
    s.order.resize(n * k, (0, 0.0));
    s.next.clear();
    s.next.extend_from_slice(&s.group_start[..n_expert]);
    for (i, &(e, wt)) in s.chosen[..n * k].iter().enumerate() {
        s.order[s.next[e]] = (i / k, wt);
        s.next[e] += 1;
    }

    // Each selected expert once, over all its tokens.
    out.fill(0.0);
    for e in 0..n_expert {
        let group = &s.order[s.group_start[e]..s.group_start[e + 1]];
        let m = group.len();
        if m == 0 {
            continue;
        }
        let x = sized(&mut s.x, m * n_embd);
        for (xr, &(t, _)) in x.chunks_exact_mut(n_embd).zip(group) {
            xr.copy_from_slice(&h[t * n_embd..(t + 1) * n_embd]);
        }
        let gate = sized(&mut s.gate, m * n_ff);
        let up = sized(&mut s.up, m * n_ff);
        let gate_up = [
            expert(w.gate, file, e, n_expert),
            expert(w.up, file, e, n_expert),
        ];
        if can_fuse(&gate_up) {
            // one quantization of the gathered inputs, one pool dispatch
            matmul_many(pool, &gate_up, x, &mut [&mut *gate, &mut *up], mm);
        } else {
            matmul(pool, &gate_up[0], x, gate, mm);
            matmul(pool, &gate_up[1], x, up, mm);
        }
        act(gate, up);
        let y = sized(&mut s.y, m * n_embd);
        matmul(pool, &expert(w.down, file, e, n_expert), gate, y, mm);
        for (yr, &(t, wt)) in y.chunks_exact(n_embd).zip(group) {
            for (o, &v) in out[t * n_embd..(t + 1) * n_embd].iter_mut().zip(yr) {
                *o += v * wt;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_keeps_the_order() {
        let mut r = [1.0, 3.0, 2.0, -1.0];
        softmax(&mut r);
        assert!((r.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(r[1] > r[2] && r[2] > r[0] && r[0] > r[3]);
    }

    #[test]
    fn top_k_picks_the_most_probable_experts_best_first() {
        let probs = [0.1, 0.4, 0.05, 0.3, 0.15];
        let mut out = [(0, 0.0); 2];
        select_top_k(&probs, false, &mut out);
        assert_eq!(out, [(1, 0.4), (3, 0.3)]);
    }

    #[test]
    fn renormalised_top_k_weights_sum_to_one() {
        let probs = [0.1, 0.4, 0.05, 0.3, 0.15];
        let mut out = [(0, 0.0); 2];
        select_top_k(&probs, true, &mut out);
        assert_eq!((out[0].0, out[1].0), (1, 3));
        assert!((out[0].1 - 0.4 / 0.7).abs() < 1e-6 && (out[1].1 - 0.3 / 0.7).abs() < 1e-6);
    }

    #[test]
    fn equal_probabilities_select_the_lower_expert_index() {
        let mut out = [(0, 0.0); 2];
        select_top_k(&[0.25; 4], false, &mut out);
        assert_eq!((out[0].0, out[1].0), (0, 1));
    }
}
