//! Small AVX2 building blocks shared by the kernel families: argument checks, scale
//! conversion, nibble unpacking, horizontal sums and the row-count dispatch macro.
//!
//! Every `unsafe fn` here is `#[target_feature(enable = "avx2,fma,f16c")]`; callers are
//! themselves such functions, reached only through `install`, which `dispatch` calls after
//! detecting the three features.

use std::arch::x86_64::*;

use crate::dispatch::MAX_ACT_ROWS;

/// Calls `$body` with the const `$n` bound to `$rows` (1 ..= `MAX_ACT_ROWS`), so a kernel
/// generic over its number of activation rows is instantiated once per row count.
macro_rules! dispatch_rows {
    ($rows:expr, $n:ident => $body:expr) => {
        match $rows {
            1 => {
                const $n: usize = 1;
                $body
            }
            2 => {
                const $n: usize = 2;
                $body
            }
            3 => {
                const $n: usize = 3;
                $body
            }
            4 => {
                const $n: usize = 4;
                $body
            }
            5 => {
                const $n: usize = 5;
                $body
            }
            6 => {
                const $n: usize = 6;
                $body
            }
            7 => {
                const $n: usize = 7;
                $body
            }
            8 => {
                const $n: usize = 8;
                $body
            }
            other => unreachable!("row count {other} was checked to be in 1..=8"),
        }
    };
}
pub(crate) use dispatch_rows;

/// Checks the [`crate::dispatch::DotFn`] contract for a weight format of `w_block_bytes`
/// bytes per block paired with activations of `a_block_bytes` per block, and returns the
/// number of blocks in the weight row.
///
/// After this returns, every activation row `r < out.len()` has its
/// `n_blocks * a_block_bytes` bytes inside `acts` at offset `r * act_row_bytes`, and the
/// weight row is exactly `n_blocks * w_block_bytes` bytes: the invariant every kernel's
/// raw-pointer reads rely on.
///
/// # Panics
/// On any violation: these are caller bugs (the matmul sizes everything from the shapes).
pub(crate) fn check_dot_args(
    w: &[u8],
    w_block_bytes: usize,
    acts: &[u8],
    act_row_bytes: usize,
    a_block_bytes: usize,
    out: &[f32],
) -> usize {
    assert!(
        w.len().is_multiple_of(w_block_bytes),
        "weight row of {} bytes is not a whole number of {w_block_bytes}-byte blocks",
        w.len()
    );
    assert!(
        (1..=MAX_ACT_ROWS).contains(&out.len()),
        "{} activation rows requested, the kernels take 1..={MAX_ACT_ROWS}",
        out.len()
    );
    let n_blocks = w.len() / w_block_bytes;
    let needed = (out.len() - 1) * act_row_bytes + n_blocks * a_block_bytes;
    assert!(
        acts.len() >= needed,
        "activations hold {} bytes, {} rows of stride {act_row_bytes} need {needed}",
        acts.len(),
        out.len()
    );
    n_blocks
}

/// Reads the little-endian IEEE binary16 at `p` as f32 (subnormals included).
///
/// # Safety
/// `p..p + 2` must be readable; the CPU must have f16c.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn f16_at(p: *const u8) -> f32 {
    // SAFETY: the caller guarantees two readable bytes at `p`; unaligned read.
    let bits = unsafe { p.cast::<u16>().read_unaligned() };
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

/// Reads the little-endian f32 at `p`.
///
/// # Safety
/// `p..p + 4` must be readable.
#[inline]
pub(crate) unsafe fn f32_at(p: *const u8) -> f32 {
    // SAFETY: the caller guarantees four readable bytes at `p`; unaligned read.
    unsafe { p.cast::<f32>().read_unaligned() }
}

/// Loads 16 bytes of packed nibbles at `p` and returns the 32 nibbles in element order:
/// the low nibbles (elements 0..16) in the low 128-bit lane, the high nibbles (16..32) in
/// the high lane, each as a byte 0..=15.
///
/// # Safety
/// `p..p + 16` must be readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn nibbles_32(p: *const u8) -> __m256i {
    // SAFETY: the caller guarantees 16 readable bytes at `p`; unaligned load.
    let x = unsafe { _mm_loadu_si128(p.cast()) };
    let hi = _mm_srli_epi16(x, 4);
    _mm256_and_si256(_mm256_set_m128i(hi, x), _mm256_set1_epi8(0x0F))
}

/// Expands the 32 bits of `bits` into 32 bytes: byte `j` is 0xFF when bit `j` is set and
/// 0x00 otherwise.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn bits_to_bytes(bits: u32) -> __m256i {
    let v = _mm256_set1_epi32(bits as i32);
    // Byte j takes byte j / 8 of the word ...
    let spread = _mm256_set_epi64x(
        0x0303_0303_0303_0303,
        0x0202_0202_0202_0202,
        0x0101_0101_0101_0101,
        0x0000_0000_0000_0000,
    );
    let bytes = _mm256_shuffle_epi8(v, spread);
    // ... and is all ones after OR-ing every bit but bit j % 8 iff that bit is set.
    let others = _mm256_set1_epi64x(0x7FBF_DFEF_F7FB_FDFEu64 as i64);
    _mm256_cmpeq_epi8(_mm256_or_si256(bytes, others), _mm256_set1_epi8(-1))
}

/// Sum of the 8 lanes of `v`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    hsum_ps128(s)
}

/// Sum of the 4 lanes of `v`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn hsum_ps128(v: __m128) -> f32 {
    let s = _mm_add_ps(v, _mm_movehl_ps(v, v));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Sum of the 8 i32 lanes of `v` (wrapping; callers stay far below overflow).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn hsum_epi32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    hsum_epi32_128(s)
}

/// Sum of the 4 i32 lanes of `v` (wrapping; callers stay far below overflow).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn hsum_epi32_128(v: __m128i) -> i32 {
    let s = _mm_add_epi32(v, _mm_shuffle_epi32(v, 0b01_00_11_10));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
    _mm_cvtsi128_si32(s)
}

/// Dot products of 32 signed bytes `w` (|w| ≤ 128) with 32 signed bytes `a`
/// (-127 ..= 127), given `w_abs = |w|` precomputed once per weight block: 8 i32 lanes,
/// each the sum of 4 products. Exact: a pair of products is at most 2·128·127 < 2^15.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot_i8_signed(w_abs: __m256i, w: __m256i, a: __m256i) -> __m256i {
    let pairs = _mm256_maddubs_epi16(w_abs, _mm256_sign_epi8(a, w));
    _mm256_madd_epi16(pairs, _mm256_set1_epi16(1))
}

/// Decodes Q4_K/Q5_K's 12 packed scale bytes at `p` into (8 six-bit scales, 8 six-bit mins), one byte
/// each, packed little-endian into u64s.
///
/// # Safety
/// `p..p + 12` must be readable.
#[inline]
pub(crate) unsafe fn q4k_scales_mins(p: *const u8) -> (u64, u64) {
    // SAFETY: the caller guarantees 12 readable bytes; unaligned reads.
    let (w0, w1, w2) = unsafe {
        (
            p.cast::<u32>().read_unaligned(),
            p.add(4).cast::<u32>().read_unaligned(),
            p.add(8).cast::<u32>().read_unaligned(),
        )
    };
    let sc_lo = w0 & 0x3F3F_3F3F;
    let mn_lo = w1 & 0x3F3F_3F3F;
    let sc_hi = (w2 & 0x0F0F_0F0F) | (((w0 >> 6) & 0x0303_0303) << 4);
    let mn_hi = ((w2 >> 4) & 0x0F0F_0F0F) | (((w1 >> 6) & 0x0303_0303) << 4);
    (
        u64::from(sc_lo) | (u64::from(sc_hi) << 32),
        u64::from(mn_lo) | (u64::from(mn_hi) << 32),
    )
}

/// The last two levels of the tree: `h_i` holds, per 128-bit lane, two partial sums of
/// vector `2i` then two of vector `2i + 1`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn totals_from_pairs(
    h0: __m256i,
    h1: __m256i,
    h2: __m256i,
    h3: __m256i,
) -> __m256i {
    // Per 128-bit lane: one partial sum of each of vectors 0..4 (g0) and 4..8 (g1), the
    // low lane covering the vectors' first halves, the high lane their second halves.
    let g0 = _mm256_hadd_epi32(h0, h1);
    let g1 = _mm256_hadd_epi32(h2, h3);
    _mm256_add_epi32(
        _mm256_permute2x128_si256(g0, g1, 0x20),
        _mm256_permute2x128_si256(g0, g1, 0x31),
    )
}

/// Q4_K/Q5_K: the quants of 64-element chunk `c` (sub-blocks `2c` and `2c + 1`) of the
/// super-block at `wb`, as (low nibbles, high nibbles): 0..=15, or for Q5_K (`FIVE`) 0..=31
/// with the fifth bits from `qh` (the block's 32 high-bit bytes, shifted right by two for
/// the next chunk; unused for Q4_K).
///
/// # Safety
/// `wb` must point at a whole Q4_K block (Q5_K with `FIVE`), and `c < 4`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q45k_chunk<const FIVE: bool>(
    wb: *const u8,
    c: usize,
    qh: &mut __m256i,
) -> (__m256i, __m256i) {
    let low4 = _mm256_set1_epi8(0x0F);
    let qs_offset = if FIVE { 48 } else { 16 };
    // SAFETY: chunk c < 4 of the quants lies inside the block (caller).
    let q = unsafe { _mm256_loadu_si256(wb.add(qs_offset + 32 * c).cast()) };
    let mut lo = _mm256_and_si256(q, low4);
    let mut hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low4);
    if FIVE {
        // Fifth bits: bit 2c of qh[l] for the low nibbles, 2c + 1 for the high.
        let b0 = _mm256_and_si256(*qh, _mm256_set1_epi8(1));
        let b1 = _mm256_and_si256(*qh, _mm256_set1_epi8(2));
        lo = _mm256_or_si256(lo, _mm256_slli_epi16(b0, 4));
        hi = _mm256_or_si256(hi, _mm256_slli_epi16(b1, 3));
        *qh = _mm256_srli_epi16(*qh, 2);
    }
    (lo, hi)
}

/// Bytes of one Q8_K activation block: d (f32), 256 quants, 16 i16 block sums.
pub(crate) const Q8K_BYTES: usize = 292;
/// Offset of the quants in a Q8_K block.
pub(crate) const Q8K_QS: usize = 4;
/// Offset of the 16 block sums in a Q8_K block.
pub(crate) const Q8K_BSUMS: usize = 260;

/// Pointer to Q8_K super-block `b` of activation row `r`.
///
/// # Safety
/// Row `r` and block `b` must exist (checked by `check_dot_args`).
#[inline]
pub(crate) unsafe fn q8k_block(
    ap: *const u8,
    act_row_bytes: usize,
    r: usize,
    b: usize,
) -> *const u8 {
    // SAFETY: the caller guarantees the block lies inside the activation slice.
    unsafe { ap.add(r * act_row_bytes + b * Q8K_BYTES) }
}

/// How far ahead (at least) the decode kernels of the 32-element formats (AVX2 and
/// AVX-512) prefetch their weights: they walk 8 rows side by side, so the hardware
/// prefetcher sees 8 interleaved streams and software prefetch carries the stream.
/// Measured on Zen 4 (Q8_0 262144x640, 151936x896 and 28672x4096, 2 threads, alternating in
/// one process): prefetching into L2 (`T1`) 8-32 KiB ahead streamed at 0.83-0.93 of a plain
/// sequential read, against 0.55-0.68 for the former L1 prefetch (`T0`) 4 KiB ahead (L1
/// has too few miss buffers for that many lines in flight); `NTA` was worst (0.4-0.5) and no
/// prefetch at all 0.3-0.4. Q4_0/Q5_0 (more work per byte) were at least as fast with `T1`.
pub(crate) const STEP_PREFETCH_BYTES: usize = 8192;

/// Software prefetch of a later kernel step's weight bytes (in address order, an equal share
/// per block) while a decode step of the 32-element kernels walks its blocks.
#[derive(Clone, Copy)]
pub(crate) struct StepPrefetch {
    /// Where the prefetched bytes start (never dereferenced: the address may be past the
    /// weights, which a prefetch tolerates).
    base: *const u8,
    /// Cache lines prefetched per block of the step (0: no prefetch).
    lines_per_block: usize,
}

impl StepPrefetch {
    /// The prefetch for the step whose `step_bytes` bytes (its rows, contiguous) start at
    /// `step`, which walks `n_blocks` blocks per row: the bytes of the step whole steps ahead,
    /// at least [`STEP_PREFETCH_BYTES`]. Only `decode` (one activation row) prefetches: a
    /// batch rereads the rows from cache for every activation row.
    pub(crate) fn new(step: *const u8, step_bytes: usize, n_blocks: usize, decode: bool) -> Self {
        let distance = step_bytes * STEP_PREFETCH_BYTES.div_ceil(step_bytes.max(1)).max(1);
        let lines_per_block = if decode && n_blocks > 0 {
            step_bytes.div_ceil(64).div_ceil(n_blocks)
        } else {
            0
        };
        StepPrefetch {
            base: step.wrapping_add(distance),
            lines_per_block,
        }
    }

    /// Prefetches (into L2) the lines that belong to blocks `b .. b + count` of the step.
    ///
    /// # Safety
    /// The CPU must have the enabled features (callers are kernels reached through
    /// `install`); any address is fine.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn blocks(&self, b: usize, count: usize) {
        let first = b * self.lines_per_block;
        for line in first..first + count * self.lines_per_block {
            // Only a hint: the address is computed with `wrapping_add` and never
            // dereferenced, and a prefetch of an unmapped address does not fault.
            _mm_prefetch::<_MM_HINT_T1>(self.base.wrapping_add(64 * line).cast());
        }
    }
}

/// How far ahead a one-activation-row (decode) K-quant kernel prefetches its weight row,
/// which the matmul walks row after row: past the end of a row this reaches into the next
/// rows. Measured at 4096x14336 on one thread: 1, 2 and 4 KiB ahead streamed Q6_K ~2x and
/// Q4_K ~1.3x faster than no software prefetch, 4 KiB best for Q6_K.
const KQUANT_PREFETCH_BYTES: usize = 4096;

/// Prefetches the `block_bytes` bytes [`KQUANT_PREFETCH_BYTES`] after the block at `wb` (one
/// prefetch per cache line; blocks are contiguous, so the lines a block's range leaves out
/// are covered by the next block's). Only for decode (`N == 1`): a batch rereads the row
/// from cache for every tile.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn prefetch_kquant_block<const N: usize>(wb: *const u8, block_bytes: usize) {
    if N == 1 {
        let mut off = 0;
        while off < block_bytes {
            // Only a hint: the address is never dereferenced (`wrapping_add`), and a
            // prefetch of an unmapped address does not fault.
            _mm_prefetch::<_MM_HINT_T0>(wb.wrapping_add(KQUANT_PREFETCH_BYTES + off).cast());
            off += 64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether this CPU can run the helpers; when not, the test says so loudly and passes.
    fn cpu_has_avx2() -> bool {
        let ok = is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c");
        if !ok {
            eprintln!("SKIPPED: this CPU lacks avx2/fma/f16c, the AVX2 helpers cannot run");
        }
        ok
    }

    fn bytes_of(v: __m256i) -> [u8; 32] {
        // SAFETY: __m256i and [u8; 32] have the same size and any bit pattern is valid.
        unsafe { std::mem::transmute(v) }
    }

    #[test]
    fn nibbles_32_puts_low_nibbles_first_then_high_nibbles() {
        if !cpu_has_avx2() {
            return;
        }
        let packed: [u8; 16] = std::array::from_fn(|j| (j as u8) | ((15 - j as u8) << 4));
        // SAFETY: features checked above; 16 readable bytes.
        let got = bytes_of(unsafe { nibbles_32(packed.as_ptr()) });
        let want: [u8; 32] = std::array::from_fn(|e| if e < 16 { e as u8 } else { 31 - e as u8 });
        assert_eq!(got, want);
    }

    #[test]
    fn bits_to_bytes_sets_byte_j_to_all_ones_exactly_when_bit_j_is_set() {
        if !cpu_has_avx2() {
            return;
        }
        for bits in [0u32, u32::MAX, 0x8000_0001, 0x1234_5678, 0xA5A5_0F0F] {
            // SAFETY: features checked above.
            let got = bytes_of(unsafe { bits_to_bytes(bits) });
            let want: [u8; 32] = std::array::from_fn(|j| if bits >> j & 1 == 1 { 0xFF } else { 0 });
            assert_eq!(got, want, "bits {bits:#010x}");
        }
    }

    #[test]
    fn dot_i8_signed_is_exact_at_the_extremes() {
        if !cpu_has_avx2() {
            return;
        }
        // |w| = 128 against 127 is the largest pair sum the sign trick must not saturate.
        let w: [i8; 32] = std::array::from_fn(|j| if j % 2 == 0 { -128 } else { 127 });
        let a: [i8; 32] = std::array::from_fn(|j| if j % 3 == 0 { -127 } else { 127 });
        // SAFETY: features checked above; 32 readable bytes each.
        let got = unsafe {
            let wv = _mm256_loadu_si256(w.as_ptr().cast());
            hsum_epi32(dot_i8_signed(
                _mm256_sign_epi8(wv, wv),
                wv,
                _mm256_loadu_si256(a.as_ptr().cast()),
            ))
        };
        let want: i32 = w
            .iter()
            .zip(&a)
            .map(|(&x, &y)| i32::from(x) * i32::from(y))
            .sum();
        assert_eq!(got, want);
    }

    #[test]
    #[should_panic(expected = "activation rows requested")]
    fn check_dot_args_rejects_more_than_max_act_rows() {
        let out = [0f32; MAX_ACT_ROWS + 1];
        check_dot_args(&[0; 18], 18, &[0; 34 * 9], 34, 34, &out);
    }

    #[test]
    #[should_panic(expected = "activations hold")]
    fn check_dot_args_rejects_short_activations() {
        let out = [0f32; 2];
        check_dot_args(&[0; 36], 18, &[0; 100], 68, 34, &out);
    }
}
