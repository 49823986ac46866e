//! AVX2 dot kernels for the 32-element "legacy" formats: Q4_0, Q5_0, Q8_0 and IQ4_NL
//! against Q8_0 activations, Q4_1 and Q5_1 against Q8_1 activations.
//!
//! One kernel body serves all six, specialised at compile time by the weight kind and by
//! the number of activation rows `N`. Blocks are walked in groups of eight: the 8 weight
//! scales and, per activation row, the 8 activation scales are converted with one F16C
//! instruction each and multiplied into a small table; then every weight block is unpacked
//! once into 32 bytes and multiplied against the `N` activation rows.
//!
//! Signed weights (`q - 8`, `q - 16`, Q8_0, the IQ4_NL table) use the sign trick
//! (`maddubs(|w|, sign(a, w))`); Q4_1/Q5_1 quants are unsigned and go into `maddubs`
//! directly, their `m · s` offset term being accumulated separately per row.

use std::arch::x86_64::*;

use super::util::{
    bits_to_bytes, check_dot_args, dispatch_rows, dot_i8_signed, f16_strided, hsum_ps, nibbles_32,
};
use crate::blocks::IQ4NL_TABLE;

/// Weight kinds the shared kernel body is specialised for.
const Q4_0: u8 = 0;
const Q4_1: u8 = 1;
const Q5_0: u8 = 2;
const Q5_1: u8 = 3;
const Q8_0: u8 = 4;
const IQ4_NL: u8 = 5;

/// Bytes per weight block of `kind`.
const fn weight_block_bytes(kind: u8) -> usize {
    match kind {
        Q4_0 | IQ4_NL => 18,
        Q4_1 => 20,
        Q5_0 => 22,
        Q5_1 => 24,
        _ => 34, // Q8_0
    }
}

/// Whether `kind` has a minimum `m` (and pairs with Q8_1 activations).
const fn has_min(kind: u8) -> bool {
    matches!(kind, Q4_1 | Q5_1)
}

/// Bytes per activation block: Q8_1 (d, s, 32 quants) or Q8_0 (d, 32 quants).
const fn act_block_bytes(kind: u8) -> usize {
    if has_min(kind) {
        36
    } else {
        34
    }
}

/// Unpacks the weight block at `p` into its 32 quants in element order: signed values
/// (`q - 8`, `q - 16`, Q8_0 as is, IQ4_NL table values) for the kinds without a minimum,
/// unsigned `q` (0..=15 or 0..=31) for Q4_1 and Q5_1.
///
/// # Safety
/// `p` must point at a whole weight block of `KIND`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn unpack<const KIND: u8>(p: *const u8) -> __m256i {
    // SAFETY (all reads below): the caller guarantees a whole block of `KIND` at `p`, and
    // every offset is inside that block's layout (see `crate::blocks`).
    unsafe {
        match KIND {
            Q4_0 => _mm256_sub_epi8(nibbles_32(p.add(2)), _mm256_set1_epi8(8)),
            Q4_1 => nibbles_32(p.add(4)),
            Q5_0 => {
                let high = bits_to_bytes(p.add(2).cast::<u32>().read_unaligned());
                // q - 16 = nibble - 16 when the fifth bit is clear, i.e. nibble | 0xF0.
                let offset = _mm256_andnot_si256(high, _mm256_set1_epi8(0xF0u8 as i8));
                _mm256_or_si256(nibbles_32(p.add(6)), offset)
            }
            Q5_1 => {
                let high = bits_to_bytes(p.add(4).cast::<u32>().read_unaligned());
                let fifth = _mm256_and_si256(high, _mm256_set1_epi8(0x10));
                _mm256_or_si256(nibbles_32(p.add(8)), fifth)
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

/// The shared kernel: `out[r] = dot(weight row, activation row r)` for `r < N`.
///
/// With `PRE`, the activation blocks' scales are read as f32 from `act_scales` (row `r`'s
/// `d` values at `r * scale_stride`, then for Q8_1 its `s` values `n_blocks` further)
/// instead of being converted from the blocks' f16 fields: the values are the same (f16 to
/// f32 is exact), so both variants give the same result bit for bit, but a batch no longer
/// converts every activation scale once per weight row.
///
/// # Safety
/// `check_dot_args` must have accepted the slices for `KIND`'s block sizes, with
/// `n_blocks` its result and `out.len() == N`; with `PRE`, `act_scales` must hold
/// `(N - 1) * scale_stride + n_blocks * (1 + has_min)` values (`check_scale_args`).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_rows<const KIND: u8, const N: usize, const PRE: bool>(
    w: &[u8],
    n_blocks: usize,
    acts: &[u8],
    act_row_bytes: usize,
    act_scales: &[f32],
    scale_stride: usize,
    out: &mut [f32],
) {
    let wp = w.as_ptr();
    let ap = acts.as_ptr();
    let sc = Scales {
        p: act_scales.as_ptr(),
        stride: scale_stride,
        s_offset: n_blocks,
    };
    // One accumulator per row, updated in the same order whatever N is: a row's result
    // does not depend on how many rows share the call (batch and decode agree bit for bit).
    let mut acc = [_mm256_setzero_ps(); N];
    let mut acc_min = [_mm256_setzero_ps(); N];
    let mut b = 0;
    // SAFETY (the three loops): each group's blocks b .. b + COUNT are < n_blocks, so they
    // lie inside the weight row and inside every activation row r < N (checked by
    // `check_dot_args`), and inside every row of `act_scales` with `PRE`.
    unsafe {
        while b + 8 <= n_blocks {
            group::<KIND, N, 8, PRE>(wp, ap, act_row_bytes, sc, b, &mut acc, &mut acc_min);
            b += 8;
        }
        if b + 4 <= n_blocks {
            group::<KIND, N, 4, PRE>(wp, ap, act_row_bytes, sc, b, &mut acc, &mut acc_min);
            b += 4;
        }
        while b < n_blocks {
            group::<KIND, N, 1, PRE>(wp, ap, act_row_bytes, sc, b, &mut acc, &mut acc_min);
            b += 1;
        }
    }
    for r in 0..N {
        out[r] = hsum_ps(acc[r]);
        if has_min(KIND) {
            out[r] += hsum_ps(acc_min[r]);
        }
    }
}

/// Where the f32 activation scales of a `PRE` kernel are (unused otherwise).
#[derive(Clone, Copy)]
struct Scales {
    p: *const f32,
    /// f32 values from one activation row's scales to the next row's.
    stride: usize,
    /// Offset of a row's `s` values (Q8_1) from its `d` values.
    s_offset: usize,
}

/// Loads `COUNT` (at most 8) f32 at `p` into the low lanes; the other lanes are zero.
///
/// # Safety
/// `p .. p + COUNT` must be readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f32_lanes<const COUNT: usize>(p: *const f32) -> __m256 {
    // SAFETY: the caller guarantees COUNT readable f32 at `p`.
    unsafe {
        if COUNT == 8 {
            _mm256_loadu_ps(p)
        } else {
            let mut v = [0f32; 8];
            std::ptr::copy_nonoverlapping(p, v.as_mut_ptr(), COUNT);
            _mm256_loadu_ps(v.as_ptr())
        }
    }
}

/// Adds blocks `first .. first + COUNT` (COUNT ≤ 8) of the row to the accumulators.
///
/// The `COUNT` weight scales, and per activation row the `COUNT` activation scales, are
/// converted with one F16C instruction (or, with `PRE`, loaded as f32) and multiplied into
/// a table once; each weight block is then unpacked once and used for all `N` rows.
///
/// # Safety
/// Those blocks must exist in the weight row and in all `N` activation rows (and their
/// scales in `sc` with `PRE`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn group<const KIND: u8, const N: usize, const COUNT: usize, const PRE: bool>(
    wp: *const u8,
    ap: *const u8,
    act_row_bytes: usize,
    sc: Scales,
    first: usize,
    acc: &mut [__m256; N],
    acc_min: &mut [__m256; N],
) {
    let wbb = weight_block_bytes(KIND);
    let abb = act_block_bytes(KIND);
    let a_quants = if has_min(KIND) { 4 } else { 2 };
    // SAFETY (all pointer arithmetic and reads below): the caller guarantees blocks
    // `first .. first + COUNT` exist in the weight row and in every activation row r < N,
    // and with `PRE` their scales in every row of `sc`.
    unsafe {
        let wg = wp.add(first * wbb);
        let d_w = f16_strided::<COUNT>(wg, wbb);
        let m_w = if has_min(KIND) {
            f16_strided::<COUNT>(wg.add(2), wbb)
        } else {
            d_w
        };
        let mut scales = [[0f32; 8]; N];
        for r in 0..N {
            let ag = ap.add(r * act_row_bytes + first * abb);
            let sr = sc.p.wrapping_add(r * sc.stride + first);
            let d_a = if PRE {
                f32_lanes::<COUNT>(sr)
            } else {
                f16_strided::<COUNT>(ag, abb)
            };
            _mm256_storeu_ps(scales[r].as_mut_ptr(), _mm256_mul_ps(d_w, d_a));
            if has_min(KIND) {
                let s_a = if PRE {
                    f32_lanes::<COUNT>(sr.wrapping_add(sc.s_offset))
                } else {
                    f16_strided::<COUNT>(ag.add(2), abb)
                };
                acc_min[r] = _mm256_fmadd_ps(m_w, s_a, acc_min[r]);
            }
        }
        // `k` also drives the pointer arithmetic, not just `scales`.
        #[allow(clippy::needless_range_loop)]
        for k in 0..COUNT {
            let q = unpack::<KIND>(wg.add(k * wbb));
            let q_abs = _mm256_sign_epi8(q, q);
            for r in 0..N {
                let a = _mm256_loadu_si256(
                    ap.add(r * act_row_bytes + (first + k) * abb + a_quants)
                        .cast(),
                );
                let isum = if has_min(KIND) {
                    _mm256_madd_epi16(_mm256_maddubs_epi16(q, a), _mm256_set1_epi16(1))
                } else {
                    dot_i8_signed(q_abs, q, a)
                };
                let scale = _mm256_broadcast_ss(&scales[r][k]);
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, acc[r]);
            }
        }
    }
}

/// Checks the f32 scale side table of a `PRE` kernel: every row `r < n_rows` has its
/// `n_blocks` `d` values (and for `with_min` as many `s` values after them) inside
/// `act_scales` at `r * scale_stride`.
///
/// # Panics
/// If it does not (a caller bug).
fn check_scale_args(
    act_scales: &[f32],
    scale_stride: usize,
    n_rows: usize,
    n_blocks: usize,
    with_min: bool,
) {
    let per_row = n_blocks * if with_min { 2 } else { 1 };
    assert!(
        scale_stride >= per_row,
        "scale stride {scale_stride} below the {per_row} scales of a row"
    );
    let needed = (n_rows - 1) * scale_stride + per_row;
    assert!(
        act_scales.len() >= needed,
        "activation scales hold {} values, {n_rows} rows need {needed}",
        act_scales.len()
    );
}

/// Defines the safe [`crate::dispatch::DotFn`] and [`crate::dispatch::ScaledDotFn`]
/// wrappers for one weight kind.
macro_rules! legacy_dot_fn {
    ($name:ident, $scaled:ident, $kind:expr) => {
        pub(super) fn $name(w: &[u8], acts: &[u8], act_row_bytes: usize, out: &mut [f32]) {
            let n_blocks = check_dot_args(
                w,
                weight_block_bytes($kind),
                acts,
                act_row_bytes,
                act_block_bytes($kind),
                out,
            );
            dispatch_rows!(out.len(), N => {
                // SAFETY: avx2, fma and f16c were detected before `install` made this
                // function reachable; `check_dot_args` validated the slice lengths.
                unsafe {
                    dot_rows::<{ $kind }, N, false>(
                        w, n_blocks, acts, act_row_bytes, &[], 0, out,
                    )
                }
            })
        }

        pub(super) fn $scaled(
            w: &[u8],
            w_rows: usize,
            acts: &[u8],
            act_row_bytes: usize,
            act_scales: &[f32],
            scale_stride: usize,
            out: &mut [f32],
        ) {
            assert!(
                w_rows > 0 && w.len() % w_rows == 0 && out.len() % w_rows == 0,
                "{} weight bytes and {} outputs do not split into {w_rows} rows",
                w.len(),
                out.len()
            );
            let row_bytes = w.len() / w_rows;
            let n_acts = out.len() / w_rows;
            let n_blocks = check_dot_args(
                &w[..row_bytes],
                weight_block_bytes($kind),
                acts,
                act_row_bytes,
                act_block_bytes($kind),
                &out[..n_acts],
            );
            check_scale_args(act_scales, scale_stride, n_acts, n_blocks, has_min($kind));
            dispatch_rows!(n_acts, N => {
                for (w_row, out_row) in w.chunks_exact(row_bytes).zip(out.chunks_exact_mut(N)) {
                    // SAFETY: avx2, fma and f16c were detected before `install` made this
                    // function reachable; every weight row has the length `check_dot_args`
                    // validated, and `check_scale_args` validated the scale table.
                    unsafe {
                        dot_rows::<{ $kind }, N, true>(
                            w_row, n_blocks, acts, act_row_bytes, act_scales, scale_stride,
                            out_row,
                        )
                    }
                }
            })
        }
    };
}

legacy_dot_fn!(dot_q4_0, dot_q4_0_scaled, Q4_0);
legacy_dot_fn!(dot_q4_1, dot_q4_1_scaled, Q4_1);
legacy_dot_fn!(dot_q5_0, dot_q5_0_scaled, Q5_0);
legacy_dot_fn!(dot_q5_1, dot_q5_1_scaled, Q5_1);
legacy_dot_fn!(dot_q8_0, dot_q8_0_scaled, Q8_0);
legacy_dot_fn!(dot_iq4_nl, dot_iq4_nl_scaled, IQ4_NL);
