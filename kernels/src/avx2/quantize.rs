//! AVX2 activation quantizers for Q8_0, Q8_1 and Q8_K, bit-identical to the scalar
//! reference (`scalar/quantize.rs`), which the property tests check byte for byte.
//!
//! What "identical" takes:
//! - the scale arithmetic (`amax / 127`, `1 / d`, `-127 / max`, `1 / iscale`, the f16
//!   rounding of `d` and `s`) is done on scalars exactly as the reference writes it; only
//!   the per-element work is vectorised;
//! - NaN inputs are ignored by the max (`max_ps` returns its second operand on NaN);
//! - Q8_0/Q8_1 round halves away from zero (`f32::round`): truncate, then step away from
//!   zero when the exact remainder `x - trunc(x)` is at least 0.5; then saturate like
//!   Rust's `as i8` (NaN to 0, clamp to -128..=127);
//! - Q8_K rounds halves to even (the reference's `nearest_int`; the SSE4.1 default mode),
//!   then saturates to -128..=127 with NaN to 0. Out-of-range values only occur when
//!   `iscale` overflowed to infinity (subnormal inputs); with a finite `iscale`,
//!   `|iscale · x| <= 127` up to rounding.

use std::arch::x86_64::*;

use half::f16;

use super::util::hsum_epi32;

/// Bytes of a Q8_0 / Q8_1 / Q8_K block.
const Q8_0_BYTES: usize = 34;
const Q8_1_BYTES: usize = 36;
const Q8_K_BYTES: usize = 292;

/// Checks the [`crate::dispatch::QuantizeFn`] contract for blocks of `block_elems` values
/// and `block_bytes` bytes; returns the number of blocks.
fn check_quantize_args(x: &[f32], out: &[u8], block_elems: usize, block_bytes: usize) -> usize {
    assert!(
        x.len().is_multiple_of(block_elems) && out.len() == x.len() / block_elems * block_bytes,
        "quantize: {} values and {} bytes are not matching whole blocks ({block_elems} values, \
         {block_bytes} bytes)",
        x.len(),
        out.len()
    );
    x.len() / block_elems
}

/// Lane-wise maximum of `|x|` over the `K` vectors at `x`, NaNs ignored, reduced to a
/// scalar.
///
/// # Safety
/// `8 * K` f32 at `x` must be readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn abs_max<const K: usize>(x: *const f32) -> f32 {
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF_FFFF));
    let mut m = _mm256_setzero_ps();
    for k in 0..K {
        // SAFETY: the caller guarantees 8 * K readable values.
        let v = unsafe { _mm256_loadu_ps(x.add(8 * k)) };
        // On NaN, max_ps returns its second operand: the running maximum.
        m = _mm256_max_ps(_mm256_and_ps(v, abs_mask), m);
    }
    let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let m = _mm_max_ss(m, _mm_movehdup_ps(m));
    _mm_cvtss_f32(m)
}

/// `f32::round` (halves away from zero) on every lane, then Rust's saturating `as i8`
/// semantics (NaN to 0, clamp to -128..=127), as i32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn round_away_to_i8_range(x: __m256) -> __m256i {
    let sign = _mm256_and_ps(x, _mm256_set1_ps(-0.0));
    let t = _mm256_round_ps(x, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    // x - trunc(x) is exact for finite x; for infinities it is NaN and the compare is false.
    let frac = _mm256_andnot_ps(_mm256_set1_ps(-0.0), _mm256_sub_ps(x, t));
    let step = _mm256_and_ps(
        _mm256_cmp_ps(frac, _mm256_set1_ps(0.5), _CMP_GE_OQ),
        _mm256_or_ps(sign, _mm256_set1_ps(1.0)),
    );
    let r = _mm256_add_ps(t, step);
    let r = _mm256_and_ps(r, _mm256_cmp_ps(r, r, _CMP_ORD_Q));
    let r = _mm256_min_ps(
        _mm256_max_ps(r, _mm256_set1_ps(-128.0)),
        _mm256_set1_ps(127.0),
    );
    _mm256_cvttps_epi32(r)
}

/// Rounds every lane to the nearest integer, halves to even, then saturates to -128..=127
/// (NaN to 0), as i32 lanes: the reference's `nearest_int(x).clamp(-128, 127)`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn round_even_q8k(x: __m256) -> __m256i {
    let r = _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    let r = _mm256_and_ps(r, _mm256_cmp_ps(r, r, _CMP_ORD_Q));
    let r = _mm256_min_ps(
        _mm256_max_ps(r, _mm256_set1_ps(-128.0)),
        _mm256_set1_ps(127.0),
    );
    _mm256_cvttps_epi32(r)
}

/// Packs four vectors of i32 lanes (each in -128..=127) into 32 bytes in lane order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pack_i8(q: [__m256i; 4]) -> __m256i {
    let p01 = _mm256_packs_epi32(q[0], q[1]);
    let p23 = _mm256_packs_epi32(q[2], q[3]);
    let p = _mm256_packs_epi16(p01, p23);
    _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

/// Q8_0 (`SUM = false`) or Q8_1 (`SUM = true`, which also stores `s = d · Σq`) for one
/// block of 32 values.
///
/// # Safety
/// 32 values at `x` readable; 34 (Q8_0) or 36 (Q8_1) bytes at `out` writable.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_block<const SUM: bool>(x: *const f32, out: *mut u8) {
    // SAFETY (all reads and writes below): the caller guarantees 32 readable values at `x`
    // and a whole writable block at `out`; all accesses are unaligned.
    unsafe {
        let amax = abs_max::<4>(x);
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let idv = _mm256_set1_ps(id);
        let mut q = [_mm256_setzero_si256(); 4];
        for (k, q) in q.iter_mut().enumerate() {
            *q = round_away_to_i8_range(_mm256_mul_ps(_mm256_loadu_ps(x.add(8 * k)), idv));
        }
        out.cast::<u16>()
            .write_unaligned(f16::from_f32(d).to_bits());
        let qs_offset = if SUM {
            let sum = hsum_epi32(_mm256_add_epi32(
                _mm256_add_epi32(q[0], q[1]),
                _mm256_add_epi32(q[2], q[3]),
            ));
            let s = f16::from_f32(sum as f32 * d);
            out.add(2).cast::<u16>().write_unaligned(s.to_bits());
            4
        } else {
            2
        };
        _mm256_storeu_si256(out.add(qs_offset).cast(), pack_i8(q));
    }
}

/// Q8_K for one block of 256 values.
///
/// # Safety
/// 256 values at `x` readable; 292 bytes at `out` writable.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8k_block(x: *const f32, out: *mut u8) {
    // SAFETY (all reads and writes below): the caller guarantees 256 readable values at
    // `x` and a whole writable block at `out`; all accesses are unaligned.
    unsafe {
        let amax = abs_max::<32>(x);
        if amax == 0.0 {
            // All zeros or NaNs: d = 0, every quant and sum 0.
            std::ptr::write_bytes(out, 0, Q8_K_BYTES);
            return;
        }
        // The signed value of largest magnitude: the first whose |x| equals amax.
        let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF_FFFF));
        let target = _mm256_set1_ps(amax);
        let mut max = amax;
        for k in 0..32 {
            let v = _mm256_loadu_ps(x.add(8 * k));
            let eq = _mm256_cmp_ps(_mm256_and_ps(v, abs_mask), target, _CMP_EQ_OQ);
            let mask = _mm256_movemask_ps(eq);
            if mask != 0 {
                max = *x.add(8 * k + mask.trailing_zeros() as usize);
                break;
            }
        }
        let iscale = -127.0 / max;
        let scale = _mm256_set1_ps(iscale);
        let qs = out.add(4);
        let bsums = out.add(260).cast::<i16>();
        for g in 0..8 {
            let mut q = [_mm256_setzero_si256(); 4];
            for (k, q) in q.iter_mut().enumerate() {
                let v = _mm256_loadu_ps(x.add(32 * g + 8 * k));
                *q = round_even_q8k(_mm256_mul_ps(v, scale));
            }
            _mm256_storeu_si256(qs.add(32 * g).cast(), pack_i8(q));
            let s0 = hsum_epi32(_mm256_add_epi32(q[0], q[1]));
            let s1 = hsum_epi32(_mm256_add_epi32(q[2], q[3]));
            bsums.add(2 * g).write_unaligned(s0 as i16);
            bsums.add(2 * g + 1).write_unaligned(s1 as i16);
        }
        out.cast::<f32>().write_unaligned(1.0 / iscale);
    }
}

/// Q8_0 activation quantizer ([`crate::dispatch::QuantizeFn`]).
pub(super) fn quantize_q8_0(x: &[f32], out: &mut [u8]) {
    let n_blocks = check_quantize_args(x, out, 32, Q8_0_BYTES);
    for b in 0..n_blocks {
        // SAFETY: avx2, fma and f16c were detected before `install` made this function
        // reachable; block b < n_blocks has its 32 values and 34 bytes (checked above).
        unsafe { q8_block::<false>(x.as_ptr().add(32 * b), out.as_mut_ptr().add(Q8_0_BYTES * b)) }
    }
}

/// Q8_1 activation quantizer ([`crate::dispatch::QuantizeFn`]).
pub(super) fn quantize_q8_1(x: &[f32], out: &mut [u8]) {
    let n_blocks = check_quantize_args(x, out, 32, Q8_1_BYTES);
    for b in 0..n_blocks {
        // SAFETY: avx2, fma and f16c were detected before `install` made this function
        // reachable; block b < n_blocks has its 32 values and 36 bytes (checked above).
        unsafe { q8_block::<true>(x.as_ptr().add(32 * b), out.as_mut_ptr().add(Q8_1_BYTES * b)) }
    }
}

/// Q8_K activation quantizer ([`crate::dispatch::QuantizeFn`]).
pub(super) fn quantize_q8_k(x: &[f32], out: &mut [u8]) {
    let n_blocks = check_quantize_args(x, out, 256, Q8_K_BYTES);
    for b in 0..n_blocks {
        // SAFETY: avx2, fma and f16c were detected before `install` made this function
        // reachable; block b < n_blocks has its 256 values and 292 bytes (checked above).
        unsafe {
            q8k_block(
                x.as_ptr().add(256 * b),
                out.as_mut_ptr().add(Q8_K_BYTES * b),
            )
        }
    }
}
