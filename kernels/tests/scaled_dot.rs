//! The scaled dot kernels (`KernelSet::scaled_dot`, used by the matmul for weights paired
//! with Q8_0/Q8_1 activations) read the activation scales from an f32 side table instead
//! of the blocks' f16 fields. The table carries the same values, so for every weight type
//! and every activation-row count (and any number of weight rows per call) they must give
//! exactly the plain dot kernel's results, one weight row at a time,
//! which `simd_matches_scalar.rs` ties to the scalar reference.

use std::io::Write;

use half::f16;
use openweight_kernels::dispatch::{self, MAX_ACT_ROWS};
use openweight_kernels::matmul::scale_rows;
use openweight_kernels::{format, GgmlType};
use proptest::prelude::*;

/// Weight types whose activations are Q8_0 or Q8_1 (the only ones a scaled kernel serves).
const TYPES: [GgmlType; 6] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::IQ4_NL,
];

/// `n` random weight blocks of `ty`: random bytes, with every f16 field (the first two,
/// or four for types with a minimum) a finite value, subnormals and extremes included.
fn weights(ty: GgmlType, n_blocks: usize, seed: u64) -> Vec<u8> {
    let bb = format(ty).block_bytes;
    let n_f16 = if matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
        2
    } else {
        1
    };
    let mut s = seed | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let mut w: Vec<u8> = (0..n_blocks * bb).map(|_| next() as u8).collect();
    for block in w.chunks_mut(bb) {
        for f in 0..n_f16 {
            let bits = next() as u16;
            let exponent = (bits >> 10) & 0x1F;
            let h = f16::from_bits((bits & 0x83FF) | ((exponent % 31) << 10));
            block[2 * f..2 * f + 2].copy_from_slice(&h.to_le_bytes());
        }
    }
    w
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn scaled_kernels_equal_the_plain_dot_kernels_bitwise(
        ty_index in 0..TYPES.len(),
        n_blocks in 1usize..=40,
        n_rows in 1usize..=MAX_ACT_ROWS,
        w_rows in 1usize..=19,
        seed in any::<u64>(),
        amplitude in prop_oneof![Just(0.0f32), Just(1e-6f32), Just(1.0f32), Just(3e4f32)],
    ) {
        let ty = TYPES[ty_index];
        let set = dispatch::best();
        let Some(scaled) = set.scaled_dot(ty) else {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED scaled kernel check for {ty}: the {} set has no scaled kernel for it",
                set.name()
            );
            return Ok(());
        };
        let af = format(format(ty).vec_dot_type);
        let cols = n_blocks * 32;
        let w = weights(ty, n_blocks * w_rows, seed);
        // Activation rows with a stride larger than a row, as the matmul lays them out.
        let row_bytes = af.row_bytes(cols);
        let stride = row_bytes + 64;
        let mut acts = vec![0u8; n_rows * stride];
        let quantize = set.quantize(af.ty).expect("quantizer");
        let mut seed_x = seed.rotate_left(17) | 1;
        for r in 0..n_rows {
            let x: Vec<f32> = (0..cols)
                .map(|_| {
                    seed_x = seed_x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    ((seed_x >> 40) as f32 / (1u64 << 23) as f32 - 1.0) * amplitude
                })
                .collect();
            quantize(&x, &mut acts[r * stride..r * stride + row_bytes]);
        }
        let scale_stride = 2 * n_blocks + 3;
        let mut table = vec![f32::NAN; n_rows * scale_stride];
        for r in 0..n_rows {
            scale_rows(
                af.ty,
                &acts[r * stride..r * stride + row_bytes],
                &mut table[r * scale_stride..],
            );
        }
        let row_bytes = w.len() / w_rows;
        let mut got = vec![0f32; w_rows * n_rows];
        scaled(&w, w_rows, &acts, stride, &table, scale_stride, &mut got);
        for m in 0..w_rows {
            let mut want = vec![0f32; n_rows];
            (set.dot(ty).expect("dot"))(&w[m * row_bytes..(m + 1) * row_bytes], &acts, stride, &mut want);
            for r in 0..n_rows {
                let g = got[m * n_rows + r];
                prop_assert_eq!(
                    g.to_bits(),
                    want[r].to_bits(),
                    "{} weight row {} act row {}: scaled {} vs plain {}",
                    ty,
                    m,
                    r,
                    g,
                    want[r]
                );
            }
        }
    }
}

#[test]
fn scale_rows_lists_d_then_s_for_q8_1_and_d_for_q8_0() {
    let x: Vec<f32> = (0..64).map(|i| i as f32 - 20.0).collect();
    for act in [GgmlType::Q8_0, GgmlType::Q8_1] {
        let af = format(act);
        let mut row = vec![0u8; af.row_bytes(64)];
        (dispatch::scalar().quantize(act).unwrap())(&x, &mut row);
        let mut table = [0f32; 4];
        scale_rows(act, &row, &mut table);
        for b in 0..2 {
            let block = &row[b * af.block_bytes..];
            let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
            assert_eq!(table[b], d, "{act} block {b} d");
            if act == GgmlType::Q8_1 {
                let s = f16::from_le_bytes([block[2], block[3]]).to_f32();
                assert_eq!(table[2 + b], s, "{act} block {b} s");
            }
        }
    }
}
