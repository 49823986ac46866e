//! f32 -> block quantizers, as the reference's plain ("_ref") quantizers do it.
//!
//! Activation formats (made once per matmul input row): Q8_0, Q8_1, Q8_K, F16, BF16, F32.
//! Weight formats with a simple one-pass quantizer: Q4_0, Q4_1, Q5_0, Q5_1 (and Q8_0).
//! The K-quant and IQ weight quantizers of the reference search for optimal scales; we only
//! read those types, never produce them.
//!
//! Rounding, as in the reference:
//! - Q8_0, Q8_1: `q = round(x * id)` with halves rounded away from zero (`f32::round`).
//! - Q8_K: `q = min(127, nearest(x * iscale))` with halves rounded to even (the reference's
//!   `nearest_int` adds 1.5 * 2^23, which rounds to even in the default float mode).
//! - Q4/Q5: `q = trunc(x * id + offset + 0.5)`, clamped to the top code.
//! - F16, BF16: round to nearest, ties to even (BF16 keeps NaNs quiet).
//!
//! Every quantizer is total: NaN and infinite inputs produce some valid block, never a panic.

use half::{bf16, f16};

use super::quantize_blocks;
use crate::blocks::{
    BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8K, BlockQ8_0, BlockQ8_1, QK, QK_K,
};

/// The value of largest magnitude, with its sign (the first one on ties), and its magnitude.
#[inline]
fn signed_max(x: &[f32]) -> (f32, f32) {
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    (max, amax)
}

/// The smallest and largest value (NaNs ignored; `(f32::MAX, -f32::MAX)` if all are NaN).
#[inline]
fn min_max(x: &[f32]) -> (f32, f32) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

/// `v` rounded to the nearest integer, halves away from zero (C `roundf`), then saturated to
/// `i8`. NaN gives 0.
///
/// Written with a truncating conversion rather than `f32::round`, which is a library call on
/// x86-64 without SSE4.1: `v - trunc(v)` is exact, so comparing it with ±0.5 decides exactly.
#[inline]
fn round_away_i8(v: f32) -> i8 {
    let v = v.clamp(-256.0, 256.0); // NaN stays NaN and converts to 0
    let t = v as i32;
    let frac = v - t as f32;
    (t + i32::from(frac >= 0.5) - i32::from(frac <= -0.5)).clamp(-128, 127) as i8
}

/// The reference's `nearest_int`: `v` rounded to the nearest integer, halves to even, by
/// adding 1.5 * 2^23 and reading the low mantissa bits (exact for |v| <= 2^22 - 1; larger
/// magnitudes are clamped first). NaN gives 0.
#[inline]
fn nearest_int(v: f32) -> i32 {
    if v.is_nan() {
        return 0; // a NaN's payload would otherwise leak into the mantissa bits
    }
    let v = v.clamp(-4_194_303.0, 4_194_303.0);
    ((v + 12_582_912.0).to_bits() & 0x007F_FFFF) as i32 - 0x0040_0000
}

/// `1 / d`, or 0 when `d` is 0.
#[inline]
fn inverse(d: f32) -> f32 {
    if d != 0.0 {
        1.0 / d
    } else {
        0.0
    }
}

/// Packs 32 four-bit codes (element order) into 16 bytes: byte `j` = `q[j] | q[j + 16] << 4`.
#[inline]
fn pack_nibbles(q: &[u8; QK]) -> [u8; QK / 2] {
    std::array::from_fn(|j| (q[j] & 0x0F) | ((q[j + QK / 2] & 0x0F) << 4))
}

/// Packs the fifth bits of 32 five-bit codes into `qh` (bit `j` = bit 4 of element `j`).
#[inline]
fn pack_fifth_bits(q: &[u8; QK]) -> [u8; 4] {
    let h = q
        .iter()
        .enumerate()
        .fold(0u32, |h, (j, &v)| h | (u32::from(v >> 4 & 1) << j));
    h.to_le_bytes()
}

/// F32 activations: a copy (little-endian).
pub(crate) fn quantize_f32(src: &[f32], dst: &mut [u8]) {
    assert_eq!(
        dst.len(),
        src.len() * 4,
        "quantize: F32 row needs 4 bytes per value"
    );
    for (d, v) in dst.chunks_exact_mut(4).zip(src) {
        d.copy_from_slice(&v.to_le_bytes());
    }
}

/// F16 activations: round to nearest even (values beyond ±65504 become infinite).
pub(crate) fn quantize_f16(src: &[f32], dst: &mut [u8]) {
    assert_eq!(
        dst.len(),
        src.len() * 2,
        "quantize: F16 row needs 2 bytes per value"
    );
    for (d, &v) in dst.chunks_exact_mut(2).zip(src) {
        d.copy_from_slice(&f16::from_f32(v).to_bits().to_le_bytes());
    }
}

/// BF16 activations: round to nearest even; NaNs stay (quiet) NaNs.
pub(crate) fn quantize_bf16(src: &[f32], dst: &mut [u8]) {
    assert_eq!(
        dst.len(),
        src.len() * 2,
        "quantize: BF16 row needs 2 bytes per value"
    );
    for (d, &v) in dst.chunks_exact_mut(2).zip(src) {
        d.copy_from_slice(&bf16::from_f32(v).to_bits().to_le_bytes());
    }
}

/// Q8_0: `d = amax / 127`, `id = 1 / d` (0 if d is 0), `q = round(x * id)` (halves away from
/// zero), `d` stored as f16.
pub(crate) fn quantize_q8_0(src: &[f32], dst: &mut [u8]) {
    quantize_blocks(src, dst, |x: &[f32; QK]| {
        let (_, amax) = signed_max(x);
        let d = amax / 127.0;
        let id = inverse(d);
        BlockQ8_0 {
            d: f16::from_f32(d),
            qs: x.map(|v| (v * id).round() as i8),
        }
    });
}

/// Q8_1: as Q8_0, plus `s = f16(Σq as f32 * d)` with the unrounded f32 `d`.
pub(crate) fn quantize_q8_1(src: &[f32], dst: &mut [u8]) {
    quantize_blocks(src, dst, |x: &[f32; QK]| {
        let (_, amax) = signed_max(x);
        let d = amax / 127.0;
        let id = inverse(d);
        let qs = x.map(|v| round_away_i8(v * id));
        let sum: i32 = qs.iter().map(|&q| i32::from(q)).sum();
        BlockQ8_1 {
            d: f16::from_f32(d),
            s: f16::from_f32(sum as f32 * d),
            qs,
        }
    });
}

/// Q8_K: with `max` the signed value of largest magnitude, `iscale = -127 / max`,
/// `q = min(127, nearest_even(iscale * x))`, `d = 1 / iscale` (so `d` has the opposite sign
/// of `max`), `bsums[k] = Σ q[16k..16k + 16]`. An all-zero block gives `d = 0`, `q = 0`.
pub(crate) fn quantize_q8_k(src: &[f32], dst: &mut [u8]) {
    quantize_blocks(src, dst, |x: &[f32; QK_K]| {
        let (max, amax) = signed_max(x);
        let mut block = BlockQ8K {
            d: 0.0,
            qs: [0; QK_K],
            bsums: [0; QK_K / 16],
        };
        if amax == 0.0 {
            return block;
        }
        let iscale = -127.0 / max;
        for (q, &v) in block.qs.iter_mut().zip(x) {
            *q = nearest_int(iscale * v).clamp(-128, 127) as i8;
        }
        for (s, group) in block.bsums.iter_mut().zip(block.qs.chunks_exact(16)) {
            *s = group.iter().map(|&q| i16::from(q)).sum();
        }
        block.d = 1.0 / iscale;
        block
    });
}

/// Q4_0: `d = max / -8` (signed max), `id = 1 / d`, `q = min(15, trunc(x * id + 8.5))`.
pub(crate) fn quantize_q4_0(src: &[f32], dst: &mut [u8]) {
    quantize_blocks(src, dst, |x: &[f32; QK]| {
        let (max, _) = signed_max(x);
        let d = max / -8.0;
        let id = inverse(d);
        let q = x.map(|v| ((v * id + 8.5) as u8).min(15));
        BlockQ4_0 {
            d: f16::from_f32(d),
            qs: pack_nibbles(&q),
        }
    });
}

/// Q4_1: `d = (max - min) / 15`, `m = min`, `q = min(15, trunc((x - min) * id + 0.5))`.
pub(crate) fn quantize_q4_1(src: &[f32], dst: &mut [u8]) {
    quantize_blocks(src, dst, |x: &[f32; QK]| {
        let (min, max) = min_max(x);
        let d = (max - min) / 15.0;
        let id = inverse(d);
        let q = x.map(|v| (((v - min) * id + 0.5) as u8).min(15));
        BlockQ4_1 {
            d: f16::from_f32(d),
            m: f16::from_f32(min),
            qs: pack_nibbles(&q),
        }
    });
}

/// Q5_0: `d = max / -16` (signed max), `id = 1 / d`, `q = min(31, trunc(x * id + 16.5))`.
pub(crate) fn quantize_q5_0(src: &[f32], dst: &mut [u8]) {
    quantize_blocks(src, dst, |x: &[f32; QK]| {
        let (max, _) = signed_max(x);
        let d = max / -16.0;
        let id = inverse(d);
        let q = x.map(|v| ((v * id + 16.5) as u8).min(31));
        BlockQ5_0 {
            d: f16::from_f32(d),
            qh: pack_fifth_bits(&q),
            qs: pack_nibbles(&q),
        }
    });
}

/// Q5_1: `d = (max - min) / 31`, `m = min`, `q = min(31, trunc((x - min) * id + 0.5))`.
pub(crate) fn quantize_q5_1(src: &[f32], dst: &mut [u8]) {
    quantize_blocks(src, dst, |x: &[f32; QK]| {
        let (min, max) = min_max(x);
        let d = (max - min) / 31.0;
        let id = inverse(d);
        let q = x.map(|v| (((v - min) * id + 0.5) as u8).min(31));
        BlockQ5_1 {
            d: f16::from_f32(d),
            m: f16::from_f32(min),
            qh: pack_fifth_bits(&q),
            qs: pack_nibbles(&q),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::super::legacy::nibbles;
    use super::*;

    /// Every half-integer in [-300, 300] and a strided walk over f32 bit patterns up to 300.
    fn sample_values() -> impl Iterator<Item = f32> {
        let halves = (-600..=600).map(|k| k as f32 * 0.5);
        let grid = (0u32..(1 << 24)).flat_map(|k| {
            let v = f32::from_bits(0x3000_0000 + k * 37);
            [v, -v]
        });
        halves.chain(grid.filter(|v| v.abs() <= 300.0))
    }

    #[test]
    fn round_away_i8_is_roundf_saturated() {
        for v in sample_values() {
            assert_eq!(round_away_i8(v), v.round() as i8, "{v}");
        }
        assert_eq!(round_away_i8(f32::NAN), 0);
        assert_eq!(round_away_i8(f32::INFINITY), 127);
        assert_eq!(round_away_i8(f32::NEG_INFINITY), -128);
    }

    #[test]
    fn nearest_int_rounds_halves_to_even() {
        for v in sample_values() {
            assert_eq!(nearest_int(v), v.round_ties_even() as i32, "{v}");
        }
        assert_eq!(nearest_int(f32::NAN), 0);
        assert_eq!(
            nearest_int(f32::from_bits(0xFFC0_1234)),
            0,
            "NaN payloads are ignored"
        );
    }

    #[test]
    fn pack_nibbles_inverts_nibbles() {
        let q: [u8; QK] = std::array::from_fn(|i| (i * 7 % 16) as u8);
        assert_eq!(nibbles(&pack_nibbles(&q)), q);
    }
}
