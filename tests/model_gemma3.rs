//! Gemma 3 against the reference: the synthetic `gemma3-*` models (sliding window 8, so every
//! golden prompt is longer than the window), the real Gemma3-270M Q4_K_M (logits, greedy
//! continuations, perplexity, the CLI's `logits --ids [--incremental]`), and the sliding
//! window's ring-buffer KV cache over sequences longer than the ring. Tolerances are those
//! of `fixtures/golden/README.md`.

mod model_common;

use std::path::{Path, PathBuf};
use std::process::Command;

use model_common::*;
use openweight::gguf::{Array, Value};
use openweight::model::perplexity::token_nlls;
use openweight::model::{LogitsMode, Model};

const REAL: &str = "gemma3-270m-q4_k_m";

fn real_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("fixtures/models/{REAL}.gguf"))
}

/// The real model, or `None` (with a loud message) when it has not been fetched.
fn real() -> Option<Model> {
    let path = real_path();
    if !path.exists() {
        eprintln!(
            "\n*** SKIPPED: {} is missing; run fixtures/fetch-models.sh to fetch it ***\n",
            path.display()
        );
        return None;
    }
    Some(Model::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

fn real_prompts() -> Vec<RefPrompt> {
    read_logits(&golden().join(format!("real/{REAL}.logits.jsonl")))
}

macro_rules! synthetic_model {
    ($module:ident, $name:literal, $class:expr) => {
        mod $module {
            use super::*;

            #[test]
            fn every_golden_prompt_is_longer_than_the_sliding_window() {
                let m = synthetic_model($name);
                let window = m.config().sliding_window.expect("sliding window");
                assert_eq!(window, 8);
                assert!(synthetic_prompts($name)
                    .iter()
                    .all(|p| p.ids.len() > window));
            }

            #[test]
            fn batch_logits_match_the_reference() {
                let m = synthetic_model($name);
                let a = batch_agreement(&m, &synthetic_prompts($name));
                $class.check(concat!($name, " batch"), &a);
            }

            #[test]
            fn token_by_token_decode_matches_the_reference() {
                let m = synthetic_model($name);
                let a = incremental_agreement(&m, &synthetic_prompts($name));
                $class.check(concat!($name, " incremental"), &a);
            }

            #[test]
            fn greedy_continuation_matches_the_reference_up_to_a_near_tie() {
                let m = synthetic_model($name);
                let refs =
                    read_greedy(&golden().join(concat!("synthetic/", $name, ".greedy.jsonl")));
                check_greedy(&m, $name, &refs);
            }
        }
    };
}

synthetic_model!(gemma3_f32, "gemma3-f32", Class::Dense);
synthetic_model!(gemma3_q4_k_m, "gemma3-q4_k_m", Class::Quantized);

/// `n` token ids (not BOS/EOS) cycling through the synthetic vocabulary.
fn long_sequence(n: usize) -> Vec<u32> {
    let mut ids = vec![1u32];
    ids.extend((0..n as u32 - 1).map(|i| 3 + (i * 37 + i / 7) % 500));
    ids
}

/// Largest `|a - b| / max(1, |b|)` over two logit rows.
fn max_rel_diff(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).abs() / (y as f64).abs().max(1.0))
        .fold(0.0, f64::max)
}

#[test]
fn batch_and_decode_agree_after_the_sliding_window_ring_has_wrapped() {
    // 700 tokens: the batch path writes chunks of 512 into a ring of 8 - 1 + 512 slots,
    // decode one token at a time; both wrap the ring and must see the same keys. With an
    // F32 cache both compute attention alike, so a key the ring gets wrong shows far above
    // f32 rounding.
    let m = synthetic_model("gemma3-f32");
    let ids = long_sequence(700);
    let n_vocab = m.config().n_vocab;
    let mut batch = f32_kv_session(&m, ids.len());
    let all = batch.eval(&ids, LogitsMode::All).expect("batch").to_vec();
    let mut step = f32_kv_session(&m, ids.len());
    let mut worst = 0f64;
    for (t, &id) in ids.iter().enumerate() {
        let row = step.eval(&[id], LogitsMode::Last).expect("decode");
        if t % 50 == 0 || t >= 690 {
            worst = worst.max(max_rel_diff(row, &all[t * n_vocab..(t + 1) * n_vocab]));
        }
    }
    eprintln!("batch vs decode over 700 tokens: max relative logit difference {worst:.2e}");
    assert!(worst < 1e-4, "batch and decode differ by {worst}");
}

#[test]
fn set_prompt_that_keeps_a_long_prefix_equals_a_fresh_evaluation() {
    // The second prompt shares 650 tokens with the first; the ring has overwritten keys
    // that position 650 would need, so the session must not reuse that prefix blindly.
    let m = synthetic_model("gemma3-f32");
    let first = long_sequence(1200);
    let mut second = first[..650].to_vec();
    second.extend([7, 8, 9]);
    let mut s = session(&m, first.len());
    s.set_prompt(&first).expect("first prompt");
    let reused = s.set_prompt(&second).expect("second prompt").to_vec();
    let mut fresh = session(&m, first.len());
    let want = fresh.set_prompt(&second).expect("fresh").to_vec();
    let d = max_rel_diff(&reused, &want);
    assert!(
        d < 1e-4,
        "reused prefix gives logits {d} away from a fresh session"
    );
}

#[test]
fn gemma3_270m_hyperparameters_follow_the_reference() {
    let Some(m) = real() else { return };
    let c = m.config();
    assert_eq!(c.sliding_window, Some(512));
    let global: Vec<usize> = (0..c.n_layer).filter(|&l| !c.swa_layers[l]).collect();
    assert_eq!(global, vec![5, 11, 17], "every 6th layer is global");
    assert_eq!(c.rope.base, 1e6);
    assert_eq!(c.rope_swa.base, 1e4);
    assert_eq!(c.query_scale, Some(1.0 / 16.0), "1/sqrt(head_dim 256)");
    assert_eq!(c.kq_scale, 1.0);
    assert_eq!(c.final_logit_softcap, None);
    assert_eq!(m.weights().output.info.name, "token_embd.weight", "tied");
}

#[test]
fn gemma3_270m_batch_logits_match_the_reference() {
    let Some(m) = real() else { return };
    Class::Real.check("gemma3-270m batch", &batch_agreement(&m, &real_prompts()));
}

#[test]
fn gemma3_270m_token_by_token_decode_matches_the_reference() {
    let Some(m) = real() else { return };
    Class::Real.check(
        "gemma3-270m incremental",
        &incremental_agreement(&m, &real_prompts()),
    );
}

#[test]
fn gemma3_270m_greedy_continuations_match_the_reference_up_to_a_near_tie() {
    let Some(m) = real() else { return };
    let refs = read_greedy(&golden().join(format!("real/{REAL}.greedy.jsonl")));
    let d = check_greedy(&m, REAL, &refs);
    eprintln!(
        "{REAL}: {} of {} greedy sequences diverged (each at a near tie)",
        d.len(),
        refs.len()
    );
}

#[test]
fn gemma3_270m_perplexity_is_within_half_a_percent_of_the_reference() {
    let Some(m) = real() else { return };
    let text =
        std::fs::read_to_string(golden().join(format!("real/{REAL}.ppl.json"))).expect("ppl.json");
    let golden: serde_json::Value = serde_json::from_str(&text).expect("json");
    let ids: Vec<u32> = golden["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_u64().expect("id") as u32)
        .collect();
    assert!(
        ids.len() > 2 * 512,
        "the text must be longer than the 512-token window"
    );
    let mut s = session(&m, ids.len());
    let nll = token_nlls(&mut s, &ids, |_, _| {}).expect("score");
    assert_eq!(nll.len() as u64, golden["n_scored"].as_u64().unwrap());
    let ppl = (nll.iter().sum::<f64>() / nll.len() as f64).exp();
    let want = golden["ppl"].as_f64().unwrap();
    let rel = (ppl - want).abs() / want;
    eprintln!(
        "{REAL}: perplexity {ppl:.4} vs reference {want:.4} ({:.3}% apart)",
        rel * 100.0
    );
    assert!(
        rel <= 0.005,
        "perplexity {ppl} is {:.3}% from {want}",
        rel * 100.0
    );
}

fn run_logits(args: &[&str], ids: &[u32]) -> Vec<RefPos> {
    let list = ids
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let out = Command::new(env!("CARGO_BIN_EXE_openweight"))
        .args(["logits", "-t", "2", "-m"])
        .arg(real_path())
        .args(args)
        .args(["--ids", &list])
        .output()
        .expect("spawn openweight");
    assert!(
        out.status.success(),
        "openweight logits failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let v: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("output")).expect("json");
    parse_positions(&v["positions"])
}

#[test]
fn gemma3_270m_cli_logits_with_ids_batch_and_incremental_match_the_library_and_reference() {
    let Some(m) = real() else { return };
    let n_vocab = m.config().n_vocab;
    let refs = real_prompts();
    // the longest golden prompt, through both paths
    let p = refs.iter().max_by_key(|p| p.ids.len()).expect("a prompt");
    let batch = session(&m, p.ids.len())
        .eval(&p.ids, LogitsMode::All)
        .expect("batch")
        .to_vec();
    let mut s = session(&m, p.ids.len());
    let mut steps = Vec::with_capacity(batch.len());
    for &id in &p.ids {
        steps.extend_from_slice(s.eval(&[id], LogitsMode::Last).expect("decode"));
    }
    for (mode, lib) in [(&[][..], &batch), (&["--incremental"][..], &steps)] {
        let ours = run_logits(mode, &p.ids);
        assert_eq!(ours.len(), p.ids.len(), "{mode:?}: one position per id");
        let (mut judged, mut agree) = (0, 0);
        for (t, (o, r)) in ours.iter().zip(&p.positions).enumerate() {
            // the CLI prints what the library computes
            let row = &lib[t * n_vocab..(t + 1) * n_vocab];
            assert!((o.lse - lse(row)).abs() < 1e-4, "{mode:?} position {t}");
            assert_eq!(o.top[0].0, top2(row).0, "{mode:?} position {t}");
            if !is_near_tie(r.top[0].1, r.top[1].1) {
                judged += 1;
                agree += usize::from(o.top[0].0 == r.top[0].0);
            }
        }
        eprintln!("gemma3-270m CLI logits {mode:?}: top-1 {agree}/{judged} non-tie positions");
        assert!(
            agree as f64 >= 0.99 * judged as f64,
            "{mode:?}: {agree}/{judged}"
        );
    }
}

/// Copies `gemma3-f32` without metadata key `drop_key` and tensor `drop_tensor`, with
/// metadata `set` added or overriding, and loads it.
fn load_edited(
    drop_key: &str,
    drop_tensor: &str,
    set: &[(&str, Value)],
) -> Result<Model, openweight::Error> {
    load_with("gemma3-f32", drop_key, drop_tensor, set)
}

fn load_error(r: Result<Model, openweight::Error>) -> String {
    match r {
        Err(e) => e.to_string(),
        Ok(_) => panic!("the defective file loaded"),
    }
}

#[test]
fn by_default_every_sixth_layer_is_global_so_both_synthetic_layers_slide() {
    let m = synthetic_model("gemma3-f32");
    let c = m.config();
    assert_eq!(c.swa_layers, vec![true, true]);
    assert_eq!(c.layer_window(0), Some(8));
    assert_eq!(
        c.rope_swa.base, 10000.0,
        "sliding layers default to base 1e4"
    );
    assert_eq!(c.rope.base, 1e6);
    assert_eq!((c.query_scale, c.kq_scale), (Some(0.125), 1.0));
}

#[test]
fn a_sliding_window_pattern_key_overrides_the_period() {
    let m = load_edited(
        "",
        "",
        &[("gemma3.attention.sliding_window_pattern", Value::U32(2))],
    )
    .expect("loads");
    assert_eq!(m.config().swa_layers, vec![true, false]);
    assert_eq!(m.config().layer_window(1), None);
}

#[test]
fn a_sliding_window_pattern_may_list_one_flag_per_layer() {
    let flags = Value::Array(Array::Bool(vec![false, true]));
    let m = load_edited(
        "",
        "",
        &[("gemma3.attention.sliding_window_pattern", flags)],
    )
    .expect("loads");
    assert_eq!(m.config().swa_layers, vec![false, true]);
}

#[test]
fn an_unusable_sliding_window_pattern_is_an_error_naming_the_key() {
    let e = load_error(load_edited(
        "",
        "",
        &[(
            "gemma3.attention.sliding_window_pattern",
            Value::String("every other".into()),
        )],
    ));
    assert!(e.contains("gemma3.attention.sliding_window_pattern"), "{e}");
}

#[test]
fn without_a_sliding_window_every_layer_is_global() {
    let m = load_edited("gemma3.attention.sliding_window", "", &[]).expect("loads");
    assert_eq!(m.config().sliding_window, None);
    assert_eq!(m.config().swa_layers, vec![false, false]);
}

#[test]
fn rope_freq_base_swa_sets_the_sliding_layers_base() {
    let m = load_edited("", "", &[("gemma3.rope.freq_base_swa", Value::F32(5e4))]).expect("loads");
    assert_eq!(m.config().rope_swa.base, 5e4);
}

#[test]
fn final_logit_softcapping_bounds_the_logits_by_c_tanh_of_logits_over_c() {
    let ids = [1u32, 40, 41, 42];
    let plain = synthetic_model("gemma3-f32");
    let raw = session(&plain, 4)
        .eval(&ids, LogitsMode::All)
        .expect("eval")
        .to_vec();
    let capped = load_edited(
        "",
        "",
        &[("gemma3.final_logit_softcapping", Value::F32(2.0))],
    )
    .expect("loads");
    assert_eq!(capped.config().final_logit_softcap, Some(2.0));
    let out = session(&capped, 4)
        .eval(&ids, LogitsMode::All)
        .expect("eval")
        .to_vec();
    for (&o, &r) in out.iter().zip(&raw) {
        assert!(o.abs() <= 2.0);
        assert!((o - 2.0 * (r / 2.0).tanh()).abs() < 1e-5, "{o} vs {r}");
    }
}

#[test]
fn a_missing_post_ffn_norm_is_an_error_naming_the_tensor() {
    let e = load_error(load_edited("", "blk.1.post_ffw_norm.weight", &[]));
    assert!(e.contains("blk.1.post_ffw_norm.weight"), "{e}");
}
