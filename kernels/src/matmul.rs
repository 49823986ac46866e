//! `y = W x` for one activation row (decode, GEMV) or many (prefill, GEMM).
//!
//! 1. The activations are quantized once into the weight type's `vec_dot_type` (F32
//!    weights read `x` as it is), into a reused scratch buffer whose rows start on cache
//!    lines. Large batches are quantized in parallel.
//! 2. The output is cut into jobs: a range of weight rows (a multiple of 16, at least 16,
//!    about `JOBS_PER_THREAD` jobs per pool thread) times, only when there are too few
//!    row ranges to keep the threads busy, a range of activation rows. Rayon's work
//!    stealing balances the jobs.
//! 3. Each job walks its weight rows in blocks of about `ROW_BLOCK_BYTES` (they stay in
//!    L2). For each block it visits the activation rows in tiles of [`MAX_ACT_ROWS`] and
//!    calls the dot kernel once per (weight row, tile): every weight block is unpacked once
//!    per tile, not once per activation row. Kernel sets with a [`ScaledDotFn`] for the
//!    type (AVX2 and AVX-512 VNNI, Q8_0/Q8_1-paired weights) get up to `SCALED_ROWS`
//!    weight rows per call and the activation scales as an f32 table built once per
//!    matmul ([`scale_rows`]).
//!    Kernel sets with a [`GemmFn`] for the type (AVX2: Q4_0/Q4_1/Q5_0/Q5_1/Q8_0, Q4_K, Q5_K;
//!    AVX-512 VNNI: the same and Q6_K)
//!    use it for every full tile of [`GEMM_TILE`] activation rows instead, with per-tile
//!    block-major tables of activation scales and block sums built once per matmul
//!    ([`tile_tables`]); a last partial tile goes through the kernels above. Where the set
//!    also has a [`GemmTilesFn`] (AVX-512 VNNI, the 32-element formats), runs of 2 ..=
//!    [`MAX_GEMM_TILES`] full tiles go through it in one call, which rearranges each weight
//!    block once for all of them (same bits as one tile at a time).
//!    Results go straight into `y` (token-major), each job writing only its own rectangle
//!    of it.
//! 4. Weights in the row-interleaved layout ([`WeightLayout::Interleaved`], rearranged at
//!    load time by [`crate::interleave`]) go through the set's
//!    [`KernelSet::interleaved`] kernels instead: every run of 1 ..= [`MAX_GEMM_TILES`]
//!    full tiles through its several-tile kernel, the other activation rows (decode's one
//!    row) through its dot, which writes a whole row block per call. Same bits as the
//!    row-major kernels.
//!
//! [`matmul_many`] runs several matrices that read the same input (q/k/v, gate/up) as one
//! matmul: the input is quantized once and all their jobs share one pool dispatch.
//!
//! Small matrices (decode runs ~7 matmuls per layer, some tiny) and one-thread pools skip
//! the pool entirely: waking it would cost more than the work.
//!
//! Tiles always start at multiples of [`MAX_ACT_ROWS`] (= [`GEMM_TILE`]), whatever the job
//! split, so the result never depends on the thread count. It equals one-row (GEMV)
//! results bit for bit when the kernel gives each activation row of a multi-row call the
//! value it gives it alone (the scalar kernels do); the SIMD GEMM tiles and one-row kernels
//! share their f32 arithmetic per block or super-block, so they agree bit for bit too
//! (`kernels/tests/scaled_dot.rs`; `kernels/tests/matmul_props.rs` checks the scalar set
//! bitwise and the best set against it up to f32 summation order).

use std::marker::PhantomData;
use std::ops::Range;

use bytemuck::{Pod, Zeroable};
use rayon::prelude::*;

use crate::dispatch::{
    self, ActTile, DotFn, GemmFn, GemmTilesFn, InterleavedDotFn, KernelSet, QuantizeFn,
    ScaledDotFn, GEMM_TILE, MAX_ACT_ROWS, MAX_GEMM_TILES,
};
use crate::formats::format;
use crate::interleave::{interleaved_len, INTERLEAVE_ROWS};
use crate::types::GgmlType;

/// Weight bytes times activation rows below which a matmul runs on the calling thread
/// (waking the pool costs roughly what streaming this much from memory does; to be tuned on
/// a quiet machine with `cargo bench --bench gemv -- 128x896`).
const SERIAL_WORK_BYTES: usize = 128 * 1024;
/// Activation elements below which quantization runs on one thread.
const PARALLEL_QUANTIZE_ELEMS: usize = 32 * 1024;
/// Jobs per pool thread the split aims for (work stealing evens out the rest).
const JOBS_PER_THREAD: usize = 4;
/// Smallest number of weight rows in a job (unless the matrix has fewer).
const MIN_JOB_ROWS: usize = 16;
/// Jobs cover a multiple of this many weight rows (the groups of interleaved weights).
const JOB_ROW_ALIGN: usize = INTERLEAVE_ROWS;
/// Weight bytes a job walks for every activation tile before moving on; sized to stay in
/// L2 together with one tile of quantized activations.
const ROW_BLOCK_BYTES: usize = 128 * 1024;
/// Weight rows per [`ScaledDotFn`] call (amortises the call over many short rows in decode).
const SCALED_ROWS: usize = 32;
/// Weight rows per [`InterleavedDotFn`] call with several activation rows (decode, with one,
/// writes a whole row block straight into the output).
const INTERLEAVED_ROWS: usize = 64;
/// Alignment (and stride granularity) of the quantized activation rows.
const ACT_ALIGN: usize = 64;

/// How the bytes of a weight matrix are arranged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WeightLayout {
    /// The file's layout: row after row, `rows * row_bytes(cols)` bytes.
    #[default]
    RowMajor,
    /// The row-interleaved layout of [`crate::interleave`]
    /// ([`interleaved_len`]`(ty, rows, cols)` bytes); only for kernel sets with
    /// [`KernelSet::interleaved`] kernels for the type.
    Interleaved,
}

/// A borrowed weight matrix: `rows` rows of `cols` elements of type `ty` (usually a slice of
/// the memory-mapped file, or weights rearranged at load time).
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    /// Element type of the weights.
    pub ty: GgmlType,
    /// The weights' bytes, arranged as `layout` says.
    pub data: &'a [u8],
    /// Number of rows (output features).
    pub rows: usize,
    /// Elements per row (input features).
    pub cols: usize,
    /// How `data` is arranged.
    pub layout: WeightLayout,
}

impl<'a> MatRef<'a> {
    /// A matrix in the file's row-major layout.
    pub fn new(ty: GgmlType, data: &'a [u8], rows: usize, cols: usize) -> MatRef<'a> {
        MatRef {
            ty,
            data,
            rows,
            cols,
            layout: WeightLayout::RowMajor,
        }
    }

    /// Bytes `data` must hold for this shape and layout.
    pub fn expected_len(&self) -> usize {
        match self.layout {
            WeightLayout::RowMajor => self.rows * format(self.ty).row_bytes(self.cols),
            WeightLayout::Interleaved => interleaved_len(self.ty, self.rows, self.cols),
        }
    }
}

/// One cache line of scratch bytes; a `Vec` of these is a 64-byte aligned byte buffer.
#[repr(C, align(64))]
#[derive(Clone, Copy, Pod, Zeroable)]
struct CacheLine([u8; ACT_ALIGN]);

/// Reusable buffers for [`matmul`]: keep one per session so the token loop never allocates
/// once the buffers have grown to the largest shape.
#[derive(Default)]
pub struct MatmulScratch {
    /// Quantized activation rows, each starting on a cache line.
    quantized: Vec<CacheLine>,
    /// Their block scales as f32 (see [`scale_rows`]), for [`ScaledDotFn`] kernels.
    scales: Vec<f32>,
    /// Block-major `d` of every full tile (see [`tile_tables`]), for [`GemmFn`] kernels.
    tile_d: Vec<f32>,
    /// Block-major `s` (Q8_1) of every full tile.
    tile_s: Vec<f32>,
    /// Block-major quant sums (Q8_0) of every full tile.
    tile_sums: Vec<i32>,
}

/// The scratch buffers of one matmul.
struct Buffers<'a> {
    quantized: &'a mut [u8],
    scales: &'a mut [f32],
    tile_d: &'a mut [f32],
    tile_s: &'a mut [f32],
    tile_sums: &'a mut [i32],
}

impl std::fmt::Debug for MatmulScratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MatmulScratch")
            .field("quantized_bytes", &(self.quantized.len() * ACT_ALIGN))
            .finish()
    }
}

impl MatmulScratch {
    /// A 64-byte aligned buffer of at least `n_bytes` bytes (contents unspecified).
    #[cfg(test)]
    fn quantized_bytes(&mut self, n_bytes: usize) -> &mut [u8] {
        self.buffers(n_bytes, 0, (0, 0, 0)).quantized
    }

    /// [`MatmulScratch::quantized_bytes`], an f32 buffer of `n_scales` values and the tile
    /// tables (`d`, `s`, `sums` lengths).
    fn buffers(
        &mut self,
        n_bytes: usize,
        n_scales: usize,
        tiles: (usize, usize, usize),
    ) -> Buffers<'_> {
        let n_lines = n_bytes.div_ceil(ACT_ALIGN);
        if self.quantized.len() < n_lines {
            self.quantized.resize(n_lines, CacheLine([0; ACT_ALIGN]));
        }
        grow(&mut self.scales, n_scales);
        grow(&mut self.tile_d, tiles.0);
        grow(&mut self.tile_s, tiles.1);
        grow(&mut self.tile_sums, tiles.2);
        Buffers {
            quantized: &mut bytemuck::cast_slice_mut(&mut self.quantized[..n_lines])[..n_bytes],
            scales: &mut self.scales[..n_scales],
            tile_d: &mut self.tile_d[..tiles.0],
            tile_s: &mut self.tile_s[..tiles.1],
            tile_sums: &mut self.tile_sums[..tiles.2],
        }
    }
}

/// Grows `v` to at least `n` elements (never shrinks: the buffers are reused).
fn grow<T: Clone + Default>(v: &mut Vec<T>, n: usize) {
    if v.len() < n {
        v.resize(n, T::default());
    }
}

/// Computes `y[t * w.rows + r] = dot(W row r, x row t)` for every activation row `t`.
///
/// `x` holds `n_tokens` rows of `w.cols` f32 values and `y` must hold `n_tokens * w.rows`.
/// Uses the best kernels for this CPU ([`dispatch::best`]).
///
/// # Panics
/// If the slice lengths do not match the shapes, or the weight type cannot be a weight
/// (Q8_K): both are caller bugs, checked by the model loader before any matmul runs.
pub fn matmul(
    pool: &rayon::ThreadPool,
    w: &MatRef,
    x: &[f32],
    y: &mut [f32],
    scratch: &mut MatmulScratch,
) {
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
    matmul_many_with(kernels, pool, std::slice::from_ref(w), x, &mut [y], scratch)
}

/// The most weight matrices one [`matmul_many`] call multiplies.
pub const MAX_FUSED: usize = 4;

/// Whether [`matmul_many`] accepts these matrices together: 1 ..= [`MAX_FUSED`] of them,
/// all with the same number of columns and the same activation format (`vec_dot_type`).
pub fn can_fuse(ws: &[MatRef]) -> bool {
    !ws.is_empty()
        && ws.len() <= MAX_FUSED
        && ws.iter().all(|w| {
            w.cols == ws[0].cols && format(w.ty).vec_dot_type == format(ws[0].ty).vec_dot_type
        })
}

/// Several matmuls on the same input: `ys[i] = ws[i] x` (each as [`matmul`] computes it,
/// bit for bit), with the input quantized once and all the work in one pool dispatch
/// (decode runs q/k/v and gate/up this way: one wake-up of the pool instead of three).
///
/// # Panics
/// If [`can_fuse`] rejects `ws`, `ys.len() != ws.len()`, or a shape does not match (caller
/// bugs, as for [`matmul`]).
pub fn matmul_many(
    pool: &rayon::ThreadPool,
    ws: &[MatRef],
    x: &[f32],
    ys: &mut [&mut [f32]],
    scratch: &mut MatmulScratch,
) {
    matmul_many_with(dispatch::best(), pool, ws, x, ys, scratch)
}

/// [`matmul_many`] with an explicit kernel set.
pub fn matmul_many_with(
    kernels: &KernelSet,
    pool: &rayon::ThreadPool,
    ws: &[MatRef],
    x: &[f32],
    ys: &mut [&mut [f32]],
    scratch: &mut MatmulScratch,
) {
    assert!(
        can_fuse(ws),
        "matmul_many needs 1..={MAX_FUSED} matrices with equal cols and activation format"
    );
    assert_eq!(ws.len(), ys.len(), "one output per weight matrix");
    let cols = ws[0].cols;
    assert!(cols > 0, "a weight matrix needs at least one column");
    assert_eq!(
        x.len() % cols,
        0,
        "activation length is not a multiple of cols"
    );
    let n_tokens = x.len() / cols;
    let af = format(format(ws[0].ty).vec_dot_type);
    let mut works: [Option<Work>; MAX_FUSED] = Default::default();
    let mut outs: [Option<SharedOut>; MAX_FUSED] = Default::default();
    let mut w_bytes = 0usize;
    for ((w, y), (work, out)) in ws
        .iter()
        .zip(ys.iter_mut())
        .zip(works.iter_mut().zip(outs.iter_mut()))
    {
        let wf = format(w.ty);
        assert!(
            w.cols % wf.block_elems == 0 && w.cols % af.block_elems == 0,
            "cols {} not a multiple of the block size",
            w.cols
        );
        let w_row_bytes = wf.row_bytes(w.cols);
        assert_eq!(
            w.data.len(),
            w.expected_len(),
            "weight bytes do not match {}x{} {} ({:?})",
            w.rows,
            w.cols,
            w.ty,
            w.layout
        );
        let interleaved = match w.layout {
            WeightLayout::RowMajor => None,
            WeightLayout::Interleaved => Some(kernels.interleaved(w.ty).unwrap_or_else(|| {
                panic!(
                    "interleaved {} weights need kernels for them, the {} set has none",
                    w.ty,
                    kernels.name()
                )
            })),
        };
        assert_eq!(y.len(), n_tokens * w.rows, "output length does not match");
        let dot = kernels
            .dot(w.ty)
            .unwrap_or_else(|| panic!("{} cannot be a weight type", w.ty));
        w_bytes += w.data.len();
        *work = Some(Work {
            dot,
            scaled: kernels.scaled_dot(w.ty),
            gemm: kernels.gemm(w.ty),
            gemm_tiles: kernels.gemm_tiles(w.ty),
            interleaved,
            tiles: TileTables::default(),
            scales: &[],
            scale_stride: 0,
            w: w.data,
            w_row_bytes,
            rows: w.rows,
            acts: &[],
            act_stride: 0,
            row_block: row_block(w_row_bytes, interleaved.is_some()),
        });
        *out = Some(SharedOut::new(y, w.rows, n_tokens));
    }
    if n_tokens == 0 {
        return;
    }
    let n_threads = pool.current_num_threads().max(1);
    let serial = runs_serially(n_threads, w_bytes, n_tokens);
    let n_mats = ws.len();

    let run = |acts: &[u8],
               act_stride: usize,
               scales: &[f32],
               scale_stride: usize,
               tiles: TileTables<'_>| {
        let mut jobs = JobList::default();
        for (i, work) in works[..n_mats].iter().enumerate() {
            let rows = work.as_ref().map_or(0, |w| w.rows);
            jobs.push(Split::new(rows, n_tokens, n_threads));
            debug_assert_eq!(jobs.n_mats, i + 1);
        }
        let run_job = |m: usize, rows: Range<usize>, tokens: Range<usize>| {
            if let (Some(work), Some(out)) = (&works[m], outs[m]) {
                if !rows.is_empty() {
                    work.with_acts(acts, act_stride, scales, scale_stride, tiles)
                        .run(out, rows, tokens);
                }
            }
        };
        if serial {
            for (m, work) in works[..n_mats].iter().enumerate() {
                let rows = work.as_ref().map_or(0, |w| w.rows);
                run_job(m, 0..rows, 0..n_tokens);
            }
            return;
        }
        (0..jobs.total()).into_par_iter().for_each(|job| {
            let (m, rows, tokens) = jobs.job(job);
            run_job(m, rows, tokens);
        });
    };

    if af.ty == GgmlType::F32 {
        // F32 weights pair with f32 activations: read `x` in place.
        let acts: &[u8] = bytemuck::cast_slice(x);
        let a_row_bytes = af.row_bytes(cols);
        let no_tiles = TileTables::default();
        if serial {
            run(acts, a_row_bytes, &[], 0, no_tiles);
        } else {
            pool.install(|| run(acts, a_row_bytes, &[], 0, no_tiles));
        }
        return;
    }

    let quantize = kernels
        .quantize(af.ty)
        .unwrap_or_else(|| panic!("no quantizer for {}", af.ty));
    let a_row_bytes = af.row_bytes(cols);
    let act_stride = a_row_bytes.next_multiple_of(ACT_ALIGN);
    // Q8_K rows carry everything their kernels read; Q8_0 / Q8_1 kernels take a table.
    let wants_scales = matches!(af.ty, GgmlType::Q8_0 | GgmlType::Q8_1)
        && works[..n_mats].iter().any(|w| {
            w.as_ref()
                .is_some_and(|w| w.scaled.is_some() || w.interleaved.is_some())
        });
    let scale_stride = if wants_scales {
        scale_row_len(af.ty, cols / af.block_elems)
    } else {
        0
    };
    let n_blocks = cols / af.block_elems;
    let wants_tiles = n_tokens >= GEMM_TILE
        && works[..n_mats].iter().any(|w| {
            w.as_ref()
                .is_some_and(|w| w.gemm.is_some() || w.interleaved.is_some())
        });
    let n_tiles = if wants_tiles { n_tokens / GEMM_TILE } else { 0 };
    let lens = if wants_tiles {
        tile_table_lens(af.ty, n_blocks)
    } else {
        (0, 0, 0)
    };
    let Buffers {
        quantized,
        scales,
        tile_d,
        tile_s,
        tile_sums,
    } = scratch.buffers(
        n_tokens * act_stride,
        n_tokens * scale_stride,
        (n_tiles * lens.0, n_tiles * lens.1, n_tiles * lens.2),
    );
    let act_block = ActBlock {
        elems: af.block_elems,
        bytes: af.block_bytes,
    };
    let quantize_in_parallel = !serial && x.len() >= PARALLEL_QUANTIZE_ELEMS;
    let prepare = |quantized: &mut [u8],
                   scales: &mut [f32],
                   tile_d: &mut [f32],
                   tile_s: &mut [f32],
                   tile_sums: &mut [i32]| {
        if quantize_in_parallel {
            quantize_rows_parallel(
                quantize,
                x,
                cols,
                quantized,
                act_stride,
                a_row_bytes,
                act_block,
                n_threads,
            );
        } else {
            quantize_rows(quantize, x, cols, quantized, act_stride, a_row_bytes);
        }
        if wants_scales {
            for (q, sc) in quantized
                .chunks(act_stride)
                .zip(scales.chunks_mut(scale_stride))
            {
                scale_rows(af.ty, &q[..a_row_bytes], sc);
            }
        }
        let tiles = quantized.chunks(GEMM_TILE * act_stride).take(n_tiles);
        for (i, tile) in tiles.enumerate() {
            tile_tables(
                af.ty,
                tile,
                act_stride,
                n_blocks,
                &mut tile_d[i * lens.0..(i + 1) * lens.0],
                &mut tile_s[i * lens.1..(i + 1) * lens.1],
                &mut tile_sums[i * lens.2..(i + 1) * lens.2],
            );
        }
    };
    if serial {
        prepare(quantized, scales, tile_d, tile_s, tile_sums);
        let tiles = TileTables::new(tile_d, tile_s, tile_sums, lens);
        run(quantized, act_stride, scales, scale_stride, tiles);
    } else {
        pool.install(|| {
            prepare(quantized, scales, tile_d, tile_s, tile_sums);
            let tiles = TileTables::new(tile_d, tile_s, tile_sums, lens);
            run(quantized, act_stride, scales, scale_stride, tiles);
        });
    }
}

/// Weight rows a job walks per pass over its activation tiles: about [`ROW_BLOCK_BYTES`] of
/// them, rounded down to a multiple of 16 when there are more (the AVX-512 tiles take 16
/// rows at a time and a partial group costs a full one: Q4_K/Q6_K rows of 4864 columns gave
/// blocks of 47 rows, so a 112-row job took 8 groups instead of 7), and never fewer than one
/// whole group of `interleaved` weights.
fn row_block(w_row_bytes: usize, interleaved: bool) -> usize {
    let rows = (ROW_BLOCK_BYTES / w_row_bytes).max(1);
    if rows >= INTERLEAVE_ROWS || interleaved {
        (rows / INTERLEAVE_ROWS).max(1) * INTERLEAVE_ROWS
    } else {
        rows
    }
}

/// f32 values [`scale_rows`] writes for one activation row of `n_blocks` blocks of `act`.
fn scale_row_len(act: GgmlType, n_blocks: usize) -> usize {
    match act {
        GgmlType::Q8_0 | GgmlType::Q8_1 => 2 * n_blocks,
        _ => n_blocks,
    }
}

/// The f32 scale table a [`ScaledDotFn`] reads, for one quantized activation row `row` of
/// Q8_0 or Q8_1 blocks: the `d` of every block, then for Q8_1 the `s` of every block, for
/// Q8_0 the exact sum of every block's 32 quants (at most 32 · 128, so exact in f32).
///
/// # Panics
/// If `act` is not Q8_0 or Q8_1, or `out` is shorter than the table (caller bugs).
pub fn scale_rows(act: GgmlType, row: &[u8], out: &mut [f32]) {
    let f16_at = |b: &[u8], at: usize| half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32();
    match act {
        GgmlType::Q8_0 => {
            let n_blocks = row.len() / format(act).block_bytes;
            let (d, sums) = out[..2 * n_blocks].split_at_mut(n_blocks);
            let blocks = row.chunks_exact(format(act).block_bytes);
            for ((d, sum), b) in d.iter_mut().zip(sums.iter_mut()).zip(blocks) {
                *d = f16_at(b, 0);
                *sum = b[2..].iter().map(|&q| i32::from(q as i8)).sum::<i32>() as f32;
            }
        }
        GgmlType::Q8_1 => {
            let n_blocks = row.len() / format(act).block_bytes;
            let (d, s) = out[..2 * n_blocks].split_at_mut(n_blocks);
            let blocks = row.chunks_exact(format(act).block_bytes);
            for ((d, s), b) in d.iter_mut().zip(s.iter_mut()).zip(blocks) {
                *d = f16_at(b, 0);
                *s = f16_at(b, 2);
            }
        }
        other => panic!("{other} activations have no f32 scale table"),
    }
}

/// Lengths of the (`d`, `s`, `sums`) tables of one [`GemmFn`] tile of `n_blocks` blocks
/// of `act` (see [`tile_tables`]); 0 for a table the format does not use.
///
/// # Panics
/// If `act` is not Q8_0, Q8_1 or Q8_K (a caller bug).
pub fn tile_table_lens(act: GgmlType, n_blocks: usize) -> (usize, usize, usize) {
    let n = n_blocks * GEMM_TILE;
    match act {
        GgmlType::Q8_0 => (n, 0, n),
        GgmlType::Q8_1 => (n, n, 0),
        GgmlType::Q8_K => (n, 0, 8 * n),
        other => panic!("{other} activations have no GEMM tile tables"),
    }
}

/// Builds the block-major tables of one [`GemmFn`] tile ([`ActTile`]) from its
/// [`GEMM_TILE`] quantized activation rows of `n_blocks` Q8_0, Q8_1 or Q8_K blocks,
/// `stride` bytes apart in `rows`: `d[b * GEMM_TILE + t]` is block `b`'s `d` of row `t`;
/// for Q8_1, `s` gets the blocks' `s` the same way; for Q8_0, `sums` gets the exact sum of
/// the block's 32 quants; for Q8_K, `sums[(b * 8 + j) * GEMM_TILE + t]` gets the block
/// sums `2j` (low 16 bits) and `2j + 1` (high 16 bits) packed as two i16, ready for
/// `madd` with a pair of 16-bit weights (the sums are at most 16 · 128). The tables have the
/// lengths [`tile_table_lens`] gives; an unused one may be empty.
///
/// # Panics
/// If `act` is not Q8_0, Q8_1 or Q8_K, or a slice is too short (caller bugs).
pub fn tile_tables(
    act: GgmlType,
    rows: &[u8],
    stride: usize,
    n_blocks: usize,
    d: &mut [f32],
    s: &mut [f32],
    sums: &mut [i32],
) {
    let (bb, quants) = match act {
        GgmlType::Q8_0 => (34, 2),
        GgmlType::Q8_1 => (36, 4),
        GgmlType::Q8_K => (292, 4),
        other => panic!("{other} activations have no GEMM tile tables"),
    };
    if act == GgmlType::Q8_K {
        let pair_at =
            |b: &[u8], at: usize| i32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        for t in 0..GEMM_TILE {
            let row = &rows[t * stride..t * stride + n_blocks * bb];
            for (b, block) in row.chunks_exact(bb).enumerate() {
                d[b * GEMM_TILE + t] = f32::from_le_bytes([block[0], block[1], block[2], block[3]]);
                for j in 0..8 {
                    let at = 260 + 4 * j;
                    sums[(b * 8 + j) * GEMM_TILE + t] = pair_at(block, at);
                }
            }
        }
        return;
    }
    let f16_at = |b: &[u8], at: usize| half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32();
    for t in 0..GEMM_TILE {
        let row = &rows[t * stride..t * stride + n_blocks * bb];
        for (b, block) in row.chunks_exact(bb).enumerate() {
            d[b * GEMM_TILE + t] = f16_at(block, 0);
            if !s.is_empty() {
                s[b * GEMM_TILE + t] = f16_at(block, 2);
            }
            if !sums.is_empty() {
                sums[b * GEMM_TILE + t] = block[quants..quants + 32]
                    .iter()
                    .map(|&q| i32::from(q as i8))
                    .sum();
            }
        }
    }
}

/// The [`tile_tables`] of every full tile of a batch, tile `i`'s at `i * *_stride`.
#[derive(Clone, Copy, Default)]
struct TileTables<'a> {
    d: &'a [f32],
    s: &'a [f32],
    sums: &'a [i32],
    d_stride: usize,
    s_stride: usize,
    sums_stride: usize,
}

impl<'a> TileTables<'a> {
    /// The tables of consecutive tiles, each `lens` ([`tile_table_lens`]) long.
    fn new(
        d: &'a [f32],
        s: &'a [f32],
        sums: &'a [i32],
        lens: (usize, usize, usize),
    ) -> TileTables<'a> {
        TileTables {
            d,
            s,
            sums,
            d_stride: lens.0,
            s_stride: lens.1,
            sums_stride: lens.2,
        }
    }

    /// Whether the tables were built (the batch has a full tile and a kernel wants them).
    fn is_built(&self) -> bool {
        !self.d.is_empty()
    }
}

/// The jobs of up to [`MAX_FUSED`] matrices, numbered one matrix after the other.
#[derive(Default)]
struct JobList {
    n_mats: usize,
    splits: [Option<Split>; MAX_FUSED],
    /// `first[m]`: number of the first job of matrix `m`; `first[n_mats]`: the total.
    first: [usize; MAX_FUSED + 1],
}

impl JobList {
    fn push(&mut self, split: Split) {
        let m = self.n_mats;
        self.first[m + 1] = self.first[m] + split.n_jobs();
        self.splits[m] = Some(split);
        self.n_mats += 1;
    }

    fn total(&self) -> usize {
        self.first[self.n_mats]
    }

    /// (matrix, weight rows, tokens) of job `job`.
    fn job(&self, job: usize) -> (usize, Range<usize>, Range<usize>) {
        let m = (0..self.n_mats)
            .rfind(|&m| self.first[m] <= job)
            .expect("job number in range");
        let split = self.splits[m].expect("pushed split");
        let (rows, tokens) = split.job(job - self.first[m]);
        (m, rows, tokens)
    }
}

/// Whether a matmul over `w_bytes` of weights and `n_tokens` activation rows should stay on
/// the calling thread rather than wake a pool of `n_threads`.
fn runs_serially(n_threads: usize, w_bytes: usize, n_tokens: usize) -> bool {
    n_threads == 1 || w_bytes.saturating_mul(n_tokens) < SERIAL_WORK_BYTES
}

/// Geometry of one activation block.
#[derive(Clone, Copy)]
struct ActBlock {
    elems: usize,
    bytes: usize,
}

/// Quantizes every row of `x` (rows of `cols`) into `out` rows of `stride` bytes, on the
/// calling thread.
fn quantize_rows(
    quantize: QuantizeFn,
    x: &[f32],
    cols: usize,
    out: &mut [u8],
    stride: usize,
    row_bytes: usize,
) {
    for (q, xr) in out.chunks_mut(stride).zip(x.chunks(cols)) {
        quantize(xr, &mut q[..row_bytes]);
    }
}

/// [`quantize_rows`] on the current rayon pool. A batch with fewer rows than threads is
/// also split inside rows, at block boundaries (activation blocks are independent).
#[allow(clippy::too_many_arguments)]
fn quantize_rows_parallel(
    quantize: QuantizeFn,
    x: &[f32],
    cols: usize,
    out: &mut [u8],
    stride: usize,
    row_bytes: usize,
    block: ActBlock,
    n_threads: usize,
) {
    let n_rows = x.len() / cols;
    let n_blocks = cols / block.elems;
    let pieces_per_row = (2 * n_threads).div_ceil(n_rows).min(n_blocks).max(1);
    let piece_blocks = n_blocks.div_ceil(pieces_per_row);
    out.par_chunks_mut(stride)
        .zip(x.par_chunks(cols))
        .for_each(|(q, xr)| {
            if pieces_per_row == 1 {
                quantize(xr, &mut q[..row_bytes]);
            } else {
                q[..row_bytes]
                    .par_chunks_mut(piece_blocks * block.bytes)
                    .zip(xr.par_chunks(piece_blocks * block.elems))
                    .for_each(|(qp, xp)| quantize(xp, qp));
            }
        });
}

/// Everything a job needs to compute its part of `y`.
#[derive(Clone, Copy)]
struct Work<'a> {
    dot: DotFn,
    /// The kernel that reads f32 activation scales from `scales`, if the set has one.
    scaled: Option<ScaledDotFn>,
    /// The GEMM tile kernel for full tiles, if the set has one.
    gemm: Option<GemmFn>,
    /// The several-tile kernel, if the set has one for the type (used for runs of at least
    /// two full tiles).
    gemm_tiles: Option<GemmTilesFn>,
    /// The dot and several-tile kernels for interleaved weights: set exactly when `w` is in
    /// the interleaved layout, and then used instead of all the kernels above.
    interleaved: Option<(InterleavedDotFn, GemmTilesFn)>,
    /// Tables of the full tiles for `gemm` (empty unless built).
    tiles: TileTables<'a>,
    /// Activation scale table (see [`scale_rows`]), rows `scale_stride` apart; empty
    /// unless `scaled` is set.
    scales: &'a [f32],
    scale_stride: usize,
    /// All weight rows (row-major, or interleaved groups when `interleaved` is set).
    w: &'a [u8],
    w_row_bytes: usize,
    rows: usize,
    /// All activation rows, each `act_stride` bytes apart.
    acts: &'a [u8],
    act_stride: usize,
    /// Weight rows walked per activation tile.
    row_block: usize,
}

impl<'a> Work<'a> {
    /// This work reading the activation rows `acts`, `act_stride` bytes apart.
    fn with_acts<'b>(
        &self,
        acts: &'b [u8],
        act_stride: usize,
        scales: &'b [f32],
        scale_stride: usize,
        tiles: TileTables<'b>,
    ) -> Work<'b>
    where
        'a: 'b,
    {
        Work {
            dot: self.dot,
            scaled: self.scaled,
            gemm: self.gemm,
            gemm_tiles: self.gemm_tiles,
            interleaved: self.interleaved,
            tiles,
            scales,
            scale_stride,
            w: self.w,
            w_row_bytes: self.w_row_bytes,
            rows: self.rows,
            acts,
            act_stride,
            row_block: self.row_block,
        }
    }

    /// The bytes of weight rows `r0 .. r0 + m`: exactly theirs in the row-major layout; the
    /// whole groups that hold them when interleaved (`r0` is then a multiple of 16).
    fn weight_rows(&self, r0: usize, m: usize) -> &[u8] {
        if self.interleaved.is_some() {
            debug_assert!(r0.is_multiple_of(INTERLEAVE_ROWS));
            let end = (r0 + m).next_multiple_of(INTERLEAVE_ROWS);
            &self.w[r0 * self.w_row_bytes..end * self.w_row_bytes]
        } else {
            &self.w[r0 * self.w_row_bytes..(r0 + m) * self.w_row_bytes]
        }
    }

    /// The weight rows of `block` in runs of at most `run` (the rows one multi-row kernel
    /// call takes; a multiple of 16 for interleaved weights): (first row, row count, their
    /// bytes as [`Work::weight_rows`] gives them).
    fn row_runs<'b>(
        &'b self,
        block: &Range<usize>,
        run: usize,
    ) -> impl Iterator<Item = (usize, usize, &'b [u8])> + 'b {
        let end = block.end;
        (block.start..end).step_by(run).map(move |r0| {
            let m = (end - r0).min(run);
            (r0, m, self.weight_rows(r0, m))
        })
    }

    /// Runs `kernel(weight rows, m, results)` over the weight rows of `block` ([`row_runs`](
    /// Work::row_runs)); each call leaves `m * n_tokens` results `[row][token]` in
    /// `rows_out`, which go to the token segments of the output.
    #[inline]
    fn by_row_groups(
        &self,
        block: &Range<usize>,
        n_tokens: usize,
        rows_out: &mut [f32],
        segments: &mut [&mut [f32]; MAX_ACT_ROWS],
        mut kernel: impl FnMut(&[u8], usize, &mut [f32]),
    ) {
        for (r0, m, w_rows) in self.row_runs(block, SCALED_ROWS) {
            let k0 = r0 - block.start;
            let res = &mut rows_out[..m * n_tokens];
            kernel(w_rows, m, res);
            for (k, row) in res.chunks_exact(n_tokens).enumerate() {
                for (segment, &v) in segments.iter_mut().zip(row) {
                    segment[k0 + k] = v;
                }
            }
        }
    }

    /// Full tile `i` of the activation rows (rows `8i .. 8i + 8`) with its tables.
    fn tile(&self, i: usize) -> ActTile<'_> {
        let tt = &self.tiles;
        let rows = i * GEMM_TILE * self.act_stride..(i + 1) * GEMM_TILE * self.act_stride;
        ActTile {
            quants: &self.acts[rows],
            row_stride: self.act_stride,
            d: &tt.d[i * tt.d_stride..(i + 1) * tt.d_stride],
            s: &tt.s[i * tt.s_stride..(i + 1) * tt.s_stride],
            sums: &tt.sums[i * tt.sums_stride..(i + 1) * tt.sums_stride],
        }
    }

    /// Computes `y[t][r]` for the weight rows of `block` and the tokens from `tokens.start`
    /// on, in runs of `min_tiles` ..= [`MAX_GEMM_TILES`] full tiles per `gemm_tiles` call,
    /// while at least `min_tiles` full tiles remain; returns the first token left for the
    /// other kernels. The caller guarantees that no other job writes this rectangle of
    /// `out`.
    fn tile_runs(
        &self,
        gemm_tiles: GemmTilesFn,
        min_tiles: usize,
        out: SharedOut<'_>,
        block: &Range<usize>,
        tokens: Range<usize>,
    ) -> usize {
        let mut t0 = tokens.start;
        while t0.is_multiple_of(GEMM_TILE) && tokens.end - t0 >= min_tiles * GEMM_TILE {
            let n = ((tokens.end - t0) / GEMM_TILE).min(MAX_GEMM_TILES);
            let first = t0 / GEMM_TILE;
            let tiles: [ActTile<'_>; MAX_GEMM_TILES] =
                std::array::from_fn(|k| self.tile(first + k.min(n - 1)));
            let per_row = n * GEMM_TILE;
            for (r0, m, w_rows) in self.row_runs(block, SCALED_ROWS) {
                let (corner, stride) = out.rectangle(t0..t0 + per_row, r0..r0 + m);
                // SAFETY: `rectangle` checked that tokens t0 .. t0 + per_row and rows
                // r0 .. r0 + m lie inside `y`, which the kernel writes `stride` apart; the
                // jobs of one matmul cover disjoint (row, token) rectangles (see `Split`),
                // so nothing else touches these elements while this job runs.
                unsafe { gemm_tiles(w_rows, m, &tiles[..n], corner, stride) };
            }
            t0 += per_row;
        }
        t0
    }

    /// Computes `y[t][r]` for `r` in `rows` and `t` in `tokens`. The caller guarantees that
    /// no other job writes this rectangle of `out`.
    fn run(&self, out: SharedOut<'_>, rows: Range<usize>, tokens: Range<usize>) {
        debug_assert!(rows.end <= self.rows);
        if let Some((dot, gemm_tiles)) = self.interleaved {
            self.run_interleaved(dot, gemm_tiles, out, rows, tokens);
            return;
        }
        let mut tile_out = [0f32; MAX_ACT_ROWS];
        let mut rows_out = [0f32; SCALED_ROWS * MAX_ACT_ROWS];
        let mut block_start = rows.start;
        while block_start < rows.end {
            let block = block_start..(block_start + self.row_block).min(rows.end);
            let mut t0 = tokens.start;
            if let Some(gemm_tiles) = self.gemm_tiles.filter(|_| self.tiles.is_built()) {
                t0 = self.tile_runs(gemm_tiles, 2, out, &block, tokens.clone());
            }
            while t0 < tokens.end {
                let nt = (tokens.end - t0).min(MAX_ACT_ROWS);
                let acts = &self.acts[t0 * self.act_stride..(t0 + nt) * self.act_stride];
                let mut segments: [&mut [f32]; MAX_ACT_ROWS] = Default::default();
                for (i, segment) in segments[..nt].iter_mut().enumerate() {
                    // SAFETY: the jobs of one matmul cover disjoint (row, token) rectangles
                    // (see `Split`), so only this job touches these elements while it runs.
                    *segment = unsafe { out.segment(t0 + i, block.clone()) };
                }
                match (self.gemm, self.scaled) {
                    (Some(gemm), _)
                        if nt == GEMM_TILE
                            && t0.is_multiple_of(GEMM_TILE)
                            && self.tiles.is_built() =>
                    {
                        let tile = self.tile(t0 / GEMM_TILE);
                        self.by_row_groups(
                            &block,
                            GEMM_TILE,
                            &mut rows_out,
                            &mut segments,
                            |w_rows, m, res| gemm(w_rows, m, &tile, res),
                        );
                    }
                    (_, Some(scaled)) if self.scale_stride > 0 => {
                        // Up to SCALED_ROWS weight rows per call, results [row][token].
                        let scales =
                            &self.scales[t0 * self.scale_stride..(t0 + nt) * self.scale_stride];
                        let (act_stride, scale_stride) = (self.act_stride, self.scale_stride);
                        self.by_row_groups(
                            &block,
                            nt,
                            &mut rows_out,
                            &mut segments,
                            |w_rows, m, res| {
                                scaled(w_rows, m, acts, act_stride, scales, scale_stride, res)
                            },
                        );
                    }
                    _ => {
                        let tile_out = &mut tile_out[..nt];
                        for (k, r) in block.clone().enumerate() {
                            let w_row = &self.w[r * self.w_row_bytes..(r + 1) * self.w_row_bytes];
                            (self.dot)(w_row, acts, self.act_stride, tile_out);
                            for (segment, &v) in segments.iter_mut().zip(tile_out.iter()) {
                                segment[k] = v;
                            }
                        }
                    }
                }
                t0 += nt;
            }
            block_start = block.end;
        }
    }

    /// [`Work::run`] for interleaved weights: full tiles through `gemm_tiles` (runs of 1 ..=
    /// [`MAX_GEMM_TILES`]), the other activation rows through `dot`, up to
    /// [`MAX_ACT_ROWS`] at a time. `rows.start` is a multiple of 16 (jobs and row blocks
    /// are).
    fn run_interleaved(
        &self,
        dot: InterleavedDotFn,
        gemm_tiles: GemmTilesFn,
        out: SharedOut<'_>,
        rows: Range<usize>,
        tokens: Range<usize>,
    ) {
        debug_assert!(rows.start.is_multiple_of(INTERLEAVE_ROWS));
        let mut block_start = rows.start;
        while block_start < rows.end {
            let block = block_start..(block_start + self.row_block).min(rows.end);
            let mut t0 = tokens.start;
            if self.tiles.is_built() {
                t0 = self.tile_runs(gemm_tiles, 1, out, &block, tokens.clone());
            }
            while t0 < tokens.end {
                let nt = (tokens.end - t0).min(MAX_ACT_ROWS);
                let acts = &self.acts[t0 * self.act_stride..(t0 + nt) * self.act_stride];
                let scales = &self.scales[t0 * self.scale_stride..(t0 + nt) * self.scale_stride];
                let call = |w: &[u8], m: usize, res: &mut [f32]| {
                    dot(w, m, acts, self.act_stride, scales, self.scale_stride, res)
                };
                if nt == 1 {
                    // SAFETY: the jobs of one matmul cover disjoint (row, token) rectangles
                    // (see `Split`), so only this job touches these elements while it runs.
                    let segment = unsafe { out.segment(t0, block.clone()) };
                    call(
                        self.weight_rows(block.start, block.len()),
                        block.len(),
                        segment,
                    );
                } else {
                    // Zeroed only here (batch remainders), not in every decode job.
                    let mut results = [0f32; INTERLEAVED_ROWS * MAX_ACT_ROWS];
                    for (r0, m, w) in self.row_runs(&block, INTERLEAVED_ROWS) {
                        let res = &mut results[..m * nt];
                        call(w, m, res);
                        for (t, token) in res.chunks_exact(m).enumerate() {
                            // SAFETY: as above, this job's rectangle.
                            let segment = unsafe { out.segment(t0 + t, r0..r0 + m) };
                            segment.copy_from_slice(token);
                        }
                    }
                }
                t0 += nt;
            }
            block_start = block.end;
        }
    }
}

/// The output `y` (`n_tokens` rows of `rows` values), shared by jobs that each write their
/// own disjoint (weight rows x tokens) rectangle of it.
#[derive(Clone, Copy)]
struct SharedOut<'a> {
    ptr: *mut f32,
    rows: usize,
    n_tokens: usize,
    _y: PhantomData<&'a mut [f32]>,
}

// SAFETY: `SharedOut` is a `&mut [f32]` split by convention: every job writes only the
// elements of its own rectangle (checked by `Split`'s tests), so sending copies of it to
// other threads creates no data race. f32 is Send.
unsafe impl Send for SharedOut<'_> {}
// SAFETY: as for `Send`; shared references only hand out disjoint segments.
unsafe impl Sync for SharedOut<'_> {}

impl<'a> SharedOut<'a> {
    fn new(y: &'a mut [f32], rows: usize, n_tokens: usize) -> SharedOut<'a> {
        assert_eq!(y.len(), rows * n_tokens);
        SharedOut {
            ptr: y.as_mut_ptr(),
            rows,
            n_tokens,
            _y: PhantomData,
        }
    }

    /// The address of output (`tokens.start`, `rows.start`) and the distance between
    /// tokens, for a kernel that writes the rectangle `tokens` x `rows` itself.
    ///
    /// # Panics
    /// If the rectangle is not inside `y`.
    fn rectangle(&self, tokens: Range<usize>, rows: Range<usize>) -> (*mut f32, usize) {
        assert!(
            tokens.start < tokens.end
                && tokens.end <= self.n_tokens
                && rows.start < rows.end
                && rows.end <= self.rows,
            "output rectangle outside the matmul's output"
        );
        (
            self.ptr.wrapping_add(tokens.start * self.rows + rows.start),
            self.rows,
        )
    }

    /// The outputs of weight rows `rows` for activation row `t`.
    ///
    /// # Safety
    /// While the returned slice lives, no other reference to these elements may be used
    /// (each job asks only for segments inside its own rectangle).
    unsafe fn segment(&self, t: usize, rows: Range<usize>) -> &'a mut [f32] {
        assert!(t < self.n_tokens && rows.start <= rows.end && rows.end <= self.rows);
        // SAFETY: the range is inside `y` (asserted above) and `y` is borrowed mutably for
        // 'a; exclusivity of the elements is the caller's contract.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.ptr.add(t * self.rows + rows.start),
                rows.end - rows.start,
            )
        }
    }
}

/// How the output is cut into jobs: weight-row chunks times (rarely) token chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Split {
    rows: usize,
    n_tokens: usize,
    /// Weight rows per job (the last job may have fewer).
    chunk_rows: usize,
    /// Activation rows per job (the last job may have fewer).
    chunk_tokens: usize,
}

impl Split {
    fn new(rows: usize, n_tokens: usize, n_threads: usize) -> Split {
        let target_jobs = JOBS_PER_THREAD * n_threads.max(1);
        let chunk_rows = rows
            .div_ceil(target_jobs)
            .next_multiple_of(JOB_ROW_ALIGN)
            .max(MIN_JOB_ROWS)
            .min(rows)
            .max(1);
        let row_jobs = rows.div_ceil(chunk_rows);
        let chunk_tokens = if row_jobs >= target_jobs || n_tokens <= MAX_ACT_ROWS {
            n_tokens
        } else {
            let token_jobs = target_jobs.div_ceil(row_jobs);
            n_tokens
                .div_ceil(token_jobs)
                .next_multiple_of(MAX_ACT_ROWS)
                .min(n_tokens)
        };
        Split {
            rows,
            n_tokens,
            chunk_rows,
            chunk_tokens: chunk_tokens.max(1),
        }
    }

    fn row_jobs(&self) -> usize {
        self.rows.div_ceil(self.chunk_rows)
    }

    fn n_jobs(&self) -> usize {
        self.row_jobs() * self.n_tokens.div_ceil(self.chunk_tokens)
    }

    /// The (weight rows, tokens) rectangle of job `job`.
    fn job(&self, job: usize) -> (Range<usize>, Range<usize>) {
        let (row_job, token_job) = (job % self.row_jobs(), job / self.row_jobs());
        let r0 = row_job * self.chunk_rows;
        let t0 = token_job * self.chunk_tokens;
        (
            r0..(r0 + self.chunk_rows).min(self.rows),
            t0..(t0 + self.chunk_tokens).min(self.n_tokens),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n_threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n_threads)
            .build()
            .unwrap()
    }

    /// Deterministic pseudo-random values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn f32_matmul(rows: usize, cols: usize, n_tokens: usize, n_threads: usize) -> Vec<f32> {
        let w = values(rows * cols, 1);
        let x = values(n_tokens * cols, 2);
        let m = MatRef::new(GgmlType::F32, bytemuck::cast_slice(&w), rows, cols);
        let mut y = vec![f32::NAN; rows * n_tokens];
        matmul_with(
            dispatch::scalar(),
            &pool(n_threads),
            &m,
            &x,
            &mut y,
            &mut Default::default(),
        );
        y
    }

    #[test]
    fn f32_matmul_matches_a_naive_triple_loop() {
        let (rows, cols, n_tokens) = (37, 24, 11);
        let w = values(rows * cols, 1);
        let x = values(n_tokens * cols, 2);
        let y = f32_matmul(rows, cols, n_tokens, 2);
        for t in 0..n_tokens {
            for r in 0..rows {
                let want: f32 = (0..cols).map(|c| w[r * cols + c] * x[t * cols + c]).sum();
                let got = y[t * rows + r];
                assert!(
                    (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                    "t {t} r {r}"
                );
            }
        }
    }

    #[test]
    fn result_does_not_depend_on_the_thread_count() {
        // Big enough to take the parallel path with 2 and 3 threads.
        let one = f32_matmul(300, 64, 21, 1);
        assert_eq!(one, f32_matmul(300, 64, 21, 2));
        assert_eq!(one, f32_matmul(300, 64, 21, 3));
    }

    #[test]
    fn an_empty_batch_is_accepted_and_writes_nothing() {
        let w = values(8 * 4, 1);
        let m = MatRef::new(GgmlType::F32, bytemuck::cast_slice(&w), 8, 4);
        let mut y: Vec<f32> = vec![];
        matmul_with(
            dispatch::scalar(),
            &pool(2),
            &m,
            &[],
            &mut y,
            &mut Default::default(),
        );
    }

    #[test]
    #[should_panic(expected = "output length does not match")]
    fn wrong_output_length_is_a_caller_bug() {
        let w = values(8 * 4, 1);
        let m = MatRef::new(GgmlType::F32, bytemuck::cast_slice(&w), 8, 4);
        let mut y = vec![0.0; 7];
        matmul_with(
            dispatch::scalar(),
            &pool(1),
            &m,
            &[0.0; 4],
            &mut y,
            &mut Default::default(),
        );
    }

    /// Every (row, token) pair is covered by exactly one job.
    fn assert_partition(split: &Split) {
        let mut seen = vec![0u8; split.rows * split.n_tokens];
        for j in 0..split.n_jobs() {
            let (rows, tokens) = split.job(j);
            assert!(
                !rows.is_empty() && !tokens.is_empty(),
                "{split:?} job {j} is empty"
            );
            for t in tokens {
                for r in rows.clone() {
                    seen[t * split.rows + r] += 1;
                }
            }
        }
        assert!(seen.iter().all(|&n| n == 1), "{split:?} is not a partition");
    }

    #[test]
    fn jobs_partition_the_output_for_many_shapes() {
        for rows in [1, 7, 16, 17, 128, 896, 1000, 4096] {
            for n_tokens in [1, 2, 8, 9, 64, 100] {
                for n_threads in [1, 2, 3, 8] {
                    assert_partition(&Split::new(rows, n_tokens, n_threads));
                }
            }
        }
    }

    #[test]
    fn job_rows_are_whole_interleaved_groups() {
        for rows in [128, 896, 4096, 4864, 14336] {
            let split = Split::new(rows, 1, 2);
            assert_eq!(split.chunk_rows % JOB_ROW_ALIGN, 0, "{split:?}");
            assert!(split.chunk_rows >= MIN_JOB_ROWS, "{split:?}");
        }
    }

    #[test]
    fn gemv_with_few_rows_still_splits_across_threads() {
        let split = Split::new(128, 1, 2);
        assert_eq!(split.n_jobs(), 8);
        let split = Split::new(4096, 1, 2);
        assert_eq!(split.n_jobs(), 8);
    }

    #[test]
    fn a_tall_batch_on_a_short_matrix_is_also_split_by_tokens() {
        let split = Split::new(32, 512, 2);
        assert!(split.n_jobs() >= 2 * JOBS_PER_THREAD, "{split:?}");
        assert_eq!(split.chunk_tokens % MAX_ACT_ROWS, 0, "{split:?}");
    }

    #[test]
    fn tiny_decode_matrices_stay_on_the_calling_thread() {
        // Qwen2.5-0.5B k/v projection, Q8_0: 128 rows of 896 columns.
        assert!(runs_serially(2, 128 * 28 * 34, 1));
        // The same matrix in a 64-token prefill, and a 4096x4096 Q4_0 decode, use the pool.
        assert!(!runs_serially(2, 128 * 28 * 34, 64));
        assert!(!runs_serially(2, 4096 * 128 * 18, 1));
        assert!(runs_serially(1, 4096 * 128 * 18, 512));
    }

    #[test]
    fn tile_tables_are_block_major_with_exact_quant_sums() {
        // Two Q8_0 blocks per row, rows 80 bytes apart; row t's block b has d = t + b / 2
        // and every quant equal to t - b (sum 32 · (t - b)).
        let (stride, n_blocks) = (80, 2);
        let mut rows = vec![0u8; GEMM_TILE * stride];
        for t in 0..GEMM_TILE {
            for b in 0..n_blocks {
                let block = &mut rows[t * stride + 34 * b..t * stride + 34 * (b + 1)];
                let d = half::f16::from_f32(t as f32 + b as f32 / 2.0);
                block[..2].copy_from_slice(&d.to_le_bytes());
                block[2..].fill((t as i8 - b as i8) as u8);
            }
        }
        let (mut d, mut sums) = (vec![0f32; 16], vec![0i32; 16]);
        tile_tables(
            GgmlType::Q8_0,
            &rows,
            stride,
            n_blocks,
            &mut d,
            &mut [],
            &mut sums,
        );
        for t in 0..GEMM_TILE {
            for b in 0..n_blocks {
                assert_eq!(d[b * GEMM_TILE + t], t as f32 + b as f32 / 2.0);
                assert_eq!(sums[b * GEMM_TILE + t], 32 * (t as i32 - b as i32));
            }
        }
    }

    #[test]
    fn q8_k_tile_sums_pack_two_block_sums_per_sub_block() {
        // One Q8_K block per row: d = t, block sum k = 100 · t - k (as i16).
        let bb = 292;
        let mut rows = vec![0u8; GEMM_TILE * bb];
        for t in 0..GEMM_TILE {
            let block = &mut rows[t * bb..(t + 1) * bb];
            block[..4].copy_from_slice(&(t as f32).to_le_bytes());
            for k in 0..16 {
                let v = 100 * t as i16 - k as i16;
                block[260 + 2 * k..262 + 2 * k].copy_from_slice(&v.to_le_bytes());
            }
        }
        assert_eq!(tile_table_lens(GgmlType::Q8_K, 1), (8, 0, 64));
        let (mut d, mut sums) = (vec![0f32; 8], vec![0i32; 64]);
        tile_tables(GgmlType::Q8_K, &rows, bb, 1, &mut d, &mut [], &mut sums);
        for t in 0..GEMM_TILE {
            assert_eq!(d[t], t as f32);
            for j in 0..8 {
                let packed = sums[j * GEMM_TILE + t];
                assert_eq!(packed as i16, 100 * t as i16 - 2 * j as i16, "low half");
                assert_eq!((packed >> 16) as i16, 100 * t as i16 - 2 * j as i16 - 1);
            }
        }
    }

    #[test]
    fn scratch_rows_are_cache_line_aligned_and_reused() {
        let mut scratch = MatmulScratch::default();
        let p = scratch.quantized_bytes(1000).as_ptr();
        assert_eq!(p as usize % ACT_ALIGN, 0);
        let q = scratch.quantized_bytes(500).as_ptr();
        assert_eq!(p, q, "a smaller request must reuse the buffer");
    }
}
