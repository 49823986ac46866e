//! The forward pass: one function for every supported architecture, steered by the
//! [`ArchSpec`](super::arch::ArchSpec) data and the optional weights.
//!
//! Reads top to bottom like the paper: embed, then per block (norm, q/k/v, biases, q/k
//! norms, RoPE, cache, attention, output projection, residual; norm, gated FFN, residual),
//! then the final norm and the LM head for the rows whose logits are wanted. All buffers
//! live in [`Scratch`], owned by the session and reused, so a decode step allocates nothing
//! once the buffers have grown.

use std::sync::OnceLock;

use half::f16;
use openweight_kernels::matmul::{can_fuse, matmul, matmul_many, MatRef, MatmulScratch};
use rayon::prelude::*;

use super::arch::{EmbeddingScale, FfnActivation};
use super::attention::{attention, AttnParams, AttnScratch};
use super::kv_cache::KvCache;
use super::mla::{mla_attention, MlaScratch};
use super::moe::{moe_ffn, Experts, MoeScratch};
use super::weights::Matrix;
use super::Model;

/// Reusable buffers for [`forward`].
#[derive(Default, Debug)]
pub struct Scratch {
    /// Residual stream `[n][n_embd]`.
    x: Vec<f32>,
    /// Normed input of a sub-block `[n][n_embd]`.
    h: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    /// Attention output `[n][n_head * head_dim_v]`.
    attn: Vec<f32>,
    /// Output of a sub-block's last projection `[n][n_embd]`.
    o: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    /// Attention working memory (see [`attention`]).
    attn_tasks: AttnScratch,
    /// RoPE `[cos, sin]` pairs `[n][n_rot]`.
    cos_sin: Vec<f32>,
    /// The same for the sliding-window layers' RoPE (when it differs).
    cos_sin_swa: Vec<f32>,
    moe: MoeScratch,
    /// Shared experts' output `[n][n_embd]`.
    shexp: Vec<f32>,
    mla: MlaScratch,
    matmul: MatmulScratch,
}

fn sized(buf: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if buf.len() < n {
        buf.resize(n, 0.0);
    }
    &mut buf[..n]
}

/// `out = x / sqrt(mean(x²) + eps) * w` for each row of `w.len()` values; the sum of
/// squares is accumulated in f64 as the reference does.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let n = w.len();
    for (xr, or) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        let sum: f64 = xr.iter().map(|&v| (v as f64) * (v as f64)).sum();
        let scale = 1.0 / ((sum / n as f64) as f32 + eps).sqrt();
        for ((o, &v), &g) in or.iter_mut().zip(xr).zip(w) {
            *o = (v * scale) * g;
        }
    }
}

/// [`rms_norm`] in place.
pub(crate) fn rms_norm_in_place(x: &mut [f32], w: &[f32], eps: f32) {
    let n = w.len();
    for xr in x.chunks_exact_mut(n) {
        let sum: f64 = xr.iter().map(|&v| (v as f64) * (v as f64)).sum();
        let scale = 1.0 / ((sum / n as f64) as f32 + eps).sqrt();
        for (v, &g) in xr.iter_mut().zip(w) {
            *v = (*v * scale) * g;
        }
    }
}

/// `ys[i] = ws[i] x` for projections of the same input: one fused matmul (input quantized
/// once, one pool dispatch) when the matrices allow it, else one matmul each.
pub(crate) fn project(
    pool: &rayon::ThreadPool,
    ws: &[MatRef],
    x: &[f32],
    ys: &mut [&mut [f32]],
    scratch: &mut MatmulScratch,
) {
    if can_fuse(ws) {
        matmul_many(pool, ws, x, ys, scratch);
    } else {
        for (w, y) in ws.iter().zip(ys.iter_mut()) {
            matmul(pool, w, x, y, scratch);
        }
    }
}

/// Adds `bias` to every row of `x`.
fn add_bias(x: &mut [f32], bias: Option<&Vec<f32>>) {
    if let Some(b) = bias {
        for row in x.chunks_exact_mut(b.len()) {
            for (v, &c) in row.iter_mut().zip(b) {
                *v += c;
            }
        }
    }
}

/// `gate = act(gate) * up`, elementwise.
fn gated_activation(kind: FfnActivation, gate: &mut [f32], up: &[f32]) {
    match kind {
        FfnActivation::Silu => super::silu::silu_gate(gate, up),
        FfnActivation::GeluTanh => {
            // As the reference: beyond +-10 GELU is 0 or the identity; inside, the input is
            // rounded to f16 and looked up in a table of f16 GELU values. At Gemma 3's first
            // position this moves the logits to within 3e-3 of the reference's, from 1e-1,
            // and the lookup is cheaper than a tanh.
            let table = gelu_f16_table();
            let mut done = 0;
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("f16c")
            {
                // SAFETY: AVX2 and F16C were just detected.
                done = unsafe { geglu_avx2(table, gate, up) };
            }
            for (g, &u) in gate[done..].iter_mut().zip(&up[done..]) {
                *g = geglu_one(table, *g) * u;
            }
        }
    }
}

/// GELU of `z` as [`gated_activation`] computes it (0 below -10, `z` above 10, the f16 table
/// entry of `z` rounded to f16 in between).
#[inline]
fn geglu_one(table: &[f16], z: f32) -> f32 {
    if z <= -10.0 {
        0.0
    } else if z >= 10.0 {
        z
    } else {
        table[f16::from_f32(z).to_bits() as usize].to_f32()
    }
}

/// [`geglu_one`] times `up`, eight values at a time: F16C rounds the inputs to f16 (to
/// nearest, ties to even, as `f16::from_f32`), a gather reads their table entries, F16C
/// widens them back, and the two ends are blended in; bit for bit the scalar loop (tested).
/// Returns how many leading values it did (a multiple of 8); the caller does the rest.
///
/// # Safety
/// The CPU must support AVX2 and F16C. `table` must have one entry past the 65536 f16 bit
/// patterns (each gather lane reads 4 bytes at its entry).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
unsafe fn geglu_avx2(table: &[f16], gate: &mut [f32], up: &[f32]) -> usize {
    use std::arch::x86_64::*;
    assert!(
        table.len() > usize::from(u16::MAX) + 1,
        "GELU table lacks its padding entry"
    );
    let n = gate.len().min(up.len()) / 8 * 8;
    let base = table.as_ptr().cast::<i32>();
    let low16 = _mm256_set1_epi32(0xFFFF);
    let (lo, hi) = (_mm256_set1_ps(-10.0), _mm256_set1_ps(10.0));
    for (g, u) in gate[..n].chunks_exact_mut(8).zip(up[..n].chunks_exact(8)) {
        // SAFETY: `g` and `u` hold 8 floats; every gather lane reads the 4 bytes at entry
        // `bits` (< 65536) of `table`, inside it thanks to the padding entry (checked above).
        unsafe {
            let z = _mm256_loadu_ps(g.as_ptr());
            let bits = _mm256_cvtepu16_epi32(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(z));
            let entries = _mm256_and_si256(_mm256_i32gather_epi32::<2>(base, bits), low16);
            // Pack the 8 entries into one 128-bit vector in lane order.
            let packed = _mm256_packus_epi32(entries, entries);
            let packed = _mm256_permute4x64_epi64::<0b1000>(packed);
            let mut gelu = _mm256_cvtph_ps(_mm256_castsi256_si128(packed));
            gelu = _mm256_blendv_ps(gelu, z, _mm256_cmp_ps::<_CMP_GE_OQ>(z, hi));
            gelu = _mm256_blendv_ps(
                gelu,
                _mm256_setzero_ps(),
                _mm256_cmp_ps::<_CMP_LE_OQ>(z, lo),
            );
            _mm256_storeu_ps(
                g.as_mut_ptr(),
                _mm256_mul_ps(gelu, _mm256_loadu_ps(u.as_ptr())),
            );
        }
    }
    n
}

/// `tanh`-approximated GELU of every f16 value, rounded to f16, indexed by the input's bits
/// (built once, 128 KiB), plus one zero entry of padding.
fn gelu_f16_table() -> &'static [f16] {
    static TABLE: OnceLock<Vec<f16>> = OnceLock::new();
    TABLE.get_or_init(|| {
        const SQRT_2_OVER_PI: f32 = 0.797_884_6;
        (0..=u16::MAX)
            .map(|bits| {
                let z = f16::from_bits(bits).to_f32();
                let y = 0.5 * z * (1.0 + (SQRT_2_OVER_PI * z * (1.0 + 0.044715 * z * z)).tanh());
                f16::from_f32(y)
            })
            // One padding entry: the AVX2 path reads 4 bytes per lookup.
            .chain([f16::ZERO])
            .collect()
    })
}

/// The dense gated FFN `down(act(gate h) * up h)` of `n_ff` hidden units on `h`
/// (`[n][n_embd]`) into `out` (`[n][n_embd]`).
#[allow(clippy::too_many_arguments)]
fn dense_ffn(
    pool: &rayon::ThreadPool,
    file: &crate::gguf::GgufFile,
    kind: FfnActivation,
    [w_gate, w_up, w_down]: [&Matrix; 3],
    h: &[f32],
    gate: &mut Vec<f32>,
    up: &mut Vec<f32>,
    out: &mut [f32],
    mm: &mut MatmulScratch,
) {
    let n_ff = w_gate.rows;
    let n = h.len() / w_gate.cols;
    let gate = sized(gate, n * n_ff);
    let up = sized(up, n * n_ff);
    let gate_up = [w_gate.mat(file), w_up.mat(file)];
    project(pool, &gate_up, h, &mut [&mut *gate, &mut *up], mm);
    if n > 1 {
        // Prefill: the exp/tanh of n * n_ff values is worth spreading over the pool.
        pool.install(|| {
            gate.par_chunks_mut(n_ff)
                .zip(up.par_chunks(n_ff))
                .for_each(|(g, u)| gated_activation(kind, g, u));
        });
    } else {
        gated_activation(kind, gate, up);
    }
    matmul(pool, &w_down.mat(file), gate, out, mm);
}

/// Which rows of a batch need logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputRows {
    /// Every token of the batch.
    All,
    /// Only the last token.
    Last,
    /// None (a prefix chunk whose logits nobody wants).
    None,
    /// No logits: every token's hidden state after the final norm (`[n][n_embd]`), for
    /// embeddings.
    Hidden,
}

/// Runs `tokens` (already validated: non-empty, in vocabulary, fitting the cache) at
/// positions `pos0..`, storing their keys and values in `kv`, and writes the logits of the
/// requested rows to `logits` (`[n_rows][n_vocab]`; for [`OutputRows::Hidden`], the normed
/// hidden states `[n][n_embd]` instead).
#[allow(clippy::too_many_arguments)]
pub fn forward(
    model: &Model,
    pool: &rayon::ThreadPool,
    kv: &mut KvCache,
    s: &mut Scratch,
    tokens: &[u32],
    pos0: usize,
    rows: OutputRows,
    logits: &mut [f32],
) {
    if pool.current_thread_index().is_none() {
        // Run the whole pass on a worker: the many matmuls and attentions inside then fork
        // within the pool instead of each waking it from outside and waiting on a latch.
        return pool.install(|| forward(model, pool, kv, s, tokens, pos0, rows, logits));
    }
    let c = &model.config;
    let w = &model.weights;
    let file = &model.file;
    let n = tokens.len();
    let n_embd = c.n_embd;
    let q_dim = c.n_head * c.head_dim_k;
    let kv_dim_k = c.n_head_kv * c.head_dim_k;
    let kv_dim_v = c.n_head_kv * c.head_dim_v;
    let o_dim = c.n_head * c.mla.map_or(c.head_dim_v, |m| m.head_dim_v);
    let eps = c.rms_eps;
    let rope = &c.rope;
    assert!(
        n <= kv.max_batch(),
        "batch of {n} tokens exceeds the cache's max batch {}",
        kv.max_batch()
    );

    // Embeddings.
    let x = sized(&mut s.x, n * n_embd);
    for (t, &id) in tokens.iter().enumerate() {
        w.token_embd
            .dequantize_row(file, id as usize, &mut x[t * n_embd..(t + 1) * n_embd]);
    }
    if c.arch.embedding_scale == EmbeddingScale::SqrtNEmbd {
        let scale = (n_embd as f32).sqrt();
        x.iter_mut().for_each(|v| *v *= scale);
    }

    // RoPE tables for this batch's positions, shared by all layers.
    let cos_sin = sized(&mut s.cos_sin, n * rope.n_rot);
    for (t, cs) in cos_sin
        .chunks_exact_mut(rope.n_rot.max(1))
        .enumerate()
        .take(n)
    {
        rope.fill_cos_sin(pos0 + t, cs);
    }
    let swa_rope = c.sliding_window.is_some();
    if swa_rope {
        let cos_sin = sized(&mut s.cos_sin_swa, n * rope.n_rot);
        for (t, cs) in cos_sin
            .chunks_exact_mut(rope.n_rot.max(1))
            .enumerate()
            .take(n)
        {
            c.rope_swa.fill_cos_sin(pos0 + t, cs);
        }
    }

    for (il, l) in w.layers.iter().enumerate() {
        // Attention block.
        let h = sized(&mut s.h, n * n_embd);
        rms_norm(&s.x[..n * n_embd], &l.attn_norm, eps, h);
        let attn = sized(&mut s.attn, n * o_dim);
        if let (Some(mw), Some(mc)) = (&l.mla, &c.mla) {
            let cs = &s.cos_sin[..n * rope.n_rot];
            mla_attention(
                pool,
                file,
                mw,
                c,
                mc,
                kv,
                il,
                h,
                pos0,
                cs,
                &mut s.mla,
                &mut s.matmul,
                attn,
            );
        } else {
            let q = sized(&mut s.q, n * q_dim);
            let k = sized(&mut s.k, n * kv_dim_k);
            let v = sized(&mut s.v, n * kv_dim_v);
            let (Some(wq), Some(wk), Some(wv)) = (&l.wq, &l.wk, &l.wv) else {
                unreachable!("the loader gives every non-latent layer q, k and v")
            };
            let qkv = [wq.mat(file), wk.mat(file), wv.mat(file)];
            project(
                pool,
                &qkv,
                h,
                &mut [&mut *q, &mut *k, &mut *v],
                &mut s.matmul,
            );
            add_bias(q, l.bq.as_ref());
            add_bias(k, l.bk.as_ref());
            add_bias(v, l.bv.as_ref());
            if let (Some(qn), Some(kn)) = (&l.q_norm, &l.k_norm) {
                rms_norm_in_place(q, qn, eps);
                rms_norm_in_place(k, kn, eps);
            }
            let (rope, cos_sin) = if swa_rope && c.swa_layers[il] {
                (&c.rope_swa, &s.cos_sin_swa)
            } else {
                (&c.rope, &s.cos_sin)
            };
            if rope.n_rot > 0 {
                for t in 0..n {
                    let cs = &cos_sin[t * rope.n_rot..(t + 1) * rope.n_rot];
                    for head in q[t * q_dim..(t + 1) * q_dim].chunks_exact_mut(c.head_dim_k) {
                        rope.rotate(head, cs);
                    }
                    for head in k[t * kv_dim_k..(t + 1) * kv_dim_k].chunks_exact_mut(c.head_dim_k) {
                        rope.rotate(head, cs);
                    }
                }
            }
            for t in 0..n {
                kv.write(
                    il,
                    pos0 + t,
                    &k[t * kv_dim_k..(t + 1) * kv_dim_k],
                    &v[t * kv_dim_v..(t + 1) * kv_dim_v],
                );
            }
            if let Some(qs) = c.query_scale {
                q.iter_mut().for_each(|v| *v *= qs);
            }
            let params = AttnParams {
                n_head: c.n_head,
                n_head_kv: c.n_head_kv,
                head_dim_k: c.head_dim_k,
                head_dim_v: c.head_dim_v,
                scale: c.kq_scale,
                window: c.layer_window(il),
                values_in_keys: false,
            };
            attention(pool, kv, il, &params, q, pos0, attn, &mut s.attn_tasks);
        }
        let o = sized(&mut s.o, n * n_embd);
        matmul(pool, &l.wo.mat(file), attn, o, &mut s.matmul);
        add_bias(o, l.bo.as_ref());
        if let Some(pn) = &l.post_attn_norm {
            rms_norm_in_place(o, pn, eps);
        }
        for (xv, &ov) in s.x[..n * n_embd].iter_mut().zip(o.iter()) {
            *xv += ov;
        }

        // Feed-forward block.
        let h = sized(&mut s.h, n * n_embd);
        rms_norm(&s.x[..n * n_embd], &l.ffn_norm, eps, h);
        let kind = c.arch.ffn_activation;
        if let (Some(router), Some(moe)) = (&l.ffn_gate_inp, &c.moe) {
            let experts = Experts {
                router,
                gate: &l.w_gate,
                up: &l.w_up,
                down: &l.w_down,
                bias: l.exp_probs_b.as_deref(),
            };
            let o = sized(&mut s.o, n * n_embd);
            let act = |g: &mut [f32], u: &[f32]| gated_activation(kind, g, u);
            moe_ffn(
                pool,
                file,
                experts,
                moe,
                &act,
                h,
                o,
                &mut s.moe,
                &mut s.matmul,
            );
            if let Some([g, u, d]) = &l.shexp {
                let sh = sized(&mut s.shexp, n * n_embd);
                dense_ffn(
                    pool,
                    file,
                    kind,
                    [g, u, d],
                    h,
                    &mut s.gate,
                    &mut s.up,
                    sh,
                    &mut s.matmul,
                );
                for (ov, &sv) in o.iter_mut().zip(sh.iter()) {
                    *ov += sv;
                }
            }
        } else {
            let o = sized(&mut s.o, n * n_embd);
            dense_ffn(
                pool,
                file,
                kind,
                [&l.w_gate, &l.w_up, &l.w_down],
                h,
                &mut s.gate,
                &mut s.up,
                o,
                &mut s.matmul,
            );
        }
        let o = &mut s.o[..n * n_embd];
        if let Some(pn) = &l.post_ffn_norm {
            rms_norm_in_place(o, pn, eps);
        }
        for (xv, &ov) in s.x[..n * n_embd].iter_mut().zip(o.iter()) {
            *xv += ov;
        }
    }

    // Final norm and LM head, only for the rows asked for.
    let (first, n_out) = match rows {
        OutputRows::All => (0, n),
        OutputRows::Last => (n - 1, 1),
        OutputRows::None => return,
        OutputRows::Hidden => {
            rms_norm(
                &s.x[..n * n_embd],
                &w.output_norm,
                eps,
                &mut logits[..n * n_embd],
            );
            return;
        }
    };
    let h = sized(&mut s.h, n_out * n_embd);
    rms_norm(
        &s.x[first * n_embd..(first + n_out) * n_embd],
        &w.output_norm,
        eps,
        h,
    );
    matmul(
        pool,
        &w.output.mat(file),
        h,
        &mut logits[..n_out * c.n_vocab],
        &mut s.matmul,
    );
    if let Some(cap) = c.final_logit_softcap {
        for v in &mut logits[..n_out * c.n_vocab] {
            *v = (*v / cap).tanh() * cap;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_scales_each_row_to_unit_root_mean_square_times_the_weight() {
        let x = [3.0, 4.0, 0.0, 0.0, 1.0, 1.0];
        let mut out = [0f32; 6];
        rms_norm(&x, &[1.0, 2.0], 1e-9, &mut out);
        let r = (12.5f32).sqrt();
        assert!((out[0] - 3.0 / r).abs() < 1e-6 && (out[1] - 8.0 / r).abs() < 1e-6);
        assert_eq!(&out[2..4], &[0.0, 0.0]);
        assert!((out[4] - 1.0).abs() < 1e-6 && (out[5] - 2.0).abs() < 1e-6);
    }

    #[test]
    fn swiglu_multiplies_silu_of_the_gate_by_up() {
        let mut g = [0.0, 2.0, -1.0];
        gated_activation(FfnActivation::Silu, &mut g, &[5.0, 0.5, 2.0]);
        assert_eq!(g[0], 0.0);
        assert!((g[1] - 2.0 / (1.0 + (-2f32).exp()) * 0.5).abs() < 1e-6);
        assert!((g[2] - (-1.0 / (1.0 + 1f32.exp())) * 2.0).abs() < 1e-6);
    }

    #[test]
    fn geglu_uses_the_tanh_approximation() {
        let mut g = [1.0];
        gated_activation(FfnActivation::GeluTanh, &mut g, &[1.0]);
        assert!((g[0] - 0.841_192).abs() < 1e-3);
    }

    #[test]
    fn geglu_rounds_through_f16_inside_plus_minus_ten_like_the_reference() {
        // 1 + 2^-12 rounds to 1 in f16, so it gets GELU(1) rounded to f16
        let mut g = [1.0 + 1.0 / 4096.0, 1.0, -10.5, 12.0];
        gated_activation(FfnActivation::GeluTanh, &mut g, &[2.0, 2.0, 3.0, 0.5]);
        assert_eq!(g[0], g[1]);
        assert_eq!(g[1], f16::from_f32(0.841_192).to_f32() * 2.0);
        assert_eq!(g[2], 0.0);
        assert_eq!(g[3], 6.0);
    }

    #[test]
    fn geglu_vector_path_gives_the_scalar_bits() {
        // Every f16 value, values between them (rounding ties included), the ends and
        // beyond, NaN and infinities.
        let mut z: Vec<f32> = (0..=u16::MAX).map(|b| f16::from_bits(b).to_f32()).collect();
        z.extend((0..40_000).map(|i| (i as f32 - 20_000.0) * 6.1e-4 + 1.0e-5));
        z.extend([-10.0, 10.0, -10.000_001, 9.999_999, f32::NAN, f32::INFINITY]);
        z.extend((0..7).map(|i| i as f32 * 0.3));
        let up: Vec<f32> = (0..z.len()).map(|i| 0.5 + (i % 7) as f32 * 0.25).collect();
        let table = gelu_f16_table();
        let mut fast = z.clone();
        gated_activation(FfnActivation::GeluTanh, &mut fast, &up);
        for ((&x, &u), f) in z.iter().zip(&up).zip(&fast) {
            let want = geglu_one(table, x) * u;
            assert!(
                want.to_bits() == f.to_bits() || (want.is_nan() && f.is_nan()),
                "GELU({x}) * {u}: scalar {want}, vector path {f}"
            );
        }
    }

    #[test]
    fn bias_is_added_to_every_row() {
        let mut x = [1.0, 2.0, 3.0, 4.0];
        add_bias(&mut x, Some(&vec![10.0, 20.0]));
        assert_eq!(x, [11.0, 22.0, 13.0, 24.0]);
    }
}
