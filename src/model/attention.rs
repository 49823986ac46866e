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
//! Within a task, each chunk of keys is first scored for every query row: rows in pairs
//! against four keys at a time (in AVX2 each loaded key serves both rows and the eight sums
//! are reduced by one transpose), keys in blocks of about 16 KiB that stay in L1 while every
//! row pair passes over them. Then per row the chunk's max, the rescale and the weights
//! `exp(s - M)` (the `exp` calls in a loop of their own, their adds into `S` after it), then
//! the value sums, rows in pairs again, four keys per pass; F16 rows are converted with F16C.
//! Each score adds as `PortableDot::dot` does, each accumulator element adds its keys one
//! after another in key order, and `exp` gets the same inputs, so the results are bit for
//! bit those of one row at a time (a test keeps that body as the reference). Measured on
//! Zen 4 with 2 threads: the tasks of a 512-token prompt run 1.6-1.7x as fast as one row at
//! a time for Gemma3-270M's and Qwen2.5-0.5B's shapes; pp512 went up 1.16x (Gemma3-270M) and
//! 1.13x (Qwen2.5-Coder-0.5B); decode is unchanged.
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
/// Key floats per block of a chunk's keys scored against every query row in turn (16 KiB).
const SCORE_BLOCK_FLOATS: usize = 4096;

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
    /// vectorised 8 floats wide instead of 4, with the scores and value sums in explicit AVX2
    /// ([`Avx2Dot`]) that adds in the same order as [`PortableDot`]. Neither ever fuses
    /// `a * b + c` into an FMA, so the results are bit for bit those of the portable build.
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
    ///
    /// Per chunk of keys: first every row's scores (rows in pairs against four keys at a
    /// time, [`Dot::scores`]), then per row the chunk's max, rescale and weights
    /// `exp(s - M)`, then the value sums, rows in pairs again ([`Dot::add_values`]). Each
    /// score is added in the order of [`PortableDot::dot`] and each accumulator element adds
    /// its keys one after another in key order, so the tiling changes no bit.
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
        let scores = grown(&mut bufs.scores, n_rows * KEY_CHUNK);
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
            let k = dot.rows_f32(self.kv.keys, s0 * dk..s1 * dk, k_buf);
            let (v, v_stride) = if self.p.values_in_keys {
                (k, dk)
            } else {
                (dot.rows_f32(self.kv.values, s0 * dv..s1 * dv, v_buf), dv)
            };
            // The keys `lo .. hi` of this chunk that row `r` sees.
            let range = |r: usize| {
                let pos = self.pos0 + r / self.group;
                (self.first_key(pos).max(j0), (pos + 1).min(j1))
            };
            if f16_acc {
                for r in 0..n_rows {
                    let (lo, hi) = range(r);
                    let q_row = &q[r * dk..(r + 1) * dk];
                    let acc = &mut acc_all[r * dv..(r + 1) * dv];
                    // As the reference's flash attention with an F16 cache: keys one at a
                    // time, the value accumulator kept in binary16 (rescaled, then
                    // `acc + v * w` fused, rounded after each step).
                    for j in lo..hi {
                        let k_row = &k[(j - j0) * dk..(j - j0 + 1) * dk];
                        let v_row = &v[(j - j0) * v_stride..(j - j0) * v_stride + dv];
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
                        for (o, &x) in acc.iter_mut().zip(v_row) {
                            *o = f16::from_f32(x.mul_add(vs, *o)).to_f32();
                        }
                        sum[r] = sum[r] * ms + vs;
                    }
                }
                j0 = j1;
                continue;
            }
            // Scores, rows in pairs over the keys either of them sees (a key only one of
            // them sees gets a score the other ignores).
            // Keys in blocks of about 16 KiB, so that a block stays in L1 for all rows.
            let ks = &k[..(j1 - j0) * dk];
            let block = (SCORE_BLOCK_FLOATS / dk.max(1)).clamp(4, KEY_CHUNK);
            for b0 in (j0..j1).step_by(block) {
                let b1 = (b0 + block).min(j1);
                // Row `r`'s keys in this block.
                let range = |r: usize| {
                    let (lo, hi) = range(r);
                    (lo.max(b0), hi.min(b1))
                };
                let mut r = 0;
                while r < n_rows {
                    let (lo, hi) = range(r);
                    if r + 1 < n_rows {
                        let (lo_b, hi_b) = range(r + 1);
                        let (lo, hi) = (lo.min(lo_b), hi.max(hi_b));
                        if lo < hi {
                            let (lo, hi) = (lo - j0, hi - j0);
                            let q2 = [&q[r * dk..(r + 1) * dk], &q[(r + 1) * dk..(r + 2) * dk]];
                            let (s_a, s_b) =
                                scores[r * KEY_CHUNK..(r + 2) * KEY_CHUNK].split_at_mut(KEY_CHUNK);
                            let mut s2 = [&mut s_a[lo..hi], &mut s_b[lo..hi]];
                            dot.scores(&q2, &ks[lo * dk..], self.p.scale, &mut s2);
                        }
                        r += 2;
                    } else {
                        if lo < hi {
                            let (lo, hi) = (lo - j0, hi - j0);
                            let q1 = [&q[r * dk..(r + 1) * dk]];
                            let s_a = &mut scores[r * KEY_CHUNK..(r + 1) * KEY_CHUNK];
                            dot.scores(&q1, &ks[lo * dk..], self.p.scale, &mut [&mut s_a[lo..hi]]);
                        }
                        r += 1;
                    }
                }
            }
            // Online softmax per row: the scores of the keys it sees become weights.
            for r in 0..n_rows {
                let (lo, hi) = range(r);
                if lo >= hi {
                    continue;
                }
                let s = &mut scores[r * KEY_CHUNK + (lo - j0)..r * KEY_CHUNK + (hi - j0)];
                let chunk_max = s.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
                if chunk_max > max[r] {
                    let rescale = (max[r] - chunk_max).exp();
                    for o in acc_all[r * dv..(r + 1) * dv].iter_mut() {
                        *o *= rescale;
                    }
                    sum[r] *= rescale;
                    max[r] = chunk_max;
                }
                let m = max[r];
                // (The adds apart from the calls, so that no add waits on an `exp`.)
                for sj in s.iter_mut() {
                    *sj = (*sj - m).exp();
                }
                for &w in s.iter() {
                    sum[r] += w;
                }
            }
            // Value sums, rows in pairs over the keys both see; keys only one of them sees
            // (before or after those) are added for it alone, before or after.
            let vs = &v[..(j1 - j0 - 1) * v_stride + dv];
            let mut r = 0;
            while r < n_rows {
                let (lo_a, hi_a) = range(r);
                #[inline(always)]
                fn single(
                    dot: impl Dot,
                    (acc, w): (&mut [f32], &[f32]),
                    (lo, hi): (usize, usize),
                    (vs, v_stride, j0): (&[f32], usize, usize),
                ) {
                    if lo < hi {
                        let w = &w[lo - j0..hi - j0];
                        dot.add_values(&mut [acc], &[w], &vs[(lo - j0) * v_stride..], v_stride);
                    }
                }
                if r + 1 < n_rows {
                    let (lo_b, hi_b) = range(r + 1);
                    let (lo, hi) = (lo_a.max(lo_b), hi_a.min(hi_b));
                    let (acc_a, acc_b) = acc_all[r * dv..(r + 2) * dv].split_at_mut(dv);
                    let (w_a, w_b) = scores[r * KEY_CHUNK..(r + 2) * KEY_CHUNK].split_at(KEY_CHUNK);
                    if lo < hi {
                        single(dot, (acc_a, w_a), (lo_a, lo), (vs, v_stride, j0));
                        single(dot, (acc_b, w_b), (lo_b, lo), (vs, v_stride, j0));
                        let w = [&w_a[lo - j0..hi - j0], &w_b[lo - j0..hi - j0]];
                        let vs_lo = &vs[(lo - j0) * v_stride..];
                        dot.add_values(&mut [&mut *acc_a, &mut *acc_b], &w, vs_lo, v_stride);
                        single(dot, (acc_a, w_a), (hi, hi_a), (vs, v_stride, j0));
                        single(dot, (acc_b, w_b), (hi, hi_b), (vs, v_stride, j0));
                    } else {
                        single(dot, (acc_a, w_a), (lo_a, hi_a), (vs, v_stride, j0));
                        single(dot, (acc_b, w_b), (lo_b, hi_b), (vs, v_stride, j0));
                    }
                    r += 2;
                } else {
                    let acc_a = &mut acc_all[r * dv..(r + 1) * dv];
                    let w_a = &scores[r * KEY_CHUNK..(r + 1) * KEY_CHUNK];
                    single(dot, (acc_a, w_a), (lo_a, hi_a), (vs, v_stride, j0));
                    r += 1;
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

/// q.k dot products and value sums. Every implementation adds exactly as
/// [`PortableDot::dot`] does: eight partial sums (`lane i` takes elements `i, i + 8, ...`,
/// each product rounded, then added), the lanes summed left to right, then the last
/// `len % 8` products one by one. Results on some models are sensitive to this order (Gemma
/// 3's greedy continuations against the reference change with it), so faster variants keep
/// it and gain by computing several rows and keys at once instead.
trait Dot: Copy {
    /// `sum(a[i] * b[i])` over `a.len()` elements (`b` at least as long).
    fn dot(self, a: &[f32], b: &[f32]) -> f32;
    /// The stored rows in `range` as f32: borrowed for an F32 cache, converted into `buf`
    /// for F16 (exactly: every binary16 value is an f32).
    #[inline(always)]
    fn rows_f32<'a>(
        self,
        rows: KvRows<'a>,
        range: std::ops::Range<usize>,
        buf: &'a mut [f32],
    ) -> &'a [f32] {
        rows_f32(rows, range, buf)
    }
    /// `s[r][j] = dot(q[r], k_j) * scale` for the keys `k_j = k[j * dk .. (j + 1) * dk]`,
    /// `dk = q[r].len()` (equal for every row), `j < s[r].len()` (equal for every row).
    fn scores<const R: usize>(
        self,
        q: &[&[f32]; R],
        k: &[f32],
        scale: f32,
        s: &mut [&mut [f32]; R],
    );
    /// `acc[r][i] = acc[r][i] + w[r][0] * v_0[i] + w[r][1] * v_1[i] + ...` for every row `r`
    /// and element `i` (products rounded, added left to right, never fused), where
    /// `v_j = v[j * v_stride ..]` and the keys `j < w[r].len()` (equal for every row). The
    /// rows of `acc` have equal length.
    fn add_values<const R: usize>(
        self,
        acc: &mut [&mut [f32]; R],
        w: &[&[f32]; R],
        v: &[f32],
        v_stride: usize,
    );
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
    fn scores<const R: usize>(
        self,
        q: &[&[f32]; R],
        k: &[f32],
        scale: f32,
        s: &mut [&mut [f32]; R],
    ) {
        for (q_r, s_r) in q.iter().zip(s.iter_mut()) {
            let dk = q_r.len();
            for (j, sj) in s_r.iter_mut().enumerate() {
                *sj = self.dot(q_r, &k[j * dk..(j + 1) * dk]) * scale;
            }
        }
    }

    #[inline(always)]
    fn add_values<const R: usize>(
        self,
        acc: &mut [&mut [f32]; R],
        w: &[&[f32]; R],
        v: &[f32],
        v_stride: usize,
    ) {
        for (acc_r, w_r) in acc.iter_mut().zip(w) {
            let dv = acc_r.len();
            let row = |j: usize| &v[j * v_stride..j * v_stride + dv];
            // Four keys per pass over the accumulator row: it stays in registers for them.
            let mut quads = w_r.chunks_exact(4);
            let mut j = 0;
            for w4 in quads.by_ref() {
                let (v0, v1, v2, v3) = (row(j), row(j + 1), row(j + 2), row(j + 3));
                for (i, o) in acc_r.iter_mut().enumerate() {
                    *o = *o + w4[0] * v0[i] + w4[1] * v1[i] + w4[2] * v2[i] + w4[3] * v3[i];
                }
                j += 4;
            }
            for &w_j in quads.remainder() {
                for (o, &x) in acc_r.iter_mut().zip(row(j)) {
                    *o += w_j * x;
                }
                j += 1;
            }
        }
    }
}

/// [`Dot`] with AVX2 intrinsics: scores for two query rows against four keys at once (one
/// accumulator per pair, so each loaded key serves both rows, and the eight sums reduced
/// together by a transpose), value sums for two rows against four value rows at once (each
/// loaded value vector serves both accumulator rows). A value of this type exists only
/// where AVX2 was detected.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Avx2Dot {
    /// The CPU has F16C (F16 rows are converted with it).
    f16c: bool,
}

#[cfg(target_arch = "x86_64")]
impl Avx2Dot {
    /// # Safety
    /// The CPU must support AVX2.
    unsafe fn new() -> Avx2Dot {
        Avx2Dot {
            f16c: std::arch::is_x86_feature_detected!("f16c"),
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl Dot for Avx2Dot {
    #[inline(always)]
    fn rows_f32<'a>(
        self,
        rows: KvRows<'a>,
        range: std::ops::Range<usize>,
        buf: &'a mut [f32],
    ) -> &'a [f32] {
        match rows {
            KvRows::F16(r) if self.f16c => {
                let (src, dst) = (&r[range.clone()], &mut buf[..range.len()]);
                // SAFETY: an `Avx2Dot` is only made by `Avx2Dot::new`, whose callers
                // guarantee AVX2, and `f16c` says whether the CPU has F16C.
                unsafe { f16_to_f32_f16c(src, dst) };
                dst
            }
            _ => rows_f32(rows, range, buf),
        }
    }

    #[inline(always)]
    fn dot(self, a: &[f32], b: &[f32]) -> f32 {
        PortableDot.dot(a, b)
    }

    #[inline(always)]
    fn scores<const R: usize>(
        self,
        q: &[&[f32]; R],
        k: &[f32],
        scale: f32,
        s: &mut [&mut [f32]; R],
    ) {
        let Some(dk) = q.first().map(|q0| q0.len()) else {
            return;
        };
        let n = s[0].len();
        assert!(k.len() >= n * dk, "scores: {n} keys of {dk} in {}", k.len());
        let mut pq = [std::ptr::null::<f32>(); R];
        for (p, q_r) in pq.iter_mut().zip(q) {
            assert_eq!(q_r.len(), dk);
            *p = q_r.as_ptr();
        }
        let mut ps = [std::ptr::null_mut::<f32>(); R];
        for (p, s_r) in ps.iter_mut().zip(s.iter_mut()) {
            assert_eq!(s_r.len(), n);
            *p = s_r.as_mut_ptr();
        }
        // SAFETY: an `Avx2Dot` is only made by `Avx2Dot::new`, whose callers guarantee AVX2;
        // every query row holds dk floats, `k` n rows of dk, every score row n floats.
        unsafe { scores_avx2(pq, k.as_ptr(), dk, n, scale, ps) }
    }

    #[inline(always)]
    fn add_values<const R: usize>(
        self,
        acc: &mut [&mut [f32]; R],
        w: &[&[f32]; R],
        v: &[f32],
        v_stride: usize,
    ) {
        let Some(dv) = acc.first().map(|a0| a0.len()) else {
            return;
        };
        let n = w[0].len();
        if n == 0 {
            return;
        }
        assert!(v.len() >= (n - 1) * v_stride + dv, "add_values: {n} values");
        let mut pa = [std::ptr::null_mut::<f32>(); R];
        for (p, acc_r) in pa.iter_mut().zip(acc.iter_mut()) {
            assert_eq!(acc_r.len(), dv);
            *p = acc_r.as_mut_ptr();
        }
        let mut pw = [std::ptr::null::<f32>(); R];
        for (p, w_r) in pw.iter_mut().zip(w) {
            assert_eq!(w_r.len(), n);
            *p = w_r.as_ptr();
        }
        // SAFETY: an `Avx2Dot` is only made by `Avx2Dot::new`, whose callers guarantee AVX2;
        // every accumulator row (distinct `&mut`) holds dv floats, every weight row n, and
        // `v` the n value rows of dv at stride v_stride.
        unsafe { add_values_avx2(pa, pw, n, v.as_ptr(), v_stride, dv) }
    }
}

/// `dst[i] = src[i]` as f32 (exact), 8 at a time with F16C; `dst` as long as `src` (checked).
///
/// # Safety
/// The CPU must support AVX2 and F16C.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn f16_to_f32_f16c(src: &[f16], dst: &mut [f32]) {
    use std::arch::x86_64::*;
    assert_eq!(src.len(), dst.len());
    let n = src.len();
    let chunks = n / 8 * 8;
    let (ps, pd) = (src.as_ptr(), dst.as_mut_ptr());
    let mut i = 0;
    // SAFETY: every load reads 8 binary16 values (16 bytes, `f16` is a transparent `u16`) and
    // every store writes 8 floats at an offset i with i + 8 <= chunks <= n, the length of both.
    unsafe {
        while i < chunks {
            let h = _mm_loadu_si128(ps.add(i).cast::<__m128i>());
            _mm256_storeu_ps(pd.add(i), _mm256_cvtph_ps(h));
            i += 8;
        }
    }
    for (d, h) in dst[chunks..].iter_mut().zip(&src[chunks..]) {
        *d = h.to_f32();
    }
}

/// [`Dot::scores`] for AVX2: two rows against four keys (one row: against eight) per step,
/// then the last keys one at a time.
///
/// # Safety
/// The CPU must support AVX2; every `q[r]` must point to `dk` floats, `k` to `n * dk`, every
/// `s[r]` to `n` writable floats not overlapping the others.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn scores_avx2<const R: usize>(
    q: [*const f32; R],
    k: *const f32,
    dk: usize,
    n: usize,
    scale: f32,
    s: [*mut f32; R],
) {
    // SAFETY: every key index j and j + t stays below n, so every key row read lies in
    // the n rows of `k`, and every score written in the n of its row.
    unsafe {
        let key = |j: usize| k.add(j * dk);
        let mut j = 0;
        if R == 2 {
            while j + 4 <= n {
                let d = dots_avx2(
                    [q[0], q[R - 1]],
                    [key(j), key(j + 1), key(j + 2), key(j + 3)],
                    dk,
                );
                for (&s_r, d_r) in s.iter().zip(&d) {
                    for (t, &x) in d_r.iter().enumerate() {
                        *s_r.add(j + t) = x * scale;
                    }
                }
                j += 4;
            }
        } else if R == 1 {
            while j + 8 <= n {
                let mut keys = [k; 8];
                for (t, p) in keys.iter_mut().enumerate() {
                    *p = key(j + t);
                }
                let d = dots_avx2([q[0]], keys, dk);
                for (t, &x) in d[0].iter().enumerate() {
                    *s[0].add(j + t) = x * scale;
                }
                j += 8;
            }
        }
        while j < n {
            for (&q_r, &s_r) in q.iter().zip(&s) {
                *s_r.add(j) = dots_avx2([q_r], [key(j)], dk)[0][0] * scale;
            }
            j += 1;
        }
    }
}

/// The dots of `R` rows `a` with `K` rows `b`, all of `n` floats, each adding exactly as
/// [`PortableDot::dot`] does.
///
/// # Safety
/// The CPU must support AVX2; every pointer must point to `n` floats.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn dots_avx2<const R: usize, const K: usize>(
    a: [*const f32; R],
    b: [*const f32; K],
    n: usize,
) -> [[f32; K]; R] {
    use std::arch::x86_64::*;
    let chunks = n / 8 * 8;
    let mut lanes = [[[0f32; 8]; K]; R];
    // SAFETY: every load reads 8 floats at an offset i with i + 8 <= chunks <= n, and every
    // row of `a` and `b` holds n floats; every store writes one `[f32; 8]`.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); K]; R];
        let mut i = 0;
        while i < chunks {
            let mut y = [_mm256_setzero_ps(); K];
            for (y_k, pb_k) in y.iter_mut().zip(b) {
                *y_k = _mm256_loadu_ps(pb_k.add(i));
            }
            for (acc_r, pa_r) in acc.iter_mut().zip(a) {
                let x = _mm256_loadu_ps(pa_r.add(i));
                for (acc_rk, &y_k) in acc_r.iter_mut().zip(&y) {
                    *acc_rk = _mm256_add_ps(*acc_rk, _mm256_mul_ps(x, y_k));
                }
            }
            i += 8;
        }
        if R * K == 8 {
            // Eight sums at once: transpose the accumulators so that vector `l` holds lane
            // `l` of each, then add the lane vectors left to right, from the value an empty
            // `Iterator::sum` starts at; per sum that is exactly `lanes.iter().sum()`.
            let mut r = [_mm256_setzero_ps(); 8];
            for (r_x, &acc_rk) in r.iter_mut().zip(acc.iter().flatten()) {
                *r_x = acc_rk;
            }
            let t0 = _mm256_unpacklo_ps(r[0], r[1]);
            let t1 = _mm256_unpackhi_ps(r[0], r[1]);
            let t2 = _mm256_unpacklo_ps(r[2], r[3]);
            let t3 = _mm256_unpackhi_ps(r[2], r[3]);
            let t4 = _mm256_unpacklo_ps(r[4], r[5]);
            let t5 = _mm256_unpackhi_ps(r[4], r[5]);
            let t6 = _mm256_unpacklo_ps(r[6], r[7]);
            let t7 = _mm256_unpackhi_ps(r[6], r[7]);
            let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
            let u1 = _mm256_shuffle_ps::<0xee>(t0, t2);
            let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
            let u3 = _mm256_shuffle_ps::<0xee>(t1, t3);
            let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
            let u5 = _mm256_shuffle_ps::<0xee>(t4, t6);
            let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
            let u7 = _mm256_shuffle_ps::<0xee>(t5, t7);
            let lane = [
                _mm256_permute2f128_ps::<0x20>(u0, u4),
                _mm256_permute2f128_ps::<0x20>(u1, u5),
                _mm256_permute2f128_ps::<0x20>(u2, u6),
                _mm256_permute2f128_ps::<0x20>(u3, u7),
                _mm256_permute2f128_ps::<0x31>(u0, u4),
                _mm256_permute2f128_ps::<0x31>(u1, u5),
                _mm256_permute2f128_ps::<0x31>(u2, u6),
                _mm256_permute2f128_ps::<0x31>(u3, u7),
            ];
            let start: f32 = [0f32; 0].iter().sum();
            let mut s = _mm256_set1_ps(start);
            for l in lane {
                s = _mm256_add_ps(s, l);
            }
            let mut sums = [0f32; 8];
            _mm256_storeu_ps(sums.as_mut_ptr(), s);
            for (x, lanes_x) in sums.iter().zip(lanes.iter_mut().flatten()) {
                lanes_x[0] = *x;
            }
        } else {
            for (lanes_r, acc_r) in lanes.iter_mut().zip(&acc) {
                for (lanes_rk, &acc_rk) in lanes_r.iter_mut().zip(acc_r) {
                    _mm256_storeu_ps(lanes_rk.as_mut_ptr(), acc_rk);
                }
            }
        }
    }
    let mut out = [[0f32; K]; R];
    for ((out_r, lanes_r), &a_r) in out.iter_mut().zip(&lanes).zip(&a) {
        for ((o, lanes_rk), &b_k) in out_r.iter_mut().zip(lanes_r).zip(&b) {
            // (Already summed into lane 0 when eight sums were transposed.)
            let mut s: f32 = if R * K == 8 {
                lanes_rk[0]
            } else {
                lanes_rk.iter().sum()
            };
            for i in chunks..n {
                // SAFETY: i < n, and both rows hold n floats.
                s += unsafe { *a_r.add(i) * *b_k.add(i) };
            }
            *o = s;
        }
    }
    out
}

/// [`Dot::add_values`] for AVX2: the same roundings in the same order, 8 elements at once,
/// four keys per pass over the accumulator rows, then the last keys one at a time.
///
/// # Safety
/// The CPU must support AVX2; every `acc[r]` must point to `dv` writable floats not
/// overlapping the others or the inputs, every `w[r]` to `n` floats, and `v` to `n` rows of
/// `dv` floats at stride `v_stride`.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn add_values_avx2<const R: usize>(
    acc: [*mut f32; R],
    w: [*const f32; R],
    n: usize,
    v: *const f32,
    v_stride: usize,
    dv: usize,
) {
    // SAFETY: every key index j + t stays below n, so every weight read lies in its row
    // and every value row in `v` (this function's contract).
    unsafe {
        let mut j = 0;
        while j + 4 <= n {
            let mut wj = [[0f32; 4]; R];
            for (wj_r, &w_r) in wj.iter_mut().zip(&w) {
                for (t, x) in wj_r.iter_mut().enumerate() {
                    *x = *w_r.add(j + t);
                }
            }
            let vj = [0, 1, 2, 3].map(|t| v.add((j + t) * v_stride));
            add_keys_avx2(acc, wj, vj, dv);
            j += 4;
        }
        while j < n {
            let mut wj = [[0f32; 1]; R];
            for (wj_r, &w_r) in wj.iter_mut().zip(&w) {
                wj_r[0] = *w_r.add(j);
            }
            add_keys_avx2(acc, wj, [v.add(j * v_stride)], dv);
            j += 1;
        }
    }
}

/// `acc[r][i] = acc[r][i] + w[r][0] * v[0][i] + ...` for `i < dv`, 8 elements at once.
///
/// # Safety
/// The CPU must support AVX2; every `acc[r]` must point to `dv` writable floats not
/// overlapping the others or `v`, and every `v[t]` to `dv` floats.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn add_keys_avx2<const R: usize, const K: usize>(
    acc: [*mut f32; R],
    w: [[f32; K]; R],
    v: [*const f32; K],
    dv: usize,
) {
    use std::arch::x86_64::*;
    let chunks = dv / 8 * 8;
    // SAFETY: every load and store touches 8 floats at an offset i with i + 8 <= chunks <=
    // dv, then single floats at i < dv, within rows of dv floats (this function's contract).
    unsafe {
        let mut wv = [[_mm256_setzero_ps(); K]; R];
        for (wv_r, w_r) in wv.iter_mut().zip(&w) {
            for (wv_rk, &w_rk) in wv_r.iter_mut().zip(w_r) {
                *wv_rk = _mm256_set1_ps(w_rk);
            }
        }
        let mut i = 0;
        while i < chunks {
            let mut y = [_mm256_setzero_ps(); K];
            for (y_k, &v_k) in y.iter_mut().zip(&v) {
                *y_k = _mm256_loadu_ps(v_k.add(i));
            }
            for (&p_r, wv_r) in acc.iter().zip(&wv) {
                let mut x = _mm256_loadu_ps(p_r.add(i));
                for (&wv_rk, &y_k) in wv_r.iter().zip(&y) {
                    x = _mm256_add_ps(x, _mm256_mul_ps(wv_rk, y_k));
                }
                _mm256_storeu_ps(p_r.add(i), x);
            }
            i += 8;
        }
        while i < dv {
            for (&p_r, w_r) in acc.iter().zip(&w) {
                let mut x = *p_r.add(i);
                for (&w_rk, &v_k) in w_r.iter().zip(&v) {
                    x += w_rk * *v_k.add(i);
                }
                *p_r.add(i) = x;
            }
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_scores_and_value_sums_add_in_the_portable_order_bit_for_bit() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            eprintln!("SKIPPED: this CPU has no AVX2; the AVX2 dot cannot run");
            return;
        }
        // SAFETY: AVX2 was just detected.
        let avx2 = unsafe { Avx2Dot::new() };
        for n in [
            0usize, 1, 7, 8, 9, 31, 32, 33, 64, 72, 80, 96, 100, 128, 256, 257,
        ] {
            // Mixed magnitudes and signs, so a different summation order changes the bits.
            let qs: Vec<Vec<f32>> = (0..2)
                .map(|r| {
                    (0..n)
                        .map(|i| ((i * 37 % 101 + 3 * r) as f32 - 50.0) * 1.37e-2)
                        .collect()
                })
                .collect();
            let n_keys = 13;
            let k: Vec<f32> = (0..n_keys * n)
                .map(|x| {
                    let (j, i) = (x / n.max(1), x % n.max(1));
                    ((i * 53 % 97 + j) as f32 - 48.0) * 10f32.powi(i as i32 % 5 - 2)
                })
                .collect();
            // f32 summation error is bounded relative to the sum of |products|.
            for (r, q_r) in qs.iter().enumerate() {
                for j in 0..n_keys {
                    let got = PortableDot.dot(q_r, &k[j * n..]);
                    let products = q_r
                        .iter()
                        .zip(&k[j * n..])
                        .map(|(&x, &y)| x as f64 * y as f64);
                    let (exact, size) = products.fold((0.0, 0.0), |(s, m), p| (s + p, m + p.abs()));
                    let err = (got as f64 - exact).abs();
                    assert!(
                        err <= 1e-5 * size,
                        "n = {n} row {r} key {j}: {got} vs {exact}"
                    );
                }
            }
            for keys in [0..n_keys, 1..n_keys, 3..7, 5..6] {
                let kk = &k[keys.start * n..keys.end * n];
                let m = keys.len();
                let (mut p, mut v) = (vec![vec![0f32; m]; 2], vec![vec![0f32; m]; 2]);
                let q2 = [&qs[0][..], &qs[1][..]];
                let [p0, p1] = &mut p[..] else { unreachable!() };
                PortableDot.scores(&q2, kk, 0.37, &mut [&mut p0[..], &mut p1[..]]);
                let [v0, v1] = &mut v[..] else { unreachable!() };
                avx2.scores(&q2, kk, 0.37, &mut [&mut v0[..], &mut v1[..]]);
                let mut v1 = vec![0f32; m];
                avx2.scores(&[q2[1]], kk, 0.37, &mut [&mut v1[..]]);
                for j in 0..m {
                    let want = PortableDot.dot(q2[0], &kk[j * n..]) * 0.37;
                    assert_eq!(p[0][j].to_bits(), want.to_bits(), "n = {n}");
                    for (a, b) in [(p[0][j], v[0][j]), (p[1][j], v[1][j]), (p[1][j], v1[j])] {
                        assert_eq!(
                            a.to_bits(),
                            b.to_bits(),
                            "n = {n} keys {keys:?}: {a} vs {b}"
                        );
                    }
                }
                // Value sums: each element adds the rounded products left to right.
                let w: Vec<Vec<f32>> = (0..2)
                    .map(|r| {
                        (0..m)
                            .map(|j| (j as f32 * 0.77 + r as f32).sin() * 3.0)
                            .collect()
                    })
                    .collect();
                let w2 = [&w[0][..], &w[1][..]];
                let mut acc_p = qs.clone();
                let [a0, a1] = &mut acc_p[..] else {
                    unreachable!()
                };
                PortableDot.add_values(&mut [&mut a0[..], &mut a1[..]], &w2, kk, n);
                let mut acc_v = qs.clone();
                let [a0, a1] = &mut acc_v[..] else {
                    unreachable!()
                };
                avx2.add_values(&mut [&mut a0[..], &mut a1[..]], &w2, kk, n);
                let mut acc_1 = qs[1].clone();
                avx2.add_values(&mut [&mut acc_1[..]], &[w2[1]], kk, n);
                for r in 0..2 {
                    for i in 0..n {
                        let mut want = qs[r][i];
                        for j in 0..m {
                            want += w[r][j] * kk[j * n + i];
                        }
                        assert_eq!(acc_p[r][i].to_bits(), want.to_bits(), "n = {n}");
                        assert_eq!(acc_v[r][i].to_bits(), want.to_bits(), "n = {n}");
                    }
                }
                for i in 0..n {
                    assert_eq!(acc_1[i].to_bits(), acc_v[1][i].to_bits(), "n = {n}");
                }
            }
        }
    }

    /// The q.k of four keys as it was computed before rows were paired (four accumulators,
    /// lanes stored and summed one by one): [`reference_run_avx2`]'s.
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

    /// The task body as it was before rows were paired (one query row at a time, four keys
    /// per dot, the value sums four keys per pass): the bit-for-bit reference of
    /// [`Task::run_portable`].
    #[inline(always)]
    fn reference_run(
        task: &Task,
        bufs: &mut TaskBufs,
        out: &mut [f32],
        dot4: impl Fn(&[f32], [&[f32]; 4]) -> [f32; 4],
    ) {
        let dot = PortableDot;
        let t = task;
        let (dk, dv) = (t.p.head_dim_k, t.p.head_dim_v);
        let rows = Q_BLOCK * t.group;
        let n_rows = t.n_q_tokens * t.group;
        let (acc_all, stats) = out.split_at_mut(rows * dv);
        let (max, sum) = stats.split_at_mut(rows);
        acc_all.fill(0.0);
        max.fill(f32::NEG_INFINITY);
        sum.fill(0.0);
        let k_buf = grown(&mut bufs.k, KEY_CHUNK * dk);
        let v_buf = grown(&mut bufs.v, KEY_CHUNK * dv);
        let scores = grown(&mut bufs.scores, KEY_CHUNK);
        let q = &bufs.q[..n_rows * dk];
        let last_pos = t.pos0 + t.n_q_tokens - 1;
        let end = (last_pos + 1).min(t.key_range.end);
        let mut j0 = t.first_key(t.pos0).max(t.key_range.start);
        while j0 < end {
            let j1 = (j0 + KEY_CHUNK).min(end).min(t.kv.run_end(j0));
            let s0 = t.kv.slot(j0);
            let s1 = s0 + (j1 - j0);
            let k = rows_f32(t.kv.keys, s0 * dk..s1 * dk, k_buf);
            let (v, v_stride) = if t.p.values_in_keys {
                (k, dk)
            } else {
                (rows_f32(t.kv.values, s0 * dv..s1 * dv, v_buf), dv)
            };
            for r in 0..n_rows {
                let pos = t.pos0 + r / t.group;
                let lo = t.first_key(pos).max(j0);
                let hi = (pos + 1).min(j1);
                if lo >= hi {
                    continue;
                }
                let q_row = &q[r * dk..(r + 1) * dk];
                let acc = &mut acc_all[r * dv..(r + 1) * dv];
                let s = &mut scores[..hi - lo];
                let mut chunk_max = f32::NEG_INFINITY;
                let ks = &k[(lo - j0) * dk..(hi - j0) * dk];
                let mut quads = s.chunks_exact_mut(4).zip(ks.chunks_exact(4 * dk));
                for (s4, k4) in quads.by_ref() {
                    let (k01, k23) = k4.split_at(2 * dk);
                    let rows = [&k01[..dk], &k01[dk..], &k23[..dk], &k23[dk..]];
                    for (sj, d) in s4.iter_mut().zip(dot4(q_row, rows)) {
                        *sj = d * t.p.scale;
                        chunk_max = chunk_max.max(*sj);
                    }
                }
                let done = s.len() / 4 * 4;
                for (sj, k_row) in s[done..].iter_mut().zip(ks[done * dk..].chunks_exact(dk)) {
                    *sj = dot.dot(q_row, k_row) * t.p.scale;
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

    /// [`reference_run`] compiled for AVX2, as [`Task::run_avx2`] is.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn reference_run_avx2(task: &Task, bufs: &mut TaskBufs, out: &mut [f32]) {
        // SAFETY: this function's contract is that the CPU has AVX2.
        reference_run(task, bufs, out, |a, b| unsafe { dot4_avx2(a, b) })
    }

    /// Deterministic pseudo-random values of mixed sign and magnitude.
    fn noise(seed: u64, n: usize) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let u = (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                u * 4.0 * if x & 0x300 == 0 { 8.0 } else { 1.0 }
            })
            .collect()
    }

    /// A cache of `n_ctx` positions of noise for one KV head, and queries for `rows` rows.
    fn task_setup(kv_type: KvType, n_ctx: usize, dk: usize, dv: usize, seed: u64) -> KvCache {
        let values_in_keys = dv == 0;
        let mut cache = KvCache::new(kv_type, n_ctx, 1, 2, dk, dv);
        for pos in 0..n_ctx {
            let k = noise(seed * 7919 + pos as u64, 2 * dk);
            let v = noise(seed * 7907 + pos as u64 + 1_000_000, 2 * dv);
            cache.write(0, pos, &k, if values_in_keys { &[] } else { &v });
        }
        cache
    }

    #[test]
    fn paired_rows_give_the_bits_of_one_row_at_a_time() {
        let mut cases = 0;
        for (dk, dv, values_in_keys) in [
            (64, 64, false),
            (128, 128, false),
            (256, 256, false),
            (80, 80, false),
            (20, 12, false),
            (36, 32, true),
        ] {
            for kv_type in [KvType::F16, KvType::F32] {
                let n_ctx = 200;
                let cache = task_setup(
                    kv_type,
                    n_ctx,
                    dk,
                    if values_in_keys { 0 } else { dv },
                    dk as u64,
                );
                for group in [1usize, 2, 7] {
                    for n_q_tokens in [1usize, 3, 8] {
                        for window in [None, Some(5), Some(70)] {
                            for (pos0, key_range) in [
                                (0, 0..n_ctx),
                                (37, 0..n_ctx),
                                (150, 0..n_ctx),
                                (150, 40..130),
                            ] {
                                let p = AttnParams {
                                    n_head: 2 * group,
                                    n_head_kv: 2,
                                    head_dim_k: dk,
                                    head_dim_v: dv,
                                    scale: 1.0 / (dk as f32).sqrt(),
                                    window,
                                    values_in_keys,
                                };
                                let task = Task {
                                    p: &p,
                                    group,
                                    kv: cache.head(0, 1),
                                    pos0,
                                    n_q_tokens,
                                    key_range,
                                    tiled: true,
                                };
                                let n_rows = n_q_tokens * group;
                                let len = Q_BLOCK * group * (dv + 2);
                                let mut bufs = TaskBufs {
                                    q: noise(cases + 5, n_rows * dk),
                                    ..TaskBufs::default()
                                };
                                let mut want = vec![0f32; len];
                                let dot4 = |a: &[f32], b: [&[f32]; 4]| {
                                    b.map(|row| PortableDot.dot(a, row))
                                };
                                reference_run(&task, &mut bufs, &mut want, dot4);
                                let mut outs = Vec::new();
                                let mut got = vec![f32::NAN; len];
                                task.run_portable(&mut bufs, &mut got, PortableDot);
                                outs.push(("portable", got));
                                #[cfg(target_arch = "x86_64")]
                                if std::arch::is_x86_feature_detected!("avx2")
                                    && std::arch::is_x86_feature_detected!("fma")
                                {
                                    let mut got = vec![f32::NAN; len];
                                    task.run(&mut bufs, &mut got);
                                    outs.push(("avx2", got));
                                    let mut got = vec![f32::NAN; len];
                                    // SAFETY: both features were just detected.
                                    unsafe { reference_run_avx2(&task, &mut bufs, &mut got) };
                                    outs.push(("reference avx2", got));
                                }
                                for (name, got) in outs {
                                    let same = want
                                        .iter()
                                        .zip(&got)
                                        .all(|(a, b)| a.to_bits() == b.to_bits());
                                    assert!(
                                        same,
                                        "{name}: dk {dk} dv {dv} {kv_type:?} group {group} \
                                         tokens {n_q_tokens} window {window:?} pos0 {pos0}"
                                    );
                                }
                                cases += 1;
                            }
                        }
                    }
                }
            }
        }
        eprintln!("{cases} tasks bit for bit");
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
