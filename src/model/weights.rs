//! Tensor lookup and validation: every tensor the forward pass touches is found by name,
//! its type and shape checked against the [`Config`], and matrices kept as zero-copy
//! references into the memory-mapped file. Small vectors (norms, biases, RoPE factors) are
//! dequantized to f32 once.

use std::sync::Arc;

use openweight_kernels::dispatch;
use openweight_kernels::formats::format;
use openweight_kernels::matmul::{MatRef, WeightLayout};
use openweight_kernels::GgmlType;

use crate::gguf::{GgufFile, TensorInfo};

use super::arch::{AttnKind, FfnLayout, Need};
use super::config::{Config, MlaConfig};
use super::error::ModelError;
use super::interleaved::InterleavedBytes;

/// A validated 2-D weight matrix in the file: `rows` rows of `cols` elements of `ty`.
#[derive(Clone, Debug)]
pub struct Matrix {
    /// The file's descriptor (name, offset, size).
    pub info: TensorInfo,
    /// Element type (one the kernels can compute with).
    pub ty: GgmlType,
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    /// The rows rearranged at load time into the interleaved layout of
    /// `openweight_kernels::interleave`, when this CPU's kernels read it (see
    /// [`super::interleaved`]); `None` computes from the file's bytes.
    pub interleaved: Option<Arc<InterleavedBytes>>,
}

impl Matrix {
    /// A [`MatRef`] for the matmul: the interleaved copy when there is one, else a view into
    /// `file`'s mapping (the file the matrix was validated against).
    pub fn mat<'a>(&'a self, file: &'a GgufFile) -> MatRef<'a> {
        match &self.interleaved {
            Some(bytes) => MatRef {
                ty: self.ty,
                data: bytes.bytes(),
                rows: self.rows,
                cols: self.cols,
                layout: WeightLayout::Interleaved,
            },
            None => MatRef::new(self.ty, file.tensor_data(&self.info), self.rows, self.cols),
        }
    }

    /// The `n` rows starting at row `start`, as a matrix of their own (a view into the same
    /// tensor data in the file, never an interleaved copy; the name stays the file's).
    /// Panics if the range is not inside `self`.
    pub fn rows(&self, start: usize, n: usize) -> Matrix {
        assert!(start + n <= self.rows, "row range outside the matrix");
        let row_bytes = format(self.ty).row_bytes(self.cols) as u64;
        let mut info = self.info.clone();
        info.offset += start as u64 * row_bytes;
        info.n_bytes = n as u64 * row_bytes;
        info.ne = vec![self.cols as u64, n as u64];
        Matrix {
            info,
            ty: self.ty,
            rows: n,
            cols: self.cols,
            interleaved: None,
        }
    }

    /// Dequantizes row `r` into `out` (`cols` values).
    pub fn dequantize_row(&self, file: &GgufFile, r: usize, out: &mut [f32]) {
        let f = format(self.ty);
        let row_bytes = f.row_bytes(self.cols);
        let data = file.tensor_data(&self.info);
        (f.dequantize)(&data[r * row_bytes..(r + 1) * row_bytes], out);
    }
}

/// The weights of one transformer block. Optional entries are `None` when the architecture
/// or the file lacks them.
#[derive(Clone, Debug)]
pub struct LayerWeights {
    /// Pre-attention RMSNorm weight (`n_embd`).
    pub attn_norm: Vec<f32>,
    /// Query projection (`n_head * head_dim_k` x `n_embd`); `None` with latent attention.
    pub wq: Option<Matrix>,
    /// Key projection (`n_head_kv * head_dim_k` x `n_embd`); `None` with latent attention.
    pub wk: Option<Matrix>,
    /// Value projection (`n_head_kv * head_dim_v` x `n_embd`); `None` with latent
    /// attention.
    pub wv: Option<Matrix>,
    /// Latent-attention projections (architectures with [`AttnKind::Mla`]).
    pub mla: Option<MlaWeights>,
    /// Output projection (`n_embd` x `n_head * head_dim_v`).
    pub wo: Matrix,
    /// Query bias.
    pub bq: Option<Vec<f32>>,
    /// Key bias.
    pub bk: Option<Vec<f32>>,
    /// Value bias.
    pub bv: Option<Vec<f32>>,
    /// Output-projection bias.
    pub bo: Option<Vec<f32>>,
    /// Per-head query RMSNorm weight (`head_dim_k`).
    pub q_norm: Option<Vec<f32>>,
    /// Per-head key RMSNorm weight (`head_dim_k`).
    pub k_norm: Option<Vec<f32>>,
    /// RMSNorm of the attention output before the residual add.
    pub post_attn_norm: Option<Vec<f32>>,
    /// Pre-FFN RMSNorm weight (`n_embd`).
    pub ffn_norm: Vec<f32>,
    /// FFN gate projection (`n_ff` x `n_embd`; with [`FfnLayout::FusedGateUp`] the first
    /// half of `ffn_up`).
    pub w_gate: Matrix,
    /// FFN up projection (`n_ff` x `n_embd`; with [`FfnLayout::FusedGateUp`] the second
    /// half of `ffn_up`).
    pub w_up: Matrix,
    /// FFN down projection (`n_embd` x `n_ff`).
    pub w_down: Matrix,
    /// Mixture-of-experts router (`ffn_gate_inp`, `n_expert` x `n_embd`). When present,
    /// `w_gate`, `w_up` and `w_down` hold every expert's matrix stacked (the 3-D
    /// `ffn_{gate,up,down}_exps`): expert `e` is rows `e * r .. (e + 1) * r` with `r`
    /// the rows of one expert (`n_ff_exp` for gate and up, `n_embd` for down).
    pub ffn_gate_inp: Option<Matrix>,
    /// RMSNorm of the FFN output before the residual add.
    pub post_ffn_norm: Option<Vec<f32>>,
    /// Per-expert bias added to the router probabilities for selection only
    /// (`exp_probs_b.bias`, `n_expert`).
    pub exp_probs_b: Option<Vec<f32>>,
    /// Shared experts (`ffn_{gate,up,down}_shexp`, `n_expert_shared * n_ff_exp` hidden
    /// units), run on every token of an expert layer: gate, up, down.
    pub shexp: Option<[Matrix; 3]>,
}

/// The projections of one latent-attention block (see [`super::mla`]).
#[derive(Clone, Debug)]
pub struct MlaWeights {
    /// Full query projection `attn_q` (`n_head * head_dim_qk` x `n_embd`), when the file
    /// has no low-rank pair.
    pub wq: Option<Matrix>,
    /// Low-rank query down-projection `attn_q_a` (`q_lora_rank` x `n_embd`), its RMSNorm
    /// weight `attn_q_a_norm` and the up-projection `attn_q_b`
    /// (`n_head * head_dim_qk` x `q_lora_rank`).
    pub q_lora: Option<(Matrix, Vec<f32>, Matrix)>,
    /// `attn_kv_a_mqa` (`kv_lora_rank + n_rot` x `n_embd`): the latent, then the rotary key.
    pub wkv_a: Matrix,
    /// RMSNorm weight of the latent (`attn_kv_a_norm`, `kv_lora_rank`).
    pub kv_a_norm: Vec<f32>,
    /// Per-head key up-projections `attn_k_b`, stacked: head `h` is rows
    /// `h * kv_lora_rank ..` of `head_dim_nope` columns (latent from non-rotary query).
    pub wk_b: Matrix,
    /// Per-head value up-projections `attn_v_b`, stacked: head `h` is rows
    /// `h * head_dim_v ..` of `kv_lora_rank` columns.
    pub wv_b: Matrix,
}

/// All weights of a model.
#[derive(Clone, Debug)]
pub struct Weights {
    /// Token embeddings (`n_vocab` rows of `n_embd`).
    pub token_embd: Matrix,
    /// The blocks, in order.
    pub layers: Vec<LayerWeights>,
    /// Final RMSNorm weight (`n_embd`).
    pub output_norm: Vec<f32>,
    /// LM head (`n_vocab` x `n_embd`): `output.weight`, or `token_embd` when tied.
    pub output: Matrix,
    /// `rope_freqs.weight` (`n_rot / 2`), if present.
    pub rope_freqs: Option<Vec<f32>>,
}

/// Looks tensors up by name and validates them.
struct Loader<'a> {
    file: &'a GgufFile,
    arch: &'static str,
}

impl Loader<'_> {
    fn find(&self, name: &str, need: Need) -> Result<Option<&TensorInfo>, ModelError> {
        match need {
            Need::Absent => Ok(None),
            Need::Optional => Ok(self.file.tensor(name)),
            Need::Required => {
                self.file
                    .tensor(name)
                    .map(Some)
                    .ok_or_else(|| ModelError::MissingTensor {
                        arch: self.arch.to_string(),
                        name: name.to_string(),
                    })
            }
        }
    }

    fn type_error(&self, info: &TensorInfo, reason: &str) -> ModelError {
        ModelError::TensorType {
            arch: self.arch.to_string(),
            name: info.name.clone(),
            ty: format!("{} (id {})", info.type_name(), info.type_id),
            reason: reason.to_string(),
        }
    }

    fn check_shape(&self, info: &TensorInfo, expected: &[u64]) -> Result<(), ModelError> {
        if info.ne.as_slice() != expected {
            return Err(ModelError::TensorShape {
                arch: self.arch.to_string(),
                name: info.name.clone(),
                expected: expected.to_vec(),
                found: info.ne.clone(),
            });
        }
        Ok(())
    }

    /// A matrix with `rows` rows of `cols`, usable as a matmul weight (and, when
    /// `needs_rows` is set, also as an embedding table).
    fn matrix_from(
        &self,
        info: &TensorInfo,
        rows: usize,
        cols: usize,
    ) -> Result<Matrix, ModelError> {
        self.check_shape(info, &[cols as u64, rows as u64])?;
        let ty = GgmlType::from_id(info.type_id)
            .ok_or_else(|| self.type_error(info, "openweight has no kernels for this type"))?;
        if dispatch::scalar().dot(ty).is_none() {
            return Err(self.type_error(info, "it is an activation-only format, not a weight type"));
        }
        let f = format(ty);
        let act = format(f.vec_dot_type);
        if !cols.is_multiple_of(f.block_elems) || !cols.is_multiple_of(act.block_elems) {
            return Err(self.type_error(
                info,
                &format!(
                    "rows of {cols} are not a whole number of {ty} / {} blocks",
                    act.ty
                ),
            ));
        }
        if info.n_bytes != (rows * f.row_bytes(cols)) as u64
            || self.file.tensor_data(info).len() != rows * f.row_bytes(cols)
        {
            return Err(self.type_error(info, "its byte size does not match its shape"));
        }
        Ok(Matrix {
            info: info.clone(),
            ty,
            rows,
            cols,
            interleaved: None,
        })
    }

    /// A 3-D tensor of `n_expert` matrices of `rows` x `cols`, as one matrix of
    /// `n_expert * rows` rows (each expert's rows are contiguous).
    fn experts(
        &self,
        name: &str,
        n_expert: usize,
        rows: usize,
        cols: usize,
    ) -> Result<Matrix, ModelError> {
        let info = self.find(name, Need::Required)?.expect("required tensor");
        self.check_shape(info, &[cols as u64, rows as u64, n_expert as u64])?;
        let mut flat = info.clone();
        flat.ne = vec![cols as u64, (n_expert * rows) as u64];
        self.matrix_from(&flat, n_expert * rows, cols)
    }

    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Matrix, ModelError> {
        let info = self.find(name, Need::Required)?.expect("required tensor");
        self.matrix_from(info, rows, cols)
    }

    /// A 1-D tensor of `n` values, dequantized to f32.
    fn vector(&self, name: &str, n: usize, need: Need) -> Result<Option<Vec<f32>>, ModelError> {
        let Some(info) = self.find(name, need)? else {
            return Ok(None);
        };
        self.check_shape(info, &[n as u64])?;
        let ty = GgmlType::from_id(info.type_id)
            .ok_or_else(|| self.type_error(info, "openweight cannot read this type"))?;
        let f = format(ty);
        if !n.is_multiple_of(f.block_elems) || self.file.tensor_data(info).len() != f.row_bytes(n) {
            return Err(self.type_error(info, "its byte size does not match its shape"));
        }
        let mut out = vec![0f32; n];
        (f.dequantize)(self.file.tensor_data(info), &mut out);
        Ok(Some(out))
    }

    fn required_vector(&self, name: &str, n: usize) -> Result<Vec<f32>, ModelError> {
        Ok(self
            .vector(name, n, Need::Required)?
            .expect("required tensor"))
    }
}

impl Weights {
    /// Finds and validates every tensor `config` implies.
    pub fn load(file: &GgufFile, config: &Config) -> Result<Weights, ModelError> {
        let a = config.arch;
        let ld = Loader { file, arch: a.name };
        let (n_embd, n_ff, n_vocab) = (config.n_embd, config.n_ff, config.n_vocab);
        let q_dim = config.n_head * config.head_dim_k;
        let k_dim = config.n_head_kv * config.head_dim_k;
        let v_dim = config.n_head_kv * config.head_dim_v;
        let o_dim = config.n_head * config.mla.map_or(config.head_dim_v, |m| m.head_dim_v);

        let token_embd = ld.matrix("token_embd.weight", n_vocab, n_embd)?;
        // Grown as layers load (not sized up front): a bad block count fails at its first
        // missing tensor before it can size anything.
        let mut layers = Vec::new();
        for i in 0..config.n_layer {
            let n = |role: &str| format!("blk.{i}.{role}");
            let hd = config.head_dim_k;
            let fused_qkv = ld.find(&n("attn_qkv.weight"), a.attn_qkv)?;
            let mla = match (a.attention, &config.mla) {
                (AttnKind::Mla, Some(m)) => Some(load_mla(&ld, config, m, i)?),
                _ => None,
            };
            let (wq, wk, wv, bq, bk, bv) = if mla.is_some() {
                (None, None, None, None, None, None)
            } else if let Some(info) = fused_qkv {
                // One tensor of q, k and v rows stacked in that order (and its bias).
                let qkv = ld.matrix_from(info, q_dim + k_dim + v_dim, n_embd)?;
                let b = ld.vector(&n("attn_qkv.bias"), qkv.rows, Need::Optional)?;
                let part =
                    |start: usize, len: usize| b.as_ref().map(|b| b[start..start + len].to_vec());
                (
                    Some(qkv.rows(0, q_dim)),
                    Some(qkv.rows(q_dim, k_dim)),
                    Some(qkv.rows(q_dim + k_dim, v_dim)),
                    part(0, q_dim),
                    part(q_dim, k_dim),
                    part(q_dim + k_dim, v_dim),
                )
            } else {
                (
                    Some(ld.matrix(&n("attn_q.weight"), q_dim, n_embd)?),
                    Some(ld.matrix(&n("attn_k.weight"), k_dim, n_embd)?),
                    Some(ld.matrix(&n("attn_v.weight"), v_dim, n_embd)?),
                    ld.vector(&n("attn_q.bias"), q_dim, a.attn_q_bias)?,
                    ld.vector(&n("attn_k.bias"), k_dim, a.attn_k_bias)?,
                    ld.vector(&n("attn_v.bias"), v_dim, a.attn_v_bias)?,
                )
            };
            let mut exp_probs_b = None;
            let mut shexp = None;
            let moe_layer = config.moe.filter(|_| config.is_moe_layer(i));
            let (w_gate, w_up, w_down, ffn_gate_inp) = if let Some(moe) = &moe_layer {
                let (ne, nf) = (moe.n_expert, moe.n_ff_exp);
                if a.moe.is_some_and(|m| m.deepseek) {
                    exp_probs_b = ld.vector(&n("exp_probs_b.bias"), ne, Need::Optional)?;
                    if moe.n_expert_shared > 0 {
                        let ns = moe.n_expert_shared * nf;
                        shexp = Some([
                            ld.matrix(&n("ffn_gate_shexp.weight"), ns, n_embd)?,
                            ld.matrix(&n("ffn_up_shexp.weight"), ns, n_embd)?,
                            ld.matrix(&n("ffn_down_shexp.weight"), n_embd, ns)?,
                        ]);
                    }
                }
                (
                    ld.experts(&n("ffn_gate_exps.weight"), ne, nf, n_embd)?,
                    ld.experts(&n("ffn_up_exps.weight"), ne, nf, n_embd)?,
                    ld.experts(&n("ffn_down_exps.weight"), ne, n_embd, nf)?,
                    Some(ld.matrix(&n("ffn_gate_inp.weight"), ne, n_embd)?),
                )
            } else {
                let (w_gate, w_up) = match a.ffn_layout {
                    FfnLayout::Split => (
                        ld.matrix(&n("ffn_gate.weight"), n_ff, n_embd)?,
                        ld.matrix(&n("ffn_up.weight"), n_ff, n_embd)?,
                    ),
                    FfnLayout::FusedGateUp => {
                        let fused = ld.matrix(&n("ffn_up.weight"), 2 * n_ff, n_embd)?;
                        (fused.rows(0, n_ff), fused.rows(n_ff, n_ff))
                    }
                };
                let w_down = ld.matrix(&n("ffn_down.weight"), n_embd, n_ff)?;
                (w_gate, w_up, w_down, None)
            };
            layers.push(LayerWeights {
                attn_norm: ld.required_vector(&n("attn_norm.weight"), n_embd)?,
                wq,
                wk,
                wv,
                mla,
                wo: ld.matrix(&n("attn_output.weight"), n_embd, o_dim)?,
                bq,
                bk,
                bv,
                bo: ld.vector(&n("attn_output.bias"), n_embd, a.attn_output_bias)?,
                q_norm: ld.vector(&n("attn_q_norm.weight"), hd, a.attn_qk_norm)?,
                k_norm: ld.vector(&n("attn_k_norm.weight"), hd, a.attn_qk_norm)?,
                post_attn_norm: ld.vector(
                    &n("post_attention_norm.weight"),
                    n_embd,
                    a.post_attention_norm,
                )?,
                ffn_norm: ld.required_vector(&n(&format!("{}.weight", a.ffn_norm)), n_embd)?,
                w_gate,
                w_up,
                w_down,
                ffn_gate_inp,
                post_ffn_norm: ld.vector(&n("post_ffw_norm.weight"), n_embd, a.post_ffn_norm)?,
                exp_probs_b,
                shexp,
            });
            // q and k norms come as a pair.
            let l = layers.last().expect("just pushed");
            if l.q_norm.is_some() != l.k_norm.is_some() {
                return Err(ModelError::MissingTensor {
                    arch: a.name.to_string(),
                    name: n(if l.q_norm.is_some() {
                        "attn_k_norm.weight"
                    } else {
                        "attn_q_norm.weight"
                    }),
                });
            }
        }
        let output_norm = ld.required_vector("output_norm.weight", n_embd)?;
        let output = match ld.find("output.weight", a.output)? {
            Some(info) => ld.matrix_from(info, n_vocab, n_embd)?,
            None => token_embd.clone(),
        };
        let rope_freqs = ld.vector("rope_freqs.weight", config.rope.n_rot / 2, a.rope_freqs)?;
        Ok(Weights {
            token_embd,
            layers,
            output_norm,
            output,
            rope_freqs,
        })
    }
}

/// The latent-attention tensors of block `i`: queries from `attn_q_a` -> `attn_q_a_norm`
/// -> `attn_q_b` when the file has `attn_q_a`, else from `attn_q`.
fn load_mla(
    ld: &Loader<'_>,
    config: &Config,
    m: &MlaConfig,
    i: usize,
) -> Result<MlaWeights, ModelError> {
    let n = |role: &str| format!("blk.{i}.{role}");
    let (n_embd, n_head) = (config.n_embd, config.n_head);
    let q_dim = n_head * m.head_dim_qk;
    let (wq, q_lora) = if ld.file.tensor(&n("attn_q_a.weight")).is_some() {
        if m.q_lora_rank == 0 {
            return Err(ModelError::MissingKey {
                arch: ld.arch.to_string(),
                key: format!("{}.attention.q_lora_rank", ld.arch),
            });
        }
        let r = m.q_lora_rank;
        let qa = ld.matrix(&n("attn_q_a.weight"), r, n_embd)?;
        let norm = ld.required_vector(&n("attn_q_a_norm.weight"), r)?;
        let qb = ld.matrix(&n("attn_q_b.weight"), q_dim, r)?;
        (None, Some((qa, norm, qb)))
    } else {
        (Some(ld.matrix(&n("attn_q.weight"), q_dim, n_embd)?), None)
    };
    Ok(MlaWeights {
        wq,
        q_lora,
        wkv_a: ld.matrix(&n("attn_kv_a_mqa.weight"), m.cache_dim(), n_embd)?,
        kv_a_norm: ld.required_vector(&n("attn_kv_a_norm.weight"), m.kv_lora_rank)?,
        wk_b: ld.experts(
            &n("attn_k_b.weight"),
            n_head,
            m.kv_lora_rank,
            m.head_dim_nope(),
        )?,
        wv_b: ld.experts(&n("attn_v_b.weight"), n_head, m.head_dim_v, m.kv_lora_rank)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::GgufWriter;

    /// A file holding one F32 matrix of `rows` x `cols` where element `(r, c)` is
    /// `100 r + c`.
    fn file_with_matrix(rows: usize, cols: usize) -> GgufFile {
        let bytes: Vec<u8> = (0..rows * cols)
            .flat_map(|i| ((i / cols * 100 + i % cols) as f32).to_le_bytes())
            .collect();
        let mut w = GgufWriter::new();
        w.add_tensor("m", &[cols as u64, rows as u64], 0, bytes)
            .unwrap();
        GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap()
    }

    #[test]
    fn a_row_range_view_reads_exactly_those_rows_of_the_tensor() {
        let (rows, cols) = (6, 32);
        let file = file_with_matrix(rows, cols);
        let ld = Loader {
            file: &file,
            arch: "test",
        };
        let m = ld.matrix("m", rows, cols).unwrap();
        let upper = m.rows(3, 3);
        assert_eq!((upper.rows, upper.cols), (3, cols));
        assert_eq!(upper.mat(&file).data, &m.mat(&file).data[3 * cols * 4..]);
        let mut row = vec![0f32; cols];
        upper.dequantize_row(&file, 1, &mut row);
        assert_eq!(row[0], 400.0);
        assert_eq!(row[cols - 1], 400.0 + (cols - 1) as f32);
        let lower = m.rows(0, 3);
        lower.dequantize_row(&file, 2, &mut row);
        assert_eq!(row[5], 205.0);
    }

    #[test]
    #[should_panic(expected = "row range outside the matrix")]
    fn a_row_range_past_the_end_is_a_bug() {
        let file = file_with_matrix(2, 32);
        let ld = Loader {
            file: &file,
            arch: "test",
        };
        ld.matrix("m", 2, 32).unwrap().rows(1, 2);
    }
}
