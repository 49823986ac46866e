//! Golden tests of the forward pass on the synthetic models (random weights, 2 layers):
//! `fixtures/golden/synthetic/*.{logits,greedy}.jsonl` were produced by the reference
//! runtime (see `fixtures/golden/README.md`); the tolerances are that README's.

mod model_common;

use model_common::*;

macro_rules! synthetic_model {
    ($module:ident, $name:literal, $class:expr) => {
        mod $module {
            use super::*;

            #[test]
            fn batch_logits_match_the_reference() {
                let m = synthetic_model($name);
                $class.check(
                    concat!($name, " batch"),
                    &batch_agreement(&m, &synthetic_prompts($name)),
                );
            }

            #[test]
            fn token_by_token_decode_matches_the_reference() {
                let m = synthetic_model($name);
                $class.check(
                    concat!($name, " incremental"),
                    &incremental_agreement(&m, &synthetic_prompts($name)),
                );
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

synthetic_model!(llama_f32, "llama-f32", Class::Dense);
synthetic_model!(llama_f16, "llama-f16", Class::Dense);
synthetic_model!(llama_bf16, "llama-bf16", Class::Bf16);
synthetic_model!(llama_q8_0, "llama-q8_0", Class::Quantized);
synthetic_model!(llama_q4_0, "llama-q4_0", Class::Quantized);
synthetic_model!(llama_q4_1, "llama-q4_1", Class::Quantized);
synthetic_model!(llama_q5_0, "llama-q5_0", Class::Quantized);
synthetic_model!(llama_q5_1, "llama-q5_1", Class::Quantized);
synthetic_model!(llama_q2_k, "llama-q2_k", Class::Quantized);
synthetic_model!(llama_q3_k, "llama-q3_k", Class::Quantized);
synthetic_model!(llama_q4_k, "llama-q4_k", Class::Quantized);
synthetic_model!(llama_q5_k, "llama-q5_k", Class::Quantized);
synthetic_model!(llama_q6_k, "llama-q6_k", Class::Quantized);
synthetic_model!(llama_iq4_nl, "llama-iq4_nl", Class::Quantized);
synthetic_model!(llama_iq4_xs, "llama-iq4_xs", Class::Quantized);
synthetic_model!(llama_tied_f32, "llama-tied-f32", Class::Dense);
synthetic_model!(llama_tied_q4_k_m, "llama-tied-q4_k_m", Class::Quantized);
synthetic_model!(qwen2_f32, "qwen2-f32", Class::Dense);
synthetic_model!(qwen2_q4_k_m, "qwen2-q4_k_m", Class::Quantized);
synthetic_model!(qwen3_f32, "qwen3-f32", Class::Dense);
synthetic_model!(qwen3_q4_k_m, "qwen3-q4_k_m", Class::Quantized);
