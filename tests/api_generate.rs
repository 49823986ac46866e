//! The generation API: streaming text, stop conditions, cancellation, prompt-prefix reuse,
//! errors instead of panics, and embeddings. Uses the synthetic models (random weights) and,
//! where real text matters, the default real model when it has been fetched.

mod api_common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use api_common::*;
use openweight::chat::{ChatMessage, ChatTemplate};
use openweight::model::ModelError;
use openweight::{Error, GenerateOptions, Pooling, Sampler, StopReason};

const MODEL: &str = "qwen2-q4_k_m";

/// A sampler that draws (not greedy), fixed seed.
fn sampler() -> Sampler {
    Sampler::builder().temperature(0.9).seed(11).build()
}

/// Greedy generation without stopping at EOG: `n` tokens, their pieces concatenated.
fn generate_text(
    name: &str,
    prompt: &[u32],
    n: usize,
    options: GenerateOptions,
) -> (String, Vec<u32>, Option<StopReason>) {
    let m = synthetic(name);
    let mut s = session(&m, 256, 2);
    s.set_prompt(prompt).unwrap();
    let mut sampler = Sampler::greedy();
    let mut g = s.generate(&mut sampler, options.max_tokens(n).stop_at_eog(false));
    let mut text = String::new();
    let mut ids = Vec::new();
    for t in &mut g {
        let t = t.unwrap();
        text.push_str(&t.text_piece);
        ids.push(t.id);
    }
    let reason = g.stop_reason();
    (text, ids, reason)
}

#[test]
fn max_tokens_yields_exactly_that_many_tokens() {
    let prompt = ids(6, 512, 1);
    let (_, ids, reason) = generate_text(MODEL, &prompt, 17, GenerateOptions::new());
    assert_eq!(ids.len(), 17);
    assert_eq!(reason, Some(StopReason::MaxTokens));
}

#[test]
fn streamed_pieces_concatenate_to_the_decoded_ids() {
    let prompt = ids(6, 512, 2);
    let m = synthetic(MODEL);
    let (text, ids, _) = generate_text(MODEL, &prompt, 40, GenerateOptions::new());
    assert_eq!(text, m.tokenizer().decode(&ids));
}

#[test]
fn a_stop_string_ends_generation_and_is_not_emitted() {
    let prompt = ids(6, 512, 3);
    let (full, _, _) = generate_text(MODEL, &prompt, 40, GenerateOptions::new());
    // A stop string taken from the middle of the unconstrained output.
    let chars: Vec<char> = full.chars().collect();
    assert!(chars.len() >= 12, "need some text to cut: {full:?}");
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 3].iter().collect();
    let expected = &full[..full.find(&stop).unwrap()];
    let (text, ids, reason) = generate_text(
        MODEL,
        &prompt,
        40,
        GenerateOptions::new().stop(stop.clone()),
    );
    assert_eq!(text, expected, "stop string {stop:?}");
    assert_eq!(reason, Some(StopReason::StopString));
    assert!(ids.len() < 40);
}

#[test]
fn text_that_only_starts_like_a_stop_string_is_emitted_in_full() {
    let prompt = ids(6, 512, 4);
    let (full, _, _) = generate_text(MODEL, &prompt, 30, GenerateOptions::new());
    // The whole output plus one more character can never match, but every suffix of the
    // output is a prefix of it, so everything is held back until the end.
    let stop = format!("{full}\u{1}");
    let (text, ids, reason) = generate_text(MODEL, &prompt, 30, GenerateOptions::new().stop(stop));
    assert_eq!(text, full);
    assert_eq!(ids.len(), 30);
    assert_eq!(reason, Some(StopReason::MaxTokens));
}

#[test]
fn generation_stops_at_an_end_of_generation_token_without_yielding_it() {
    let Some(path) = smollm2_path() else { return };
    let m = openweight::Model::open(path).unwrap();
    let template = ChatTemplate::from_model(&m).unwrap();
    let prompt = template
        .render(&[ChatMessage::user("Say hello.")], true)
        .unwrap();
    let mut s = session(&m, 512, 2);
    s.set_prompt(&m.prompt_tokens(&prompt).unwrap()).unwrap();
    let mut greedy = Sampler::greedy();
    let mut g = s.generate(&mut greedy, GenerateOptions::new().max_tokens(200));
    let ids: Vec<u32> = (&mut g).map(|t| t.unwrap().id).collect();
    assert_eq!(
        g.stop_reason(),
        Some(StopReason::EndOfGeneration),
        "{ids:?}"
    );
    assert!(!ids.is_empty());
    assert!(ids.iter().all(|&id| !m.tokenizer().is_eog(id)));
}

#[test]
fn setting_the_stop_flag_cancels_before_the_next_token() {
    let m = synthetic(MODEL);
    let mut s = session(&m, 128, 2);
    s.set_prompt(&ids(5, 512, 5)).unwrap();
    let flag = Arc::new(AtomicBool::new(false));
    let mut sampler = sampler();
    let options = GenerateOptions::new()
        .max_tokens(50)
        .stop_at_eog(false)
        .stop_flag(flag.clone());
    let mut g = s.generate(&mut sampler, options);
    let mut n = 0;
    for t in &mut g {
        t.unwrap();
        n += 1;
        if n == 3 {
            flag.store(true, Ordering::Relaxed);
        }
    }
    assert_eq!(n, 3);
    assert_eq!(g.stop_reason(), Some(StopReason::Cancelled));
}

#[test]
fn dropping_the_iterator_stops_work_and_the_session_can_continue() {
    let m = synthetic(MODEL);
    let prompt = ids(5, 512, 6);
    let mut s = session(&m, 128, 2);
    s.set_prompt(&prompt).unwrap();
    let mut sampler = sampler();
    let first: Vec<u32> = s
        .generate(&mut sampler, GenerateOptions::new().stop_at_eog(false))
        .take(3)
        .map(|t| t.unwrap().id)
        .collect();
    // Three tokens yielded; at most those were evaluated (the last one may not be).
    assert!(
        (prompt.len() + 2..=prompt.len() + 3).contains(&s.n_past()),
        "{}",
        s.n_past()
    );
    assert_eq!(&s.tokens()[prompt.len()..prompt.len() + 2], &first[..2]);
    // Evaluate the last yielded token if the generation had not, then continue.
    if s.n_past() == prompt.len() + 2 {
        s.feed(&[first[2]]).unwrap();
    }
    let more = s
        .generate(
            &mut sampler,
            GenerateOptions::new().max_tokens(4).stop_at_eog(false),
        )
        .count();
    assert_eq!(more, 4);
}

#[test]
fn a_prompt_sharing_a_cached_prefix_evaluates_only_the_new_suffix_and_gives_fresh_logits() {
    let m = synthetic(MODEL);
    let base = ids(30, 512, 7);
    let mut reused = session(&m, 64, 2);
    reused.set_prompt(&base).unwrap();
    let mut sampler = sampler();
    // Generate a few tokens, then come back with a prompt that shares 20 tokens.
    let _ = reused
        .generate(
            &mut sampler,
            GenerateOptions::new().max_tokens(5).stop_at_eog(false),
        )
        .count();
    let mut second = base[..20].to_vec();
    second.extend(ids(9, 512, 8));
    let before = reused.n_evaluated();
    let got = reused.set_prompt(&second).unwrap().to_vec();
    assert_eq!(
        reused.n_evaluated() - before,
        9,
        "only the new suffix is evaluated"
    );
    assert_eq!(reused.tokens(), &second[..]);
    let mut fresh = session(&m, 64, 2);
    let want = fresh.set_prompt(&second).unwrap();
    let d = max_rel_diff(&got, want);
    assert!(
        d <= 1e-4,
        "reused prefix differs from a fresh evaluation by {d}"
    );
}

#[test]
fn setting_the_same_prompt_again_reevaluates_only_its_last_token() {
    let m = synthetic(MODEL);
    let prompt = ids(12, 512, 9);
    let mut s = session(&m, 32, 2);
    let first = s.set_prompt(&prompt).unwrap().to_vec();
    let before = s.n_evaluated();
    let again = s.set_prompt(&prompt).unwrap().to_vec();
    assert_eq!(s.n_evaluated() - before, 1);
    assert!(max_rel_diff(&again, &first) <= 1e-4);
}

#[test]
fn the_same_seed_gives_the_same_tokens() {
    let m = synthetic(MODEL);
    let run = || {
        let mut s = session(&m, 64, 2);
        s.set_prompt(&ids(8, 512, 10)).unwrap();
        let mut sampler = Sampler::builder()
            .temperature(1.0)
            .repetition_penalty(1.2)
            .seed(3)
            .build();
        let (_, ids) = s
            .generate(
                &mut sampler,
                GenerateOptions::new().max_tokens(24).stop_at_eog(false),
            )
            .collect_text()
            .unwrap();
        ids
    };
    assert_eq!(run(), run());
}

#[test]
fn generating_before_any_prompt_is_an_error_not_a_panic() {
    let m = synthetic(MODEL);
    let mut s = session(&m, 16, 1);
    let mut sampler = sampler();
    let mut g = s.generate(&mut sampler, GenerateOptions::new());
    assert!(matches!(g.next(), Some(Err(Error::InvalidArgument(_)))));
    assert!(g.next().is_none());
    assert_eq!(g.stop_reason(), Some(StopReason::Error));
}

#[test]
fn an_empty_prompt_is_an_error() {
    let m = synthetic(MODEL);
    let mut s = session(&m, 16, 1);
    assert!(matches!(
        s.set_prompt(&[]),
        Err(Error::Model(ModelError::EmptyInput))
    ));
    assert!(matches!(
        s.feed(&[]),
        Err(Error::Model(ModelError::EmptyInput))
    ));
}

#[test]
fn unknown_token_ids_are_an_error_and_keep_the_cache() {
    let m = synthetic(MODEL);
    let mut s = session(&m, 16, 1);
    s.set_prompt(&[1, 2, 3]).unwrap();
    let err = s.set_prompt(&[1, 2, 99_999]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Model(ModelError::TokenOutOfRange {
                id: 99_999,
                index: 2,
                ..
            })
        ),
        "{err}"
    );
    assert_eq!(s.tokens(), &[1, 2, 3]);
    assert!(s.logits().is_some());
}

#[test]
fn a_prompt_longer_than_the_context_is_an_error_and_keeps_the_cache() {
    let m = synthetic(MODEL);
    let mut s = session(&m, 8, 1);
    s.set_prompt(&[1, 2, 3]).unwrap();
    let err = s.set_prompt(&ids(9, 512, 11)).unwrap_err();
    assert!(
        matches!(err, Error::Model(ModelError::ContextFull { .. })),
        "{err}"
    );
    assert_eq!(s.tokens(), &[1, 2, 3]);
}

#[test]
fn generation_ends_when_the_context_is_full() {
    let m = synthetic(MODEL);
    let mut s = session(&m, 10, 1);
    s.set_prompt(&ids(4, 512, 12)).unwrap();
    let mut sampler = sampler();
    let mut g = s.generate(
        &mut sampler,
        GenerateOptions::new().max_tokens(100).stop_at_eog(false),
    );
    let n = (&mut g).filter(|t| t.is_ok()).count();
    assert_eq!(g.stop_reason(), Some(StopReason::ContextFull));
    // Six tokens fill the cache; a seventh can be sampled but not evaluated.
    assert_eq!(n, 7);
    assert_eq!(s.n_past(), 10);
}

#[test]
fn text_prompts_get_bos_as_the_model_wants() {
    let Some(path) = smollm2_path() else { return };
    let m = openweight::Model::open(path).unwrap();
    let mut s = session(&m, 64, 2);
    s.set_prompt_text("Hello world").unwrap();
    let want = m.tokenizer().encode("Hello world", true, true).unwrap();
    assert_eq!(s.tokens(), &want[..]);
    s.feed_text(" again").unwrap();
    let again = m.tokenizer().encode(" again", false, true).unwrap();
    assert_eq!(
        &s.tokens()[want.len()..],
        &again[..],
        "no BOS in the middle"
    );
}

#[test]
fn normalized_embeddings_have_unit_length() {
    let m = synthetic(MODEL);
    let v = m.embed("hello there", Pooling::Mean, true).unwrap();
    assert_eq!(v.len(), m.config().n_embd);
    let norm: f64 = v
        .iter()
        .map(|&x| (x as f64) * (x as f64))
        .sum::<f64>()
        .sqrt();
    assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
}

#[test]
fn mean_and_last_pooling_differ() {
    let m = synthetic(MODEL);
    let mean = m.embed("one two three four", Pooling::Mean, true).unwrap();
    let last = m.embed("one two three four", Pooling::Last, true).unwrap();
    assert!(max_rel_diff(&mean, &last) > 1e-3);
}

#[test]
fn the_same_text_gives_the_same_embedding() {
    let m = synthetic(MODEL);
    let a = m.embed("a stable vector", Pooling::Mean, false).unwrap();
    let b = m.embed("a stable vector", Pooling::Mean, false).unwrap();
    assert_eq!(a, b);
    let c = m.embed("another text", Pooling::Mean, false).unwrap();
    assert_ne!(a, c);
}

#[test]
fn inputs_longer_than_a_batch_embed_and_leave_the_session_empty() {
    let m = synthetic(MODEL);
    let long = ids(openweight::model::MAX_BATCH + 5, 512, 13);
    let mut s = session(&m, long.len(), 2);
    let v = s.embed(&long, Pooling::Last, false).unwrap();
    assert_eq!(v.len(), m.config().n_embd);
    assert_eq!(s.n_past(), 0, "embedding leaves the session empty");
    assert!(v.iter().all(|x| x.is_finite()));
}

#[test]
fn embedding_an_empty_or_oversized_input_is_an_error() {
    let m = synthetic(MODEL);
    let mut s = session(&m, 4, 1);
    assert!(matches!(
        s.embed(&[], Pooling::Mean, true),
        Err(Error::Model(ModelError::EmptyInput))
    ));
    assert!(matches!(
        s.embed(&[1, 2, 3, 4, 5], Pooling::Mean, true),
        Err(Error::Model(ModelError::ContextFull { .. }))
    ));
}

#[test]
fn text_held_back_when_the_model_ends_its_turn_is_still_emitted() {
    let Some(path) = smollm2_path() else { return };
    let m = openweight::Model::open(path).unwrap();
    let template = ChatTemplate::from_model(&m).unwrap();
    let prompt = template
        .render(&[ChatMessage::user("Say hello.")], true)
        .unwrap();
    let ids = m.prompt_tokens(&prompt).unwrap();
    let reply = |options: GenerateOptions| {
        let mut s = session(&m, 512, 2);
        s.set_prompt(&ids).unwrap();
        let mut greedy = Sampler::greedy();
        let mut g = s.generate(&mut greedy, options.max_tokens(200));
        let text: String = (&mut g).map(|t| t.unwrap().text_piece).collect();
        (text, g.stop_reason())
    };
    let (full, reason) = reply(GenerateOptions::new());
    assert_eq!(reason, Some(StopReason::EndOfGeneration));
    // A stop string that begins with the reply's last character but never completes: that
    // character is held back when the end-of-turn token comes, and must still come out.
    let last = full.chars().last().expect("a non-empty reply");
    let (held, reason) = reply(GenerateOptions::new().stop(format!("{last}\u{1}")));
    assert_eq!(reason, Some(StopReason::EndOfGeneration));
    assert_eq!(held, full);
}

/// The largest sliding window of a model's layers, if it has any.
fn largest_window(m: &openweight::Model) -> Option<usize> {
    (0..m.config().n_layer)
        .filter_map(|l| m.config().layer_window(l))
        .max()
}

#[test]
fn prefix_reuse_with_sliding_window_layers_matches_a_fresh_evaluation() {
    let m = synthetic("gemma3-q4_k_m");
    let window = largest_window(&m).expect("gemma3 has sliding-window layers");
    let n_vocab = m.config().n_vocab;
    let max_batch = openweight::model::MAX_BATCH;
    let first = ids(window + max_batch + 40, n_vocab, 14);
    let n_ctx = first.len() + 16;
    // Cut back a little (the ring still holds what the new tokens see) and a lot (it does
    // not: the session must start over rather than attend to overwritten keys).
    for keep in [first.len() - 10, first.len() - max_batch - 20] {
        let mut second = first[..keep].to_vec();
        second.extend(ids(5, n_vocab, 15));
        let mut reused = session(&m, n_ctx, 2);
        reused.set_prompt(&first).unwrap();
        let before = reused.n_evaluated();
        let got = reused.set_prompt(&second).unwrap().to_vec();
        let evaluated = reused.n_evaluated() - before;
        let mut fresh = session(&m, n_ctx, 2);
        let want = fresh.set_prompt(&second).unwrap();
        let d = max_rel_diff(&got, want);
        eprintln!("keep {keep}: evaluated {evaluated}, max rel diff {d:.2e}");
        assert!(
            d <= 1e-4,
            "keep {keep}: reuse differs from a fresh evaluation by {d}"
        );
        let expected = if first.len() - keep <= max_batch {
            5
        } else {
            second.len() as u64
        };
        assert_eq!(evaluated, expected, "keep {keep}");
    }
}
