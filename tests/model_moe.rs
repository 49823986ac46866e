//! Qwen3 mixture-of-experts against the reference: the synthetic `qwen3moe-*` models (8
//! experts, 2 used per token) in batch and token-by-token, greedy continuations with the
//! README's mixture-of-experts rule, prefill (tokens grouped by expert) against decode, and
//! load errors that name the missing key or tensor.

mod model_common;

use model_common::*;
use openweight::gguf::Value;
use openweight::model::{LogitsMode, ModelError, Session};

macro_rules! synthetic_moe {
    ($module:ident, $name:literal) => {
        mod $module {
            use super::*;

            #[test]
            fn has_eight_experts_two_used_with_renormalised_weights() {
                let moe = synthetic_model($name)
                    .config()
                    .moe
                    .expect("moe hyperparameters");
                assert_eq!((moe.n_expert, moe.n_expert_used, moe.n_ff_exp), (8, 2, 256));
                assert!(moe.norm_weights, "qwen3moe renormalises by default");
            }

            #[test]
            fn batch_logits_match_the_reference() {
                let m = synthetic_model($name);
                Class::Quantized.check(
                    concat!($name, " batch"),
                    &batch_agreement(&m, &synthetic_prompts($name)),
                );
            }

            #[test]
            fn token_by_token_decode_matches_the_reference() {
                let m = synthetic_model($name);
                Class::Quantized.check(
                    concat!($name, " incremental"),
                    &incremental_agreement(&m, &synthetic_prompts($name)),
                );
            }

            #[test]
            fn greedy_continuation_matches_the_reference_up_to_a_near_tie_or_routing_flip() {
                check_moe_greedy(&synthetic_model($name), $name);
            }
        }
    };
}

synthetic_moe!(qwen3moe_f32, "qwen3moe-f32");
synthetic_moe!(qwen3moe_q4_k_m, "qwen3moe-q4_k_m");

#[test]
fn prefill_grouped_by_expert_equals_one_token_at_a_time() {
    let m = synthetic_model("qwen3moe-f32");
    let ids: Vec<u32> = (0..100).map(|i| 3 + (i * 53) % 500).collect();
    let n_vocab = m.config().n_vocab;
    let mut batch = f32_kv_session(&m, ids.len());
    let all = batch.eval(&ids, LogitsMode::All).expect("batch").to_vec();
    let mut step: Session<'_> = f32_kv_session(&m, ids.len());
    let mut worst = 0f64;
    for (t, &id) in ids.iter().enumerate() {
        let row = step.eval(&[id], LogitsMode::Last).expect("decode");
        for (a, b) in row.iter().zip(&all[t * n_vocab..(t + 1) * n_vocab]) {
            worst = worst.max((a - b).abs() as f64 / (b.abs() as f64).max(1.0));
        }
    }
    eprintln!("qwen3moe-f32 batch vs decode, 100 tokens: max relative difference {worst:.2e}");
    assert!(worst < 1e-4, "batch and decode differ by {worst}");
}

/// Copies `qwen3moe-f32` with metadata key `drop_key` and tensor `drop_tensor` left out
/// and metadata `set` overriding values, then loads it, expecting a model error.
fn load_without(drop_key: &str, drop_tensor: &str, set: &[(&str, Value)]) -> ModelError {
    match load_with("qwen3moe-f32", drop_key, drop_tensor, set) {
        Err(openweight::Error::Model(e)) => e,
        Err(e) => panic!("expected a model error, got {e}"),
        Ok(_) => panic!("the defective file loaded"),
    }
}

#[test]
fn a_missing_expert_count_is_an_error_naming_the_key() {
    let e = load_without("qwen3moe.expert_count", "", &[]);
    assert!(e.to_string().contains("qwen3moe.expert_count"), "{e}");
}

#[test]
fn a_missing_expert_tensor_is_an_error_naming_it() {
    let e = load_without("", "blk.1.ffn_down_exps.weight", &[]);
    assert!(matches!(e, ModelError::MissingTensor { .. }), "{e:?}");
    assert!(e.to_string().contains("blk.1.ffn_down_exps.weight"), "{e}");
}

#[test]
fn a_missing_router_is_an_error_naming_it() {
    let e = load_without("", "blk.0.ffn_gate_inp.weight", &[]);
    assert!(e.to_string().contains("blk.0.ffn_gate_inp.weight"), "{e}");
}

#[test]
fn more_experts_used_than_exist_is_an_error() {
    let e = load_without("", "", &[("qwen3moe.expert_used_count", Value::U32(9))]);
    assert!(e.to_string().contains("qwen3moe.expert_used_count"), "{e}");
}

#[test]
fn expert_tensors_whose_expert_count_disagrees_are_a_shape_error() {
    let e = load_without("", "", &[("qwen3moe.expert_count", Value::U32(4))]);
    assert!(matches!(e, ModelError::TensorShape { .. }), "{e:?}");
}

#[test]
fn expert_weights_norm_false_in_the_file_turns_renormalisation_off() {
    let set = [("qwen3moe.expert_weights_norm", Value::Bool(false))];
    let m = load_with("qwen3moe-f32", "", "", &set).expect("loads");
    assert!(!m.config().moe.expect("moe").norm_weights);
}
