//! AVX-512 VNNI GEMM tiles ([`crate::dispatch::GemmFn`]) for the 32-element formats (Q4_0,
//! Q5_0 and Q8_0 against Q8_0 activations, Q4_1 and Q5_1 against Q8_1 activations) and for
//! Q4_K, Q5_K and Q6_K against Q8_K activations.
//!
//! Weight rows go across the lanes: 16 weight rows are handled together, and for each
//! weight block the 16 rows' quants are rearranged into 8 vectors ("groups"), group `k`
//! holding in 32-bit lane `r` the quants `4k .. 4k + 4` of row `r` as unsigned bytes. For
//! activation row `t`, each group meets the matching 4 activation quants broadcast to every
//! lane (`vpdpbusd` with a broadcast memory operand), so after 8 `vpdpbusd` lane `r` holds
//! the exact block total of weight row `r` with activation row `t`: no horizontal adds. One
//! conversion and one FMA with the 16 weight scales times the row's activation scale then
//! finish the block for 16 products. A last 8x16 transpose puts the results in the
//! `[weight row][activation row]` order of the output.
//!
//! The weights enter unsigned (`vpdpbusd` multiplies u8 by i8): Q4_0 / Q5_0 quants `q`
//! (0..=15, 0..=31) as they are, Q8_0 quants shifted to `q + 128`; the offsets (8, 16, 128)
//! come back in integers through the activation block sums of [`ActTile::sums`]: each
//! block's i32 accumulator starts at `-(offset · Σ a)`. Q4_1 / Q5_1 add `m_w · s_a` with a
//! second FMA. Per product this is the f32 arithmetic of the AVX2 tile (`avx2/gemm.rs`) and
//! of the AVX2 one-row kernels on the same exact integers, so the results are the same bits.
//!
//! The 16 rows' block fields are read with 16x4 transposes of 16-byte loads (one for the
//! scale, minimum and Q5 high bits at the block start, one per 16 quant bytes); gathers
//! for the block heads measured slower. The fifth bits of Q5_0 / Q5_1 are spread into
//! bit 4 of each byte with one `vpmultishiftqb` per group (AVX-512 VBMI, which `install`
//! checks in addition to the tier's features).
//!
//! The rearranged blocks do not depend on the activations, so the several-tile kernel
//! ([`crate::dispatch::GemmTilesFn`], `gemm_tiles`) rearranges a run of [`PACKED_BLOCKS`]
//! blocks once and lets up to 16 tiles pass over them, each with its own accumulators and
//! the same per-block steps (`add_block`), so the bits are those of one tile at a time; its
//! results go token-major (one masked store per tile row, no output transpose).
//!
//! Q4_K / Q5_K use the same layout per 32-element sub-block: the 8 `vpdpbusd` give the
//! sub-block dot per lane, one `vpmulld` by the lanes' 6-bit scales adds it to the
//! super-block total; the mins term comes from `vpdpwssd` of the lanes' mins against the
//! tile's packed pairs of 16-element activation sums. One conversion and FMA each per
//! super-block, as in `avx2/gemm.rs` and the Q4_K/Q5_K one-row kernels, so decode and the
//! tile still agree bit for bit.
//!
//! Q6_K (which has no AVX2 tile) works the same way per 16-element sub-block (`vpmulld` by
//! its i8 scale); the `- 32` comes back through `vpdpwssd` of the scale pairs against the
//! tile's 16-element activation sums.
//!
//! Measured on Zen 4 (2 cores, shared machine, 4096x4096x512, 2 threads, alternating runs):
//! about 2-2.5x the AVX2 tiles for Q4_0, Q4_1, Q5_0 and Q8_0 (Q4_0 ~220 GFLOP/s), ~1.5x for
//! Q4_K and Q5_K (Q4_K ~200 GFLOP/s), and ~1.2-1.3x the VNNI one-row kernel for Q6_K. A last
//! group of fewer than 16 rows still costs a full group (the matmul's row blocks are not
//! multiples of 16 rows).
//!
//! Overflow bounds (all integer sums exact, `vpdpbusd` does not saturate): a product is at
//! most 255·128 in magnitude, a block total of 32 of them below 2^21, and the offset term
//! `128 · Σ a` at most 128·32·128 = 2^19.

use std::arch::x86_64::*;
use std::slice::from_ref;

use crate::avx2::legacy_layout::{
    act_block_bytes, act_quants_offset, has_min, weight_block_bytes, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
};
use crate::avx2::util::{Q8K_BYTES, Q8K_QS};
use crate::dispatch::{
    check_gemm_args, check_gemm_shapes, ActTile, KernelSet, GEMM_TILE, MAX_GEMM_TILES,
};
use crate::types::GgmlType;

/// Weight rows per group (one per 32-bit lane of a 512-bit vector).
pub(super) const GROUP: usize = 16;
/// Quant groups of 4 per 32-element block.
pub(super) const GROUPS: usize = 8;

/// Whether `kind` carries a fifth bit per quant (`qh`).
pub(super) const fn has_high_bits(kind: u8) -> bool {
    matches!(kind, Q5_0 | Q5_1)
}

/// Offset of the packed quants (`qs`) inside a weight block.
const fn quants_offset(kind: u8) -> usize {
    match kind {
        Q4_0 | Q8_0 => 2,
        Q4_1 => 4,
        Q5_0 => 6,
        _ => 8, // Q5_1
    }
}

/// Log2 of the offset that the unsigned weight bytes carry (`q - 8`, `q - 16`, `q + 128`
/// stored as `q ^ 0x80`), 0 for the kinds with a minimum instead.
pub(super) const fn offset_shift(kind: u8) -> u32 {
    match kind {
        Q4_0 => 3,
        Q5_0 => 4,
        Q8_0 => 7,
        _ => 0,
    }
}

/// The `vpmultishiftqb` control that moves bit `4k + j` of each 32-bit lane of `qh` into
/// bit 4 of byte `j` of that lane: the byte at qword position `p` takes the 8 bits starting
/// at `bit - 4` (wrapping inside the qword), where `bit` is that quant's bit.
const fn high_bit_control(k: usize) -> i64 {
    let mut control = 0u64;
    let mut p = 0;
    while p < 8 {
        let bit = (p / 4) * 32 + 4 * k + p % 4;
        control |= (((bit + 60) % 64) as u64) << (8 * p);
        p += 1;
    }
    control as i64
}

/// The quants of one weight block of [`GROUP`] rows, as [`GROUPS`] vectors of unsigned
/// bytes (group `k`, lane `r`: quants `4k .. 4k + 4` of row `r`), with the rows' scales
/// (and minimums) as f32.
#[derive(Clone, Copy)]
pub(super) struct Block {
    /// The quant groups.
    pub(super) groups: [__m512i; GROUPS],
    /// The 16 rows' `d`.
    pub(super) d: __m512,
    /// The 16 rows' `m` (Q4_1 / Q5_1; zero otherwise).
    pub(super) m: __m512,
}

/// Converts the low 16 bits of each 32-bit lane (an f16) to f32.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
unsafe fn f16_lanes(v: __m512i) -> __m512 {
    _mm512_cvtph_ps(_mm512_cvtepi32_epi16(v))
}

/// The 4 dwords of the 16 bytes at `p + offsets[r]` for the 16 rows `r`, transposed: vector
/// `k`, lane `r` = dword `k` of row `r`.
///
/// # Safety
/// 16 bytes must be readable at `p + offsets[r]` for every `r`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
unsafe fn transpose_16x4(p: *const u8, offsets: &[usize; GROUP]) -> [__m512i; 4] {
    // SAFETY: every load reads the 16 bytes at `p + offsets[r]` (caller).
    let x = unsafe {
        let row = |r: usize| _mm_loadu_si128(p.add(offsets[r]).cast());
        // Vector i, 128-bit lane l: row i + 4l.
        let quad = |i: usize| {
            let v = _mm512_castsi128_si512(row(i));
            let v = _mm512_inserti32x4::<1>(v, row(i + 4));
            let v = _mm512_inserti32x4::<2>(v, row(i + 8));
            _mm512_inserti32x4::<3>(v, row(i + 12))
        };
        [quad(0), quad(1), quad(2), quad(3)]
    };
    let t0 = _mm512_unpacklo_epi32(x[0], x[1]);
    let t1 = _mm512_unpackhi_epi32(x[0], x[1]);
    let t2 = _mm512_unpacklo_epi32(x[2], x[3]);
    let t3 = _mm512_unpackhi_epi32(x[2], x[3]);
    [
        _mm512_unpacklo_epi64(t0, t2),
        _mm512_unpackhi_epi64(t0, t2),
        _mm512_unpacklo_epi64(t1, t3),
        _mm512_unpackhi_epi64(t1, t3),
    ]
}

/// Reads weight block `b` of the 16 rows (row `r` at `w + offsets[r]`) into a [`Block`].
///
/// # Safety
/// Block `b` must lie inside each of the 16 rows.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
unsafe fn load_block<const KIND: u8>(w: *const u8, offsets: &[usize; GROUP], b: usize) -> Block {
    // SAFETY (all reads below): each read lies inside block `b` of one of the 16 rows
    // (caller), whose fields sit at the offsets of `crate::blocks`.
    unsafe {
        let p = w.add(b * weight_block_bytes(KIND));
        // Dwords 0 and 1 of each row's block: d (low half of dword 0), m (high half, Q4_1
        // and Q5_1), qh (Q5_0: bytes 2..6, Q5_1: dword 1).
        let head = transpose_16x4(p, offsets);
        let d = f16_lanes(head[0]);
        let m = if has_min(KIND) {
            f16_lanes(_mm512_srli_epi32::<16>(head[0]))
        } else {
            _mm512_setzero_ps()
        };
        let low = _mm512_set1_epi8(0x0F);
        let mut groups = [_mm512_setzero_si512(); GROUPS];
        let q = transpose_16x4(p.add(quants_offset(KIND)), offsets);
        if KIND == Q8_0 {
            let high = transpose_16x4(p.add(quants_offset(KIND) + 16), offsets);
            let flip = _mm512_set1_epi8(-128);
            for k in 0..4 {
                groups[k] = _mm512_xor_si512(q[k], flip);
                groups[k + 4] = _mm512_xor_si512(high[k], flip);
            }
        } else {
            for k in 0..4 {
                groups[k] = _mm512_and_si512(q[k], low);
                groups[k + 4] = _mm512_and_si512(_mm512_srli_epi16::<4>(q[k]), low);
            }
        }
        if has_high_bits(KIND) {
            let qh = if KIND == Q5_0 {
                _mm512_or_si512(
                    _mm512_srli_epi32::<16>(head[0]),
                    _mm512_slli_epi32::<16>(head[1]),
                )
            } else {
                head[1]
            };
            let bit4 = _mm512_set1_epi8(0x10);
            for (k, g) in groups.iter_mut().enumerate() {
                let control = _mm512_set1_epi64(high_bit_control(k));
                let spread = _mm512_multishift_epi64_epi8(control, qh);
                // g | (spread & 0x10)
                *g = _mm512_ternarylogic_epi32::<0xF8>(*g, spread, bit4);
            }
        }
        Block { groups, d, m }
    }
}

/// Transposes the 8 accumulators (vector `t`, lane `r`) into `out[r * 8 + t]` for the 16
/// rows `r`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
unsafe fn transpose_out(acc: &[__m512; GEMM_TILE], out: &mut [f32; GROUP * GEMM_TILE]) {
    let u_lo: [__m512; 4] = std::array::from_fn(|j| _mm512_unpacklo_ps(acc[2 * j], acc[2 * j + 1]));
    let u_hi: [__m512; 4] = std::array::from_fn(|j| _mm512_unpackhi_ps(acc[2 * j], acc[2 * j + 1]));
    let pd = _mm512_castps_pd;
    // v[g][i], 128-bit lane l: activation rows 4g .. 4g + 4 of weight row 4l + i.
    let v: [[__m512; 4]; 2] = std::array::from_fn(|g| {
        let (a, b) = (pd(u_lo[2 * g]), pd(u_lo[2 * g + 1]));
        let (c, e) = (pd(u_hi[2 * g]), pd(u_hi[2 * g + 1]));
        [
            _mm512_castpd_ps(_mm512_unpacklo_pd(a, b)),
            _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)),
            _mm512_castpd_ps(_mm512_unpacklo_pd(c, e)),
            _mm512_castpd_ps(_mm512_unpackhi_pd(c, e)),
        ]
    });
    // Weight rows i and 4 + i, then 8 + i and 12 + i: lanes l of v[0][i] and v[1][i].
    let first = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
    let second = _mm512_add_epi32(first, _mm512_set1_epi32(8));
    for (i, (&v0, &v1)) in v[0].iter().zip(&v[1]).enumerate() {
        for (h, index) in [first, second].into_iter().enumerate() {
            let rows = _mm512_permutex2var_ps(v0, index, v1);
            let r0 = 8 * h + i;
            let pair = _mm512_castps_pd(rows);
            // SAFETY: rows r0 and r0 + 4 (< 16) have their 8 values inside `out`.
            unsafe {
                _mm256_storeu_ps(
                    out.as_mut_ptr().add(r0 * GEMM_TILE),
                    _mm512_castps512_ps256(rows),
                );
                _mm256_storeu_pd(
                    out.as_mut_ptr().add((r0 + 4) * GEMM_TILE).cast(),
                    _mm512_extractf64x4_pd::<1>(pair),
                );
            }
        }
    }
}

/// Adds weight block `b` (rearranged in `blk`) times block `b` of the tile's rows to the
/// accumulators: lane `r` of `acc[t]` gains `d_w · d_a · isum` of weight row `r` and tile
/// row `t` (and `acc_min[t]` gains `m_w · s_a` for Q4_1 / Q5_1).
///
/// # Safety
/// Block `b` must lie inside every tile row, and the tile's tables must cover it
/// (`check_gemm_args`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
pub(super) unsafe fn add_block<const KIND: u8>(
    blk: &Block,
    tile: &ActTile<'_>,
    b: usize,
    acc: &mut [__m512; GEMM_TILE],
    acc_min: &mut [__m512; GEMM_TILE],
) {
    let stride = tile.row_stride;
    let mut init = [0i32; GEMM_TILE];
    // SAFETY (all reads below): block b lies inside every tile row, whose quants start at
    // `act_quants_offset` of the block; the tables hold entries for block b (caller).
    unsafe {
        if offset_shift(KIND) > 0 {
            // -(offset · Σ a) for each activation row: the accumulators' start.
            let sums = _mm256_loadu_si256(tile.sums.as_ptr().add(b * GEMM_TILE).cast());
            let shifted = _mm256_sll_epi32(sums, _mm_cvtsi32_si128(offset_shift(KIND) as i32));
            let neg = _mm256_sub_epi32(_mm256_setzero_si256(), shifted);
            _mm256_storeu_si256(init.as_mut_ptr().cast(), neg);
        }
        let d_a = tile.d.as_ptr().add(b * GEMM_TILE);
        let a = tile
            .quants
            .as_ptr()
            .add(act_quants_offset(KIND) + b * act_block_bytes(KIND));
        let mut isum: [__m512i; GEMM_TILE] = std::array::from_fn(|t| _mm512_set1_epi32(init[t]));
        for (k, g) in blk.groups.iter().enumerate() {
            for (t, isum) in isum.iter_mut().enumerate() {
                let quad = a.add(t * stride + 4 * k).cast::<i32>().read_unaligned();
                *isum = _mm512_dpbusd_epi32(*isum, *g, _mm512_set1_epi32(quad));
            }
        }
        for (t, isum) in isum.into_iter().enumerate() {
            let scale = _mm512_mul_ps(blk.d, _mm512_set1_ps(*d_a.add(t)));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), scale, acc[t]);
            if has_min(KIND) {
                let s_a = _mm512_set1_ps(*tile.s.as_ptr().add(b * GEMM_TILE + t));
                acc_min[t] = _mm512_fmadd_ps(blk.m, s_a, acc_min[t]);
            }
        }
    }
}

/// [`GROUP`] weight rows (row `r` at `w + offsets[r]`, `n_blocks` blocks each) against
/// the tile: `out[r * 8 + t]`.
///
/// # Safety
/// `check_gemm_args` must have accepted the tile for `n_blocks` blocks of `KIND`; the 16
/// rows must be readable.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
unsafe fn group<const KIND: u8>(
    w: *const u8,
    offsets: &[usize; GROUP],
    n_blocks: usize,
    tile: &ActTile<'_>,
    out: &mut [f32; GROUP * GEMM_TILE],
) {
    let mut acc = [_mm512_setzero_ps(); GEMM_TILE];
    let mut acc_min = [_mm512_setzero_ps(); GEMM_TILE];
    for b in 0..n_blocks {
        // SAFETY: block b < n_blocks lies inside each of the 16 weight rows and the tile
        // (caller).
        unsafe {
            let blk = load_block::<KIND>(w, offsets, b);
            add_block::<KIND>(&blk, tile, b, &mut acc, &mut acc_min);
        }
    }
    if has_min(KIND) {
        for (a, m) in acc.iter_mut().zip(acc_min) {
            *a = _mm512_add_ps(*a, m);
        }
    }
    transpose_out(&acc, out);
}

/// Weight blocks [`group_tiles`] rearranges at a time (16 rows x 16 blocks x 640 bytes =
/// 10 KiB, which stays in L1 while every tile passes over it).
pub(super) const PACKED_BLOCKS: usize = 16;

/// The several-tile loop shared by every format: each run of up to `PACKED` weight blocks
/// of the 16 rows is rearranged once (`load(b)`), then every tile adds those blocks to its
/// own accumulators in block order (`add`), so each product gets the bits of the one-tile
/// kernel, which runs the same `load` and `add` per block. At the end `combine(acc,
/// acc_min)` of tile row `t` of `tiles[i]` (its first `rows` lanes, weight rows `row0 ..`)
/// goes to `out + (8i + t) · out_stride + row0 ..`.
///
/// # Safety
/// `load` and `add` must be safe to call for every block `b < n_blocks` (of the 16 rows and
/// of every tile); `tiles.len() <= MAX_GEMM_TILES`, `1 <= rows <= 16`; the `rows` values at
/// each of those output places must be writable and used by nothing else; the CPU must have
/// the features of this file (the caller is one of its `target_feature` functions, into
/// which this is inlined).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) unsafe fn several_tiles<P: Copy, const PACKED: usize>(
    n_blocks: usize,
    tiles: &[ActTile<'_>],
    empty: P,
    mut load: impl FnMut(usize) -> P,
    mut add: impl FnMut(&P, &ActTile<'_>, usize, &mut [__m512; GEMM_TILE], &mut [__m512; GEMM_TILE]),
    combine: impl Fn(__m512, __m512) -> __m512,
    out: *mut f32,
    (out_stride, row0, rows): (usize, usize, usize),
) {
    // SAFETY (all intrinsics below): the caller runs on a CPU with this file's features.
    unsafe {
        let zero = _mm512_setzero_ps();
        let mut acc = [[zero; GEMM_TILE]; MAX_GEMM_TILES];
        let mut acc_min = [[zero; GEMM_TILE]; MAX_GEMM_TILES];
        let mut packed = [empty; PACKED];
        let mut b0 = 0;
        while b0 < n_blocks {
            let len = (n_blocks - b0).min(PACKED);
            for (j, blk) in packed[..len].iter_mut().enumerate() {
                *blk = load(b0 + j);
            }
            for ((tile, acc), acc_min) in tiles.iter().zip(&mut acc).zip(&mut acc_min) {
                for (j, blk) in packed[..len].iter().enumerate() {
                    add(blk, tile, b0 + j, acc, acc_min);
                }
            }
            b0 += len;
        }
        let mask: __mmask16 = ((1u32 << rows) - 1) as u16;
        for (i, (acc, acc_min)) in acc.iter().zip(&acc_min).take(tiles.len()).enumerate() {
            for t in 0..GEMM_TILE {
                let start = (i * GEMM_TILE + t) * out_stride + row0;
                // The mask covers `rows` values, writable there (caller).
                _mm512_mask_storeu_ps(out.add(start), mask, combine(acc[t], acc_min[t]));
            }
        }
    }
}

/// [`several_tiles`] with the 32-element steps: `load(b)` rearranges block `b` of the 16
/// rows (from the file's rows or from interleaved ones), [`add_block`] adds it for each tile,
/// [`PACKED_BLOCKS`] blocks at a time.
///
/// # Safety
/// `load` must be safe to call for every block `b < n_blocks`; the tiles must have been
/// checked for `n_blocks` blocks of `KIND`; `out` and `placement` as for [`several_tiles`],
/// whose CPU-feature requirement this has too (it is inlined into the callers).
#[inline(always)]
pub(super) unsafe fn legacy_tiles<const KIND: u8>(
    n_blocks: usize,
    tiles: &[ActTile<'_>],
    load: impl FnMut(usize) -> Block,
    out: *mut f32,
    placement: (usize, usize, usize),
) {
    // SAFETY: forwarded to the caller.
    unsafe {
        let empty = Block {
            groups: [_mm512_setzero_si512(); GROUPS],
            d: _mm512_setzero_ps(),
            m: _mm512_setzero_ps(),
        };
        several_tiles::<Block, PACKED_BLOCKS>(
            n_blocks,
            tiles,
            empty,
            load,
            |blk, tile, b, acc, acc_min| add_block::<KIND>(blk, tile, b, acc, acc_min),
            |acc, acc_min| {
                if has_min(KIND) {
                    _mm512_add_ps(acc, acc_min)
                } else {
                    acc
                }
            },
            out,
            placement,
        )
    }
}

/// [`group`] for several tiles ([`legacy_tiles`] with [`load_block`]).
///
/// # Safety
/// As for [`group`], for every tile; `tiles.len() <= MAX_GEMM_TILES`, `1 <= rows <= 16`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
unsafe fn group_tiles<const KIND: u8>(
    w: *const u8,
    offsets: &[usize; GROUP],
    n_blocks: usize,
    tiles: &[ActTile<'_>],
    out: *mut f32,
    placement: (usize, usize, usize),
) {
    // SAFETY: blocks b < n_blocks lie inside each of the 16 weight rows and every tile
    // (caller); same CPU features as this function.
    unsafe {
        legacy_tiles::<KIND>(
            n_blocks,
            tiles,
            |b| load_block::<KIND>(w, offsets, b),
            out,
            placement,
        )
    }
}

/// Checks a [`crate::dispatch::GemmTilesFn`] call (each tile as a [`crate::dispatch::GemmFn`]
/// call would be checked, with `needs` as there) and returns (row bytes, blocks per row).
///
/// # Panics
/// If the slices do not fit the contract (a caller bug).
pub(super) fn check_tiles_args(
    w: &[u8],
    w_rows: usize,
    w_block_bytes: usize,
    tiles: &[ActTile<'_>],
    a_block_bytes: usize,
    needs: (bool, bool),
    out_stride: usize,
) -> (usize, usize) {
    assert!(
        (1..=MAX_GEMM_TILES).contains(&tiles.len()),
        "a GemmTilesFn takes 1..={MAX_GEMM_TILES} tiles, got {}",
        tiles.len()
    );
    assert!(
        out_stride >= w_rows,
        "output stride {out_stride} below the {w_rows} rows"
    );
    let mut geometry = (0, 0);
    for tile in tiles {
        geometry = check_gemm_shapes(w, w_rows, w_block_bytes, tile, a_block_bytes, needs);
    }
    geometry
}

/// Runs `group_fn(first row, offsets, (out_stride, row0, rows))` for each group of
/// [`GROUP`] rows of a several-tile call (rows `row_bytes` apart, results `out_stride`
/// apart); a last group of fewer rows repeats its last row in the missing lanes.
fn for_each_tiles_group(
    w: &[u8],
    w_rows: usize,
    row_bytes: usize,
    out_stride: usize,
    mut group_fn: impl FnMut(*const u8, &[usize; GROUP], (usize, usize, usize)),
) {
    for row0 in (0..w_rows).step_by(GROUP) {
        let rows = (w_rows - row0).min(GROUP);
        let offsets: [usize; GROUP] = std::array::from_fn(|r| r.min(rows - 1) * row_bytes);
        group_fn(
            w[row0 * row_bytes..].as_ptr(),
            &offsets,
            (out_stride, row0, rows),
        );
    }
}

/// Runs `group_fn(rows, offsets, results)` for each group of [`GROUP`] weight rows of `w`
/// (rows of `row_bytes` bytes; `rows` points at the group's first row and `offsets` holds
/// each lane's row offset from it) and copies each group's results into its part of `out`
/// (`[row][activation row]`). A last group of fewer rows repeats its last row in the
/// missing lanes and keeps only its own results.
fn for_each_group(
    w: &[u8],
    row_bytes: usize,
    out: &mut [f32],
    mut group_fn: impl FnMut(*const u8, &[usize; GROUP], &mut [f32; GROUP * GEMM_TILE]),
) {
    let mut results = [0f32; GROUP * GEMM_TILE];
    for (g, out) in out.chunks_mut(GROUP * GEMM_TILE).enumerate() {
        let rows = out.len() / GEMM_TILE;
        let offsets: [usize; GROUP] = std::array::from_fn(|r| r.min(rows - 1) * row_bytes);
        group_fn(w[g * GROUP * row_bytes..].as_ptr(), &offsets, &mut results);
        out.copy_from_slice(&results[..out.len()]);
    }
}

/// Checks that a K-quant tile carries the block sums of every 32-element sub-block.
///
/// # Panics
/// If the table is short (a caller bug).
fn check_sub_block_sums(tile: &ActTile<'_>, n_blocks: usize) {
    assert!(
        tile.sums.len() >= n_blocks * SUB_BLOCKS * GEMM_TILE,
        "tile sub-block sums shorter than {} entries",
        n_blocks * SUB_BLOCKS * GEMM_TILE
    );
}

/// Checks a K-quant call (one tile or several) against Q8_K activations: the
/// [`check_tiles_args`] checks plus every tile's sub-block sums; returns (row bytes,
/// super-blocks per row).
///
/// # Panics
/// If the slices do not fit the contract (a caller bug).
pub(super) fn check_k_args(
    w: &[u8],
    w_rows: usize,
    block_bytes: usize,
    tiles: &[ActTile<'_>],
    out_stride: usize,
) -> (usize, usize) {
    let (row_bytes, n_blocks) = check_tiles_args(
        w,
        w_rows,
        block_bytes,
        tiles,
        Q8K_BYTES,
        (false, false),
        out_stride,
    );
    for tile in tiles {
        check_sub_block_sums(tile, n_blocks);
    }
    (row_bytes, n_blocks)
}

/// The tile for one weight kind: groups of 16 rows; a last group of fewer rows repeats its
/// last row in the missing lanes and keeps only its own results.
fn gemm<const KIND: u8>(w: &[u8], w_rows: usize, tile: &ActTile<'_>, out: &mut [f32]) {
    let (row_bytes, n_blocks) = check_gemm_args(
        w,
        w_rows,
        weight_block_bytes(KIND),
        tile,
        act_block_bytes(KIND),
        (has_min(KIND), offset_shift(KIND) > 0),
        out,
    );
    for_each_group(w, row_bytes, out, |rows, offsets, results| {
        // SAFETY: avx512f/bw/vl/vnni/vbmi were detected before `install` made this function
        // reachable; `for_each_group` passes the start of a group whose rows at `offsets`
        // exist; `check_gemm_args` validated the tile.
        unsafe { group::<KIND>(rows, offsets, n_blocks, tile, results) }
    });
}

/// The several-tile kernel ([`crate::dispatch::GemmTilesFn`]) for one weight kind.
///
/// # Safety
/// As for [`crate::dispatch::GemmTilesFn`].
unsafe fn gemm_tiles<const KIND: u8>(
    w: &[u8],
    w_rows: usize,
    tiles: &[ActTile<'_>],
    out: *mut f32,
    out_stride: usize,
) {
    let (row_bytes, n_blocks) = check_tiles_args(
        w,
        w_rows,
        weight_block_bytes(KIND),
        tiles,
        act_block_bytes(KIND),
        (has_min(KIND), offset_shift(KIND) > 0),
        out_stride,
    );
    for_each_tiles_group(
        w,
        w_rows,
        row_bytes,
        out_stride,
        |first, offsets, placement| {
            // SAFETY: avx512f/bw/vl/vnni/vbmi were detected before `install` made this function
            // reachable; the group's rows at `offsets` exist; every tile was validated by
            // `check_tiles_args`; the output places are writable and ours (caller).
            unsafe { group_tiles::<KIND>(first, offsets, n_blocks, tiles, out, placement) }
        },
    );
}

// ---------------------------------------------------------------------------------------
// Q4_K and Q5_K against Q8_K activations

/// Sub-blocks of 32 elements in a 256-element super-block.
pub(super) const SUB_BLOCKS: usize = 8;

/// The per-row fields of one Q4_K / Q5_K super-block of 16 rows: `d` and `dmin` as f32, and
/// for each sub-block `j` its 6-bit scale (i32 lanes) and its min twice (i16 pairs, for
/// `vpdpwssd` against the tile's packed pairs of 16-element activation sums).
#[derive(Clone, Copy)]
pub(super) struct KHead {
    /// The rows' `d`.
    pub(super) d: __m512,
    /// The rows' `dmin`.
    pub(super) dmin: __m512,
    /// Sub-block scales.
    pub(super) scales: [__m512i; SUB_BLOCKS],
    /// Sub-block mins, `m | m << 16`.
    pub(super) min_pairs: [__m512i; SUB_BLOCKS],
}

/// Unpacks the head (d, dmin, the 12 bytes of packed scales and mins: the first 16 bytes of
/// a super-block) of the 16 rows, given as its dwords across the lanes (`h[k]`, lane `r`:
/// dword `k` of row `r`).
///
/// # Safety
/// The CPU must have this file's features.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
unsafe fn k_head(h: [__m512i; 4]) -> KHead {
    let six = _mm512_set1_epi8(0x3F);
    let four = _mm512_set1_epi8(0x0F);
    let top = _mm512_set1_epi8(0x30);
    // Bytes 0..4 hold sub-blocks 0..4, (scale, min) = (q[j] & 63, q[j + 4] & 63); sub-block
    // 4 + i takes its low 4 bits from q[8 + i] and bits 4..6 from the top two bits of q[i]
    // (scale) and q[4 + i] (min).
    let scale_lo = _mm512_and_si512(h[1], six);
    let min_lo = _mm512_and_si512(h[2], six);
    let scale_hi = _mm512_or_si512(
        _mm512_and_si512(h[3], four),
        _mm512_and_si512(_mm512_srli_epi32::<2>(h[1]), top),
    );
    let min_hi = _mm512_or_si512(
        _mm512_and_si512(_mm512_srli_epi32::<4>(h[3]), four),
        _mm512_and_si512(_mm512_srli_epi32::<2>(h[2]), top),
    );
    let byte = |v: __m512i, i: usize| {
        _mm512_and_si512(
            _mm512_srl_epi32(v, _mm_cvtsi32_si128(8 * i as i32)),
            _mm512_set1_epi32(0xFF),
        )
    };
    let scales = std::array::from_fn(|j| {
        if j < 4 {
            byte(scale_lo, j)
        } else {
            byte(scale_hi, j - 4)
        }
    });
    let min_pairs = std::array::from_fn(|j| {
        let m = if j < 4 {
            byte(min_lo, j)
        } else {
            byte(min_hi, j - 4)
        };
        _mm512_or_si512(m, _mm512_slli_epi32::<16>(m))
    });
    KHead {
        // SAFETY: same CPU features as this function.
        d: unsafe { f16_lanes(h[0]) },
        // SAFETY: as above.
        dmin: unsafe { f16_lanes(_mm512_srli_epi32::<16>(h[0])) },
        scales,
        min_pairs,
    }
}

/// Adds `scale_j · Σ w·a` of sub-block `j` to `isum[t]` for `N` activation rows (the 8 of a
/// tile, or decode's): `w` holds the sub-block's quant groups (unsigned, at most 31), `a`
/// its quants in activation row 0.
///
/// # Safety
/// The `N` rows must have 32 readable bytes at `a + t * stride`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
pub(super) unsafe fn k_sub_block<const N: usize>(
    w: &[__m512i; GROUPS],
    scale: __m512i,
    a: *const u8,
    stride: usize,
    isum: &mut [__m512i; N],
) {
    let mut dots = [_mm512_setzero_si512(); N];
    for (k, g) in w.iter().enumerate() {
        for (t, dot) in dots.iter_mut().enumerate() {
            // SAFETY: byte 4k + 3 < 32 of row t is readable (caller).
            let quad = unsafe { a.add(t * stride + 4 * k).cast::<i32>().read_unaligned() };
            *dot = _mm512_dpbusd_epi32(*dot, *g, _mm512_set1_epi32(quad));
        }
    }
    // |dot| ≤ 32·31·128 < 2^17, times a scale ≤ 63: below 2^23 per sub-block, 2^26 per
    // super-block.
    for (sum, dot) in isum.iter_mut().zip(dots) {
        *sum = _mm512_add_epi32(*sum, _mm512_mullo_epi32(dot, scale));
    }
}

/// One Q4_K / Q5_K super-block of 16 rows rearranged for the tile: the head and, per
/// 32-element sub-block, its 8 quant groups (lane = row).
#[derive(Clone, Copy)]
pub(super) struct KBlock {
    /// Scales, mins, `d`, `dmin`.
    pub(super) head: KHead,
    /// Sub-block `j`'s groups.
    pub(super) groups: [[__m512i; GROUPS]; SUB_BLOCKS],
}

/// Where a loader finds one super-block of 16 rows, 16 bytes at a time: `chunk(at)` gives
/// bytes `at .. at + 16` of every row's block as dwords across the lanes (vector `k`, lane
/// `r`: dword `k` of those bytes of row `r`).
pub(super) trait SuperBlock16: Copy {
    /// The 16 bytes at `at` (a multiple of 16 inside the block) of the 16 rows.
    ///
    /// # Safety
    /// The super-block must be readable (the implementor's contract) and the CPU must have
    /// this file's features.
    unsafe fn chunk(self, at: usize) -> [__m512i; 4];
}

/// A super-block in the file's layout: row `r`'s block at `p + offsets[r]` (read with 16x4
/// transposes).
#[derive(Clone, Copy)]
struct RowMajorBlock<'a> {
    p: *const u8,
    offsets: &'a [usize; GROUP],
}

impl SuperBlock16 for RowMajorBlock<'_> {
    #[inline(always)]
    unsafe fn chunk(self, at: usize) -> [__m512i; 4] {
        // SAFETY: the block lies inside each row (the constructor's caller); features as
        // the caller's (this is inlined into their `target_feature` functions).
        unsafe { transpose_16x4(self.p.add(at), self.offsets) }
    }
}

/// Reads a Q4_K (`FIVE = false`, 144-byte blocks) or Q5_K (`FIVE = true`, 176-byte blocks)
/// super-block of 16 rows from `src`: returns its head and hands it with each 32-element
/// sub-block's quant groups to `f(head, j, groups)`, `j = 0 .. 8` in order (so decode can use
/// them at once instead of keeping all 64 vectors).
///
/// # Safety
/// `src` must be readable for a whole super-block of the kind.
#[inline(always)]
pub(super) unsafe fn k_sub_blocks<const FIVE: bool>(
    src: impl SuperBlock16,
    mut f: impl FnMut(&KHead, usize, &[__m512i; GROUPS]),
) -> KHead {
    let qs_offset = if FIVE { 48 } else { 16 };
    // SAFETY (all reads and intrinsics below): the block is readable (caller); the caller
    // runs with this file's CPU features (inlined into its `target_feature` functions).
    unsafe {
        let four = _mm512_set1_epi8(0x0F);
        let bit4 = _mm512_set1_epi8(0x10);
        let head = k_head(src.chunk(0));
        let high = if FIVE {
            let (h0, h1) = (src.chunk(16), src.chunk(32));
            [h0[0], h0[1], h0[2], h0[3], h1[0], h1[1], h1[2], h1[3]]
        } else {
            [_mm512_setzero_si512(); GROUPS]
        };
        for c in 0..4 {
            let q0 = src.chunk(qs_offset + 32 * c);
            let q1 = src.chunk(qs_offset + 32 * c + 16);
            let q = [q0[0], q0[1], q0[2], q0[3], q1[0], q1[1], q1[2], q1[3]];
            for h in 0..2 {
                let j = 2 * c + h;
                let groups = std::array::from_fn(|k| {
                    let nibbles = if h == 0 {
                        _mm512_and_si512(q[k], four)
                    } else {
                        _mm512_and_si512(_mm512_srli_epi16::<4>(q[k]), four)
                    };
                    if FIVE {
                        // Bit j of each qh byte to bit 4 (shifts stay inside the byte for
                        // the bit that is kept).
                        let moved = if j <= 4 {
                            _mm512_sll_epi32(high[k], _mm_cvtsi32_si128(4 - j as i32))
                        } else {
                            _mm512_srl_epi32(high[k], _mm_cvtsi32_si128(j as i32 - 4))
                        };
                        _mm512_ternarylogic_epi32::<0xF8>(nibbles, moved, bit4)
                    } else {
                        nibbles
                    }
                });
                f(&head, j, &groups);
            }
        }
        head
    }
}

/// [`k_sub_blocks`] kept whole in a [`KBlock`] (the tiles reuse it for several tiles).
///
/// # Safety
/// As for [`k_sub_blocks`].
#[inline(always)]
pub(super) unsafe fn load_k_block<const FIVE: bool>(src: impl SuperBlock16) -> KBlock {
    let mut groups = [[_mm512_setzero_si512(); GROUPS]; SUB_BLOCKS];
    // SAFETY: forwarded to the caller.
    let head = unsafe { k_sub_blocks::<FIVE>(src, |_, j, g| groups[j] = *g) };
    KBlock { head, groups }
}

/// Adds super-block `b` (rearranged in `blk`) times the tile's super-block `b`: per tile
/// row the exact `Σ_j sc_j · Σ w·a` and the mins term `Σ_j m_j · (bsum_2j + bsum_2j+1)`,
/// then one conversion and FMA for each (`acc`, `acc_min`; the result is `acc - acc_min`).
///
/// # Safety
/// Super-block `b` must lie inside every tile row, and the tile's tables must cover it
/// (`check_gemm_args`, `check_sub_block_sums`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
pub(super) unsafe fn add_k_block(
    blk: &KBlock,
    tile: &ActTile<'_>,
    b: usize,
    acc: &mut [__m512; GEMM_TILE],
    acc_min: &mut [__m512; GEMM_TILE],
) {
    let head = &blk.head;
    // SAFETY (all reads below): super-block b lies inside every tile row; the tables hold
    // its 8 `d` values and 64 sub-block sums (caller).
    unsafe {
        let a = tile.quants.as_ptr().add(b * Q8K_BYTES + Q8K_QS);
        let mut isum = [_mm512_setzero_si512(); GEMM_TILE];
        for (j, groups) in blk.groups.iter().enumerate() {
            k_sub_block(
                groups,
                head.scales[j],
                a.add(32 * j),
                tile.row_stride,
                &mut isum,
            );
        }
        let sums = tile.sums.as_ptr().add(b * SUB_BLOCKS * GEMM_TILE);
        let d_a = tile.d.as_ptr().add(b * GEMM_TILE);
        for t in 0..GEMM_TILE {
            let pair_sum = |j: usize| *sums.add(j * GEMM_TILE + t);
            let (acc, acc_min) = (&mut acc[t], &mut acc_min[t]);
            add_k_totals(head, isum[t], pair_sum, *d_a.add(t), acc, acc_min);
        }
    }
}

/// Finishes one super-block for one activation row: the mins term
/// `Σ_j m_j · pair_sum(j)` (`pair_sum(j)`: the row's block sums `2j` and `2j + 1` packed as
/// two i16, low first) by `vpdpwssd`, then `acc += isum · (d · d_a)` and
/// `acc_min += msum · (dmin · d_a)`. The tiles and the interleaved decode both finish with
/// this, so they round alike.
///
/// # Safety
/// The CPU must have this file's features (inlined into their `target_feature` callers).
#[inline(always)]
pub(super) unsafe fn add_k_totals(
    head: &KHead,
    isum: __m512i,
    pair_sum: impl Fn(usize) -> i32,
    d_a: f32,
    acc: &mut __m512,
    acc_min: &mut __m512,
) {
    // SAFETY: the caller runs with this file's CPU features.
    unsafe {
        let mut msum = _mm512_setzero_si512();
        for (j, pair) in head.min_pairs.iter().enumerate() {
            msum = _mm512_dpwssd_epi32(msum, *pair, _mm512_set1_epi32(pair_sum(j)));
        }
        let d_a = _mm512_set1_ps(d_a);
        let d = _mm512_mul_ps(head.d, d_a);
        let dmin = _mm512_mul_ps(head.dmin, d_a);
        *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), d, *acc);
        *acc_min = _mm512_fmadd_ps(_mm512_cvtepi32_ps(msum), dmin, *acc_min);
    }
}

/// 16 Q4_K (`FIVE = false`) or Q5_K (`FIVE = true`) weight rows (row `r` at `w +
/// offsets[r]`, `n_blocks` super-blocks each) against the tile: `out[r * 8 + t]`; per
/// super-block [`load_k_block`] then [`add_k_block`], as the AVX2 tile and the one-row
/// kernels compute.
///
/// # Safety
/// `check_k_args` must have accepted the tile for `n_blocks` blocks; the 16 rows must be
/// readable.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
unsafe fn k_group<const FIVE: bool>(
    w: *const u8,
    offsets: &[usize; GROUP],
    n_blocks: usize,
    tile: &ActTile<'_>,
    out: &mut [f32; GROUP * GEMM_TILE],
) {
    let mut acc = [_mm512_setzero_ps(); GEMM_TILE];
    let mut acc_min = [_mm512_setzero_ps(); GEMM_TILE];
    for b in 0..n_blocks {
        // SAFETY: super-block b < n_blocks lies inside each of the 16 rows and the tile
        // (caller).
        unsafe {
            let p = w.add(b * if FIVE { 176 } else { 144 });
            let blk = load_k_block::<FIVE>(RowMajorBlock { p, offsets });
            add_k_block(&blk, tile, b, &mut acc, &mut acc_min);
        }
    }
    for (a, m) in acc.iter_mut().zip(acc_min) {
        *a = _mm512_sub_ps(*a, m);
    }
    transpose_out(&acc, out);
}

/// Super-blocks [`k_group_tiles`] and [`q6k_group_tiles`] rearrange at a time (about 5.5
/// KiB each for 16 rows).
pub(super) const PACKED_SUPER_BLOCKS: usize = 2;

/// [`several_tiles`] with the Q4_K / Q5_K steps: `load(b)` rearranges super-block `b` of
/// the 16 rows (from the file's rows or from interleaved ones), [`add_k_block`] adds it for
/// each tile, [`PACKED_SUPER_BLOCKS`] at a time.
///
/// # Safety
/// As for [`legacy_tiles`], with super-blocks.
#[inline(always)]
pub(super) unsafe fn k_tiles_with(
    n_blocks: usize,
    tiles: &[ActTile<'_>],
    load: impl FnMut(usize) -> KBlock,
    out: *mut f32,
    placement: (usize, usize, usize),
) {
    // SAFETY: forwarded to the caller.
    unsafe {
        let z = _mm512_setzero_si512();
        let empty = KBlock {
            head: KHead {
                d: _mm512_setzero_ps(),
                dmin: _mm512_setzero_ps(),
                scales: [z; SUB_BLOCKS],
                min_pairs: [z; SUB_BLOCKS],
            },
            groups: [[z; GROUPS]; SUB_BLOCKS],
        };
        several_tiles::<KBlock, PACKED_SUPER_BLOCKS>(
            n_blocks,
            tiles,
            empty,
            load,
            |blk, tile, b, acc, acc_min| add_k_block(blk, tile, b, acc, acc_min),
            |acc, acc_min| _mm512_sub_ps(acc, acc_min),
            out,
            placement,
        )
    }
}

/// [`k_group`] for several tiles ([`k_tiles_with`] and [`load_k_block`]).
///
/// # Safety
/// As for [`k_group`], for every tile; `tiles.len() <= MAX_GEMM_TILES`, `1 <= rows <= 16`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
unsafe fn k_group_tiles<const FIVE: bool>(
    w: *const u8,
    offsets: &[usize; GROUP],
    n_blocks: usize,
    tiles: &[ActTile<'_>],
    out: *mut f32,
    placement: (usize, usize, usize),
) {
    // SAFETY: super-blocks b < n_blocks lie inside each of the 16 rows and every tile
    // (caller); same CPU features as this function.
    unsafe {
        let load = |b: usize| {
            let p = w.add(b * if FIVE { 176 } else { 144 });
            load_k_block::<FIVE>(RowMajorBlock { p, offsets })
        };
        k_tiles_with(n_blocks, tiles, load, out, placement)
    }
}

/// The Q4_K (`FIVE = false`) or Q5_K tile: groups of 16 rows as in [`gemm`].
fn gemm_k<const FIVE: bool>(w: &[u8], w_rows: usize, tile: &ActTile<'_>, out: &mut [f32]) {
    let block_bytes = if FIVE { 176 } else { 144 };
    assert_eq!(out.len(), w_rows * GEMM_TILE, "output length");
    let (row_bytes, n_blocks) = check_k_args(w, w_rows, block_bytes, from_ref(tile), w_rows);
    for_each_group(w, row_bytes, out, |rows, offsets, results| {
        // SAFETY: avx512f/bw/vl/vnni/vbmi were detected before `install` made this function
        // reachable; `for_each_group` passes the start of a group whose rows at `offsets`
        // exist; the tile and its tables were checked above.
        unsafe { k_group::<FIVE>(rows, offsets, n_blocks, tile, results) }
    });
}

/// The several-tile kernel for Q4_K (`FIVE = false`) or Q5_K (`FIVE = true`).
///
/// # Safety
/// As for [`crate::dispatch::GemmTilesFn`].
unsafe fn gemm_k_tiles<const FIVE: bool>(
    w: &[u8],
    w_rows: usize,
    tiles: &[ActTile<'_>],
    out: *mut f32,
    out_stride: usize,
) {
    let block_bytes = if FIVE { 176 } else { 144 };
    let (row_bytes, n_blocks) = check_k_args(w, w_rows, block_bytes, tiles, out_stride);
    for_each_tiles_group(
        w,
        w_rows,
        row_bytes,
        out_stride,
        |first, offsets, placement| {
            // SAFETY: avx512f/bw/vl/vnni/vbmi were detected before `install` made this function
            // reachable; the group's rows at `offsets` exist; every tile and its tables were
            // checked above; the output places are writable and ours (caller).
            unsafe { k_group_tiles::<FIVE>(first, offsets, n_blocks, tiles, out, placement) }
        },
    );
}

// ---------------------------------------------------------------------------------------
// Q6_K against Q8_K activations

/// Bytes of one Q6_K block: ql (128), qh (64), 16 i8 scales, d (f16).
const Q6K_BYTES: usize = 210;
/// Offset of the high 2-bit pairs (`qh`) in a Q6_K block.
const Q6K_QH: usize = 128;
/// Offset of the 16 sub-block scales in a Q6_K block.
const Q6K_SCALES: usize = 192;

/// The 16 i8 sub-block scales of the 16 rows (i32 lanes, sign-extended), the same as i16
/// pairs `(sc_2j, sc_2j+1)` for `vpdpwssd` against the tile's pairs of block sums, and the
/// rows' `d`.
///
/// # Safety
/// The Q6_K block must be whole at `p + offsets[r]` for every row `r`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
unsafe fn q6k_head(
    p: *const u8,
    offsets: &[usize; GROUP],
) -> ([__m512i; 16], [__m512i; SUB_BLOCKS], __m512) {
    // SAFETY: bytes 192..208 and 194..210 lie inside each row's block (caller).
    let (sc, tail) = unsafe {
        (
            transpose_16x4(p.add(Q6K_SCALES), offsets),
            transpose_16x4(p.add(Q6K_SCALES + 2), offsets),
        )
    };
    let scales: [__m512i; 16] = std::array::from_fn(|s| {
        let shift = _mm_cvtsi32_si128(24 - 8 * (s % 4) as i32);
        _mm512_srai_epi32::<24>(_mm512_sll_epi32(sc[s / 4], shift))
    });
    let pairs = std::array::from_fn(|j| {
        let low = _mm512_and_si512(scales[2 * j], _mm512_set1_epi32(0xFFFF));
        _mm512_or_si512(low, _mm512_slli_epi32::<16>(scales[2 * j + 1]))
    });
    // d is in bytes 208..210: the high half of dword 3 of the load at 194.
    (scales, pairs, f16_lanes(_mm512_srli_epi32::<16>(tail[3])))
}

/// The 8 dword vectors of the 32 bytes at `p + offsets[r]` (vector `k`, lane `r`: bytes
/// `4k .. 4k + 4` of row `r`).
///
/// # Safety
/// 32 bytes must be readable at each `p + offsets[r]`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
unsafe fn transpose_16x8(p: *const u8, offsets: &[usize; GROUP]) -> [__m512i; GROUPS] {
    // SAFETY: both halves are readable (caller).
    let (lo, hi) = unsafe {
        (
            transpose_16x4(p, offsets),
            transpose_16x4(p.add(16), offsets),
        )
    };
    [lo[0], lo[1], lo[2], lo[3], hi[0], hi[1], hi[2], hi[3]]
}

/// Adds `sc_s · Σ w·a` of the two 16-element sub-blocks of one 32-element chunk to
/// `isum[t]`: groups 0..4 of `w` with `scales.0`, groups 4..8 with `scales.1`; `a` points
/// at the chunk's quants in tile row 0.
///
/// # Safety
/// The 8 tile rows must have 32 readable bytes at `a + t * stride`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
unsafe fn q6k_chunk(
    w: &[__m512i; GROUPS],
    scales: (__m512i, __m512i),
    a: *const u8,
    stride: usize,
    isum: &mut [__m512i; GEMM_TILE],
) {
    for (half, scale) in [scales.0, scales.1].into_iter().enumerate() {
        let mut dots = [_mm512_setzero_si512(); GEMM_TILE];
        for (k, g) in w.iter().enumerate().skip(4 * half).take(4) {
            for (t, dot) in dots.iter_mut().enumerate() {
                // SAFETY: byte 4k + 3 < 32 of row t is readable (caller).
                let quad = unsafe { a.add(t * stride + 4 * k).cast::<i32>().read_unaligned() };
                *dot = _mm512_dpbusd_epi32(*dot, *g, _mm512_set1_epi32(quad));
            }
        }
        // |dot| ≤ 16·63·128 < 2^17, times |sc| ≤ 128: below 2^24 per sub-block, 2^28 per
        // super-block.
        for (sum, dot) in isum.iter_mut().zip(dots) {
            *sum = _mm512_add_epi32(*sum, _mm512_mullo_epi32(dot, scale));
        }
    }
}

/// One Q6_K block of 16 rows rearranged for the tile: per 32-element chunk (`4n + m`) its 8
/// quant groups, the 16 sub-block scales, the scale pairs for the `- 32` term and `d`.
#[derive(Clone, Copy)]
struct Q6Block {
    /// Chunk `4n + m`'s groups.
    groups: [[__m512i; GROUPS]; 8],
    /// The 16 sub-block scales.
    scales: [__m512i; 16],
    /// Scale pairs for `vpdpwssd` against the 16-element activation sums.
    pairs: [__m512i; SUB_BLOCKS],
    /// The rows' `d`.
    d: __m512,
}

/// Reads block `b` of the 16 Q6_K rows (row `r` at `w + offsets[r]`) into a [`Q6Block`].
///
/// # Safety
/// Block `b` must lie inside each of the 16 rows.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
unsafe fn load_q6k_block(w: *const u8, offsets: &[usize; GROUP], b: usize) -> Q6Block {
    let four = _mm512_set1_epi8(0x0F);
    let two_bits = _mm512_set1_epi8(0x30);
    // SAFETY (all reads below): block b lies inside each of the 16 rows (caller).
    unsafe {
        let p = w.add(b * Q6K_BYTES);
        let (scales, pairs, d) = q6k_head(p, offsets);
        let mut groups = [[_mm512_setzero_si512(); GROUPS]; 8];
        for n in 0..2 {
            let ql = [
                transpose_16x8(p.add(64 * n), offsets),
                transpose_16x8(p.add(64 * n + 32), offsets),
            ];
            let qh = transpose_16x8(p.add(Q6K_QH + 32 * n), offsets);
            for m in 0..4 {
                // Elements 128n + 32m + l: nibble (low for m < 2) of ql[64n + 32(m%2) + l]
                // and bits 2m, 2m + 1 of qh[32n + l] as bits 4, 5.
                groups[4 * n + m] = std::array::from_fn(|k| {
                    let low = ql[m % 2][k];
                    let nibble = if m < 2 {
                        _mm512_and_si512(low, four)
                    } else {
                        _mm512_and_si512(_mm512_srli_epi16::<4>(low), four)
                    };
                    let high = if m < 2 {
                        _mm512_sll_epi32(qh[k], _mm_cvtsi32_si128(4 - 2 * m as i32))
                    } else {
                        _mm512_srl_epi32(qh[k], _mm_cvtsi32_si128(2 * m as i32 - 4))
                    };
                    _mm512_ternarylogic_epi32::<0xF8>(nibble, high, two_bits)
                });
            }
        }
        Q6Block {
            groups,
            scales,
            pairs,
            d,
        }
    }
}

/// Adds block `b` (rearranged in `blk`) times the tile's block `b`: per tile row the exact
/// `Σ_s sc_s · Σ (q - 32)·a` (the `- 32` through `vpdpwssd` of the scale pairs against the
/// 16-element activation sums), then one conversion and FMA with `d · d_a`.
///
/// # Safety
/// Block `b` must lie inside every tile row, and the tile's tables must cover it.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
unsafe fn add_q6k_block(
    blk: &Q6Block,
    tile: &ActTile<'_>,
    b: usize,
    acc: &mut [__m512; GEMM_TILE],
) {
    // SAFETY (all reads below): block b lies inside every tile row; the tables hold its 8
    // `d` values and 64 sums (caller).
    unsafe {
        let a = tile.quants.as_ptr().add(b * Q8K_BYTES + Q8K_QS);
        let mut isum = [_mm512_setzero_si512(); GEMM_TILE];
        for n in 0..2 {
            for m in 0..4 {
                let s = 8 * n + 2 * m;
                let sc = (blk.scales[s], blk.scales[s + 1]);
                let chunk = a.add(128 * n + 32 * m);
                q6k_chunk(
                    &blk.groups[4 * n + m],
                    sc,
                    chunk,
                    tile.row_stride,
                    &mut isum,
                );
            }
        }
        let sums = tile.sums.as_ptr().add(b * SUB_BLOCKS * GEMM_TILE);
        let d_a = tile.d.as_ptr().add(b * GEMM_TILE);
        for (t, isum) in isum.into_iter().enumerate() {
            let mut offset = _mm512_setzero_si512();
            for (j, pair) in blk.pairs.iter().enumerate() {
                let s = _mm512_set1_epi32(*sums.add(j * GEMM_TILE + t));
                offset = _mm512_dpwssd_epi32(offset, *pair, s);
            }
            let total = _mm512_sub_epi32(isum, _mm512_slli_epi32::<5>(offset));
            let scale = _mm512_mul_ps(blk.d, _mm512_set1_ps(*d_a.add(t)));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(total), scale, acc[t]);
        }
    }
}

/// 16 Q6_K weight rows (row `r` at `w + offsets[r]`, `n_blocks` blocks each) against the
/// tile: `out[r * 8 + t]`; per block [`load_q6k_block`] then [`add_q6k_block`].
///
/// The quants `q` (0..=63) enter unsigned; the `- 32` comes back as
/// `32 · Σ_s sc_s · bsum_s` from the tile's 16-element activation sums (`vpdpwssd`), so per
/// super-block the total `Σ_s sc_s · Σ (q - 32)·a` is exact (below 2^29), then one
/// conversion and FMA with `d · d_a`.
///
/// # Safety
/// `check_gemm_args` must have accepted the tile for `n_blocks` Q6_K blocks (and the sums
/// table holds n_blocks * 64 entries); the 16 rows must be readable.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
unsafe fn q6k_group(
    w: *const u8,
    offsets: &[usize; GROUP],
    n_blocks: usize,
    tile: &ActTile<'_>,
    out: &mut [f32; GROUP * GEMM_TILE],
) {
    let mut acc = [_mm512_setzero_ps(); GEMM_TILE];
    for b in 0..n_blocks {
        // SAFETY: block b < n_blocks lies inside each of the 16 rows and the tile (caller).
        unsafe {
            let blk = load_q6k_block(w, offsets, b);
            add_q6k_block(&blk, tile, b, &mut acc);
        }
    }
    transpose_out(&acc, out);
}

/// [`q6k_group`] for several tiles (see [`several_tiles`]).
///
/// # Safety
/// As for [`q6k_group`], for every tile; `tiles.len() <= MAX_GEMM_TILES`, `1 <= rows <=
/// 16`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
unsafe fn q6k_group_tiles(
    w: *const u8,
    offsets: &[usize; GROUP],
    n_blocks: usize,
    tiles: &[ActTile<'_>],
    out: *mut f32,
    placement: (usize, usize, usize),
) {
    let z = _mm512_setzero_si512();
    let empty = Q6Block {
        groups: [[z; GROUPS]; 8],
        scales: [z; 16],
        pairs: [z; SUB_BLOCKS],
        d: _mm512_setzero_ps(),
    };
    // SAFETY: blocks b < n_blocks lie inside each of the 16 rows and every tile (caller);
    // same CPU features as this function.
    unsafe {
        several_tiles::<Q6Block, PACKED_SUPER_BLOCKS>(
            n_blocks,
            tiles,
            empty,
            |b| load_q6k_block(w, offsets, b),
            |blk, tile, b, acc, _| add_q6k_block(blk, tile, b, acc),
            |acc, _| acc,
            out,
            placement,
        )
    }
}

/// The Q6_K tile: groups of 16 rows as in [`gemm`].
fn gemm_q6_k(w: &[u8], w_rows: usize, tile: &ActTile<'_>, out: &mut [f32]) {
    assert_eq!(out.len(), w_rows * GEMM_TILE, "output length");
    let (row_bytes, n_blocks) = check_k_args(w, w_rows, Q6K_BYTES, from_ref(tile), w_rows);
    for_each_group(w, row_bytes, out, |rows, offsets, results| {
        // SAFETY: avx512f/bw/vl/vnni/vbmi were detected before `install` made this function
        // reachable; `for_each_group` passes the start of a group whose rows at `offsets`
        // exist; the tile and its tables were checked above.
        unsafe { q6k_group(rows, offsets, n_blocks, tile, results) }
    });
}

/// The several-tile kernel for Q6_K.
///
/// # Safety
/// As for [`crate::dispatch::GemmTilesFn`].
unsafe fn gemm_q6_k_tiles(
    w: &[u8],
    w_rows: usize,
    tiles: &[ActTile<'_>],
    out: *mut f32,
    out_stride: usize,
) {
    let (row_bytes, n_blocks) = check_k_args(w, w_rows, Q6K_BYTES, tiles, out_stride);
    for_each_tiles_group(
        w,
        w_rows,
        row_bytes,
        out_stride,
        |first, offsets, placement| {
            // SAFETY: avx512f/bw/vl/vnni/vbmi were detected before `install` made this function
            // reachable; the group's rows at `offsets` exist; every tile and its tables were
            // checked above; the output places are writable and ours (caller).
            unsafe { q6k_group_tiles(first, offsets, n_blocks, tiles, out, placement) }
        },
    );
}

/// Installs the tiles (they need AVX-512 VBMI on top of the tier's features; without it
/// the AVX2 tiles stay).
pub(super) fn install(set: &mut KernelSet) {
    if !std::arch::is_x86_feature_detected!("avx512vbmi") {
        return;
    }
    set.set_gemm(GgmlType::Q4_0, gemm::<Q4_0>);
    set.set_gemm(GgmlType::Q4_1, gemm::<Q4_1>);
    set.set_gemm(GgmlType::Q5_0, gemm::<Q5_0>);
    set.set_gemm(GgmlType::Q5_1, gemm::<Q5_1>);
    set.set_gemm(GgmlType::Q8_0, gemm::<Q8_0>);
    set.set_gemm_tiles(GgmlType::Q4_0, gemm_tiles::<Q4_0>);
    set.set_gemm_tiles(GgmlType::Q4_1, gemm_tiles::<Q4_1>);
    set.set_gemm_tiles(GgmlType::Q5_0, gemm_tiles::<Q5_0>);
    set.set_gemm_tiles(GgmlType::Q5_1, gemm_tiles::<Q5_1>);
    set.set_gemm_tiles(GgmlType::Q8_0, gemm_tiles::<Q8_0>);
    set.set_gemm(GgmlType::Q4_K, gemm_k::<false>);
    set.set_gemm(GgmlType::Q5_K, gemm_k::<true>);
    set.set_gemm(GgmlType::Q6_K, gemm_q6_k);
    set.set_gemm_tiles(GgmlType::Q4_K, gemm_k_tiles::<false>);
    set.set_gemm_tiles(GgmlType::Q5_K, gemm_k_tiles::<true>);
    set.set_gemm_tiles(GgmlType::Q6_K, gemm_q6_k_tiles);
}
