//! Shared helpers of the `model_*` golden tests: reading the reference's JSONL files and
//! judging our logits by the golden README's "Tolerances".
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use openweight::gguf::{GgufFile, GgufWriter, TensorInfo, Value};
use openweight::model::{LogitsMode, Model, Session, SessionOptions};
use openweight::tokenizer::Tokenizer;

/// Root of the golden data.
pub fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/golden")
}

/// One position of a reference logits file.
#[derive(Clone, Debug)]
pub struct RefPos {
    /// log-sum-exp of the whole row.
    pub lse: f64,
    /// The top 16 `(id, logit)`, best first.
    pub top: Vec<(u32, f64)>,
}

/// One prompt of a reference logits file.
#[derive(Clone, Debug)]
pub struct RefPrompt {
    /// Prompt text.
    pub text: String,
    /// Token ids.
    pub ids: Vec<u32>,
    /// One entry per id.
    pub positions: Vec<RefPos>,
}

/// One prompt of a reference greedy file.
#[derive(Clone, Debug)]
pub struct RefGreedy {
    /// Prompt ids.
    pub prompt_ids: Vec<u32>,
    /// The reference's greedy continuation.
    pub greedy_ids: Vec<u32>,
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("id array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

/// Parses a `positions` array (also printed by `openweight logits`).
pub fn parse_positions(v: &serde_json::Value) -> Vec<RefPos> {
    v.as_array()
        .expect("positions")
        .iter()
        .map(|p| RefPos {
            lse: p["lse"].as_f64().expect("lse"),
            top: p["top"]
                .as_array()
                .expect("top")
                .iter()
                .map(|e| {
                    (
                        e[0].as_u64().expect("id") as u32,
                        e[1].as_f64().expect("logit"),
                    )
                })
                .collect(),
        })
        .collect()
}

/// Reads `NAME.logits.jsonl`.
pub fn read_logits(path: &Path) -> Vec<RefPrompt> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            RefPrompt {
                text: v["text"].as_str().unwrap_or("").to_string(),
                ids: ids(&v["ids"]),
                positions: parse_positions(&v["positions"]),
            }
        })
        .collect()
}

/// Reads `NAME.greedy.jsonl`.
pub fn read_greedy(path: &Path) -> Vec<RefGreedy> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            RefGreedy {
                prompt_ids: ids(&v["prompt_ids"]),
                greedy_ids: ids(&v["greedy_ids"]),
            }
        })
        .collect()
}

/// Whether `top1 - top2` is a near tie (README: below `2e-2 * max(1, |top1|)`).
pub fn is_near_tie(top1: f64, top2: f64) -> bool {
    top1 - top2 < 2e-2 * top1.abs().max(1.0)
}

/// log-sum-exp of a logit row, in f64.
pub fn lse(row: &[f32]) -> f64 {
    let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    m + row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln()
}

/// Index of the largest logit and the gap to the runner-up.
pub fn top2(row: &[f32]) -> (u32, f64, f64) {
    let mut best = (0usize, f32::NEG_INFINITY);
    let mut second = f32::NEG_INFINITY;
    for (i, &v) in row.iter().enumerate() {
        if v > best.1 {
            second = best.1;
            best = (i, v);
        } else if v > second {
            second = v;
        }
    }
    (best.0 as u32, best.1 as f64, second as f64)
}

/// Accumulated agreement statistics over many positions.
#[derive(Default, Debug, Clone)]
pub struct Agreement {
    /// Positions compared.
    pub n: usize,
    /// Positions that were reference near ties (excluded from the top-1 rate).
    pub near_ties: usize,
    /// Non-tie positions whose top-1 differed, as (prompt, position) pairs.
    pub top1_misses: Vec<(usize, usize)>,
    /// Largest relative error of the reference's top-8 logits.
    pub max_rel_err_top8: f64,
    /// Sum of per-position KL.
    pub kl_sum: f64,
    /// Largest per-position KL.
    pub kl_max: f64,
    /// Largest `|our lse - reference lse|`, relative to `max(1, |reference lse|)`.
    pub max_rel_err_lse: f64,
}

impl Agreement {
    /// Compares one of our logit rows with one reference position.
    pub fn add(&mut self, prompt: usize, pos: usize, ours: &[f32], r: &RefPos) {
        self.n += 1;
        let our_lse = lse(ours);
        self.max_rel_err_lse = self
            .max_rel_err_lse
            .max((our_lse - r.lse).abs() / r.lse.abs().max(1.0));
        let (our_top, _, _) = top2(ours);
        if is_near_tie(r.top[0].1, r.top[1].1) {
            self.near_ties += 1;
        } else if our_top != r.top[0].0 {
            self.top1_misses.push((prompt, pos));
        }
        for &(id, logit) in r.top.iter().take(8) {
            let err = (ours[id as usize] as f64 - logit).abs() / logit.abs().max(1.0);
            self.max_rel_err_top8 = self.max_rel_err_top8.max(err);
        }
        let mut kl = 0.0;
        for &(id, logit) in &r.top {
            let p_ref = (logit - r.lse).exp();
            let p_ours = (ours[id as usize] as f64 - our_lse).exp();
            kl += p_ref * (p_ref / p_ours).ln();
        }
        self.kl_sum += kl;
        self.kl_max = self.kl_max.max(kl);
    }

    /// Mean KL over all positions.
    pub fn mean_kl(&self) -> f64 {
        self.kl_sum / self.n.max(1) as f64
    }

    /// Fraction of non-tie positions whose top-1 agrees.
    pub fn top1_rate(&self) -> f64 {
        let judged = self.n - self.near_ties;
        if judged == 0 {
            return 1.0;
        }
        1.0 - self.top1_misses.len() as f64 / judged as f64
    }
}

/// Tolerance class of a model (README "Tolerances").
#[derive(Clone, Copy, Debug)]
pub enum Class {
    /// F32/F16 dense weights: all top-1 equal (ties aside), top-8 within 3e-3, KL <= 1e-4.
    Dense,
    /// BF16 weights: as Dense with top-8 within 1e-2.
    Bf16,
    /// Quantized synthetic: top-1 >= 98%, KL <= 3e-3.
    Quantized,
    /// Real models: top-1 >= 99%, KL <= 2e-2.
    Real,
}

impl Class {
    /// Panics with a description of the first violated tolerance.
    pub fn check(self, what: &str, a: &Agreement) {
        eprintln!(
            "{what}: {} positions, {} near ties, top-1 rate {:.4} (misses {:?}), max top-8 rel err {:.2e}, mean KL {:.2e}, max KL {:.2e}",
            a.n,
            a.near_ties,
            a.top1_rate(),
            a.top1_misses,
            a.max_rel_err_top8,
            a.mean_kl(),
            a.kl_max
        );
        assert!(a.n > 0, "{what}: nothing compared");
        match self {
            Class::Dense | Class::Bf16 => {
                let tol = if matches!(self, Class::Dense) {
                    3e-3
                } else {
                    1e-2
                };
                assert!(
                    a.top1_misses.is_empty(),
                    "{what}: top-1 differs at {:?}",
                    a.top1_misses
                );
                assert!(
                    a.max_rel_err_top8 <= tol,
                    "{what}: top-8 rel err {:.3e} > {tol}",
                    a.max_rel_err_top8
                );
                assert!(
                    a.mean_kl() <= 1e-4,
                    "{what}: mean KL {:.3e} > 1e-4",
                    a.mean_kl()
                );
            }
            Class::Quantized => {
                assert!(
                    a.top1_rate() >= 0.98,
                    "{what}: top-1 rate {:.4} < 0.98",
                    a.top1_rate()
                );
                assert!(
                    a.mean_kl() <= 3e-3,
                    "{what}: mean KL {:.3e} > 3e-3",
                    a.mean_kl()
                );
            }
            Class::Real => {
                assert!(
                    a.top1_rate() >= 0.99,
                    "{what}: top-1 rate {:.4} < 0.99",
                    a.top1_rate()
                );
                assert!(
                    a.mean_kl() <= 2e-2,
                    "{what}: mean KL {:.3e} > 2e-2",
                    a.mean_kl()
                );
            }
        }
    }
}

/// A session big enough for `n` tokens with default options.
pub fn session(model: &Model, n: usize) -> Session<'_> {
    Session::new(
        model,
        SessionOptions {
            n_ctx: n.max(1),
            ..SessionOptions::default()
        },
    )
    .expect("session")
}

/// A session of `n` tokens with an F32 KV cache: batch and decode then compute attention
/// alike (with an F16 cache decode rounds the query to F16 and batches of 64+ tokens do not,
/// as the reference does), so tests that compare the two paths see only f32 rounding.
pub fn f32_kv_session(model: &Model, n: usize) -> Session<'_> {
    Session::new(
        model,
        SessionOptions {
            n_ctx: n.max(1),
            kv_type: openweight::model::KvType::F32,
            ..SessionOptions::default()
        },
    )
    .expect("session")
}

/// Our batch logits for every golden prompt, compared with the reference.
pub fn batch_agreement(model: &Model, prompts: &[RefPrompt]) -> Agreement {
    let n_vocab = model.config().n_vocab;
    let mut a = Agreement::default();
    for (pi, p) in prompts.iter().enumerate() {
        let mut s = session(model, p.ids.len());
        let logits = s.eval(&p.ids, LogitsMode::All).expect("eval");
        for (t, r) in p.positions.iter().enumerate() {
            a.add(pi, t, &logits[t * n_vocab..(t + 1) * n_vocab], r);
        }
    }
    a
}

/// Our logits when the golden prompts are fed one token at a time through the decode path.
pub fn incremental_agreement(model: &Model, prompts: &[RefPrompt]) -> Agreement {
    let mut a = Agreement::default();
    for (pi, p) in prompts.iter().enumerate() {
        let mut s = session(model, p.ids.len());
        for (t, (&id, r)) in p.ids.iter().zip(&p.positions).enumerate() {
            let logits = s.eval(&[id], LogitsMode::Last).expect("eval");
            a.add(pi, t, logits, r);
        }
    }
    a
}

/// Checks our greedy continuation against the reference: identical up to the first
/// divergence, which must fall on one of our own near ties. Returns a line per divergence.
pub fn check_greedy(model: &Model, what: &str, refs: &[RefGreedy]) -> Vec<String> {
    let mut divergences = Vec::new();
    for (pi, g) in refs.iter().enumerate() {
        let mut s = session(model, g.prompt_ids.len() + g.greedy_ids.len() + 1);
        let mut logits = s
            .eval(&g.prompt_ids, LogitsMode::Last)
            .expect("prefill")
            .to_vec();
        for (step, &want) in g.greedy_ids.iter().enumerate() {
            let (ours, t1, t2) = top2(&logits);
            if ours != want {
                let want_logit = logits[want as usize] as f64;
                let msg = format!(
                    "{what} prompt {pi} step {step}: ours {ours} ({t1:.5}) vs reference {want} (our logit {want_logit:.5}), our top1-top2 gap {:.5}",
                    t1 - t2
                );
                eprintln!("greedy divergence: {msg}");
                assert!(
                    is_near_tie(t1, t2),
                    "greedy divergence not at a near tie: {msg}"
                );
                divergences.push(msg);
                break;
            }
            logits = s.eval(&[ours], LogitsMode::Last).expect("decode").to_vec();
        }
    }
    divergences
}

/// What to do with one tensor while copying a model: keep it, drop it, or replace its
/// shape, type and bytes.
pub enum Edit {
    Keep,
    Drop,
    Replace {
        ne: Vec<u64>,
        type_id: u32,
        bytes: Vec<u8>,
    },
}

/// Copies synthetic model `name`, letting `meta` rewrite (or drop, with `None`) each
/// metadata value, `extra` add keys, `tensor` edit each tensor and `extra_f32` add a 1-D F32
/// tensor `(name, values)`; then loads the result.
pub fn load_rewritten(
    name: &str,
    meta: impl Fn(&str, &Value) -> Option<Value>,
    extra: &[(String, Value)],
    tensor: impl Fn(&TensorInfo, &[u8]) -> Edit,
    extra_f32: Option<(&str, &[f32])>,
) -> Result<Model, openweight::Error> {
    let src = GgufFile::open(golden().join(format!("synthetic/models/{name}.gguf"))).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in src.metadata() {
        if k == "general.alignment" {
            continue;
        }
        if let Some(v) = meta(k, v) {
            w.add_metadata(k.clone(), v).unwrap();
        }
    }
    for (k, v) in extra {
        w.add_metadata(k.clone(), v.clone()).unwrap();
    }
    for t in src.tensors() {
        let data = src.tensor_data(t);
        match tensor(t, data) {
            Edit::Keep => w
                .add_tensor(t.name.clone(), &t.ne, t.type_id, data.to_vec())
                .unwrap(),
            Edit::Drop => {}
            Edit::Replace { ne, type_id, bytes } => {
                w.add_tensor(t.name.clone(), &ne, type_id, bytes).unwrap()
            }
        }
    }
    if let Some((name, values)) = extra_f32 {
        let bytes: Vec<u8> = values.iter().flat_map(|f| f.to_le_bytes()).collect();
        w.add_tensor(name, &[values.len() as u64], 0, bytes)
            .unwrap();
    }
    let file = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();
    let tokenizer = Tokenizer::from_gguf(&file).unwrap();
    Model::from_gguf(file, tokenizer)
}

/// [`load_rewritten`] without the tensors `drop` (and no other tensor edit).
pub fn load_edited(
    name: &str,
    drop: &[&str],
    meta: impl Fn(&str, &Value) -> Option<Value>,
    extra: &[(String, Value)],
) -> Result<Model, openweight::Error> {
    let tensor = |t: &TensorInfo, _: &[u8]| {
        if drop.contains(&t.name.as_str()) {
            Edit::Drop
        } else {
            Edit::Keep
        }
    };
    load_rewritten(name, meta, extra, tensor, None)
}

/// The usual edit of [`load_edited`]: synthetic model `name` without metadata key `drop_key`
/// and tensor `drop_tensor` (either may be `""`), with the keys of `set` added or overriding.
pub fn load_with(
    name: &str,
    drop_key: &str,
    drop_tensor: &str,
    set: &[(&str, Value)],
) -> Result<Model, openweight::Error> {
    let extra: Vec<(String, Value)> = set
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    load_edited(
        name,
        &[drop_tensor],
        |k, v| (k != drop_key && !set.iter().any(|(s, _)| *s == k)).then(|| v.clone()),
        &extra,
    )
}

/// Synthetic golden model `name` (from `fixtures/golden/synthetic/models/`), opened.
pub fn synthetic_model(name: &str) -> Model {
    let path = golden().join(format!("synthetic/models/{name}.gguf"));
    Model::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The reference's per-position logits for synthetic model `name`.
pub fn synthetic_prompts(name: &str) -> Vec<RefPrompt> {
    read_logits(&golden().join(format!("synthetic/{name}.logits.jsonl")))
}

/// Greedy continuations, judged as the golden README does for mixture-of-experts models:
/// identical up to the first divergence, which must be one of our near ties or (a routing
/// choice flipping, invisible from the logits) happen in at most a third of the sequences.
pub fn check_moe_greedy(m: &Model, name: &str) {
    let refs = read_greedy(&golden().join(format!("synthetic/{name}.greedy.jsonl")));
    let mut not_at_tie = Vec::new();
    let mut identical = 0;
    for (pi, g) in refs.iter().enumerate() {
        let mut s = session(m, g.prompt_ids.len() + g.greedy_ids.len() + 1);
        let mut logits = s
            .eval(&g.prompt_ids, LogitsMode::Last)
            .expect("prefill")
            .to_vec();
        let mut diverged = false;
        for (step, &want) in g.greedy_ids.iter().enumerate() {
            let (ours, t1, t2) = top2(&logits);
            if ours != want {
                let msg = format!(
                    "{name} prompt {pi} step {step}: ours {ours} vs reference {want}, our top1-top2 gap {:.5} at {t1:.4}",
                    t1 - t2
                );
                eprintln!("greedy divergence: {msg}");
                if !is_near_tie(t1, t2) {
                    not_at_tie.push(msg);
                }
                diverged = true;
                break;
            }
            logits = s.eval(&[ours], LogitsMode::Last).expect("decode").to_vec();
        }
        identical += usize::from(!diverged);
    }
    eprintln!(
        "{name}: {identical} of {} greedy continuations identical",
        refs.len()
    );
    assert!(
        not_at_tie.len() * 3 <= refs.len(),
        "{name}: {} of {} sequences diverge away from a near tie: {not_at_tie:?}",
        not_at_tie.len(),
        refs.len()
    );
}
