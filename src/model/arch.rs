//! Per-architecture descriptions, as data.
//!
//! The forward pass in [`super::forward`] is written once. Everything that differs between
//! model families (which optional tensors exist, the RoPE pairing, the FFN activation, extra
//! norms, the embedding scale, tied output) is a field of [`ArchSpec`], and adding a family
//! means adding a row to [`ARCHITECTURES`], not copying the forward pass.

/// Whether a tensor role exists in an architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Never loaded for this architecture (ignored if present in the file).
    Absent,
    /// Loaded if the file has it.
    Optional,
    /// Loading fails if the file lacks it.
    Required,
}

/// How RoPE pairs up the dimensions of a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// GPT-J style: pair `i` is dimensions `(2i, 2i + 1)` (llama; the converter permutes
    /// Q/K weights to make this right).
    Norm,
    /// GPT-NeoX style: pair `i` is dimensions `(i, i + n_rot / 2)` (qwen2, qwen3, gemma3).
    Neox,
}

/// The gated feed-forward activation: `down(act(gate(h)) * up(h))`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FfnActivation {
    /// SwiGLU: `silu(z) = z / (1 + exp(-z))`.
    Silu,
    /// GeGLU with the tanh approximation of GELU.
    GeluTanh,
}

/// How the FFN's gate and up projections are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FfnLayout {
    /// `blk.N.ffn_gate` and `blk.N.ffn_up`, `n_ff` rows each.
    Split,
    /// One `blk.N.ffn_up` of `2 * n_ff` rows: the gate's `n_ff` rows first, then up's
    /// (glm4). There is no `ffn_gate` tensor.
    FusedGateUp,
}

/// Where the attention scale is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttnScale {
    /// `softmax(q·k / sqrt(head_dim_k))`.
    InvSqrtHeadDim,
    /// Gemma 3: q is multiplied by `1 / sqrt(head_dim_k)` before attention (by
    /// `1 / sqrt(n_embd / n_head)` for the 62-layer 27B model, as the reference does) and
    /// `q·k` is not scaled again.
    Gemma3Query,
}

/// Mixture-of-experts feed-forward block (`ffn_gate_inp` router, 3-D
/// `ffn_{gate,up,down}_exps`), replacing the dense FFN in every layer (or, with
/// [`MoeSpec::deepseek`], in every layer after the leading dense ones).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MoeSpec {
    /// Whether the selected experts' softmax weights are renormalised to sum to 1 when the
    /// file has no `expert_weights_norm` key.
    pub norm_weights: bool,
    /// DeepSeek-style routing and layout: the file's `leading_dense_block_count` dense
    /// layers first, `expert_shared_count` shared experts (`ffn_*_shexp`) added to every
    /// expert layer, the gating function from `expert_gating_func` (softmax or sigmoid),
    /// the per-expert selection bias `exp_probs_b.bias`, and the selected weights scaled by
    /// `expert_weights_scale`.
    pub deepseek: bool,
}

/// How a block computes attention.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttnKind {
    /// Multi-head (grouped-query) attention from `attn_q`/`attn_k`/`attn_v`.
    Mha,
    /// DeepSeek's multi-head latent attention (see [`super::mla`]): the cache holds a
    /// compressed latent plus one shared rotary key per token.
    Mla,
}

/// A factor applied to the token embeddings before the first layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmbeddingScale {
    /// Embeddings are used as stored.
    None,
    /// Multiplied by `sqrt(n_embd)` (gemma family).
    SqrtNEmbd,
}

/// Everything the forward pass needs to know about a model family.
#[derive(Clone, Copy, Debug)]
pub struct ArchSpec {
    /// The `general.architecture` string.
    pub name: &'static str,
    /// RoPE pairing.
    pub rope_style: RopeStyle,
    /// `blk.N.attn_q.bias`.
    pub attn_q_bias: Need,
    /// `blk.N.attn_k.bias`.
    pub attn_k_bias: Need,
    /// `blk.N.attn_v.bias`.
    pub attn_v_bias: Need,
    /// `blk.N.attn_output.bias`.
    pub attn_output_bias: Need,
    /// Per-head RMSNorm of q and k before RoPE (`blk.N.attn_q_norm`, `blk.N.attn_k_norm`).
    pub attn_qk_norm: Need,
    /// RMSNorm of the attention block's output before its residual add
    /// (`blk.N.post_attention_norm`).
    pub post_attention_norm: Need,
    /// RMSNorm of the FFN block's output before its residual add (`blk.N.post_ffw_norm`).
    pub post_ffn_norm: Need,
    /// The gated FFN activation.
    pub ffn_activation: FfnActivation,
    /// Scale of the token embeddings.
    pub embedding_scale: EmbeddingScale,
    /// `output.weight`; when [`Need::Optional`] and absent, the LM head is `token_embd`.
    pub output: Need,
    /// `rope_freqs.weight` (Llama 3.1+ frequency factors that divide the RoPE angle).
    pub rope_freqs: Need,
    /// Sliding-window attention: with `Some(p)` and `attention.sliding_window` in the file,
    /// layer `il` attends to the last `sliding_window` positions only when `il % p < p - 1`
    /// (so every `p`-th layer is global); `attention.sliding_window_pattern` overrides `p`.
    pub swa_pattern: Option<usize>,
    /// RoPE base of sliding-window layers when the file has no `rope.freq_base_swa`
    /// (unscaled, unlike the global layers' `rope.freq_base`).
    pub swa_rope_base: f32,
    /// How the attention scale is applied.
    pub attn_scale: AttnScale,
    /// Whether `final_logit_softcapping` (`c * tanh(logits / c)`) is honoured.
    pub final_logit_softcapping: bool,
    /// Mixture-of-experts FFN instead of the dense one.
    pub moe: Option<MoeSpec>,
    /// The attention variant.
    pub attention: AttnKind,
    /// How gate and up are stored.
    pub ffn_layout: FfnLayout,
    /// Role name of the (required) pre-FFN RMSNorm, `blk.N.{ffn_norm}.weight`: `"ffn_norm"`,
    /// except where a converter stores it under another name (seed_oss:
    /// `"post_attention_norm"`, which then is not a norm of the attention output).
    pub ffn_norm: &'static str,
    /// A fused `blk.N.attn_qkv` (q, k and v rows stacked, with an optional fused
    /// `attn_qkv.bias`) accepted in place of `attn_q`/`attn_k`/`attn_v` (glm4).
    pub attn_qkv: Need,
}

/// Llama 1/2/3, Mistral-style dense models, SmolLM2.
pub const LLAMA: ArchSpec = ArchSpec {
    name: "llama",
    rope_style: RopeStyle::Norm,
    attn_q_bias: Need::Optional,
    attn_k_bias: Need::Optional,
    attn_v_bias: Need::Optional,
    attn_output_bias: Need::Optional,
    attn_qk_norm: Need::Absent,
    post_attention_norm: Need::Absent,
    post_ffn_norm: Need::Absent,
    ffn_activation: FfnActivation::Silu,
    embedding_scale: EmbeddingScale::None,
    output: Need::Optional,
    rope_freqs: Need::Optional,
    swa_pattern: None,
    swa_rope_base: 10000.0,
    attn_scale: AttnScale::InvSqrtHeadDim,
    final_logit_softcapping: false,
    moe: None,
    attention: AttnKind::Mha,
    ffn_layout: FfnLayout::Split,
    ffn_norm: "ffn_norm",
    attn_qkv: Need::Absent,
};

/// Qwen2 / Qwen2.5 (and DeepSeek-R1-Distill-Qwen): q/k/v biases, NEOX RoPE.
pub const QWEN2: ArchSpec = ArchSpec {
    name: "qwen2",
    rope_style: RopeStyle::Neox,
    attn_q_bias: Need::Required,
    attn_k_bias: Need::Required,
    attn_v_bias: Need::Required,
    attn_output_bias: Need::Absent,
    output: Need::Optional,
    rope_freqs: Need::Absent,
    ..LLAMA
};

/// Qwen3 dense: per-head q/k RMSNorm before RoPE, NEOX RoPE, no biases.
pub const QWEN3: ArchSpec = ArchSpec {
    name: "qwen3",
    rope_style: RopeStyle::Neox,
    attn_q_bias: Need::Absent,
    attn_k_bias: Need::Absent,
    attn_v_bias: Need::Absent,
    attn_output_bias: Need::Absent,
    attn_qk_norm: Need::Required,
    rope_freqs: Need::Absent,
    ..LLAMA
};

/// Qwen3 mixture-of-experts (Qwen3-30B-A3B, Qwen3-235B-A22B): Qwen3 attention, every FFN a
/// softmax-routed mixture of experts with renormalised top-k weights.
pub const QWEN3MOE: ArchSpec = ArchSpec {
    name: "qwen3moe",
    moe: Some(MoeSpec {
        norm_weights: true,
        deepseek: false,
    }),
    ..QWEN3
};

/// DeepSeek-V2/V3 (`deepseek2`: DeepSeek-V2-Lite, V3, R1, Moonlight, Kimi): multi-head
/// latent attention with adjacent-pair RoPE on the rotary part, leading dense layers, then
/// mixture-of-experts layers with shared experts and DeepSeek routing.
pub const DEEPSEEK2: ArchSpec = ArchSpec {
    name: "deepseek2",
    rope_style: RopeStyle::Norm,
    attn_q_bias: Need::Absent,
    attn_k_bias: Need::Absent,
    attn_v_bias: Need::Absent,
    attn_output_bias: Need::Absent,
    rope_freqs: Need::Absent,
    moe: Some(MoeSpec {
        norm_weights: false,
        deepseek: true,
    }),
    attention: AttnKind::Mla,
    ..LLAMA
};

/// Gemma 3 (text): embeddings scaled by `sqrt(n_embd)`, q/k norms, post-attention and
/// post-FFN norms, GeGLU, NEOX RoPE with a separate base for the sliding-window layers,
/// five sliding-window layers per global one, the query pre-scaled, tied embeddings.
pub const GEMMA3: ArchSpec = ArchSpec {
    name: "gemma3",
    rope_style: RopeStyle::Neox,
    attn_q_bias: Need::Absent,
    attn_k_bias: Need::Absent,
    attn_v_bias: Need::Absent,
    attn_output_bias: Need::Absent,
    attn_qk_norm: Need::Required,
    post_attention_norm: Need::Required,
    post_ffn_norm: Need::Required,
    ffn_activation: FfnActivation::GeluTanh,
    embedding_scale: EmbeddingScale::SqrtNEmbd,
    output: Need::Optional,
    rope_freqs: Need::Absent,
    swa_pattern: Some(6),
    swa_rope_base: 10000.0,
    attn_scale: AttnScale::Gemma3Query,
    final_logit_softcapping: true,
    ..LLAMA
};

/// Zhipu GLM-4 (GLM-4-0414, GLM-Z1): q/k/v biases (optional, as for the reference),
/// partial rotary (`rope.dimension_count` below the head dimension) with adjacent-pair RoPE,
/// RMSNorm of both sub-block outputs, gate and up fused in `ffn_up`, q/k/v optionally fused.
pub const GLM4: ArchSpec = ArchSpec {
    name: "glm4",
    rope_style: RopeStyle::Norm,
    attn_q_bias: Need::Optional,
    attn_k_bias: Need::Optional,
    attn_v_bias: Need::Optional,
    attn_output_bias: Need::Absent,
    post_attention_norm: Need::Required,
    post_ffn_norm: Need::Required,
    rope_freqs: Need::Absent,
    ffn_layout: FfnLayout::FusedGateUp,
    attn_qkv: Need::Optional,
    ..LLAMA
};

/// Baidu ERNIE 4.5 dense: llama-shaped, adjacent-pair RoPE, usually tied embeddings. An
/// `attn_output.bias` in the file is ignored, as the reference's graph ignores it.
pub const ERNIE4_5: ArchSpec = ArchSpec {
    name: "ernie4_5",
    rope_style: RopeStyle::Norm,
    attn_q_bias: Need::Absent,
    attn_k_bias: Need::Absent,
    attn_v_bias: Need::Absent,
    attn_output_bias: Need::Absent,
    rope_freqs: Need::Absent,
    ..LLAMA
};

/// Huawei openPangu-Embedded: q/k/v and attention output biases.
pub const PANGU_EMBEDDED: ArchSpec = ArchSpec {
    name: "pangu-embedded",
    rope_style: RopeStyle::Neox,
    attn_q_bias: Need::Required,
    attn_k_bias: Need::Required,
    attn_v_bias: Need::Required,
    attn_output_bias: Need::Required,
    rope_freqs: Need::Absent,
    ..LLAMA
};

/// ByteDance Seed-OSS: q/k/v biases (optional, as for the reference, which never reads an
/// output bias); the pre-FFN norm is stored as `post_attention_norm`.
pub const SEED_OSS: ArchSpec = ArchSpec {
    name: "seed_oss",
    rope_style: RopeStyle::Neox,
    attn_q_bias: Need::Optional,
    attn_k_bias: Need::Optional,
    attn_v_bias: Need::Optional,
    attn_output_bias: Need::Absent,
    rope_freqs: Need::Absent,
    ffn_norm: "post_attention_norm",
    ..LLAMA
};

/// Every architecture the forward pass runs.
pub const ARCHITECTURES: &[&ArchSpec] = &[
    &LLAMA,
    &QWEN2,
    &QWEN3,
    &QWEN3MOE,
    &GEMMA3,
    &GLM4,
    &ERNIE4_5,
    &PANGU_EMBEDDED,
    &SEED_OSS,
    &DEEPSEEK2,
];

/// The description of architecture `name`, if supported.
pub fn lookup(name: &str) -> Option<&'static ArchSpec> {
    ARCHITECTURES.iter().copied().find(|a| a.name == name)
}

/// The supported architecture names, comma-separated (for error messages).
pub fn supported_names() -> String {
    ARCHITECTURES
        .iter()
        .map(|a| a.name)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_finds_every_listed_architecture_by_name() {
        for a in ARCHITECTURES {
            assert_eq!(lookup(a.name).map(|s| s.name), Some(a.name));
        }
        assert!(lookup("gpt-neox-but-not-really").is_none());
    }

    #[test]
    fn llama_pairs_adjacent_dims_and_qwen_families_pair_halves() {
        assert_eq!(LLAMA.rope_style, RopeStyle::Norm);
        assert_eq!(QWEN2.rope_style, RopeStyle::Neox);
        assert_eq!(QWEN3.rope_style, RopeStyle::Neox);
    }

    #[test]
    fn qwen2_requires_qkv_biases_and_qwen3_requires_qk_norms() {
        assert_eq!(QWEN2.attn_q_bias, Need::Required);
        assert_eq!(QWEN2.attn_v_bias, Need::Required);
        assert_eq!(QWEN3.attn_qk_norm, Need::Required);
        assert_eq!(LLAMA.attn_qk_norm, Need::Absent);
    }

    #[test]
    fn glm4_and_ernie4_5_pair_adjacent_dims_and_pangu_and_seed_oss_pair_halves() {
        assert_eq!(GLM4.rope_style, RopeStyle::Norm);
        assert_eq!(ERNIE4_5.rope_style, RopeStyle::Norm);
        assert_eq!(PANGU_EMBEDDED.rope_style, RopeStyle::Neox);
        assert_eq!(SEED_OSS.rope_style, RopeStyle::Neox);
    }

    #[test]
    fn only_glm4_fuses_gate_and_up_and_only_seed_oss_renames_the_ffn_norm() {
        for a in ARCHITECTURES {
            let fused = a.name == "glm4";
            assert_eq!(a.ffn_layout == FfnLayout::FusedGateUp, fused, "{}", a.name);
            let renamed = a.name == "seed_oss";
            assert_eq!(a.ffn_norm != "ffn_norm", renamed, "{}", a.name);
        }
        // Seed-OSS's `post_attention_norm` is its pre-FFN norm, never an output norm.
        assert_eq!(SEED_OSS.ffn_norm, "post_attention_norm");
        assert_eq!(SEED_OSS.post_attention_norm, Need::Absent);
    }

    #[test]
    fn gemma3_has_post_norms_geglu_scaled_embeddings_prescaled_queries_and_a_window_period_of_6() {
        assert_eq!(GEMMA3.rope_style, RopeStyle::Neox);
        assert_eq!(GEMMA3.post_attention_norm, Need::Required);
        assert_eq!(GEMMA3.post_ffn_norm, Need::Required);
        assert_eq!(GEMMA3.ffn_activation, FfnActivation::GeluTanh);
        assert_eq!(GEMMA3.embedding_scale, EmbeddingScale::SqrtNEmbd);
        assert_eq!(GEMMA3.attn_scale, AttnScale::Gemma3Query);
        assert_eq!(
            (GEMMA3.swa_pattern, GEMMA3.swa_rope_base),
            (Some(6), 10000.0)
        );
        for a in ARCHITECTURES {
            let gemma = a.name == "gemma3";
            assert_eq!(a.final_logit_softcapping, gemma, "{}", a.name);
        }
    }

    #[test]
    fn only_qwen3moe_and_deepseek2_have_experts_and_qwen3moe_renormalises() {
        for a in ARCHITECTURES {
            let moe = a.name == "qwen3moe" || a.name == "deepseek2";
            assert_eq!(a.moe.is_some(), moe, "{}", a.name);
        }
        assert_eq!(
            QWEN3MOE.moe,
            Some(MoeSpec {
                norm_weights: true,
                deepseek: false
            })
        );
        assert_eq!(QWEN3MOE.attn_qk_norm, Need::Required);
        assert_eq!(QWEN3MOE.rope_style, RopeStyle::Neox);
    }

    #[test]
    fn only_deepseek2_uses_latent_attention_and_deepseek_routing() {
        for a in ARCHITECTURES {
            let ds = a.name == "deepseek2";
            assert_eq!(a.attention == AttnKind::Mla, ds, "{}", a.name);
            assert_eq!(a.moe.is_some_and(|m| m.deepseek), ds, "{}", a.name);
        }
        assert_eq!(DEEPSEEK2.rope_style, RopeStyle::Norm);
    }
}
