//! The `run` sampler flags and statistics, the scriptable `chat` loop, `embed`, the default
//! model path, and clean errors for bad input files; all through the binary.

mod api_common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use api_common::*;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_openweight"))
}

/// Runs the binary, asserting success; returns (stdout, stderr).
fn ok(cmd: &mut Command) -> (String, String) {
    let out = cmd.output().expect("spawn openweight");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "openweight failed: {stderr}");
    (String::from_utf8(out.stdout).expect("utf-8 stdout"), stderr)
}

/// Runs the binary with `input` on stdin.
fn with_stdin(cmd: &mut Command, input: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn openweight");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn last_json(stdout: &str) -> serde_json::Value {
    let last = stdout.lines().last().expect("some output");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("not JSON ({e}): {last}"))
}

#[test]
fn run_with_every_sampler_flag_is_reproducible_by_seed_and_reports_speed() {
    let run = || {
        ok(bin()
            .args([
                "run", "-t", "2", "-n", "12", "--json", "--temp", "0.9", "--top-k", "30",
            ])
            .args([
                "--top-p",
                "0.9",
                "--min-p",
                "0.02",
                "--repeat-penalty",
                "1.1",
                "--seed",
                "5",
            ])
            .arg("-m")
            .arg(synthetic_path("qwen2-q4_k_m"))
            .args(["-p", "hello world"]))
    };
    let (out_a, err_a) = run();
    let (out_b, _) = run();
    let (a, b) = (last_json(&out_a), last_json(&out_b));
    assert_eq!(a["ids"], b["ids"]);
    assert!(!a["ids"].as_array().unwrap().is_empty());
    assert!(
        err_a.contains("tok/s") && err_a.contains("time to first token"),
        "{err_a}"
    );
    assert_eq!(
        err_a.lines().count(),
        2,
        "only the two statistics lines: {err_a}"
    );
}

#[test]
fn run_streams_the_text_it_reports() {
    let (out, _) = ok(bin()
        .args(["run", "-t", "2", "-n", "10", "--json", "--temp", "0"])
        .arg("-m")
        .arg(synthetic_path("llama-q4_0"))
        .args(["-p", "once upon"]));
    let v = last_json(&out);
    let streamed = &out[..out.len() - out.lines().last().unwrap().len() - 1];
    assert_eq!(
        streamed.strip_suffix('\n').unwrap(),
        v["text"].as_str().unwrap()
    );
}

#[test]
fn without_a_model_flag_or_default_model_the_error_says_how_to_fetch_it() {
    let dir = std::env::temp_dir().join(format!("openweight-nomodel-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = bin()
        .current_dir(&dir)
        .args(["run", "-p", "hi"])
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("fixtures/fetch-models.sh"), "{stderr}");
}

#[test]
fn a_prompt_file_that_is_not_utf8_is_a_clean_error() {
    let path = std::env::temp_dir().join(format!("openweight-bad-{}.txt", std::process::id()));
    std::fs::write(&path, b"ok \xff\xfe bad").unwrap();
    for sub in ["run", "embed"] {
        let out = bin()
            .args([sub, "-m"])
            .arg(synthetic_path("llama-f32"))
            .arg("-f")
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{sub}: {stderr}");
        assert!(
            stderr.contains("not UTF-8") && stderr.contains("offset 3"),
            "{sub}: {stderr}"
        );
    }
    std::fs::remove_file(&path).ok();
}

#[test]
fn chat_reads_turns_from_stdin_and_handles_reset_and_exit() {
    let out = with_stdin(
        bin()
            .args(["chat", "-t", "2", "-n", "6", "--temp", "0", "-m"])
            .arg(synthetic_path("qwen2-q4_k_m")),
        "Hello\n/reset\nHi again\n/exit\nthis line is never read\n",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("(conversation reset)"), "{stderr}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).trim().is_empty(),
        "two replies expected"
    );
}

#[test]
fn chat_ends_cleanly_at_end_of_input() {
    let out = with_stdin(
        bin()
            .args(["chat", "-t", "2", "-n", "4", "-m"])
            .arg(synthetic_path("llama-q4_0")),
        "only one line, no newline at the end",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn chat_reuses_the_cached_conversation_on_the_next_turn() {
    let Some(path) = smollm2_path() else { return };
    let out = with_stdin(
        bin()
            .args(["chat", "-v", "-t", "2", "-n", "8", "--temp", "0", "-m"])
            .arg(path),
        "What is the capital of France?\nAnd of Italy?\n",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let cached: Vec<usize> = stderr
        .lines()
        .filter_map(|l| l.split(" tokens, ").nth(1)?.split(' ').next()?.parse().ok())
        .collect();
    assert_eq!(cached.len(), 2, "{stderr}");
    assert_eq!(cached[0], 0);
    assert!(cached[1] > 20, "the first turn is reused: {stderr}");
}

#[test]
fn embed_prints_a_unit_length_json_array() {
    let (out, _) = ok(bin()
        .args(["embed", "-t", "2", "-m"])
        .arg(synthetic_path("qwen3-f32"))
        .args(["-p", "some text to embed"]));
    let v: Vec<f64> = serde_json::from_str::<Vec<f64>>(out.trim()).expect("JSON array");
    let m = synthetic("qwen3-f32");
    assert_eq!(v.len(), m.config().n_embd);
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
}

#[test]
fn embed_pooling_and_normalisation_flags_match_the_library() {
    let (out, _) = ok(bin()
        .args([
            "embed",
            "-t",
            "2",
            "--pooling",
            "last",
            "--no-normalize",
            "-m",
        ])
        .arg(synthetic_path("qwen3-f32"))
        .args(["-p", "some text"]));
    let cli: Vec<f32> = serde_json::from_str(out.trim()).unwrap();
    let m = synthetic("qwen3-f32");
    let lib = m
        .embed("some text", openweight::Pooling::Last, false)
        .unwrap();
    assert_eq!(cli.len(), lib.len());
    for (c, l) in cli.iter().zip(&lib) {
        assert!((c - l).abs() <= 1e-6 * l.abs().max(1.0), "{c} vs {l}");
    }
}

#[test]
fn chat_reports_a_full_context_and_keeps_going() {
    let out = with_stdin(
        bin()
            .args(["chat", "-t", "1", "-n", "4", "-c", "8", "-m"])
            .arg(synthetic_path("llama-q4_0")),
        "this message is much longer than the eight tokens of context\n/reset\n/exit\n",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("context is full") && stderr.contains("/reset"),
        "{stderr}"
    );
    assert!(
        stderr.contains("(conversation reset)"),
        "still reading input: {stderr}"
    );
}
