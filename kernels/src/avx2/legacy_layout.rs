//! The 32-element "legacy" block layouts (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL) as the AVX2
//! kernels read them, shared by the one-row kernels (`legacy.rs`) and the GEMM tiles
//! (`gemm.rs`): kind ids for const generics, block sizes, how the quants go into
//! `maddubs`, the unpacking of a weight block into 32 bytes, and the argument checks of
//! the safe wrappers (also used by the AVX-512 kernels in `crate::avx512`).

use std::arch::x86_64::*;

use super::util::{bits_to_bytes, check_dot_args, nibbles_32};
use crate::blocks::IQ4NL_TABLE;

/// Weight kinds the kernel bodies are specialised for.
pub(crate) const Q4_0: u8 = 0;
pub(crate) const Q4_1: u8 = 1;
pub(crate) const Q5_0: u8 = 2;
pub(crate) const Q5_1: u8 = 3;
pub(crate) const Q8_0: u8 = 4;
pub(super) const IQ4_NL: u8 = 5;

/// Bytes per weight block of `kind`.
pub(crate) const fn weight_block_bytes(kind: u8) -> usize {
    match kind {
        Q4_0 | IQ4_NL => 18,
        Q4_1 => 20,
        Q5_0 => 22,
        Q5_1 => 24,
        _ => 34, // Q8_0
    }
}

/// Whether `kind` has a minimum `m` (and pairs with Q8_1 activations).
pub(crate) const fn has_min(kind: u8) -> bool {
    matches!(kind, Q4_1 | Q5_1)
}

/// Bytes per activation block: Q8_1 (d, s, 32 quants) or Q8_0 (d, 32 quants).
pub(crate) const fn act_block_bytes(kind: u8) -> usize {
    if has_min(kind) {
        36
    } else {
        34
    }
}

/// Offset of the quants inside an activation block.
pub(crate) const fn act_quants_offset(kind: u8) -> usize {
    if has_min(kind) {
        4
    } else {
        2
    }
}

/// Log2 of the offset subtracted from unsigned Q4_0 / Q5_0 quants (`q - 8`, `q - 16`),
/// 0 for the kinds that are unpacked signed or have a minimum instead.
pub(super) const fn offset_shift(kind: u8) -> u32 {
    match kind {
        Q4_0 => 3,
        Q5_0 => 4,
        _ => 0,
    }
}

/// Whether `kind`'s quants go into `maddubs` signed, through the sign trick.
pub(super) const fn signed(kind: u8) -> bool {
    matches!(kind, Q8_0 | IQ4_NL)
}

/// Unpacks the weight block at `p` into its 32 quants in element order: unsigned `q`
/// (0..=15 or 0..=31) for Q4_0, Q5_0, Q4_1 and Q5_1 (the offset of Q4_0 and Q5_0 is applied
/// later, see [`offset_shift`]); signed values for Q8_0 (as stored) and IQ4_NL (its table
/// values).
///
/// # Safety
/// `p` must point at a whole weight block of `KIND`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn unpack<const KIND: u8>(p: *const u8) -> __m256i {
    // SAFETY (all reads below): the caller guarantees a whole block of `KIND` at `p`, and
    // every offset is inside that block's layout (see `crate::blocks`).
    unsafe {
        match KIND {
            Q4_0 => nibbles_32(p.add(2)),
            Q4_1 => nibbles_32(p.add(4)),
            Q5_0 | Q5_1 => {
                let (qh, qs) = if KIND == Q5_0 { (2, 6) } else { (4, 8) };
                let high = bits_to_bytes(p.add(qh).cast::<u32>().read_unaligned());
                let fifth = _mm256_and_si256(high, _mm256_set1_epi8(0x10));
                _mm256_or_si256(nibbles_32(p.add(qs)), fifth)
            }
            IQ4_NL => {
                let table = _mm_loadu_si128(IQ4NL_TABLE.as_ptr().cast());
                let table = _mm256_set_m128i(table, table);
                _mm256_shuffle_epi8(table, nibbles_32(p.add(2)))
            }
            _ => _mm256_loadu_si256(p.add(2).cast()), // Q8_0
        }
    }
}

/// Where the f32 activation scales of a kernel reading them from a side table are (see
/// [`crate::dispatch::ScaledDotFn`]); [`Scales::NONE`] for kernels that read the f16 fields.
#[derive(Clone, Copy)]
pub(crate) struct Scales {
    /// Row 0's `d` values.
    pub(crate) p: *const f32,
    /// f32 values from one activation row's scales to the next row's.
    pub(crate) stride: usize,
    /// Offset of a row's `s` values (Q8_1) from its `d` values.
    pub(crate) s_offset: usize,
}

impl Scales {
    /// No side table.
    pub(crate) const NONE: Scales = Scales {
        p: std::ptr::null(),
        stride: 0,
        s_offset: 0,
    };
}

/// Checks the arguments of a [`crate::dispatch::ScaledDotFn`] for weight kind `kind` and
/// returns (blocks per row, activation rows, the scale table).
///
/// # Panics
/// If the slices do not fit the contract (a caller bug).
#[allow(clippy::too_many_arguments)]
pub(crate) fn scaled_dot_args(
    kind: u8,
    w: &[u8],
    w_rows: usize,
    acts: &[u8],
    act_row_bytes: usize,
    act_scales: &[f32],
    scale_stride: usize,
    out: &[f32],
) -> (usize, usize, Scales) {
    assert!(
        w_rows > 0 && w.len().is_multiple_of(w_rows) && out.len().is_multiple_of(w_rows),
        "{} weight bytes and {} outputs do not split into {w_rows} rows",
        w.len(),
        out.len()
    );
    let row_bytes = w.len() / w_rows;
    let n_acts = out.len() / w_rows;
    let n_blocks = check_dot_args(
        &w[..row_bytes],
        weight_block_bytes(kind),
        acts,
        act_row_bytes,
        act_block_bytes(kind),
        &out[..n_acts],
    );
    let per_row = n_blocks * if has_min(kind) { 2 } else { 1 };
    assert!(
        scale_stride >= per_row,
        "scale stride {scale_stride} below the {per_row} scales of a row"
    );
    let needed = (n_acts - 1) * scale_stride + per_row;
    assert!(
        act_scales.len() >= needed,
        "activation scales hold {} values, {n_acts} rows need {needed}",
        act_scales.len()
    );
    let scales = Scales {
        p: act_scales.as_ptr(),
        stride: scale_stride,
        s_offset: n_blocks,
    };
    (n_blocks, n_acts, scales)
}
