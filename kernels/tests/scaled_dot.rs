//! The scaled dot kernels (`KernelSet::scaled_dot`, used by the matmul for weights paired
//! with Q8_0/Q8_1 activations) read the activation scales from an f32 side table instead
//! of the blocks' f16 fields. The table carries the same values, so for every weight type
//! and every activation-row count (and any number of weight rows per call) they must give
//! exactly the plain dot kernel's results, one weight row at a time,
//! which `simd_matches_scalar.rs` ties to the scalar reference. With one activation row
//! (decode) they must also give exactly what the GEMM tile kernel gives each of its rows.

mod common;

use std::io::Write;

use common::{quantized_rows, tables_of, tiles_of, weights, TILE_TYPES};
use half::f16;
use openweight_kernels::dispatch::{self, ActTile, GemmFn, GEMM_TILE, MAX_ACT_ROWS};
use openweight_kernels::matmul::{scale_rows, tile_table_lens, tile_tables};
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

/// The GEMM tile kernel's results for `w_rows` weight rows against the [`GEMM_TILE`]
/// activation rows of type `act` in `acts` (`stride` bytes apart, `n_blocks` blocks each):
/// `out[m * GEMM_TILE + t]` for weight row `m` and activation row `t`.
fn tile_results(
    gemm: GemmFn,
    act: GgmlType,
    w: &[u8],
    w_rows: usize,
    acts: &[u8],
    stride: usize,
    n_blocks: usize,
) -> Vec<f32> {
    let (d_len, s_len, sums_len) = tile_table_lens(act, n_blocks);
    let (mut d, mut s, mut sums) = (vec![0f32; d_len], vec![0f32; s_len], vec![0i32; sums_len]);
    tile_tables(act, acts, stride, n_blocks, &mut d, &mut s, &mut sums);
    let tile = ActTile {
        quants: acts,
        row_stride: stride,
        d: &d,
        s: &s,
        sums: &sums,
    };
    let mut out = vec![f32::NAN; w_rows * GEMM_TILE];
    gemm(w, w_rows, &tile, &mut out);
    out
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
        let seed_x = seed.rotate_left(17);
        let acts = quantized_rows(set, af.ty, n_rows, cols, stride, amplitude, seed_x);
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
            let dot = set.dot(ty).expect("dot");
            dot(&w[m * row_bytes..(m + 1) * row_bytes], &acts, stride, &mut want);
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Decode (the scaled kernel with one activation row) computes every weight row as the
    /// GEMM tile kernel computes each of its activation rows: same exact block sums, same
    /// f32 operations in the same order. So a prompt (batch) and token-by-token decode give
    /// the same logits bit for bit for these types.
    #[test]
    fn decode_equals_the_gemm_tile_bitwise(
        ty_index in 0..TYPES.len(),
        n_blocks in 1usize..=24,
        w_rows in 1usize..=19,
        seed in any::<u64>(),
    ) {
        let ty = TYPES[ty_index];
        let set = dispatch::best();
        let (Some(scaled), Some(gemm)) = (set.scaled_dot(ty), set.gemm(ty)) else {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED decode == GEMM tile check for {ty}: the {} set lacks a scaled or a \
                 GEMM tile kernel for it",
                set.name()
            );
            return Ok(());
        };
        let af = format(format(ty).vec_dot_type);
        let cols = n_blocks * 32;
        let w = weights(ty, n_blocks * w_rows, seed);
        let row_bytes = af.row_bytes(cols);
        let stride = row_bytes + 32;
        let seed_x = seed.rotate_left(29);
        let acts = quantized_rows(set, af.ty, GEMM_TILE, cols, stride, 1.0, seed_x);
        let batch = tile_results(gemm, af.ty, &w, w_rows, &acts, stride, n_blocks);
        for t in 0..GEMM_TILE {
            let act_row = &acts[t * stride..(t + 1) * stride];
            let mut table = vec![0f32; 2 * n_blocks];
            scale_rows(af.ty, &act_row[..row_bytes], &mut table);
            let mut decode = vec![f32::NAN; w_rows];
            scaled(&w, w_rows, act_row, stride, &table, 2 * n_blocks, &mut decode);
            for m in 0..w_rows {
                let (b, one) = (batch[m * GEMM_TILE + t], decode[m]);
                prop_assert_eq!(
                    b.to_bits(),
                    one.to_bits(),
                    "{} weight row {} act row {}: GEMM tile {} vs decode {}",
                    ty,
                    m,
                    t,
                    b,
                    one
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Q4_K, Q5_K and (where the set has a tile for it) Q6_K: decode (the dot kernel with one
    /// activation row) computes every weight row as the GEMM tile computes each of its
    /// activation rows (exact integer totals per super-block, then one fused multiply-add
    /// each for the scales and the mins), so batch and decode give the same bits for these
    /// types too.
    #[test]
    fn kquant_decode_equals_the_gemm_tile_bitwise(
        which in 0usize..3,
        n_blocks in 1usize..=6,
        w_rows in 1usize..=9,
        seed in any::<u64>(),
    ) {
        let ty = [GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K][which];
        let set = dispatch::best();
        let (Some(dot), Some(gemm)) = (set.dot(ty), set.gemm(ty)) else {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED decode == GEMM tile check for {ty}: the {} set has no GEMM tile for it",
                set.name()
            );
            return Ok(());
        };
        let af = format(format(ty).vec_dot_type);
        let cols = n_blocks * 256;
        let w = weights(ty, n_blocks * w_rows, seed);
        let w_row_bytes = format(ty).row_bytes(cols);
        let row_bytes = af.row_bytes(cols);
        let stride = row_bytes + 32;
        let seed_x = seed.rotate_left(23);
        let acts = quantized_rows(set, af.ty, GEMM_TILE, cols, stride, 1.0, seed_x);
        let batch = tile_results(gemm, af.ty, &w, w_rows, &acts, stride, n_blocks);
        for t in 0..GEMM_TILE {
            let act_row = &acts[t * stride..(t + 1) * stride];
            for (m, w_row) in w.chunks_exact(w_row_bytes).enumerate() {
                let mut one = [f32::NAN];
                dot(w_row, act_row, stride, &mut one);
                let b = batch[m * GEMM_TILE + t];
                prop_assert_eq!(
                    b.to_bits(),
                    one[0].to_bits(),
                    "{} weight row {} act row {}: GEMM tile {} vs decode {}",
                    ty,
                    m,
                    t,
                    b,
                    one[0]
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The several-tile kernel (`KernelSet::gemm_tiles`, which rearranges each weight block
    /// once for all its tiles) gives every product exactly the bits the one-tile kernel
    /// gives it, so the matmul may take either for any run of tiles.
    #[test]
    fn several_tile_kernel_equals_the_one_tile_kernel_bitwise(
        ty_index in 0..TILE_TYPES.len(),
        n_blocks in 1usize..=40,
        w_rows in 1usize..=35,
        n_tiles in 1usize..=dispatch::MAX_GEMM_TILES,
        seed in any::<u64>(),
    ) {
        let ty = TILE_TYPES[ty_index];
        // K-quant rows of up to 40 super-blocks would be slow to test; 1..=6 covers the
        // packed runs (2 super-blocks) and their remainders.
        let n_blocks = if format(ty).block_elems == 256 { 1 + n_blocks % 6 } else { n_blocks };
        let set = dispatch::best();
        let (Some(tiles_fn), Some(gemm)) = (set.gemm_tiles(ty), set.gemm(ty)) else {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED several-tile == one-tile check for {ty}: the {} set lacks a \
                 several-tile or a one-tile GEMM kernel for it",
                set.name()
            );
            return Ok(());
        };
        let af = format(format(ty).vec_dot_type);
        let cols = n_blocks * format(ty).block_elems;
        let w = weights(ty, n_blocks * w_rows, seed);
        let stride = af.row_bytes(cols) + 64;
        let acts = quantized_rows(set, af.ty, n_tiles * GEMM_TILE, cols, stride, 1.0, seed ^ 7);
        let tables = tables_of(af.ty, &acts, stride, n_blocks, n_tiles);
        let tiles = tiles_of(&tables, &acts, stride);
        let per_row = n_tiles * GEMM_TILE;
        // Written `stride` apart into a wider matrix, as the matmul writes into its output:
        // the columns past `w_rows` must stay untouched.
        let out_stride = w_rows + 5;
        let mut wide = vec![f32::NAN; out_stride * per_row];
        // SAFETY: `wide` holds `per_row` rows of `out_stride >= w_rows` values, and nothing
        // else uses it during the call.
        unsafe { tiles_fn(&w, w_rows, &tiles, wide.as_mut_ptr(), out_stride) };
        prop_assert!(
            wide.chunks_exact(out_stride).all(|row| row[w_rows..].iter().all(|v| v.is_nan())),
            "the kernel wrote outside its rows"
        );
        let together: Vec<f32> = wide
            .chunks_exact(out_stride)
            .flat_map(|row| row[..w_rows].to_vec())
            .collect();
        for (i, tile) in tiles.iter().enumerate() {
            let mut alone = vec![f32::NAN; w_rows * GEMM_TILE];
            gemm(&w, w_rows, tile, &mut alone);
            for m in 0..w_rows {
                for t in 0..GEMM_TILE {
                    let (a, b) = (together[(i * GEMM_TILE + t) * w_rows + m], alone[m * GEMM_TILE + t]);
                    prop_assert_eq!(
                        a.to_bits(),
                        b.to_bits(),
                        "{} weight row {} tile {} row {}: several-tile {} vs one-tile {}",
                        ty, m, i, t, a, b
                    );
                }
            }
        }
    }
}
