//! Properties of `matmul` for every weight type:
//! - a batch (GEMM, tiles of up to `MAX_ACT_ROWS` activation rows per kernel call) gives
//!   bit for bit the results of one call per activation row (GEMV) with the scalar
//!   kernels, and the same up to f32 summation order with the best (SIMD) kernels;
//! - the best kernels for this CPU agree with the scalar reference within quantization
//!   tolerance;
//! - the scalar matmul approximates the f32 product of the dequantized weights, with an
//!   error bounded by the activation quantization step.
//!
//! Weights are random valid blocks: random bytes with every scale field replaced by a
//! finite f16 (subnormals included); F32/F16/BF16 weights are random floats.

mod common;

use std::io::Write;
use std::mem::{offset_of, size_of};

use common::{pool, TILE_TYPES};
use half::{bf16, f16};
use openweight_kernels::blocks::*;
use openweight_kernels::dispatch::{self, ActTile, KernelSet, GEMM_TILE};
use openweight_kernels::matmul::{
    can_fuse, matmul_many_with, matmul_with, tile_table_lens, tile_tables, MatRef, MatmulScratch,
};
use openweight_kernels::{format, GgmlType};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// Cases per property and type: each case runs a few matmuls of up to 70 x 2048.
/// `PROPTEST_CASES` overrides the default of 48 (`kernels/test-aarch64.sh` lowers it: qemu
/// is slow).
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48)
}

/// A small deterministic generator, so a case is reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// A finite f16 of magnitude below 1, subnormals included, either sign.
    fn scale(&mut self) -> f16 {
        let bits = self.next_u64() as u16;
        let exponent = (bits >> 10) & 0x1F;
        f16::from_bits((bits & 0x83FF) | ((exponent % 15) << 10))
    }
}

/// Byte offsets of the f16 scale fields of one block, and the block size.
fn scale_fields(ty: GgmlType) -> (usize, Vec<usize>) {
    match ty {
        GgmlType::Q4_0 => (size_of::<BlockQ4_0>(), vec![offset_of!(BlockQ4_0, d)]),
        GgmlType::Q4_1 => (
            size_of::<BlockQ4_1>(),
            vec![offset_of!(BlockQ4_1, d), offset_of!(BlockQ4_1, m)],
        ),
        GgmlType::Q5_0 => (size_of::<BlockQ5_0>(), vec![offset_of!(BlockQ5_0, d)]),
        GgmlType::Q5_1 => (
            size_of::<BlockQ5_1>(),
            vec![offset_of!(BlockQ5_1, d), offset_of!(BlockQ5_1, m)],
        ),
        GgmlType::Q8_0 => (size_of::<BlockQ8_0>(), vec![offset_of!(BlockQ8_0, d)]),
        GgmlType::Q2_K => (
            size_of::<BlockQ2K>(),
            vec![offset_of!(BlockQ2K, d), offset_of!(BlockQ2K, dmin)],
        ),
        GgmlType::Q3_K => (size_of::<BlockQ3K>(), vec![offset_of!(BlockQ3K, d)]),
        GgmlType::Q4_K => (
            size_of::<BlockQ4K>(),
            vec![offset_of!(BlockQ4K, d), offset_of!(BlockQ4K, dmin)],
        ),
        GgmlType::Q5_K => (
            size_of::<BlockQ5K>(),
            vec![offset_of!(BlockQ5K, d), offset_of!(BlockQ5K, dmin)],
        ),
        GgmlType::Q6_K => (size_of::<BlockQ6K>(), vec![offset_of!(BlockQ6K, d)]),
        GgmlType::IQ4_NL => (size_of::<BlockIQ4NL>(), vec![offset_of!(BlockIQ4NL, d)]),
        GgmlType::IQ4_XS => (size_of::<BlockIQ4XS>(), vec![offset_of!(BlockIQ4XS, d)]),
        other => panic!("{other} has no quantized weight blocks"),
    }
}

/// `rows` random valid rows of `cols` elements of type `ty`.
fn random_weights(ty: GgmlType, rows: usize, cols: usize, rng: &mut Rng) -> Vec<u8> {
    let n = rows * cols;
    match ty {
        GgmlType::F32 => (0..n).flat_map(|_| rng.unit().to_le_bytes()).collect(),
        GgmlType::F16 => (0..n)
            .flat_map(|_| f16::from_f32(rng.unit()).to_le_bytes())
            .collect(),
        GgmlType::BF16 => (0..n)
            .flat_map(|_| bf16::from_f32(rng.unit()).to_le_bytes())
            .collect(),
        _ => {
            let (block_bytes, scales) = scale_fields(ty);
            assert_eq!(
                block_bytes,
                format(ty).block_bytes,
                "{ty}: struct and format disagree"
            );
            let n_blocks = n / format(ty).block_elems;
            let mut bytes: Vec<u8> = (0..n_blocks * block_bytes)
                .map(|_| rng.next_u64() as u8)
                .collect();
            for block in bytes.chunks_mut(block_bytes) {
                for &at in &scales {
                    block[at..at + 2].copy_from_slice(&rng.scale().to_le_bytes());
                }
            }
            bytes
        }
    }
}

/// Every type that can be a weight (all but the activation-only Q8_1 and Q8_K).
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

/// One random problem.
#[derive(Debug, Clone)]
struct Case {
    rows: usize,
    cols: usize,
    n_tokens: usize,
    n_threads: usize,
    seed: u64,
}

/// Odd and even row counts, 1 to 8 super-blocks of columns, 1 to 20 activation rows.
fn case() -> impl Strategy<Value = Case> {
    (
        1usize..=70,
        1usize..=8,
        1usize..=20,
        1usize..=3,
        any::<u64>(),
    )
        .prop_map(|(rows, super_blocks, n_tokens, n_threads, seed)| Case {
            rows,
            cols: super_blocks * 256,
            n_tokens,
            n_threads,
            seed,
        })
}

/// The weights (bytes) and activations of `case`.
fn problem(ty: GgmlType, case: &Case) -> (Vec<u8>, Vec<f32>) {
    let mut rng = Rng(case.seed);
    let w = random_weights(ty, case.rows, case.cols, &mut rng);
    let x = (0..case.n_tokens * case.cols)
        .map(|_| 4.0 * rng.unit())
        .collect();
    (w, x)
}

fn run(kernels: &KernelSet, ty: GgmlType, case: &Case, w: &[u8], x: &[f32]) -> Vec<f32> {
    let m = MatRef::new(ty, w, case.rows, case.cols);
    let mut y = vec![f32::NAN; case.rows * (x.len() / case.cols)];
    matmul_with(
        kernels,
        pool(case.n_threads),
        &m,
        x,
        &mut y,
        &mut MatmulScratch::default(),
    );
    y
}

/// Whether `kernels` can run `ty`; if not, says so loudly (the test then checks nothing).
fn runnable(kernels: &KernelSet, ty: GgmlType, property: &str) -> bool {
    let ok = kernels.dot(ty).is_some() && kernels.quantize(format(ty).vec_dot_type).is_some();
    if !ok {
        // Straight to stderr: the test harness captures `eprintln!` of passing tests.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {property} for {ty}: the {} kernel set has no dot kernel for {ty} or no \
             quantizer for its activation type",
            kernels.name()
        );
    }
    ok
}

/// With `bitwise`, a batch must reproduce the one-row results exactly (the scalar kernels
/// sum every row in the same order whatever the tile). Otherwise (SIMD kernels, which may
/// keep more partial sums for a lone row, e.g. two accumulators in AVX2 decode) the two may
/// differ by f32 re-association only: a few ulps of the sum of |terms| per block.
fn gemm_equals_repeated_gemv(
    kernels: &KernelSet,
    ty: GgmlType,
    case: Case,
    bitwise: bool,
) -> Result<(), TestCaseError> {
    let (w, x) = problem(ty, &case);
    let batched = run(kernels, ty, &case, &w, &x);
    let abs_products = if bitwise {
        vec![]
    } else {
        magnitudes(ty, &case, &w, &x).1
    };
    let n_partial_sums = (case.cols / 32 + 8) as f32;
    for t in 0..case.n_tokens {
        let single = run(
            kernels,
            ty,
            &case,
            &w,
            &x[t * case.cols..(t + 1) * case.cols],
        );
        for r in 0..case.rows {
            let (b, s) = (batched[t * case.rows + r], single[r]);
            if bitwise {
                prop_assert!(
                    b.to_bits() == s.to_bits(),
                    "{} {ty} token {t} row {r}: batch {b} vs alone {s}",
                    kernels.name()
                );
            } else {
                let tol = 2.0 * n_partial_sums * f32::EPSILON * abs_products[t * case.rows + r];
                prop_assert!(
                    (b - s).abs() <= tol + 1e-30,
                    "{} {ty} token {t} row {r}: batch {b} vs alone {s} (tolerance {tol})",
                    kernels.name()
                );
            }
        }
    }
    Ok(())
}

/// Per output: the sum of |w| (dequantized) and of |w * x| over the row.
fn magnitudes(ty: GgmlType, case: &Case, w: &[u8], x: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let wf = format(ty);
    let row_bytes = wf.row_bytes(case.cols);
    let mut dense = vec![0f32; case.rows * case.cols];
    for (dst, src) in dense.chunks_mut(case.cols).zip(w.chunks(row_bytes)) {
        (wf.dequantize)(src, dst);
    }
    let mut exact = vec![0f32; case.rows * case.n_tokens];
    let mut abs_products = vec![0f32; case.rows * case.n_tokens];
    let abs_w: Vec<f32> = dense
        .chunks(case.cols)
        .map(|r| r.iter().map(|v| v.abs()).sum())
        .collect();
    for t in 0..case.n_tokens {
        let xt = &x[t * case.cols..(t + 1) * case.cols];
        for r in 0..case.rows {
            let wr = &dense[r * case.cols..(r + 1) * case.cols];
            let (mut sum, mut abs) = (0f64, 0f64);
            for (a, b) in wr.iter().zip(xt) {
                sum += (*a as f64) * (*b as f64);
                abs += ((*a as f64) * (*b as f64)).abs();
            }
            exact[t * case.rows + r] = sum as f32;
            abs_products[t * case.rows + r] = abs as f32;
        }
    }
    (exact, abs_products, abs_w)
}

/// Largest |error| allowed between a quantized-activation dot product and another
/// computation of the same dot: `k` activation quantization steps (amax / 127) on every
/// weight, plus f32 rounding of the sum.
fn tolerance(abs_w_row: f32, abs_products: f32, amax_x: f32, k: f32) -> f32 {
    k * abs_w_row * amax_x / 127.0 + 1e-4 * abs_products + 1e-30
}

fn best_matches_scalar(ty: GgmlType, case: Case) -> Result<(), TestCaseError> {
    let (w, x) = problem(ty, &case);
    let reference = run(dispatch::scalar(), ty, &case, &w, &x);
    let fast = run(dispatch::best(), ty, &case, &w, &x);
    let (_, abs_products, abs_w) = magnitudes(ty, &case, &w, &x);
    for t in 0..case.n_tokens {
        let amax = x[t * case.cols..(t + 1) * case.cols]
            .iter()
            .fold(0f32, |m, v| m.max(v.abs()));
        for (r, &abs_w_row) in abs_w.iter().enumerate() {
            let i = t * case.rows + r;
            // The two sides may round a few activation quants differently (half to even vs
            // away from zero): allow two steps' worth on every weight.
            let tol = tolerance(abs_w_row, abs_products[i], amax, 2.0);
            prop_assert!(
                (fast[i] - reference[i]).abs() <= tol,
                "{} vs scalar, {ty} token {t} row {r}: {} vs {} (tolerance {tol})",
                dispatch::best().name(),
                fast[i],
                reference[i]
            );
        }
    }
    Ok(())
}

fn scalar_approximates_dequantized_product(ty: GgmlType, case: Case) -> Result<(), TestCaseError> {
    let (w, x) = problem(ty, &case);
    let got = run(dispatch::scalar(), ty, &case, &w, &x);
    let (exact, abs_products, abs_w) = magnitudes(ty, &case, &w, &x);
    for t in 0..case.n_tokens {
        let amax = x[t * case.cols..(t + 1) * case.cols]
            .iter()
            .fold(0f32, |m, v| m.max(v.abs()));
        for (r, &abs_w_row) in abs_w.iter().enumerate() {
            let i = t * case.rows + r;
            // Rounding to the activation grid moves each activation by at most half a step;
            // the f16 rounding of the block scale (and of Q8_1's sum) adds a little more.
            let tol = tolerance(abs_w_row, abs_products[i], amax, 1.0);
            prop_assert!(
                (got[i] - exact[i]).abs() <= tol,
                "scalar {ty} token {t} row {r}: {} vs f64 reference {} (tolerance {tol})",
                got[i],
                exact[i]
            );
        }
    }
    Ok(())
}

macro_rules! properties_per_type {
    ($($module:ident => $ty:expr,)*) => {$(
        mod $module {
            use super::*;

            #[test]
            fn gemm_equals_repeated_gemv_bitwise_with_scalar_kernels() {
                if !runnable(dispatch::scalar(), $ty, "gemm_equals_repeated_gemv") {
                    return;
                }
                proptest!(ProptestConfig::with_cases(cases()), |(c in case())| {
                    gemm_equals_repeated_gemv(dispatch::scalar(), $ty, c, true)?;
                });
            }

            #[test]
            fn gemm_equals_repeated_gemv_up_to_summation_order_with_best_kernels() {
                if !runnable(dispatch::best(), $ty, "gemm_equals_repeated_gemv") {
                    return;
                }
                proptest!(ProptestConfig::with_cases(cases()), |(c in case())| {
                    gemm_equals_repeated_gemv(dispatch::best(), $ty, c, false)?;
                });
            }

            #[test]
            fn best_kernels_match_scalar_within_tolerance() {
                if !runnable(dispatch::scalar(), $ty, "best_kernels_match_scalar")
                    || !runnable(dispatch::best(), $ty, "best_kernels_match_scalar")
                {
                    return;
                }
                proptest!(ProptestConfig::with_cases(cases()), |(c in case())| {
                    best_matches_scalar($ty, c)?;
                });
            }

            #[test]
            fn scalar_matmul_approximates_the_dequantized_product() {
                if !runnable(dispatch::scalar(), $ty, "scalar_approximates_dequantized_product") {
                    return;
                }
                proptest!(ProptestConfig::with_cases(cases()), |(c in case())| {
                    scalar_approximates_dequantized_product($ty, c)?;
                });
            }
        }
    )*};
}

properties_per_type! {
    f32_weights => GgmlType::F32,
    f16_weights => GgmlType::F16,
    bf16_weights => GgmlType::BF16,
    q4_0_weights => GgmlType::Q4_0,
    q4_1_weights => GgmlType::Q4_1,
    q5_0_weights => GgmlType::Q5_0,
    q5_1_weights => GgmlType::Q5_1,
    q8_0_weights => GgmlType::Q8_0,
    q2_k_weights => GgmlType::Q2_K,
    q3_k_weights => GgmlType::Q3_K,
    q4_k_weights => GgmlType::Q4_K,
    q5_k_weights => GgmlType::Q5_K,
    q6_k_weights => GgmlType::Q6_K,
    iq4_nl_weights => GgmlType::IQ4_NL,
    iq4_xs_weights => GgmlType::IQ4_XS,
}

#[test]
fn the_property_list_covers_every_weight_type() {
    let activation_only = [GgmlType::Q8_1, GgmlType::Q8_K];
    for ty in GgmlType::ALL {
        assert_eq!(
            WEIGHT_TYPES.contains(&ty),
            !activation_only.contains(&ty),
            "{ty} is missing from (or wrongly in) WEIGHT_TYPES"
        );
    }
}

/// Groups of weight types that share an activation format, as models mix them (Q5_0 q/k
/// with a Q8_0 v; Q4_K gate with Q6_K up).
const FUSABLE_GROUPS: [&[GgmlType]; 4] = [
    &[GgmlType::Q5_0, GgmlType::Q5_0, GgmlType::Q8_0],
    &[GgmlType::Q4_1, GgmlType::Q5_1],
    &[
        GgmlType::Q4_K,
        GgmlType::Q6_K,
        GgmlType::Q5_K,
        GgmlType::IQ4_XS,
    ],
    &[GgmlType::F32, GgmlType::F32],
];

/// `matmul_many` gives every matrix exactly what its own `matmul` gives (same kernels,
/// same tiles), whatever the row counts and the thread count.
fn fused_equals_separate(
    kernels: &KernelSet,
    group: &[GgmlType],
    case: Case,
    rows: &[usize],
) -> Result<(), TestCaseError> {
    let mut rng = Rng(case.seed);
    let weights: Vec<Vec<u8>> = group
        .iter()
        .zip(rows)
        .map(|(&ty, &r)| random_weights(ty, r, case.cols, &mut rng))
        .collect();
    let mats: Vec<MatRef> = group
        .iter()
        .zip(rows)
        .zip(&weights)
        .map(|((&ty, &rows), w)| MatRef::new(ty, w, rows, case.cols))
        .collect();
    prop_assert!(can_fuse(&mats));
    let x: Vec<f32> = (0..case.n_tokens * case.cols)
        .map(|_| 4.0 * rng.unit())
        .collect();
    let mut fused: Vec<Vec<f32>> = rows
        .iter()
        .map(|&r| vec![f32::NAN; r * case.n_tokens])
        .collect();
    let mut outs: Vec<&mut [f32]> = fused.iter_mut().map(|y| y.as_mut_slice()).collect();
    matmul_many_with(
        kernels,
        pool(case.n_threads),
        &mats,
        &x,
        &mut outs,
        &mut MatmulScratch::default(),
    );
    for (m, got) in mats.iter().zip(&fused) {
        let mut want = vec![f32::NAN; m.rows * case.n_tokens];
        matmul_with(
            kernels,
            pool(case.n_threads),
            m,
            &x,
            &mut want,
            &mut MatmulScratch::default(),
        );
        let same = got
            .iter()
            .zip(&want)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        prop_assert!(same, "{} rows of {}: fused result differs", m.rows, m.ty);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn fused_matmuls_equal_separate_matmuls_bitwise(
        c in case(),
        group in 0..FUSABLE_GROUPS.len(),
        rows in proptest::collection::vec(1usize..=300, MAX_FUSED_IN_TESTS),
        scalar in any::<bool>(),
    ) {
        let group = FUSABLE_GROUPS[group];
        let kernels = if scalar { dispatch::scalar() } else { dispatch::best() };
        fused_equals_separate(kernels, group, c, &rows[..group.len()])?;
    }
}

/// Matrices in the largest fusable group above.
const MAX_FUSED_IN_TESTS: usize = 4;

#[test]
fn matrices_with_different_activation_formats_or_widths_do_not_fuse() {
    let w = vec![0u8; 18 * 8];
    let q4_0 = MatRef::new(GgmlType::Q4_0, &w, 1, 256);
    let q4_1 = MatRef {
        ty: GgmlType::Q4_1,
        ..q4_0
    };
    let narrow = MatRef { cols: 128, ..q4_0 };
    assert!(can_fuse(&[q4_0, q4_0]));
    assert!(!can_fuse(&[q4_0, q4_1]), "Q8_0 and Q8_1 activations");
    assert!(!can_fuse(&[q4_0, narrow]), "different widths");
    assert!(!can_fuse(&[]), "nothing to fuse");
    assert!(!can_fuse(&[q4_0; 5]), "more than MAX_FUSED");
}

// ---------------------------------------------------------------------------------------
// GEMM tile kernels (`KernelSet::gemm`): 8 activation rows per call, against the scalar
// dot kernel row by row.

/// How the weight blocks of a tile case are filled.
#[derive(Debug, Clone, Copy)]
enum Pattern {
    /// Random quant bytes, random finite scales (subnormals included).
    Random,
    /// Every quant byte 0xFF (all nibbles 15, all fifth bits set; Q8_0 bytes -1) except
    /// Q8_0, whose bytes are -128 and 127 alternating (the extremes of `maddubs`).
    AllMax,
    /// Random, with about a third of the blocks entirely zero (scales included).
    ZeroBlocks,
    /// Random quants, scales alternating between the largest f16 and the smallest
    /// subnormal.
    ExtremeScales,
    /// Random quants, every scale (and minimum) 1.0, activation scales 1.0 too: for the
    /// 32-element formats the result is an integer the f32 sum holds exactly, so it must
    /// match bit for bit (K-quant super-block sums can exceed 2^24: checked within
    /// tolerance like the others).
    UnitScales,
}

const PATTERNS: [Pattern; 5] = [
    Pattern::Random,
    Pattern::AllMax,
    Pattern::ZeroBlocks,
    Pattern::ExtremeScales,
    Pattern::UnitScales,
];

/// `rows` weight rows of `n_blocks` blocks of `ty` following `pattern`.
fn tile_weights(
    ty: GgmlType,
    rows: usize,
    n_blocks: usize,
    pattern: Pattern,
    rng: &mut Rng,
) -> Vec<u8> {
    let (bb, scales) = scale_fields(ty);
    let mut w: Vec<u8> = (0..rows * n_blocks * bb)
        .map(|_| rng.next_u64() as u8)
        .collect();
    for (k, block) in w.chunks_mut(bb).enumerate() {
        if let Pattern::AllMax = pattern {
            for (j, byte) in block.iter_mut().enumerate() {
                *byte = match ty {
                    GgmlType::Q8_0 if j % 2 == 0 => 0x80,
                    GgmlType::Q8_0 => 0x7F,
                    _ => 0xFF,
                };
            }
        }
        for &at in &scales {
            let h = match pattern {
                Pattern::ExtremeScales if k % 2 == 0 => f16::MAX,
                Pattern::ExtremeScales => f16::from_bits(1),
                Pattern::UnitScales => f16::ONE,
                _ => rng.scale(),
            };
            block[at..at + 2].copy_from_slice(&h.to_le_bytes());
        }
        if matches!(pattern, Pattern::ZeroBlocks) && rng.next_u64().is_multiple_of(3) {
            block.fill(0);
        }
    }
    w
}

/// 8 activation rows of `n_blocks` blocks of `act` (Q8_0, Q8_1 or Q8_K), `stride` bytes
/// apart: quants in -127..=127, `d` random (1.0 with `unit`), Q8_1's `s = d · Σ q` as f16,
/// Q8_K's 16 block sums.
fn tile_acts(act: GgmlType, n_blocks: usize, stride: usize, unit: bool, rng: &mut Rng) -> Vec<u8> {
    let bb = format(act).block_bytes;
    let (quants, n_quants) = match act {
        GgmlType::Q8_0 => (2, 32),
        GgmlType::Q8_1 => (4, 32),
        _ => (4, 256),
    };
    let mut a = vec![0xA5u8; 8 * stride];
    for t in 0..8 {
        for block in a[t * stride..t * stride + n_blocks * bb].chunks_mut(bb) {
            let d = if unit { f16::ONE } else { rng.scale() };
            let mut sums = [0i32; 16];
            for (k, q) in block[quants..quants + n_quants].iter_mut().enumerate() {
                let v = (rng.next_u64() % 255) as i32 - 127;
                *q = v as i8 as u8;
                sums[k / 16] += v;
            }
            let sum: i32 = sums.iter().sum();
            match act {
                GgmlType::Q8_K => {
                    block[..4].copy_from_slice(&d.to_f32().to_le_bytes());
                    for (k, s) in sums.iter().enumerate() {
                        let at = quants + n_quants + 2 * k;
                        block[at..at + 2].copy_from_slice(&(*s as i16).to_le_bytes());
                    }
                }
                _ => {
                    block[..2].copy_from_slice(&d.to_le_bytes());
                    if act == GgmlType::Q8_1 {
                        let s = f16::from_f32(d.to_f32() * sum as f32);
                        block[2..4].copy_from_slice(&s.to_le_bytes());
                    }
                }
            }
        }
    }
    a
}

/// The tile kernel for `ty` gives, for every weight row and activation row, the scalar dot
/// product within 1e-5 of the sum of the blocks' |contributions| (f32 summation order is
/// all that may differ), and exactly the scalar result when every scale is 1.
/// Copies of one weight block whose dot products add up to the block's: the block itself, or
/// for the types whose blocks start with an f16 scale `d` and an f16 min `m` (Q4_1, Q5_1,
/// Q4_K, Q5_K) the block with `m` zeroed and the block with `d` zeroed.
fn block_parts(ty: GgmlType, block: &[u8]) -> Vec<Vec<u8>> {
    if matches!(
        ty,
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K
    ) {
        let (mut scale_only, mut min_only) = (block.to_vec(), block.to_vec());
        scale_only[2..4].fill(0);
        min_only[0..2].fill(0);
        vec![scale_only, min_only]
    } else {
        vec![block.to_vec()]
    }
}

#[test]
fn q4_k_tiles_within_the_bound_where_scale_and_min_terms_cancel() {
    // Found by the proptest below: the two terms of a block cancel, and the tile's and the
    // scalar kernel's roundings differed by more than 1e-5 of the block's result.
    for (rows, pattern, seed) in [
        (5, Pattern::ExtremeScales, 5472777317567471528),
        (6, Pattern::ZeroBlocks, 7617764268981421316),
    ] {
        tile_kernel_matches_scalar(GgmlType::Q4_K, rows, 2, pattern, seed).unwrap();
    }
}

fn tile_kernel_matches_scalar(
    ty: GgmlType,
    rows: usize,
    n_blocks: usize,
    pattern: Pattern,
    seed: u64,
) -> Result<(), TestCaseError> {
    let Some(gemm) = dispatch::best().gemm(ty) else {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED tile kernel check for {ty}: the {} set has no GEMM tile kernel for it",
            dispatch::best().name()
        );
        return Ok(());
    };
    let mut rng = Rng(seed);
    let act = format(ty).vec_dot_type;
    let (wbb, abb) = (format(ty).block_bytes, format(act).block_bytes);
    let stride = (n_blocks * abb).next_multiple_of(64) + 64 * (seed % 2) as usize;
    let unit = matches!(pattern, Pattern::UnitScales);
    let exact = unit && format(ty).block_elems == 32;
    let w = tile_weights(ty, rows, n_blocks, pattern, &mut rng);
    let a = tile_acts(act, n_blocks, stride, unit, &mut rng);
    let (d_len, s_len, sums_len) = tile_table_lens(act, n_blocks);
    let (mut d, mut s, mut sums) = (vec![0f32; d_len], vec![0f32; s_len], vec![0i32; sums_len]);
    tile_tables(act, &a, stride, n_blocks, &mut d, &mut s, &mut sums);
    let tile = ActTile {
        quants: &a,
        row_stride: stride,
        d: &d,
        s: &s,
        sums: &sums,
    };
    let mut got = vec![f32::NAN; rows * GEMM_TILE];
    gemm(&w, rows, &tile, &mut got);
    let dot = dispatch::scalar().dot(ty).expect("scalar dot");
    let row_bytes = n_blocks * wbb;
    for (m, w_row) in w.chunks(row_bytes).enumerate() {
        let mut want = [0f32; GEMM_TILE];
        dot(w_row, &a, stride, &mut want);
        // Per block, the magnitude of the scalar contribution of each activation row, to bound
        // the rounding: for the types with a min (`d · Σ w·a + m · s`, signs opposite) each of
        // the two terms separately, since they can cancel to far below either one.
        let mut abs_terms = [0f64; GEMM_TILE];
        for b in 0..n_blocks {
            for part in block_parts(ty, &w_row[b * wbb..(b + 1) * wbb]) {
                let mut term = [0f32; GEMM_TILE];
                dot(&part, &a[b * abb..], stride, &mut term);
                for (sum, t) in abs_terms.iter_mut().zip(term) {
                    *sum += f64::from(t.abs());
                }
            }
        }
        for t in 0..GEMM_TILE {
            let (g, s) = (got[m * GEMM_TILE + t], want[t]);
            if exact {
                prop_assert!(
                    g.to_bits() == s.to_bits(),
                    "{ty} {pattern:?} row {m} act {t}: tile {g} vs scalar {s} (must be exact)"
                );
            } else {
                let tol = 1e-5 * abs_terms[t] + 1e-30;
                prop_assert!(
                    (f64::from(g) - f64::from(s)).abs() <= tol,
                    "{ty} {pattern:?} row {m} act {t}: tile {g} vs scalar {s} (tolerance {tol})"
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4 * cases()))]

    #[test]
    fn gemm_tile_kernels_match_the_scalar_dot_per_row(
        ty in 0..TILE_TYPES.len(),
        rows in 1usize..=7,
        n_blocks in prop_oneof![Just(1usize), Just(2usize), 3usize..=24],
        pattern in 0..PATTERNS.len(),
        seed in any::<u64>(),
    ) {
        tile_kernel_matches_scalar(TILE_TYPES[ty], rows, n_blocks, PATTERNS[pattern], seed)?;
    }
}

#[test]
fn gemm_tile_kernels_are_installed_for_every_tile_type_on_x86_64_simd() {
    let set = dispatch::best();
    if set.name() != "avx2" && set.name() != "avx512-vnni" {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: the {} kernel set is not avx2 or avx512-vnni, the sets with tile kernels",
            set.name()
        );
        return;
    }
    for ty in TILE_TYPES {
        if ty == GgmlType::Q6_K && set.name() == "avx2" {
            continue;
        }
        assert!(set.gemm(ty).is_some(), "{ty} has no tile kernel");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// Full tiles go to the tile kernel and a last partial tile to the one-row kernels,
    /// whatever the job split: one, two and three threads give the same bits.
    #[test]
    fn batches_with_tiles_do_not_depend_on_the_thread_count(
        ty in 0..TILE_TYPES.len(),
        c in case(),
        n_tokens in 8usize..=40,
    ) {
        let ty = TILE_TYPES[ty];
        let case = Case { n_tokens, n_threads: 1, ..c };
        let (w, x) = problem(ty, &case);
        let one = run(dispatch::best(), ty, &case, &w, &x);
        for n_threads in [2, 3] {
            let other = run(dispatch::best(), ty, &Case { n_threads, ..case.clone() }, &w, &x);
            let same = one.iter().zip(&other).all(|(a, b)| a.to_bits() == b.to_bits());
            prop_assert!(same, "{ty}: {n_threads} threads differ from one");
        }
    }
}
