//! AVX-512 VNNI one-row dot kernels ([`crate::dispatch::DotFn`]) for Q4_K, Q5_K and Q6_K
//! against Q8_K activations.
//!
//! A 512-bit register holds 64 quants: for Q4_K/Q5_K one 64-element chunk (sub-blocks `2c`
//! and `2c + 1`, the low and high nibbles of the same 32 bytes, loaded once and broadcast to
//! both halves, then shifted by 0 or 4 bits per half), for Q6_K two 32-element groups (one
//! 64-byte load of the low bits, the two high bits rotated into place per half). Each such
//! register meets one 64-byte activation load: `maddubs` gives 32 i16 pair sums and
//! `vpdpwssd` multiplies them by the sub-block scales (one i16 per pair, permuted from the
//! super-block's scales once) and adds them to an i32 accumulator. One horizontal sum per
//! row and super-block gives the exact integer total.
//!
//! Q4_K/Q5_K then do exactly the f32 steps of the AVX2 kernel and GEMM tile
//! (`acc = fma(total, d · d_a, acc)`, `acc_min = fma(Σ min·bsum, dmin · d_a, acc_min)`,
//! result `acc - acc_min`), so decode equals the GEMM tile bit for bit. Q6_K (no tile) does
//! the same single fma per super-block; its `- 32` is applied in integers through the
//! activation block sums, as in AVX2.
//!
//! Measured (one thread, weights in L2, 160x4096, CPU time; Zen 4), against the AVX2
//! kernels: decode Q4_K 1.05x, Q6_K 1.12x (with two accumulators; 1.00x with one); 2 to 4
//! activation rows Q4_K/Q5_K 1.1-1.7x, Q6_K 0.95-1.17x; 7 rows Q4_K 0.95x and Q5_K 0.91x
//! (partial GEMM tiles only), Q6_K 1.0-1.07x; the Q6_K GEMM bench (512 rows through this
//! kernel) is unchanged.
//!
//! Overflow bounds (all exact): quants are unsigned, at most 31 (Q5_K) or 63 (Q6_K), and
//! activations in -128..=127, so a `maddubs` pair is at most 2·63·128 = 16128 < 2^15; a
//! `vpdpwssd` lane adds two such pairs times a scale (|s| ≤ 128) per chunk, at most 8 per
//! super-block: below 8·16128·128 < 2^24; a super-block total is below 2^31 (see
//! `avx2/kquants.rs`).

use std::arch::x86_64::*;

use crate::avx2::util::{
    check_dot_args, dispatch_rows, f16_at, f32_at, prefetch_kquant_block, q4k_scales_mins,
    q8k_block, Q8K_BSUMS, Q8K_BYTES, Q8K_QS,
};

/// The i16 vector whose pair lane `p` (0..32) holds scale `first + p / (32 / per)`, from
/// the scales in the low i16 lanes of `scales`: with `per = 2`, lanes 0..16 take scale
/// `first` and 16..32 `first + 1`; with `per = 4`, 8 lanes each of `first .. first + 4`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn spread_scales(scales: __m512i, first: i16, per: i16) -> __m512i {
    let lane: [i16; 32] = std::array::from_fn(|p| first + p as i16 / (32 / per));
    // SAFETY: `lane` holds 32 i16 (64 bytes); unaligned load.
    let idx = unsafe { _mm512_loadu_si512(lane.as_ptr().cast()) };
    _mm512_permutexvar_epi16(idx, scales)
}

// ---------------------------------------------------------------------------------------
// Q4_K and Q5_K

/// Q4_K (`FIVE = false`, 144-byte blocks) or Q5_K (`FIVE = true`, 176-byte blocks).
///
/// # Safety
/// `check_dot_args` accepted the slices for this format, `out.len() == N`; the CPU has the
/// enabled features.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q45k_rows<const FIVE: bool, const N: usize>(
    w: &[u8],
    n_blocks: usize,
    acts: &[u8],
    act_row_bytes: usize,
    out: &mut [f32],
) {
    let block_bytes = if FIVE { 176 } else { 144 };
    let qs_offset = if FIVE { 48 } else { 16 };
    let (wp, ap) = (w.as_ptr(), acts.as_ptr());
    let low4 = _mm512_set1_epi8(0x0F);
    let bit4 = _mm512_set1_epi8(0x10);
    // Low half: low nibbles (sub-block 2c), high half: high nibbles (2c + 1).
    let nibble_shift = _mm512_setr_epi64(0, 0, 0, 0, 4, 4, 4, 4);
    let mut acc = [0f32; N];
    let mut acc_min = [0f32; N];
    for b in 0..n_blocks {
        // SAFETY (all reads below): block b exists in the weight row and in every
        // activation row (`check_dot_args`); offsets follow the block layouts.
        unsafe {
            let wb = wp.add(b * block_bytes);
            prefetch_kquant_block::<N>(wb, block_bytes);
            let d = f16_at(wb);
            let dmin = f16_at(wb.add(2));
            let (sc, mn) = q4k_scales_mins(wb.add(4));
            // Min j weighs block sums 2j and 2j + 1: mins as i16, each twice.
            let mn = _mm_cvtsi64_si128(mn as i64);
            let mins_pairs = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(mn, mn));
            let scales = _mm512_cvtepu8_epi16(_mm256_zextsi128_si256(_mm_cvtsi64_si128(sc as i64)));
            let qh = if FIVE {
                _mm512_broadcast_i64x4(_mm256_loadu_si256(wb.add(16).cast()))
            } else {
                _mm512_setzero_si512()
            };
            let mut q = [_mm512_setzero_si512(); 4];
            let mut s = [_mm512_setzero_si512(); 4];
            for c in 0..4 {
                let packed =
                    _mm512_broadcast_i64x4(_mm256_loadu_si256(wb.add(qs_offset + 32 * c).cast()));
                q[c] = _mm512_and_si512(_mm512_srlv_epi64(packed, nibble_shift), low4);
                if FIVE {
                    // Bit 2c (low half) or 2c + 1 (high half) of each qh byte, rotated to
                    // bit 4 of the same byte.
                    let k = 2 * c as i64;
                    let rot = _mm512_setr_epi64(
                        (4 - k) & 63,
                        (4 - k) & 63,
                        (4 - k) & 63,
                        (4 - k) & 63,
                        (3 - k) & 63,
                        (3 - k) & 63,
                        (3 - k) & 63,
                        (3 - k) & 63,
                    );
                    // q | (fifth & 0x10).
                    q[c] =
                        _mm512_ternarylogic_epi64::<0xF8>(q[c], _mm512_rolv_epi64(qh, rot), bit4);
                }
                s[c] = spread_scales(scales, 2 * c as i16, 2);
            }
            for r in 0..N {
                let ab = q8k_block(ap, act_row_bytes, r, b);
                let d_a = f32_at(ab);
                let bsums = _mm256_loadu_si256(ab.add(Q8K_BSUMS).cast());
                let m = hsum_epi32_256(_mm256_madd_epi16(mins_pairs, bsums));
                acc_min[r] = (m as f32).mul_add(dmin * d_a, acc_min[r]);
                let mut sumi = _mm512_setzero_si512();
                for c in 0..4 {
                    let a = _mm512_loadu_si512(ab.add(Q8K_QS + 64 * c).cast());
                    sumi = _mm512_dpwssd_epi32(sumi, _mm512_maddubs_epi16(q[c], a), s[c]);
                }
                let total = _mm512_reduce_add_epi32(sumi);
                acc[r] = (total as f32).mul_add(d * d_a, acc[r]);
            }
        }
    }
    for r in 0..N {
        out[r] = acc[r] - acc_min[r];
    }
}

/// Sum of the 8 i32 lanes of `v` (exact: callers' sums are far below overflow).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn hsum_epi32_256(v: __m256i) -> i32 {
    _mm512_reduce_add_epi32(_mm512_zextsi256_si512(v))
}

// ---------------------------------------------------------------------------------------
// Q6_K

/// Q6_K (210-byte blocks: 128 bytes of low 4 bits, 64 of high 2 bits, 16 i8 scales, f16 d).
///
/// # Safety
/// `check_dot_args` accepted the slices for Q6_K, `out.len() == N`; the CPU has the enabled
/// features.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q6k_rows<const N: usize>(
    w: &[u8],
    n_blocks: usize,
    acts: &[u8],
    act_row_bytes: usize,
    out: &mut [f32],
) {
    const BLOCK: usize = 210;
    let low4 = _mm512_set1_epi8(0x0F);
    let bits45 = _mm512_set1_epi8(0x30);
    // High bits 2k, 2k + 1 of each qh byte rotated to bits 4, 5: groups 0 | 1 (k = 0, 1),
    // then groups 2 | 3 (k = 2, 3).
    let rot01 = _mm512_setr_epi64(4, 4, 4, 4, 2, 2, 2, 2);
    let rot23 = _mm512_setr_epi64(0, 0, 0, 0, 62, 62, 62, 62);
    let (wp, ap) = (w.as_ptr(), acts.as_ptr());
    let mut acc = [0f32; N];
    for b in 0..n_blocks {
        // SAFETY (all reads below): block b exists in the weight row and in every
        // activation row (`check_dot_args`); offsets follow the block layouts.
        unsafe {
            let wb = wp.add(b * BLOCK);
            prefetch_kquant_block::<N>(wb, BLOCK);
            let d = f16_at(wb.add(208));
            let scales16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(wb.add(192).cast()));
            let scales = _mm512_zextsi256_si512(scales16);
            // Quants 0..=63 in element order, 64 per register, and the scales of their
            // pairs (one scale per 16 elements).
            let mut q = [_mm512_setzero_si512(); 4];
            let mut s = [_mm512_setzero_si512(); 4];
            for h in 0..2 {
                let ql = _mm512_loadu_si512(wb.add(64 * h).cast());
                let qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(wb.add(128 + 32 * h).cast()));
                let hi01 = _mm512_and_si512(_mm512_rolv_epi64(qh, rot01), bits45);
                let hi23 = _mm512_and_si512(_mm512_rolv_epi64(qh, rot23), bits45);
                // (x & 0x0F) | hi.
                q[2 * h] = _mm512_ternarylogic_epi64::<0xEC>(ql, hi01, low4);
                q[2 * h + 1] =
                    _mm512_ternarylogic_epi64::<0xEC>(_mm512_srli_epi16(ql, 4), hi23, low4);
                s[2 * h] = spread_scales(scales, 8 * h as i16, 4);
                s[2 * h + 1] = spread_scales(scales, 8 * h as i16 + 4, 4);
            }
            for (r, acc) in acc.iter_mut().enumerate() {
                let ab = q8k_block(ap, act_row_bytes, r, b);
                let d_a = f32_at(ab);
                // The quants are kept in 0..=63: start from -32 · Σ scale_k · bsum_k.
                let bsums = _mm256_loadu_si256(ab.add(Q8K_BSUMS).cast());
                let offset = _mm256_slli_epi32(_mm256_madd_epi16(scales16, bsums), 5);
                // Two accumulators (even and odd registers) halve the dependency chain
                // (~3.5% faster here; for Q4_K it measured ~5% slower).
                let mut sumi = [
                    _mm512_zextsi256_si512(_mm256_sub_epi32(_mm256_setzero_si256(), offset)),
                    _mm512_setzero_si512(),
                ];
                for (g, (&qg, &sg)) in q.iter().zip(&s).enumerate() {
                    // Register g holds elements 64g .. 64g + 64 (h = g / 2 covers 128).
                    let a = _mm512_loadu_si512(ab.add(Q8K_QS + 64 * g).cast());
                    let p = _mm512_maddubs_epi16(qg, a);
                    sumi[g % 2] = _mm512_dpwssd_epi32(sumi[g % 2], p, sg);
                }
                let total = _mm512_reduce_add_epi32(_mm512_add_epi32(sumi[0], sumi[1]));
                *acc = (total as f32).mul_add(d * d_a, *acc);
            }
        }
    }
    out.copy_from_slice(&acc);
}

/// Defines the safe [`crate::dispatch::DotFn`] wrapper around a kernel `$kernel::<.., N>`.
macro_rules! kquant_dot_fn {
    ($name:ident, $block_bytes:expr, $kernel:ident $(, $param:expr)?) => {
        pub(super) fn $name(w: &[u8], acts: &[u8], act_row_bytes: usize, out: &mut [f32]) {
            let n_blocks = check_dot_args(w, $block_bytes, acts, act_row_bytes, Q8K_BYTES, out);
            dispatch_rows!(out.len(), N => {
                // SAFETY: avx2, fma, f16c, avx512f/bw/vl/vnni were detected before
                // `install` made this function reachable; `check_dot_args` validated the
                // slice lengths.
                unsafe { $kernel::<$($param,)? N>(w, n_blocks, acts, act_row_bytes, out) }
            })
        }
    };
}

kquant_dot_fn!(dot_q4_k, 144, q45k_rows, false);
kquant_dot_fn!(dot_q5_k, 176, q45k_rows, true);
kquant_dot_fn!(dot_q6_k, 210, q6k_rows);
