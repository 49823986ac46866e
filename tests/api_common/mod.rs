//! Shared helpers of the `api_*` tests: fixture paths and small session builders.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use openweight::{Model, Session, SessionOptions};

/// A synthetic model from `fixtures/golden/synthetic/models/` (random weights, tiny).
pub fn synthetic_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("fixtures/golden/synthetic/models/{name}.gguf"))
}

/// Opens a synthetic model.
pub fn synthetic(name: &str) -> Model {
    Model::open(synthetic_path(name)).expect("open synthetic model")
}

/// The default real model, or `None` (with a loud note) when it has not been fetched.
pub fn smollm2_path() -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/models/smollm2-135m-q4_1.gguf");
    if path.exists() {
        Some(path)
    } else {
        eprintln!(
            "\n*** SKIPPED: {} is missing; run fixtures/fetch-models.sh ***\n",
            path.display()
        );
        None
    }
}

/// A session of `n_ctx` tokens on `n_threads` threads.
pub fn session(model: &Model, n_ctx: usize, n_threads: usize) -> Session<'_> {
    let options = SessionOptions {
        n_ctx,
        n_threads,
        ..SessionOptions::default()
    };
    Session::new(model, options).expect("session")
}

/// Deterministic pseudo-random ids below `n`, starting from `seed`.
pub fn ids(count: usize, n: usize, seed: usize) -> Vec<u32> {
    (0..count)
        .map(|i| ((i * 7919 + seed * 104_729 + 13) % n) as u32)
        .collect()
}

/// Largest `|a - b| / max(1, |b|)` over two logit rows.
pub fn max_rel_diff(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(&x, &y)| ((x - y).abs() / y.abs().max(1.0)) as f64)
        .fold(0.0, f64::max)
}
