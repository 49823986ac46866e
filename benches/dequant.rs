//! Dequantization (the scalar reference `Format::dequantize`): weights per second.
//!
//! One row of 1M elements per type, one thread. `cargo bench --bench dequant -- --quick`.

mod common;

use std::hint::black_box;

use common::{has_kernels, random_weights, timed, WEIGHT_TYPES};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use openweight_kernels::format;

const N_ELEMS: usize = 1 << 20;

fn dequant(c: &mut Criterion) {
    let mut group = c.benchmark_group("dequantize");
    group.throughput(Throughput::Elements(N_ELEMS as u64));
    let mut out = vec![0f32; N_ELEMS];
    for ty in WEIGHT_TYPES {
        if !has_kernels(ty) {
            continue;
        }
        let f = format(ty);
        let src = random_weights(ty, N_ELEMS, 1);
        let name = format!("dequantize {ty}");
        group.bench_function(ty.name(), |b| {
            b.iter_custom(|iters| {
                timed(&name, N_ELEMS as f64, iters, || {
                    (f.dequantize)(black_box(src.bytes()), &mut out);
                    black_box(&out);
                })
            })
        });
    }
    group.finish();
    common::print_summary("Dequantize", "Gelem/s", 1e9);
}

criterion_group!(benches, dequant);
criterion_main!(benches);
