//! GEMM (512 activation rows, the prompt-processing case): throughput in flops.
//!
//! Criterion's "elements" are flops (`2 * rows * cols * batch` per call), so its elem/s
//! column reads directly as FLOP/s; a GFLOP/s summary line per benchmark is printed at the
//! end. Shape 4096x4096 (rows x cols) with 512 activation rows, like llama.cpp's `pp512`
//! on a 7-8B attention projection. Pools of 2 threads (and 1 for Q4_0 and Q8_0).
//!
//! `cargo bench --bench gemm -- --quick`.

mod common;

use std::hint::black_box;

use common::{has_kernels, pool, random_activations, random_weights, runtime_layout, timed};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use openweight_kernels::matmul::{matmul, MatRef, MatmulScratch};
use openweight_kernels::{dispatch, GgmlType};

const ROWS: usize = 4096;
const COLS: usize = 4096;
const BATCH: usize = 512;

fn gemm(c: &mut Criterion) {
    println!("kernels: {}", dispatch::best().name());
    let mut group = c.benchmark_group(format!("gemm/{ROWS}x{COLS}x{BATCH}"));
    group.sample_size(10);
    let flops = 2 * ROWS * COLS * BATCH;
    group.throughput(Throughput::Elements(flops as u64));
    let x = random_activations(BATCH * COLS, 2);
    let mut y = vec![0f32; BATCH * ROWS];
    let mut scratch = MatmulScratch::default();
    let types = [
        (GgmlType::Q4_0, &[2, 1][..]),
        (GgmlType::Q8_0, &[2, 1][..]),
        (GgmlType::Q4_K, &[2][..]),
        (GgmlType::Q6_K, &[2][..]),
        (GgmlType::Q5_0, &[2][..]),
        (GgmlType::Q4_1, &[2][..]),
        (GgmlType::Q5_K, &[2][..]),
        (GgmlType::IQ4_NL, &[2][..]),
        (GgmlType::F16, &[2][..]),
    ];
    for (ty, threads) in types {
        if !has_kernels(ty) {
            continue;
        }
        let (w_bytes, layout, label) =
            runtime_layout(ty, ROWS, COLS, random_weights(ty, ROWS * COLS, 1));
        let w = MatRef {
            layout,
            ..MatRef::new(ty, w_bytes.bytes(), ROWS, COLS)
        };
        for &n_threads in threads {
            let pool = pool(n_threads);
            let name = format!("gemm {ROWS}x{COLS}x{BATCH} {ty} {n_threads}t{label}");
            group.bench_function(BenchmarkId::new(ty.name(), format!("{n_threads}t")), |b| {
                b.iter_custom(|iters| {
                    timed(&name, flops as f64, iters, || {
                        matmul(&pool, &w, black_box(&x), &mut y, &mut scratch);
                        black_box(&y);
                    })
                })
            });
        }
    }
    group.finish();
    common::print_summary("GEMM", "GFLOP/s", 1e9);
}

criterion_group!(benches, gemm);
criterion_main!(benches);
