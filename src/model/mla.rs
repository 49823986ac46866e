//! Multi-head latent attention (DeepSeek-V2/V3), absorbed form.
//!
//! Per token, `attn_kv_a_mqa` gives a compressed latent `c` (`kv_lora_rank` values,
//! RMS-normalised by `attn_kv_a_norm`) and one rotary key `k_pe` (`n_rot` values) shared by
//! all heads. Each head's query (from `attn_q`, or `attn_q_a` -> `attn_q_a_norm` ->
//! `attn_q_b`) is `head_dim_qk` values: `q_nope` (the first `head_dim_qk - n_rot`) and
//! `q_pe` (the last `n_rot`). `q_pe` and `k_pe` are rotated with the model's RoPE.
//!
//! A head's key would be `[W_kb c, k_pe]` and its value `W_vb c`. Instead of expanding them
//! for every cached token, the key up-projection is absorbed into the query:
//! `q·k = (W_kbᵀ q_nope)·c + q_pe·k_pe`, so the cache holds only `[c, k_pe]` per token
//! (`kv_lora_rank + n_rot` values, one row for all heads), attention runs as multi-query
//! attention over those rows with the latent `c` as the values, and each head's result (a
//! latent) is up-projected by its `W_vb` afterwards. The attention scale is
//! `1 / sqrt(head_dim_qk)` (times YaRN's squared magnitude correction, see
//! [`super::config`]).
//!
//! Rounding follows the reference's flash attention over an F16 cache, because near-tied
//! expert routing downstream turns its rounding differences into different experts: a
//! batch below [`TILED_MIN_TOKENS`](super::attention::TILED_MIN_TOKENS) queries (and
//! decode) rounds the absorbed query to F16 and sums the latent values in F16, a larger
//! batch keeps both in f32 as the reference's tiled path does. The per-head projections
//! (`attn_k_b`, `attn_v_b`) go through the kernels' matmul, so their inputs are quantized
//! to the weight's activation type, as in the reference.

use openweight_kernels::matmul::{matmul, MatmulScratch};

use crate::gguf::GgufFile;

use super::attention::{attention, AttnParams, AttnScratch};
use super::config::{Config, MlaConfig};
use super::forward::{project, rms_norm_in_place};
use super::kv_cache::KvCache;
use super::moe::expert;
use super::weights::MlaWeights;

/// Reusable buffers for [`mla_attention`].
#[derive(Default, Debug)]
pub struct MlaScratch {
    /// Low-rank query `[n][q_lora_rank]`.
    qa: Vec<f32>,
    /// Queries `[n][n_head][head_dim_qk]`.
    q: Vec<f32>,
    /// Latent and rotary key `[n][kv_lora_rank + n_rot]`.
    kv: Vec<f32>,
    /// Absorbed queries `[n][n_head][kv_lora_rank + n_rot]`.
    q_abs: Vec<f32>,
    /// One head's gathered rows (input of a per-head projection).
    head_in: Vec<f32>,
    /// One head's projected rows.
    head_out: Vec<f32>,
    /// Attention output in latent space `[n][n_head][kv_lora_rank]`.
    latent: Vec<f32>,
    /// Attention task results.
    tasks: AttnScratch,
}

fn sized(buf: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if buf.len() < n {
        buf.resize(n, 0.0);
    }
    &mut buf[..n]
}

/// Runs latent attention for the `n` tokens of `h` (`[n][n_embd]`, normed) at positions
/// `pos0..`: stores their latents and rotary keys in `kv` for `layer` and writes the heads'
/// outputs `[n][n_head * head_dim_v]` (before `attn_output`) to `out`. `cos_sin` is the
/// RoPE table of the batch (`[n][n_rot]`).
#[allow(clippy::too_many_arguments)]
pub fn mla_attention(
    pool: &rayon::ThreadPool,
    file: &GgufFile,
    w: &MlaWeights,
    c: &Config,
    m: &MlaConfig,
    kv: &mut KvCache,
    layer: usize,
    h: &[f32],
    pos0: usize,
    cos_sin: &[f32],
    s: &mut MlaScratch,
    mm: &mut MatmulScratch,
    out: &mut [f32],
) {
    let n = h.len() / c.n_embd;
    let n_head = c.n_head;
    let (dqk, nope, n_rot, rank) = (m.head_dim_qk, m.head_dim_nope(), m.n_rot, m.kv_lora_rank);
    let cache_dim = m.cache_dim();
    let q_dim = n_head * dqk;
    let dv = m.head_dim_v;
    let eps = c.rms_eps;

    // Queries, latents and rotary keys.
    let q = sized(&mut s.q, n * q_dim);
    let kvr = sized(&mut s.kv, n * cache_dim);
    match (&w.wq, &w.q_lora) {
        (_, Some((qa_w, qa_norm, qb_w))) => {
            let qa = sized(&mut s.qa, n * qa_w.rows);
            project(
                pool,
                &[qa_w.mat(file), w.wkv_a.mat(file)],
                h,
                &mut [&mut *qa, &mut *kvr],
                mm,
            );
            rms_norm_in_place(qa, qa_norm, eps);
            matmul(pool, &qb_w.mat(file), qa, q, mm);
        }
        (Some(wq), None) => {
            project(
                pool,
                &[wq.mat(file), w.wkv_a.mat(file)],
                h,
                &mut [&mut *q, &mut *kvr],
                mm,
            );
        }
        (None, None) => unreachable!("the loader requires attn_q or attn_q_a"),
    }
    let rope = &c.rope;
    for t in 0..n {
        let row = &mut kvr[t * cache_dim..(t + 1) * cache_dim];
        rms_norm_in_place(&mut row[..rank], &w.kv_a_norm, eps);
        let cs = &cos_sin[t * n_rot..(t + 1) * n_rot];
        rope.rotate(&mut row[rank..], cs);
        for head in q[t * q_dim..(t + 1) * q_dim].chunks_exact_mut(dqk) {
            rope.rotate(&mut head[nope..], cs);
        }
        kv.write(layer, pos0 + t, row, &[]);
    }

    // Absorb each head's key up-projection into its non-rotary query.
    let q_abs = sized(&mut s.q_abs, n * n_head * cache_dim);
    for hd in 0..n_head {
        let x = sized(&mut s.head_in, n * nope);
        for (t, xr) in x.chunks_exact_mut(nope).enumerate() {
            let src = t * q_dim + hd * dqk;
            xr.copy_from_slice(&q[src..src + nope]);
        }
        let y = sized(&mut s.head_out, n * rank);
        matmul(pool, &expert(&w.wk_b, file, hd, n_head), x, y, mm);
        for t in 0..n {
            let dst = &mut q_abs[(t * n_head + hd) * cache_dim..(t * n_head + hd + 1) * cache_dim];
            dst[..rank].copy_from_slice(&y[t * rank..(t + 1) * rank]);
            let src = t * q_dim + hd * dqk + nope;
            dst[rank..].copy_from_slice(&q[src..src + n_rot]);
        }
    }

    // Multi-query attention over the cached [latent, k_pe] rows, values = latents.
    let params = AttnParams {
        n_head,
        n_head_kv: 1,
        head_dim_k: cache_dim,
        head_dim_v: rank,
        scale: c.kq_scale,
        window: None,
        values_in_keys: true,
    };
    let latent = sized(&mut s.latent, n * n_head * rank);
    attention(pool, kv, layer, &params, q_abs, pos0, latent, &mut s.tasks);

    // Each head's latent result through its value up-projection.
    for hd in 0..n_head {
        let x = sized(&mut s.head_in, n * rank);
        for (t, xr) in x.chunks_exact_mut(rank).enumerate() {
            let src = (t * n_head + hd) * rank;
            xr.copy_from_slice(&latent[src..src + rank]);
        }
        let y = sized(&mut s.head_out, n * dv);
        matmul(pool, &expert(&w.wv_b, file, hd, n_head), x, y, mm);
        for t in 0..n {
            let dst = t * n_head * dv + hd * dv;
            out[dst..dst + dv].copy_from_slice(&y[t * dv..(t + 1) * dv]);
        }
    }
}
