//! Golden tests on the real models (SmolLM2-135M Q4_1, Qwen2.5-Coder-0.5B Q4_K_M), fetched by
//! `fixtures/fetch-models.sh` into `fixtures/models/`. Reference data:
//! `fixtures/golden/real/NAME.{logits,greedy}.jsonl` and `NAME.ppl.json`; tolerances from
//! `fixtures/golden/README.md`. A missing model file skips the test with a loud message.

mod model_common;

use std::path::Path;

use model_common::*;
use openweight::model::perplexity::token_nlls;
use openweight::model::Model;

fn model(name: &str) -> Option<Model> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("fixtures/models/{name}.gguf"));
    if !path.exists() {
        eprintln!(
            "\n*** SKIPPED: {} is missing; run fixtures/fetch-models.sh to fetch it ***\n",
            path.display()
        );
        return None;
    }
    Some(Model::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

fn prompts(name: &str) -> Vec<RefPrompt> {
    read_logits(&golden().join(format!("real/{name}.logits.jsonl")))
}

fn check_perplexity(name: &str) {
    let Some(m) = model(name) else { return };
    let path = golden().join(format!("real/{name}.ppl.json"));
    let text = std::fs::read_to_string(&path).expect("ppl.json");
    let golden: serde_json::Value = serde_json::from_str(&text).expect("json");
    let ids: Vec<u32> = golden["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let mut s = session(&m, ids.len());
    let nll = token_nlls(&mut s, &ids, |_, _| {}).expect("score");
    assert_eq!(nll.len() as u64, golden["n_scored"].as_u64().unwrap());
    let mean = nll.iter().sum::<f64>() / nll.len() as f64;
    let ppl = mean.exp();
    let want = golden["ppl"].as_f64().unwrap();
    let rel = (ppl - want).abs() / want;
    eprintln!(
        "{name}: perplexity {ppl:.4} vs reference {want:.4} ({:.3}% apart)",
        rel * 100.0
    );
    assert!(
        rel <= 0.01,
        "{name}: perplexity {ppl} is {:.3}% from {want}",
        rel * 100.0
    );
}

macro_rules! real_model {
    ($module:ident, $name:literal) => {
        mod $module {
            use super::*;

            #[test]
            fn batch_logits_match_the_reference() {
                let Some(m) = model($name) else { return };
                Class::Real.check(
                    concat!($name, " batch"),
                    &batch_agreement(&m, &prompts($name)),
                );
            }

            #[test]
            fn token_by_token_decode_matches_the_reference() {
                let Some(m) = model($name) else { return };
                let a = incremental_agreement(&m, &prompts($name));
                Class::Real.check(concat!($name, " incremental"), &a);
            }

            #[test]
            fn greedy_continuation_matches_the_reference_up_to_a_near_tie() {
                let Some(m) = model($name) else { return };
                let refs = read_greedy(&golden().join(concat!("real/", $name, ".greedy.jsonl")));
                let d = check_greedy(&m, $name, &refs);
                eprintln!(
                    "{}: {} of {} greedy sequences diverged at a near tie",
                    $name,
                    d.len(),
                    refs.len()
                );
            }

            #[test]
            fn perplexity_is_within_one_percent_of_the_reference() {
                check_perplexity($name);
            }
        }
    };
}

real_model!(smollm2_135m_q4_1, "smollm2-135m-q4_1");
real_model!(qwen2_5_coder_0_5b_q4_k_m, "qwen2.5-coder-0.5b-q4_k_m");
