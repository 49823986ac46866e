//! The 256-element super-block types: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K and IQ4_XS.
//!
//! Every weight type here pairs with Q8_K activations (`d: f32`, 256 `i8` quants and the
//! sums of each 16 quants in `bsums`). A dot product unpacks the weight super-block into 256
//! signed integers `q` plus integer sub-block scales (and mins), then per super-block:
//!
//! ```text
//! sumi = Σ_g scale_g * Σ_{i in g} q[i] * q_a[i]             (i32, exact)
//! summ = Σ_g min_g * (Σ of the activation bsums covering g)  (i32, exact; only Q2_K/Q4_K/Q5_K)
//! sum += (d_w * d_a) * sumi as f32                          (no mins)
//! sum += (d_w * d_a) * sumi as f32 - (dmin_w * d_a) * summ as f32   (with mins)
//! ```
//!
//! in `f32`, `sum` starting at `0.0`, super-blocks in order. The integer sums are exact, so a
//! SIMD kernel that computes them another way (e.g. unsigned Q6_K quants minus `32 * bsums`)
//! gets the same `sumi`/`summ`.

use half::f16;

use super::{dequantize_blocks, dot_blocks, isum};
use crate::blocks::{
    BlockIQ4XS, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K, IQ4NL_TABLE,
    K_SCALE_BYTES, QK_K,
};

// ---------------------------------------------------------------------------------------
// Unpacking: scales and quants in element order.
// ---------------------------------------------------------------------------------------

/// The 8 six-bit scales and 8 six-bit mins of a Q4_K/Q5_K super-block.
///
/// Scales/mins 0..4 are the low 6 bits of bytes 0..4 / 4..8; scales/mins 4..8 take their low
/// 4 bits from bytes 8..12 (scale: low nibble, min: high nibble) and their high 2 bits from the
/// top 2 bits of bytes 0..4 (scales) / 4..8 (mins).
pub(crate) fn q4k_scales_mins(b: &[u8; K_SCALE_BYTES]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut m = [0u8; 8];
    for i in 0..4 {
        sc[i] = b[i] & 63;
        m[i] = b[i + 4] & 63;
    }
    for i in 4..8 {
        sc[i] = (b[i + 4] & 0x0F) | ((b[i - 4] >> 6) << 4);
        m[i] = (b[i + 4] >> 4) | ((b[i] >> 6) << 4);
    }
    (sc, m)
}

/// The 16 six-bit scales of a Q3_K super-block, minus their bias of 32 (so in -32..=31).
///
/// For `k` in 0..4: scale `k` / `4+k` / `8+k` / `12+k` takes its low 4 bits from the low
/// nibble of `b[k]` / low nibble of `b[4+k]` / high nibble of `b[k]` / high nibble of
/// `b[4+k]`, and its high 2 bits from bits 0-1 / 2-3 / 4-5 / 6-7 of `b[8+k]`.
pub(crate) fn q3k_scales(b: &[u8; K_SCALE_BYTES]) -> [i8; 16] {
    let mut s = [0i8; 16];
    for k in 0..4 {
        let high = b[8 + k];
        let raw = [
            (b[k] & 0x0F) | ((high & 3) << 4),
            (b[4 + k] & 0x0F) | (((high >> 2) & 3) << 4),
            (b[k] >> 4) | (((high >> 4) & 3) << 4),
            (b[4 + k] >> 4) | (((high >> 6) & 3) << 4),
        ];
        for (slot, r) in raw.into_iter().enumerate() {
            s[4 * slot + k] = r as i8 - 32;
        }
    }
    s
}

/// The 2-bit quants (0..=3) shared by Q2_K and Q3_K: element `128h + 32j + l` is
/// `(qs[32h + l] >> 2j) & 3`.
fn two_bit_quants(qs: &[u8; QK_K / 4]) -> [i8; QK_K] {
    let mut q = [0i8; QK_K];
    for h in 0..2 {
        for j in 0..4 {
            for l in 0..32 {
                q[128 * h + 32 * j + l] = ((qs[32 * h + l] >> (2 * j)) & 3) as i8;
            }
        }
    }
    q
}

/// Q2_K quants in element order, 0..=3.
pub(crate) fn q2k_quants(b: &BlockQ2K) -> [i8; QK_K] {
    two_bit_quants(&b.qs)
}

/// Q3_K quants in element order, -4..=3: the 2 low bits minus 4 unless the element's bit
/// `4h + j` of `hmask[l]` is set.
pub(crate) fn q3k_quants(b: &BlockQ3K) -> [i8; QK_K] {
    let mut q = two_bit_quants(&b.qs);
    for h in 0..2 {
        for j in 0..4 {
            for l in 0..32 {
                if (b.hmask[l] >> (4 * h + j)) & 1 == 0 {
                    q[128 * h + 32 * j + l] -= 4;
                }
            }
        }
    }
    q
}

/// Q4_K quants in element order, 0..=15: chunk `c` of 64 elements reads `qs[32c..32c + 32]`,
/// low nibbles first.
pub(crate) fn q4k_quants(qs: &[u8; QK_K / 2]) -> [i8; QK_K] {
    let mut q = [0i8; QK_K];
    for c in 0..4 {
        for l in 0..32 {
            let b = qs[32 * c + l];
            q[64 * c + l] = (b & 0x0F) as i8;
            q[64 * c + 32 + l] = (b >> 4) as i8;
        }
    }
    q
}

/// Q5_K quants in element order, 0..=31: the Q4_K nibbles plus bit `2c` (low-nibble element)
/// or `2c + 1` (high-nibble element) of `qh[l]` as the fifth bit.
pub(crate) fn q5k_quants(b: &BlockQ5K) -> [i8; QK_K] {
    let mut q = q4k_quants(&b.qs);
    for c in 0..4 {
        for l in 0..32 {
            q[64 * c + l] |= (((b.qh[l] >> (2 * c)) & 1) << 4) as i8;
            q[64 * c + 32 + l] |= (((b.qh[l] >> (2 * c + 1)) & 1) << 4) as i8;
        }
    }
    q
}

/// Q6_K quants in element order, minus 32 (so in -32..=31). Half `h` reads `ql[64h..]` and
/// `qh[32h..]`; element `l + 32s` (s in 0..4, l in 0..32) of the half has low bits from
/// `ql[l + 32(s & 1)]` (low nibble for s < 2, high nibble otherwise) and high bits
/// `(qh[l] >> 2s) & 3`.
pub(crate) fn q6k_quants(b: &BlockQ6K) -> [i8; QK_K] {
    let mut q = [0i8; QK_K];
    for h in 0..2 {
        let ql = &b.ql[64 * h..64 * h + 64];
        let qh = &b.qh[32 * h..32 * h + 32];
        for l in 0..32 {
            let low = [ql[l] & 0x0F, ql[l + 32] & 0x0F, ql[l] >> 4, ql[l + 32] >> 4];
            for (s, lo) in low.into_iter().enumerate() {
                let hi = (qh[l] >> (2 * s)) & 3;
                q[128 * h + 32 * s + l] = (lo | (hi << 4)) as i8 - 32;
            }
        }
    }
    q
}

/// The 8 six-bit sub-block scales of an IQ4_XS super-block, minus their bias of 32:
/// `ls_i = ((scales_l[i/2] >> 4(i%2)) & 0xF) | (((scales_h >> 2i) & 3) << 4)`.
pub(crate) fn iq4xs_scales(b: &BlockIQ4XS) -> [i8; 8] {
    let mut s = [0i8; 8];
    for (i, s) in s.iter_mut().enumerate() {
        let low = (b.scales_l[i / 2] >> (4 * (i % 2))) & 0x0F;
        let high = ((b.scales_h >> (2 * i)) & 3) as u8;
        *s = (low | (high << 4)) as i8 - 32;
    }
    s
}

/// IQ4_XS values `IQ4NL_TABLE[nibble]` in element order: sub-block `i` reads
/// `qs[16i..16i + 16]`, low nibbles are its elements 0..16, high nibbles 16..32.
pub(crate) fn iq4xs_values(b: &BlockIQ4XS) -> [i8; QK_K] {
    let mut v = [0i8; QK_K];
    for i in 0..8 {
        for j in 0..16 {
            let byte = b.qs[16 * i + j];
            v[32 * i + j] = IQ4NL_TABLE[usize::from(byte & 0x0F)];
            v[32 * i + 16 + j] = IQ4NL_TABLE[usize::from(byte >> 4)];
        }
    }
    v
}

// ---------------------------------------------------------------------------------------
// Dequantization (bit-exact with the reference: note where products are rounded).
// ---------------------------------------------------------------------------------------

/// Q2_K -> f32. Per 16 elements with scale byte `sc`: `dl = d * (sc & 15) as f32`,
/// `ml = dmin * (sc >> 4) as f32`, then `x = dl * q as f32 - ml` (no FMA).
pub(crate) fn dequantize_q2_k(src: &[u8], dst: &mut [f32]) {
    dequantize_blocks(src, dst, |b: &BlockQ2K, y: &mut [f32; QK_K]| {
        let (d, dmin) = (b.d.to_f32(), b.dmin.to_f32());
        let q = q2k_quants(b);
        for (g, &sc) in b.scales.iter().enumerate() {
            let dl = d * f32::from(sc & 0x0F);
            let ml = dmin * f32::from(sc >> 4);
            for i in 16 * g..16 * g + 16 {
                y[i] = dl * f32::from(q[i]) - ml;
            }
        }
    });
}

/// Q3_K -> f32. Per 16 elements: `dl = d * (s - 32) as f32`, then `x = dl * q as f32`.
pub(crate) fn dequantize_q3_k(src: &[u8], dst: &mut [f32]) {
    dequantize_blocks(src, dst, |b: &BlockQ3K, y: &mut [f32; QK_K]| {
        let d = b.d.to_f32();
        let q = q3k_quants(b);
        for (g, s) in q3k_scales(&b.scales).into_iter().enumerate() {
            let dl = d * f32::from(s);
            for i in 16 * g..16 * g + 16 {
                y[i] = dl * f32::from(q[i]);
            }
        }
    });
}

/// Q4_K -> f32. Per 32 elements: `d1 = d * sc as f32`, `m1 = dmin * m as f32`, then
/// `x = d1 * q as f32 - m1` (no FMA).
pub(crate) fn dequantize_q4_k(src: &[u8], dst: &mut [f32]) {
    dequantize_blocks(src, dst, |b: &BlockQ4K, y: &mut [f32; QK_K]| {
        let q = q4k_quants(&b.qs);
        dequantize_scaled_with_mins(b.d, b.dmin, &b.scales, &q, y);
    });
}

/// Q5_K -> f32, with the same arithmetic as Q4_K.
pub(crate) fn dequantize_q5_k(src: &[u8], dst: &mut [f32]) {
    dequantize_blocks(src, dst, |b: &BlockQ5K, y: &mut [f32; QK_K]| {
        let q = q5k_quants(b);
        dequantize_scaled_with_mins(b.d, b.dmin, &b.scales, &q, y);
    });
}

/// The Q4_K/Q5_K value formula, given the unpacked quants.
fn dequantize_scaled_with_mins(
    d: f16,
    dmin: f16,
    scales: &[u8; K_SCALE_BYTES],
    q: &[i8; QK_K],
    y: &mut [f32; QK_K],
) {
    let (d, dmin) = (d.to_f32(), dmin.to_f32());
    let (sc, m) = q4k_scales_mins(scales);
    for sub in 0..8 {
        let d1 = d * f32::from(sc[sub]);
        let m1 = dmin * f32::from(m[sub]);
        for i in 32 * sub..32 * sub + 32 {
            y[i] = d1 * f32::from(q[i]) - m1;
        }
    }
}

/// Q6_K -> f32: `x = (d * scale as f32) * (q - 32) as f32`, scale the signed byte of the
/// element's 16-group.
pub(crate) fn dequantize_q6_k(src: &[u8], dst: &mut [f32]) {
    dequantize_blocks(src, dst, |b: &BlockQ6K, y: &mut [f32; QK_K]| {
        let d = b.d.to_f32();
        let q = q6k_quants(b);
        for (g, &sc) in b.scales.iter().enumerate() {
            let ds = d * f32::from(sc);
            for i in 16 * g..16 * g + 16 {
                y[i] = ds * f32::from(q[i]);
            }
        }
    });
}

/// Q8_K -> f32: `x = d * q as f32` (`d` is an f32 and may be negative).
pub(crate) fn dequantize_q8_k(src: &[u8], dst: &mut [f32]) {
    dequantize_blocks(src, dst, |b: &BlockQ8K, y: &mut [f32; QK_K]| {
        for (y, &q) in y.iter_mut().zip(&b.qs) {
            *y = b.d * f32::from(q);
        }
    });
}

/// IQ4_XS -> f32. Per 32 elements: `dl = d * (ls - 32) as f32`, then
/// `x = dl * IQ4NL_TABLE[nibble] as f32`.
pub(crate) fn dequantize_iq4_xs(src: &[u8], dst: &mut [f32]) {
    dequantize_blocks(src, dst, |b: &BlockIQ4XS, y: &mut [f32; QK_K]| {
        let d = b.d.to_f32();
        let v = iq4xs_values(b);
        for (sub, ls) in iq4xs_scales(b).into_iter().enumerate() {
            let dl = d * f32::from(ls);
            for i in 32 * sub..32 * sub + 32 {
                y[i] = dl * f32::from(v[i]);
            }
        }
    });
}

// ---------------------------------------------------------------------------------------
// Dot products with Q8_K activations.
// ---------------------------------------------------------------------------------------

/// A weight super-block unpacked for the dot product: 256 signed values, one integer scale
/// (and min) per group of `group` elements (16 or 32), and the two f32 super-block scales.
struct Unpacked {
    d: f32,
    /// `None` for types without mins (Q3_K, Q6_K, IQ4_XS).
    dmin: Option<f32>,
    q: [i8; QK_K],
    group: usize,
    scales: [i32; 16],
    mins: [i32; 16],
}

impl Unpacked {
    /// A super-block whose group scales are `scales` (16 or 8 of them) and which has no mins.
    fn new(d: f16, q: [i8; QK_K], scales: &[i8]) -> Unpacked {
        let group = QK_K / scales.len();
        let mut s = [0i32; 16];
        for (s, &v) in s.iter_mut().zip(scales) {
            *s = i32::from(v);
        }
        Unpacked {
            d: d.to_f32(),
            dmin: None,
            q,
            group,
            scales: s,
            mins: [0; 16],
        }
    }

    /// Q4_K/Q5_K: 8 groups of 32 with 6-bit scales and mins.
    fn with_q4k_mins(d: f16, dmin: f16, packed: &[u8; K_SCALE_BYTES], q: [i8; QK_K]) -> Unpacked {
        let (sc, m) = q4k_scales_mins(packed);
        let mut scales = [0i32; 16];
        let mut mins = [0i32; 16];
        for i in 0..8 {
            scales[i] = i32::from(sc[i]);
            mins[i] = i32::from(m[i]);
        }
        Unpacked {
            d: d.to_f32(),
            dmin: Some(dmin.to_f32()),
            q,
            group: 32,
            scales,
            mins,
        }
    }
}

/// One super-block's contribution (see the module docs for the exact arithmetic).
fn unpacked_x_q8_k(w: &Unpacked, a: &BlockQ8K) -> f32 {
    let n_groups = QK_K / w.group;
    let mut sumi = 0i32;
    for g in 0..n_groups {
        let range = g * w.group..(g + 1) * w.group;
        sumi += w.scales[g] * isum(&w.q[range.clone()], &a.qs[range]);
    }
    let scaled = (w.d * a.d) * sumi as f32;
    match w.dmin {
        None => scaled,
        Some(dmin) => {
            let sums_per_group = w.group / 16;
            let mut summ = 0i32;
            for g in 0..n_groups {
                let bsums = &a.bsums[g * sums_per_group..(g + 1) * sums_per_group];
                summ += w.mins[g] * bsums.iter().map(|&s| i32::from(s)).sum::<i32>();
            }
            scaled - (dmin * a.d) * summ as f32
        }
    }
}

/// Q2_K x Q8_K: 16 groups of 16, scale `sc & 15`, min `sc >> 4`, q in 0..=3;
/// `sum += (d * d_a) * sumi as f32 - (dmin * d_a) * summ as f32` with
/// `summ = Σ_k min_k * bsums[k]`.
pub(crate) fn dot_q2_k_q8_k(w: &[u8], acts: &[u8], act_row_bytes: usize, out: &mut [f32]) {
    dot_blocks(
        w,
        acts,
        act_row_bytes,
        out,
        |b: &BlockQ2K| {
            let sc = b.scales.map(|s| (s & 0x0F) as i8);
            let mut u = Unpacked::new(b.d, q2k_quants(b), &sc);
            u.dmin = Some(b.dmin.to_f32());
            for (m, &s) in u.mins.iter_mut().zip(&b.scales) {
                *m = i32::from(s >> 4);
            }
            u
        },
        unpacked_x_q8_k,
    );
}

/// Q3_K x Q8_K: 16 groups of 16, scale `s - 32`, q in -4..=3;
/// `sum += (d * d_a) * sumi as f32`.
pub(crate) fn dot_q3_k_q8_k(w: &[u8], acts: &[u8], act_row_bytes: usize, out: &mut [f32]) {
    dot_blocks(
        w,
        acts,
        act_row_bytes,
        out,
        |b: &BlockQ3K| Unpacked::new(b.d, q3k_quants(b), &q3k_scales(&b.scales)),
        unpacked_x_q8_k,
    );
}

/// Q4_K x Q8_K: 8 groups of 32, q in 0..=15;
/// `sum += (d * d_a) * sumi as f32 - (dmin * d_a) * summ as f32` with
/// `summ = Σ_i m_i * (bsums[2i] + bsums[2i + 1])`.
pub(crate) fn dot_q4_k_q8_k(w: &[u8], acts: &[u8], act_row_bytes: usize, out: &mut [f32]) {
    dot_blocks(
        w,
        acts,
        act_row_bytes,
        out,
        |b: &BlockQ4K| Unpacked::with_q4k_mins(b.d, b.dmin, &b.scales, q4k_quants(&b.qs)),
        unpacked_x_q8_k,
    );
}

/// Q5_K x Q8_K: as Q4_K with q in 0..=31.
pub(crate) fn dot_q5_k_q8_k(w: &[u8], acts: &[u8], act_row_bytes: usize, out: &mut [f32]) {
    dot_blocks(
        w,
        acts,
        act_row_bytes,
        out,
        |b: &BlockQ5K| Unpacked::with_q4k_mins(b.d, b.dmin, &b.scales, q5k_quants(b)),
        unpacked_x_q8_k,
    );
}

/// Q6_K x Q8_K: 16 groups of 16, signed 8-bit scales, q - 32 in -32..=31;
/// `sum += (d * d_a) * sumi as f32`.
pub(crate) fn dot_q6_k_q8_k(w: &[u8], acts: &[u8], act_row_bytes: usize, out: &mut [f32]) {
    dot_blocks(
        w,
        acts,
        act_row_bytes,
        out,
        |b: &BlockQ6K| Unpacked::new(b.d, q6k_quants(b), &b.scales),
        unpacked_x_q8_k,
    );
}

/// IQ4_XS x Q8_K: 8 groups of 32, scale `ls - 32`, values `IQ4NL_TABLE[nibble]`;
/// `sum += (d * d_a) * sumi as f32`.
pub(crate) fn dot_iq4_xs_q8_k(w: &[u8], acts: &[u8], act_row_bytes: usize, out: &mut [f32]) {
    dot_blocks(
        w,
        acts,
        act_row_bytes,
        out,
        |b: &BlockIQ4XS| Unpacked::new(b.d, iq4xs_values(b), &iq4xs_scales(b)),
        unpacked_x_q8_k,
    );
}

#[cfg(test)]
mod tests {
    use bytemuck::Zeroable;

    use super::*;

    #[test]
    fn q4k_scales_0_to_3_are_the_low_6_bits_of_bytes_0_to_7() {
        let mut b = [0u8; 12];
        b[0] = 0b1100_0101; // scale 0 = 5, top bits feed scale 4
        b[4] = 0b0100_0111; // min 0 = 7, top bits feed min 4
        b[8] = 0x9A; // scale 4 low = 0xA, min 4 low = 0x9
        let (sc, m) = q4k_scales_mins(&b);
        assert_eq!((sc[0], m[0]), (5, 7));
        assert_eq!(sc[4], 0xA | (0b11 << 4));
        assert_eq!(m[4], 0x9 | (0b01 << 4));
    }

    #[test]
    fn q3k_scales_take_high_bits_from_bytes_8_to_11() {
        let mut b = [0u8; 12];
        b[1] = 0x3F; // s[1] low = 0xF, s[9] low = 0x3
        b[9] = 0b00_10_00_11; // s[1] high = 3, s[5] high = 0, s[9] high = 2
        let s = q3k_scales(&b);
        assert_eq!(s[1], (0xF | (3 << 4)) - 32);
        assert_eq!(s[9], (0x3 | (2 << 4)) - 32);
        assert_eq!(s[5], -32);
        assert_eq!(s[0], -32);
    }

    #[test]
    fn q3k_high_bit_set_means_no_minus_4() {
        let mut b = BlockQ3K::zeroed();
        b.hmask[3] = 1 << 5; // half 1, shift group 1, l = 3 -> element 128 + 32 + 3
        let q = q3k_quants(&b);
        assert_eq!(q[163], 0);
        assert_eq!(q.iter().filter(|&&v| v == -4).count(), 255);
    }

    #[test]
    fn q6k_element_layout_matches_the_table() {
        let mut b = BlockQ6K::zeroed();
        b.ql[64 + 32 + 2] = 0x50; // half 1: element l + 32 gets 0x0, l + 96 gets 0x5 (l = 2)
        b.qh[32 + 2] = 0b11_00_00_00; // half 1, l = 2: high bits 3 for element l + 96
        let q = q6k_quants(&b);
        assert_eq!(q[128 + 96 + 2], (5 | (3 << 4)) - 32);
        assert_eq!(q[128 + 32 + 2], -32);
    }

    #[test]
    fn iq4xs_scale_combines_low_nibble_and_two_high_bits() {
        let mut b = BlockIQ4XS::zeroed();
        b.scales_l[1] = 0x70; // sub-block 3 low nibble = 7
        b.scales_h = 0b10 << 6; // sub-block 3 high bits = 2
        assert_eq!(iq4xs_scales(&b)[3], (7 | (2 << 4)) - 32);
    }
}
