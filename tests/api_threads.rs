//! Determinism and sharing: the same seed and settings give the same tokens whatever the
//! thread count, and one `Model` serves many sessions on many threads, each producing
//! exactly what it would alone.

mod api_common;

use std::sync::Arc;

use api_common::*;
use openweight::{GenerateOptions, Model, Sampler, Session, SessionOptions};

#[test]
fn model_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Model>();
    assert_send_sync::<Arc<Model>>();
}

#[test]
fn sessions_can_move_between_threads() {
    fn assert_send<T: Send>() {}
    assert_send::<Session<'static>>();
}

/// A sampling (not greedy) configuration with every stage on.
fn sampler(seed: u64) -> Sampler {
    Sampler::builder()
        .temperature(0.9)
        .top_k(50)
        .top_p(0.95)
        .min_p(0.02)
        .repetition_penalty(1.1)
        .frequency_penalty(0.1)
        .presence_penalty(0.1)
        .penalty_window(32)
        .seed(seed)
        .build()
}

/// `n` sampled tokens after `prompt`, on a session of `threads` threads.
fn tokens(model: &Model, prompt: &[u32], seed: u64, n: usize, threads: usize) -> Vec<u32> {
    let mut s = session(model, prompt.len() + n, threads);
    s.set_prompt(prompt).unwrap();
    let mut sampler = sampler(seed);
    let options = GenerateOptions::new().max_tokens(n).stop_at_eog(false);
    let (_, ids) = s.generate(&mut sampler, options).collect_text().unwrap();
    assert_eq!(ids.len(), n);
    ids
}

#[test]
fn the_same_seed_gives_identical_tokens_with_one_and_two_threads() {
    for name in ["qwen2-q4_k_m", "llama-q4_0", "qwen3-f32"] {
        let m = synthetic(name);
        let prompt = ids(20, m.config().n_vocab, 1);
        assert_eq!(
            tokens(&m, &prompt, 42, 48, 1),
            tokens(&m, &prompt, 42, 48, 2),
            "{name}"
        );
    }
}

#[test]
fn the_same_seed_gives_identical_tokens_with_one_and_two_threads_on_a_real_model() {
    let Some(path) = smollm2_path() else { return };
    let m = Model::open(path).unwrap();
    let prompt = m.prompt_tokens("The old lighthouse keeper").unwrap();
    assert_eq!(tokens(&m, &prompt, 7, 24, 1), tokens(&m, &prompt, 7, 24, 2));
}

#[test]
fn four_threads_with_three_sessions_each_match_single_threaded_runs() {
    let m = synthetic("qwen2-q4_k_m");
    let n_vocab = m.config().n_vocab;
    let jobs: Vec<(Vec<u32>, u64)> = (0..12)
        .map(|j| (ids(8 + j, n_vocab, j), 100 + j as u64))
        .collect();
    let expected: Vec<Vec<u32>> = jobs
        .iter()
        .map(|(prompt, seed)| tokens(&m, prompt, *seed, 64, 1))
        .collect();
    let shared = Arc::new(m);
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let model = Arc::clone(&shared);
            let jobs: Vec<_> = jobs[w * 3..w * 3 + 3].to_vec();
            std::thread::spawn(move || {
                // Three live sessions per thread, advanced in turn, one token at a time.
                let mut sessions: Vec<Session<'_>> = jobs
                    .iter()
                    .map(|(prompt, _)| {
                        let options = SessionOptions {
                            n_ctx: prompt.len() + 64,
                            n_threads: 2,
                            ..SessionOptions::default()
                        };
                        let mut s = Session::new(&model, options).unwrap();
                        s.set_prompt(prompt).unwrap();
                        s
                    })
                    .collect();
                let mut samplers: Vec<Sampler> =
                    jobs.iter().map(|(_, seed)| sampler(*seed)).collect();
                let mut out = vec![Vec::new(); 3];
                for _ in 0..64 {
                    for i in 0..3 {
                        let id = sessions[i].sample(&mut samplers[i]).unwrap();
                        out[i].push(id);
                        if out[i].len() < 64 {
                            sessions[i].feed(&[id]).unwrap();
                        }
                    }
                }
                out
            })
        })
        .collect();
    for (w, worker) in workers.into_iter().enumerate() {
        let got = worker.join().expect("worker panicked");
        for (i, ids) in got.iter().enumerate() {
            assert_eq!(ids, &expected[w * 3 + i], "thread {w} session {i}");
        }
    }
}

#[test]
fn sessions_can_share_one_caller_supplied_pool() {
    let m = synthetic("llama-q4_0");
    let pool = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap(),
    );
    let prompt = ids(10, m.config().n_vocab, 3);
    let with_pool = |seed| {
        let options = SessionOptions {
            n_ctx: 64,
            pool: Some(Arc::clone(&pool)),
            ..SessionOptions::default()
        };
        let mut s = Session::new(&m, options).unwrap();
        assert!(Arc::ptr_eq(s.pool(), &pool));
        s.set_prompt(&prompt).unwrap();
        let mut sampler = sampler(seed);
        s.generate(
            &mut sampler,
            GenerateOptions::new().max_tokens(16).stop_at_eog(false),
        )
        .collect_text()
        .unwrap()
        .1
    };
    assert_eq!(with_pool(5), tokens(&m, &prompt, 5, 16, 1));
}
