//! GEMV (one activation row, the decode case): weight bytes streamed per second.
//!
//! Shapes (rows x cols): 4096x4096 (a 7-8B attention projection), 896x4864 (Qwen2.5-0.5B
//! FFN down) for every weight type, 4096x14336 (Llama-3-8B FFN down, the acceptance shape)
//! for Q4_0, Q8_0, Q4_K, Q6_K, and two tiny decode shapes (128x896, 896x896) that show the
//! cost of waking the pool. Pools of 2 and 1 threads. Then the matrices that dominate decode
//! of the small real models (short rows, where per-row overhead counts): the tied Q8_0
//! output matrices of Gemma3-270M (262144x640) and Qwen2.5-0.5B (151936x896), Q5_0 layers
//! of 640 and 896 columns and Q4_1 layers of 576 columns (SmolLM2-135M), 2 threads.
//!
//! `cargo bench --bench gemv -- --quick`; filter with e.g. `-- --quick Q4_K`. A shape whose
//! name (`gemv/ROWSxCOLS/TYPE`) matches no filter argument is not even built (the output
//! matrices take a while to fill with random blocks).

mod common;

use std::hint::black_box;

use common::{
    has_kernels, pool, random_activations, random_weights, runtime_layout, timed, WEIGHT_TYPES,
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use openweight_kernels::matmul::{matmul, MatRef, MatmulScratch};
use openweight_kernels::{dispatch, GgmlType};

fn bench_shape(c: &mut Criterion, rows: usize, cols: usize, types: &[GgmlType], threads: &[usize]) {
    let mut group = c.benchmark_group(format!("gemv/{rows}x{cols}"));
    group.sample_size(10);
    for &ty in types {
        if !has_kernels(ty) || !wanted(&format!("gemv/{rows}x{cols}/{}", ty.name())) {
            continue;
        }
        let (w_bytes, layout, label) =
            runtime_layout(ty, rows, cols, random_weights(ty, rows * cols, 1));
        let w = MatRef {
            layout,
            ..MatRef::new(ty, w_bytes.bytes(), rows, cols)
        };
        let x = random_activations(cols, 2);
        let mut y = vec![0f32; rows];
        let mut scratch = MatmulScratch::default();
        group.throughput(Throughput::Bytes(w.data.len() as u64));
        for &n_threads in threads {
            let pool = pool(n_threads);
            let name = format!("gemv {rows}x{cols} {ty} {n_threads}t{label}");
            group.bench_function(BenchmarkId::new(ty.name(), format!("{n_threads}t")), |b| {
                b.iter_custom(|iters| {
                    timed(&name, w.data.len() as f64, iters, || {
                        matmul(&pool, &w, black_box(&x), &mut y, &mut scratch);
                        black_box(&y);
                    })
                })
            });
        }
    }
    group.finish();
}

/// Whether a benchmark named `name` can pass criterion's filter: true without filter
/// arguments, else when one of them occurs in `name` as plain text (regex filters with
/// special characters, and numbers such as `--sample-size 10`'s, are never taken as
/// filters here; criterion still applies its own filter).
fn wanted(name: &str) -> bool {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-') && a.parse::<f64>().is_err())
        .collect();
    filters.is_empty()
        || filters
            .iter()
            .any(|f| name.contains(f.as_str()) || f.contains(|c: char| "|.*+?()[]^$\\".contains(c)))
}

fn gemv(c: &mut Criterion) {
    println!("kernels: {}", dispatch::best().name());
    bench_shape(c, 4096, 4096, &WEIGHT_TYPES, &[2, 1]);
    bench_shape(c, 896, 4864, &WEIGHT_TYPES, &[2, 1]);
    let acceptance = [
        GgmlType::Q4_0,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
    ];
    bench_shape(c, 4096, 14336, &acceptance, &[2]);
    // Tiny decode matrices (Qwen2.5-0.5B k/v and q projections): pool wake-up vs work.
    bench_shape(c, 128, 896, &[GgmlType::Q8_0, GgmlType::F32], &[2, 1]);
    bench_shape(c, 896, 896, &[GgmlType::Q8_0, GgmlType::Q4_0], &[2, 1]);
    // Decode of the small real models: tied output matrices and short-row layers.
    bench_shape(c, 262144, 640, &[GgmlType::Q8_0], &[2]);
    bench_shape(c, 151936, 896, &[GgmlType::Q8_0], &[2]);
    bench_shape(c, 2048, 640, &[GgmlType::Q5_0], &[2]);
    bench_shape(c, 4864, 896, &[GgmlType::Q5_0], &[2]);
    bench_shape(c, 1536, 576, &[GgmlType::Q4_1], &[2]);
    common::print_summary("GEMV weight bandwidth", "GB/s", 1e9);
}

criterion_group!(benches, gemv);
criterion_main!(benches);
