//! The row-interleaved weight layout (`interleave`, groups of 16 rows) is a load-time
//! rearrangement only: the kernels that read it (`KernelSet::interleaved`, AVX-512 VNNI)
//! must give every product exactly the bits the set's row-major kernels give it, and the
//! matmul on an interleaved `MatRef` must give exactly the row-major matmul's output, for
//! every type that interleaves, partial last groups, any batch size and thread count.
//!
//! The 32-element types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) are compared with the set's
//! row-major scaled dot and several-tile kernel; Q4_K and Q5_K (Q8_K activations, no scale
//! table, no scaled dot) with the set's plain dot called once per weight row and with its
//! row-major several-tile kernel.
//!
//! Weights are random valid blocks (random bytes, every f16 field a finite value,
//! subnormals and extremes included). On a kernel set without interleaved kernels (e.g.
//! `OPENWEIGHT_KERNELS=avx2`) the kernel and matmul checks print a `SKIPPED` line to stderr
//! and pass without checking anything.

mod common;

use std::io::Write;

use common::{floats, pool, quantized_rows, tables_of, tiles_of, weights};

use openweight_kernels::dispatch::{self, KernelSet, GEMM_TILE, MAX_ACT_ROWS, MAX_GEMM_TILES};
use openweight_kernels::interleave::{can_interleave, interleave, interleaved_len};
use openweight_kernels::matmul::{
    can_fuse, matmul_many_with, matmul_with, scale_rows, MatRef, MatmulScratch, WeightLayout,
};
use openweight_kernels::{format, GgmlType};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// Every type with an interleaved layout.
const TYPES: [GgmlType; 7] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
];

/// The interleavable 32-element types (paired with Q8_0 / Q8_1, which have a scaled dot).
const LEGACY_TYPES: [GgmlType; 5] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
];

/// The interleavable K-quants (256-element super-blocks, paired with Q8_K).
const K_TYPES: [GgmlType; 2] = [GgmlType::Q4_K, GgmlType::Q5_K];

/// The interleaved form of `rows` rows of `cols` elements of `ty` in `w`.
fn interleaved(ty: GgmlType, w: &[u8], rows: usize, cols: usize) -> Vec<u8> {
    let mut dst = vec![0xA5u8; interleaved_len(ty, rows, cols)];
    interleave(ty, w, rows, cols, &mut dst);
    dst
}

/// Says loudly that `check` was skipped for `ty` because the running set lacks interleaved
/// kernels (straight to stderr: the harness captures `eprintln!` of passing tests).
fn skipped(check: &str, ty: GgmlType, set: &KernelSet) {
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {check} for {ty}: the {} set has no interleaved kernels",
        set.name()
    );
}

/// The test's type list is exactly the interleavable types (the 32-element ones, then the
/// K-quants), and a set with interleaved kernels has them for all of those types and no
/// other.
#[test]
fn interleaved_kernels_cover_exactly_the_interleavable_types() {
    let listed: Vec<GgmlType> = GgmlType::ALL
        .into_iter()
        .filter(|&ty| can_interleave(ty))
        .collect();
    assert_eq!(listed, TYPES);
    assert_eq!([&LEGACY_TYPES[..], &K_TYPES[..]].concat(), TYPES);
    let set = dispatch::best();
    if TYPES.iter().all(|&ty| set.interleaved(ty).is_none()) {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED interleaved kernel coverage: the {} set has no interleaved kernels",
            set.name()
        );
        return;
    }
    for ty in GgmlType::ALL {
        assert_eq!(
            set.interleaved(ty).is_some(),
            can_interleave(ty),
            "{ty} in the {} set",
            set.name()
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The interleaved dot (decode and remainders of a batch) on interleaved weights gives,
    /// for every weight row (partial last groups included) and every activation row, exactly
    /// the bits of the set's row-major scaled dot on the same rows; it writes token-major
    /// output (`out[i * w_rows + m]`, the scaled dot `out[m * n + i]`) and reads no scale
    /// table entry past `2 * n_blocks` per row (the slack holds NaN).
    #[test]
    fn interleaved_dot_equals_the_row_major_scaled_dot_bitwise(
        ty_index in 0..LEGACY_TYPES.len(),
        w_rows in 1usize..=40,
        n_blocks in 1usize..=40,
        n_rows in 1usize..=MAX_ACT_ROWS,
        seed in any::<u64>(),
        amplitude in prop_oneof![Just(0.0f32), Just(1e-6f32), Just(1.0f32), Just(3e4f32)],
    ) {
        let ty = LEGACY_TYPES[ty_index];
        let set = dispatch::best();
        let (Some((dot, _)), Some(scaled)) = (set.interleaved(ty), set.scaled_dot(ty)) else {
            skipped("interleaved dot == row-major scaled dot", ty, set);
            return Ok(());
        };
        let af = format(format(ty).vec_dot_type);
        let cols = n_blocks * 32;
        let w = weights(ty, n_blocks * w_rows, seed);
        let wi = interleaved(ty, &w, w_rows, cols);
        // Activation rows with a stride larger than a row, as the matmul lays them out.
        let row_bytes = af.row_bytes(cols);
        let stride = row_bytes + 64;
        let acts = quantized_rows(set, af.ty, n_rows, cols, stride, amplitude, seed.rotate_left(17));
        let scale_stride = 2 * n_blocks + 3;
        let mut table = vec![f32::NAN; n_rows * scale_stride];
        for r in 0..n_rows {
            scale_rows(
                af.ty,
                &acts[r * stride..r * stride + row_bytes],
                &mut table[r * scale_stride..],
            );
        }
        let mut got = vec![f32::NAN; n_rows * w_rows];
        dot(&wi, w_rows, &acts, stride, &table, scale_stride, &mut got);
        let mut want = vec![f32::NAN; w_rows * n_rows];
        scaled(&w, w_rows, &acts, stride, &table, scale_stride, &mut want);
        for m in 0..w_rows {
            for i in 0..n_rows {
                let (g, r) = (got[i * w_rows + m], want[m * n_rows + i]);
                prop_assert_eq!(
                    g.to_bits(),
                    r.to_bits(),
                    "{} weight row {} of {} act row {}: interleaved {} vs row-major {}",
                    ty, m, w_rows, i, g, r
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The interleaved several-tile kernel (prompts) on interleaved weights gives every
    /// product exactly the bits the set's row-major several-tile kernel gives it, for 1 ..=
    /// `MAX_GEMM_TILES` tiles and weight-row counts that end in a partial group.
    #[test]
    fn interleaved_tiles_equal_the_row_major_tiles_bitwise(
        ty_index in 0..LEGACY_TYPES.len(),
        half_blocks in 0usize..20,
        w_rows in 1usize..=35,
        n_tiles in 1usize..=MAX_GEMM_TILES,
        seed in any::<u64>(),
    ) {
        let ty = LEGACY_TYPES[ty_index];
        let n_blocks = 2 * half_blocks + 1;
        let set = dispatch::best();
        let (Some((_, tiles_fn)), Some(row_major)) = (set.interleaved(ty), set.gemm_tiles(ty))
        else {
            skipped("interleaved tiles == row-major tiles", ty, set);
            return Ok(());
        };
        let af = format(format(ty).vec_dot_type);
        let cols = n_blocks * 32;
        let w = weights(ty, n_blocks * w_rows, seed);
        let wi = interleaved(ty, &w, w_rows, cols);
        let stride = af.row_bytes(cols) + 64;
        let acts = quantized_rows(set, af.ty, n_tiles * GEMM_TILE, cols, stride, 1.0, seed ^ 7);
        let tables = tables_of(af.ty, &acts, stride, n_blocks, n_tiles);
        let tiles = tiles_of(&tables, &acts, stride);
        let n_out = n_tiles * GEMM_TILE * w_rows;
        let mut got = vec![f32::NAN; n_out];
        // SAFETY: both buffers hold the `n_out` results, `w_rows` apart, and nothing else
        // uses them during the calls.
        unsafe { tiles_fn(&wi, w_rows, &tiles, got.as_mut_ptr(), w_rows) };
        let mut want = vec![f32::NAN; n_out];
        unsafe { row_major(&w, w_rows, &tiles, want.as_mut_ptr(), w_rows) };
        for (k, (g, r)) in got.iter().zip(&want).enumerate() {
            let (token, m) = (k / w_rows, k % w_rows);
            prop_assert_eq!(
                g.to_bits(),
                r.to_bits(),
                "{} weight row {} of {} tile {} row {}: interleaved {} vs row-major {}",
                ty, m, w_rows, token / GEMM_TILE, token % GEMM_TILE, g, r
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Q4_K and Q5_K: the interleaved dot (decode and remainders of a batch) on interleaved
    /// weights gives, for every weight row (partial last groups included) and every Q8_K
    /// activation row (rows `stride` bytes apart, with slack), exactly the bits of the set's
    /// plain dot called on that weight row alone; it writes token-major output
    /// (`out[i * w_rows + m]`) and reads no scale table (half the cases pass an empty one, the
    /// others one full of NaN).
    #[test]
    fn kquant_interleaved_dot_equals_the_per_row_dot_bitwise(
        ty_index in 0..K_TYPES.len(),
        w_rows in 1usize..=40,
        n_blocks in 1usize..=6,
        n_rows in 1usize..=MAX_ACT_ROWS,
        slack in prop_oneof![Just(0usize), 1usize..=16, Just(64usize)],
        empty_table in any::<bool>(),
        seed in any::<u64>(),
        amplitude in prop_oneof![Just(0.0f32), Just(1e-6f32), Just(1.0f32), Just(3e4f32)],
    ) {
        let ty = K_TYPES[ty_index];
        let set = dispatch::best();
        let (Some((dot, _)), Some(plain)) = (set.interleaved(ty), set.dot(ty)) else {
            skipped("interleaved K dot == per-row dot", ty, set);
            return Ok(());
        };
        let af = format(format(ty).vec_dot_type);
        prop_assert_eq!(af.ty, GgmlType::Q8_K);
        let cols = n_blocks * 256;
        let w = weights(ty, n_blocks * w_rows, seed);
        let wi = interleaved(ty, &w, w_rows, cols);
        let stride = af.row_bytes(cols) + slack;
        let acts = quantized_rows(set, af.ty, n_rows, cols, stride, amplitude, seed.rotate_left(17));
        let nan_table = vec![f32::NAN; n_rows * (n_blocks + 3)];
        let (table, scale_stride): (&[f32], usize) =
            if empty_table { (&[], 0) } else { (&nan_table, n_blocks + 3) };
        let mut got = vec![f32::NAN; n_rows * w_rows];
        dot(&wi, w_rows, &acts, stride, table, scale_stride, &mut got);
        let w_row_bytes = format(ty).row_bytes(cols);
        for (m, w_row) in w.chunks_exact(w_row_bytes).enumerate() {
            let mut want = vec![f32::NAN; n_rows];
            plain(w_row, &acts, stride, &mut want);
            for (i, r) in want.iter().enumerate() {
                let g = got[i * w_rows + m];
                prop_assert_eq!(
                    g.to_bits(),
                    r.to_bits(),
                    "{} {} super-blocks weight row {} of {} act row {} of {} (stride {}): \
                     interleaved {} vs per-row dot {}",
                    ty, n_blocks, m, w_rows, i, n_rows, stride, g, r
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Q4_K and Q5_K: the interleaved several-tile kernel (prompts) on interleaved weights
    /// gives every product exactly the bits the set's row-major several-tile kernel gives it,
    /// for 1 ..= `MAX_GEMM_TILES` tiles of Q8_K rows and weight-row counts that end in a
    /// partial group, and writes nothing past its rows of a wider output.
    #[test]
    fn kquant_interleaved_tiles_equal_the_row_major_tiles_bitwise(
        ty_index in 0..K_TYPES.len(),
        n_blocks in 1usize..=5,
        w_rows in 1usize..=35,
        n_tiles in 1usize..=MAX_GEMM_TILES,
        seed in any::<u64>(),
    ) {
        let ty = K_TYPES[ty_index];
        let set = dispatch::best();
        let (Some((_, tiles_fn)), Some(row_major)) = (set.interleaved(ty), set.gemm_tiles(ty))
        else {
            skipped("interleaved K tiles == row-major tiles", ty, set);
            return Ok(());
        };
        let af = format(format(ty).vec_dot_type);
        prop_assert_eq!(af.ty, GgmlType::Q8_K);
        let cols = n_blocks * 256;
        let w = weights(ty, n_blocks * w_rows, seed);
        let wi = interleaved(ty, &w, w_rows, cols);
        let stride = af.row_bytes(cols) + 64;
        let acts = quantized_rows(set, af.ty, n_tiles * GEMM_TILE, cols, stride, 1.0, seed ^ 7);
        let tables = tables_of(af.ty, &acts, stride, n_blocks, n_tiles);
        let tiles = tiles_of(&tables, &acts, stride);
        let n_tokens = n_tiles * GEMM_TILE;
        // Written `out_stride` apart into a wider matrix, as the matmul writes into its
        // output: the columns past `w_rows` must stay untouched.
        let out_stride = w_rows + 3;
        let mut got = vec![f32::NAN; n_tokens * out_stride];
        // SAFETY: both buffers hold `n_tokens` rows of `out_stride >= w_rows` values, and
        // nothing else uses them during the calls.
        unsafe { tiles_fn(&wi, w_rows, &tiles, got.as_mut_ptr(), out_stride) };
        let mut want = vec![f32::NAN; n_tokens * out_stride];
        unsafe { row_major(&w, w_rows, &tiles, want.as_mut_ptr(), out_stride) };
        prop_assert!(
            got.chunks_exact(out_stride).all(|row| row[w_rows..].iter().all(|v| v.is_nan())),
            "the interleaved kernel wrote outside its rows"
        );
        for token in 0..n_tokens {
            for m in 0..w_rows {
                let (g, r) = (got[token * out_stride + m], want[token * out_stride + m]);
                prop_assert_eq!(
                    g.to_bits(),
                    r.to_bits(),
                    "{} {} super-blocks weight row {} of {} tile {} row {} of {} tiles: \
                     interleaved {} vs row-major {}",
                    ty, n_blocks, m, w_rows, token / GEMM_TILE, token % GEMM_TILE, n_tiles, g, r
                );
            }
        }
    }
}

/// Activation-row counts of the matmul checks: decode, a remainder below a tile, one tile,
/// a tile plus one, two tiles plus one, five tiles.
const BATCHES: [usize; 6] = [1, 3, 8, 9, 17, 40];

/// Row lengths of the matmul checks: short rows, or rows long enough that a job walks its
/// weight rows in several row blocks.
#[derive(Clone, Copy, Debug)]
enum RowLen {
    /// 1 ..= 12 (see [`matmul_cols`]).
    Short(usize),
    Long,
}

/// Short rows three times in four.
fn row_lens() -> impl Strategy<Value = RowLen> {
    prop_oneof![3 => (1usize..=12).prop_map(RowLen::Short), 1 => Just(RowLen::Long)]
}

/// Columns of a `len` row of `ty` in the matmul checks. 32-element types: 1 ..= 12 blocks,
/// or 160 (5120 columns, row blocks of 32 rows or fewer). Q4_K / Q5_K: 1 ..= 4
/// super-blocks, or 24 (6144 columns, 3456 / 4224 bytes a row: row blocks of 32 / 16 rows,
/// so the 40- and 100-row matrices take several).
fn matmul_cols(ty: GgmlType, len: RowLen) -> usize {
    let elems = format(ty).block_elems;
    match (elems, len) {
        (256, RowLen::Short(n)) => n.div_ceil(3) * 256,
        (256, RowLen::Long) => 24 * 256,
        (_, RowLen::Short(n)) => n * elems,
        (_, RowLen::Long) => 160 * elems,
    }
}

/// The row-major matmul of `w` and `x` (`n_tokens` rows) with the best set.
fn row_major_matmul(
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    n_threads: usize,
    scratch: &mut MatmulScratch,
) -> Vec<f32> {
    let mut y = vec![f32::NAN; rows * (x.len() / cols)];
    let m = MatRef::new(ty, w, rows, cols);
    matmul_with(dispatch::best(), pool(n_threads), &m, x, &mut y, scratch);
    y
}

/// Whether `a` and `b` hold the same bits; if not, a message naming the first difference.
fn same_bits(a: &[f32], b: &[f32], rows: usize) -> Result<(), String> {
    match a
        .iter()
        .zip(b)
        .position(|(x, y)| x.to_bits() != y.to_bits())
    {
        None if a.len() == b.len() => Ok(()),
        None => Err(format!("lengths {} vs {}", a.len(), b.len())),
        Some(k) => Err(format!(
            "token {} row {}: interleaved {} vs row-major {}",
            k / rows,
            k % rows,
            a[k],
            b[k]
        )),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// A matmul on an interleaved `MatRef` gives exactly the row-major matmul's output, for
    /// decode, batches with remainders, one tile and several tiles, row counts that fill
    /// whole groups or end in a partial one, on 1 and 2 threads.
    #[test]
    fn interleaved_matmul_equals_the_row_major_matmul_bitwise(
        ty_index in 0..TYPES.len(),
        len in row_lens(),
        seed in any::<u64>(),
    ) {
        let ty = TYPES[ty_index];
        let set = dispatch::best();
        if set.interleaved(ty).is_none() {
            skipped("interleaved matmul == row-major matmul", ty, set);
            return Ok(());
        }
        let cols = matmul_cols(ty, len);
        let n_blocks = cols / format(ty).block_elems;
        let max_tokens = BATCHES[BATCHES.len() - 1];
        let x_all = floats(max_tokens * cols, 4.0, seed.rotate_left(31));
        let mut scratch = MatmulScratch::default();
        for rows in [7, 16, 40, 100] {
            let w = weights(ty, n_blocks * rows, seed ^ rows as u64);
            let wi = interleaved(ty, &w, rows, cols);
            let mi = MatRef { layout: WeightLayout::Interleaved, ..MatRef::new(ty, &wi, rows, cols) };
            for n_tokens in BATCHES {
                let x = &x_all[..n_tokens * cols];
                for n_threads in [1, 2] {
                    let want = row_major_matmul(ty, &w, rows, cols, x, n_threads, &mut scratch);
                    let mut got = vec![f32::NAN; rows * n_tokens];
                    matmul_with(set, pool(n_threads), &mi, x, &mut got, &mut scratch);
                    if let Err(e) = same_bits(&got, &want, rows) {
                        return Err(TestCaseError::fail(format!(
                            "{ty} {rows}x{cols}, {n_tokens} tokens, {n_threads} threads: {e}"
                        )));
                    }
                }
            }
        }
    }
}

/// Pairs of interleavable types that share an activation format (so they can be fused).
const PAIRS: [(GgmlType, GgmlType); 5] = [
    (GgmlType::Q4_0, GgmlType::Q8_0),
    (GgmlType::Q5_0, GgmlType::Q4_0),
    (GgmlType::Q4_1, GgmlType::Q5_1),
    (GgmlType::Q8_0, GgmlType::Q8_0),
    (GgmlType::Q4_K, GgmlType::Q5_K),
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// `matmul_many` on two interleaved matrices (32-element types, or Q4_K with Q5_K) gives
    /// each exactly the output of its own row-major matmul.
    #[test]
    fn fused_interleaved_matmuls_equal_row_major_matmuls_bitwise(
        pair in 0..PAIRS.len(),
        rows_a in 1usize..=100,
        rows_b in 1usize..=100,
        n_tokens in prop::sample::select(BATCHES.to_vec()),
        n_threads in 1usize..=2,
        len in row_lens(),
        seed in any::<u64>(),
    ) {
        let (ta, tb) = PAIRS[pair];
        prop_assert_eq!(format(ta).vec_dot_type, format(tb).vec_dot_type);
        prop_assert_eq!(format(ta).block_elems, format(tb).block_elems);
        let set = dispatch::best();
        for ty in [ta, tb] {
            if set.interleaved(ty).is_none() {
                skipped("fused interleaved matmuls == row-major matmuls", ty, set);
                return Ok(());
            }
        }
        let cols = matmul_cols(ta, len);
        let n_blocks = cols / format(ta).block_elems;
        let x = floats(n_tokens * cols, 4.0, seed.rotate_left(13));
        let wa = weights(ta, n_blocks * rows_a, seed);
        let wb = weights(tb, n_blocks * rows_b, seed.rotate_left(7));
        let (ia, ib) = (interleaved(ta, &wa, rows_a, cols), interleaved(tb, &wb, rows_b, cols));
        let mats = [
            MatRef { layout: WeightLayout::Interleaved, ..MatRef::new(ta, &ia, rows_a, cols) },
            MatRef { layout: WeightLayout::Interleaved, ..MatRef::new(tb, &ib, rows_b, cols) },
        ];
        prop_assert!(can_fuse(&mats), "{} and {} do not fuse", ta, tb);
        let mut ya = vec![f32::NAN; rows_a * n_tokens];
        let mut yb = vec![f32::NAN; rows_b * n_tokens];
        let mut scratch = MatmulScratch::default();
        matmul_many_with(set, pool(n_threads), &mats, &x, &mut [&mut ya, &mut yb], &mut scratch);
        let want_a = row_major_matmul(ta, &wa, rows_a, cols, &x, n_threads, &mut scratch);
        let want_b = row_major_matmul(tb, &wb, rows_b, cols, &x, n_threads, &mut scratch);
        for (ty, rows, got, want) in [(ta, rows_a, &ya, &want_a), (tb, rows_b, &yb, &want_b)] {
            if let Err(e) = same_bits(got, want, rows) {
                return Err(TestCaseError::fail(format!(
                    "fused {ty} {rows}x{cols}, {n_tokens} tokens, {n_threads} threads: {e}"
                )));
            }
        }
    }
}

/// An interleaved `MatRef` whose data has the row-major length (17 rows: one whole group
/// plus one row, so the two lengths differ) is rejected before any kernel runs.
#[test]
#[should_panic(expected = "weight bytes do not match")]
fn interleaved_matref_with_the_row_major_length_panics() {
    let (ty, rows, cols) = (GgmlType::Q4_0, 17, 64);
    let w = weights(ty, rows * cols / 32, 3);
    let m = MatRef {
        layout: WeightLayout::Interleaved,
        ..MatRef::new(ty, &w, rows, cols)
    };
    let mut y = vec![0f32; rows];
    matmul_with(
        dispatch::best(),
        pool(1),
        &m,
        &floats(cols, 1.0, 5),
        &mut y,
        &mut MatmulScratch::default(),
    );
}

/// An interleaved `MatRef` one byte short of its whole groups is rejected.
#[test]
#[should_panic(expected = "weight bytes do not match")]
fn interleaved_matref_one_byte_short_panics() {
    let (ty, rows, cols) = (GgmlType::Q8_0, 20, 96);
    let w = weights(ty, rows * cols / 32, 9);
    let wi = interleaved(ty, &w, rows, cols);
    let m = MatRef {
        layout: WeightLayout::Interleaved,
        ..MatRef::new(ty, &wi[..wi.len() - 1], rows, cols)
    };
    let mut y = vec![0f32; 2 * rows];
    matmul_with(
        dispatch::best(),
        pool(1),
        &m,
        &floats(2 * cols, 1.0, 11),
        &mut y,
        &mut MatmulScratch::default(),
    );
}

/// The scalar set has no interleaved kernels, so an interleaved `MatRef` of the right
/// length given to it panics and names the missing kernels instead of misreading the bytes.
#[test]
#[should_panic(
    expected = "interleaved Q4_1 weights need kernels for them, the scalar set has none"
)]
fn interleaved_matref_with_the_scalar_set_panics() {
    let (ty, rows, cols) = (GgmlType::Q4_1, 16, 64);
    assert!(dispatch::scalar().interleaved(ty).is_none());
    let w = weights(ty, rows * cols / 32, 13);
    let wi = interleaved(ty, &w, rows, cols);
    let m = MatRef {
        layout: WeightLayout::Interleaved,
        ..MatRef::new(ty, &wi, rows, cols)
    };
    let mut y = vec![0f32; rows];
    matmul_with(
        dispatch::scalar(),
        pool(1),
        &m,
        &floats(cols, 1.0, 17),
        &mut y,
        &mut MatmulScratch::default(),
    );
}
