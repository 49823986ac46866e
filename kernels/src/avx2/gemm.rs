//! AVX2 GEMM tiles ([`crate::dispatch::GemmFn`]) for the 32-element formats (Q4_0, Q5_0
//! and Q8_0 against Q8_0 activations, Q4_1 and Q5_1 against Q8_1 activations) and for Q4_K
//! and Q5_K against Q8_K activations. (An IQ4_NL tile, table lookup plus sign trick,
//! measured about 7% slower than the one-row kernel in `legacy.rs`, which it keeps; for
//! Q6_K see below.)
//!
//! A tile is [`GEMM_TILE`] (8) activation rows; each weight block meets the 8 activation
//! blocks of the same column range. The 8 integer dot products (one per activation row)
//! are `maddubs` results that a horizontal-add tree folds into ONE vector of 8 exact i32
//! totals, which is then converted and multiplied by the 8 scale products `d_w · d_a` with
//! one conversion and one FMA, into one f32 accumulator whose lane `t` is activation row
//! `t`. Compared with the one-row-at-a-time kernels (convert and FMA every (block, row)
//! pair), the per-pair cost drops from about 7 instructions to about 3.
//!
//! Weights are unpacked unsigned where they can be (Q4_0 and Q5_0 quants `q`, 0..=31, go
//! into `maddubs` as they are; the `- 8` / `- 16` is applied in integers through the
//! activation block sums of [`ActTile::sums`]), so only Q8_0 needs the sign trick.
//! Q4_1/Q5_1 add `m_w · s_a` with a second FMA per weight block. The block layouts and the
//! unpacking are shared with the one-row kernels (`legacy_layout.rs`).
//!
//! Overflow bounds (all integer sums exact): unsigned quants are at most 31 and activation
//! quants in -128..=127, so one `maddubs` lane is at most 2·31·128 = 7936 and the sum of two
//! (the first `hadd_epi16` level) 15872 < 2^15. Q8_0 (|w| ≤ 128 after the sign trick)
//! widens with `madd` first, as the one-row kernels do. A block total is below
//! 32·128·128 < 2^31.
//!
//! `MW` weight rows are processed together so each activation vector loaded from L1 feeds
//! `MW` products (2 measured best among 1, 2 and 4).
//!
//! Q4_K/Q5_K keep the same idea per super-block: each sub-block's `maddubs` results of two
//! activation rows are added in i16, multiplied by the sub-block scale with `madd` and
//! accumulated in four pair accumulators; one fold per super-block gives the 8 rows' exact
//! `Σ scale · Σ w·a`, then one conversion and FMA (and one more for the mins term, from the
//! tile's block sums). Q6_K tiles built either way (pair accumulators with `hadd_epi16`,
//! or one accumulator per row) measured no faster, respectively ~20% slower, than the
//! one-row kernel, so Q6_K keeps `kquants.rs`.

use std::arch::x86_64::*;

use super::legacy_layout::{
    act_block_bytes, act_quants_offset, has_min, offset_shift, signed, unpack, weight_block_bytes,
    Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
};
use super::util::{f16_at, q45k_chunk, q4k_scales_mins, totals_from_pairs, Q8K_BYTES, Q8K_QS};
use crate::dispatch::{check_gemm_args, ActTile, GEMM_TILE};

/// Weight rows handled together (each activation load feeds this many products).
const MW: usize = 2;

/// The `maddubs` products of weight block `w` (`w_abs` = |w| for signed kinds, else `w`)
/// with the activation quants at `a`: 16 i16 pair sums.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn products<const KIND: u8>(w: __m256i, w_abs: __m256i, a: __m256i) -> __m256i {
    if signed(KIND) {
        _mm256_maddubs_epi16(w_abs, _mm256_sign_epi8(a, w))
    } else {
        _mm256_maddubs_epi16(w, a)
    }
}

/// Folds the products of one weight block with activation rows `t` and `t + 1` into one
/// vector of i32 partial sums laid out as `_mm256_hadd_epi32(row t, row t + 1)` of their
/// full-width i32 sums: per 128-bit lane, two partial sums of row `t` then two of row `t+1`.
///
/// # Safety
/// `a` and `a + stride` must each have 32 readable bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pair<const KIND: u8>(w: __m256i, w_abs: __m256i, a: *const u8, stride: usize) -> __m256i {
    let ones = _mm256_set1_epi16(1);
    // SAFETY: the caller guarantees 32 readable bytes at `a` and at `a + stride`.
    let (a0, a1) = unsafe {
        (
            _mm256_loadu_si256(a.cast()),
            _mm256_loadu_si256(a.add(stride).cast()),
        )
    };
    let p0 = products::<KIND>(w, w_abs, a0);
    let p1 = products::<KIND>(w, w_abs, a1);
    if signed(KIND) {
        // Pair sums up to 2·128·128 = 32768 (saturated as in the one-row kernels): widen
        // before adding.
        _mm256_hadd_epi32(_mm256_madd_epi16(p0, ones), _mm256_madd_epi16(p1, ones))
    } else {
        // |pair| ≤ 7936, so adding two stays inside i16; `madd` then widens.
        _mm256_madd_epi16(_mm256_hadd_epi16(p0, p1), ones)
    }
}

/// The 8 exact integer dot products (lane `t` = activation row `t`) of one weight block
/// with the tile's blocks at `a` (row `t`'s quants at `a + t * stride`).
///
/// # Safety
/// The 8 rows must each have 32 readable bytes at `a + t * stride`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block_totals<const KIND: u8>(w: __m256i, a: *const u8, stride: usize) -> __m256i {
    let w_abs = if signed(KIND) {
        _mm256_sign_epi8(w, w)
    } else {
        w
    };
    // SAFETY: rows 0..8 are readable at `a + t * stride` (caller).
    let (q01, q23, q45, q67) = unsafe {
        (
            pair::<KIND>(w, w_abs, a, stride),
            pair::<KIND>(w, w_abs, a.add(2 * stride), stride),
            pair::<KIND>(w, w_abs, a.add(4 * stride), stride),
            pair::<KIND>(w, w_abs, a.add(6 * stride), stride),
        )
    };
    totals_from_pairs(q01, q23, q45, q67)
}

/// `R` (≤ [`MW`]) weight rows at `w` (`row_bytes` apart, `n_blocks` blocks each) against
/// the tile: `out[m * 8 + t]` for `m < R`.
///
/// # Safety
/// `check_gemm_args` must have accepted the tile for `n_blocks` blocks of `KIND`; the `R`
/// rows must be readable at `w`, and `out` must hold `R * 8` values.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows<const KIND: u8, const R: usize>(
    w: *const u8,
    row_bytes: usize,
    n_blocks: usize,
    tile: &ActTile<'_>,
    out: &mut [f32],
) {
    let wbb = weight_block_bytes(KIND);
    let abb = act_block_bytes(KIND);
    let stride = tile.row_stride;
    let mut acc = [_mm256_setzero_ps(); R];
    let mut acc_min = [_mm256_setzero_ps(); R];
    // SAFETY (all reads below): block b < n_blocks lies inside each of the R weight rows
    // (caller) and inside every tile row, whose quants start at `a_quants_offset` of the
    // block; the tables hold n_blocks * 8 entries (`check_gemm_args`).
    unsafe {
        let a0 = tile.quants.as_ptr().add(act_quants_offset(KIND));
        for b in 0..n_blocks {
            let d_a = _mm256_loadu_ps(tile.d.as_ptr().add(b * GEMM_TILE));
            let offset = if offset_shift(KIND) > 0 {
                let sums = _mm256_loadu_si256(tile.sums.as_ptr().add(b * GEMM_TILE).cast());
                _mm256_sll_epi32(sums, _mm_cvtsi32_si128(offset_shift(KIND) as i32))
            } else {
                _mm256_setzero_si256()
            };
            let a = a0.add(b * abb);
            for m in 0..R {
                let wb = w.add(m * row_bytes + b * wbb);
                let mut isum = block_totals::<KIND>(unpack::<KIND>(wb), a, stride);
                if offset_shift(KIND) > 0 {
                    isum = _mm256_sub_epi32(isum, offset);
                }
                let scale = _mm256_mul_ps(_mm256_set1_ps(f16_at(wb)), d_a);
                acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, acc[m]);
                if has_min(KIND) {
                    let s_a = _mm256_loadu_ps(tile.s.as_ptr().add(b * GEMM_TILE));
                    acc_min[m] =
                        _mm256_fmadd_ps(_mm256_set1_ps(f16_at(wb.add(2))), s_a, acc_min[m]);
                }
            }
        }
    }
    for m in 0..R {
        let total = if has_min(KIND) {
            _mm256_add_ps(acc[m], acc_min[m])
        } else {
            acc[m]
        };
        // SAFETY: `out` holds R * 8 values (caller), so m * 8 .. m * 8 + 8 is inside it.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(m * GEMM_TILE), total) };
    }
}

/// Defines the safe [`crate::dispatch::GemmFn`] for one weight kind.
macro_rules! gemm_fn {
    ($name:ident, $kind:expr) => {
        pub(super) fn $name(w: &[u8], w_rows: usize, tile: &ActTile<'_>, out: &mut [f32]) {
            let (row_bytes, n_blocks) = check_gemm_args(
                w,
                w_rows,
                weight_block_bytes($kind),
                tile,
                act_block_bytes($kind),
                (has_min($kind), offset_shift($kind) > 0),
                out,
            );
            let mut m = 0;
            while m + MW <= w_rows {
                // SAFETY: avx2, fma and f16c were detected before `install` made this
                // function reachable; rows m .. m + MW exist (loop condition) and
                // `check_gemm_args` validated the tile and the output length.
                unsafe {
                    rows::<{ $kind }, MW>(
                        w.as_ptr().add(m * row_bytes),
                        row_bytes,
                        n_blocks,
                        tile,
                        &mut out[m * GEMM_TILE..(m + MW) * GEMM_TILE],
                    )
                };
                m += MW;
            }
            while m < w_rows {
                // SAFETY: as above, for the single row m < w_rows.
                unsafe {
                    rows::<{ $kind }, 1>(
                        w.as_ptr().add(m * row_bytes),
                        row_bytes,
                        n_blocks,
                        tile,
                        &mut out[m * GEMM_TILE..(m + 1) * GEMM_TILE],
                    )
                };
                m += 1;
            }
        }
    };
}

gemm_fn!(gemm_q4_0, Q4_0);
gemm_fn!(gemm_q4_1, Q4_1);
gemm_fn!(gemm_q5_0, Q5_0);
gemm_fn!(gemm_q5_1, Q5_1);
gemm_fn!(gemm_q8_0, Q8_0);

// ---------------------------------------------------------------------------------------
// Q4_K and Q5_K against Q8_K activations

/// Sub-blocks of 32 elements in a 256-element super-block.
const SUB_BLOCKS: usize = 8;

/// Adds `scale · Σ w·a` of one 32-element sub-block (unsigned quants `w`, at most 63) to
/// the row accumulators: `acc[k][i]` holds 8 i32 partial sums of row `2k + i`, which
/// [`fold_pairs`] finishes. `a` points at the sub-block's quants in tile row 0.
///
/// # Safety
/// The 8 tile rows must have 32 readable bytes at `a + t * stride`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn sub_block(
    w: __m256i,
    scale: __m256i,
    a: *const u8,
    stride: usize,
    acc: &mut [[__m256i; 2]; 4],
) {
    for (k, acc) in acc.iter_mut().enumerate() {
        // SAFETY: rows 2k and 2k + 1 are among the 8 readable rows (caller).
        let (a0, a1) = unsafe {
            (
                _mm256_loadu_si256(a.add(2 * k * stride).cast()),
                _mm256_loadu_si256(a.add((2 * k + 1) * stride).cast()),
            )
        };
        // |pair| ≤ 2·63·128 = 16128, so each `maddubs` is exact; `madd` with the scale
        // widens to i32 (no horizontal add here: the rows are folded once per super-block).
        let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(w, a0), scale);
        let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(w, a1), scale);
        acc[0] = _mm256_add_epi32(acc[0], p0);
        acc[1] = _mm256_add_epi32(acc[1], p1);
    }
}

/// Finishes the row accumulators (`acc[k][i]`: row `2k + i`) into one vector of 8 totals
/// (lane `t` = row `t`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn fold_pairs(acc: &[[__m256i; 2]; 4]) -> __m256i {
    let pair = |p: &[__m256i; 2]| _mm256_hadd_epi32(p[0], p[1]);
    let q0123 = _mm256_hadd_epi32(pair(&acc[0]), pair(&acc[1]));
    let q4567 = _mm256_hadd_epi32(pair(&acc[2]), pair(&acc[3]));
    _mm256_add_epi32(
        _mm256_permute2x128_si256(q0123, q4567, 0x20),
        _mm256_permute2x128_si256(q0123, q4567, 0x31),
    )
}

/// One Q4_K (`FIVE = false`, 144-byte blocks) or Q5_K (`FIVE = true`, 176-byte blocks)
/// weight row of `n_blocks` super-blocks at `w` against the tile: `out[t]`.
///
/// Per super-block: the integer sums `Σ_j sc_j · Σ w·a` of all 8 rows in one vector (pair
/// accumulators folded once), the mins term `Σ_j m_j · (bsum_2j + bsum_2j+1)` from the
/// tile's sub-block sums, then one conversion and FMA for each.
///
/// # Safety
/// `check_q45k_args` must have accepted the tile for `n_blocks` blocks; the row must be
/// readable at `w`; `out` must hold 8 values.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q45k_row<const FIVE: bool>(
    w: *const u8,
    n_blocks: usize,
    tile: &ActTile<'_>,
    out: &mut [f32],
) {
    let block_bytes = if FIVE { 176 } else { 144 };
    let stride = tile.row_stride;
    let mut acc = _mm256_setzero_ps();
    let mut acc_min = _mm256_setzero_ps();
    // SAFETY (all reads below): super-block b < n_blocks lies inside the weight row
    // (caller) and inside every tile row; the tables hold n_blocks * 8 `d` values and
    // n_blocks * 64 sub-block sums (`check_q45k_args`).
    unsafe {
        for b in 0..n_blocks {
            let wb = w.add(b * block_bytes);
            let (sc, mn) = q4k_scales_mins(wb.add(4));
            let a = tile.quants.as_ptr().add(b * Q8K_BYTES + Q8K_QS);
            let mut pairs = [[_mm256_setzero_si256(); 2]; 4];
            let mut qh = if FIVE {
                _mm256_loadu_si256(wb.add(16).cast())
            } else {
                _mm256_setzero_si256()
            };
            for c in 0..4 {
                let (lo, hi) = q45k_chunk::<FIVE>(wb, c, &mut qh);
                let s_lo = _mm256_set1_epi16(((sc >> (16 * c)) & 0xFF) as i16);
                let s_hi = _mm256_set1_epi16(((sc >> (16 * c + 8)) & 0xFF) as i16);
                sub_block(lo, s_lo, a.add(64 * c), stride, &mut pairs);
                sub_block(hi, s_hi, a.add(64 * c + 32), stride, &mut pairs);
            }
            let isum = fold_pairs(&pairs);
            let sums = tile.sums.as_ptr().add(b * SUB_BLOCKS * GEMM_TILE);
            let mut msum = _mm256_setzero_si256();
            for j in 0..SUB_BLOCKS {
                // Both 16-element sums of sub-block j times its min m_j.
                let m = ((mn >> (8 * j)) & 0xFF) as i32;
                let s = _mm256_loadu_si256(sums.add(j * GEMM_TILE).cast());
                let m = _mm256_set1_epi32(m | (m << 16));
                msum = _mm256_add_epi32(msum, _mm256_madd_epi16(m, s));
            }
            let d_a = _mm256_loadu_ps(tile.d.as_ptr().add(b * GEMM_TILE));
            let d = _mm256_mul_ps(_mm256_set1_ps(f16_at(wb)), d_a);
            let dmin = _mm256_mul_ps(_mm256_set1_ps(f16_at(wb.add(2))), d_a);
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), d, acc);
            acc_min = _mm256_fmadd_ps(_mm256_cvtepi32_ps(msum), dmin, acc_min);
        }
    }
    // SAFETY: `out` holds 8 values (caller).
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), _mm256_sub_ps(acc, acc_min)) };
}

/// Checks the [`crate::dispatch::GemmFn`] contract for `w_rows` rows of Q4_K/Q5_K blocks of
/// `block_bytes` against a Q8_K tile, and returns (bytes per weight row, blocks per row).
///
/// # Panics
/// On any violation (caller bugs).
fn check_q45k_args(
    w: &[u8],
    w_rows: usize,
    block_bytes: usize,
    tile: &ActTile<'_>,
    out: &[f32],
) -> (usize, usize) {
    let (row_bytes, n_blocks) =
        check_gemm_args(w, w_rows, block_bytes, tile, Q8K_BYTES, (false, false), out);
    assert!(
        tile.sums.len() >= n_blocks * SUB_BLOCKS * GEMM_TILE,
        "tile sub-block sums shorter than {} entries",
        n_blocks * SUB_BLOCKS * GEMM_TILE
    );
    (row_bytes, n_blocks)
}

/// Defines the safe [`crate::dispatch::GemmFn`] for Q4_K or Q5_K.
macro_rules! q45k_gemm_fn {
    ($name:ident, $five:expr, $block_bytes:expr) => {
        pub(super) fn $name(w: &[u8], w_rows: usize, tile: &ActTile<'_>, out: &mut [f32]) {
            let (row_bytes, n_blocks) = check_q45k_args(w, w_rows, $block_bytes, tile, out);
            for (w_row, out_row) in w
                .chunks_exact(row_bytes)
                .zip(out.chunks_exact_mut(GEMM_TILE))
            {
                // SAFETY: avx2, fma and f16c were detected before `install` made this
                // function reachable; every row is `row_bytes` long and `check_q45k_args`
                // validated the tile; each output chunk holds 8 values.
                unsafe { q45k_row::<{ $five }>(w_row.as_ptr(), n_blocks, tile, out_row) };
            }
        }
    };
}

q45k_gemm_fn!(gemm_q4_k, false, 144);
q45k_gemm_fn!(gemm_q5_k, true, 176);
