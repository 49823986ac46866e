//! Scalar reference kernels: the oracle every SIMD path is tested against.
//!
//! - [`float`]: F32, F16 and BF16 (conversion, dot products).
//! - [`legacy`]: the 32-element block types Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1 and IQ4_NL.
//! - [`kquants`]: the 256-element super-block types Q2_K ... Q6_K, Q8_K and IQ4_XS.
//! - [`quantize`]: f32 -> block quantizers (activation formats and the simple weight ones).
//!
//! Dequantizers reproduce the reference runtime bit for bit (checked against
//! `fixtures/golden/quants.gguf`), so each documents the order of its float operations.
//! Dot products accumulate exact integer block sums in `i32` and apply the scales in `f32`,
//! in the order each function documents; SIMD kernels differ only in how they sum blocks.
//!
//! Nothing here assumes alignment: blocks are copied out of the byte slices with
//! [`bytemuck::pod_read_unaligned`] (at most 292 bytes per block) and written back with
//! [`bytemuck::bytes_of`], so any `&[u8]` works.

pub(crate) mod float;
pub(crate) mod kquants;
pub(crate) mod legacy;
pub(crate) mod quantize;

use std::mem::size_of;

use bytemuck::Pod;

use crate::dispatch::{KernelSet, MAX_ACT_ROWS};
use crate::types::GgmlType;

/// Installs every scalar kernel into `set`: a dot product for every weight type and a
/// quantizer for every activation type (`vec_dot_type`).
pub(crate) fn install(set: &mut KernelSet) {
    set.set_dot(GgmlType::F32, float::dot_f32);
    set.set_dot(GgmlType::F16, float::dot_f16);
    set.set_dot(GgmlType::BF16, float::dot_bf16);
    set.set_dot(GgmlType::Q4_0, legacy::dot_q4_0_q8_0);
    set.set_dot(GgmlType::Q4_1, legacy::dot_q4_1_q8_1);
    set.set_dot(GgmlType::Q5_0, legacy::dot_q5_0_q8_0);
    set.set_dot(GgmlType::Q5_1, legacy::dot_q5_1_q8_1);
    set.set_dot(GgmlType::Q8_0, legacy::dot_q8_0_q8_0);
    set.set_dot(GgmlType::IQ4_NL, legacy::dot_iq4_nl_q8_0);
    set.set_dot(GgmlType::Q2_K, kquants::dot_q2_k_q8_k);
    set.set_dot(GgmlType::Q3_K, kquants::dot_q3_k_q8_k);
    set.set_dot(GgmlType::Q4_K, kquants::dot_q4_k_q8_k);
    set.set_dot(GgmlType::Q5_K, kquants::dot_q5_k_q8_k);
    set.set_dot(GgmlType::Q6_K, kquants::dot_q6_k_q8_k);
    set.set_dot(GgmlType::IQ4_XS, kquants::dot_iq4_xs_q8_k);

    set.set_quantize(GgmlType::F32, quantize::quantize_f32);
    set.set_quantize(GgmlType::F16, quantize::quantize_f16);
    set.set_quantize(GgmlType::BF16, quantize::quantize_bf16);
    set.set_quantize(GgmlType::Q8_0, quantize::quantize_q8_0);
    set.set_quantize(GgmlType::Q8_1, quantize::quantize_q8_1);
    set.set_quantize(GgmlType::Q8_K, quantize::quantize_q8_k);
}

/// Dequantizes whole blocks of type `B` (`N` elements each) with `decode`, one block at a
/// time.
///
/// # Panics
/// If `src` is not a whole number of blocks or `dst` does not hold exactly their elements
/// (a caller bug: the sizes come from the tensor shape, checked when the file is loaded).
pub(crate) fn dequantize_blocks<B: Pod, const N: usize>(
    src: &[u8],
    dst: &mut [f32],
    decode: impl Fn(&B, &mut [f32; N]),
) {
    let block_bytes = size_of::<B>();
    assert!(
        src.len().is_multiple_of(block_bytes) && dst.len() == src.len() / block_bytes * N,
        "dequantize: {} bytes is not {} whole blocks of {block_bytes} bytes for {} values",
        src.len(),
        dst.len() / N,
        dst.len()
    );
    for (bytes, out) in src.chunks_exact(block_bytes).zip(dst.chunks_exact_mut(N)) {
        let block: B = bytemuck::pod_read_unaligned(bytes);
        let out: &mut [f32; N] = out.try_into().expect("chunks_exact_mut yields N values");
        decode(&block, out);
    }
}

/// Quantizes whole blocks of `N` values into blocks of type `B` with `encode`.
///
/// # Panics
/// If `src` is not a whole number of blocks or `dst` is not exactly their bytes (caller bug).
pub(crate) fn quantize_blocks<B: Pod, const N: usize>(
    src: &[f32],
    dst: &mut [u8],
    encode: impl Fn(&[f32; N]) -> B,
) {
    let block_bytes = size_of::<B>();
    assert!(
        src.len().is_multiple_of(N) && dst.len() == src.len() / N * block_bytes,
        "quantize: {} values and {} bytes are not matching whole blocks ({N} values, {block_bytes} bytes)",
        src.len(),
        dst.len()
    );
    for (values, out) in src.chunks_exact(N).zip(dst.chunks_exact_mut(block_bytes)) {
        let values: &[f32; N] = values.try_into().expect("chunks_exact yields N values");
        out.copy_from_slice(bytemuck::bytes_of(&encode(values)));
    }
}

/// The shared body of every block dot kernel (see [`crate::dispatch::DotFn`] for the
/// contract).
///
/// For each weight block in order, `unpack` turns it into a form `U` once, then for every
/// activation row `r` the per-block contribution `block_dot(&u, &a)` is added to that row's
/// sum: `sum[r] += block_dot(..)`, starting from `0.0`, blocks in order, in `f32`.
///
/// # Panics
/// If `w` is not whole blocks, `out` has more than [`MAX_ACT_ROWS`] rows, `act_row_bytes` is
/// shorter than one activation row, or `acts` is too short (all caller bugs).
pub(crate) fn dot_blocks<W: Pod, A: Pod, U>(
    w: &[u8],
    acts: &[u8],
    act_row_bytes: usize,
    out: &mut [f32],
    unpack: impl Fn(&W) -> U,
    block_dot: impl Fn(&U, &A) -> f32,
) {
    let w_block_bytes = size_of::<W>();
    let a_block_bytes = size_of::<A>();
    let n_blocks = w.len() / w_block_bytes;
    let n_rows = out.len();
    assert!(
        w.len().is_multiple_of(w_block_bytes),
        "dot: weight row of {} bytes is not whole {w_block_bytes}-byte blocks",
        w.len()
    );
    assert!(
        n_rows <= MAX_ACT_ROWS,
        "dot: {n_rows} activation rows, at most {MAX_ACT_ROWS}"
    );
    if n_rows == 0 {
        return;
    }
    let a_used = n_blocks * a_block_bytes;
    assert!(
        (n_rows == 1 || act_row_bytes >= a_used) && acts.len() >= (n_rows - 1) * act_row_bytes + a_used,
        "dot: {} activation bytes cannot hold {n_rows} rows of {a_used} bytes, {act_row_bytes} apart",
        acts.len()
    );
    let mut sums = [0f32; MAX_ACT_ROWS];
    for (bi, w_bytes) in w.chunks_exact(w_block_bytes).enumerate() {
        let unpacked = unpack(&bytemuck::pod_read_unaligned(w_bytes));
        for (r, sum) in sums[..n_rows].iter_mut().enumerate() {
            let start = r * act_row_bytes + bi * a_block_bytes;
            let a: A = bytemuck::pod_read_unaligned(&acts[start..start + a_block_bytes]);
            *sum += block_dot(&unpacked, &a);
        }
    }
    out.copy_from_slice(&sums[..n_rows]);
}

/// `Σ a[i] * b[i]` over two equally long slices of small integers, in `i32` (exact for every
/// block size used here: at most 256 products of magnitude <= 128 * 128).
#[inline]
pub(crate) fn isum(a: &[i8], b: &[i8]) -> i32 {
    debug_assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(&x, &y)| i32::from(x) * i32::from(y))
        .sum()
}
