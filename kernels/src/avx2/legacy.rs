//! AVX2 dot kernels for the 32-element "legacy" formats: Q4_0, Q5_0, Q8_0 and IQ4_NL
//! against Q8_0 activations, Q4_1 and Q5_1 against Q8_1 activations.
//!
//! One kernel body ([`lanes`]) serves all six, specialised at compile time by the weight
//! kind, the number of weight rows `R` and of activation rows `N` it takes per step
//! (`R · N ≤ 8`: decode, one activation row, takes 8 weight rows). Per block it loads each
//! activation block once, unpacks each weight block once, and folds the `R · N` integer
//! block dot products into one vector of 8 exact i32 totals with a horizontal-add tree;
//! then one conversion, one multiply by the 8 scale products `d_w · d_a` and one FMA update
//! 8 f32 accumulators (lane = (weight row, activation row)). Short rows (decode of small
//! models: 576-896 columns) pay no per-row horizontal sum or call.
//!
//! Every lane is computed the same way whatever the step shape, and as the GEMM tiles
//! (`gemm.rs`) compute it: exact block sums, then `acc = fma(isum, d_w · d_a, acc)` block
//! after block (Q4_1/Q5_1: `m_w · s_a` in a second accumulator, added at the end). So
//! batch, batch remainders and decode give a row the same bits.
//!
//! Q4_0/Q5_0/Q4_1/Q5_1 quants go into `maddubs` unsigned; Q4_0's `- 8` and Q5_0's `- 16`
//! are subtracted in integers through the activation block sum. Q8_0 and IQ4_NL use the
//! sign trick (`maddubs(|w|, sign(a, w))`). Decode of Q4_0/Q4_1 handles two blocks per
//! step ([`pair_step`]) with the same arithmetic, and prefetches the weight rows of a later
//! step.

use std::arch::x86_64::*;

use super::legacy_layout::{
    act_block_bytes, act_quants_offset, has_min, offset_shift, scaled_dot_args, signed, unpack,
    weight_block_bytes, Scales, IQ4_NL, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
};
use super::util::{
    check_dot_args, dispatch_rows, dot_i8_signed, f16_at, hsum_epi32, totals_from_pairs,
    StepPrefetch,
};

/// Lanes of one kernel step: `R` weight rows times `N` activation rows, lane `m * N + t`.
const LANES: usize = 8;

/// Weight rows a [`lanes`] step takes for `n` activation rows (as many as fill the lanes).
const fn rows_per_step(n: usize) -> usize {
    if n >= LANES {
        1
    } else {
        LANES / n
    }
}

/// Folds 8 vectors of i32 partial sums into one vector whose lane `p` is the total of
/// `v[p]` (a horizontal-add tree: 6 `hadd`, 2 lane permutes and 1 add for 8 totals).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn totals_i32(v: &[__m256i; LANES]) -> __m256i {
    let h0 = _mm256_hadd_epi32(v[0], v[1]);
    let h1 = _mm256_hadd_epi32(v[2], v[3]);
    let h2 = _mm256_hadd_epi32(v[4], v[5]);
    let h3 = _mm256_hadd_epi32(v[6], v[7]);
    totals_from_pairs(h0, h1, h2, h3)
}

/// [`totals_i32`] for vectors of 16 i16 `maddubs` pair sums whose adjacent pairs still fit
/// in i16 (unsigned weights of at most 5 bits: `|pair| ≤ 2·31·128 = 7936`, two of them
/// 15872 < 2^15): the first level adds in i16 and one `madd` per two vectors widens.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn totals_i16(v: &[__m256i; LANES]) -> __m256i {
    let ones = _mm256_set1_epi16(1);
    let h0 = _mm256_madd_epi16(_mm256_hadd_epi16(v[0], v[1]), ones);
    let h1 = _mm256_madd_epi16(_mm256_hadd_epi16(v[2], v[3]), ones);
    let h2 = _mm256_madd_epi16(_mm256_hadd_epi16(v[4], v[5]), ones);
    let h3 = _mm256_madd_epi16(_mm256_hadd_epi16(v[6], v[7]), ones);
    totals_from_pairs(h0, h1, h2, h3)
}

/// Reads the f16 at `p` as raw bits.
///
/// # Safety
/// `p..p + 2` must be readable.
#[inline]
unsafe fn f16_bits(p: *const u8) -> i16 {
    // SAFETY: the caller guarantees two readable bytes; unaligned read.
    unsafe { p.cast::<i16>().read_unaligned() }
}

/// Converts 8 f16 bit patterns (lane order) to f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16x8(h: [i16; LANES]) -> __m256 {
    _mm256_cvtph_ps(_mm_setr_epi16(
        h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7],
    ))
}

/// The vector whose lane `m * N + t` is `x[t]` (for `m < R`; the other lanes are zero).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
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

/// One kernel step: the dot products of `R` weight rows with `N` activation rows
/// (`R · N ≤ 8`), lane `m * N + t` = dot(weight row `m`, activation row `t`); lanes past
/// `R · N` are zero.
///
/// Every lane is computed the same way, whatever `R` and `N` (and as the GEMM tiles in
/// `gemm.rs` compute it): per block `b` in order, the exact integer dot product `isum`
/// (offsets of unsigned quants applied in integers), then
/// `acc = fma(isum, d_w · d_a, acc)` in f32, and for Q4_1/Q5_1 separately
/// `acc_min = fma(m_w, s_a, acc_min)`; the result is `acc + acc_min`. So a row's result does
/// not depend on which rows share the step, the number of activation rows or the kernel
/// (decode, batch remainders and GEMM tiles agree bit for bit).
///
/// Weight row `m` is at `w + w_offsets[m]` (rows may repeat: a step over fewer distinct
/// rows just repeats one). Before each block the step issues that block's share of
/// `prefetch` (decode streams the matrix from memory).
///
/// # Safety
/// Every weight row must hold `n_blocks` blocks of `KIND` and every activation row
/// `t < N` (at `ap + t * act_row_bytes`) `n_blocks` activation blocks; with `PRE`, `sc`
/// must hold their scales (`scaled_dot_args`).
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn lanes<
    const KIND: u8,
    const R: usize,
    const N: usize,
    const PRE: bool,
    const PAIRS: bool,
>(
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
    // SAFETY (both loops): every block b < n_blocks exists in every weight row and in every
    // activation row t < N, and with `PRE` its scales in `sc` (caller).
    unsafe {
        if PAIRS && R == LANES && N == 1 && matches!(KIND, Q4_0 | Q4_1) {
            while b + 2 <= n_blocks {
                let w_offsets: [usize; LANES] = std::array::from_fn(|m| w_offsets[m % R]);
                prefetch.blocks(b, 2);
                pair_step::<KIND, PRE>(w, w_offsets, ap, sc, b, &mut acc, &mut acc_min);
                b += 2;
            }
        }
        while b < n_blocks {
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
            b += 1;
        }
    }
    if has_min(KIND) {
        _mm256_add_ps(acc, acc_min)
    } else {
        acc
    }
}

/// Adds block `b` to the [`lanes`] accumulators (see there for the arithmetic).
///
/// # Safety
/// As for [`lanes`], and block `b` must exist.
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
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
    let ones8 = _mm256_set1_epi8(1);
    let ones16 = _mm256_set1_epi16(1);
    {
        // SAFETY (all reads below): block b exists in every weight row and in every
        // activation row t < N, and with `PRE` its scales in `sc` (caller).
        unsafe {
            let mut a = [_mm256_setzero_si256(); N];
            let mut d_a = [0f32; N];
            let mut s_a = [0f32; N];
            for t in 0..N {
                let ab = ap.add(t * act_row_bytes + b * abb);
                a[t] = _mm256_loadu_si256(ab.add(a_quants).cast());
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
            let mut h_d = [0i16; LANES];
            let mut h_m = [0i16; LANES];
            for m in 0..R {
                let wb = w.add(w_offsets[m] + b * wbb);
                for t in 0..N {
                    h_d[m * N + t] = f16_bits(wb);
                    if has_min(KIND) {
                        h_m[m * N + t] = f16_bits(wb.add(2));
                    }
                }
                let q = unpack::<KIND>(wb);
                if signed(KIND) {
                    let q_abs = _mm256_sign_epi8(q, q);
                    for t in 0..N {
                        v[m * N + t] = dot_i8_signed(q_abs, q, a[t]);
                    }
                } else {
                    for t in 0..N {
                        v[m * N + t] = _mm256_maddubs_epi16(q, a[t]);
                    }
                }
            }
            let mut isum = if signed(KIND) {
                totals_i32(&v)
            } else {
                totals_i16(&v)
            };
            if offset_shift(KIND) > 0 {
                // Σ (q - 2^k)·a = Σ q·a - 2^k·Σ a, all exact in i32.
                let mut sums = [0i32; LANES];
                for t in 0..N {
                    let s =
                        hsum_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(ones8, a[t]), ones16));
                    for m in 0..R {
                        sums[m * N + t] = s << offset_shift(KIND);
                    }
                }
                let offsets = if N == 1 {
                    _mm256_set1_epi32(sums[0])
                } else {
                    _mm256_loadu_si256(sums.as_ptr().cast())
                };
                isum = _mm256_sub_epi32(isum, offsets);
            }
            let scale = _mm256_mul_ps(f16x8(h_d), per_act_row::<R, N>(&d_a));
            *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, *acc);
            if has_min(KIND) {
                *acc_min = _mm256_fmadd_ps(f16x8(h_m), per_act_row::<R, N>(&s_a), *acc_min);
            }
        }
    }
}

/// Blocks `b` and `b + 1` of 8 Q4_0 or Q4_1 weight rows against one activation row, with
/// exactly the arithmetic of two [`block_step`]s (same exact block sums, same f32
/// operations in the same order) but half the unpacking and reduction work: one 256-bit
/// register holds the packed quants of both blocks (block `b` in the low 128-bit lane), so
/// one shift and two masks give the low and high nibbles of both, multiplied against the
/// activations regrouped the same way; each row's products of the two blocks stay in
/// separate lanes down to the last level of the reduction tree.
///
/// # Safety
/// As for [`block_step`], for both blocks.
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
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
    let w_quants = if has_min(KIND) { 4 } else { 2 };
    let low4 = _mm256_set1_epi8(0x0F);
    let ones8 = _mm256_set1_epi8(1);
    let ones16 = _mm256_set1_epi16(1);
    // SAFETY (all reads below): blocks b and b + 1 exist in every weight row and in the
    // activation row, and with `PRE` their scales in `sc` (caller).
    unsafe {
        let ab0 = ap.add(b * abb);
        let ab1 = ab0.add(abb);
        let a0 = _mm256_loadu_si256(ab0.add(a_quants).cast());
        let a1 = _mm256_loadu_si256(ab1.add(a_quants).cast());
        // Elements 0..16 of both blocks, then 16..32 of both.
        let a_lo = _mm256_permute2x128_si256(a0, a1, 0x20);
        let a_hi = _mm256_permute2x128_si256(a0, a1, 0x31);
        let mut v = [_mm256_setzero_si256(); LANES];
        let mut h_d = [[0i16; LANES]; 2];
        let mut h_m = [[0i16; LANES]; 2];
        for m in 0..LANES {
            let wb0 = w.add(w_offsets[m] + b * wbb);
            let wb1 = wb0.add(wbb);
            h_d[0][m] = f16_bits(wb0);
            h_d[1][m] = f16_bits(wb1);
            if has_min(KIND) {
                h_m[0][m] = f16_bits(wb0.add(2));
                h_m[1][m] = f16_bits(wb1.add(2));
            }
            let packed = _mm256_loadu2_m128i(wb1.add(w_quants).cast(), wb0.add(w_quants).cast());
            let lo = _mm256_and_si256(packed, low4);
            let hi = _mm256_and_si256(_mm256_srli_epi16(packed, 4), low4);
            // |lane| ≤ 2·(2·15·128) = 7680: adding the two halves stays inside i16, and so
            // does the first `hadd` level of `totals_i16` (15360).
            v[m] = _mm256_add_epi16(
                _mm256_maddubs_epi16(lo, a_lo),
                _mm256_maddubs_epi16(hi, a_hi),
            );
        }
        // Per 128-bit lane (block b low, b + 1 high): the 4 totals of rows 0..4 (g0) and
        // rows 4..8 (g1).
        let h0 = _mm256_madd_epi16(_mm256_hadd_epi16(v[0], v[1]), ones16);
        let h1 = _mm256_madd_epi16(_mm256_hadd_epi16(v[2], v[3]), ones16);
        let h2 = _mm256_madd_epi16(_mm256_hadd_epi16(v[4], v[5]), ones16);
        let h3 = _mm256_madd_epi16(_mm256_hadd_epi16(v[6], v[7]), ones16);
        let g0 = _mm256_hadd_epi32(h0, h1);
        let g1 = _mm256_hadd_epi32(h2, h3);
        let mut isum = [
            _mm256_permute2x128_si256(g0, g1, 0x20),
            _mm256_permute2x128_si256(g0, g1, 0x31),
        ];
        let a = [a0, a1];
        let ab = [ab0, ab1];
        for k in 0..2 {
            if offset_shift(KIND) > 0 {
                let s = hsum_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(ones8, a[k]), ones16));
                isum[k] = _mm256_sub_epi32(isum[k], _mm256_set1_epi32(s << offset_shift(KIND)));
            }
            let sr = sc.p.wrapping_add(b + k);
            let d_a = if PRE { *sr } else { f16_at(ab[k]) };
            let scale = _mm256_mul_ps(f16x8(h_d[k]), _mm256_set1_ps(d_a));
            *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[k]), scale, *acc);
            if has_min(KIND) {
                let s_a = if PRE {
                    *sr.wrapping_add(sc.s_offset)
                } else {
                    f16_at(ab[k].add(2))
                };
                *acc_min = _mm256_fmadd_ps(f16x8(h_m[k]), _mm256_set1_ps(s_a), *acc_min);
            }
        }
    }
}

/// `out[m * N + t]` = dot(weight row `m`, activation row `t`) for the `w_rows` weight rows
/// of `row_bytes` bytes at `w`, in steps of [`rows_per_step`]`(N)` rows (the last step
/// repeats the last row to fill up).
///
/// # Safety
/// `w` must hold `w_rows` rows of `n_blocks` blocks of `KIND`, `out.len() == w_rows * N`,
/// and the activation rows (and with `PRE` their scales) as for [`lanes`].
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
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
        let offsets: [usize; R] = std::array::from_fn(|m| (m0 + m).min(w_rows - 1) * row_bytes);
        let prefetch = StepPrefetch::new(
            w.as_ptr().wrapping_add(m0 * row_bytes),
            R * row_bytes,
            n_blocks,
            N == 1,
        );
        // SAFETY: every offset is that of a row < w_rows; the caller guarantees the rest.
        let total = unsafe {
            lanes::<KIND, R, N, PRE, true>(
                w.as_ptr(),
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
        pub(super) fn $name(w: &[u8], acts: &[u8], act_row_bytes: usize, out: &mut [f32]) {
            let n_blocks = check_dot_args(
                w,
                weight_block_bytes($kind),
                acts,
                act_row_bytes,
                act_block_bytes($kind),
                out,
            );
            dispatch_rows!(out.len(), N => {
                // SAFETY: avx2, fma and f16c were detected before `install` made this
                // function reachable; `check_dot_args` validated the slice lengths for
                // this one weight row and `out.len() == N` activation rows.
                unsafe {
                    dot_rows::<{ $kind }, 1, N, false>(
                        w, 1, n_blocks, acts, act_row_bytes, Scales::NONE, out,
                    )
                }
            })
        }

        pub(super) fn $scaled(
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
                // SAFETY: avx2, fma and f16c were detected before `install` made this
                // function reachable; `w` holds `w_rows` rows of the length
                // `check_dot_args` validated, `out.len() == w_rows * N`, and
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
legacy_dot_fn!(dot_iq4_nl, dot_iq4_nl_scaled, IQ4_NL);
