//! The 32-element "legacy" blocks: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1 and IQ4_NL.
//!
//! Element order in every 4-bit block: byte `j` (0..16) holds element `j` in its low nibble
//! and element `j + 16` in its high nibble. Q5 types take the fifth bit of element `j` from
//! bit `j` of `qh` read as a little-endian `u32`.
//!
//! Dot products pair Q4_0, Q5_0, Q8_0 and IQ4_NL with Q8_0 activations and Q4_1, Q5_1 with
//! Q8_1. Per block, `isum = Σ q_w * q_a` is exact in `i32`; the block's contribution is then
//! computed in `f32` as documented on each kernel and added to the row sum (which starts at
//! `0.0`), blocks in order.

use super::{dequantize_blocks, dot_blocks, isum};
use crate::blocks::{
    BlockIQ4NL, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1, IQ4NL_TABLE, QK,
};

/// The 32 nibbles of a 4-bit block in element order (low nibbles first, then high).
#[inline]
pub(crate) fn nibbles(qs: &[u8; QK / 2]) -> [u8; QK] {
    let mut q = [0u8; QK];
    for (j, &b) in qs.iter().enumerate() {
        q[j] = b & 0x0F;
        q[j + QK / 2] = b >> 4;
    }
    q
}

/// The 32 five-bit values (0..=31) of a Q5_0/Q5_1 block in element order.
#[inline]
pub(crate) fn five_bit_values(qh: &[u8; 4], qs: &[u8; QK / 2]) -> [u8; QK] {
    let h = u32::from_le_bytes(*qh);
    let mut q = nibbles(qs);
    for (j, v) in q.iter_mut().enumerate() {
        *v |= (((h >> j) & 1) as u8) << 4;
    }
    q
}

/// `q - offset` for every value (the results fit `i8`: q <= 31 and offset <= 16).
#[inline]
fn centered(q: [u8; QK], offset: i8) -> [i8; QK] {
    q.map(|v| v as i8 - offset)
}

/// `IQ4NL_TABLE[q]` for every nibble.
#[inline]
fn iq4nl_values(qs: &[u8; QK / 2]) -> [i8; QK] {
    nibbles(qs).map(|n| IQ4NL_TABLE[usize::from(n)])
}

// ---------------------------------------------------------------------------------------
// Dequantization (bit-exact with the reference).
// ---------------------------------------------------------------------------------------

/// Q4_0 -> f32: `x = (q - 8) as f32 * d`.
pub(crate) fn dequantize_q4_0(src: &[u8], dst: &mut [f32]) {
    dequantize_blocks(src, dst, |b: &BlockQ4_0, y: &mut [f32; QK]| {
        let d = b.d.to_f32();
        for (y, q) in y.iter_mut().zip(centered(nibbles(&b.qs), 8)) {
            *y = f32::from(q) * d;
        }
    });
}

/// Q4_1 -> f32: `x = q as f32 * d + m` (a product, rounded, then a sum, rounded; no FMA).
pub(crate) fn dequantize_q4_1(src: &[u8], dst: &mut [f32]) {
    dequantize_blocks(src, dst, |b: &BlockQ4_1, y: &mut [f32; QK]| {
        let (d, m) = (b.d.to_f32(), b.m.to_f32());
        for (y, q) in y.iter_mut().zip(nibbles(&b.qs)) {
            *y = f32::from(q) * d + m;
        }
    });
}

/// Q5_0 -> f32: `x = (q - 16) as f32 * d`.
pub(crate) fn dequantize_q5_0(src: &[u8], dst: &mut [f32]) {
    dequantize_blocks(src, dst, |b: &BlockQ5_0, y: &mut [f32; QK]| {
        let d = b.d.to_f32();
        for (y, q) in y
            .iter_mut()
            .zip(centered(five_bit_values(&b.qh, &b.qs), 16))
        {
            *y = f32::from(q) * d;
        }
    });
}

/// Q5_1 -> f32: `x = q as f32 * d + m` (no FMA).
pub(crate) fn dequantize_q5_1(src: &[u8], dst: &mut [f32]) {
    dequantize_blocks(src, dst, |b: &BlockQ5_1, y: &mut [f32; QK]| {
        let (d, m) = (b.d.to_f32(), b.m.to_f32());
        for (y, q) in y.iter_mut().zip(five_bit_values(&b.qh, &b.qs)) {
            *y = f32::from(q) * d + m;
        }
    });
}

/// Q8_0 -> f32: `x = q as f32 * d`.
pub(crate) fn dequantize_q8_0(src: &[u8], dst: &mut [f32]) {
    dequantize_blocks(src, dst, |b: &BlockQ8_0, y: &mut [f32; QK]| {
        let d = b.d.to_f32();
        for (y, &q) in y.iter_mut().zip(&b.qs) {
            *y = f32::from(q) * d;
        }
    });
}

/// Q8_1 -> f32: `x = q as f32 * d` (the block sum `s` is not needed).
pub(crate) fn dequantize_q8_1(src: &[u8], dst: &mut [f32]) {
    dequantize_blocks(src, dst, |b: &BlockQ8_1, y: &mut [f32; QK]| {
        let d = b.d.to_f32();
        for (y, &q) in y.iter_mut().zip(&b.qs) {
            *y = f32::from(q) * d;
        }
    });
}

/// IQ4_NL -> f32: `x = d * IQ4NL_TABLE[q] as f32`.
pub(crate) fn dequantize_iq4_nl(src: &[u8], dst: &mut [f32]) {
    dequantize_blocks(src, dst, |b: &BlockIQ4NL, y: &mut [f32; QK]| {
        let d = b.d.to_f32();
        for (y, v) in y.iter_mut().zip(iq4nl_values(&b.qs)) {
            *y = d * f32::from(v);
        }
    });
}

// ---------------------------------------------------------------------------------------
// Dot products.
// ---------------------------------------------------------------------------------------

/// A weight block reduced to its scale and 32 signed integer values.
struct Signed {
    d: f32,
    q: [i8; QK],
}

/// A weight block with a minimum: `x = d * q + m`, q unsigned (kept in `i8`, <= 31).
struct WithMin {
    d: f32,
    m: f32,
    q: [i8; QK],
}

/// Contribution of a signed weight block against a Q8_0 block:
/// `(d_w * d_a) * isum as f32`.
#[inline]
fn signed_x_q8_0(w: &Signed, a: &BlockQ8_0) -> f32 {
    (w.d * a.d.to_f32()) * isum(&w.q, &a.qs) as f32
}

/// Contribution of a weight block with a minimum against a Q8_1 block:
/// `(d_w * d_a) * isum as f32 + m_w * s_a`, where `s_a = d_a * Σ q_a` as stored (f16).
#[inline]
fn with_min_x_q8_1(w: &WithMin, a: &BlockQ8_1) -> f32 {
    (w.d * a.d.to_f32()) * isum(&w.q, &a.qs) as f32 + w.m * a.s.to_f32()
}

/// Q4_0 x Q8_0. Per block: `isum = Σ (q_w - 8) * q_a` (i32), then
/// `sum += (d_w * d_a) * isum as f32` (f32, `sum` from 0.0, blocks in order).
pub(crate) fn dot_q4_0_q8_0(w: &[u8], acts: &[u8], act_row_bytes: usize, out: &mut [f32]) {
    dot_blocks(
        w,
        acts,
        act_row_bytes,
        out,
        |b: &BlockQ4_0| Signed {
            d: b.d.to_f32(),
            q: centered(nibbles(&b.qs), 8),
        },
        signed_x_q8_0,
    );
}

/// Q4_1 x Q8_1. Per block: `isum = Σ q_w * q_a` (i32, q_w in 0..=15), then
/// `sum += (d_w * d_a) * isum as f32 + m_w * s_a` (f32, left to right, blocks in order).
pub(crate) fn dot_q4_1_q8_1(w: &[u8], acts: &[u8], act_row_bytes: usize, out: &mut [f32]) {
    dot_blocks(
        w,
        acts,
        act_row_bytes,
        out,
        |b: &BlockQ4_1| WithMin {
            d: b.d.to_f32(),
            m: b.m.to_f32(),
            q: centered(nibbles(&b.qs), 0),
        },
        with_min_x_q8_1,
    );
}

/// Q5_0 x Q8_0. Per block: `isum = Σ (q_w - 16) * q_a` (i32), then
/// `sum += (d_w * d_a) * isum as f32`.
pub(crate) fn dot_q5_0_q8_0(w: &[u8], acts: &[u8], act_row_bytes: usize, out: &mut [f32]) {
    dot_blocks(
        w,
        acts,
        act_row_bytes,
        out,
        |b: &BlockQ5_0| Signed {
            d: b.d.to_f32(),
            q: centered(five_bit_values(&b.qh, &b.qs), 16),
        },
        signed_x_q8_0,
    );
}

/// Q5_1 x Q8_1. Per block: `isum = Σ q_w * q_a` (i32, q_w in 0..=31), then
/// `sum += (d_w * d_a) * isum as f32 + m_w * s_a`.
pub(crate) fn dot_q5_1_q8_1(w: &[u8], acts: &[u8], act_row_bytes: usize, out: &mut [f32]) {
    dot_blocks(
        w,
        acts,
        act_row_bytes,
        out,
        |b: &BlockQ5_1| WithMin {
            d: b.d.to_f32(),
            m: b.m.to_f32(),
            q: centered(five_bit_values(&b.qh, &b.qs), 0),
        },
        with_min_x_q8_1,
    );
}

/// Q8_0 x Q8_0. Per block: `isum = Σ q_w * q_a` (i32), then `sum += (d_w * d_a) * isum as f32`.
pub(crate) fn dot_q8_0_q8_0(w: &[u8], acts: &[u8], act_row_bytes: usize, out: &mut [f32]) {
    dot_blocks(
        w,
        acts,
        act_row_bytes,
        out,
        |b: &BlockQ8_0| Signed {
            d: b.d.to_f32(),
            q: b.qs,
        },
        signed_x_q8_0,
    );
}

/// IQ4_NL x Q8_0. Per block: `isum = Σ IQ4NL_TABLE[q_w] * q_a` (i32), then
/// `sum += (d_w * d_a) * isum as f32`.
pub(crate) fn dot_iq4_nl_q8_0(w: &[u8], acts: &[u8], act_row_bytes: usize, out: &mut [f32]) {
    dot_blocks(
        w,
        acts,
        act_row_bytes,
        out,
        |b: &BlockIQ4NL| Signed {
            d: b.d.to_f32(),
            q: iq4nl_values(&b.qs),
        },
        signed_x_q8_0,
    );
}

#[cfg(test)]
mod tests {
    use half::f16;

    use super::*;

    #[test]
    fn low_nibbles_are_the_first_half_of_the_block() {
        let mut qs = [0u8; 16];
        qs[0] = 0x21; // element 0 = 1, element 16 = 2
        qs[15] = 0x43; // element 15 = 3, element 31 = 4
        let q = nibbles(&qs);
        assert_eq!((q[0], q[16], q[15], q[31]), (1, 2, 3, 4));
        assert_eq!(q.iter().map(|&v| u32::from(v)).sum::<u32>(), 10);
    }

    #[test]
    fn q5_fifth_bit_of_element_j_is_bit_j_of_little_endian_qh() {
        // bit 0 (element 0), bit 16 (element 16), bit 31 (element 31).
        let qh = (1u32 | (1 << 16) | (1 << 31)).to_le_bytes();
        let q = five_bit_values(&qh, &[0u8; 16]);
        for (j, &v) in q.iter().enumerate() {
            let expect = if j == 0 || j == 16 || j == 31 { 16 } else { 0 };
            assert_eq!(v, expect, "element {j}");
        }
    }

    #[test]
    fn q4_0_dequantizes_to_d_times_q_minus_8() {
        let block = BlockQ4_0 {
            d: f16::from_f32(0.5),
            qs: [0xF0; 16],
        };
        let mut y = [0f32; 32];
        dequantize_q4_0(bytemuck::bytes_of(&block), &mut y);
        assert!(
            y[..16].iter().all(|&v| v == -4.0),
            "low nibbles 0 -> (0 - 8) * 0.5"
        );
        assert!(
            y[16..].iter().all(|&v| v == 3.5),
            "high nibbles 15 -> (15 - 8) * 0.5"
        );
    }

    #[test]
    fn subnormal_f16_scales_are_not_flushed_to_zero() {
        let d = f16::from_bits(0x0001); // the smallest positive subnormal, 2^-24
        let block = BlockQ8_0 { d, qs: [1; 32] };
        let mut y = [0f32; 32];
        dequantize_q8_0(bytemuck::bytes_of(&block), &mut y);
        assert!(y.iter().all(|&v| v == 2f32.powi(-24)));
    }

    #[test]
    fn dequantization_accepts_misaligned_input() {
        let block = BlockQ4_1 {
            d: f16::from_f32(1.0),
            m: f16::from_f32(-2.0),
            qs: [0x31; 16],
        };
        let mut bytes = vec![0u8; 1];
        bytes.extend_from_slice(bytemuck::bytes_of(&block));
        let mut y = [0f32; 32];
        dequantize_q4_1(&bytes[1..], &mut y);
        assert_eq!((y[0], y[16]), (-1.0, 1.0));
    }

    #[test]
    fn q4_1_dot_adds_the_minimum_times_the_activation_block_sum() {
        // Weights all q = 0 with m = 1: the dot is m * s_a regardless of the quants.
        let w = BlockQ4_1 {
            d: f16::from_f32(1.0),
            m: f16::from_f32(1.0),
            qs: [0; 16],
        };
        let a = BlockQ8_1 {
            d: f16::from_f32(0.25),
            s: f16::from_f32(8.0),
            qs: [1; 32],
        };
        let mut out = [0f32; 1];
        dot_q4_1_q8_1(bytemuck::bytes_of(&w), bytemuck::bytes_of(&a), 36, &mut out);
        assert_eq!(out[0], 8.0);
    }
}
