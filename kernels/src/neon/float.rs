//! Float dot products: F32 x F32, F16 x F16 and BF16 x BF16, accumulated in `f32`.
//!
//! Rows may have any length (these "blocks" are single elements); the last `n % 8`
//! elements are done one at a time.

use core::arch::aarch64::*;

use super::util::{
    f16_to_f32, f16x4_high_to_f32, f16x4_low_to_f32, load_f32x4, read_f32, read_u16, IntDot,
};
use super::Kernel;

/// F32 weights with F32 activations.
pub(super) struct F32;

impl Kernel for F32 {
    const W_BLOCK_BYTES: usize = 4;
    const A_BLOCK_BYTES: usize = 4;

    #[inline(always)]
    unsafe fn rows<D: IntDot, const N: usize>(
        w: *const u8,
        n: usize,
        a: *const u8,
        stride: usize,
        out: &mut [f32],
    ) {
        // SAFETY: the caller guarantees `n * 4` readable bytes at `w` and at every
        // `a + r * stride` for `r < N`; every access below stays inside those ranges.
        unsafe {
            let mut acc0 = [vdupq_n_f32(0.0); N];
            let mut acc1 = [vdupq_n_f32(0.0); N];
            let mut i = 0;
            while i + 8 <= n {
                let w0 = load_f32x4(w.add(4 * i));
                let w1 = load_f32x4(w.add(4 * i + 16));
                for r in 0..N {
                    let ar = a.add(r * stride + 4 * i);
                    acc0[r] = vfmaq_f32(acc0[r], w0, load_f32x4(ar));
                    acc1[r] = vfmaq_f32(acc1[r], w1, load_f32x4(ar.add(16)));
                }
                i += 8;
            }
            for r in 0..N {
                let mut sum = vaddvq_f32(vaddq_f32(acc0[r], acc1[r]));
                for j in i..n {
                    sum += read_f32(w.add(4 * j)) * read_f32(a.add(r * stride + 4 * j));
                }
                out[r] = sum;
            }
        }
    }
}

/// F16 weights with F16 activations; both sides are widened exactly to `f32` (`fcvtl`).
pub(super) struct F16;

impl Kernel for F16 {
    const W_BLOCK_BYTES: usize = 2;
    const A_BLOCK_BYTES: usize = 2;

    #[inline(always)]
    unsafe fn rows<D: IntDot, const N: usize>(
        w: *const u8,
        n: usize,
        a: *const u8,
        stride: usize,
        out: &mut [f32],
    ) {
        // SAFETY: the caller guarantees `n * 2` readable bytes at `w` and at every
        // `a + r * stride` for `r < N`; every access below stays inside those ranges.
        unsafe {
            let mut acc0 = [vdupq_n_f32(0.0); N];
            let mut acc1 = [vdupq_n_f32(0.0); N];
            let mut i = 0;
            while i + 8 <= n {
                let wh = vreinterpretq_u16_u8(vld1q_u8(w.add(2 * i)));
                let w0 = f16x4_low_to_f32(wh);
                let w1 = f16x4_high_to_f32(wh);
                for r in 0..N {
                    let ah = vreinterpretq_u16_u8(vld1q_u8(a.add(r * stride + 2 * i)));
                    acc0[r] = vfmaq_f32(acc0[r], w0, f16x4_low_to_f32(ah));
                    acc1[r] = vfmaq_f32(acc1[r], w1, f16x4_high_to_f32(ah));
                }
                i += 8;
            }
            for r in 0..N {
                let mut sum = vaddvq_f32(vaddq_f32(acc0[r], acc1[r]));
                for j in i..n {
                    let wv = f16_to_f32(read_u16(w.add(2 * j)));
                    let av = f16_to_f32(read_u16(a.add(r * stride + 2 * j)));
                    sum += wv * av;
                }
                out[r] = sum;
            }
        }
    }
}

/// BF16 weights with BF16 activations; widening is a 16-bit left shift (`shll`).
pub(super) struct BF16;

/// Widens one bfloat16 to `f32`.
#[inline(always)]
fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits((bits as u32) << 16)
}

impl Kernel for BF16 {
    const W_BLOCK_BYTES: usize = 2;
    const A_BLOCK_BYTES: usize = 2;

    #[inline(always)]
    unsafe fn rows<D: IntDot, const N: usize>(
        w: *const u8,
        n: usize,
        a: *const u8,
        stride: usize,
        out: &mut [f32],
    ) {
        // SAFETY: the caller guarantees `n * 2` readable bytes at `w` and at every
        // `a + r * stride` for `r < N`; every access below stays inside those ranges.
        unsafe {
            let mut acc0 = [vdupq_n_f32(0.0); N];
            let mut acc1 = [vdupq_n_f32(0.0); N];
            let mut i = 0;
            while i + 8 <= n {
                let wh = vreinterpretq_u16_u8(vld1q_u8(w.add(2 * i)));
                let w0 = vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(wh)));
                let w1 = vreinterpretq_f32_u32(vshll_high_n_u16::<16>(wh));
                for r in 0..N {
                    let ah = vreinterpretq_u16_u8(vld1q_u8(a.add(r * stride + 2 * i)));
                    let a0 = vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(ah)));
                    let a1 = vreinterpretq_f32_u32(vshll_high_n_u16::<16>(ah));
                    acc0[r] = vfmaq_f32(acc0[r], w0, a0);
                    acc1[r] = vfmaq_f32(acc1[r], w1, a1);
                }
                i += 8;
            }
            for r in 0..N {
                let mut sum = vaddvq_f32(vaddq_f32(acc0[r], acc1[r]));
                for j in i..n {
                    let wv = bf16_to_f32(read_u16(w.add(2 * j)));
                    let av = bf16_to_f32(read_u16(a.add(r * stride + 2 * j)));
                    sum += wv * av;
                }
                out[r] = sum;
            }
        }
    }
}
