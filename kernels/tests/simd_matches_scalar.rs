//! The SIMD kernels chosen by `dispatch::best()` agree with the scalar reference
//! (`dispatch::scalar()`) for every weight type, every activation-row count 1..=8, rows of
//! 1, 2 and many blocks, and blocks with extreme scales (f16 max, smallest normal,
//! subnormal, zero), all-zero blocks and all-ones bytes (all-max nibbles).
//!
//! Architecture-neutral: on x86_64 `best()` is the AVX2 set, on aarch64 the NEON set; on a
//! CPU without either, `best()` is the scalar set and these tests compare it with itself
//! (and say so loudly).
//!
//! Tolerance. Both sides compute the same exact integer block sums (or the same f32
//! products for float types); they differ only in how the f32 per-block terms are grouped
//! and rounded. The rounding error of such a sum is bounded by a small multiple of
//! f32 epsilon times the sum of the *magnitudes of the terms*, not of the result, which may
//! cancel to near zero. For types with a minimum or an offset the terms are the scale part
//! and the min part separately (`d·sc·q` and `dmin·m`), each of which is bounded by a few
//! times the largest |dequantized weight| of its block. So the measure is
//! `Σ_i |a_i| · max_{j in block(i)} |w_j|` (computed in f64 from the scalar dequantizers),
//! and the accepted difference is `1e-5` of it (plus one f32 subnormal step per element, for
//! results that underflow into the subnormal range). For float types a block is one element,
//! which makes the measure the usual `Σ |w_i·a_i|`.

use openweight_kernels::dispatch;
use openweight_kernels::{format, GgmlType, MAX_ACT_ROWS};
use proptest::prelude::*;

/// Every type that can be a weight, i.e. has a dot kernel.
const WEIGHT_TYPES: [GgmlType; 15] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
];

/// Relative tolerance, against the magnitude measure described in the module docs.
const REL_TOL: f64 = 1e-5;

/// Byte offsets of the f16 scale fields inside one block of a quantized type.
fn f16_fields(ty: GgmlType) -> &'static [usize] {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 | GgmlType::IQ4_NL => &[0],
        GgmlType::IQ4_XS => &[0],
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        GgmlType::Q2_K => &[80, 82],
        GgmlType::Q3_K => &[108],
        GgmlType::Q6_K => &[208],
        other => panic!("{other} is not a quantized weight type"),
    }
}

/// How a block's bytes are filled before its scale fields are fixed.
#[derive(Clone, Copy, Debug)]
enum Fill {
    /// Random bytes: every bit pattern is a valid quant for every type.
    Random,
    /// All zero bytes.
    Zero,
    /// All 0xFF bytes: every nibble and 2/3/6-bit field at its maximum.
    AllOnes,
}

/// What a block's scale fields (or a float element) are set to.
#[derive(Clone, Copy, Debug)]
enum Scale {
    /// Random finite value.
    Random,
    /// The largest magnitude (f16: 65504).
    Max,
    /// The smallest normal magnitude.
    MinNormal,
    /// A subnormal value.
    Subnormal,
    /// Zero.
    Zero,
}

/// An f16 bit pattern of the given kind; `r` supplies the random bits (and sign).
fn f16_bits(kind: Scale, r: u16) -> u16 {
    let sign = r & 0x8000;
    match kind {
        // Exponent 31 is Inf/NaN: clear its top bit to keep the value finite.
        Scale::Random if r & 0x7C00 == 0x7C00 => r & !0x4000,
        Scale::Random => r,
        Scale::Max => sign | 0x7BFF,
        Scale::MinNormal => sign | 0x0400,
        Scale::Subnormal => sign | (r & 0x03FF).max(1),
        Scale::Zero => 0,
    }
}

/// An f32 of the given kind for F32/BF16 weights. Magnitudes stay below 2^100 so that
/// products with activations (|a| ≤ 1e3) and their sums stay finite.
fn f32_value(kind: Scale, r: u32) -> f32 {
    let sign = r & 0x8000_0000;
    let mantissa = r & 0x007F_FFFF;
    let bits = match kind {
        Scale::Random => sign | ((127 - 32 + (r >> 23) % 64) << 23) | mantissa,
        Scale::Max => sign | ((127 + 100) << 23) | 0x007F_FFFF,
        Scale::MinNormal => sign | (1 << 23),
        Scale::Subnormal => sign | mantissa.max(1),
        Scale::Zero => 0,
    };
    f32::from_bits(bits)
}

/// Builds one weight row of `n_blocks` blocks of `ty` from random bytes and per-block
/// fill/scale choices.
fn make_weights(ty: GgmlType, n_blocks: usize, random: &[u8], blocks: &[(Fill, Scale)]) -> Vec<u8> {
    let bb = format(ty).block_bytes;
    let mut w = random[..n_blocks * bb].to_vec();
    for (b, &(fill, scale)) in blocks.iter().enumerate().take(n_blocks) {
        let block = &mut w[b * bb..(b + 1) * bb];
        match fill {
            Fill::Random => {}
            Fill::Zero => block.fill(0),
            Fill::AllOnes => block.fill(0xFF),
        }
        match ty {
            GgmlType::F32 => {
                let r = u32::from_le_bytes(random[b * 4..b * 4 + 4].try_into().unwrap());
                let v = if matches!(fill, Fill::Zero) {
                    0.0
                } else {
                    f32_value(scale, r)
                };
                block.copy_from_slice(&v.to_le_bytes());
            }
            GgmlType::BF16 => {
                let r = u32::from_le_bytes(random[b * 2..b * 2 + 4].try_into().unwrap());
                let v = if matches!(fill, Fill::Zero) {
                    0.0
                } else {
                    f32_value(scale, r)
                };
                block.copy_from_slice(&((v.to_bits() >> 16) as u16).to_le_bytes());
            }
            GgmlType::F16 => {
                let r = u16::from_le_bytes([block[0], block[1]]);
                let kind = if matches!(fill, Fill::Zero) {
                    Scale::Zero
                } else {
                    scale
                };
                block.copy_from_slice(&f16_bits(kind, r).to_le_bytes());
            }
            _ => {
                for &off in f16_fields(ty) {
                    let r = u16::from_le_bytes([block[off], block[off + 1]]);
                    block[off..off + 2].copy_from_slice(&f16_bits(scale, r).to_le_bytes());
                }
            }
        }
    }
    w
}

/// One generated comparison.
#[derive(Debug)]
struct Case {
    n_blocks: usize,
    n_rows: usize,
    /// Extra bytes after each activation row (the stride is larger than the row).
    row_padding: usize,
    random: Vec<u8>,
    blocks: Vec<(Fill, Scale)>,
    /// Activations before quantization, `n_rows` rows of `n_blocks * block_elems`.
    x: Vec<f32>,
}

fn fill_strategy() -> impl Strategy<Value = Fill> {
    prop_oneof![6 => Just(Fill::Random), 1 => Just(Fill::Zero), 1 => Just(Fill::AllOnes)]
}

fn scale_strategy() -> impl Strategy<Value = Scale> {
    prop_oneof![
        6 => Just(Scale::Random),
        1 => Just(Scale::Max),
        1 => Just(Scale::MinNormal),
        1 => Just(Scale::Subnormal),
        1 => Just(Scale::Zero),
    ]
}

/// Activation values: uniform in [-1, 1] times a per-row magnitude, sometimes all zero.
fn act_row_strategy(n: usize) -> impl Strategy<Value = Vec<f32>> {
    let magnitude = prop_oneof![Just(0.0f32), Just(1e-3f32), Just(1.0f32), Just(1e3f32)];
    (magnitude, prop::collection::vec(-1.0f32..=1.0, n))
        .prop_map(|(m, v)| v.into_iter().map(|x| x * m).collect())
}

fn case_strategy(ty: GgmlType) -> impl Strategy<Value = Case> {
    let f = format(ty);
    let (bb, be) = (f.block_bytes, f.block_elems);
    // Float types have one element per block: "many" must also exercise the 8- and
    // 16-element SIMD steps and their tails.
    // Legacy types walk groups of 8, then 4, then single blocks: up to 20 covers every mix.
    let many = match be {
        1 => 3..=100usize,
        32 => 3..=20usize,
        _ => 3..=6usize,
    };
    let n_blocks = prop_oneof![Just(1usize), Just(2usize), many];
    (
        n_blocks,
        1..=MAX_ACT_ROWS,
        prop_oneof![4 => Just(0usize), 1 => 1..=40usize],
    )
        .prop_flat_map(move |(n_blocks, n_rows, row_padding)| {
            let n = n_blocks * be;
            (
                // Four spare bytes so F32/BF16 can take 4 random bytes per element.
                prop::collection::vec(any::<u8>(), n_blocks * bb + 4),
                prop::collection::vec((fill_strategy(), scale_strategy()), n_blocks),
                prop::collection::vec(act_row_strategy(n), n_rows),
            )
                .prop_map(move |(random, blocks, rows)| Case {
                    n_blocks,
                    n_rows,
                    row_padding,
                    random,
                    blocks,
                    x: rows.concat(),
                })
        })
}

/// Says loudly when there is no SIMD kernel set to compare (once per test binary is
/// enough, but every test calls it so a filtered run still shows it).
fn note_if_scalar() {
    if dispatch::best().name() == "scalar" {
        eprintln!(
            "NOTE: dispatch::best() is the scalar set on this machine (no SIMD features, or \
             OPENWEIGHT_KERNELS=scalar): these tests compare the scalar kernels with \
             themselves and check nothing about SIMD code."
        );
    }
}

/// Runs both kernel sets on `case` and checks they agree within the tolerance.
fn check(ty: GgmlType, case: &Case) -> Result<(), TestCaseError> {
    let wf = format(ty);
    let af = format(wf.vec_dot_type);
    let n = case.n_blocks * wf.block_elems;
    let w = make_weights(ty, case.n_blocks, &case.random, &case.blocks);

    let a_row_bytes = af.row_bytes(n);
    let stride = a_row_bytes + case.row_padding;
    let mut acts = vec![0xA5u8; case.n_rows * stride];
    let quantize = dispatch::scalar()
        .quantize(af.ty)
        .unwrap_or_else(|| panic!("no scalar quantizer for {}", af.ty));
    for r in 0..case.n_rows {
        quantize(
            &case.x[r * n..(r + 1) * n],
            &mut acts[r * stride..r * stride + a_row_bytes],
        );
    }

    let mut want = vec![f32::NAN; case.n_rows];
    let mut got = vec![f32::NAN; case.n_rows];
    (dispatch::scalar().dot(ty).expect("scalar dot"))(&w, &acts, stride, &mut want);
    (dispatch::best().dot(ty).expect("best dot"))(&w, &acts, stride, &mut got);

    let mut w_deq = vec![0f32; n];
    (wf.dequantize)(&w, &mut w_deq);
    let block_max: Vec<f64> = w_deq
        .chunks(wf.block_elems)
        .map(|b| b.iter().fold(0f64, |m, &v| m.max(f64::from(v.abs()))))
        .collect();
    let mut a_deq = vec![0f32; n];
    for r in 0..case.n_rows {
        (af.dequantize)(&acts[r * stride..r * stride + a_row_bytes], &mut a_deq);
        let measure: f64 = a_deq
            .iter()
            .enumerate()
            .map(|(i, &a)| f64::from(a.abs()) * block_max[i / wf.block_elems])
            .sum();
        let diff = (f64::from(got[r]) - f64::from(want[r])).abs();
        // Below f32's normal range each rounding has an absolute error of up to one
        // subnormal step, whatever the magnitudes: allow one per element.
        let subnormal_floor = n as f64 * f64::from(f32::from_bits(1));
        prop_assert!(
            want[r].is_finite() && got[r].is_finite() && diff <= REL_TOL * measure + subnormal_floor,
            "{ty} ({}), row {r} of {}: best {} vs scalar {}, |diff| {diff:e} > {REL_TOL:e} · {measure:e}",
            dispatch::best().name(),
            case.n_rows,
            got[r],
            want[r],
        );
    }
    Ok(())
}

macro_rules! type_tests {
    ($($name:ident => $ty:expr,)*) => {
        proptest! {
            $(
                #[test]
                fn $name(case in case_strategy($ty)) {
                    note_if_scalar();
                    check($ty, &case)?;
                }
            )*
        }
    };
}

type_tests! {
    f32_best_matches_scalar => GgmlType::F32,
    f16_best_matches_scalar => GgmlType::F16,
    bf16_best_matches_scalar => GgmlType::BF16,
    q4_0_best_matches_scalar => GgmlType::Q4_0,
    q4_1_best_matches_scalar => GgmlType::Q4_1,
    q5_0_best_matches_scalar => GgmlType::Q5_0,
    q5_1_best_matches_scalar => GgmlType::Q5_1,
    q8_0_best_matches_scalar => GgmlType::Q8_0,
    q2_k_best_matches_scalar => GgmlType::Q2_K,
    q3_k_best_matches_scalar => GgmlType::Q3_K,
    q4_k_best_matches_scalar => GgmlType::Q4_K,
    q5_k_best_matches_scalar => GgmlType::Q5_K,
    q6_k_best_matches_scalar => GgmlType::Q6_K,
    iq4_nl_best_matches_scalar => GgmlType::IQ4_NL,
    iq4_xs_best_matches_scalar => GgmlType::IQ4_XS,
}

#[test]
fn every_weight_type_has_a_dot_kernel_in_both_sets() {
    for ty in WEIGHT_TYPES {
        assert!(
            dispatch::scalar().dot(ty).is_some(),
            "scalar set lacks a {ty} dot kernel"
        );
        assert!(
            dispatch::best().dot(ty).is_some(),
            "best set lacks a {ty} dot kernel"
        );
    }
}

#[test]
fn best_is_the_simd_set_when_the_cpu_supports_it() {
    let name = dispatch::best().name();
    eprintln!("dispatch::best() = {name}");
    if std::env::var("OPENWEIGHT_KERNELS").as_deref() == Ok("scalar") {
        assert_eq!(
            name, "scalar",
            "OPENWEIGHT_KERNELS=scalar must force the scalar set"
        );
        eprintln!("NOTE: OPENWEIGHT_KERNELS=scalar is set, SIMD selection not checked");
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        let simd = std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c");
        let vnni = std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512vnni");
        let capped = std::env::var("OPENWEIGHT_KERNELS").as_deref() == Ok("avx2");
        if simd && vnni && !capped {
            assert_eq!(name, "avx512-vnni");
        } else if simd {
            assert_eq!(name, "avx2");
        } else {
            eprintln!("NOTE: this x86_64 CPU lacks avx2/fma/f16c; best() is {name}");
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            assert!(name.starts_with("neon"), "expected a NEON set, got {name}");
        }
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    eprintln!("NOTE: no SIMD kernels exist for this architecture; best() is {name}");
}

/// One activation value: mostly ordinary, sometimes exact rounding ties, zeros of both
/// signs, subnormals, infinities, NaN or any bit pattern at all.
fn quant_input_value() -> impl Strategy<Value = f32> {
    prop_oneof![
        20 => -1.0f32..=1.0,
        4 => (-508i32..=508).prop_map(|k| k as f32 / 4.0),
        1 => Just(f32::NAN),
        1 => Just(f32::INFINITY),
        1 => Just(f32::NEG_INFINITY),
        1 => Just(0.0f32),
        1 => Just(-0.0f32),
        1 => any::<u32>().prop_map(|b| f32::from_bits(b & 0x807F_FFFF)),
        1 => any::<u32>().prop_map(f32::from_bits),
    ]
}

/// A row of `n` activation values, from one of several families of inputs.
fn quant_input_row(n: usize) -> impl Strategy<Value = Vec<f32>> {
    prop_oneof![
        // Anything, special values included.
        prop::collection::vec(quant_input_value(), n),
        // Quarter-integers with ±127 present: scale 1, so x / d lands exactly on halves.
        (
            prop::collection::vec((-508i32..=508).prop_map(|k| k as f32 / 4.0), n),
            any::<bool>()
        )
            .prop_map(|(mut v, negative)| {
                v[0] = if negative { -127.0 } else { 127.0 };
                v
            }),
        // Subnormals only: the scale's inverse overflows.
        prop::collection::vec(
            any::<u32>().prop_map(|b| f32::from_bits(b & 0x807F_FFFF)),
            n
        ),
        // Ordinary values at a tiny or huge magnitude.
        (
            prop::collection::vec(-1.0f32..=1.0, n),
            prop_oneof![Just(1e-38f32), Just(1e-30f32), Just(1e30f32), Just(3e38f32)]
        )
            .prop_map(|(v, m)| v.into_iter().map(|x| x * m).collect()),
    ]
}

/// `best()`'s quantizer for `ty` writes exactly the scalar quantizer's bytes.
fn check_quantizer(ty: GgmlType, x: &[f32]) -> Result<(), TestCaseError> {
    let f = format(ty);
    let bytes = f.row_bytes(x.len());
    let mut want = vec![0x5Au8; bytes];
    let mut got = vec![0xA5u8; bytes];
    (dispatch::scalar().quantize(ty).expect("scalar quantizer"))(x, &mut want);
    (dispatch::best().quantize(ty).expect("best quantizer"))(x, &mut got);
    prop_assert!(
        want == got,
        "{ty} ({}): first differing byte at {:?}",
        dispatch::best().name(),
        want.iter()
            .zip(&got)
            .enumerate()
            .find(|(_, (a, b))| a != b)
            .map(|(i, (a, b))| format!("{i}: scalar {a:#04x}, best {b:#04x}"))
    );
    Ok(())
}

proptest! {
    #[test]
    fn q8_0_quantizer_is_bit_identical_to_scalar(
        x in (1usize..=4).prop_flat_map(|b| quant_input_row(32 * b))
    ) {
        note_if_scalar();
        check_quantizer(GgmlType::Q8_0, &x)?;
    }

    #[test]
    fn q8_1_quantizer_is_bit_identical_to_scalar(
        x in (1usize..=4).prop_flat_map(|b| quant_input_row(32 * b))
    ) {
        note_if_scalar();
        check_quantizer(GgmlType::Q8_1, &x)?;
    }

    #[test]
    fn q8_k_quantizer_is_bit_identical_to_scalar(
        x in (1usize..=2).prop_flat_map(|b| quant_input_row(256 * b))
    ) {
        note_if_scalar();
        check_quantizer(GgmlType::Q8_K, &x)?;
    }
}

/// `best()` gives activation row `r` of a multi-row call exactly (bit for bit) what it gives
/// that row alone, so a batch (prompt) and a decode step agree.
fn check_row_count_independence(ty: GgmlType, case: &Case) -> Result<(), TestCaseError> {
    let wf = format(ty);
    let af = format(wf.vec_dot_type);
    let n = case.n_blocks * wf.block_elems;
    let w = make_weights(ty, case.n_blocks, &case.random, &case.blocks);
    let a_row_bytes = af.row_bytes(n);
    let mut acts = vec![0u8; case.n_rows * a_row_bytes];
    let quantize = dispatch::scalar()
        .quantize(af.ty)
        .expect("scalar quantizer");
    for (r, row) in acts.chunks_mut(a_row_bytes).enumerate() {
        quantize(&case.x[r * n..(r + 1) * n], row);
    }
    let dot = dispatch::best().dot(ty).expect("best dot");
    let mut together = vec![f32::NAN; case.n_rows];
    dot(&w, &acts, a_row_bytes, &mut together);
    for (r, row) in acts.chunks(a_row_bytes).enumerate() {
        let mut alone = [f32::NAN];
        dot(&w, row, a_row_bytes, &mut alone);
        prop_assert!(
            alone[0].to_bits() == together[r].to_bits(),
            "{ty} ({}): row {r} of {} gives {} in the batch, {} alone",
            dispatch::best().name(),
            case.n_rows,
            together[r],
            alone[0]
        );
    }
    Ok(())
}

proptest! {
    #[test]
    fn best_gives_each_row_the_same_bits_whatever_the_row_count(
        (ty, case) in prop::sample::select(WEIGHT_TYPES.to_vec())
            .prop_flat_map(|ty| (Just(ty), case_strategy(ty)))
    ) {
        note_if_scalar();
        check_row_count_independence(ty, &case)?;
    }
}
