//! 256-element super-blocks paired with Q8_K activations: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K
//! and IQ4_XS.
//!
//! Each super-block is walked in groups of 16 or 32 elements; every group is unpacked once
//! into signed bytes and dotted with the same elements of each activation row. The integer
//! dot of a group is multiplied by the group's scale with `vmlaq_n_s32` and accumulated in
//! `i32` over the super-block (bounded well below `2^31`, see each type), then converted and
//! multiplied by `d_w * d_a` once. Minimums (Q2_K, Q4_K, Q5_K) never touch the quants: they
//! come from the activation block sums, `dmin * d_a * sum_k min_k * bsums_k`.

use core::arch::aarch64::*;

use super::util::{
    dot16, dot32, dot_s16x16, load_s16, load_u8, read_f16, read_f32, read_u16, read_u32, IntDot,
};
use super::Kernel;
use crate::blocks::IQ4NL_TABLE;

/// Bytes of one Q8_K activation block.
const Q8K_BYTES: usize = 292;
/// Offset of the quants in a Q8_K block (after the `f32` scale).
const Q8K_QS: usize = 4;
/// Offset of the 16 `i16` block sums in a Q8_K block.
const Q8K_BSUMS: usize = 260;

/// Decodes the 12-byte Q4_K/Q5_K field into 8 six-bit scales and 8 six-bit mins.
///
/// # Safety
/// `p .. p + 12` must be readable.
#[inline(always)]
unsafe fn k4_scales_mins(p: *const u8) -> ([u8; 8], u64) {
    // SAFETY: the caller guarantees 12 readable bytes.
    let (b0, b1, b2) = unsafe { (read_u32(p), read_u32(p.add(4)), read_u32(p.add(8))) };
    // Bytes 0..4 hold scales 0..4 (low 6 bits), bytes 4..8 mins 0..4; bytes 8..12 hold the
    // low 4 bits of scales 4..8 (low nibbles) and mins 4..8 (high nibbles), whose top 2 bits
    // are the top bits of bytes 0..4 and 4..8 respectively.
    let sc_lo = b0 & 0x3f3f_3f3f;
    let mn_lo = b1 & 0x3f3f_3f3f;
    let sc_hi = (b2 & 0x0f0f_0f0f) | (((b0 >> 6) & 0x0303_0303) << 4);
    let mn_hi = ((b2 >> 4) & 0x0f0f_0f0f) | (((b1 >> 6) & 0x0303_0303) << 4);
    let scales = (sc_lo as u64 | (sc_hi as u64) << 32).to_le_bytes();
    (scales, mn_lo as u64 | (mn_hi as u64) << 32)
}

/// `sum_i mins[i] * (bsums[2i] + bsums[2i + 1])` for the 8 mins of a Q4_K/Q5_K block.
///
/// # Safety
/// `bsums .. bsums + 32` must be readable.
#[inline(always)]
unsafe fn k4_min_sum(mins: int16x8_t, bsums: *const u8) -> i32 {
    // SAFETY: the caller guarantees 32 readable bytes; pair sums are at most 2 * 16 * 128.
    unsafe {
        let pairs = vpaddq_s16(load_s16(bsums), load_s16(bsums.add(16)));
        let p = vmull_s16(vget_low_s16(mins), vget_low_s16(pairs));
        vaddvq_s32(vmlal_high_s16(p, mins, pairs))
    }
}

/// Q2_K: `x = d * (sc & 15) * q - dmin * (sc >> 4)`, 2-bit quants in groups of 16.
///
/// Bound: `|isum| <= 256 * 3 * 127 * 15 < 2^21`.
pub(super) struct Q2K;

impl Kernel for Q2K {
    const W_BLOCK_BYTES: usize = 84;
    const A_BLOCK_BYTES: usize = Q8K_BYTES;

    #[inline(always)]
    unsafe fn rows<D: IntDot, const N: usize>(
        w: *const u8,
        nb: usize,
        a: *const u8,
        stride: usize,
        out: &mut [f32],
    ) {
        // SAFETY: the caller guarantees `nb` weight blocks at `w` and `nb` Q8_K blocks at
        // every `a + r * stride` for `r < N`; every access stays inside those. Layout:
        // scales at 0..16, qs at 16..80, d at 80, dmin at 82.
        unsafe {
            let mut acc = [vdupq_n_f32(0.0); N];
            let mut mins_total = [0f32; N];
            let three = vdupq_n_u8(3);
            for i in 0..nb {
                let wb = w.add(i * Self::W_BLOCK_BYTES);
                let ab = a.add(i * Q8K_BYTES);
                let d = read_f16(wb.add(80));
                let dmin = read_f16(wb.add(82));
                let packed = load_u8(wb);
                let mut scales = [0u8; 16];
                vst1q_u8(scales.as_mut_ptr(), vandq_u8(packed, vdupq_n_u8(0x0F)));
                let mins = vshrq_n_u8::<4>(packed);
                let mins_lo = vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(mins)));
                let mins_hi = vreinterpretq_s16_u16(vmovl_high_u8(mins));

                let mut da = [0f32; N];
                for r in 0..N {
                    let ar = ab.add(r * stride);
                    da[r] = read_f32(ar);
                    let bs = ar.add(Q8K_BSUMS);
                    let m = dot_s16x16(mins_lo, mins_hi, load_s16(bs), load_s16(bs.add(16)));
                    mins_total[r] += dmin * da[r] * m as f32;
                }

                let mut isum = [vdupq_n_s32(0); N];
                for h in 0..2 {
                    let mut q0 = load_u8(wb.add(16 + 32 * h));
                    let mut q1 = load_u8(wb.add(32 + 32 * h));
                    for j in 0..4 {
                        let w0 = vreinterpretq_s8_u8(vandq_u8(q0, three));
                        let w1 = vreinterpretq_s8_u8(vandq_u8(q1, three));
                        let k = 8 * h + 2 * j;
                        let (s0, s1) = (scales[k] as i32, scales[k + 1] as i32);
                        for (r, sum) in isum.iter_mut().enumerate() {
                            let ap = ab.add(r * stride + Q8K_QS + 16 * k);
                            *sum = vmlaq_n_s32(*sum, dot16::<D>(w0, ap), s0);
                            *sum = vmlaq_n_s32(*sum, dot16::<D>(w1, ap.add(16)), s1);
                        }
                        q0 = vshrq_n_u8::<2>(q0);
                        q1 = vshrq_n_u8::<2>(q1);
                    }
                }
                for r in 0..N {
                    acc[r] = vfmaq_n_f32(acc[r], vcvtq_f32_s32(isum[r]), d * da[r]);
                }
            }
            for r in 0..N {
                out[r] = vaddvq_f32(acc[r]) - mins_total[r];
            }
        }
    }
}

/// Decodes the 12-byte Q3_K field into 16 signed scales (`s - 32`, in -32..32).
///
/// # Safety
/// `p .. p + 12` must be readable.
#[inline(always)]
unsafe fn q3k_scales(p: *const u8) -> [i8; 16] {
    // SAFETY: the caller guarantees 12 readable bytes.
    let (b0, b1, hi) = unsafe { (read_u32(p), read_u32(p.add(4)), read_u32(p.add(8))) };
    let low = 0x0f0f_0f0f;
    let two = 0x0303_0303;
    let s = [
        (b0 & low) | ((hi & two) << 4),
        (b1 & low) | (((hi >> 2) & two) << 4),
        ((b0 >> 4) & low) | (((hi >> 4) & two) << 4),
        ((b1 >> 4) & low) | (((hi >> 6) & two) << 4),
    ];
    let mut out = [0i8; 16];
    for (k, word) in s.iter().enumerate() {
        for (j, byte) in word.to_le_bytes().iter().enumerate() {
            out[4 * k + j] = *byte as i8 - 32;
        }
    }
    out
}

/// Q3_K: `x = d * (s - 32) * q` with `q = low2 - (high bit ? 0 : 4)` in -4..4.
///
/// Bound: `|isum| <= 256 * 4 * 128 * 32 < 2^23`.
pub(super) struct Q3K;

impl Kernel for Q3K {
    const W_BLOCK_BYTES: usize = 110;
    const A_BLOCK_BYTES: usize = Q8K_BYTES;

    #[inline(always)]
    unsafe fn rows<D: IntDot, const N: usize>(
        w: *const u8,
        nb: usize,
        a: *const u8,
        stride: usize,
        out: &mut [f32],
    ) {
        // SAFETY: the caller guarantees `nb` weight blocks at `w` and `nb` Q8_K blocks at
        // every `a + r * stride` for `r < N`; every access stays inside those. Layout:
        // hmask at 0..32, qs at 32..96, scales at 96..108, d at 108.
        unsafe {
            let mut acc = [vdupq_n_f32(0.0); N];
            let three = vdupq_n_u8(3);
            let one = vdupq_n_u8(1);
            for i in 0..nb {
                let wb = w.add(i * Self::W_BLOCK_BYTES);
                let ab = a.add(i * Q8K_BYTES);
                let d = read_f16(wb.add(108));
                let scales = q3k_scales(wb.add(96));
                // Element 128h + 32j + l has its high bit in bit 4h + j of hmask[l]: shifting
                // the mask right once per (h, j) step keeps the current bit in bit 0.
                let mut hm0 = load_u8(wb);
                let mut hm1 = load_u8(wb.add(16));
                let mut isum = [vdupq_n_s32(0); N];
                for h in 0..2 {
                    let mut q0 = load_u8(wb.add(32 + 32 * h));
                    let mut q1 = load_u8(wb.add(48 + 32 * h));
                    for j in 0..4 {
                        let minus0 = vshlq_n_u8::<2>(vbicq_u8(one, hm0));
                        let minus1 = vshlq_n_u8::<2>(vbicq_u8(one, hm1));
                        let w0 = vreinterpretq_s8_u8(vsubq_u8(vandq_u8(q0, three), minus0));
                        let w1 = vreinterpretq_s8_u8(vsubq_u8(vandq_u8(q1, three), minus1));
                        let k = 8 * h + 2 * j;
                        let (s0, s1) = (scales[k] as i32, scales[k + 1] as i32);
                        for (r, sum) in isum.iter_mut().enumerate() {
                            let ap = ab.add(r * stride + Q8K_QS + 16 * k);
                            *sum = vmlaq_n_s32(*sum, dot16::<D>(w0, ap), s0);
                            *sum = vmlaq_n_s32(*sum, dot16::<D>(w1, ap.add(16)), s1);
                        }
                        q0 = vshrq_n_u8::<2>(q0);
                        q1 = vshrq_n_u8::<2>(q1);
                        hm0 = vshrq_n_u8::<1>(hm0);
                        hm1 = vshrq_n_u8::<1>(hm1);
                    }
                }
                for r in 0..N {
                    let da = read_f32(ab.add(r * stride));
                    acc[r] = vfmaq_n_f32(acc[r], vcvtq_f32_s32(isum[r]), d * da);
                }
            }
            for r in 0..N {
                out[r] = vaddvq_f32(acc[r]);
            }
        }
    }
}

/// Q4_K (and, with `FIVE_BITS`, Q5_K): `x = d * sc * q - dmin * m` in 8 groups of 32.
///
/// Bound: `|isum| <= 256 * 31 * 128 * 63 < 2^26`.
#[inline(always)]
unsafe fn q45k_rows<D: IntDot, const N: usize, const FIVE_BITS: bool>(
    w: *const u8,
    nb: usize,
    a: *const u8,
    stride: usize,
    out: &mut [f32],
) {
    // Layout: d at 0, dmin at 2, scales at 4..16, then Q4_K: qs at 16..144; Q5_K: qh at
    // 16..48, qs at 48..176.
    let block_bytes = if FIVE_BITS { 176 } else { 144 };
    let qs_offset = if FIVE_BITS { 48 } else { 16 };
    // SAFETY: the caller guarantees `nb` weight blocks at `w` and `nb` Q8_K blocks at every
    // `a + r * stride` for `r < N`; every access stays inside those.
    unsafe {
        let mut acc = [vdupq_n_f32(0.0); N];
        let mut mins_total = [0f32; N];
        let m4 = vdupq_n_u8(0x0F);
        let one = vdupq_n_u8(1);
        let two = vdupq_n_u8(2);
        for i in 0..nb {
            let wb = w.add(i * block_bytes);
            let ab = a.add(i * Q8K_BYTES);
            let d = read_f16(wb);
            let dmin = read_f16(wb.add(2));
            let (scales, mins) = k4_scales_mins(wb.add(4));
            let mins = vreinterpretq_s16_u16(vmovl_u8(vcreate_u8(mins)));

            let mut da = [0f32; N];
            for r in 0..N {
                let ar = ab.add(r * stride);
                da[r] = read_f32(ar);
                mins_total[r] += dmin * da[r] * k4_min_sum(mins, ar.add(Q8K_BSUMS)) as f32;
            }

            // Q5_K: bit 2c of qh[l] is the fifth bit of chunk c's low-nibble element l, bit
            // 2c + 1 that of its high-nibble element; shift right by 2 per chunk.
            let (mut qh0, mut qh1) = if FIVE_BITS {
                (load_u8(wb.add(16)), load_u8(wb.add(32)))
            } else {
                (vdupq_n_u8(0), vdupq_n_u8(0))
            };
            let mut isum = [vdupq_n_s32(0); N];
            for c in 0..4 {
                let q0 = load_u8(wb.add(qs_offset + 32 * c));
                let q1 = load_u8(wb.add(qs_offset + 32 * c + 16));
                let mut l0 = vandq_u8(q0, m4);
                let mut l1 = vandq_u8(q1, m4);
                let mut h0 = vshrq_n_u8::<4>(q0);
                let mut h1 = vshrq_n_u8::<4>(q1);
                if FIVE_BITS {
                    l0 = vorrq_u8(l0, vshlq_n_u8::<4>(vandq_u8(qh0, one)));
                    l1 = vorrq_u8(l1, vshlq_n_u8::<4>(vandq_u8(qh1, one)));
                    h0 = vorrq_u8(h0, vshlq_n_u8::<3>(vandq_u8(qh0, two)));
                    h1 = vorrq_u8(h1, vshlq_n_u8::<3>(vandq_u8(qh1, two)));
                    qh0 = vshrq_n_u8::<2>(qh0);
                    qh1 = vshrq_n_u8::<2>(qh1);
                }
                let (l0, l1) = (vreinterpretq_s8_u8(l0), vreinterpretq_s8_u8(l1));
                let (h0, h1) = (vreinterpretq_s8_u8(h0), vreinterpretq_s8_u8(h1));
                let (s_lo, s_hi) = (scales[2 * c] as i32, scales[2 * c + 1] as i32);
                for (r, sum) in isum.iter_mut().enumerate() {
                    let ap = ab.add(r * stride + Q8K_QS + 64 * c);
                    *sum = vmlaq_n_s32(*sum, dot32::<D>(l0, l1, ap), s_lo);
                    *sum = vmlaq_n_s32(*sum, dot32::<D>(h0, h1, ap.add(32)), s_hi);
                }
            }
            for r in 0..N {
                acc[r] = vfmaq_n_f32(acc[r], vcvtq_f32_s32(isum[r]), d * da[r]);
            }
        }
        for r in 0..N {
            out[r] = vaddvq_f32(acc[r]) - mins_total[r];
        }
    }
}

/// Q4_K: 4-bit quants, 6-bit scales and mins per 32 elements.
pub(super) struct Q4K;

impl Kernel for Q4K {
    const W_BLOCK_BYTES: usize = 144;
    const A_BLOCK_BYTES: usize = Q8K_BYTES;

    #[inline(always)]
    unsafe fn rows<D: IntDot, const N: usize>(
        w: *const u8,
        nb: usize,
        a: *const u8,
        stride: usize,
        out: &mut [f32],
    ) {
        // SAFETY: forwarded caller guarantee (blocks of 144 bytes).
        unsafe { q45k_rows::<D, N, false>(w, nb, a, stride, out) }
    }
}

/// Q5_K: Q4_K plus a fifth bit per weight.
pub(super) struct Q5K;

impl Kernel for Q5K {
    const W_BLOCK_BYTES: usize = 176;
    const A_BLOCK_BYTES: usize = Q8K_BYTES;

    #[inline(always)]
    unsafe fn rows<D: IntDot, const N: usize>(
        w: *const u8,
        nb: usize,
        a: *const u8,
        stride: usize,
        out: &mut [f32],
    ) {
        // SAFETY: forwarded caller guarantee (blocks of 176 bytes).
        unsafe { q45k_rows::<D, N, true>(w, nb, a, stride, out) }
    }
}

/// Q6_K: `x = d * scale * (q - 32)` with 6-bit `q` and a signed 8-bit scale per 16.
///
/// The `- 32` is applied to the weights (giving -32..32), so no block sums are needed.
/// Bound: `|isum| <= 256 * 32 * 128 * 128 < 2^28`.
pub(super) struct Q6K;

impl Kernel for Q6K {
    const W_BLOCK_BYTES: usize = 210;
    const A_BLOCK_BYTES: usize = Q8K_BYTES;

    #[inline(always)]
    unsafe fn rows<D: IntDot, const N: usize>(
        w: *const u8,
        nb: usize,
        a: *const u8,
        stride: usize,
        out: &mut [f32],
    ) {
        // SAFETY: the caller guarantees `nb` weight blocks at `w` and `nb` Q8_K blocks at
        // every `a + r * stride` for `r < N`; every access stays inside those. Layout:
        // ql at 0..128, qh at 128..192, scales at 192..208, d at 208.
        unsafe {
            let mut acc = [vdupq_n_f32(0.0); N];
            let m4 = vdupq_n_u8(0x0F);
            let m30 = vdupq_n_u8(0x30);
            let three = vdupq_n_u8(3);
            let bias = vdupq_n_s8(32);
            for i in 0..nb {
                let wb = w.add(i * Self::W_BLOCK_BYTES);
                let ab = a.add(i * Q8K_BYTES);
                let d = read_f16(wb.add(208));
                let mut scales = [0i8; 16];
                vst1q_s8(scales.as_mut_ptr(), vld1q_s8(wb.add(192).cast::<i8>()));
                let mut isum = [vdupq_n_s32(0); N];
                for h in 0..2 {
                    let ql = wb.add(64 * h);
                    let (l0, l1) = (load_u8(ql), load_u8(ql.add(16)));
                    let (l2, l3) = (load_u8(ql.add(32)), load_u8(ql.add(48)));
                    let qh0 = load_u8(wb.add(128 + 32 * h));
                    let qh1 = load_u8(wb.add(144 + 32 * h));
                    // The 8 groups of 16 elements of this half, in element order.
                    let groups = [
                        vorrq_u8(vandq_u8(l0, m4), vshlq_n_u8::<4>(vandq_u8(qh0, three))),
                        vorrq_u8(vandq_u8(l1, m4), vshlq_n_u8::<4>(vandq_u8(qh1, three))),
                        vorrq_u8(vandq_u8(l2, m4), vandq_u8(vshlq_n_u8::<2>(qh0), m30)),
                        vorrq_u8(vandq_u8(l3, m4), vandq_u8(vshlq_n_u8::<2>(qh1), m30)),
                        vorrq_u8(vshrq_n_u8::<4>(l0), vandq_u8(qh0, m30)),
                        vorrq_u8(vshrq_n_u8::<4>(l1), vandq_u8(qh1, m30)),
                        vorrq_u8(vshrq_n_u8::<4>(l2), vandq_u8(vshrq_n_u8::<2>(qh0), m30)),
                        vorrq_u8(vshrq_n_u8::<4>(l3), vandq_u8(vshrq_n_u8::<2>(qh1), m30)),
                    ];
                    for (g, q) in groups.iter().enumerate() {
                        let wq = vsubq_s8(vreinterpretq_s8_u8(*q), bias);
                        let k = 8 * h + g;
                        let scale = scales[k] as i32;
                        for (r, sum) in isum.iter_mut().enumerate() {
                            let ap = ab.add(r * stride + Q8K_QS + 16 * k);
                            *sum = vmlaq_n_s32(*sum, dot16::<D>(wq, ap), scale);
                        }
                    }
                }
                for r in 0..N {
                    let da = read_f32(ab.add(r * stride));
                    acc[r] = vfmaq_n_f32(acc[r], vcvtq_f32_s32(isum[r]), d * da);
                }
            }
            for r in 0..N {
                out[r] = vaddvq_f32(acc[r]);
            }
        }
    }
}

/// IQ4_XS: `x = d * (ls - 32) * IQ4NL_TABLE[nibble]` with 6-bit `ls` per 32 elements.
///
/// Bound: `|isum| <= 256 * 127 * 128 * 32 < 2^28`.
pub(super) struct IQ4XS;

impl Kernel for IQ4XS {
    const W_BLOCK_BYTES: usize = 136;
    const A_BLOCK_BYTES: usize = Q8K_BYTES;

    #[inline(always)]
    unsafe fn rows<D: IntDot, const N: usize>(
        w: *const u8,
        nb: usize,
        a: *const u8,
        stride: usize,
        out: &mut [f32],
    ) {
        // SAFETY: the caller guarantees `nb` weight blocks at `w` and `nb` Q8_K blocks at
        // every `a + r * stride` for `r < N`; every access stays inside those; the table
        // constant is 16 readable bytes. Layout: d at 0, scales_h at 2, scales_l at 4..8,
        // qs at 8..136 (16 bytes per group of 32: low nibbles first).
        unsafe {
            let mut acc = [vdupq_n_f32(0.0); N];
            let table = vld1q_s8(IQ4NL_TABLE.as_ptr());
            let m4 = vdupq_n_u8(0x0F);
            for i in 0..nb {
                let wb = w.add(i * Self::W_BLOCK_BYTES);
                let ab = a.add(i * Q8K_BYTES);
                let d = read_f16(wb);
                let scales_h = read_u16(wb.add(2)) as u32;
                let scales_l = read_u32(wb.add(4));
                let mut isum = [vdupq_n_s32(0); N];
                for g in 0..8 {
                    let low = (scales_l >> (4 * g)) & 0xF;
                    let high = (scales_h >> (2 * g)) & 3;
                    let scale = (low | high << 4) as i32 - 32;
                    let q = load_u8(wb.add(8 + 16 * g));
                    let w0 = vqtbl1q_s8(table, vandq_u8(q, m4));
                    let w1 = vqtbl1q_s8(table, vshrq_n_u8::<4>(q));
                    for (r, sum) in isum.iter_mut().enumerate() {
                        let ap = ab.add(r * stride + Q8K_QS + 32 * g);
                        *sum = vmlaq_n_s32(*sum, dot32::<D>(w0, w1, ap), scale);
                    }
                }
                for r in 0..N {
                    let da = read_f32(ab.add(r * stride));
                    acc[r] = vfmaq_n_f32(acc[r], vcvtq_f32_s32(isum[r]), d * da);
                }
            }
            for r in 0..N {
                out[r] = vaddvq_f32(acc[r]);
            }
        }
    }
}
