//! Behaviour of `Session` beyond golden numbers: decode vs batch agreement, chunked prefill,
//! cache types, and errors (never panics) for bad requests. Uses the synthetic models in
//! `fixtures/golden/synthetic/models/`.

mod model_common;

use model_common::*;
use openweight::model::{KvType, LogitsMode, Model, ModelError, Session, SessionOptions};

fn model(name: &str) -> Model {
    Model::open(golden().join(format!("synthetic/models/{name}.gguf"))).expect("open")
}

fn opts(n_ctx: usize) -> SessionOptions {
    SessionOptions {
        n_ctx,
        kv_type: KvType::F16,
        n_threads: 2,
        pool: None,
    }
}

/// Largest `|a - b| / max(1, |b|)` over two logit tables.
fn max_rel_diff(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(&x, &y)| ((x - y).abs() / y.abs().max(1.0)) as f64)
        .fold(0.0, f64::max)
}

/// Deterministic pseudo-random ids below `n`.
fn ids(count: usize, n: usize) -> Vec<u32> {
    (0..count).map(|i| ((i * 7919 + 13) % n) as u32).collect()
}

#[test]
fn model_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Model>();
}

#[test]
fn feeding_a_prompt_token_by_token_gives_the_batch_logits() {
    for name in ["llama-f32", "qwen3-f32", "qwen2-q4_k_m", "llama-q4_k"] {
        let m = model(name);
        let n_vocab = m.config().n_vocab;
        let prompt = ids(40, n_vocab);
        let mut batch = Session::new(&m, opts(64)).unwrap();
        let all = batch.eval(&prompt, LogitsMode::All).unwrap().to_vec();
        let mut step = Session::new(&m, opts(64)).unwrap();
        let mut one_by_one = Vec::new();
        for &id in &prompt {
            one_by_one.extend_from_slice(step.eval(&[id], LogitsMode::Last).unwrap());
        }
        let d = max_rel_diff(&one_by_one, &all);
        eprintln!("{name}: decode vs batch max rel diff {d:.2e}");
        assert!(d <= 3e-3, "{name}: decode path differs from batch by {d}");
    }
}

#[test]
fn last_mode_returns_the_last_row_of_all_mode() {
    let m = model("llama-f32");
    let n_vocab = m.config().n_vocab;
    let prompt = ids(9, n_vocab);
    let mut a = Session::new(&m, opts(16)).unwrap();
    let all = a.eval(&prompt, LogitsMode::All).unwrap().to_vec();
    let mut b = Session::new(&m, opts(16)).unwrap();
    let last = b.eval(&prompt, LogitsMode::Last).unwrap();
    assert_eq!(last.len(), n_vocab);
    assert_eq!(last, &all[8 * n_vocab..]);
}

#[test]
fn prompts_longer_than_one_batch_are_split_through_the_same_cache() {
    let m = model("qwen2-f32");
    let n_vocab = m.config().n_vocab;
    let n = openweight::model::MAX_BATCH + 77;
    let prompt = ids(n, n_vocab);
    let mut whole = Session::new(&m, opts(n)).unwrap();
    let all = whole.eval(&prompt, LogitsMode::All).unwrap().to_vec();
    assert_eq!(all.len(), n * n_vocab);
    assert_eq!(whole.n_past(), n);
    let mut parts = Session::new(&m, opts(n)).unwrap();
    let mut joined = parts
        .eval(&prompt[..300], LogitsMode::All)
        .unwrap()
        .to_vec();
    joined.extend_from_slice(parts.eval(&prompt[300..], LogitsMode::All).unwrap());
    let d = max_rel_diff(&joined, &all);
    assert!(d <= 1e-4, "split prefill differs by {d}");
}

#[test]
fn f32_cache_agrees_with_f16_cache_within_f16_rounding() {
    let m = model("llama-f32");
    let prompt = ids(30, m.config().n_vocab);
    let mut f16 = Session::new(&m, opts(30)).unwrap();
    let a = f16.eval(&prompt, LogitsMode::All).unwrap().to_vec();
    let mut f32s = Session::new(
        &m,
        SessionOptions {
            kv_type: KvType::F32,
            ..opts(30)
        },
    )
    .unwrap();
    let b = f32s.eval(&prompt, LogitsMode::All).unwrap();
    let d = max_rel_diff(&a, b);
    assert!(
        d > 0.0,
        "an f16 cache rounds, so some difference is expected"
    );
    assert!(d <= 3e-3, "f32 vs f16 cache differ by {d}");
}

#[test]
fn clear_restarts_the_sequence() {
    let m = model("qwen3-f32");
    let prompt = ids(12, m.config().n_vocab);
    let mut s = Session::new(&m, opts(12)).unwrap();
    let first = s.eval(&prompt, LogitsMode::All).unwrap().to_vec();
    s.clear();
    assert_eq!(s.n_past(), 0);
    let again = s.eval(&prompt, LogitsMode::All).unwrap();
    assert_eq!(again, &first[..]);
}

#[test]
fn empty_input_is_an_error() {
    let m = model("llama-f32");
    let mut s = Session::new(&m, opts(8)).unwrap();
    assert!(matches!(
        s.eval(&[], LogitsMode::Last),
        Err(ModelError::EmptyInput)
    ));
    assert_eq!(s.n_past(), 0);
}

#[test]
fn an_id_outside_the_vocabulary_is_an_error_and_changes_nothing() {
    let m = model("llama-f32");
    let n_vocab = m.config().n_vocab;
    let mut s = Session::new(&m, opts(8)).unwrap();
    let err = s
        .eval(&[1, n_vocab as u32, 2], LogitsMode::Last)
        .unwrap_err();
    assert!(
        matches!(err, ModelError::TokenOutOfRange { id, index: 1, .. } if id == n_vocab as u32),
        "{err}"
    );
    assert_eq!(s.n_past(), 0);
    assert!(s.eval(&[u32::MAX], LogitsMode::Last).is_err());
}

#[test]
fn overflowing_the_context_is_an_error_and_the_session_stays_usable() {
    let m = model("llama-f32");
    let mut s = Session::new(&m, opts(5)).unwrap();
    s.eval(&[1, 2, 3], LogitsMode::Last).unwrap();
    let err = s.eval(&[4, 5, 6], LogitsMode::Last).unwrap_err();
    assert!(
        matches!(
            err,
            ModelError::ContextFull {
                n_past: 3,
                n_new: 3,
                n_ctx: 5
            }
        ),
        "{err}"
    );
    assert_eq!(s.n_past(), 3);
    s.eval(&[4, 5], LogitsMode::Last).unwrap();
    assert_eq!(s.n_past(), 5);
    assert!(matches!(
        s.eval(&[6], LogitsMode::Last),
        Err(ModelError::ContextFull { .. })
    ));
}

#[test]
fn a_zero_context_is_rejected() {
    let m = model("llama-f32");
    assert!(matches!(
        Session::new(&m, opts(0)),
        Err(ModelError::InvalidOption(_))
    ));
}

#[test]
fn an_impossibly_large_context_is_rejected_not_a_panic() {
    let m = model("llama-f32");
    assert!(matches!(
        Session::new(&m, opts(usize::MAX / 2)),
        Err(ModelError::InvalidOption(_))
    ));
}

#[test]
fn greedy_generation_does_not_depend_on_the_thread_count() {
    let m = model("qwen2-q4_k_m");
    let prompt = ids(20, m.config().n_vocab);
    let run = |threads: usize| {
        let mut s = Session::new(
            &m,
            SessionOptions {
                n_threads: threads,
                ..opts(40)
            },
        )
        .unwrap();
        let mut out = Vec::new();
        let mut next = openweight::sample::argmax(s.eval(&prompt, LogitsMode::Last).unwrap());
        for _ in 0..10 {
            out.push(next);
            next = openweight::sample::argmax(s.eval(&[next], LogitsMode::Last).unwrap());
        }
        out
    };
    assert_eq!(run(1), run(2));
}
