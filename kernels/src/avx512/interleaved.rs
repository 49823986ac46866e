//! AVX-512 VNNI kernels for weights in the row-interleaved layout of [`crate::interleave`]
//! ([`crate::dispatch::InterleavedDotFn`] for decode, a [`crate::dispatch::GemmTilesFn`]
//! for prompts), Q4_0 / Q4_1 / Q5_0 / Q5_1 / Q8_0.
//!
//! The layout stores each block of 16 rows the way the GEMM tiles of [`super::gemm`] work on
//! it (row `r` in 32-bit lane `r`), so reading a [`Block`] takes a few plain loads: one
//! `vcvtph2ps` for the 16 scales, an `and` / shift per 64 quant bytes for the nibbles, one
//! masked byte add per quant vector for the fifth bits (their masks are stored ready to
//! load). The row-major kernels instead transpose 16 rows per block (GEMM) or fold each row's
//! partial sums and gather its scale (decode, [`super::dot`]).
//!
//! The arithmetic after the load is the GEMM tile's ([`add_block`]): per block and activation
//! row, the exact integer total starting from `-(offset · Σ a)`, then one conversion and
//! one FMA with `d_w · d_a` (and `m_w · s_a` for Q4_1 / Q5_1 into a second accumulator added
//! at the end). So decode here gives the bits of the row-major decode and GEMM kernels, and
//! the prompt kernel is [`several_tiles`] with this file's load.

use std::arch::x86_64::*;

use super::gemm::{
    add_k_totals, check_k_args, check_tiles_args, has_high_bits, k_sub_block, k_sub_blocks,
    k_tiles_with, legacy_tiles, load_k_block, offset_shift, Block, KHead, SuperBlock16, GROUP,
    GROUPS,
};
use crate::avx2::legacy_layout::{
    act_block_bytes, act_quants_offset, has_min, weight_block_bytes, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
};
use crate::avx2::util::{
    check_dot_args, dispatch_rows, Q8K_BSUMS, Q8K_BYTES, Q8K_QS, STEP_PREFETCH_BYTES,
};
use crate::dispatch::{ActTile, KernelSet};
use crate::types::GgmlType;

/// Installs the interleaved-layout kernels.
pub(super) fn install(set: &mut KernelSet) {
    // The GEMM steps shared with `super::gemm` are compiled with VBMI, as there.
    if !std::arch::is_x86_feature_detected!("avx512vbmi") {
        return;
    }
    set.set_interleaved(GgmlType::Q4_0, dot::<Q4_0>, tiles::<Q4_0>);
    set.set_interleaved(GgmlType::Q4_1, dot::<Q4_1>, tiles::<Q4_1>);
    set.set_interleaved(GgmlType::Q5_0, dot::<Q5_0>, tiles::<Q5_0>);
    set.set_interleaved(GgmlType::Q5_1, dot::<Q5_1>, tiles::<Q5_1>);
    set.set_interleaved(GgmlType::Q8_0, dot::<Q8_0>, tiles::<Q8_0>);
    set.set_interleaved(GgmlType::Q4_K, k_dot::<false>, k_tiles::<false>);
    set.set_interleaved(GgmlType::Q5_K, k_dot::<true>, k_tiles::<true>);
}

/// Bytes of one interleaved block (16 rows) of `kind`.
const fn block_bytes(kind: u8) -> usize {
    GROUP * weight_block_bytes(kind)
}

/// Offsets of the minimums, the fifth-bit masks and the quant vectors in an interleaved
/// block (the table in [`crate::interleave`]; a unit test checks them against it).
const fn part_offsets(kind: u8) -> (usize, usize, usize) {
    match kind {
        Q4_0 | Q8_0 => (0, 0, 32),
        Q4_1 => (32, 0, 64),
        Q5_0 => (0, 32, 96),
        _ => (32, 64, 128), // Q5_1
    }
}

/// Reads the interleaved block at `p` (16 rows) into a [`Block`].
///
/// # Safety
/// `p` must point at a whole interleaved block of `KIND`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
unsafe fn load<const KIND: u8>(p: *const u8) -> Block {
    let (min_at, high_at, quants_at) = part_offsets(KIND);
    // SAFETY (all reads below): every part lies inside the block at `p` (caller), at the
    // offsets of the layout table.
    unsafe {
        let d = _mm512_cvtph_ps(_mm256_loadu_si256(p.cast()));
        let m = if has_min(KIND) {
            _mm512_cvtph_ps(_mm256_loadu_si256(p.add(min_at).cast()))
        } else {
            _mm512_setzero_ps()
        };
        let q = p.add(quants_at);
        let mut groups = [_mm512_setzero_si512(); GROUPS];
        if KIND == Q8_0 {
            for (k, g) in groups.iter_mut().enumerate() {
                *g = _mm512_loadu_si512(q.add(64 * k).cast());
            }
        } else {
            let low = _mm512_set1_epi8(0x0F);
            for k in 0..4 {
                let x = _mm512_loadu_si512(q.add(64 * k).cast());
                groups[k] = _mm512_and_si512(x, low);
                groups[k + 4] = _mm512_and_si512(_mm512_srli_epi16::<4>(x), low);
            }
        }
        if has_high_bits(KIND) {
            let bit4 = _mm512_set1_epi8(0x10);
            for (k, g) in groups.iter_mut().enumerate() {
                let mask = p.add(high_at + 8 * k).cast::<u64>().read_unaligned();
                *g = _mm512_mask_add_epi8(*g, _cvtu64_mask64(u64::from_le(mask)), *g, bit4);
            }
        }
        Block { groups, d, m }
    }
}

/// Where one call's activation rows and their scale table are.
#[derive(Clone, Copy)]
struct Acts {
    /// Quants of activation row 0 (the first block's quants).
    quants: *const u8,
    /// Bytes between activation rows.
    row_bytes: usize,
    /// Scale table of row 0: `d` per block, then `s` (Q8_1) or the quant sums (Q8_0).
    scales: *const f32,
    /// f32 values between the rows' scale tables.
    scale_stride: usize,
}

/// The dot products of one group of 16 interleaved rows (`n_blocks` blocks at `p`) with the
/// `N` activation rows: lane `r` of result `t` = dot(row `r`, activation row `t`).
///
/// # Safety
/// `p` must hold `n_blocks` interleaved blocks of `KIND`; each of the `N` activation rows
/// `n_blocks` activation blocks and its scale table `2 · n_blocks` values.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
unsafe fn dot_group<const KIND: u8, const N: usize>(
    p: *const u8,
    n_blocks: usize,
    acts: Acts,
) -> [__m512; N] {
    let zero = _mm512_setzero_ps();
    let mut acc = [zero; N];
    let mut acc_min = [zero; N];
    for b in 0..n_blocks {
        // SAFETY (all reads below): block b < n_blocks of the group, of every activation
        // row and of every scale table exists (caller); the prefetch address is never read.
        unsafe {
            let blk_at = p.add(b * block_bytes(KIND));
            _mm_prefetch::<_MM_HINT_T1>(blk_at.wrapping_add(STEP_PREFETCH_BYTES).cast());
            let blk = load::<KIND>(blk_at);
            for t in 0..N {
                let scales = acts.scales.add(t * acts.scale_stride);
                let mut isum = if offset_shift(KIND) > 0 {
                    let sum = *scales.add(n_blocks + b) as i32;
                    _mm512_set1_epi32(-(sum << offset_shift(KIND)))
                } else {
                    _mm512_setzero_si512()
                };
                let a = acts
                    .quants
                    .add(t * acts.row_bytes + b * act_block_bytes(KIND));
                for (k, g) in blk.groups.iter().enumerate() {
                    let quad = a.add(4 * k).cast::<i32>().read_unaligned();
                    isum = _mm512_dpbusd_epi32(isum, *g, _mm512_set1_epi32(quad));
                }
                let scale = _mm512_mul_ps(blk.d, _mm512_set1_ps(*scales.add(b)));
                acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), scale, acc[t]);
                if has_min(KIND) {
                    let s_a = _mm512_set1_ps(*scales.add(n_blocks + b));
                    acc_min[t] = _mm512_fmadd_ps(blk.m, s_a, acc_min[t]);
                }
            }
        }
    }
    if has_min(KIND) {
        for (a, m) in acc.iter_mut().zip(acc_min) {
            *a = _mm512_add_ps(*a, m);
        }
    }
    acc
}

/// Every group of a dot call against `N` activation rows: group `g`'s results go to
/// `out[t * w_rows + 16g ..]` (its real rows only).
///
/// # Safety
/// As for [`dot_group`], for the `w_rows.div_ceil(16)` groups at `w` (`group_bytes`
/// apart); `out` must hold `N * w_rows` values.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
unsafe fn dot_rows<const KIND: u8, const N: usize>(
    w: *const u8,
    w_rows: usize,
    group_bytes: usize,
    n_blocks: usize,
    acts: Acts,
    out: &mut [f32],
) {
    for (g, row0) in (0..w_rows).step_by(GROUP).enumerate() {
        let rows = (w_rows - row0).min(GROUP);
        let mask: __mmask16 = ((1u32 << rows) - 1) as u16;
        // SAFETY: group g exists (caller); the masked stores write `rows` values at
        // `t * w_rows + row0`, inside `out` (N · w_rows values).
        unsafe {
            let res = dot_group::<KIND, N>(w.add(g * group_bytes), n_blocks, acts);
            for (t, v) in res.into_iter().enumerate() {
                _mm512_mask_storeu_ps(out.as_mut_ptr().add(t * w_rows + row0), mask, v);
            }
        }
    }
}

/// Checks the interleaved weights of a call (`w_rows` rows in whole groups of whole
/// interleaved blocks of `block_bytes`, i.e. 16 rows' blocks) and returns the bytes per group.
///
/// # Panics
/// If `w` does not have that shape (a caller bug).
fn check_groups(block_bytes: usize, w: &[u8], w_rows: usize) -> usize {
    assert!(w_rows > 0, "an interleaved call needs at least one row");
    let groups = w_rows.div_ceil(GROUP);
    assert!(
        w.len().is_multiple_of(groups) && (w.len() / groups).is_multiple_of(block_bytes),
        "{} interleaved bytes are not {groups} groups of whole {block_bytes}-byte blocks",
        w.len()
    );
    w.len() / groups
}

/// Checks an [`crate::dispatch::InterleavedDotFn`] call: the groups ([`check_groups`]),
/// then the output and activations as the row-major dot kernels check them
/// (`check_dot_args` on one row's share of the bytes). Returns (bytes per group, blocks
/// per row, activation rows).
///
/// # Panics
/// On any violation (caller bugs).
fn check_dot_call(
    w_block_bytes: usize,
    a_block_bytes: usize,
    w: &[u8],
    w_rows: usize,
    acts: &[u8],
    act_row_bytes: usize,
    out: &[f32],
) -> (usize, usize, usize) {
    let group_bytes = check_groups(GROUP * w_block_bytes, w, w_rows);
    assert!(out.len().is_multiple_of(w_rows), "output is not whole rows");
    let n = out.len() / w_rows;
    let row = &w[..group_bytes / GROUP];
    let n_blocks = check_dot_args(
        row,
        w_block_bytes,
        acts,
        act_row_bytes,
        a_block_bytes,
        &out[..n],
    );
    (group_bytes, n_blocks, n)
}

/// The [`crate::dispatch::InterleavedDotFn`] for one weight kind.
fn dot<const KIND: u8>(
    w: &[u8],
    w_rows: usize,
    acts: &[u8],
    act_row_bytes: usize,
    act_scales: &[f32],
    scale_stride: usize,
    out: &mut [f32],
) {
    let (group_bytes, n_blocks, n) = check_dot_call(
        weight_block_bytes(KIND),
        act_block_bytes(KIND),
        w,
        w_rows,
        acts,
        act_row_bytes,
        out,
    );
    assert!(
        scale_stride >= 2 * n_blocks && act_scales.len() >= (n - 1) * scale_stride + 2 * n_blocks,
        "scale table of {} values (stride {scale_stride}) too short for {n} rows of {n_blocks} blocks",
        act_scales.len()
    );
    let a = Acts {
        quants: acts[act_quants_offset(KIND)..].as_ptr(),
        row_bytes: act_row_bytes,
        scales: act_scales.as_ptr(),
        scale_stride,
    };
    let w = w.as_ptr();
    // SAFETY: avx512f/bw/vl/vnni/vbmi were detected before `install` made this function
    // reachable; the sizes of the groups, activation rows, scale tables and output were
    // checked above.
    unsafe { dispatch_rows!(n, N => dot_rows::<KIND, N>(w, w_rows, group_bytes, n_blocks, a, out)) }
}

/// The several-tile steps over one interleaved group at `p` (`n_blocks` blocks):
/// [`legacy_tiles`] with this file's [`load`].
///
/// # Safety
/// `p` must hold `n_blocks` interleaved blocks of `KIND`; the tiles must have been checked
/// for `n_blocks` blocks; `out` and `placement` as for [`legacy_tiles`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
unsafe fn group_tiles<const KIND: u8>(
    p: *const u8,
    n_blocks: usize,
    tiles: &[ActTile<'_>],
    out: *mut f32,
    placement: (usize, usize, usize),
) {
    // SAFETY: blocks b < n_blocks exist in the group and every tile (caller); same CPU
    // features as this function.
    unsafe {
        let load = |b: usize| load::<KIND>(p.add(b * block_bytes(KIND)));
        legacy_tiles::<KIND>(n_blocks, tiles, load, out, placement)
    }
}

/// The interleaved [`crate::dispatch::GemmTilesFn`] for one weight kind.
///
/// # Safety
/// As for [`crate::dispatch::GemmTilesFn`].
unsafe fn tiles<const KIND: u8>(
    w: &[u8],
    w_rows: usize,
    tiles: &[ActTile<'_>],
    out: *mut f32,
    out_stride: usize,
) {
    let group_bytes = check_groups(block_bytes(KIND), w, w_rows);
    // The tile checks of the row-major kernel, on the real rows' share of the bytes.
    let row_bytes = group_bytes / GROUP;
    let (_, n_blocks) = check_tiles_args(
        &w[..w_rows * row_bytes],
        w_rows,
        weight_block_bytes(KIND),
        tiles,
        act_block_bytes(KIND),
        (has_min(KIND), offset_shift(KIND) > 0),
        out_stride,
    );
    for (g, row0) in (0..w_rows).step_by(GROUP).enumerate() {
        let rows = (w_rows - row0).min(GROUP);
        // SAFETY: avx512f/bw/vl/vnni/vbmi were detected before `install` made this function
        // reachable; group g exists and the tiles were checked above; the output places
        // are writable and ours (caller).
        unsafe {
            group_tiles::<KIND>(
                w[g * group_bytes..].as_ptr(),
                n_blocks,
                tiles,
                out,
                (out_stride, row0, rows),
            )
        }
    }
}

// ---------------------------------------------------------------------------------------
// Q4_K and Q5_K: super-blocks as transposed 16-byte chunks (see `crate::interleave`)

/// Bytes of one Q4_K (`five = false`) or Q5_K super-block.
const fn k_block_bytes(five: bool) -> usize {
    if five {
        176
    } else {
        144
    }
}

/// An interleaved super-block of 16 rows: chunk `c` is 4 vectors at `p + 256 c`.
#[derive(Clone, Copy)]
struct Chunked {
    p: *const u8,
}

impl SuperBlock16 for Chunked {
    #[inline(always)]
    unsafe fn chunk(self, at: usize) -> [__m512i; 4] {
        // SAFETY: the super-block at `p` is readable (whoever built `self`); the caller has
        // this file's CPU features (inlined into its `target_feature` functions).
        unsafe {
            let q = self.p.add(at / 16 * 256);
            std::array::from_fn(|k| _mm512_loadu_si512(q.add(64 * k).cast()))
        }
    }
}

/// The dot products of one group of 16 interleaved Q4_K / Q5_K rows (`n_blocks`
/// super-blocks at `p`) with `N` Q8_K activation rows (`a` = row 0's first block,
/// `row_bytes` apart): the arithmetic of the tile's `add_k_block` (exact integer totals per
/// super-block, one conversion and FMA each for the scales and the mins), so the results
/// are its bits; lane `r` of result `t` = dot(row `r`, activation row `t`).
///
/// # Safety
/// `p` must hold `n_blocks` interleaved super-blocks; each activation row `n_blocks` Q8_K
/// blocks.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
unsafe fn k_dot_group<const FIVE: bool, const N: usize>(
    p: *const u8,
    n_blocks: usize,
    a: *const u8,
    row_bytes: usize,
) -> [__m512; N] {
    let zero = _mm512_setzero_ps();
    let mut acc = [zero; N];
    let mut acc_min = [zero; N];
    let ib = GROUP * k_block_bytes(FIVE);
    for b in 0..n_blocks {
        // SAFETY (all reads below): super-block b of the group and of every activation row
        // exists (caller); the prefetch address is never read.
        unsafe {
            let blk_at = p.add(b * ib);
            _mm_prefetch::<_MM_HINT_T1>(blk_at.wrapping_add(STEP_PREFETCH_BYTES).cast());
            let a = a.add(b * Q8K_BYTES);
            let mut isum = [_mm512_setzero_si512(); N];
            // Each sub-block's groups are used as they are unpacked (64 vectors would not
            // stay in registers).
            let head: KHead = k_sub_blocks::<FIVE>(Chunked { p: blk_at }, |head, j, groups| {
                k_sub_block(
                    groups,
                    head.scales[j],
                    a.add(Q8K_QS + 32 * j),
                    row_bytes,
                    &mut isum,
                )
            });
            for t in 0..N {
                let row = a.add(t * row_bytes);
                // The block's i16 sums 2j and 2j + 1, read as one i32: the tile tables'
                // packing.
                let pair_sum = |j: usize| row.add(Q8K_BSUMS + 4 * j).cast::<i32>().read_unaligned();
                let d_a = row.cast::<f32>().read_unaligned();
                add_k_totals(&head, isum[t], pair_sum, d_a, &mut acc[t], &mut acc_min[t]);
            }
        }
    }
    std::array::from_fn(|t| _mm512_sub_ps(acc[t], acc_min[t]))
}

/// Every group of a K-quant dot call against `N` activation rows, results token-major as in
/// [`dot_rows`].
///
/// # Safety
/// As for [`k_dot_group`], for the `w_rows.div_ceil(16)` groups at `w` (`group_bytes`
/// apart); `out` must hold `N * w_rows` values.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
unsafe fn k_dot_rows<const FIVE: bool, const N: usize>(
    w: *const u8,
    w_rows: usize,
    group_bytes: usize,
    a: *const u8,
    row_bytes: usize,
    out: &mut [f32],
) {
    let n_blocks = group_bytes / (GROUP * k_block_bytes(FIVE));
    for (g, row0) in (0..w_rows).step_by(GROUP).enumerate() {
        let rows = (w_rows - row0).min(GROUP);
        let mask: __mmask16 = ((1u32 << rows) - 1) as u16;
        // SAFETY: group g exists (caller); the masked stores write `rows` values at
        // `t * w_rows + row0`, inside `out` (N · w_rows values).
        unsafe {
            let res = k_dot_group::<FIVE, N>(w.add(g * group_bytes), n_blocks, a, row_bytes);
            for (t, v) in res.into_iter().enumerate() {
                _mm512_mask_storeu_ps(out.as_mut_ptr().add(t * w_rows + row0), mask, v);
            }
        }
    }
}

/// The [`crate::dispatch::InterleavedDotFn`] for Q4_K (`FIVE = false`) or Q5_K: the
/// activations are Q8_K rows, whose blocks carry their own scale and sums, so `act_scales`
/// is not read (it may be empty).
fn k_dot<const FIVE: bool>(
    w: &[u8],
    w_rows: usize,
    acts: &[u8],
    act_row_bytes: usize,
    _act_scales: &[f32],
    _scale_stride: usize,
    out: &mut [f32],
) {
    let (group_bytes, n_blocks, n) = check_dot_call(
        k_block_bytes(FIVE),
        Q8K_BYTES,
        w,
        w_rows,
        acts,
        act_row_bytes,
        out,
    );
    assert!(
        n == 1 || act_row_bytes >= n_blocks * Q8K_BYTES,
        "activation rows {act_row_bytes} bytes apart overlap their {n_blocks} blocks"
    );
    let (w, a) = (w.as_ptr(), acts.as_ptr());
    // SAFETY: avx512f/bw/vl/vnni/vbmi were detected before `install` made this function
    // reachable; the sizes of the groups, activation rows and output were checked above.
    unsafe {
        dispatch_rows!(n, N => k_dot_rows::<FIVE, N>(w, w_rows, group_bytes, a, act_row_bytes, out))
    }
}

/// The several-tile steps over one interleaved Q4_K / Q5_K group at `p` (`n_blocks`
/// super-blocks): [`k_tiles_with`] reading them through [`Chunked`].
///
/// # Safety
/// `p` must hold `n_blocks` interleaved super-blocks; the tiles must have been checked for
/// them; `out` and `placement` as for [`k_tiles_with`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
unsafe fn k_group_tiles<const FIVE: bool>(
    p: *const u8,
    n_blocks: usize,
    tiles: &[ActTile<'_>],
    out: *mut f32,
    placement: (usize, usize, usize),
) {
    let ib = GROUP * k_block_bytes(FIVE);
    // SAFETY: super-blocks b < n_blocks exist in the group and every tile (caller); same
    // CPU features as this function.
    unsafe {
        let load = |b: usize| load_k_block::<FIVE>(Chunked { p: p.add(b * ib) });
        k_tiles_with(n_blocks, tiles, load, out, placement)
    }
}

/// The interleaved [`crate::dispatch::GemmTilesFn`] for Q4_K (`FIVE = false`) or Q5_K.
///
/// # Safety
/// As for [`crate::dispatch::GemmTilesFn`].
unsafe fn k_tiles<const FIVE: bool>(
    w: &[u8],
    w_rows: usize,
    tiles: &[ActTile<'_>],
    out: *mut f32,
    out_stride: usize,
) {
    let group_bytes = check_groups(GROUP * k_block_bytes(FIVE), w, w_rows);
    // The tile checks of the row-major kernel, on the real rows' share of the bytes.
    let (_, n_blocks) = check_k_args(
        &w[..w_rows * (group_bytes / GROUP)],
        w_rows,
        k_block_bytes(FIVE),
        tiles,
        out_stride,
    );
    for (g, row0) in (0..w_rows).step_by(GROUP).enumerate() {
        let rows = (w_rows - row0).min(GROUP);
        // SAFETY: avx512f/bw/vl/vnni/vbmi were detected before `install` made this function
        // reachable; group g exists and the tiles were checked above; the output places
        // are writable and ours (caller).
        unsafe {
            k_group_tiles::<FIVE>(
                w[g * group_bytes..].as_ptr(),
                n_blocks,
                tiles,
                out,
                (out_stride, row0, rows),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interleave::parts;

    #[test]
    fn part_offsets_follow_the_layout_table() {
        for (kind, ty) in [
            (Q4_0, GgmlType::Q4_0),
            (Q4_1, GgmlType::Q4_1),
            (Q5_0, GgmlType::Q5_0),
            (Q5_1, GgmlType::Q5_1),
            (Q8_0, GgmlType::Q8_0),
        ] {
            let p = parts(ty);
            let (min_at, high_at, quants_at) = part_offsets(kind);
            assert_eq!(p.min.unwrap_or(0), min_at, "{ty} minimums");
            assert_eq!(p.high_bits.unwrap_or(0), high_at, "{ty} fifth bits");
            assert_eq!(p.quants, quants_at, "{ty} quants");
            assert_eq!(p.bytes, block_bytes(kind), "{ty} block bytes");
        }
    }
}
