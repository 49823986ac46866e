//! Loading a model validates the file: unsupported architectures, missing tensors, wrong
//! shapes and unusable hyperparameters are `ModelError`s that name what is wrong, never
//! panics. Each case rewrites a synthetic model from `fixtures/golden/synthetic/models/`
//! in memory with one defect.

mod model_common;

use model_common::{load_rewritten, Edit};
use openweight::gguf::{TensorInfo, Value};
use openweight::model::{Model, ModelError};

/// Copies synthetic model `name`, letting `meta` rewrite (or drop, with `None`) metadata
/// values, `extra` add keys, and `tensor` edit tensors; then loads the result.
fn load_edited(
    name: &str,
    meta: impl Fn(&str, &Value) -> Option<Value>,
    extra: &[(&str, Value)],
    tensor: impl Fn(&TensorInfo, &[u8]) -> Edit,
) -> Result<Model, openweight::Error> {
    load_with_extra_f32_tensor(name, meta, extra, tensor, None)
}

/// [`load_edited`], plus an optional extra 1-D F32 tensor `(name, values)`.
fn load_with_extra_f32_tensor(
    name: &str,
    meta: impl Fn(&str, &Value) -> Option<Value>,
    extra: &[(&str, Value)],
    tensor: impl Fn(&TensorInfo, &[u8]) -> Edit,
    extra_tensor: Option<(&str, &[f32])>,
) -> Result<Model, openweight::Error> {
    let extra: Vec<(String, Value)> = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    load_rewritten(name, meta, &extra, tensor, extra_tensor)
}

fn model_error(r: Result<Model, openweight::Error>) -> ModelError {
    match r {
        Err(openweight::Error::Model(e)) => e,
        Err(e) => panic!("expected a ModelError, got {e}"),
        Ok(_) => panic!("expected a ModelError, the model loaded"),
    }
}

fn keep_meta(_: &str, v: &Value) -> Option<Value> {
    Some(v.clone())
}

fn keep_tensor(_: &TensorInfo, _: &[u8]) -> Edit {
    Edit::Keep
}

#[test]
fn an_unedited_copy_loads() {
    let m = load_edited("qwen2-f32", keep_meta, &[], keep_tensor).expect("copy loads");
    assert_eq!(m.config().arch.name, "qwen2");
}

#[test]
fn an_unsupported_architecture_is_named() {
    let meta = |k: &str, v: &Value| {
        Some(if k == "general.architecture" {
            Value::String("mamba".into())
        } else {
            v.clone()
        })
    };
    let e = model_error(load_edited("llama-f32", meta, &[], keep_tensor));
    assert!(
        matches!(&e, ModelError::UnsupportedArchitecture { arch, .. } if arch == "mamba"),
        "{e}"
    );
    assert!(
        e.to_string().contains("llama"),
        "lists what is supported: {e}"
    );
}

#[test]
fn a_missing_tensor_is_named() {
    let tensor = |t: &TensorInfo, _: &[u8]| {
        if t.name == "blk.1.ffn_down.weight" {
            Edit::Drop
        } else {
            Edit::Keep
        }
    };
    let e = model_error(load_edited("llama-f32", keep_meta, &[], tensor));
    assert!(
        matches!(&e, ModelError::MissingTensor { arch, name } if arch == "llama" && name == "blk.1.ffn_down.weight"),
        "{e}"
    );
}

#[test]
fn qwen2_without_its_query_bias_is_rejected() {
    let tensor = |t: &TensorInfo, _: &[u8]| {
        if t.name == "blk.0.attn_q.bias" {
            Edit::Drop
        } else {
            Edit::Keep
        }
    };
    let e = model_error(load_edited("qwen2-f32", keep_meta, &[], tensor));
    assert!(
        matches!(&e, ModelError::MissingTensor { name, .. } if name == "blk.0.attn_q.bias"),
        "{e}"
    );
}

#[test]
fn a_tensor_with_the_wrong_shape_is_named_with_both_shapes() {
    let tensor = |t: &TensorInfo, data: &[u8]| {
        if t.name == "blk.0.attn_k.weight" {
            Edit::Replace {
                ne: vec![t.ne[1], t.ne[0]],
                type_id: t.type_id,
                bytes: data.to_vec(),
            }
        } else {
            Edit::Keep
        }
    };
    let e = model_error(load_edited("llama-f32", keep_meta, &[], tensor));
    match &e {
        ModelError::TensorShape {
            name,
            expected,
            found,
            ..
        } => {
            assert_eq!(name, "blk.0.attn_k.weight");
            assert_ne!(expected, found);
        }
        other => panic!("expected a shape error, got {other}"),
    }
}

#[test]
fn a_weight_in_an_activation_only_format_is_rejected() {
    // Q8_K (type 15): 256-element blocks of 292 bytes; never a weight type.
    let tensor = |t: &TensorInfo, _: &[u8]| {
        if t.name == "blk.0.ffn_up.weight" {
            let rows = t.ne[1] as usize;
            let blocks = (t.ne[0] as usize / 256) * rows;
            Edit::Replace {
                ne: t.ne.clone(),
                type_id: 15,
                bytes: vec![0u8; blocks * 292],
            }
        } else {
            Edit::Keep
        }
    };
    let e = model_error(load_edited("llama-f32", keep_meta, &[], tensor));
    assert!(
        matches!(&e, ModelError::TensorType { name, .. } if name == "blk.0.ffn_up.weight"),
        "{e}"
    );
}

#[test]
fn a_missing_required_hyperparameter_is_named() {
    let meta = |k: &str, v: &Value| {
        if k == "llama.block_count" {
            None
        } else {
            Some(v.clone())
        }
    };
    let e = model_error(load_edited("llama-f32", meta, &[], keep_tensor));
    assert!(
        matches!(&e, ModelError::MissingKey { key, .. } if key == "llama.block_count"),
        "{e}"
    );
}

#[test]
fn kv_heads_that_do_not_divide_the_query_heads_are_rejected() {
    let meta = |k: &str, v: &Value| {
        Some(if k == "llama.attention.head_count_kv" {
            Value::U32(3)
        } else {
            v.clone()
        })
    };
    let e = model_error(load_edited("llama-f32", meta, &[], keep_tensor));
    assert!(
        matches!(&e, ModelError::BadHyperparameter { key, .. } if key == "llama.attention.head_count_kv"),
        "{e}"
    );
}

#[test]
fn an_unknown_rope_scaling_type_is_named_with_its_value() {
    let extra = [("llama.rope.scaling.type", Value::String("longrope".into()))];
    let e = model_error(load_edited("llama-f32", keep_meta, &extra, keep_tensor));
    match &e {
        ModelError::UnsupportedRopeScaling { key, value, .. } => {
            assert_eq!(key, "llama.rope.scaling.type");
            assert!(value.contains("longrope"));
        }
        other => panic!("expected a RoPE scaling error, got {other}"),
    }
}

#[test]
fn linear_rope_scaling_is_read_from_metadata() {
    let extra = [
        ("llama.rope.scaling.type", Value::String("linear".into())),
        ("llama.rope.scaling.factor", Value::F32(4.0)),
    ];
    let m = load_edited("llama-f32", keep_meta, &extra, keep_tensor).unwrap();
    assert_eq!(m.config().rope.freq_scale, 0.25);
    assert!(m.config().rope.yarn.is_none());
}

#[test]
fn yarn_rope_scaling_is_read_from_metadata() {
    let extra = [
        ("llama.rope.scaling.type", Value::String("yarn".into())),
        ("llama.rope.scaling.factor", Value::F32(4.0)),
        (
            "llama.rope.scaling.original_context_length",
            Value::U32(4096),
        ),
    ];
    let m = load_edited("llama-f32", keep_meta, &extra, keep_tensor).unwrap();
    assert_eq!(m.config().rope.freq_scale, 0.25);
    assert!(m.config().rope.yarn.is_some());
}

#[test]
fn rope_frequency_factors_are_loaded_when_present() {
    let n_rot = 64; // the synthetic models' head dimension (256 / 4 heads)
    let factors: Vec<f32> = (0..n_rot / 2).map(|i| 1.0 + i as f32).collect();
    let m = load_with_extra_f32_tensor(
        "llama-f32",
        keep_meta,
        &[],
        keep_tensor,
        Some(("rope_freqs.weight", &factors)),
    )
    .unwrap();
    assert_eq!(m.config().rope.n_rot, n_rot);
    assert_eq!(m.config().rope.freq_factors.as_deref(), Some(&factors[..]));
}

#[test]
fn rope_frequency_factors_of_the_wrong_length_are_rejected() {
    let factors = [1.0f32; 5];
    let e = model_error(load_with_extra_f32_tensor(
        "llama-f32",
        keep_meta,
        &[],
        keep_tensor,
        Some(("rope_freqs.weight", &factors)),
    ));
    assert!(
        matches!(&e, ModelError::TensorShape { name, .. } if name == "rope_freqs.weight"),
        "{e}"
    );
}
