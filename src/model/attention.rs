//! Causal multi-head attention over the KV cache, with grouped-query heads.
//!
//! Numerics follow the reference's flash-attention paths (its default). Its one-query-at-a-time
//! path (decode, and batches under [`TILED_MIN_TOKENS`] tokens) rounds the query to F16
//! before `q·k` when the cache is F16; its tiled path for larger batches keeps the query in
//! f32. Dot products and the softmax are f32, and the softmax is computed online (running max `M`, running sum `S`, value accumulator rescaled
//! by `exp(M_old - M_new)` whenever the max grows), so no full score row is materialised.
//!
//! Work is split across the rayon pool into tasks of (block of up to [`Q_BLOCK`] query
//! tokens, KV head). A task serves every query head of the group that shares the KV head, so
//! each chunk of keys and values is read (and converted from F16) once for
//! `Q_BLOCK * group` queries. When those tasks are too few to occupy the pool (decode with
//! few KV heads) and the context is long, the key range is also split into segments, each
//! keeping its own online-softmax state, merged afterwards by rescaling with
//! `exp(M_segment - M)`. Task results land in a scratch buffer owned by the caller and are
//! then merged, normalised and scattered into the `[token][head][dim]` output.
//!
//! All working memory lives in the caller's [`AttnScratch`] (one per session): tasks take the
//! buffers of the pool thread that runs them, so it is freed with the session, never left in
//! thread-local storage of pool threads that outlive or trail it.

use std::sync::Mutex;

use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use super::kv_cache::{KvCache, KvHead, KvRows, KvType};

/// The largest head dimension the attention kernel supports (checked at model load).
pub const MAX_HEAD_DIM: usize = 1024;

/// Query tokens per task.
pub const Q_BLOCK: usize = 8;
/// Batches of at least this many query tokens follow the reference's tiled flash-attention
/// path (its tile is 64 queries): the query stays f32, and latent attention's value sums are
/// f32. Smaller batches and decode follow its one-query-at-a-time path: with an F16 cache
/// the query is rounded to F16, and latent attention sums values in F16. (Measured: taking
/// the f32 query for 512-token perplexity chunks moved Gemma3-270M's perplexity from 0.44%
/// to 0.004% off the reference's.)
pub const TILED_MIN_TOKENS: usize = 64;
/// Keys converted and scored per step.
const KEY_CHUNK: usize = 64;

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
    /// The values are the first `head_dim_v` dimensions of each key row, and the cache
    /// holds no value rows (absorbed latent attention, where keys are latent + rotary key).
    pub values_in_keys: bool,
}

/// Working memory of the task a pool thread runs, grown on first use and then reused.
#[derive(Default)]
struct TaskBufs {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    scores: Vec<f32>,
}

/// Reusable working memory of [`attention`]: the tasks' results between the parallel phase
/// and the merge, and one set of task buffers per pool thread. Keep one per session.
#[derive(Default)]
pub struct AttnScratch {
    results: Vec<f32>,
    /// Indexed by the pool's thread index; each thread only locks its own entry, so the
    /// locks are not contended.
    threads: Vec<Mutex<TaskBufs>>,
}

impl std::fmt::Debug for AttnScratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttnScratch")
            .field("results", &self.results.len())
            .field("threads", &self.threads.len())
            .finish()
    }
}

fn grown(buf: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if buf.len() < n {
        buf.resize(n, 0.0);
    }
    &mut buf[..n]
}

/// Computes attention for `n_tokens` queries at absolute positions `pos0 ..`.
///
/// `q` is `[n_tokens][n_head][head_dim_k]`, `out` is `[n_tokens][n_head][head_dim_v]`.
/// The keys and values of every position the queries see (`0 ..= pos0 + n_tokens - 1`,
/// or only the last `window` of them for each query) must already be in `cache` for
/// `layer`; a sliding-window ring must be large enough to still hold them. `scratch` is
/// grown as needed and reused across calls.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    pool: &rayon::ThreadPool,
    cache: &KvCache,
    layer: usize,
    p: &AttnParams,
    q: &[f32],
    pos0: usize,
    out: &mut [f32],
    scratch: &mut AttnScratch,
) {
    assert!(p.head_dim_k <= MAX_HEAD_DIM && p.head_dim_v <= MAX_HEAD_DIM);
    let (n_head, n_kv, dv) = (p.n_head, p.n_head_kv, p.head_dim_v);
    let n_tokens = q.len() / (n_head * p.head_dim_k);
    assert_eq!(out.len(), n_tokens * n_head * dv);
    if n_tokens == 0 {
        return;
    }
    let group = n_head / n_kv;
    let tiled = n_tokens >= TILED_MIN_TOKENS;
    let round_q = cache.kv_type() == KvType::F16 && !tiled;
    let n_blocks = n_tokens.div_ceil(Q_BLOCK);
    // Keys visible to at least one query of the batch: `keys_lo .. pos0 + n_tokens`.
    let keys_lo = p.window.map_or(0, |w| (pos0 + 1).saturating_sub(w));
    let n_keys = pos0 + n_tokens - keys_lo;
    let n_seg = key_segments(n_blocks * n_kv, n_keys, pool.current_num_threads());
    let seg_len = n_keys.div_ceil(n_seg);
    let rows = Q_BLOCK * group;
    let task_len = rows * (dv + 2);
    let n_threads = pool.current_num_threads();
    if scratch.threads.len() < n_threads {
        scratch.threads.resize_with(n_threads, Mutex::default);
    }
    let threads = &scratch.threads;
    let results = grown(&mut scratch.results, n_blocks * n_kv * n_seg * task_len);
    pool.install(|| {
        results
            .par_chunks_mut(task_len)
            .enumerate()
            .for_each(|(i, task_out)| {
                let (block, kv_head, seg) = (i / (n_kv * n_seg), i / n_seg % n_kv, i % n_seg);
                let t0 = block * Q_BLOCK;
                let t1 = (t0 + Q_BLOCK).min(n_tokens);
                let task = Task {
                    p,
                    group,
                    kv: cache.head(layer, kv_head),
                    pos0: pos0 + t0,
                    n_q_tokens: t1 - t0,
                    key_range: keys_lo + seg * seg_len..keys_lo + ((seg + 1) * seg_len).min(n_keys),
                    tiled,
                };
                {
                    // Inside `pool.install` every task runs on one of the pool's threads, so
                    // the index is in range; were it not, sharing entry 0 would only wait.
                    let index = rayon::current_thread_index().unwrap_or(0);
                    let entry = threads.get(index).unwrap_or(&threads[0]);
                    let mut guard = entry.lock().unwrap_or_else(|e| e.into_inner());
                    let bufs = &mut *guard;
                    let q_rows = grown(&mut bufs.q, (t1 - t0) * group * p.head_dim_k);
                    for (r, row) in q_rows.chunks_exact_mut(p.head_dim_k).enumerate() {
                        let (qi, j) = (r / group, r % group);
                        let h = kv_head * group + j;
                        let src = ((t0 + qi) * n_head + h) * p.head_dim_k;
                        for (o, &v) in row.iter_mut().zip(&q[src..src + p.head_dim_k]) {
                            *o = if round_q {
                                f16::from_f32(v).to_f32()
                            } else {
                                v
                            };
                        }
                    }
                    task.run(bufs, task_out);
                }
            });
        // Merge the key segments of every (token, head) and normalise:
        // out = sum_s acc_s * exp(M_s - M) / sum_s S_s * exp(M_s - M), M = max_s M_s.
        let results = &*results;
        out.par_chunks_mut(n_head * dv)
            .enumerate()
            .for_each(|(t, out_t)| {
                let (block, qi) = (t / Q_BLOCK, t % Q_BLOCK);
                for (h, o) in out_t.chunks_exact_mut(dv).enumerate() {
                    let (g, j) = (h / group, h % group);
                    let r = qi * group + j;
                    let task = |seg: usize| {
                        let start = ((block * n_kv + g) * n_seg + seg) * task_len;
                        let t = &results[start..start + task_len];
                        let acc = &t[r * dv..(r + 1) * dv];
                        (acc, t[rows * dv + r], t[rows * dv + rows + r])
                    };
                    let m = (0..n_seg)
                        .map(|s| task(s).1)
                        .fold(f32::NEG_INFINITY, f32::max);
                    o.fill(0.0);
                    if m == f32::NEG_INFINITY {
                        continue;
                    }
                    let mut denom = 0f32;
                    for seg in 0..n_seg {
                        let (acc, seg_max, seg_sum) = task(seg);
                        if seg_max == f32::NEG_INFINITY {
                            continue;
                        }
                        let w = (seg_max - m).exp();
                        denom += seg_sum * w;
                        for (x, &a) in o.iter_mut().zip(acc) {
                            *x += a * w;
                        }
                    }
                    let inv = if denom > 0.0 { 1.0 / denom } else { 0.0 };
                    for x in o.iter_mut() {
                        *x *= inv;
                    }
                }
            });
    });
}

/// Keys per segment below which splitting the key range is not worth a merge.
const MIN_SEGMENT_KEYS: usize = 256;

/// How many segments to split the key range into: 1 unless there are too few (query block,
/// KV head) tasks to occupy the pool (decode with few KV heads) and the context is long.
fn key_segments(n_tasks: usize, n_keys: usize, n_threads: usize) -> usize {
    let wanted = 2 * n_threads.max(1);
    if n_tasks >= wanted || n_keys < 2 * MIN_SEGMENT_KEYS {
        return 1;
    }
    wanted
        .div_ceil(n_tasks)
        .min(n_keys / MIN_SEGMENT_KEYS)
        .max(1)
}

/// One task: the queries of `n_q_tokens` tokens starting at absolute position `pos0`, for
/// every query head of one KV head's group, over the key positions in `key_range`.
struct Task<'a> {
    p: &'a AttnParams,
    group: usize,
    /// The KV head's slots; positions map to slots through [`KvHead::slot`].
    kv: KvHead<'a>,
    pos0: usize,
    n_q_tokens: usize,
    key_range: std::ops::Range<usize>,
    /// A batch of at least [`TILED_MIN_TOKENS`] queries: f32 value sums even for latent
    /// attention.
    tiled: bool,
}

impl Task<'_> {
    /// First key position visible from a query at `pos`.
    fn first_key(&self, pos: usize) -> usize {
        self.p.window.map_or(0, |w| (pos + 1).saturating_sub(w))
    }

    /// Runs the task with the queries already in `bufs.q` (row `r = qi * group + j`).
    ///
    /// `out` is laid out as `[Q_BLOCK * group][head_dim_v]` unnormalised value sums, then
    /// `[Q_BLOCK * group]` running maxima `M`, then `[Q_BLOCK * group]` sums `S` (a row
    /// that saw no key keeps `M = -inf`, `S = 0`).
    fn run(&self, bufs: &mut TaskBufs, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: both features were just detected on this CPU (std caches the check).
            unsafe { self.run_avx2(bufs, out) };
            return;
        }
        self.run_portable(bufs, out, PortableDot)
    }

    /// [`Task::run`] compiled for AVX2: the same code (`run_portable` is inlined into it),
    /// vectorised 8 floats wide instead of 4, with the q.k products in explicit AVX2 that
    /// adds in the same order as [`PortableDot`]. Rust never contracts `a * b + c` into an
    /// FMA, so the results are bit for bit those of the portable build.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run_avx2(&self, bufs: &mut TaskBufs, out: &mut [f32]) {
        // SAFETY: this function's contract is that the CPU has AVX2.
        let dot = unsafe { Avx2Dot::new() };
        self.run_portable(bufs, out, dot)
    }

    /// The body of [`Task::run`], for whatever instruction set the caller is compiled for.
    #[inline(always)]
    fn run_portable(&self, bufs: &mut TaskBufs, out: &mut [f32], dot: impl Dot) {
        let (dk, dv) = (self.p.head_dim_k, self.p.head_dim_v);
        let rows = Q_BLOCK * self.group;
        let n_rows = self.n_q_tokens * self.group;
        let (acc_all, stats) = out.split_at_mut(rows * dv);
        let (max, sum) = stats.split_at_mut(rows);
        acc_all.fill(0.0);
        max.fill(f32::NEG_INFINITY);
        sum.fill(0.0);
        let k_buf = grown(&mut bufs.k, KEY_CHUNK * dk);
        let v_buf = grown(&mut bufs.v, KEY_CHUNK * dv);
        let scores = grown(&mut bufs.scores, KEY_CHUNK);
        let q = &bufs.q[..n_rows * dk];
        // Latent attention's values come from the F16 keys and are accumulated in F16, as
        // the reference does outside its tiled batch path (its accumulation rounding decides
        // near-tied expert routing).
        let f16_acc =
            self.p.values_in_keys && !self.tiled && matches!(self.kv.keys, KvRows::F16(_));

        let last_pos = self.pos0 + self.n_q_tokens - 1;
        let end = (last_pos + 1).min(self.key_range.end);
        let mut j0 = self.first_key(self.pos0).max(self.key_range.start);
        while j0 < end {
            // A chunk never crosses the point where a sliding-window ring wraps, so its
            // positions sit in consecutive slots.
            let j1 = (j0 + KEY_CHUNK).min(end).min(self.kv.run_end(j0));
            let s0 = self.kv.slot(j0);
            let s1 = s0 + (j1 - j0);
            let k = rows_f32(self.kv.keys, s0 * dk..s1 * dk, k_buf);
            let (v, v_stride) = if self.p.values_in_keys {
                (k, dk)
            } else {
                (rows_f32(self.kv.values, s0 * dv..s1 * dv, v_buf), dv)
            };
            for r in 0..n_rows {
                let pos = self.pos0 + r / self.group;
                let lo = self.first_key(pos).max(j0);
                let hi = (pos + 1).min(j1);
                if lo >= hi {
                    continue;
                }
                let q_row = &q[r * dk..(r + 1) * dk];
                let acc = &mut acc_all[r * dv..(r + 1) * dv];
                if f16_acc {
                    // As the reference's flash attention with an F16 cache: keys one at a
                    // time, the value accumulator kept in binary16 (rescaled, then
                    // `acc + v * w` fused, rounded after each step).
                    for (k_row, v_row) in k[(lo - j0) * dk..(hi - j0) * dk]
                        .chunks_exact(dk)
                        .zip(v[(lo - j0) * v_stride..(hi - j0) * v_stride].chunks_exact(v_stride))
                    {
                        let sj = dot.dot(q_row, k_row) * self.p.scale;
                        let (ms, vs) = if sj > max[r] {
                            let ms = (max[r] - sj).exp();
                            max[r] = sj;
                            for o in acc.iter_mut() {
                                *o = f16::from_f32(*o * ms).to_f32();
                            }
                            (ms, 1.0)
                        } else {
                            (1.0, (sj - max[r]).exp())
                        };
                        for (o, &x) in acc.iter_mut().zip(&v_row[..dv]) {
                            *o = f16::from_f32(x.mul_add(vs, *o)).to_f32();
                        }
                        sum[r] = sum[r] * ms + vs;
                    }
                    continue;
                }
                let s = &mut scores[..hi - lo];
                let mut chunk_max = f32::NEG_INFINITY;
                let ks = &k[(lo - j0) * dk..(hi - j0) * dk];
                // Four keys per call: four independent sums, each added as `dot` adds.
                let mut quads = s.chunks_exact_mut(4).zip(ks.chunks_exact(4 * dk));
                for (s4, k4) in quads.by_ref() {
                    let (k01, k23) = k4.split_at(2 * dk);
                    let rows = [&k01[..dk], &k01[dk..], &k23[..dk], &k23[dk..]];
                    for (sj, d) in s4.iter_mut().zip(dot.dot4(q_row, rows)) {
                        *sj = d * self.p.scale;
                        chunk_max = chunk_max.max(*sj);
                    }
                }
                let done = s.len() / 4 * 4;
                for (sj, k_row) in s[done..].iter_mut().zip(ks[done * dk..].chunks_exact(dk)) {
                    *sj = dot.dot(q_row, k_row) * self.p.scale;
                    chunk_max = chunk_max.max(*sj);
                }
                if chunk_max > max[r] {
                    let rescale = (max[r] - chunk_max).exp();
                    for o in acc.iter_mut() {
                        *o *= rescale;
                    }
                    sum[r] *= rescale;
                    max[r] = chunk_max;
                }
                let m = max[r];
                let vs = &v[(lo - j0) * v_stride..(hi - j0) * v_stride];
                // Four keys per pass over the accumulator row (it stays in registers for
                // them instead of being loaded and stored once per key); each element still
                // adds the keys one after another, in key order.
                let mut quads = s.chunks_exact(4).zip(vs.chunks_exact(4 * v_stride));
                for (s4, v4) in quads.by_ref() {
                    let w = [s4[0], s4[1], s4[2], s4[3]].map(|sj| (sj - m).exp());
                    sum[r] = sum[r] + w[0] + w[1] + w[2] + w[3];
                    let (v0, v1, v2, v3) = (
                        &v4[..dv],
                        &v4[v_stride..v_stride + dv],
                        &v4[2 * v_stride..2 * v_stride + dv],
                        &v4[3 * v_stride..3 * v_stride + dv],
                    );
                    for (i, o) in acc.iter_mut().enumerate() {
                        *o = *o + w[0] * v0[i] + w[1] * v1[i] + w[2] * v2[i] + w[3] * v3[i];
                    }
                }
                let done = s.len() / 4 * 4;
                for (&sj, v_row) in s[done..].iter().zip(vs[done * v_stride..].chunks(v_stride)) {
                    let w = (sj - m).exp();
                    sum[r] += w;
                    for (o, &x) in acc.iter_mut().zip(&v_row[..dv]) {
                        *o += w * x;
                    }
                }
            }
            j0 = j1;
        }
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

/// q.k dot products. Every implementation adds exactly as [`PortableDot::dot`] does: eight
/// partial sums (`lane i` takes elements `i, i + 8, ...`, each product rounded, then added),
/// the lanes summed left to right, then the last `len % 8` products one by one. Results on
/// some models are sensitive to this order (Gemma 3's greedy continuations against the
/// reference change with it), so faster variants keep it and gain by computing several keys
/// at once instead.
trait Dot: Copy {
    /// `sum(a[i] * b[i])` over `a.len()` elements (`b` at least as long).
    fn dot(self, a: &[f32], b: &[f32]) -> f32;
    /// [`Dot::dot`] of `a` with each of four rows.
    fn dot4(self, a: &[f32], b: [&[f32]; 4]) -> [f32; 4];
}

/// [`Dot`] in plain Rust (the compiler vectorises it for whatever target it builds for).
#[derive(Clone, Copy)]
struct PortableDot;

impl Dot for PortableDot {
    #[inline(always)]
    fn dot(self, a: &[f32], b: &[f32]) -> f32 {
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

    #[inline(always)]
    fn dot4(self, a: &[f32], b: [&[f32]; 4]) -> [f32; 4] {
        b.map(|row| self.dot(a, row))
    }
}

/// [`Dot`] with AVX2 intrinsics for [`Dot::dot4`]: four accumulators, one per key, so the
/// additions of one key do not wait on each other's latency (a single key's chain of
/// dependent adds is what limited the portable loop). A value of this type exists only
/// where AVX2 was detected.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Avx2Dot(());

#[cfg(target_arch = "x86_64")]
impl Avx2Dot {
    /// # Safety
    /// The CPU must support AVX2.
    unsafe fn new() -> Avx2Dot {
        Avx2Dot(())
    }
}

#[cfg(target_arch = "x86_64")]
impl Dot for Avx2Dot {
    #[inline(always)]
    fn dot(self, a: &[f32], b: &[f32]) -> f32 {
        PortableDot.dot(a, b)
    }

    #[inline(always)]
    fn dot4(self, a: &[f32], b: [&[f32]; 4]) -> [f32; 4] {
        // SAFETY: an `Avx2Dot` is only made by `Avx2Dot::new`, whose callers guarantee AVX2.
        unsafe { dot4_avx2(a, b) }
    }
}

/// [`Dot::dot4`] for AVX2, adding exactly as [`PortableDot::dot`] does for each row.
///
/// # Safety
/// The CPU must support AVX2. (Every row must hold at least `a.len()` elements: checked.)
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn dot4_avx2(a: &[f32], b: [&[f32]; 4]) -> [f32; 4] {
    use std::arch::x86_64::*;
    let n = a.len();
    let b = b.map(|row| &row[..n]);
    let chunks = n / 8 * 8;
    let pa = a.as_ptr();
    let pb = b.map(|row| row.as_ptr());
    // SAFETY: every load reads 8 floats at an offset i with i + 8 <= chunks <= n, and `a`
    // and every row of `b` hold n floats.
    let lanes = unsafe {
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i < chunks {
            let x = _mm256_loadu_ps(pa.add(i));
            for (acc_j, pb_j) in acc.iter_mut().zip(pb) {
                let p = _mm256_mul_ps(x, _mm256_loadu_ps(pb_j.add(i)));
                *acc_j = _mm256_add_ps(*acc_j, p);
            }
            i += 8;
        }
        acc.map(|v| {
            let mut lanes = [0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), v);
            lanes
        })
    };
    let mut out = [0f32; 4];
    for ((o, lanes_j), row) in out.iter_mut().zip(&lanes).zip(b) {
        let mut s: f32 = lanes_j.iter().sum();
        for i in chunks..n {
            s += a[i] * row[i];
        }
        *o = s;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_dot4_adds_in_the_portable_order_bit_for_bit() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            eprintln!("SKIPPED: this CPU has no AVX2; the AVX2 dot cannot run");
            return;
        }
        // SAFETY: AVX2 was just detected.
        let avx2 = unsafe { Avx2Dot::new() };
        for n in [
            0usize, 1, 7, 8, 9, 31, 32, 33, 64, 72, 96, 100, 128, 256, 257,
        ] {
            // Mixed magnitudes and signs, so a different summation order changes the bits.
            let a: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) * 1.37e-2)
                .collect();
            let rows: Vec<Vec<f32>> = (0..4)
                .map(|j| {
                    (0..n)
                        .map(|i| ((i * 53 % 97 + j) as f32 - 48.0) * 10f32.powi(i as i32 % 5 - 2))
                        .collect()
                })
                .collect();
            let b = [&rows[0][..], &rows[1][..], &rows[2][..], &rows[3][..]];
            let (p, v) = (PortableDot.dot4(&a, b), avx2.dot4(&a, b));
            for j in 0..4 {
                assert_eq!(
                    p[j].to_bits(),
                    v[j].to_bits(),
                    "n = {n}, row {j}: {p:?} vs {v:?}"
                );
                // f32 summation error is bounded relative to the sum of |products|.
                let products = a.iter().zip(b[j]).map(|(&x, &y)| x as f64 * y as f64);
                let (exact, size) = products.fold((0.0, 0.0), |(s, m), p| (s + p, m + p.abs()));
                let err = (p[j] as f64 - exact).abs();
                assert!(err <= 1e-5 * size, "n = {n}: {} vs {exact}", p[j]);
            }
        }
    }

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

    /// Fills a cache with `n_cached + n_new` positions, runs attention for the last
    /// `n_new` queries and compares every output with [`naive`].
    fn check_against_naive(
        n_head: usize,
        n_head_kv: usize,
        d: usize,
        n_cached: usize,
        n_new: usize,
    ) {
        let n_tok = n_cached + n_new;
        let mut cache = KvCache::new(KvType::F32, n_tok + 3, 2, n_head_kv, d, d);
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
            cache.write(1, pos, &k, &v);
        }
        let q: Vec<f32> = (0..n_new * n_head * d).map(|i| val(i + 1000)).collect();
        let p = AttnParams {
            n_head,
            n_head_kv,
            head_dim_k: d,
            head_dim_v: d,
            scale: 1.0 / (d as f32).sqrt(),
            window: None,
            values_in_keys: false,
        };
        let mut out = vec![0f32; n_new * n_head * d];
        attention(
            &pool(),
            &cache,
            1,
            &p,
            &q,
            n_cached,
            &mut out,
            &mut AttnScratch::default(),
        );
        let group = n_head / n_head_kv;
        for t in 0..n_new {
            let pos = n_cached + t;
            for h in 0..n_head {
                let kv = h / group;
                let i = t * n_head + h;
                let want = naive(
                    &q[i * d..(i + 1) * d],
                    &ks[kv][..=pos],
                    &vs[kv][..=pos],
                    p.scale,
                );
                for (a, b) in out[i * d..(i + 1) * d].iter().zip(&want) {
                    assert!((a - b).abs() < 1e-5, "token {t} head {h}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn matches_naive_softmax_attention_with_grouped_heads_and_causal_mask() {
        check_against_naive(4, 2, 8, 0, 5);
    }

    #[test]
    fn matches_naive_attention_across_query_blocks_key_chunks_and_a_cached_prefix() {
        // 150 new queries (many Q_BLOCKs) after 70 cached positions (several KEY_CHUNKs).
        check_against_naive(6, 2, 16, 70, 150);
    }

    #[test]
    fn long_context_decode_split_into_key_segments_matches_naive_attention() {
        assert!(
            key_segments(1, 1000, 2) > 1,
            "this case must exercise the split"
        );
        check_against_naive(4, 1, 32, 999, 1);
    }

    #[test]
    fn key_segments_split_only_when_tasks_are_few_and_the_context_long() {
        assert_eq!(key_segments(64, 4096, 2), 1);
        assert_eq!(key_segments(1, 100, 2), 1);
        assert_eq!(key_segments(1, 4096, 2), 4);
        assert_eq!(key_segments(3, 600, 4), 2);
    }

    #[test]
    fn single_token_decode_matches_naive_attention() {
        check_against_naive(9, 3, 64, 200, 1);
    }

    /// Latent-attention layout: one shared head whose key rows are `[latent, rotary]` and
    /// whose values are the latent part, with no value rows stored; `kv_type` F16 takes the
    /// reference's F16-accumulation path.
    fn check_values_in_keys(kv_type: KvType, n_cached: usize, n_new: usize, tol: f32) {
        let (n_head, dk, dv) = (4, 12, 8);
        let n_tok = n_cached + n_new;
        let mut cache = KvCache::new(kv_type, n_tok, 1, 1, dk, 0);
        let round = |x: f32| match kv_type {
            KvType::F16 => f16::from_f32(x).to_f32(),
            KvType::F32 => x,
        };
        let mut ks = Vec::new();
        for pos in 0..n_tok {
            let k: Vec<f32> = (0..dk).map(|i| val(pos * 31 + i)).collect();
            cache.write(0, pos, &k, &[]);
            ks.push(k.iter().map(|&x| round(x)).collect::<Vec<f32>>());
        }
        let vs: Vec<Vec<f32>> = ks.iter().map(|k| k[..dv].to_vec()).collect();
        let q: Vec<f32> = (0..n_new * n_head * dk).map(|i| val(i + 500)).collect();
        let p = AttnParams {
            n_head,
            n_head_kv: 1,
            head_dim_k: dk,
            head_dim_v: dv,
            scale: 0.3,
            window: None,
            values_in_keys: true,
        };
        let mut out = vec![0f32; n_new * n_head * dv];
        attention(
            &pool(),
            &cache,
            0,
            &p,
            &q,
            n_cached,
            &mut out,
            &mut AttnScratch::default(),
        );
        for t in 0..n_new {
            for h in 0..n_head {
                let i = t * n_head + h;
                let qr: Vec<f32> = q[i * dk..(i + 1) * dk].iter().map(|&x| round(x)).collect();
                let want = naive(&qr, &ks[..=n_cached + t], &vs[..=n_cached + t], p.scale);
                for (a, b) in out[i * dv..(i + 1) * dv].iter().zip(&want) {
                    assert!((a - b).abs() < tol, "token {t} head {h}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn values_taken_from_the_key_rows_match_naive_attention() {
        check_values_in_keys(KvType::F32, 5, 3, 1e-5);
        check_values_in_keys(KvType::F32, 0, 9, 1e-5);
    }

    #[test]
    fn values_taken_from_f16_key_rows_are_accumulated_within_f16_precision() {
        // |values| < 1.5, so F16 accumulation keeps about 3 decimal digits.
        check_values_in_keys(KvType::F16, 7, 2, 5e-3);
        check_values_in_keys(KvType::F16, 0, 10, 5e-3);
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
            values_in_keys: false,
        };
        let mut out = vec![0f32; 4];
        attention(
            &pool(),
            &cache,
            0,
            &p,
            &[9.0, -3.0, 1.0, 0.0],
            0,
            &mut out,
            &mut AttnScratch::default(),
        );
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
            values_in_keys: false,
        };
        let mut out = vec![0f32; 1];
        // equal scores: the mean of the visible values 2 and 3
        attention(
            &pool(),
            &cache,
            0,
            &p,
            &[1.0],
            3,
            &mut out,
            &mut AttnScratch::default(),
        );
        assert_eq!(out[0], 2.5);
    }

    /// Attention with a sliding window over a ring cache (few slots, positions wrapping)
    /// gives what it gives over a cache with a slot per position.
    fn ring_matches_full_cache(window: usize, max_batch: usize, n_cached: usize, n_new: usize) {
        let (n_head, n_kv, d) = (4, 2, 16);
        let n_tok = n_cached + n_new;
        let mut full = KvCache::new(KvType::F16, n_tok, 1, n_kv, d, d);
        let mut ring =
            KvCache::with_windows(KvType::F16, n_tok, &[Some(window)], max_batch, n_kv, d, d);
        assert!(ring.slots(0) < n_tok, "this case must wrap the ring");
        let p = AttnParams {
            n_head,
            n_head_kv: n_kv,
            head_dim_k: d,
            head_dim_v: d,
            scale: 0.25,
            window: Some(window),
            values_in_keys: false,
        };
        let mut pos = 0;
        // the cached prefix goes in one token at a time, the rest as one batch
        for t in std::iter::repeat_n(1, n_cached).chain([n_new]) {
            let q: Vec<f32> = (0..t * n_head * d).map(|i| val(pos * 31 + i)).collect();
            for j in pos..pos + t {
                let k: Vec<f32> = (0..n_kv * d).map(|i| val(j * 100 + i)).collect();
                let v: Vec<f32> = (0..n_kv * d).map(|i| val(j * 100 + i + 50)).collect();
                full.write(0, j, &k, &v);
                ring.write(0, j, &k, &v);
            }
            let mut a = vec![0f32; t * n_head * d];
            let mut b = a.clone();
            attention(
                &pool(),
                &full,
                0,
                &p,
                &q,
                pos,
                &mut a,
                &mut AttnScratch::default(),
            );
            attention(
                &pool(),
                &ring,
                0,
                &p,
                &q,
                pos,
                &mut b,
                &mut AttnScratch::default(),
            );
            // equal up to f32 rounding: the ring splits a key run where it wraps, which
            // changes when the online softmax rescales
            for (x, y) in a.iter().zip(&b) {
                assert!(
                    (x - y).abs() < 1e-5,
                    "batch of {t} at position {pos}: {x} vs {y}"
                );
            }
            pos += t;
        }
    }

    #[test]
    fn sliding_window_over_a_wrapping_ring_equals_the_full_cache_in_decode() {
        ring_matches_full_cache(8, 1, 200, 1);
    }

    #[test]
    fn sliding_window_over_a_wrapping_ring_equals_the_full_cache_in_a_batch() {
        // 70 + 9 - 1 = 78 slots; the batch of 70 wraps the ring mid-chunk
        ring_matches_full_cache(9, 70, 100, 70);
    }

    #[test]
    fn a_long_sliding_window_split_into_key_segments_matches_the_full_cache() {
        ring_matches_full_cache(700, 1, 1500, 1);
    }
}
