//! The CLI's output shapes (`logits`, `run --json`, `perplexity --json`, `bench --bandwidth
//! --json`), checked through the binary against the golden data in `fixtures/golden/`.

mod model_common;

use std::path::{Path, PathBuf};
use std::process::Command;

use model_common::*;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_openweight"))
}

fn synthetic(name: &str) -> PathBuf {
    golden().join(format!("synthetic/models/{name}.gguf"))
}

/// Runs the binary and parses the last stdout line as JSON; panics with stderr on failure.
fn run_json(cmd: &mut Command) -> serde_json::Value {
    let out = cmd.output().expect("spawn openweight");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "openweight failed: {stderr}");
    let stdout = String::from_utf8(out.stdout).expect("utf-8 stdout");
    let last = stdout.lines().last().expect("some output");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("not JSON ({e}): {last}"))
}

fn ids_of(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

fn id_list(ids: &[u32]) -> String {
    ids.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Compares the printed positions (top-16 and lse) with the reference: top-1 equal unless a
/// near tie, the reference's top-8 logits within `tol` relative where we printed them.
fn check_positions(what: &str, ours: &[RefPos], reference: &RefPrompt, tol: f64) {
    assert_eq!(
        ours.len(),
        reference.positions.len(),
        "{what}: one position per id"
    );
    for (t, (o, r)) in ours.iter().zip(&reference.positions).enumerate() {
        assert_eq!(o.top.len(), 16, "{what}: top 16 by default");
        if !is_near_tie(r.top[0].1, r.top[1].1) {
            assert_eq!(o.top[0].0, r.top[0].0, "{what}: top-1 at position {t}");
        }
        for &(id, logit) in r.top.iter().take(8) {
            if let Some(&(_, ol)) = o.top.iter().find(|(oid, _)| *oid == id) {
                let err = (ol - logit).abs() / logit.abs().max(1.0);
                assert!(err <= tol, "{what}: position {t} id {id}: {ol} vs {logit}");
            }
        }
        let lse_err = (o.lse - r.lse).abs() / r.lse.abs().max(1.0);
        assert!(
            lse_err <= tol,
            "{what}: position {t} lse {} vs {}",
            o.lse,
            r.lse
        );
    }
}

#[test]
fn logits_with_ids_prints_the_golden_shape_and_values() {
    let refs = read_logits(&golden().join("synthetic/llama-f32.logits.jsonl"));
    let p = &refs[1];
    let v = run_json(
        bin()
            .args(["logits", "-t", "2", "-m"])
            .arg(synthetic("llama-f32"))
            .args(["--ids", &id_list(&p.ids)]),
    );
    assert_eq!(ids_of(&v["ids"]), p.ids, "--ids are used exactly as given");
    check_positions("logits --ids", &parse_positions(&v["positions"]), p, 3e-3);
}

#[test]
fn logits_incremental_matches_the_golden_batch_logits() {
    let refs = read_logits(&golden().join("synthetic/qwen2-f32.logits.jsonl"));
    for (i, p) in refs.iter().enumerate() {
        let v = run_json(
            bin()
                .args(["logits", "--incremental", "-t", "2", "-m"])
                .arg(synthetic("qwen2-f32"))
                .args(["--ids", &id_list(&p.ids)]),
        );
        check_positions(
            &format!("logits --incremental prompt {i}"),
            &parse_positions(&v["positions"]),
            p,
            3e-3,
        );
    }
}

#[test]
fn logits_with_a_text_prompt_tokenizes_it_like_the_reference() {
    let refs = read_logits(&golden().join("synthetic/llama-f32.logits.jsonl"));
    let p = &refs[0];
    let v = run_json(
        bin()
            .args(["logits", "-t", "2", "--top", "4", "-m"])
            .arg(synthetic("llama-f32"))
            .args(["-p", &p.text]),
    );
    assert_eq!(ids_of(&v["ids"]), p.ids);
    let positions = parse_positions(&v["positions"]);
    assert!(
        positions.iter().all(|q| q.top.len() == 4),
        "--top 4 prints 4 per position"
    );
}

#[test]
fn logits_rejects_an_id_outside_the_vocabulary() {
    let out = bin()
        .args(["logits", "-m"])
        .arg(synthetic("llama-f32"))
        .args(["--ids", "1,512"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("512") && stderr.contains("out of range"),
        "unclear error: {stderr}"
    );
}

#[test]
fn run_json_greedy_reproduces_the_golden_continuation() {
    let refs = read_greedy(&golden().join("synthetic/llama-f32.greedy.jsonl"));
    let text = read_logits(&golden().join("synthetic/llama-f32.logits.jsonl"))[0]
        .text
        .clone();
    let g = &refs[0];
    let v = run_json(
        bin()
            .args(["run", "--temp", "0", "--json", "-t", "2", "-n"])
            .arg(g.greedy_ids.len().to_string())
            .arg("-m")
            .arg(synthetic("llama-f32"))
            .args(["-p", &text]),
    );
    assert_eq!(ids_of(&v["prompt_ids"]), g.prompt_ids);
    assert_eq!(ids_of(&v["ids"]), g.greedy_ids);
    assert!(v["text"].is_string());
}

/// `--ignore-eos` keeps sampling past end-of-generation tokens, up to `-n`. Seed 5 makes this
/// random-weight model sample an end-of-generation token after 21 tokens, which ends the run
/// without the flag.
#[test]
fn run_ignore_eos_generates_exactly_n_predict_tokens() {
    let run = |extra: &[&str]| {
        let v = run_json(
            bin()
                .args(["run", "--json", "-t", "1", "-n", "200", "-p", "hello"])
                .args([
                    "--temp", "1.5", "--top-k", "0", "--top-p", "1", "--min-p", "0",
                ])
                .args(["--seed", "5", "-m"])
                .arg(synthetic("llama-f32"))
                .args(extra),
        );
        ids_of(&v["ids"])
    };
    let stopped = run(&[]);
    assert!(
        stopped.len() < 200,
        "without --ignore-eos the run should end early at an end-of-generation token"
    );
    let full = run(&["--ignore-eos"]);
    assert_eq!(full.len(), 200, "--ignore-eos generates all -n tokens");
    assert_eq!(
        &full[..stopped.len()],
        &stopped[..],
        "same sampler, same tokens"
    );
}

#[test]
fn perplexity_json_reports_the_mean_nll_of_every_next_token() {
    let dir = std::env::temp_dir().join(format!("openweight-ppl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("text.txt");
    std::fs::write(
        &file,
        "Once upon a time, in a small village, there lived a cat.\nThe end.",
    )
    .unwrap();
    let v = run_json(
        bin()
            .args(["perplexity", "--json", "-t", "2", "-m"])
            .arg(synthetic("qwen3-f32"))
            .arg("-f")
            .arg(&file),
    );
    let n_tokens = v["n_tokens"].as_u64().unwrap();
    assert_eq!(v["n_scored"].as_u64().unwrap(), n_tokens - 1);
    let mean = v["mean_nll"].as_f64().unwrap();
    assert!((v["ppl"].as_f64().unwrap() - mean.exp()).abs() < 1e-9 * mean.exp());
    // Same number through the library.
    let m = openweight::model::Model::open(synthetic("qwen3-f32")).unwrap();
    let ids = m
        .tokenizer()
        .encode(&std::fs::read_to_string(&file).unwrap(), true, true)
        .unwrap();
    assert_eq!(ids.len() as u64, n_tokens);
    let mut s = session(&m, ids.len());
    let nll = openweight::model::perplexity::token_nlls(&mut s, &ids, |_, _| {}).unwrap();
    let lib_mean = nll.iter().sum::<f64>() / nll.len() as f64;
    assert!((lib_mean - mean).abs() < 1e-9, "{lib_mean} vs {mean}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn logits_incremental_on_a_real_model_matches_the_golden_logits() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/models/smollm2-135m-q4_1.gguf");
    if !path.exists() {
        eprintln!(
            "\n*** SKIPPED: {} is missing; run fixtures/fetch-models.sh ***\n",
            path.display()
        );
        return;
    }
    let refs = read_logits(&golden().join("real/smollm2-135m-q4_1.logits.jsonl"));
    let mut a = Agreement::default();
    for (pi, p) in refs.iter().enumerate() {
        let v = run_json(
            bin()
                .args(["logits", "--incremental", "-t", "2", "-m"])
                .arg(&path)
                .args(["--ids", &id_list(&p.ids)]),
        );
        let ours = parse_positions(&v["positions"]);
        for (t, (o, r)) in ours.iter().zip(&p.positions).enumerate() {
            a.n += 1;
            if is_near_tie(r.top[0].1, r.top[1].1) {
                a.near_ties += 1;
            } else if o.top[0].0 != r.top[0].0 {
                a.top1_misses.push((pi, t));
            }
            // KL over the reference's top 16, from our printed top 16 (ids we did not print
            // have a smaller logit than our 16th; use that as an upper bound of their p).
            let floor = o.top.last().unwrap().1;
            let mut kl = 0.0;
            for &(id, logit) in &r.top {
                let ol = o
                    .top
                    .iter()
                    .find(|(oid, _)| *oid == id)
                    .map_or(floor, |x| x.1);
                let p_ref = (logit - r.lse).exp();
                kl += p_ref * (p_ref / (ol - o.lse).exp()).ln();
            }
            a.kl_sum += kl;
        }
    }
    eprintln!(
        "smollm2 --incremental: {} positions, top-1 rate {:.4}, mean KL {:.2e}",
        a.n,
        a.top1_rate(),
        a.mean_kl()
    );
    assert!(a.top1_rate() >= 0.99);
    assert!(a.mean_kl() <= 2e-2);
}

#[test]
fn bench_bandwidth_json_reports_the_probe_and_decode_traffic() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/models/smollm2-135m-q4_1.gguf");
    if !path.exists() {
        eprintln!(
            "\n*** SKIPPED: {} is missing; run fixtures/fetch-models.sh ***\n",
            path.display()
        );
        return;
    }
    let v = run_json(
        bin()
            .args(["bench", "--bandwidth", "--json", "-p", "0", "-n", "2"])
            .args(["-r", "1", "-t", "2", "-m"])
            .arg(&path),
    );
    for field in ["bandwidth_gbs", "tg_weight_gbs", "tg_bandwidth_fraction"] {
        let x = v[field].as_f64().unwrap_or_else(|| panic!("{field}: {v}"));
        assert!(x.is_finite() && x > 0.0, "{field}: {v}");
    }
    let tg_weight_gbs =
        v["tg_tps"].as_f64().unwrap() * v["decode_bytes_per_token"].as_f64().unwrap() / 1e9;
    assert!((v["tg_weight_gbs"].as_f64().unwrap() - tg_weight_gbs).abs() < 1e-9 * tg_weight_gbs);
}
