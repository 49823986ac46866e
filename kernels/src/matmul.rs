//! `y = W x` for one activation row (decode, GEMV) or many (prefill, GEMM).
//!
//! The activations are quantized once into the weight type's `vec_dot_type`, then the
//! weight rows are split into chunks across the rayon pool. Each task walks its weight
//! rows and, for every row, calls the dot kernel on tiles of up to [`MAX_ACT_ROWS`]
//! activation rows, so every weight block is unpacked once per tile rather than once per
//! activation row.

use rayon::prelude::*;

use crate::dispatch::{self, KernelSet, MAX_ACT_ROWS};
use crate::formats::format;
use crate::types::GgmlType;

/// A borrowed weight matrix: `rows` rows of `cols` elements of type `ty`, row-major,
/// exactly `rows * row_bytes(cols)` bytes (usually a slice of the memory-mapped file).
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    /// Element type of the weights.
    pub ty: GgmlType,
    /// The raw rows.
    pub data: &'a [u8],
    /// Number of rows (output features).
    pub rows: usize,
    /// Elements per row (input features).
    pub cols: usize,
}

/// Reusable buffers for [`matmul`]: keep one per session so the token loop never allocates
/// once the buffers have grown to the largest shape.
#[derive(Default, Debug)]
pub struct MatmulScratch {
    quantized: Vec<u8>,
    transposed: Vec<f32>,
}

/// Computes `y[t * w.rows + r] = dot(W row r, x row t)` for every activation row `t`.
///
/// `x` holds `n_tokens` rows of `w.cols` f32 values and `y` must hold `n_tokens * w.rows`.
/// Uses the best kernels for this CPU ([`dispatch::best`]).
///
/// # Panics
/// If the slice lengths do not match the shapes, or the weight type cannot be a weight
/// (Q8_K): both are caller bugs, checked by the model loader before any matmul runs.
pub fn matmul(pool: &rayon::ThreadPool, w: &MatRef, x: &[f32], y: &mut [f32], scratch: &mut MatmulScratch) {
    matmul_with(dispatch::best(), pool, w, x, y, scratch)
}

/// [`matmul`] with an explicit kernel set (tests pass [`dispatch::scalar`]).
pub fn matmul_with(
    kernels: &KernelSet,
    pool: &rayon::ThreadPool,
    w: &MatRef,
    x: &[f32],
    y: &mut [f32],
    scratch: &mut MatmulScratch,
) {
    let wf = format(w.ty);
    let af = format(wf.vec_dot_type);
    assert!(w.cols % wf.block_elems == 0 && w.cols % af.block_elems == 0, "cols {} not a multiple of the block size", w.cols);
    let w_row_bytes = wf.row_bytes(w.cols);
    assert_eq!(w.data.len(), w.rows * w_row_bytes, "weight bytes do not match {}x{} {}", w.rows, w.cols, w.ty);
    assert_eq!(x.len() % w.cols, 0, "activation length is not a multiple of cols");
    let n_tokens = x.len() / w.cols;
    assert_eq!(y.len(), n_tokens * w.rows, "output length does not match");
    if n_tokens == 0 || w.rows == 0 {
        return;
    }
    let dot = kernels.dot(w.ty).unwrap_or_else(|| panic!("{} cannot be a weight type", w.ty));
    let quantize = kernels.quantize(af.ty).unwrap_or_else(|| panic!("no quantizer for {}", af.ty));

    // 1. Quantize every activation row once.
    let a_row_bytes = af.row_bytes(w.cols);
    scratch.quantized.resize(n_tokens * a_row_bytes, 0);
    let quantized = &mut scratch.quantized[..n_tokens * a_row_bytes];
    pool.install(|| {
        quantized
            .par_chunks_mut(a_row_bytes)
            .zip(x.par_chunks(w.cols))
            .for_each(|(q, xr)| quantize(xr, q));
    });
    let quantized = &scratch.quantized[..n_tokens * a_row_bytes];

    // 2. Weight-row chunks across threads; each computes a [rows_in_chunk x n_tokens] block,
    //    stored transposed (row-major by weight row) and scattered into `y` afterwards.
    let n_threads = pool.current_num_threads().max(1);
    let chunk_rows = (w.rows / (4 * n_threads)).clamp(16, 256).min(w.rows);
    scratch.transposed.resize(w.rows * n_tokens, 0.0);
    let transposed = &mut scratch.transposed[..w.rows * n_tokens];
    pool.install(|| {
        transposed.par_chunks_mut(chunk_rows * n_tokens).enumerate().for_each(|(ci, out_chunk)| {
            let first_row = ci * chunk_rows;
            for (ri, out_row) in out_chunk.chunks_mut(n_tokens).enumerate() {
                let r = first_row + ri;
                let w_row = &w.data[r * w_row_bytes..(r + 1) * w_row_bytes];
                for (ti, out_tile) in out_row.chunks_mut(MAX_ACT_ROWS).enumerate() {
                    let t0 = ti * MAX_ACT_ROWS;
                    let acts = &quantized[t0 * a_row_bytes..(t0 + out_tile.len()) * a_row_bytes];
                    dot(w_row, acts, a_row_bytes, out_tile);
                }
            }
        });
    });
    if n_tokens == 1 {
        y.copy_from_slice(&scratch.transposed[..w.rows]);
    } else {
        for r in 0..w.rows {
            for t in 0..n_tokens {
                y[t * w.rows + r] = scratch.transposed[r * n_tokens + t];
            }
        }
    }
}
