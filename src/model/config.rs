//! Hyperparameters read from GGUF metadata (`{arch}.*` keys) and checked for consistency.

use crate::gguf::{Array, GgufFile, Value};

use super::arch::{self, ArchSpec, AttnKind, AttnScale};
use super::attention::MAX_HEAD_DIM;
use super::error::ModelError;
use super::rope::{Rope, Yarn};

/// The hyperparameters of a model, as the forward pass uses them.
#[derive(Clone, Debug)]
pub struct Config {
    /// The architecture description.
    pub arch: &'static ArchSpec,
    /// Vocabulary size (rows of `token_embd`).
    pub n_vocab: usize,
    /// Width of the residual stream (`embedding_length`).
    pub n_embd: usize,
    /// Number of transformer blocks run (`block_count` minus `nextn_predict_layers`).
    pub n_layer: usize,
    /// Hidden width of the feed-forward block (`feed_forward_length`).
    pub n_ff: usize,
    /// Query heads (`attention.head_count`).
    pub n_head: usize,
    /// Key/value heads (`attention.head_count_kv`, default `n_head`).
    pub n_head_kv: usize,
    /// Dimension of a query/key head (`attention.key_length`, default `n_embd / n_head`).
    pub head_dim_k: usize,
    /// Dimension of a value head (`attention.value_length`, default `head_dim_k`).
    pub head_dim_v: usize,
    /// RMSNorm epsilon (`attention.layer_norm_rms_epsilon`).
    pub rms_eps: f32,
    /// Context length the model was trained with (`context_length`).
    pub n_ctx_train: usize,
    /// RoPE parameters (frequency factors are filled in from `rope_freqs.weight` at load).
    pub rope: Rope,
    /// Attention window of the sliding-window layers (`attention.sliding_window`).
    pub sliding_window: Option<usize>,
    /// Per layer: whether it is a sliding-window layer.
    pub swa_layers: Vec<bool>,
    /// RoPE of the sliding-window layers (`rope.freq_base_swa`, unscaled).
    pub rope_swa: Rope,
    /// Factor applied to q before attention, if the architecture pre-scales queries.
    pub query_scale: Option<f32>,
    /// Factor on `q·k` in the softmax.
    pub kq_scale: f32,
    /// `final_logit_softcapping`: logits become `c * tanh(logits / c)`.
    pub final_logit_softcap: Option<f32>,
    /// Mixture-of-experts hyperparameters, for architectures with expert FFNs.
    pub moe: Option<MoeConfig>,
    /// Multi-head latent attention hyperparameters, for [`AttnKind::Mla`] architectures.
    pub mla: Option<MlaConfig>,
}

/// Hyperparameters of multi-head latent attention (DeepSeek-V2/V3) as the current converter
/// stores it: per head, a query of `head_dim_qk` values (`head_dim_qk - n_rot` non-rotary
/// then `n_rot` rotary), a shared compressed latent of `kv_lora_rank` values plus a shared
/// rotary key of `n_rot` values per token, and `head_dim_v` output values per head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MlaConfig {
    /// Rank of the low-rank query projection (`attention.q_lora_rank`); 0 when queries come
    /// from a full `attn_q`.
    pub q_lora_rank: usize,
    /// Width of the compressed KV latent (`attention.kv_lora_rank`).
    pub kv_lora_rank: usize,
    /// Query/key head dimension before absorption (`attention.key_length_mla`).
    pub head_dim_qk: usize,
    /// Value head dimension after the `attn_v_b` up-projection
    /// (`attention.value_length_mla`).
    pub head_dim_v: usize,
    /// Rotary dimensions per head (`rope.dimension_count`).
    pub n_rot: usize,
}

impl MlaConfig {
    /// Non-rotary query dimensions per head (the part absorbed through `attn_k_b`).
    pub fn head_dim_nope(&self) -> usize {
        self.head_dim_qk - self.n_rot
    }

    /// Values cached per token and layer: the latent plus the rotary key.
    pub fn cache_dim(&self) -> usize {
        self.kv_lora_rank + self.n_rot
    }
}

/// How the router turns its logits into expert probabilities (`expert_gating_func`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gating {
    /// Softmax over all experts (value 1, and the default).
    Softmax,
    /// Independent sigmoid per expert (value 2; DeepSeek-V3).
    Sigmoid,
}

/// Hyperparameters of a mixture-of-experts FFN.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MoeConfig {
    /// Experts per layer (`expert_count`).
    pub n_expert: usize,
    /// Experts used per token (`expert_used_count`).
    pub n_expert_used: usize,
    /// Hidden width of one expert (`expert_feed_forward_length`, default
    /// `feed_forward_length / expert_used_count`).
    pub n_ff_exp: usize,
    /// Whether the selected experts' weights are renormalised to sum to 1
    /// (`expert_weights_norm`, default from the architecture).
    pub norm_weights: bool,
    /// Router probability function.
    pub gating: Gating,
    /// Factor on the selected experts' weights after any renormalisation
    /// (`expert_weights_scale`; `None` when the architecture does not scale).
    pub weights_scale: Option<f32>,
    /// Shared experts run on every token beside the routed ones (`expert_shared_count`),
    /// stored as one FFN of `n_expert_shared * n_ff_exp` hidden units (`ffn_*_shexp`).
    pub n_expert_shared: usize,
    /// The first `n_dense_lead` layers have a dense FFN (`leading_dense_block_count`).
    pub n_dense_lead: usize,
}

impl Config {
    /// Whether layer `il` has a mixture-of-experts FFN.
    pub fn is_moe_layer(&self, il: usize) -> bool {
        self.moe.is_some_and(|m| il >= m.n_dense_lead)
    }

    /// Values the KV cache stores per token over all layers: the latent plus the rotary key
    /// for latent attention, else one key and one value row per KV head.
    pub fn kv_values_per_token(&self) -> usize {
        let per_layer = match &self.mla {
            Some(m) => m.cache_dim(),
            None => self.n_head_kv * (self.head_dim_k + self.head_dim_v),
        };
        self.n_layer * per_layer
    }
}

impl Config {
    /// The attention window of layer `il`, if it is a sliding-window layer.
    pub fn layer_window(&self, il: usize) -> Option<usize> {
        self.sliding_window.filter(|_| self.swa_layers[il])
    }

    /// The RoPE of layer `il`.
    pub fn layer_rope(&self, il: usize) -> &Rope {
        if self.swa_layers[il] {
            &self.rope_swa
        } else {
            &self.rope
        }
    }
}

/// Typed access to `{arch}.` metadata keys with errors that name the key.
struct Meta<'a> {
    file: &'a GgufFile,
    arch: &'a str,
}

impl Meta<'_> {
    fn key(&self, suffix: &str) -> String {
        format!("{}.{}", self.arch, suffix)
    }

    fn bad(&self, suffix: &str, reason: impl Into<String>) -> ModelError {
        ModelError::BadHyperparameter {
            arch: self.arch.to_string(),
            key: self.key(suffix),
            reason: reason.into(),
        }
    }

    fn u32_opt(&self, suffix: &str) -> Result<Option<u32>, ModelError> {
        match self.file.get(&self.key(suffix)) {
            None => Ok(None),
            Some(v) => match v.as_u64().and_then(|x| u32::try_from(x).ok()) {
                Some(x) => Ok(Some(x)),
                None => Err(self.bad(
                    suffix,
                    format!("expected an unsigned integer, found {}", v.type_name()),
                )),
            },
        }
    }

    fn u32(&self, suffix: &str) -> Result<u32, ModelError> {
        self.u32_opt(suffix)?.ok_or_else(|| ModelError::MissingKey {
            arch: self.arch.to_string(),
            key: self.key(suffix),
        })
    }

    fn f32_opt(&self, suffix: &str) -> Result<Option<f32>, ModelError> {
        match self.file.get(&self.key(suffix)) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(x) => Ok(Some(x as f32)),
                None => Err(self.bad(suffix, format!("expected a float, found {}", v.type_name()))),
            },
        }
    }

    fn bool_opt(&self, suffix: &str) -> Result<Option<bool>, ModelError> {
        match self.file.get(&self.key(suffix)) {
            None => Ok(None),
            Some(v) => match v.as_bool() {
                Some(b) => Ok(Some(b)),
                None => Err(self.bad(
                    suffix,
                    format!("expected a boolean, found {}", v.type_name()),
                )),
            },
        }
    }

    fn str_opt(&self, suffix: &str) -> Result<Option<&str>, ModelError> {
        match self.file.get(&self.key(suffix)) {
            None => Ok(None),
            Some(v) => match v.as_str() {
                Some(s) => Ok(Some(s)),
                None => Err(self.bad(
                    suffix,
                    format!("expected a string, found {}", v.type_name()),
                )),
            },
        }
    }

    /// A required positive count.
    fn count(&self, suffix: &str) -> Result<usize, ModelError> {
        let v = self.u32(suffix)?;
        if v == 0 {
            return Err(self.bad(suffix, "must be positive"));
        }
        Ok(v as usize)
    }

    /// An optional positive count with a default.
    fn count_or(&self, suffix: &str, default: usize) -> Result<usize, ModelError> {
        match self.u32_opt(suffix)? {
            None => Ok(default),
            Some(0) => Err(self.bad(suffix, "must be positive")),
            Some(v) => Ok(v as usize),
        }
    }
}

impl Config {
    /// Reads and checks the hyperparameters of `file`. `n_vocab` comes from the embedding
    /// tensor, which is authoritative (`vocab_size` is optional in GGUF).
    pub fn from_gguf(file: &GgufFile, n_vocab: usize) -> Result<Config, ModelError> {
        let arch_name = file.architecture().unwrap_or("");
        let arch = arch::lookup(arch_name).ok_or_else(|| ModelError::UnsupportedArchitecture {
            arch: arch_name.to_string(),
            supported: arch::supported_names(),
        })?;
        let m = Meta {
            file,
            arch: arch.name,
        };

        let n_embd = m.count("embedding_length")?;
        // Multi-token-prediction blocks (`nextn_predict_layers`, GLM-4.5 style) are stored
        // after the decoder blocks; plain decoding does not run them.
        let n_block = m.count("block_count")?;
        // Every block has tensors of its own, so a file cannot hold more blocks than tensors.
        // Checked here, before anything is sized by the block count.
        let n_tensors = file.tensors().len();
        if n_block > n_tensors {
            return Err(m.bad(
                "block_count",
                format!("{n_block} blocks, but the file holds only {n_tensors} tensors"),
            ));
        }
        let n_nextn = m.u32_opt("nextn_predict_layers")?.unwrap_or(0) as usize;
        if n_nextn >= n_block {
            return Err(m.bad(
                "nextn_predict_layers",
                format!("{n_nextn} leaves none of the {n_block} blocks to decode with"),
            ));
        }
        let n_layer = n_block - n_nextn;
        let n_ff = m.count("feed_forward_length")?;
        let n_head = m.count("attention.head_count")?;
        let n_head_kv = m.count_or("attention.head_count_kv", n_head)?;
        if n_head % n_head_kv != 0 {
            return Err(m.bad(
                "attention.head_count_kv",
                format!("{n_head_kv} does not divide the {n_head} query heads"),
            ));
        }
        let head_dim_k = m.count_or("attention.key_length", n_embd / n_head)?;
        let head_dim_v = m.count_or("attention.value_length", head_dim_k)?;
        for (suffix, d) in [
            ("attention.key_length", head_dim_k),
            ("attention.value_length", head_dim_v),
        ] {
            if d == 0 || d > MAX_HEAD_DIM {
                return Err(m.bad(
                    suffix,
                    format!("head dimension {d} is outside 1..={MAX_HEAD_DIM}"),
                ));
            }
        }
        let rms_eps = m
            .f32_opt("attention.layer_norm_rms_epsilon")?
            .ok_or_else(|| ModelError::MissingKey {
                arch: arch.name.to_string(),
                key: m.key("attention.layer_norm_rms_epsilon"),
            })?;
        if !(rms_eps.is_finite() && rms_eps > 0.0) {
            return Err(m.bad(
                "attention.layer_norm_rms_epsilon",
                format!("{rms_eps} is not a positive number"),
            ));
        }
        let n_ctx_train = m.count_or("context_length", 2048)?;
        let (rope, yarn_log_mul, attn_factor) = read_rope(&m, arch, head_dim_k, n_ctx_train)?;
        let (sliding_window, swa_layers) = read_swa(&m, arch, n_layer)?;
        let swa_base = m
            .f32_opt("rope.freq_base_swa")?
            .unwrap_or(arch.swa_rope_base);
        if !(swa_base.is_finite() && swa_base > 1.0) {
            return Err(m.bad(
                "rope.freq_base_swa",
                format!("{swa_base} is not a usable base"),
            ));
        }
        let rope_swa = Rope {
            base: swa_base,
            freq_scale: 1.0,
            yarn: None,
            ..rope.clone()
        };
        let mla = match arch.attention {
            AttnKind::Mha => None,
            AttnKind::Mla => Some(read_mla(&m, n_head_kv, head_dim_k, head_dim_v, rope.n_rot)?),
        };
        let mut rope = rope;
        let (query_scale, kq_scale) = match arch.attn_scale {
            AttnScale::InvSqrtHeadDim if mla.is_some() => {
                // As the reference: YaRN's magnitude correction goes into the attention scale
                // (squared: it stands for a factor on both q and k) and is divided back out
                // of the rotation, which scales cos/sin by `1 + 0.1 ln(factor)` itself.
                let head_dim_qk = mla.as_ref().expect("just checked").head_dim_qk;
                let ln_factor = (1.0 / rope.freq_scale).ln();
                let mscale = attn_factor * (1.0 + yarn_log_mul * ln_factor);
                rope.attn_factor = 1.0 / (1.0 + 0.1 * ln_factor);
                (None, mscale * mscale / (head_dim_qk as f32).sqrt())
            }
            AttnScale::InvSqrtHeadDim => (None, 1.0 / (head_dim_k as f32).sqrt()),
            AttnScale::Gemma3Query => {
                let d = if n_layer == 62 {
                    (n_embd / n_head).max(1) as f32
                } else {
                    head_dim_k as f32
                };
                (Some(1.0 / d.sqrt()), 1.0)
            }
        };
        let final_logit_softcap = if arch.final_logit_softcapping {
            match m.f32_opt("final_logit_softcapping")? {
                Some(c) if c.is_finite() && c > 0.0 => Some(c),
                Some(0.0) => None,
                Some(c) => {
                    return Err(m.bad(
                        "final_logit_softcapping",
                        format!("{c} is not a positive number"),
                    ))
                }
                None => None,
            }
        } else {
            None
        };
        let moe = match arch.moe {
            None => None,
            Some(spec) => {
                if spec.deepseek {
                    // Group-limited routing (DeepSeek-V3's expert groups) is not implemented.
                    for key in ["expert_group_count", "expert_group_used_count"] {
                        if let Some(g) = m.u32_opt(key)? {
                            if g > 1 {
                                return Err(
                                    m.bad(key, format!("{g}: expert groups are not supported"))
                                );
                            }
                        }
                    }
                }
                let n_expert = m.count("expert_count")?;
                let n_expert_used = m.count("expert_used_count")?;
                if n_expert_used > n_expert {
                    return Err(m.bad(
                        "expert_used_count",
                        format!("{n_expert_used} is more than the {n_expert} experts"),
                    ));
                }
                let n_ff_exp = m.count_or("expert_feed_forward_length", n_ff / n_expert_used)?;
                if n_ff_exp == 0 {
                    return Err(m.bad("expert_feed_forward_length", "must be positive"));
                }
                let norm_weights = m
                    .bool_opt("expert_weights_norm")?
                    .unwrap_or(spec.norm_weights);
                let (gating, weights_scale, n_expert_shared, n_dense_lead) = if spec.deepseek {
                    let gating = match m.u32_opt("expert_gating_func")? {
                        None | Some(0) | Some(1) => Gating::Softmax,
                        Some(2) => Gating::Sigmoid,
                        Some(v) => {
                            return Err(m.bad(
                                "expert_gating_func",
                                format!("{v} is neither 1 (softmax) nor 2 (sigmoid)"),
                            ))
                        }
                    };
                    let scale = m.f32_opt("expert_weights_scale")?.ok_or_else(|| {
                        ModelError::MissingKey {
                            arch: arch.name.to_string(),
                            key: m.key("expert_weights_scale"),
                        }
                    })?;
                    if !scale.is_finite() {
                        return Err(m.bad("expert_weights_scale", format!("{scale} is not finite")));
                    }
                    let shared = m.u32_opt("expert_shared_count")?.unwrap_or(0) as usize;
                    let dense = m.u32_opt("leading_dense_block_count")?.unwrap_or(0) as usize;
                    if dense > n_layer {
                        return Err(m.bad(
                            "leading_dense_block_count",
                            format!("{dense} is more than the {n_layer} layers"),
                        ));
                    }
                    (gating, Some(scale), shared, dense)
                } else {
                    (Gating::Softmax, None, 0, 0)
                };
                Some(MoeConfig {
                    n_expert,
                    n_expert_used,
                    n_ff_exp,
                    norm_weights,
                    gating,
                    weights_scale,
                    n_expert_shared,
                    n_dense_lead,
                })
            }
        };
        Ok(Config {
            arch,
            n_vocab,
            n_embd,
            n_layer,
            n_ff,
            n_head,
            n_head_kv,
            head_dim_k,
            head_dim_v,
            rms_eps,
            n_ctx_train,
            rope,
            sliding_window,
            swa_layers,
            rope_swa,
            query_scale,
            kq_scale,
            final_logit_softcap,
            moe,
            mla,
        })
    }
}

/// The sliding window and which layers use it (guide §5.5): none unless the architecture
/// has a pattern and the file a positive `attention.sliding_window`. The pattern is the
/// architecture's period `p` (layer `il` slides when `il % p < p - 1`), or the file's
/// `attention.sliding_window_pattern`: a period, or one boolean per layer.
fn read_swa(
    m: &Meta<'_>,
    arch: &ArchSpec,
    n_layer: usize,
) -> Result<(Option<usize>, Vec<bool>), ModelError> {
    let none = (None, vec![false; n_layer]);
    let Some(default_period) = arch.swa_pattern else {
        return Ok(none);
    };
    let window = match m.u32_opt("attention.sliding_window")? {
        None | Some(0) => return Ok(none),
        Some(w) => w as usize,
    };
    let key = "attention.sliding_window_pattern";
    let periodic = |p: usize| (0..n_layer).map(|il| il % p < p - 1).collect::<Vec<_>>();
    let layers = match m.file.get(&m.key(key)) {
        None => periodic(default_period),
        Some(Value::Array(Array::Bool(flags))) if flags.len() == n_layer => flags.clone(),
        Some(v) => match v.as_u64() {
            Some(p) if p > 0 && p <= n_layer as u64 + 1 => periodic(p as usize),
            _ => {
                return Err(m.bad(
                    key,
                    format!(
                        "expected a period in 1..={} or {n_layer} booleans, found {}",
                        n_layer + 1,
                        v.type_name()
                    ),
                ))
            }
        },
    };
    Ok((Some(window), layers))
}

/// Latent-attention hyperparameters, checked against the MQA view of the cache the file
/// describes (`head_count_kv` 1, `key_length` = latent + rotary, `value_length` = latent).
fn read_mla(
    m: &Meta<'_>,
    n_head_kv: usize,
    head_dim_k: usize,
    head_dim_v: usize,
    n_rot: usize,
) -> Result<MlaConfig, ModelError> {
    let q_lora_rank = m.u32_opt("attention.q_lora_rank")?.unwrap_or(0) as usize;
    let kv_lora_rank = m.count("attention.kv_lora_rank")?;
    // Files without these keys store `attn_kv_b` for the non-absorbed form, which is not
    // implemented: the error names the missing key.
    let head_dim_qk = m.count("attention.key_length_mla")?;
    let head_dim_v_mla = m.count("attention.value_length_mla")?;
    if n_head_kv != 1 {
        return Err(m.bad(
            "attention.head_count_kv",
            format!("{n_head_kv}: latent attention shares one latent over all heads (1)"),
        ));
    }
    if head_dim_k != kv_lora_rank + n_rot {
        return Err(m.bad(
            "attention.key_length",
            format!("{head_dim_k} is not kv_lora_rank {kv_lora_rank} + rotary dims {n_rot}"),
        ));
    }
    if head_dim_v != kv_lora_rank {
        return Err(m.bad(
            "attention.value_length",
            format!("{head_dim_v} is not kv_lora_rank {kv_lora_rank}"),
        ));
    }
    if head_dim_qk <= n_rot {
        return Err(m.bad(
            "attention.key_length_mla",
            format!("{head_dim_qk} leaves no non-rotary dims beside the {n_rot} rotary ones"),
        ));
    }
    Ok(MlaConfig {
        q_lora_rank,
        kv_lora_rank,
        head_dim_qk,
        head_dim_v: head_dim_v_mla,
        n_rot,
    })
}

/// RoPE dimension count, base and scaling (guide §5.3), with the YaRN log multiplier and
/// attention factor that latent-attention architectures fold into the attention scale.
fn read_rope(
    m: &Meta<'_>,
    arch: &ArchSpec,
    head_dim_k: usize,
    n_ctx_train: usize,
) -> Result<(Rope, f32, f32), ModelError> {
    let n_rot = m.count_or("rope.dimension_count", head_dim_k)?;
    if n_rot % 2 != 0 || n_rot > head_dim_k {
        return Err(m.bad(
            "rope.dimension_count",
            format!("{n_rot} must be even and at most the head dimension {head_dim_k}"),
        ));
    }
    let base = m.f32_opt("rope.freq_base")?.unwrap_or(10000.0);
    if !(base.is_finite() && base > 1.0) {
        return Err(m.bad("rope.freq_base", format!("{base} is not a usable base")));
    }
    let unsupported = |suffix: &str, value: String| ModelError::UnsupportedRopeScaling {
        arch: arch.name.to_string(),
        key: m.key(suffix),
        value,
    };
    // Multimodal RoPE (sections of each head rotated by different position components, as
    // GLM-4.1V or Qwen2-VL files describe with this key) is not implemented.
    if let Some(v) = m.file.get(&m.key("rope.dimension_sections")) {
        return Err(unsupported(
            "rope.dimension_sections",
            format!("{} (multimodal RoPE sections)", v.type_name()),
        ));
    }
    let factor = match m.f32_opt("rope.scaling.factor")? {
        Some(f) => f,
        None => m.f32_opt("rope.scale_linear")?.unwrap_or(1.0),
    };
    if !(factor.is_finite() && factor >= 0.0) {
        return Err(m.bad(
            "rope.scaling.factor",
            format!("{factor} is not a usable factor"),
        ));
    }
    let factor = if factor == 0.0 { 1.0 } else { factor };
    // Only latent attention folds these into its attention scale; elsewhere they are
    // rejected rather than ignored.
    let mla = arch.attention == AttnKind::Mla;
    let attn_factor = m.f32_opt("rope.scaling.attn_factor")?.unwrap_or(1.0);
    if attn_factor != 1.0 && !(mla && attn_factor.is_finite() && attn_factor > 0.0) {
        return Err(unsupported(
            "rope.scaling.attn_factor",
            attn_factor.to_string(),
        ));
    }
    let yarn_log_mul = m
        .f32_opt("rope.scaling.yarn_log_multiplier")?
        .unwrap_or(0.0);
    if yarn_log_mul != 0.0 && !(mla && yarn_log_mul.is_finite()) {
        return Err(unsupported(
            "rope.scaling.yarn_log_multiplier",
            yarn_log_mul.to_string(),
        ));
    }
    let kind = m.str_opt("rope.scaling.type")?.unwrap_or("linear");
    let (freq_scale, yarn) = match kind {
        "none" => (1.0, None),
        "linear" => (1.0 / factor, None),
        "yarn" => {
            let n_ctx_orig = m.count_or("rope.scaling.original_context_length", n_ctx_train)?;
            let beta_fast = m.f32_opt("rope.scaling.yarn_beta_fast")?.unwrap_or(32.0);
            let beta_slow = m.f32_opt("rope.scaling.yarn_beta_slow")?.unwrap_or(1.0);
            let yarn = Yarn::new(n_rot, n_ctx_orig as u32, base, beta_fast, beta_slow);
            (1.0 / factor, Some(yarn))
        }
        other => return Err(unsupported("rope.scaling.type", format!("\"{other}\""))),
    };
    let rope = Rope {
        style: arch.rope_style,
        n_rot,
        base,
        freq_scale,
        yarn,
        attn_factor: 1.0,
        freq_factors: None,
    };
    Ok((rope, yarn_log_mul, attn_factor))
}
