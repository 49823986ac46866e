//! Soak test (ignored by default; run with
//! `SOAK_SECS=120 cargo test --release --test soak -- --ignored --nocapture`).
//!
//! Eight threads share one `Model` (SmolLM2 from `fixtures/models/`, or a synthetic model when
//! it has not been fetched) for `SOAK_SECS` seconds (default 120). Each thread keeps creating
//! sessions with random context sizes, feeding random prompts, generating with random sampler
//! settings through a streaming decoder, stopping at random points, and dropping the session.
//! Some steps are deliberately invalid (empty input, an id past the vocabulary, overfilling the
//! context) and must fail with exactly the expected error. Asserted: no panic, no unexpected
//! error, and the resident set size (from `/proc/self/statm`) averaged over the last window is
//! within 10% of its average over the first window (30 s each; a quarter of the run when
//! `SOAK_SECS` < 120).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use openweight::model::{KvType, LogitsMode, Model, ModelError, Session, SessionOptions};
use openweight::sample::{Rng, Sampler};
use openweight::tokenizer::StreamDecoder;

const THREADS: usize = 8;

const WORDS: &[&str] = &[
    "the",
    "model",
    "runs",
    "on",
    "CPU",
    "Hello",
    "world",
    "fn main() {",
    "}",
    "日本語",
    "😀",
    "<|im_start|>",
    "<|im_end|>",
    "\n",
    "  ",
    "quantized",
    "weights",
    "token",
    "é",
    "\t",
    "42",
    "println!(\"{}\", x);",
    "Once upon a time",
    "<s>",
    "</s>",
    "\u{200b}",
    "ÿ",
];

fn model_path() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let real = root.join("fixtures/models/smollm2-135m-q4_1.gguf");
    if real.exists() {
        return real;
    }
    eprintln!(
        "\n*** soak: fixtures/models/smollm2-135m-q4_1.gguf is missing (run \
         fixtures/fetch-models.sh); SOAKING THE SYNTHETIC llama-q4_0 MODEL INSTEAD ***\n"
    );
    root.join("fixtures/golden/synthetic/models/llama-q4_0.gguf")
}

/// Resident set size in bytes, from `/proc/self/statm` (second field, in pages).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("statm has a resident field");
    pages * 4096
}

fn random_prompt(rng: &mut Rng) -> String {
    let n = 1 + rng.next_u64() % 24;
    let mut s = String::new();
    for _ in 0..n {
        s.push_str(WORDS[(rng.next_u64() % WORDS.len() as u64) as usize]);
        if rng.next_u64() % 3 != 0 {
            s.push(' ');
        }
    }
    s
}

#[derive(Default)]
struct Counts {
    sessions: AtomicU64,
    tokens: AtomicU64,
    expected_errors: AtomicU64,
    cancelled: AtomicU64,
}

/// One session's life: prompt, generation, random stop, deliberate misuse.
fn one_session(model: &Model, rng: &mut Rng, counts: &Counts) {
    let n_vocab = model.config().n_vocab;
    let n_ctx = 16 + (rng.next_u64() % 240) as usize;
    let options = SessionOptions {
        n_ctx,
        kv_type: if rng.next_u64() % 2 == 0 {
            KvType::F16
        } else {
            KvType::F32
        },
        n_threads: 1,
        ..SessionOptions::default()
    };
    let mut session = Session::new(model, options).expect("session with a valid n_ctx");
    counts.sessions.fetch_add(1, Ordering::Relaxed);

    // Deliberate misuse first: each must fail with its own error and change nothing.
    match rng.next_u64() % 4 {
        0 => assert!(matches!(
            session.eval(&[], LogitsMode::Last),
            Err(ModelError::EmptyInput)
        )),
        1 => assert!(matches!(
            session.eval(&[1, n_vocab as u32], LogitsMode::Last),
            Err(ModelError::TokenOutOfRange { index: 1, .. })
        )),
        2 => {
            let too_many = vec![1u32; n_ctx + 1];
            assert!(matches!(
                session.eval(&too_many, LogitsMode::All),
                Err(ModelError::ContextFull { n_past: 0, .. })
            ));
        }
        _ => {}
    }
    assert_eq!(
        session.n_past(),
        0,
        "a failed eval must leave the session unchanged"
    );

    let tok = model.tokenizer();
    let prompt = random_prompt(rng);
    let parse_special = rng.next_u64() % 2 == 0;
    let mut ids = tok
        .encode(&prompt, true, parse_special)
        .expect("the model has the special tokens it adds");
    if ids.is_empty() {
        ids.push(tok.bos_id().unwrap_or(0));
    }
    ids.truncate(n_ctx / 2);
    let mode = if rng.next_u64() % 4 == 0 {
        LogitsMode::All
    } else {
        LogitsMode::Last
    };
    let logits = session.eval(&ids, mode).expect("prompt fits the context");
    let rows = if mode == LogitsMode::All {
        ids.len()
    } else {
        1
    };
    assert_eq!(logits.len(), rows * n_vocab);
    let mut next_logits = logits[(rows - 1) * n_vocab..].to_vec();

    let temperature = [0.0, 0.3, 0.8, 1.5][(rng.next_u64() % 4) as usize];
    let top_k = [0, 1, 5, 40][(rng.next_u64() % 4) as usize];
    let mut sampler = Sampler::new(temperature, top_k, rng.next_u64());
    let stop_after = (rng.next_u64() % (n_ctx as u64 + 8)) as usize;
    let mut stream = StreamDecoder::new(tok);
    let mut text = String::new();
    for step in 0.. {
        if step == stop_after {
            counts.cancelled.fetch_add(1, Ordering::Relaxed);
            break;
        }
        let id = sampler.sample(&next_logits);
        assert!((id as usize) < n_vocab);
        text.push_str(&stream.push(id));
        match session.eval(&[id], LogitsMode::Last) {
            Ok(l) => {
                counts.tokens.fetch_add(1, Ordering::Relaxed);
                next_logits.copy_from_slice(l);
            }
            Err(ModelError::ContextFull {
                n_past, n_ctx: c, ..
            }) => {
                assert_eq!((n_past, c), (n_ctx, n_ctx));
                counts.expected_errors.fetch_add(1, Ordering::Relaxed);
                break;
            }
            Err(e) => panic!("unexpected error while generating: {e}"),
        }
    }
    text.push_str(&stream.flush());
    assert!(!stream.has_pending());
    if rng.next_u64() % 3 == 0 {
        // Reuse after clear, then drop.
        session.clear();
        session
            .eval(&ids[..1], LogitsMode::Last)
            .expect("a cleared session accepts input");
    }
}

#[test]
#[ignore = "soak test: run with --ignored (SOAK_SECS, default 120)"]
fn eight_threads_share_one_model_without_panics_errors_or_memory_growth() {
    let secs: u64 = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let window = if secs >= 120 { 30 } else { (secs / 4).max(1) };
    let model = Model::open(model_path()).expect("model loads");
    // Warm-up: page the weights in before the first RSS window starts.
    Session::new(
        &model,
        SessionOptions {
            n_ctx: 8,
            kv_type: KvType::F16,
            n_threads: 1,
            ..SessionOptions::default()
        },
    )
    .and_then(|mut s| s.eval(&[0], LogitsMode::Last).map(drop))
    .expect("warm-up eval");

    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let stop = AtomicBool::new(false);
    let counts = Counts::default();
    let samples: Mutex<Vec<(f64, u64)>> = Mutex::new(Vec::new());

    std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (model, stop, counts) = (&model, &stop, &counts);
                s.spawn(move || {
                    let mut rng = Rng::new(0x50A4 + t as u64);
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        one_session(model, &mut rng, counts);
                    }
                })
            })
            .collect();
        while Instant::now() < deadline {
            samples
                .lock()
                .unwrap()
                .push((start.elapsed().as_secs_f64(), rss_bytes()));
            std::thread::sleep(Duration::from_millis(250));
        }
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            if let Err(p) = w.join() {
                std::panic::resume_unwind(p);
            }
        }
    });

    let samples = samples.into_inner().unwrap();
    let mean = |from: f64, to: f64| {
        let v: Vec<u64> = samples
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|&(_, r)| r)
            .collect();
        assert!(!v.is_empty(), "no RSS samples in [{from}, {to}) s");
        v.iter().sum::<u64>() as f64 / v.len() as f64
    };
    let first = mean(0.0, window as f64);
    let last = mean((secs - window) as f64, secs as f64);
    let sessions = counts.sessions.load(Ordering::Relaxed);
    eprintln!(
        "soak: {secs} s, {THREADS} threads: {sessions} sessions, {} generated tokens, {} \
         cancelled, {} expected errors; RSS mean first {window} s {:.1} MiB, last {window} s \
         {:.1} MiB (peak {:.1} MiB)",
        counts.tokens.load(Ordering::Relaxed),
        counts.cancelled.load(Ordering::Relaxed),
        counts.expected_errors.load(Ordering::Relaxed),
        first / 1048576.0,
        last / 1048576.0,
        samples.iter().map(|s| s.1).max().unwrap_or(0) as f64 / 1048576.0,
    );
    assert!(
        sessions >= THREADS as u64,
        "every thread ran at least one session"
    );
    assert!(
        (last - first).abs() <= 0.10 * first,
        "RSS moved from {first} B to {last} B (more than 10%)"
    );
}
