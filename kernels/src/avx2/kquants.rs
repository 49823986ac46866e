//! AVX2 dot kernels for the 256-element super-block formats (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K,
//! IQ4_XS), all against Q8_K activations.
//!
//! Shape of every kernel: per super-block, decode the sub-block scales once, unpack each
//! 32-quant group once, and multiply it against the `N` activation rows, accumulating
//! `scale · Σ q·a` exactly in i32 (`maddubs` for the byte products, then `madd` with the
//! sub-block scale broadcast as i16, which also widens to i32). One conversion and FMA per
//! row and super-block turns the integer sum into f32.
//!
//! Offsets are folded in through the activation block sums (`bsums`) instead of touching
//! the quants: Q4_K/Q5_K/Q2_K mins (`dmin · Σ m·bsum`), Q6_K's `- 32` and Q3_K's `- 4`
//! (the quants are kept unsigned and `32·Σ scale·bsum` / `4·Σ scale·bsum` subtracted).
//!
//! Overflow bounds (all products exact): unsigned quants are at most 63 and activations in
//! -127..=127, so a `maddubs` pair is at most 2·63·127 = 16002 < 2^15; IQ4_XS uses the sign
//! trick with |w| ≤ 127 (pairs ≤ 32258). A super-block's i32 sum is below
//! 256·127·127·63 < 2^31.

use std::arch::x86_64::*;

use super::util::{
    check_dot_args, dispatch_rows, f16_at, f32_at, hsum_epi32, hsum_epi32_128, hsum_ps, nibbles_32,
    prefetch_kquant_block, q45k_chunk, q4k_scales_mins, q8k_block, Q8K_BSUMS, Q8K_BYTES, Q8K_QS,
};
use crate::blocks::IQ4NL_TABLE;

/// From 16 i8 scales (one per 16 elements), the i16 vector that scales the 16 `maddubs`
/// pairs of 32-element group `m`: scale `2m` in the low 8 lanes, `2m + 1` in the high 8.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pair_scales(scales: __m128i, m: usize) -> __m256i {
    let lo = (2 * m as i64) * 0x0101_0101_0101_0101;
    let hi = (2 * m as i64 + 1) * 0x0101_0101_0101_0101;
    _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales, _mm_set_epi64x(hi, lo)))
}

/// `Σ_k scales[k] · bsums[k]` over the 16 groups of 16, as 8 i32 lanes.
///
/// # Safety
/// `a_block` must point at a whole Q8_K block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scaled_bsums(scales16: __m256i, a_block: *const u8) -> __m256i {
    // SAFETY: the 32 bytes of block sums lie inside the Q8_K block.
    let bsums = unsafe { _mm256_loadu_si256(a_block.add(Q8K_BSUMS).cast()) };
    _mm256_madd_epi16(scales16, bsums)
}

/// Final reduction shared by all kernels.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn finish<const N: usize>(acc: &[__m256; N], acc_min: &[f32; N], out: &mut [f32]) {
    for r in 0..N {
        out[r] = hsum_ps(acc[r]) - acc_min[r];
    }
}

// ---------------------------------------------------------------------------------------
// Q4_K and Q5_K

/// Q4_K (`FIVE = false`, 144-byte blocks) or Q5_K (`FIVE = true`, 176-byte blocks).
///
/// # Safety
/// `check_dot_args` accepted the slices for this format, `out.len() == N`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q45k_rows<const FIVE: bool, const N: usize>(
    w: &[u8],
    n_blocks: usize,
    acts: &[u8],
    act_row_bytes: usize,
    out: &mut [f32],
) {
    let block_bytes = if FIVE { 176 } else { 144 };
    let (wp, ap) = (w.as_ptr(), acts.as_ptr());
    // Per row and super-block: the exact integer totals (`Σ scale_j Σ w·a` and
    // `Σ min_j · bsum_j`), then one fused multiply-add each into scalar accumulators. This is
    // the GEMM tile's arithmetic (`gemm.rs`), so batch and decode give a row the same bits.
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
            let mins16 = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(mn as i64));
            let mut d_a = [0f32; N];
            for r in 0..N {
                let ab = q8k_block(ap, act_row_bytes, r, b);
                d_a[r] = f32_at(ab);
                let bsums = _mm256_loadu_si256(ab.add(Q8K_BSUMS).cast());
                let pairs = _mm_hadd_epi16(
                    _mm256_castsi256_si128(bsums),
                    _mm256_extracti128_si256(bsums, 1),
                );
                let m = hsum_epi32_128(_mm_madd_epi16(mins16, pairs));
                acc_min[r] = (m as f32).mul_add(dmin * d_a[r], acc_min[r]);
            }
            let mut qh = if FIVE {
                _mm256_loadu_si256(wb.add(16).cast())
            } else {
                _mm256_setzero_si256()
            };
            let mut sumi = [_mm256_setzero_si256(); N];
            for c in 0..4 {
                let (lo, hi) = q45k_chunk::<FIVE>(wb, c, &mut qh);
                let s_lo = _mm256_set1_epi16(((sc >> (16 * c)) & 0xFF) as i16);
                let s_hi = _mm256_set1_epi16(((sc >> (16 * c + 8)) & 0xFF) as i16);
                for (r, sumi) in sumi.iter_mut().enumerate() {
                    let a = q8k_block(ap, act_row_bytes, r, b).add(Q8K_QS + 64 * c);
                    let a_lo = _mm256_loadu_si256(a.cast());
                    let a_hi = _mm256_loadu_si256(a.add(32).cast());
                    let p_lo = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, a_lo), s_lo);
                    let p_hi = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, a_hi), s_hi);
                    *sumi = _mm256_add_epi32(*sumi, _mm256_add_epi32(p_lo, p_hi));
                }
            }
            for r in 0..N {
                let total = hsum_epi32(sumi[r]);
                acc[r] = (total as f32).mul_add(d * d_a[r], acc[r]);
            }
        }
    }
    for r in 0..N {
        out[r] = acc[r] - acc_min[r];
    }
}

// ---------------------------------------------------------------------------------------
// Q6_K

/// # Safety
/// `check_dot_args` accepted the slices for Q6_K, `out.len() == N`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6k_rows<const N: usize>(
    w: &[u8],
    n_blocks: usize,
    acts: &[u8],
    act_row_bytes: usize,
    out: &mut [f32],
) {
    const BLOCK: usize = 210;
    let low4 = _mm256_set1_epi8(0x0F);
    let bits45 = _mm256_set1_epi8(0x30);
    let (wp, ap) = (w.as_ptr(), acts.as_ptr());
    let mut acc = [_mm256_setzero_ps(); N];
    for b in 0..n_blocks {
        // SAFETY (all reads below): block b exists in the weight row and in every
        // activation row (`check_dot_args`); offsets follow the block layouts.
        unsafe {
            let wb = wp.add(b * BLOCK);
            prefetch_kquant_block::<N>(wb, BLOCK);
            let d = f16_at(wb.add(208));
            let scales = _mm_loadu_si128(wb.add(192).cast());
            let scales16 = _mm256_cvtepi8_epi16(scales);
            let mut d_a = [0f32; N];
            let mut sumi = [_mm256_setzero_si256(); N];
            for r in 0..N {
                let ab = q8k_block(ap, act_row_bytes, r, b);
                d_a[r] = f32_at(ab);
                // The quants are kept in 0..=63: subtract 32 · Σ scale_k · bsums_k.
                let offset = _mm256_slli_epi32(scaled_bsums(scales16, ab), 5);
                sumi[r] = _mm256_sub_epi32(sumi[r], offset);
            }
            for h in 0..2 {
                let ql0 = _mm256_loadu_si256(wb.add(64 * h).cast());
                let ql1 = _mm256_loadu_si256(wb.add(64 * h + 32).cast());
                let qh = _mm256_loadu_si256(wb.add(128 + 32 * h).cast());
                let q = [
                    _mm256_or_si256(
                        _mm256_and_si256(ql0, low4),
                        _mm256_and_si256(_mm256_slli_epi16(qh, 4), bits45),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(ql1, low4),
                        _mm256_and_si256(_mm256_slli_epi16(qh, 2), bits45),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16(ql0, 4), low4),
                        _mm256_and_si256(qh, bits45),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16(ql1, 4), low4),
                        _mm256_and_si256(_mm256_srli_epi16(qh, 2), bits45),
                    ),
                ];
                for (j, &qj) in q.iter().enumerate() {
                    let s = pair_scales(scales, 4 * h + j);
                    for (r, sumi) in sumi.iter_mut().enumerate() {
                        let a = q8k_block(ap, act_row_bytes, r, b).add(Q8K_QS + 128 * h + 32 * j);
                        let a = _mm256_loadu_si256(a.cast());
                        let p = _mm256_madd_epi16(_mm256_maddubs_epi16(qj, a), s);
                        *sumi = _mm256_add_epi32(*sumi, p);
                    }
                }
            }
            for r in 0..N {
                let scale = _mm256_set1_ps(d * d_a[r]);
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi[r]), scale, acc[r]);
            }
        }
    }
    // SAFETY: same target features as this function.
    unsafe { finish(&acc, &[0.0; N], out) }
}

// ---------------------------------------------------------------------------------------
// Q2_K and Q3_K (same traversal: 2 low bits, four shift groups per 32 bytes of qs)

/// Decodes Q3_K's 12 packed bytes at `p` into its 16 six-bit scales minus 32, as i8.
///
/// # Safety
/// `p..p + 12` must be readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q3k_scales(p: *const u8) -> __m128i {
    // SAFETY: the caller guarantees 12 readable bytes; unaligned reads.
    let (w0, w1, w2) = unsafe {
        (
            p.cast::<u32>().read_unaligned(),
            p.add(4).cast::<u32>().read_unaligned(),
            p.add(8).cast::<u32>().read_unaligned(),
        )
    };
    let s0 = (w0 & 0x0F0F_0F0F) | ((w2 & 0x0303_0303) << 4);
    let s1 = (w1 & 0x0F0F_0F0F) | (((w2 >> 2) & 0x0303_0303) << 4);
    let s2 = ((w0 >> 4) & 0x0F0F_0F0F) | (((w2 >> 4) & 0x0303_0303) << 4);
    let s3 = ((w1 >> 4) & 0x0F0F_0F0F) | (((w2 >> 6) & 0x0303_0303) << 4);
    let s = _mm_set_epi32(s3 as i32, s2 as i32, s1 as i32, s0 as i32);
    _mm_sub_epi8(s, _mm_set1_epi8(32))
}

/// Q2_K (`THREE = false`, 84-byte blocks) or Q3_K (`THREE = true`, 110-byte blocks).
///
/// Q2_K: `x = d·(sc & 15)·q - dmin·(sc >> 4)`, q in 0..=3.
/// Q3_K: `x = d·(s - 32)·(u - 4)` with `u = low2 | highbit << 2` in 0..=7, so the dot is
/// `d·d_a·(Σ s·u·a - 4·Σ s·bsum)`.
///
/// # Safety
/// `check_dot_args` accepted the slices for this format, `out.len() == N`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q23k_rows<const THREE: bool, const N: usize>(
    w: &[u8],
    n_blocks: usize,
    acts: &[u8],
    act_row_bytes: usize,
    out: &mut [f32],
) {
    let block_bytes = if THREE { 110 } else { 84 };
    let qs_offset = if THREE { 32 } else { 16 };
    let two_bits = _mm256_set1_epi8(3);
    let one = _mm256_set1_epi8(1);
    let (wp, ap) = (w.as_ptr(), acts.as_ptr());
    let mut acc = [_mm256_setzero_ps(); N];
    let mut acc_min = [0f32; N];
    for b in 0..n_blocks {
        // SAFETY (all reads below): block b exists in the weight row and in every
        // activation row (`check_dot_args`); offsets follow the block layouts.
        unsafe {
            let wb = wp.add(b * block_bytes);
            prefetch_kquant_block::<N>(wb, block_bytes);
            let (d, scales) = if THREE {
                (f16_at(wb.add(108)), q3k_scales(wb.add(96)))
            } else {
                let packed = _mm_loadu_si128(wb.cast());
                (
                    f16_at(wb.add(80)),
                    _mm_and_si128(packed, _mm_set1_epi8(0x0F)),
                )
            };
            let mut d_a = [0f32; N];
            let mut sumi = [_mm256_setzero_si256(); N];
            if THREE {
                let scales16 = _mm256_cvtepi8_epi16(scales);
                for r in 0..N {
                    let ab = q8k_block(ap, act_row_bytes, r, b);
                    d_a[r] = f32_at(ab);
                    let offset = _mm256_slli_epi32(scaled_bsums(scales16, ab), 2);
                    sumi[r] = _mm256_sub_epi32(sumi[r], offset);
                }
            } else {
                let dmin = f16_at(wb.add(82));
                let packed = _mm_loadu_si128(wb.cast());
                let mins = _mm_and_si128(_mm_srli_epi16(packed, 4), _mm_set1_epi8(0x0F));
                let mins16 = _mm256_cvtepu8_epi16(mins);
                for r in 0..N {
                    let ab = q8k_block(ap, act_row_bytes, r, b);
                    d_a[r] = f32_at(ab);
                    let m = hsum_epi32(scaled_bsums(mins16, ab));
                    acc_min[r] += dmin * d_a[r] * m as f32;
                }
            }
            let mut hmask = if THREE {
                _mm256_loadu_si256(wb.cast())
            } else {
                one
            };
            for h in 0..2 {
                let mut qs = _mm256_loadu_si256(wb.add(qs_offset + 32 * h).cast());
                for j in 0..4 {
                    let mut q = _mm256_and_si256(qs, two_bits);
                    qs = _mm256_srli_epi16(qs, 2);
                    if THREE {
                        // High bit 4h + j of hmask[l] adds 4 (the -4 is in the offset).
                        let high = _mm256_and_si256(hmask, one);
                        q = _mm256_or_si256(q, _mm256_slli_epi16(high, 2));
                        hmask = _mm256_srli_epi16(hmask, 1);
                    }
                    let s = pair_scales(scales, 4 * h + j);
                    for (r, sumi) in sumi.iter_mut().enumerate() {
                        let a = q8k_block(ap, act_row_bytes, r, b).add(Q8K_QS + 128 * h + 32 * j);
                        let a = _mm256_loadu_si256(a.cast());
                        let p = _mm256_madd_epi16(_mm256_maddubs_epi16(q, a), s);
                        *sumi = _mm256_add_epi32(*sumi, p);
                    }
                }
            }
            for r in 0..N {
                let scale = _mm256_set1_ps(d * d_a[r]);
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi[r]), scale, acc[r]);
            }
        }
    }
    // SAFETY: same target features as this function.
    unsafe { finish(&acc, &acc_min, out) }
}

// ---------------------------------------------------------------------------------------
// IQ4_XS

/// IQ4_XS: 8 sub-blocks of 32 with 6-bit scales biased by 32; quants through the IQ4_NL
/// table, multiplied with the sign trick.
///
/// # Safety
/// `check_dot_args` accepted the slices for IQ4_XS, `out.len() == N`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn iq4xs_rows<const N: usize>(
    w: &[u8],
    n_blocks: usize,
    acts: &[u8],
    act_row_bytes: usize,
    out: &mut [f32],
) {
    const BLOCK: usize = 136;
    // SAFETY: IQ4NL_TABLE is 16 bytes.
    let table = unsafe { _mm_loadu_si128(IQ4NL_TABLE.as_ptr().cast()) };
    let table = _mm256_set_m128i(table, table);
    let (wp, ap) = (w.as_ptr(), acts.as_ptr());
    let mut acc = [_mm256_setzero_ps(); N];
    for b in 0..n_blocks {
        // SAFETY (all reads below): block b exists in the weight row and in every
        // activation row (`check_dot_args`); offsets follow the block layouts.
        unsafe {
            let wb = wp.add(b * BLOCK);
            prefetch_kquant_block::<N>(wb, BLOCK);
            let d = f16_at(wb);
            let scales_h = u32::from(wb.add(2).cast::<u16>().read_unaligned());
            let scales_l = wb.add(4).cast::<u32>().read_unaligned();
            let mut d_a = [0f32; N];
            for (r, d_a) in d_a.iter_mut().enumerate() {
                *d_a = f32_at(q8k_block(ap, act_row_bytes, r, b));
            }
            let mut sumi = [_mm256_setzero_si256(); N];
            for i in 0..8 {
                let low = (scales_l >> (4 * i)) & 0x0F;
                let high = (scales_h >> (2 * i)) & 3;
                let s = _mm256_set1_epi16((low | (high << 4)) as i16 - 32);
                let q = _mm256_shuffle_epi8(table, nibbles_32(wb.add(8 + 16 * i)));
                let q_abs = _mm256_sign_epi8(q, q);
                for (r, sumi) in sumi.iter_mut().enumerate() {
                    let a = q8k_block(ap, act_row_bytes, r, b).add(Q8K_QS + 32 * i);
                    let a = _mm256_loadu_si256(a.cast());
                    let pairs = _mm256_maddubs_epi16(q_abs, _mm256_sign_epi8(a, q));
                    *sumi = _mm256_add_epi32(*sumi, _mm256_madd_epi16(pairs, s));
                }
            }
            for r in 0..N {
                let scale = _mm256_set1_ps(d * d_a[r]);
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi[r]), scale, acc[r]);
            }
        }
    }
    // SAFETY: same target features as this function.
    unsafe { finish(&acc, &[0.0; N], out) }
}

/// Defines the safe [`crate::dispatch::DotFn`] wrapper around a kernel `$kernel::<.., N>`.
macro_rules! kquant_dot_fn {
    ($name:ident, $block_bytes:expr, $kernel:ident $(, $param:expr)?) => {
        pub(super) fn $name(w: &[u8], acts: &[u8], act_row_bytes: usize, out: &mut [f32]) {
            let n_blocks = check_dot_args(w, $block_bytes, acts, act_row_bytes, Q8K_BYTES, out);
            dispatch_rows!(out.len(), N => {
                // SAFETY: avx2, fma and f16c were detected before `install` made this
                // function reachable; `check_dot_args` validated the slice lengths.
                unsafe { $kernel::<$($param,)? N>(w, n_blocks, acts, act_row_bytes, out) }
            })
        }
    };
}

kquant_dot_fn!(dot_q2_k, 84, q23k_rows, false);
kquant_dot_fn!(dot_q3_k, 110, q23k_rows, true);
kquant_dot_fn!(dot_q4_k, 144, q45k_rows, false);
kquant_dot_fn!(dot_q5_k, 176, q45k_rows, true);
kquant_dot_fn!(dot_q6_k, 210, q6k_rows);
kquant_dot_fn!(dot_iq4_xs, 136, iq4xs_rows);
