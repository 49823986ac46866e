//! Shared by the kernels crate's integration tests: type lists, random valid weights,
//! quantized activation rows and GEMM tiles built from them.

// Each test crate uses a different subset.
#![allow(dead_code)]

use std::sync::OnceLock;

use half::f16;
use openweight_kernels::dispatch::{ActTile, KernelSet, GEMM_TILE};
use openweight_kernels::matmul::{tile_table_lens, tile_tables};
use openweight_kernels::{format, GgmlType};

/// Weight types with GEMM tile kernels in some kernel set (Q6_K: AVX-512 VNNI only; the
/// tests skip, loudly, the types the running set lacks).
pub const TILE_TYPES: [GgmlType; 8] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// `n_blocks` random weight blocks of `ty`: random bytes, with every f16 field (the first
/// two bytes, or four for types with a minimum: Q4_1, Q5_1, Q4_K, Q5_K; Q6_K's `d` at byte
/// 208) a finite value, subnormals and extremes included.
pub fn weights(ty: GgmlType, n_blocks: usize, seed: u64) -> Vec<u8> {
    let bb = format(ty).block_bytes;
    let f16_fields: &[usize] = match ty {
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        GgmlType::Q6_K => &[208],
        _ => &[0],
    };
    let mut s = seed | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let mut w: Vec<u8> = (0..n_blocks * bb).map(|_| next() as u8).collect();
    for block in w.chunks_mut(bb) {
        for &f in f16_fields {
            let bits = next() as u16;
            let exponent = (bits >> 10) & 0x1F;
            let h = f16::from_bits((bits & 0x83FF) | ((exponent % 31) << 10));
            block[f..f + 2].copy_from_slice(&h.to_le_bytes());
        }
    }
    w
}

/// `n` random values in `-amplitude..amplitude`.
pub fn floats(n: usize, amplitude: f32, seed: u64) -> Vec<f32> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
            ((s >> 40) as f32 / (1u64 << 23) as f32 - 1.0) * amplitude
        })
        .collect()
}

/// `n_rows` activation rows of `cols` random values in `-amplitude..amplitude` ([`floats`]),
/// quantized with `set`'s quantizer for `act` into rows `stride` bytes apart (as the matmul
/// lays them out; the bytes between rows stay zero).
pub fn quantized_rows(
    set: &KernelSet,
    act: GgmlType,
    n_rows: usize,
    cols: usize,
    stride: usize,
    amplitude: f32,
    seed: u64,
) -> Vec<u8> {
    let row_bytes = format(act).row_bytes(cols);
    let mut acts = vec![0u8; n_rows * stride];
    let quantize = set.quantize(act).expect("quantizer");
    let x = floats(n_rows * cols, amplitude, seed);
    for (r, xr) in x.chunks_exact(cols).enumerate() {
        quantize(xr, &mut acts[r * stride..r * stride + row_bytes]);
    }
    acts
}

/// The `tile_tables` (`d`, `s`, `sums`) of each of the `n_tiles` tiles of [`GEMM_TILE`]
/// activation rows of `act` in `acts` (`stride` bytes apart, `n_blocks` blocks each).
pub type Tables = Vec<(Vec<f32>, Vec<f32>, Vec<i32>)>;

/// Builds [`Tables`] for `n_tiles` tiles of `acts`.
pub fn tables_of(
    act: GgmlType,
    acts: &[u8],
    stride: usize,
    n_blocks: usize,
    n_tiles: usize,
) -> Tables {
    let (d_len, s_len, sums_len) = tile_table_lens(act, n_blocks);
    (0..n_tiles)
        .map(|i| {
            let (mut d, mut s, mut sums) =
                (vec![0f32; d_len], vec![0f32; s_len], vec![0i32; sums_len]);
            let tile_acts = &acts[i * GEMM_TILE * stride..(i + 1) * GEMM_TILE * stride];
            tile_tables(act, tile_acts, stride, n_blocks, &mut d, &mut s, &mut sums);
            (d, s, sums)
        })
        .collect()
}

/// The tiles of `acts` (`stride` bytes apart) with their `tables`.
pub fn tiles_of<'a>(tables: &'a Tables, acts: &'a [u8], stride: usize) -> Vec<ActTile<'a>> {
    tables
        .iter()
        .enumerate()
        .map(|(i, (d, s, sums))| ActTile {
            quants: &acts[i * GEMM_TILE * stride..(i + 1) * GEMM_TILE * stride],
            row_stride: stride,
            d,
            s,
            sums,
        })
        .collect()
}

/// Pools of 1, 2 and 3 threads, built once.
pub fn pool(n_threads: usize) -> &'static rayon::ThreadPool {
    static POOLS: OnceLock<Vec<rayon::ThreadPool>> = OnceLock::new();
    let pools = POOLS.get_or_init(|| {
        (1..=3)
            .map(|n| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .build()
                    .expect("thread pool")
            })
            .collect()
    });
    &pools[n_threads - 1]
}
