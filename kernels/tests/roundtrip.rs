//! Properties of the scalar reference kernels, through the public format table:
//!
//! - quantize then dequantize stays within a per-type error bound (derived below);
//! - the scalar dot kernels equal the dot product of the dequantized operands, up to the
//!   rounding of their f32 block arithmetic;
//! - a call with several activation rows equals one call per row, bit for bit, with any
//!   alignment;
//! - edge cases: all-zero blocks, f16-max and subnormal scales, the sign conventions of Q8_K
//!   and the rounding of ties.
//!
//! Dequantization itself is checked bit for bit against the reference in the root crate's
//! `tests/dequant_golden.rs`; here it serves as the oracle for the other kernels.

use half::f16;
use openweight_kernels::blocks::{BlockQ4_0, BlockQ6K, BlockQ8K, BlockQ8_0, BlockQ8_1, QK_K};
use openweight_kernels::dispatch;
use openweight_kernels::{format, GgmlType, MAX_ACT_ROWS};
use proptest::prelude::*;

/// Half an ulp of an f16 relative to a normal value: the rounding error of a stored scale.
const F16_REL: f32 = 1.0 / 2048.0;
/// Half the smallest f16 subnormal: the absolute rounding error of a subnormal scale.
const F16_SUB_ABS: f32 = 1.0 / 33_554_432.0; // 2^-25
/// Slack for the f32 arithmetic of quantizer and dequantizer (relative to the block amax).
const F32_SLACK: f32 = 1e-6;

/// Types with a quantizer in the format table.
const QUANTIZABLE: [GgmlType; 10] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q8_1,
    GgmlType::Q8_K,
];

/// The round-trip bound for one block: `|x - dequant(quant(x))| <= rel * amax + abs`, with
/// `amax` the block's largest magnitude.
///
/// Derivations (d = step, u = F16_REL, |q| the largest code magnitude):
/// - Q8_0/Q8_1: d = amax/127, q = round(x/d): error <= d/2 + |q| * (f16 error of d)
///   = amax * (0.5/127 + u), plus 127 * 2^-25 when d is subnormal.
/// - Q8_K: d is an f32, so error <= d/2 = amax * 0.5/127.
/// - Q4_0: d = max/-8; codes cover -8d..7d, so the far end (x = -max) is clamped from
///   8d to 7d: error <= |d| * (1 + 8u) = amax * (1 + 8u)/8. Q5_0 likewise with 16.
/// - Q4_1: d = (max - min)/15 <= 2 amax/15, error <= d/2 + 15 * (error of d) + (error of m)
///   <= amax * (1/15 + 2u + u). Q5_1 likewise with 31.
/// - F16: relative rounding u; BF16: 2^-8; F32: exact.
fn roundtrip_bound(ty: GgmlType) -> (f32, f32) {
    let u = F16_REL;
    match ty {
        GgmlType::F32 => (0.0, 0.0),
        GgmlType::F16 => (u, F16_SUB_ABS),
        GgmlType::BF16 => (1.0 / 256.0, 0.0),
        GgmlType::Q8_0 | GgmlType::Q8_1 => (0.5 / 127.0 + u, 127.0 * F16_SUB_ABS),
        GgmlType::Q8_K => (0.5 / 127.0, 0.0),
        GgmlType::Q4_0 => ((1.0 + 8.0 * u) / 8.0, 8.0 * F16_SUB_ABS),
        GgmlType::Q5_0 => ((1.0 + 16.0 * u) / 16.0, 16.0 * F16_SUB_ABS),
        GgmlType::Q4_1 => (1.0 / 15.0 + 3.0 * u, 16.0 * F16_SUB_ABS),
        GgmlType::Q5_1 => (1.0 / 31.0 + 3.0 * u, 32.0 * F16_SUB_ABS),
        other => panic!("no quantizer for {other}"),
    }
}

fn quantize(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let f = format(ty);
    let mut out = vec![0u8; f.row_bytes(x.len())];
    (f.quantize.expect("quantizable type"))(x, &mut out);
    out
}

fn dequantize(ty: GgmlType, bytes: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![0f32; n];
    (format(ty).dequantize)(bytes, &mut out);
    out
}

/// A row of `n` values: uniform in (-1, 1) times `2^exp`, with some exact zeros and some
/// blocks of one magnitude class smaller, so blocks differ in scale.
fn row(n: usize, exp: i32) -> impl Strategy<Value = Vec<f32>> {
    let scale = 2f32.powi(exp);
    prop::collection::vec(
        prop_oneof![
            8 => (-1.0f32..1.0).prop_map(move |v| v * scale),
            1 => (-1.0f32..1.0).prop_map(move |v| v * scale / 64.0),
            1 => Just(0.0f32),
        ],
        n,
    )
}

/// A finite, normal f16 in ±[2^lo, 2^hi).
fn normal_f16(rng: &mut u64, lo: i32, hi: i32) -> f16 {
    let r = next(rng);
    let exp = lo + (r % (hi - lo) as u64) as i32;
    let mant = 1.0 + ((r >> 16) % 1024) as f32 / 1024.0;
    let sign = if (r >> 40) & 1 == 1 { -1.0 } else { 1.0 };
    f16::from_f32(sign * mant * 2f32.powi(exp))
}

/// splitmix64.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Byte offsets of the f16 scale fields in one block (the rest of a block is any bytes).
fn f16_fields(ty: GgmlType) -> &'static [usize] {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 | GgmlType::IQ4_NL => &[0],
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        GgmlType::IQ4_XS => &[0],
        GgmlType::Q2_K => &[80, 82],
        GgmlType::Q3_K => &[108],
        GgmlType::Q6_K => &[208],
        _ => &[],
    }
}

/// A weight row of `n` elements of `ty`: random bytes with finite normal f16 scales for the
/// block types, random values through the quantizer for F32/F16/BF16.
fn weight_row(ty: GgmlType, n: usize, seed: u64) -> Vec<u8> {
    let mut rng = seed;
    let f = format(ty);
    if f.block_elems == 1 {
        let x: Vec<f32> = (0..n)
            .map(|_| (next(&mut rng) >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
            .collect();
        return quantize(ty, &x);
    }
    let mut bytes: Vec<u8> = (0..f.row_bytes(n)).map(|_| next(&mut rng) as u8).collect();
    for block in bytes.chunks_exact_mut(f.block_bytes) {
        for &off in f16_fields(ty) {
            let d = normal_f16(&mut rng, -12, 2);
            block[off..off + 2].copy_from_slice(&d.to_bits().to_le_bytes());
        }
    }
    bytes
}

/// Weight types (every type with a dot kernel).
fn weight_types() -> Vec<GgmlType> {
    GgmlType::ALL
        .into_iter()
        .filter(|&t| !matches!(t, GgmlType::Q8_1 | GgmlType::Q8_K))
        .collect()
}

/// The largest magnitude of the "mins" part of a block's values (0 for types without one):
/// the dot kernels round the scaled part and the mins part separately.
fn min_part(ty: GgmlType, block: &[u8]) -> f32 {
    let h = |off: usize| f16::from_bits(u16::from_le_bytes([block[off], block[off + 1]])).to_f32();
    match ty {
        GgmlType::Q4_1 | GgmlType::Q5_1 => h(2).abs(),
        GgmlType::Q4_K | GgmlType::Q5_K => h(2).abs() * 63.0,
        GgmlType::Q2_K => h(82).abs() * 15.0,
        _ => 0.0,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn quantize_dequantize_round_trip_is_within_the_type_bound(
        exp in -6i32..14,
        x in (1usize..=2).prop_flat_map(|k| row(QK_K * k, 0)),
    ) {
        let x: Vec<f32> = x.iter().map(|v| v * 2f32.powi(exp)).collect();
        for ty in QUANTIZABLE {
            let f = format(ty);
            let back = dequantize(ty, &quantize(ty, &x), x.len());
            let (rel, abs) = roundtrip_bound(ty);
            let block = f.block_elems.max(32);
            for (b, (xs, ys)) in x.chunks(block).zip(back.chunks(block)).enumerate() {
                let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
                let bound = rel * amax + abs + F32_SLACK * amax;
                for (i, (&v, &y)) in xs.iter().zip(ys).enumerate() {
                    prop_assert!(
                        (v - y).abs() <= bound,
                        "{ty}: block {b} element {i}: {v} came back as {y} (bound {bound})"
                    );
                }
            }
        }
    }

    #[test]
    fn scalar_dot_equals_the_dot_of_the_dequantized_operands(
        seed in any::<u64>(),
        exp in -4i32..8,
        x in (1usize..=2).prop_flat_map(|k| row(QK_K * k, 0)),
    ) {
        let n = x.len();
        let x: Vec<f32> = x.iter().map(|v| v * 2f32.powi(exp)).collect();
        for ty in weight_types() {
            let wf = format(ty);
            let act = wf.vec_dot_type;
            let w = weight_row(ty, n, seed);
            let a = quantize(act, &x);
            let w_deq = dequantize(ty, &w, n);
            let a_deq = dequantize(act, &a, n);
            let mut out = [0f32; 1];
            (dispatch::scalar().dot(ty).expect("weight type"))(&w, &a, a.len(), &mut out);

            let exact: f64 = w_deq.iter().zip(&a_deq).map(|(&p, &q)| f64::from(p) * f64::from(q)).sum();
            if wf.block_elems == 1 {
                // Float dots sum exact products in f64 in element order: the same number.
                prop_assert_eq!(out[0], exact as f32, "{} dot", ty);
                continue;
            }
            // Per block, the kernel rounds (d_w * d_a), isum, their product and (with mins)
            // the mins product and the difference; then the block sum is added to the row sum.
            // Each rounding is <= 2^-24 of a magnitude bounded by
            // (max |w| + 2 * mins part) * Σ|a| over the block, so with nb blocks the error is
            // at most (nb + 8) * 2^-24 times the sum of those magnitudes. Q4_1/Q5_1 also use
            // the activation's stored f16 block sum s = f16(d * Σq), which differs from
            // Σ dequant(a) by up to 2^-10 of Σ|a| (f16 rounding of d and of s) plus 2^-25
            // (when s is subnormal); we allow twice that.
            let nb = n / wf.block_elems;
            let mut magnitude = 0f64;
            let mut offset_err = 0f64;
            for ((wb, wv), av) in w
                .chunks_exact(wf.block_bytes)
                .zip(w_deq.chunks_exact(wf.block_elems))
                .zip(a_deq.chunks_exact(wf.block_elems))
            {
                let mins = f64::from(min_part(ty, wb));
                let wmax = wv.iter().fold(0f64, |m, &v| m.max(f64::from(v.abs())));
                let asum: f64 = av.iter().map(|&v| f64::from(v.abs())).sum();
                magnitude += (wmax + 2.0 * mins) * asum;
                if matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
                    offset_err += mins * (asum / 512.0 + f64::from(F16_SUB_ABS));
                }
            }
            let tol = (nb as f64 + 8.0) * 2f64.powi(-24) * magnitude + offset_err + 1e-30;
            prop_assert!(
                (f64::from(out[0]) - exact).abs() <= tol,
                "{ty}: dot {} vs dequantized {exact} (tolerance {tol})", out[0]
            );
        }
    }

    #[test]
    fn several_activation_rows_equal_one_call_per_row_at_any_alignment(
        seed in any::<u64>(),
        n_rows in 1usize..=MAX_ACT_ROWS,
        pad in 0usize..40,
        shift in 0usize..4,
        xs in prop::collection::vec(row(QK_K, 2), MAX_ACT_ROWS),
    ) {
        for ty in weight_types() {
            let wf = format(ty);
            let act = wf.vec_dot_type;
            let dot = dispatch::scalar().dot(ty).expect("weight type");
            let w = weight_row(ty, QK_K, seed);
            let rows: Vec<Vec<u8>> = xs[..n_rows].iter().map(|x| quantize(act, x)).collect();
            let row_bytes = rows[0].len() + pad;
            // Misalign both operands by `shift` bytes.
            let mut w_buf = vec![0u8; shift];
            w_buf.extend_from_slice(&w);
            let mut a_buf = vec![0xA5u8; shift + n_rows * row_bytes];
            for (r, q) in rows.iter().enumerate() {
                let start = shift + r * row_bytes;
                a_buf[start..start + q.len()].copy_from_slice(q);
            }
            let mut together = vec![0f32; n_rows];
            dot(&w_buf[shift..], &a_buf[shift..], row_bytes, &mut together);
            for (r, q) in rows.iter().enumerate() {
                let mut alone = [0f32; 1];
                dot(&w, q, q.len(), &mut alone);
                prop_assert_eq!(together[r].to_bits(), alone[0].to_bits(), "{} row {}", ty, r);
            }
        }
    }
}

#[test]
fn all_zero_rows_quantize_to_zero_and_come_back_as_zero() {
    let x = vec![0f32; 2 * QK_K];
    for ty in QUANTIZABLE {
        let back = dequantize(ty, &quantize(ty, &x), x.len());
        assert!(back.iter().all(|&v| v == 0.0), "{ty}");
    }
    let q8k: BlockQ8K = bytemuck::pod_read_unaligned(&quantize(GgmlType::Q8_K, &x[..QK_K]));
    assert_eq!(q8k.d, 0.0);
    assert!(q8k.qs.iter().all(|&q| q == 0) && q8k.bsums.iter().all(|&s| s == 0));
}

#[test]
fn zero_weights_give_a_zero_dot() {
    let x: Vec<f32> = (0..QK_K).map(|i| (i as f32 * 0.37).sin()).collect();
    for ty in weight_types() {
        let f = format(ty);
        let w = vec![0u8; f.row_bytes(QK_K)]; // every scale 0 (and every float 0)
        let a = quantize(f.vec_dot_type, &x);
        let mut out = [1f32; 1];
        (dispatch::scalar().dot(ty).expect("weight type"))(&w, &a, a.len(), &mut out);
        assert_eq!(out[0], 0.0, "{ty}");
    }
}

#[test]
fn q8_0_reaches_the_f16_maximum_scale_without_overflow() {
    // amax = 127 * 65504, so d = 65504 exactly, the largest finite f16.
    let mut x = vec![1000f32; 32];
    x[5] = -127.0 * 65504.0;
    let q = quantize(GgmlType::Q8_0, &x);
    let block: BlockQ8_0 = bytemuck::pod_read_unaligned(&q);
    assert_eq!(block.d.to_f32(), 65504.0);
    assert_eq!(block.qs[5], -127);
    let back = dequantize(GgmlType::Q8_0, &q, 32);
    assert_eq!(back[5], -127.0 * 65504.0);
    assert!(back.iter().all(|v| v.is_finite()));
}

#[test]
fn q4_0_with_a_subnormal_scale_keeps_its_values() {
    // max = -8 * 2^-20 gives d = 2^-20, an f16 subnormal (the smallest normal is 2^-14).
    let d = 2f32.powi(-20);
    let x: Vec<f32> = (0..32).map(|i| d * ((i % 16) as f32 - 8.0)).collect();
    let q = quantize(GgmlType::Q4_0, &x);
    let block: BlockQ4_0 = bytemuck::pod_read_unaligned(&q);
    assert!(
        !block.d.is_normal() && block.d.to_f32() != 0.0,
        "d is subnormal"
    );
    assert_eq!(
        dequantize(GgmlType::Q4_0, &q, 32),
        x,
        "multiples of a subnormal d are exact"
    );
}

#[test]
fn q6_k_with_f16_max_scale_and_extreme_codes_stays_finite() {
    let block = BlockQ6K {
        ql: [0; 128],
        qh: [0; 64],
        scales: [-128; 16],
        d: f16::MAX,
    };
    let back = dequantize(GgmlType::Q6_K, bytemuck::bytes_of(&block), QK_K);
    // q = 0 - 32, so x = (65504 * -128) * -32.
    assert!(back.iter().all(|&v| v == 65504.0 * 128.0 * 32.0));
}

#[test]
fn q8_k_of_an_all_negative_row_has_a_positive_d_and_codes_down_to_minus_127() {
    let x: Vec<f32> = (0..QK_K).map(|i| -1.0 - (i % 7) as f32).collect();
    let block: BlockQ8K = bytemuck::pod_read_unaligned(&quantize(GgmlType::Q8_K, &x));
    // max = -7, iscale = -127 / max > 0, d = 1 / iscale > 0.
    assert!(block.d > 0.0);
    assert!(block.qs.iter().all(|&q| (-127..0).contains(&q)));
    assert_eq!(
        block.qs[6], -127,
        "the value of largest magnitude gets -127"
    );
}

#[test]
fn q8_k_d_takes_the_opposite_sign_of_the_largest_magnitude() {
    let mut x = vec![-0.5f32; QK_K];
    x[3] = 2.0;
    let block: BlockQ8K = bytemuck::pod_read_unaligned(&quantize(GgmlType::Q8_K, &x));
    assert!(block.d < 0.0);
    assert_eq!(block.qs[3], -127);
    let back = dequantize(GgmlType::Q8_K, bytemuck::bytes_of(&block), QK_K);
    assert!((back[3] - 2.0).abs() <= 1e-6);
}

#[test]
fn q8_k_bsums_are_the_sums_of_each_16_codes() {
    let x: Vec<f32> = (0..QK_K)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
        .collect();
    let block: BlockQ8K = bytemuck::pod_read_unaligned(&quantize(GgmlType::Q8_K, &x));
    for (k, &s) in block.bsums.iter().enumerate() {
        let sum: i32 = block.qs[16 * k..16 * k + 16]
            .iter()
            .map(|&q| i32::from(q))
            .sum();
        assert_eq!(i32::from(s), sum, "bsums[{k}]");
    }
}

#[test]
fn q8_k_rounds_ties_to_even_like_the_reference_nearest_int() {
    // max = -127 makes iscale = 1, so the codes are the values rounded.
    let mut x = vec![0f32; QK_K];
    x[0] = -127.0;
    x[1] = 2.5;
    x[2] = 3.5;
    x[3] = -2.5;
    let block: BlockQ8K = bytemuck::pod_read_unaligned(&quantize(GgmlType::Q8_K, &x));
    assert_eq!(&block.qs[..4], &[-127, 2, 4, -2]);
}

#[test]
fn q8_0_rounds_ties_away_from_zero_like_the_reference_roundf() {
    // amax = 127 makes d = 1, so the codes are the values rounded.
    let mut x = vec![0f32; 32];
    x[0] = 127.0;
    x[1] = 2.5;
    x[2] = -2.5;
    x[3] = 3.5;
    let block: BlockQ8_0 = bytemuck::pod_read_unaligned(&quantize(GgmlType::Q8_0, &x));
    assert_eq!(&block.qs[..4], &[127, 3, -3, 4]);
}

#[test]
fn q8_1_stores_d_times_the_code_sum() {
    let x: Vec<f32> = (0..32).map(|i| i as f32 - 10.0).collect();
    let block: BlockQ8_1 = bytemuck::pod_read_unaligned(&quantize(GgmlType::Q8_1, &x));
    let d = 21.0f32 / 127.0;
    let sum: i32 = block.qs.iter().map(|&q| i32::from(q)).sum();
    assert_eq!(block.s, f16::from_f32(sum as f32 * d));
}

#[test]
fn q4_0_maps_the_signed_maximum_to_code_0_and_clamps_the_far_end_to_15() {
    let mut x = vec![0f32; 32];
    x[0] = -8.0; // the signed max: d = -8 / -8 = 1
    x[1] = 8.0; // (8 * 1 + 8.5) = 16.5 -> clamped to 15, i.e. 7
    let q = quantize(GgmlType::Q4_0, &x);
    let block: BlockQ4_0 = bytemuck::pod_read_unaligned(&q);
    assert_eq!(block.d.to_f32(), 1.0);
    assert_eq!((block.qs[0] & 0xF, block.qs[1] & 0xF), (0, 15));
    let back = dequantize(GgmlType::Q4_0, &q, 32);
    assert_eq!((back[0], back[1]), (-8.0, 7.0));
}

#[test]
fn quantizers_accept_non_finite_input_without_panicking() {
    let mut x: Vec<f32> = (0..QK_K).map(|i| i as f32).collect();
    x[1] = f32::NAN;
    x[40] = f32::INFINITY;
    x[77] = f32::NEG_INFINITY;
    x[99] = f32::from_bits(0x7FC0_1234); // a NaN with a payload
    for ty in QUANTIZABLE {
        let q = quantize(ty, &x);
        assert_eq!(q.len(), format(ty).row_bytes(QK_K), "{ty}");
    }
    // With an infinite maximum, Q8_K's iscale is 0: finite values and NaNs quantize to 0.
    let block: BlockQ8K = bytemuck::pod_read_unaligned(&quantize(GgmlType::Q8_K, &x));
    assert_eq!(block.qs[1], 0, "NaN");
    assert_eq!(block.qs[99], 0, "NaN with a payload");
    assert!(block.qs[2..40].iter().all(|&q| q == 0));
}
