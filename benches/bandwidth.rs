//! Memory-bandwidth probe: summing a 1 GiB buffer with 1 and 2 threads, in bytes per
//! second. Quote GEMV results as a fraction of this number (decode is memory-bound).
//!
//! The method is `openweight_kernels::bandwidth` (also behind `openweight bench
//! --bandwidth`), so both report the same ceiling.
//!
//! `cargo bench --bench bandwidth -- --quick`.

mod common;

use std::hint::black_box;

use common::{pool, timed};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use openweight_kernels::bandwidth::{parallel_sum, ProbeBuffer};

const BYTES: usize = 1 << 30;

fn bandwidth(c: &mut Criterion) {
    let buffer = ProbeBuffer::new(BYTES).expect("1 GiB probe buffer");
    let mut group = c.benchmark_group("bandwidth/read-1GiB");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(BYTES as u64));
    for n_threads in [1, 2] {
        let pool = pool(n_threads);
        let name = format!("read 1 GiB {n_threads}t");
        group.bench_function(format!("{n_threads}t"), |b| {
            b.iter_custom(|iters| {
                timed(&name, BYTES as f64, iters, || {
                    black_box(parallel_sum(&pool, buffer.words()));
                })
            })
        });
    }
    group.finish();
    common::print_summary("Memory read bandwidth", "GB/s", 1e9);
}

criterion_group!(benches, bandwidth);
criterion_main!(benches);
