//! AVX-512 VNNI one-row dot kernels ([`crate::dispatch::DotFn`] and
//! [`crate::dispatch::ScaledDotFn`]) for the 32-element formats Q4_0, Q5_0, Q8_0 (against
//! Q8_0 activations) and Q4_1, Q5_1 (against Q8_1 activations); the K-quants are in
//! [`super::dot_kquants`].
//!
//! The shape is the AVX2 kernel's (`avx2/legacy.rs`): a step takes `R` weight rows and `N`
//! activation rows (`R · N ≤ 8`; decode takes 8 weight rows), lane `m * N + t` of one f32
//! vector accumulates dot(weight row `m`, activation row `t`), and every lane does the same
//! f32 steps as the AVX2 kernels and GEMM tiles: per block, in order, the exact integer
//! block sum `isum`, then `acc = fma(isum, d_w · d_a, acc)` (Q4_1/Q5_1 also
//! `acc_min = fma(m_w, s_a, acc_min)`, added at the end). So decode, batch remainders and
//! GEMM tiles give a row the same bits.
//!
//! What VNNI changes is the integer part. Every weight block is unpacked to 32 unsigned
//! bytes and multiplied with `vpdpbusd` (u8 x i8, four products per i32 lane, no
//! saturation), whose accumulator starts at `-2^k · Σ a` (per lane, computed once per
//! activation block and shared by all weight rows) so the offsets come out of the same
//! instruction: Q4_0 quants are `q - 8`, Q5_0 `q - 16`, and Q8_0's signed quants are
//! made unsigned by flipping the sign bit (`w + 128`, offset 128). Q5_0/Q5_1's fifth bits go
//! straight from the block's 32-bit `qh` into a mask register (one masked add instead of
//! the AVX2 bit spreading), Q4 nibbles come from one broadcast load and one per-half shift.
//! The 8 per-row vectors are folded by an unpack tree (no `hadd`), and decode of Q4_0/Q4_1
//! takes two blocks per step ([`pair_step`]), so the tree ends with one block per half.
//!
//! Measured (one thread, weights in L2, 160x4096, CPU time; Zen 4): Q4_0 1.10x, Q4_1 1.07x,
//! Q5_0 1.32x, Q5_1 1.29x, Q8_0 1.15x the AVX2 kernels; 1536x576 Q4_1 1.07x, 1024x640 Q8_0
//! 1.13x, Q5_0 1.35x; 3 and 7 activation rows 1.1-1.6x. Tried and dropped: the 8 rows' f16
//! scales by `vpgatherdd` (0.75-0.88x of plain loads), a per-32-block scale table filled
//! first (0.87x), the `hadd` tree (0.87x of the unpack tree), 16-bit scale loads with
//! inserts (0.9x), two-block steps for Q5_0/Q5_1 (within 3% of one-block steps).
//!
//! Overflow bounds (exact): weights as u8 are at most 255 and activations in -128..=127, so
//! a block total is below 32·255·128 < 2^20, and the offset terms are as small.

use std::arch::x86_64::*;

use super::dot_kquants;
use crate::avx2::legacy_layout::{
    act_block_bytes, act_quants_offset, has_min, scaled_dot_args, weight_block_bytes, Scales, Q4_0,
    Q4_1, Q5_0, Q5_1, Q8_0,
};
use crate::avx2::util::{check_dot_args, dispatch_rows, f16_at, StepPrefetch};
use crate::dispatch::KernelSet;
use crate::types::GgmlType;

/// Installs this file's kernels and those of [`dot_kquants`].
pub(super) fn install(set: &mut KernelSet) {
    set.set_dot(GgmlType::Q4_0, dot_q4_0);
    set.set_dot(GgmlType::Q4_1, dot_q4_1);
    set.set_dot(GgmlType::Q5_0, dot_q5_0);
    set.set_dot(GgmlType::Q5_1, dot_q5_1);
    set.set_dot(GgmlType::Q8_0, dot_q8_0);
    set.set_scaled_dot(GgmlType::Q4_0, dot_q4_0_scaled);
    set.set_scaled_dot(GgmlType::Q4_1, dot_q4_1_scaled);
    set.set_scaled_dot(GgmlType::Q5_0, dot_q5_0_scaled);
    set.set_scaled_dot(GgmlType::Q5_1, dot_q5_1_scaled);
    set.set_scaled_dot(GgmlType::Q8_0, dot_q8_0_scaled);
    set.set_dot(GgmlType::Q4_K, dot_kquants::dot_q4_k);
    set.set_dot(GgmlType::Q5_K, dot_kquants::dot_q5_k);
    set.set_dot(GgmlType::Q6_K, dot_kquants::dot_q6_k);
}

/// Lanes of one kernel step: `R` weight rows times `N` activation rows, lane `m * N + t`.
const LANES: usize = 8;

/// Log2 of the offset taken out of the unsigned quants in integers: Q4_0 `q - 8`, Q5_0
/// `q - 16`, Q8_0 `(w + 128) - 128`; 0 for Q4_1/Q5_1 (they have a minimum instead).
const fn offset_shift(kind: u8) -> u32 {
    match kind {
        Q4_0 => 3,
        Q5_0 => 4,
        Q8_0 => 7,
        _ => 0,
    }
}

/// Weight rows a step takes for `n` activation rows (as many as fill the lanes).
const fn rows_per_step(n: usize) -> usize {
    if n >= LANES {
        1
    } else {
        LANES / n
    }
}

/// The 32 packed nibbles at `p` as bytes in element order (low nibbles first): one
/// 16-byte load broadcast to both halves, the high half shifted right by 4.
///
/// # Safety
/// `p..p + 16` must be readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn nibbles(p: *const u8) -> __m256i {
    // SAFETY: the caller guarantees 16 readable bytes; unaligned load.
    let x = _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(p.cast()) });
    let shifted = _mm256_srlv_epi64(x, _mm256_setr_epi64x(0, 0, 4, 4));
    _mm256_and_si256(shifted, _mm256_set1_epi8(0x0F))
}

/// Unpacks the weight block at `p` into its 32 quants as unsigned bytes in element order:
/// `q` (0..=15 or 0..=31) for Q4_0, Q4_1, Q5_0, Q5_1, `w + 128` for Q8_0.
///
/// # Safety
/// `p` must point at a whole weight block of `KIND`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn unpack<const KIND: u8>(p: *const u8) -> __m256i {
    // SAFETY (all reads below): the caller guarantees a whole block of `KIND` at `p`, and
    // every offset is inside that block's layout (see `crate::blocks`).
    unsafe {
        match KIND {
            Q4_0 => nibbles(p.add(2)),
            Q4_1 => nibbles(p.add(4)),
            Q5_0 | Q5_1 => {
                let (qh, qs) = if KIND == Q5_0 { (2, 6) } else { (4, 8) };
                let fifth = _cvtu32_mask32(p.add(qh).cast::<u32>().read_unaligned());
                let low = nibbles(p.add(qs));
                _mm256_mask_add_epi8(low, fifth, low, _mm256_set1_epi8(16))
            }
            _ => _mm256_xor_si256(_mm256_loadu_si256(p.add(2).cast()), _mm256_set1_epi8(-128)),
        }
    }
}

/// The vector whose lane `m * N + t` is `x[t]` (for `m < R`; the other lanes are zero).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn per_act_row<const R: usize, const N: usize>(x: &[f32; N]) -> __m256 {
    if N == 1 {
        _mm256_set1_ps(x[0])
    } else {
        let mut l = [0f32; LANES];
        for (p, l) in l.iter_mut().enumerate().take(R * N) {
            *l = x[p % N];
        }
        // SAFETY: `l` holds 8 f32.
        unsafe { _mm256_loadu_ps(l.as_ptr()) }
    }
}

/// The first levels of the reduction of 8 vectors of i32 partial sums: per 128-bit half,
/// `.0` holds the half-sums of `v[0..4]` and `.1` those of `v[4..8]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn half_totals(v: &[__m256i; LANES]) -> (__m256i, __m256i) {
    // Per 128-bit half: [x0 + x2, y0 + y2, x1 + x3, y1 + y3].
    let pair = |x: __m256i, y: __m256i| {
        _mm256_add_epi32(_mm256_unpacklo_epi32(x, y), _mm256_unpackhi_epi32(x, y))
    };
    // Per 128-bit half: the half-sums of four vectors.
    let quad = |x: __m256i, y: __m256i| {
        _mm256_add_epi32(_mm256_unpacklo_epi64(x, y), _mm256_unpackhi_epi64(x, y))
    };
    (
        quad(pair(v[0], v[1]), pair(v[2], v[3])),
        quad(pair(v[4], v[5]), pair(v[6], v[7])),
    )
}

/// Folds 8 vectors of i32 partial sums into one vector whose lane `p` is the total of
/// `v[p]` (an unpack tree: measured ~15% faster than `hadd` on Zen 4).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn totals(v: &[__m256i; LANES]) -> __m256i {
    let (l0, l1) = half_totals(v);
    _mm256_add_epi32(
        _mm256_permute2x128_si256(l0, l1, 0x20),
        _mm256_permute2x128_si256(l0, l1, 0x31),
    )
}

/// One kernel step: the dot products of `R` weight rows with `N` activation rows
/// (`R · N ≤ 8`), lane `m * N + t` = dot(weight row `m`, activation row `t`); lanes past
/// `R · N` are not meaningful.
///
/// Weight row `m` is at `w + w_offsets[m]` (rows may repeat). Before each block the step
/// issues that block's share of `prefetch`.
///
/// # Safety
/// Every weight row must hold `n_blocks` blocks of `KIND` and every activation row
/// `t < N` (at `ap + t * act_row_bytes`) `n_blocks` activation blocks; with `PRE`, `sc`
/// must hold their scales (`scaled_dot_args`).
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn lanes<const KIND: u8, const R: usize, const N: usize, const PRE: bool>(
    w: *const u8,
    w_offsets: [usize; R],
    n_blocks: usize,
    ap: *const u8,
    act_row_bytes: usize,
    sc: Scales,
    prefetch: StepPrefetch,
) -> __m256 {
    const { assert!(R * N <= LANES && R > 0 && N > 0) };
    let mut acc = _mm256_setzero_ps();
    let mut acc_min = _mm256_setzero_ps();
    let mut b = 0;
    if R == LANES && N == 1 && matches!(KIND, Q4_0 | Q4_1) {
        let w_offsets: [usize; LANES] = std::array::from_fn(|m| w_offsets[m % R]);
        while b + 2 <= n_blocks {
            // SAFETY: blocks b and b + 1 exist in every weight row and in the activation
            // row (caller); the prefetch is only a hint.
            unsafe {
                prefetch.blocks(b, 2);
                pair_step::<KIND, PRE>(w, w_offsets, ap, sc, b, &mut acc, &mut acc_min);
            }
            b += 2;
        }
    }
    while b < n_blocks {
        // SAFETY: block b exists in every weight row and activation row (caller); the
        // prefetch is only a hint.
        unsafe {
            prefetch.blocks(b, 1);
            block_step::<KIND, R, N, PRE>(
                w,
                w_offsets,
                ap,
                act_row_bytes,
                sc,
                b,
                &mut acc,
                &mut acc_min,
            );
        }
        b += 1;
    }
    if has_min(KIND) {
        _mm256_add_ps(acc, acc_min)
    } else {
        acc
    }
}

/// Adds block `b` to the [`lanes`] accumulators (see there and the module docs for the
/// arithmetic).
///
/// # Safety
/// As for [`lanes`], and block `b` must exist.
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn block_step<const KIND: u8, const R: usize, const N: usize, const PRE: bool>(
    w: *const u8,
    w_offsets: [usize; R],
    ap: *const u8,
    act_row_bytes: usize,
    sc: Scales,
    b: usize,
    acc: &mut __m256,
    acc_min: &mut __m256,
) {
    let wbb = weight_block_bytes(KIND);
    let abb = act_block_bytes(KIND);
    let a_quants = act_quants_offset(KIND);
    // SAFETY (all reads below): block b exists in every weight row and in every activation
    // row t < N, and with `PRE` its scales in `sc` (caller).
    unsafe {
        let mut a = [_mm256_setzero_si256(); N];
        let mut init = [_mm256_setzero_si256(); N];
        let mut d_a = [0f32; N];
        let mut s_a = [0f32; N];
        for t in 0..N {
            let ab = ap.add(t * act_row_bytes + b * abb);
            a[t] = _mm256_loadu_si256(ab.add(a_quants).cast());
            if offset_shift(KIND) > 0 {
                // Per lane: -2^k · (sum of its 4 activations), so the block total comes
                // out as Σ (q - 2^k) · a.
                let scaled = _mm256_dpbusd_epi32(
                    _mm256_setzero_si256(),
                    _mm256_set1_epi8((1u32 << offset_shift(KIND)) as u8 as i8),
                    a[t],
                );
                init[t] = _mm256_sub_epi32(_mm256_setzero_si256(), scaled);
            }
            let sr = sc.p.wrapping_add(t * sc.stride + b);
            d_a[t] = if PRE { *sr } else { f16_at(ab) };
            if has_min(KIND) {
                s_a[t] = if PRE {
                    *sr.wrapping_add(sc.s_offset)
                } else {
                    f16_at(ab.add(2))
                };
            }
        }
        let mut v = [_mm256_setzero_si256(); LANES];
        for m in 0..R {
            let q = unpack::<KIND>(w.add(w_offsets[m] + b * wbb));
            for t in 0..N {
                v[m * N + t] = _mm256_dpbusd_epi32(init[t], q, a[t]);
            }
        }
        let isum = totals(&v);
        // Per lane the first 4 bytes of its row's block: f16 d, then (Q4_1/Q5_1) f16 m.
        // Per lane the first 4 bytes of its row's block: f16 d, then (Q4_1/Q5_1) f16 m.
        let mut f = [0i32; LANES];
        for m in 0..R {
            let x = w.add(w_offsets[m] + b * wbb).cast::<i32>().read_unaligned();
            for t in 0..N {
                f[m * N + t] = x;
            }
        }
        let fields = _mm256_loadu_si256(f.as_ptr().cast());
        let d_w = _mm256_cvtph_ps(_mm256_cvtepi32_epi16(fields));
        let scale = _mm256_mul_ps(d_w, per_act_row::<R, N>(&d_a));
        *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, *acc);
        if has_min(KIND) {
            let m_w = _mm256_cvtph_ps(_mm256_cvtepi32_epi16(_mm256_srli_epi32(fields, 16)));
            *acc_min = _mm256_fmadd_ps(m_w, per_act_row::<R, N>(&s_a), *acc_min);
        }
    }
}

/// Blocks `b` and `b + 1` of 8 Q4_0 or Q4_1 weight rows against one activation row, with exactly the arithmetic of two [`block_step`]s (same exact block sums, same f32
/// operations in the same order) but half the reduction work: one register holds the
/// packed quants of both blocks (block `b` in the low 128-bit half), so one mask and one
/// shift give the low and high nibbles of both, multiplied against the activations
/// regrouped the same way; the reduction tree then ends with each half holding one block.
///
/// # Safety
/// As for [`block_step`], for both blocks.
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn pair_step<const KIND: u8, const PRE: bool>(
    w: *const u8,
    w_offsets: [usize; LANES],
    ap: *const u8,
    sc: Scales,
    b: usize,
    acc: &mut __m256,
    acc_min: &mut __m256,
) {
    let wbb = weight_block_bytes(KIND);
    let abb = act_block_bytes(KIND);
    let a_quants = act_quants_offset(KIND);
    // Q4_0's quants follow its f16 `d`, Q4_1's its `d` and `m`.
    let qs = if has_min(KIND) { 4 } else { 2 };
    let low4 = _mm256_set1_epi8(0x0F);
    // SAFETY (all reads below): blocks b and b + 1 exist in every weight row and in the
    // activation row, and with `PRE` their scales in `sc` (caller).
    unsafe {
        let ab = [ap.add(b * abb), ap.add((b + 1) * abb)];
        let a0 = _mm256_loadu_si256(ab[0].add(a_quants).cast());
        let a1 = _mm256_loadu_si256(ab[1].add(a_quants).cast());
        // Elements 0..16 of both blocks, then 16..32 of both.
        let a_lo = _mm256_permute2x128_si256(a0, a1, 0x20);
        let a_hi = _mm256_permute2x128_si256(a0, a1, 0x31);
        let mut init = _mm256_setzero_si256();
        if offset_shift(KIND) > 0 {
            let c = _mm256_set1_epi8((1u32 << offset_shift(KIND)) as u8 as i8);
            let scaled = _mm256_dpbusd_epi32(_mm256_setzero_si256(), c, a_lo);
            init = _mm256_sub_epi32(init, _mm256_dpbusd_epi32(scaled, c, a_hi));
        }
        let mut v = [_mm256_setzero_si256(); LANES];
        let mut f = [[0i32; LANES]; 2];
        for m in 0..LANES {
            let wb0 = w.add(w_offsets[m] + b * wbb);
            let wb1 = wb0.add(wbb);
            f[0][m] = wb0.cast::<i32>().read_unaligned();
            f[1][m] = wb1.cast::<i32>().read_unaligned();
            let packed = _mm256_loadu2_m128i(wb1.add(qs).cast(), wb0.add(qs).cast());
            let lo = _mm256_and_si256(packed, low4);
            let hi = _mm256_and_si256(_mm256_srli_epi16(packed, 4), low4);
            v[m] = _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(init, lo, a_lo), hi, a_hi);
        }
        let (l0, l1) = half_totals(&v);
        let isum = [
            _mm256_permute2x128_si256(l0, l1, 0x20),
            _mm256_permute2x128_si256(l0, l1, 0x31),
        ];
        for k in 0..2 {
            let fields = _mm256_loadu_si256(f[k].as_ptr().cast());
            let d_w = _mm256_cvtph_ps(_mm256_cvtepi32_epi16(fields));
            let sr = sc.p.wrapping_add(b + k);
            let d_a = if PRE { *sr } else { f16_at(ab[k]) };
            let scale = _mm256_mul_ps(d_w, _mm256_set1_ps(d_a));
            *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[k]), scale, *acc);
            if has_min(KIND) {
                let s_a = if PRE {
                    *sr.wrapping_add(sc.s_offset)
                } else {
                    f16_at(ab[k].add(2))
                };
                let m_w = _mm256_cvtph_ps(_mm256_cvtepi32_epi16(_mm256_srli_epi32(fields, 16)));
                *acc_min = _mm256_fmadd_ps(m_w, _mm256_set1_ps(s_a), *acc_min);
            }
        }
    }
}

/// `out[m * N + t]` = dot(weight row `m`, activation row `t`) for the `w_rows` weight rows
/// of `n_blocks` blocks at `w`, in steps of `R` rows (the last step repeats the last row to
/// fill up).
///
/// # Safety
/// `w` must hold `w_rows` rows of `n_blocks` blocks of `KIND`, `out.len() == w_rows * N`,
/// and the activation rows (and with `PRE` their scales) as for [`lanes`].
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn dot_rows<const KIND: u8, const R: usize, const N: usize, const PRE: bool>(
    w: &[u8],
    w_rows: usize,
    n_blocks: usize,
    acts: &[u8],
    act_row_bytes: usize,
    sc: Scales,
    out: &mut [f32],
) {
    let row_bytes = n_blocks * weight_block_bytes(KIND);
    // Decode (one activation row) streams the weights from memory: while a step walks its
    // blocks, it prefetches a later step's bytes (`StepPrefetch`).
    let mut m0 = 0;
    while m0 < w_rows {
        let offsets: [usize; R] =
            std::array::from_fn(|m| ((m0 + m).min(w_rows - 1) - m0) * row_bytes);
        let base = w.as_ptr().wrapping_add(m0 * row_bytes);
        let prefetch = StepPrefetch::new(base, R * row_bytes, n_blocks, N == 1);
        // SAFETY: `base + offsets[m]` is row min(m0 + m, w_rows - 1) < w_rows; the caller
        // guarantees the rest.
        let total = unsafe {
            lanes::<KIND, R, N, PRE>(
                base,
                offsets,
                n_blocks,
                acts.as_ptr(),
                act_row_bytes,
                sc,
                prefetch,
            )
        };
        let mut l = [0f32; LANES];
        // SAFETY: `l` holds 8 f32.
        unsafe { _mm256_storeu_ps(l.as_mut_ptr(), total) };
        let n_out = (w_rows - m0).min(R) * N;
        out[m0 * N..m0 * N + n_out].copy_from_slice(&l[..n_out]);
        m0 += R;
    }
}

/// Defines the safe [`crate::dispatch::DotFn`] and [`crate::dispatch::ScaledDotFn`]
/// wrappers for one weight kind.
macro_rules! legacy_dot_fn {
    ($name:ident, $scaled:ident, $kind:expr) => {
        /// The [`crate::dispatch::DotFn`] for this weight kind (see the module docs).
        fn $name(w: &[u8], acts: &[u8], act_row_bytes: usize, out: &mut [f32]) {
            let n_blocks = check_dot_args(
                w,
                weight_block_bytes($kind),
                acts,
                act_row_bytes,
                act_block_bytes($kind),
                out,
            );
            dispatch_rows!(out.len(), N => {
                // SAFETY: avx2, fma, f16c and avx512f/bw/vl/vnni were detected before
                // `install` made this function reachable; `check_dot_args` validated the
                // slice lengths for this one weight row and `out.len() == N` activation
                // rows.
                unsafe {
                    dot_rows::<{ $kind }, 1, N, false>(
                        w, 1, n_blocks, acts, act_row_bytes, Scales::NONE, out,
                    )
                }
            })
        }

        /// The [`crate::dispatch::ScaledDotFn`] for this weight kind (see the module docs).
        fn $scaled(
            w: &[u8],
            w_rows: usize,
            acts: &[u8],
            act_row_bytes: usize,
            act_scales: &[f32],
            scale_stride: usize,
            out: &mut [f32],
        ) {
            let (n_blocks, n_acts, sc) = scaled_dot_args(
                $kind,
                w,
                w_rows,
                acts,
                act_row_bytes,
                act_scales,
                scale_stride,
                out,
            );
            dispatch_rows!(n_acts, N => {
                // SAFETY: avx2, fma, f16c and avx512f/bw/vl/vnni were detected before
                // `install` made this function reachable; `w` holds `w_rows` rows of the
                // length `check_dot_args` validated, `out.len() == w_rows * N`, and
                // `scaled_dot_args` validated the scale table.
                unsafe {
                    dot_rows::<{ $kind }, { rows_per_step(N) }, N, true>(
                        w, w_rows, n_blocks, acts, act_row_bytes, sc, out,
                    )
                }
            })
        }
    };
}

legacy_dot_fn!(dot_q4_0, dot_q4_0_scaled, Q4_0);
legacy_dot_fn!(dot_q4_1, dot_q4_1_scaled, Q4_1);
legacy_dot_fn!(dot_q5_0, dot_q5_0_scaled, Q5_0);
legacy_dot_fn!(dot_q5_1, dot_q5_1_scaled, Q5_1);
legacy_dot_fn!(dot_q8_0, dot_q8_0_scaled, Q8_0);
