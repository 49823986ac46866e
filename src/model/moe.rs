//! Mixture-of-experts feed-forward block (qwen3moe, deepseek2).
//!
//! For each token the router `ffn_gate_inp` gives one logit per expert; they become
//! probabilities (softmax over all experts, or DeepSeek-V3's independent sigmoid), the
//! `n_expert_used` experts with the highest probability (plus, for selection only, the
//! per-expert bias `exp_probs_b` when the file has one) are selected, and their
//! probabilities (renormalised to sum to 1 when the model asks for it, then multiplied by
//! `expert_weights_scale` when the architecture scales) weight the selected experts' gated
//! FFN outputs: `out = sum_e w_e * down_e(act(gate_e h) * up_e h)`. Shared experts are a
//! plain FFN the caller adds.
//!
//! Only the selected experts are computed. The tokens of a batch are grouped by expert, so
//! each expert's matrices (zero-copy views into the stacked 3-D tensors) are streamed once
//! per batch, as one GEMM over the tokens that chose it; a single token (decode) runs the
//! gate and up projections of two experts at a time as one fused matmul. All buffers live in
//! [`MoeScratch`] and are reused, so a decode step allocates nothing once they have grown.

use openweight_kernels::formats::format;
use openweight_kernels::matmul::{can_fuse, matmul, matmul_many, MatRef, MatmulScratch};

use crate::gguf::GgufFile;

use super::config::{Gating, MoeConfig};
use super::weights::Matrix;

/// Reusable buffers for [`moe_ffn`].
#[derive(Default, Debug)]
pub struct MoeScratch {
    /// Router logits, then probabilities `[n][n_expert]`.
    probs: Vec<f32>,
    /// Selected `(expert, weight)` per token `[n][n_expert_used]`.
    chosen: Vec<(usize, f32)>,
    /// Selection scores of one token (probabilities plus the selection bias).
    scores: Vec<f32>,
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
    /// Per-expert bias added to the probabilities for selection only (`exp_probs_b`).
    pub bias: Option<&'a [f32]>,
}

/// Expert `e` of a stacked matrix holding `n_expert` experts (or head `e` of a per-head
/// stack): a view, no copy.
pub(crate) fn expert<'a>(m: &Matrix, file: &'a GgufFile, e: usize, n_expert: usize) -> MatRef<'a> {
    // Stacks are never interleaved (`super::interleaved`): the file's rows are the data.
    debug_assert!(
        m.interleaved.is_none(),
        "stacked experts stay in the file's layout"
    );
    let full = file.tensor_data(&m.info);
    let rows = m.rows / n_expert;
    let bytes = rows * format(m.ty).row_bytes(m.cols);
    MatRef::new(m.ty, &full[e * bytes..(e + 1) * bytes], rows, m.cols)
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

/// Sigmoid of every value of `row` in place.
fn sigmoid(row: &mut [f32]) {
    for v in row.iter_mut() {
        *v = 1.0 / (1.0 + (-*v).exp());
    }
}

/// Writes the `k` most probable experts of `probs` with their weights into `out`, most
/// probable first (ties go to the lower expert index); renormalised to sum to 1 if `norm`.
/// `out.len()` must be at most `probs.len()`.
fn select_top_k(probs: &[f32], norm: bool, out: &mut [(usize, f32)]) {
    select_top_k_by(probs, probs, norm, out);
}

/// [`select_top_k`] choosing by `scores` but weighting by `probs` (the same length).
fn select_top_k_by(scores: &[f32], probs: &[f32], norm: bool, out: &mut [(usize, f32)]) {
    let k = out.len();
    for slot in 0..k {
        let mut best: Option<(usize, f32)> = None;
        for (e, &p) in scores.iter().enumerate() {
            if out[..slot].iter().any(|&(c, _)| c == e) {
                continue;
            }
            // (NaN probabilities never win, but an expert is always chosen.)
            if best.is_none_or(|(_, b)| p > b) {
                best = Some((e, p));
            }
        }
        let (e, _) = best.expect("k <= n_expert");
        out[slot] = (e, probs[e]);
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
        match cfg.gating {
            Gating::Softmax => softmax(row),
            Gating::Sigmoid => sigmoid(row),
        }
        match w.bias {
            Some(b) => {
                s.scores.clear();
                s.scores.extend(row.iter().zip(b).map(|(p, b)| p + b));
                select_top_k_by(&s.scores, row, cfg.norm_weights, chosen);
            }
            None => select_top_k(row, cfg.norm_weights, chosen),
        }
        if let Some(scale) = cfg.weights_scale {
            chosen.iter_mut().for_each(|(_, w)| *w *= scale);
        }
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

    out.fill(0.0);
    if n == 1 {
        decode_experts(pool, file, w, cfg, act, h, out, s, mm);
        return;
    }
    // Each selected expert once, over all its tokens.
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

/// [`moe_ffn`] for one token: every selected expert reads the same input, so the gate and
/// up projections of two experts at a time go through one fused matmul (input quantized
/// once, one pool dispatch); the outputs are summed in selection order.
#[allow(clippy::too_many_arguments)]
fn decode_experts(
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
    let chosen = &s.chosen[..k];
    let gate = sized(&mut s.gate, k * n_ff);
    let up = sized(&mut s.up, k * n_ff);
    let ex = |m: &Matrix, e: usize| expert(m, file, e, n_expert);
    for ((pair, g2), u2) in chosen
        .chunks(2)
        .zip(gate.chunks_mut(2 * n_ff))
        .zip(up.chunks_mut(2 * n_ff))
    {
        match *pair {
            [(a, _), (b, _)] => {
                let ws = [ex(w.gate, a), ex(w.up, a), ex(w.gate, b), ex(w.up, b)];
                let (ga, gb) = g2.split_at_mut(n_ff);
                let (ua, ub) = u2.split_at_mut(n_ff);
                let mut ys = [ga, ua, gb, ub];
                if can_fuse(&ws) {
                    matmul_many(pool, &ws, h, &mut ys, mm);
                } else {
                    for (wm, y) in ws.iter().zip(ys.iter_mut()) {
                        matmul(pool, wm, h, y, mm);
                    }
                }
            }
            [(a, _)] => {
                let ws = [ex(w.gate, a), ex(w.up, a)];
                let mut ys = [g2, u2];
                if can_fuse(&ws) {
                    matmul_many(pool, &ws, h, &mut ys, mm);
                } else {
                    for (wm, y) in ws.iter().zip(ys.iter_mut()) {
                        matmul(pool, wm, h, y, mm);
                    }
                }
            }
            _ => unreachable!("chunks of one or two"),
        }
    }
    act(gate, up);
    let y = sized(&mut s.y, out.len());
    for (&(e, wt), g) in chosen.iter().zip(gate.chunks_exact(n_ff)) {
        matmul(pool, &ex(w.down, e), g, y, mm);
        for (o, &v) in out.iter_mut().zip(y.iter()) {
            *o += v * wt;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::GgufWriter;

    fn val(i: usize) -> f32 {
        ((i * 7919 % 101) as f32 / 101.0 - 0.5) * 0.5
    }

    /// A file with F32 router and stacked experts (`n_expert` of them, `n_ff` x `n_embd`).
    fn experts_file(n_embd: usize, n_ff: usize, n_expert: usize) -> GgufFile {
        let mut w = GgufWriter::new();
        let mut seed = 0;
        let mut add = |name: &str, ne: &[u64]| {
            let n: u64 = ne.iter().product();
            let bytes: Vec<u8> = (0..n as usize)
                .flat_map(|i| val(seed + i).to_le_bytes())
                .collect();
            seed += 1000;
            w.add_tensor(name.to_string(), ne, 0, bytes).unwrap();
        };
        let (e, f, x) = (n_expert as u64, n_ff as u64, n_embd as u64);
        add("router", &[x, e]);
        add("gate", &[x, f * e]);
        add("up", &[x, f * e]);
        add("down", &[f, x * e]);
        GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap()
    }

    fn matrix(file: &GgufFile, name: &str) -> Matrix {
        let info = file.tensor(name).unwrap().clone();
        let (cols, rows) = (info.ne[0] as usize, info.ne[1] as usize);
        Matrix {
            info,
            ty: openweight_kernels::GgmlType::F32,
            rows,
            cols,
            interleaved: None,
        }
    }

    /// `sum_e w_e * down_e(silu(gate_e x) * up_e x)` over every expert, with the weights of
    /// the unselected experts zero: what routing must give, computed densely in f64.
    fn dense_reference(file: &GgufFile, cfg: &MoeConfig, x: &[f32]) -> Vec<f64> {
        let [r, g, u, d] = ["router", "gate", "up", "down"].map(|n| matrix(file, n));
        let row = |m: &Matrix, i: usize| -> Vec<f64> {
            let mut out = vec![0f32; m.cols];
            m.dequantize_row(file, i, &mut out);
            out.into_iter().map(f64::from).collect()
        };
        let dot = |a: &[f64], b: &[f32]| a.iter().zip(b).map(|(p, &q)| p * q as f64).sum::<f64>();
        let logits: Vec<f64> = (0..cfg.n_expert).map(|e| dot(&row(&r, e), x)).collect();
        let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = logits.iter().map(|l| (l - max).exp()).sum();
        let mut probs: Vec<(usize, f64)> = logits
            .iter()
            .map(|l| (l - max).exp() / z)
            .enumerate()
            .collect();
        probs.sort_by(|a, b| b.1.total_cmp(&a.1));
        let chosen = &probs[..cfg.n_expert_used];
        let total: f64 = chosen.iter().map(|c| c.1).sum();
        let n_embd = x.len();
        let mut out = vec![0f64; n_embd];
        for &(e, p) in chosen {
            let h: Vec<f32> = (0..cfg.n_ff_exp)
                .map(|j| {
                    let gv = dot(&row(&g, e * cfg.n_ff_exp + j), x);
                    let uv = dot(&row(&u, e * cfg.n_ff_exp + j), x);
                    (gv / (1.0 + (-gv).exp()) * uv) as f32
                })
                .collect();
            for (i, o) in out.iter_mut().enumerate() {
                *o += p / total * dot(&row(&d, e * n_embd + i), &h);
            }
        }
        out
    }

    #[test]
    fn routed_experts_grouped_by_expert_equal_the_dense_weighted_sum_per_token() {
        // three experts per token: decode fuses a pair and a lone expert
        let (n_embd, n_ff, n_expert, n_tok) = (32, 16, 6, 7);
        let file = experts_file(n_embd, n_ff, n_expert);
        let cfg = MoeConfig {
            n_expert,
            n_expert_used: 3,
            n_ff_exp: n_ff,
            norm_weights: true,
            gating: Gating::Softmax,
            weights_scale: None,
            n_expert_shared: 0,
            n_dense_lead: 0,
        };
        let [r, g, u, d] = ["router", "gate", "up", "down"].map(|n| matrix(&file, n));
        let experts = Experts {
            router: &r,
            gate: &g,
            up: &u,
            down: &d,
            bias: None,
        };
        let x: Vec<f32> = (0..n_tok * n_embd)
            .map(|i| (((i as u64 * 2_654_435_761) >> 7) % 1000) as f32 / 250.0 - 2.0)
            .collect();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let silu = |g: &mut [f32], u: &[f32]| {
            for (a, &b) in g.iter_mut().zip(u) {
                *a = *a / (1.0 + (-*a).exp()) * b;
            }
        };
        let mut out = vec![0f32; n_tok * n_embd];
        let (mut s, mut mm) = (MoeScratch::default(), MatmulScratch::default());
        moe_ffn(
            &pool, &file, experts, &cfg, &silu, &x, &mut out, &mut s, &mut mm,
        );
        for t in 0..n_tok {
            let want = dense_reference(&file, &cfg, &x[t * n_embd..(t + 1) * n_embd]);
            for (o, w) in out[t * n_embd..(t + 1) * n_embd].iter().zip(&want) {
                assert!((*o as f64 - w).abs() < 1e-4, "token {t}: {o} vs {w}");
            }
        }
        // the batch used several experts, each once
        let used = (0..n_expert)
            .filter(|&e| s.group_start[e + 1] > s.group_start[e])
            .count();
        assert!(used > 2, "the tokens should spread over experts");
        // one token at a time (the decode path, experts fused in pairs) gives the same
        for t in 0..n_tok {
            let xt = &x[t * n_embd..(t + 1) * n_embd];
            let mut one = vec![0f32; n_embd];
            moe_ffn(
                &pool, &file, experts, &cfg, &silu, xt, &mut one, &mut s, &mut mm,
            );
            let want = dense_reference(&file, &cfg, xt);
            for (o, w) in one.iter().zip(&want) {
                assert!((*o as f64 - w).abs() < 1e-4, "decode token {t}: {o} vs {w}");
            }
        }
    }

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
    fn a_selection_bias_changes_which_experts_win_but_not_their_weights() {
        let probs = [0.9, 0.5, 0.2, 0.1];
        let scores = [0.9, 0.5, 0.2 + 1.0, 0.1];
        let mut out = [(0, 0.0); 2];
        select_top_k_by(&scores, &probs, false, &mut out);
        assert_eq!(out, [(2, 0.2), (0, 0.9)]);
        select_top_k_by(&scores, &probs, true, &mut out);
        assert!((out[0].1 - 0.2 / 1.1).abs() < 1e-6 && (out[1].1 - 0.9 / 1.1).abs() < 1e-6);
    }

    #[test]
    fn sigmoid_gating_maps_each_logit_independently_into_zero_one() {
        let mut r = [0.0, 2.0, -2.0];
        sigmoid(&mut r);
        assert_eq!(r[0], 0.5);
        assert!((r[1] - 0.880_797).abs() < 1e-6 && (r[1] + r[2] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn equal_probabilities_select_the_lower_expert_index() {
        let mut out = [(0, 0.0); 2];
        select_top_k(&[0.25; 4], false, &mut out);
        assert_eq!((out[0].0, out[1].0), (0, 1));
    }
}
