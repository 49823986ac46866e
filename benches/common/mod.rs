//! Helpers shared by the benches: thread pools, random valid weights, timing summaries.
//!
//! Weights are random valid blocks: random bytes with every f16 scale field replaced by a
//! finite value (magnitude below 1), made once per bench. Their values do not change the
//! speed of the kernels, only their validity matters.

#![allow(dead_code)] // each bench uses a different subset

use std::cell::RefCell;
use std::mem::{offset_of, size_of};
use std::time::{Duration, Instant};

use half::{bf16, f16};
use openweight_kernels::blocks::*;
use openweight_kernels::interleave::{interleave, interleaved_len};
use openweight_kernels::matmul::WeightLayout;
use openweight_kernels::{dispatch, format, GgmlType};

/// Every type that can be a weight, in the order the benches report them.
pub const WEIGHT_TYPES: [GgmlType; 15] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
];

/// A rayon pool of `n_threads` threads.
pub fn pool(n_threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n_threads)
        .build()
        .expect("thread pool")
}

/// Whether the best kernel set can multiply `ty` weights; prints loudly when it cannot.
pub fn has_kernels(ty: GgmlType) -> bool {
    let kernels = dispatch::best();
    let ok = kernels.dot(ty).is_some() && kernels.quantize(format(ty).vec_dot_type).is_some();
    if !ok {
        eprintln!(
            "SKIPPED {ty}: the {} kernel set has no dot kernel for it",
            kernels.name()
        );
    }
    ok
}

/// splitmix64: a small deterministic generator.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// `n` random activations in [-1, 1).
pub fn random_activations(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng(seed);
    (0..n).map(|_| rng.unit()).collect()
}

/// A byte buffer aligned to 64 bytes (weights in a GGUF mapping are aligned too).
pub struct AlignedBytes {
    storage: Vec<[u64; 8]>,
    len: usize,
}

impl AlignedBytes {
    /// `len` zero bytes.
    pub fn zeroed(len: usize) -> AlignedBytes {
        AlignedBytes {
            storage: vec![[0u64; 8]; len.div_ceil(64)],
            len,
        }
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.storage)[..self.len]
    }

    /// The bytes, mutably.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut(&mut self.storage)[..self.len]
    }
}

/// Weights as the runtime keeps them on this CPU: rearranged into the interleaved layout
/// when the best kernels read `ty` that way (what loading a model does, unless
/// `OPENWEIGHT_INTERLEAVE=0`), else as they are. Returns the bytes, their layout and a
/// label for benchmark names ("" or " interleaved").
pub fn runtime_layout(
    ty: GgmlType,
    rows: usize,
    cols: usize,
    w: AlignedBytes,
) -> (AlignedBytes, WeightLayout, &'static str) {
    if !openweight::model::interleaved::interleaves(ty) {
        return (w, WeightLayout::RowMajor, "");
    }
    let mut out = AlignedBytes::zeroed(interleaved_len(ty, rows, cols));
    interleave(ty, w.bytes(), rows, cols, out.bytes_mut());
    (out, WeightLayout::Interleaved, " interleaved")
}

/// Byte offsets of the f16 scale fields of one block of `ty`, and the block size.
fn scale_fields(ty: GgmlType) -> (usize, Vec<usize>) {
    match ty {
        GgmlType::Q4_0 => (size_of::<BlockQ4_0>(), vec![offset_of!(BlockQ4_0, d)]),
        GgmlType::Q4_1 => (
            size_of::<BlockQ4_1>(),
            vec![offset_of!(BlockQ4_1, d), offset_of!(BlockQ4_1, m)],
        ),
        GgmlType::Q5_0 => (size_of::<BlockQ5_0>(), vec![offset_of!(BlockQ5_0, d)]),
        GgmlType::Q5_1 => (
            size_of::<BlockQ5_1>(),
            vec![offset_of!(BlockQ5_1, d), offset_of!(BlockQ5_1, m)],
        ),
        GgmlType::Q8_0 => (size_of::<BlockQ8_0>(), vec![offset_of!(BlockQ8_0, d)]),
        GgmlType::Q2_K => (
            size_of::<BlockQ2K>(),
            vec![offset_of!(BlockQ2K, d), offset_of!(BlockQ2K, dmin)],
        ),
        GgmlType::Q3_K => (size_of::<BlockQ3K>(), vec![offset_of!(BlockQ3K, d)]),
        GgmlType::Q4_K => (
            size_of::<BlockQ4K>(),
            vec![offset_of!(BlockQ4K, d), offset_of!(BlockQ4K, dmin)],
        ),
        GgmlType::Q5_K => (
            size_of::<BlockQ5K>(),
            vec![offset_of!(BlockQ5K, d), offset_of!(BlockQ5K, dmin)],
        ),
        GgmlType::Q6_K => (size_of::<BlockQ6K>(), vec![offset_of!(BlockQ6K, d)]),
        GgmlType::IQ4_NL => (size_of::<BlockIQ4NL>(), vec![offset_of!(BlockIQ4NL, d)]),
        GgmlType::IQ4_XS => (size_of::<BlockIQ4XS>(), vec![offset_of!(BlockIQ4XS, d)]),
        other => panic!("{other} has no quantized weight blocks"),
    }
}

/// `n_elems` random valid weights of type `ty` (a multiple of its block size).
pub fn random_weights(ty: GgmlType, n_elems: usize, seed: u64) -> AlignedBytes {
    let f = format(ty);
    let mut out = AlignedBytes::zeroed(f.row_bytes(n_elems));
    let mut rng = Rng(seed);
    let bytes = out.bytes_mut();
    match ty {
        GgmlType::F32 => {
            for v in bytes.chunks_mut(4) {
                v.copy_from_slice(&rng.unit().to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for v in bytes.chunks_mut(2) {
                v.copy_from_slice(&f16::from_f32(rng.unit()).to_le_bytes());
            }
        }
        GgmlType::BF16 => {
            for v in bytes.chunks_mut(2) {
                v.copy_from_slice(&bf16::from_f32(rng.unit()).to_le_bytes());
            }
        }
        _ => {
            let (block_bytes, scales) = scale_fields(ty);
            assert_eq!(
                block_bytes, f.block_bytes,
                "{ty}: block struct and format disagree"
            );
            for chunk in bytes.chunks_mut(8) {
                let r = rng.next_u64().to_le_bytes();
                chunk.copy_from_slice(&r[..chunk.len()]);
            }
            for block in bytes.chunks_mut(block_bytes) {
                for &at in &scales {
                    let d = f16::from_f32(0.001 + 0.01 * rng.unit().abs());
                    block[at..at + 2].copy_from_slice(&d.to_le_bytes());
                }
            }
        }
    }
    out
}

/// Total time and iterations of one benchmark, for the summary printed at the end.
pub struct Timing {
    /// Benchmark name.
    pub name: String,
    /// Work units (bytes or flops) per iteration.
    pub units_per_iter: f64,
    /// Total measured time.
    pub total: Duration,
    /// Total iterations.
    pub iters: u64,
}

thread_local! {
    static TIMINGS: RefCell<Vec<Timing>> = const { RefCell::new(Vec::new()) };
}

/// Times `iters` calls of `f` (for `Bencher::iter_custom`) and records them under `name`.
pub fn timed(name: &str, units_per_iter: f64, iters: u64, mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    let elapsed = start.elapsed();
    TIMINGS.with(|t| {
        let mut t = t.borrow_mut();
        match t.iter_mut().find(|t| t.name == name) {
            Some(e) => {
                e.total += elapsed;
                e.iters += iters;
            }
            None => t.push(Timing {
                name: name.to_string(),
                units_per_iter,
                total: elapsed,
                iters,
            }),
        }
    });
    elapsed
}

/// Prints one line per recorded benchmark: `name: value unit` where value is units per
/// second divided by `scale` (1e9 for GB/s or GFLOP/s), over all timed iterations
/// (warm-up included).
pub fn print_summary(title: &str, unit: &str, scale: f64) {
    TIMINGS.with(|t| {
        let t = t.borrow();
        if t.is_empty() {
            return;
        }
        println!(
            "\n== {title} (all timed iterations, warm-up included; noisy if the machine is busy)"
        );
        for e in t.iter() {
            let per_second = e.units_per_iter * e.iters as f64 / e.total.as_secs_f64();
            let per_iter = Duration::from_secs_f64(e.total.as_secs_f64() / e.iters.max(1) as f64);
            println!(
                "{:<40} {:>9.2} {unit}   ({:?} per call)",
                e.name,
                per_second / scale,
                per_iter
            );
        }
    });
}
