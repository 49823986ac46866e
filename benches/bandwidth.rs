//! Memory-bandwidth probe: summing a 1 GiB buffer with 1 and 2 threads, in bytes per
//! second. Quote GEMV results as a fraction of this number (decode is memory-bound).
//!
//! `cargo bench --bench bandwidth -- --quick`.

mod common;

use std::hint::black_box;

use common::{pool, timed};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rayon::prelude::*;

const BYTES: usize = 1 << 30;

/// Sums the words with four independent accumulators (so the loop is bound by loads, not
/// by the add latency) and returns the total.
fn sum(words: &[u64]) -> u64 {
    let mut acc = [0u64; 4];
    let mut chunks = words.chunks_exact(4);
    for c in &mut chunks {
        for (a, &w) in acc.iter_mut().zip(c) {
            *a = a.wrapping_add(w);
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .fold(0u64, |a, &w| a.wrapping_add(w));
    acc.iter().fold(tail, |a, &w| a.wrapping_add(w))
}

fn bandwidth(c: &mut Criterion) {
    // Non-zero contents, so every page is really backed by memory.
    let words: Vec<u64> = (0..BYTES / 8).map(|i| i as u64).collect();
    let mut group = c.benchmark_group("bandwidth/read-1GiB");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(BYTES as u64));
    for n_threads in [1, 2] {
        let pool = pool(n_threads);
        let name = format!("read 1 GiB {n_threads}t");
        group.bench_function(format!("{n_threads}t"), |b| {
            b.iter_custom(|iters| {
                timed(&name, BYTES as f64, iters, || {
                    let total = pool.install(|| {
                        words
                            .par_chunks(words.len() / n_threads)
                            .map(sum)
                            .reduce(|| 0, u64::wrapping_add)
                    });
                    black_box(total);
                })
            })
        });
    }
    group.finish();
    common::print_summary("Memory read bandwidth", "GB/s", 1e9);
}

criterion_group!(benches, bandwidth);
criterion_main!(benches);
