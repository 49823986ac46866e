//! Causal multi-head attention over the KV cache, with grouped-query heads.
//!
//! Numerics follow the reference's flash-attention path (its default): with an F16 cache the
//! query is rounded to F16 before `q·k`, dot products and the softmax are f32, and the
//! softmax is computed online (running max `M`, running sum `S`, value accumulator rescaled
//! by `exp(M_old - M_new)` whenever the max grows), so no score row is ever materialised.
//! Work is split across the rayon pool by (query token, head).

use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use super::kv_cache::{KvCache, KvRows, KvType};

/// The largest head dimension the attention kernel supports (checked at model load).
pub const MAX_HEAD_DIM: usize = 1024;

/// f32 values of K (or V) rows converted per chunk; bounds the per-task stack buffers.
const CHUNK_FLOATS: usize = 8192;
/// Upper bound on keys per chunk.
const CHUNK_KEYS: usize = 256;

/// Shape and scale of one attention layer.
#[derive(Clone, Copy, Debug)]
pub struct AttnParams {
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads; query head `h` uses KV head `h / (n_head / n_head_kv)`.
    pub n_head_kv: usize,
    /// Dimension of a query/key head.
    pub head_dim_k: usize,
    /// Dimension of a value head.
    pub head_dim_v: usize,
    /// Factor on `q·k` before the softmax (usually `1/sqrt(head_dim_k)`).
    pub scale: f32,
    /// Sliding window: a query at position `p` sees keys `p + 1 - w ..= p` only.
    pub window: Option<usize>,
}

/// Computes attention for `n_tokens` queries at absolute positions `pos0 ..`.
///
/// `q` is `[n_tokens][n_head][head_dim_k]`, `out` is `[n_tokens][n_head][head_dim_v]`.
/// The keys and values of positions `0 ..= pos0 + n_tokens - 1` must already be in `cache`
/// for `layer`.
pub fn attention(
    pool: &rayon::ThreadPool,
    cache: &KvCache,
    layer: usize,
    p: &AttnParams,
    q: &[f32],
    pos0: usize,
    out: &mut [f32],
) {
    assert!(p.head_dim_k <= MAX_HEAD_DIM && p.head_dim_v <= MAX_HEAD_DIM);
    let n_tokens = q.len() / (p.n_head * p.head_dim_k);
    assert_eq!(out.len(), n_tokens * p.n_head * p.head_dim_v);
    let group = p.n_head / p.n_head_kv;
    let round_q = cache.kv_type() == KvType::F16;
    pool.install(|| {
        out.par_chunks_mut(p.head_dim_v)
            .enumerate()
            .for_each(|(idx, out_head)| {
                let (t, h) = (idx / p.n_head, idx % p.n_head);
                let q_head = &q[idx * p.head_dim_k..(idx + 1) * p.head_dim_k];
                let pos = pos0 + t;
                let first = p.window.map_or(0, |w| (pos + 1).saturating_sub(w));
                let kv_head = h / group;
                let keys = cache.keys(layer, kv_head, pos + 1);
                let values = cache.values(layer, kv_head, pos + 1);
                one_query(p, q_head, round_q, keys, values, first, pos + 1, out_head);
            });
    });
}

/// Attention of one query head over keys `first..end`, written to `out`.
#[allow(clippy::too_many_arguments)]
fn one_query(
    p: &AttnParams,
    q_in: &[f32],
    round_q: bool,
    keys: KvRows<'_>,
    values: KvRows<'_>,
    first: usize,
    end: usize,
    out: &mut [f32],
) {
    let (dk, dv) = (p.head_dim_k, p.head_dim_v);
    let mut q_buf = [0f32; MAX_HEAD_DIM];
    let q = &mut q_buf[..dk];
    for (o, &v) in q.iter_mut().zip(q_in) {
        *o = if round_q {
            f16::from_f32(v).to_f32()
        } else {
            v
        };
    }
    let mut k_buf = [0f32; CHUNK_FLOATS];
    let mut v_buf = [0f32; CHUNK_FLOATS];
    let mut scores = [0f32; CHUNK_KEYS];
    let chunk = (CHUNK_FLOATS / dk.max(dv)).clamp(1, CHUNK_KEYS);

    out.fill(0.0);
    let mut max = f32::NEG_INFINITY;
    let mut sum = 0f32;
    let mut j0 = first;
    while j0 < end {
        let j1 = (j0 + chunk).min(end);
        let n = j1 - j0;
        let k = rows_f32(keys, j0 * dk..j1 * dk, &mut k_buf);
        let mut chunk_max = f32::NEG_INFINITY;
        for (s, k_row) in scores[..n].iter_mut().zip(k.chunks_exact(dk)) {
            *s = dot(q, k_row) * p.scale;
            chunk_max = chunk_max.max(*s);
        }
        if chunk_max > max {
            let rescale = (max - chunk_max).exp();
            for o in out.iter_mut() {
                *o *= rescale;
            }
            sum *= rescale;
            max = chunk_max;
        }
        let v = rows_f32(values, j0 * dv..j1 * dv, &mut v_buf);
        for (&s, v_row) in scores[..n].iter().zip(v.chunks_exact(dv)) {
            let w = (s - max).exp();
            sum += w;
            for (o, &x) in out.iter_mut().zip(v_row) {
                *o += w * x;
            }
        }
        j0 = j1;
    }
    let inv = if sum > 0.0 { 1.0 / sum } else { 0.0 };
    for o in out.iter_mut() {
        *o *= inv;
    }
}

/// The stored rows in `range` as f32: borrowed for an F32 cache, converted into `buf` for F16.
fn rows_f32<'a>(rows: KvRows<'a>, range: std::ops::Range<usize>, buf: &'a mut [f32]) -> &'a [f32] {
    match rows {
        KvRows::F32(r) => &r[range],
        KvRows::F16(r) => {
            let n = range.len();
            r[range].convert_to_f32_slice(&mut buf[..n]);
            &buf[..n]
        }
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent partial sums let the compiler vectorise.
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8 * 8;
    for (ca, cb) in a[..chunks].chunks_exact(8).zip(b[..chunks].chunks_exact(8)) {
        for i in 0..8 {
            acc[i] += ca[i] * cb[i];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for i in chunks..a.len() {
        s += a[i] * b[i];
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap()
    }

    /// Straightforward softmax(q·K/sqrt(d))·V in f64 for one query over keys 0..=pos.
    fn naive(q: &[f32], ks: &[Vec<f32>], vs: &[Vec<f32>], scale: f32) -> Vec<f32> {
        let s: Vec<f64> = ks
            .iter()
            .map(|k| {
                q.iter()
                    .zip(k)
                    .map(|(a, b)| (*a as f64) * (*b as f64))
                    .sum::<f64>()
                    * scale as f64
            })
            .collect();
        let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
        let z: f64 = e.iter().sum();
        let dv = vs[0].len();
        (0..dv)
            .map(|d| (e.iter().zip(vs).map(|(w, v)| w * v[d] as f64).sum::<f64>() / z) as f32)
            .collect()
    }

    fn val(i: usize) -> f32 {
        ((i * 7919 % 97) as f32 / 97.0 - 0.5) * 3.0
    }

    #[test]
    fn matches_naive_softmax_attention_with_grouped_heads_and_causal_mask() {
        let (n_head, n_head_kv, d, n_tok) = (4, 2, 8, 5);
        let mut cache = KvCache::new(KvType::F32, 8, 1, n_head_kv, d, d);
        let mut ks = vec![vec![vec![0f32; d]; n_tok]; n_head_kv];
        let mut vs = ks.clone();
        for pos in 0..n_tok {
            let k: Vec<f32> = (0..n_head_kv * d).map(|i| val(pos * 100 + i)).collect();
            let v: Vec<f32> = (0..n_head_kv * d)
                .map(|i| val(pos * 100 + i + 50))
                .collect();
            for h in 0..n_head_kv {
                ks[h][pos] = k[h * d..(h + 1) * d].to_vec();
                vs[h][pos] = v[h * d..(h + 1) * d].to_vec();
            }
            cache.write(0, pos, &k, &v);
        }
        let q: Vec<f32> = (0..n_tok * n_head * d).map(|i| val(i + 1000)).collect();
        let p = AttnParams {
            n_head,
            n_head_kv,
            head_dim_k: d,
            head_dim_v: d,
            scale: 1.0 / (d as f32).sqrt(),
            window: None,
        };
        let mut out = vec![0f32; n_tok * n_head * d];
        attention(&pool(), &cache, 0, &p, &q, 0, &mut out);
        for t in 0..n_tok {
            for h in 0..n_head {
                let kv = h / 2;
                let i = t * n_head + h;
                let want = naive(
                    &q[i * d..(i + 1) * d],
                    &ks[kv][..=t],
                    &vs[kv][..=t],
                    p.scale,
                );
                for (a, b) in out[i * d..(i + 1) * d].iter().zip(&want) {
                    assert!((a - b).abs() < 1e-5, "token {t} head {h}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn a_single_key_returns_its_value() {
        let mut cache = KvCache::new(KvType::F16, 2, 1, 1, 4, 4);
        cache.write(0, 0, &[1.0, 2.0, 3.0, 4.0], &[0.5, -0.25, 2.0, 8.0]);
        let p = AttnParams {
            n_head: 1,
            n_head_kv: 1,
            head_dim_k: 4,
            head_dim_v: 4,
            scale: 0.5,
            window: None,
        };
        let mut out = vec![0f32; 4];
        attention(&pool(), &cache, 0, &p, &[9.0, -3.0, 1.0, 0.0], 0, &mut out);
        assert_eq!(out, vec![0.5, -0.25, 2.0, 8.0]);
    }

    #[test]
    fn sliding_window_hides_keys_older_than_the_window() {
        let mut cache = KvCache::new(KvType::F32, 4, 1, 1, 1, 1);
        for pos in 0..4 {
            cache.write(0, pos, &[0.0], &[pos as f32]);
        }
        let p = AttnParams {
            n_head: 1,
            n_head_kv: 1,
            head_dim_k: 1,
            head_dim_v: 1,
            scale: 1.0,
            window: Some(2),
        };
        let mut out = vec![0f32; 1];
        // equal scores: the mean of the visible values 2 and 3
        attention(&pool(), &cache, 0, &p, &[1.0], 3, &mut out);
        assert_eq!(out[0], 2.5);
    }
}
