//! `openweight inspect --json` against the golden inspect JSON of the three real models
//! (`fixtures/golden/real/NAME.inspect.json`, made with the `gguf` Python package's reader, an
//! implementation independent of ours). The real binary is run, so the CLI is what is tested.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value as Json;

const REAL_MODELS: [&str; 3] = [
    "smollm2-135m-q4_1",
    "qwen2.5-coder-0.5b-q4_k_m",
    "gemma3-270m-q4_k_m",
];

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// The model file, or `None` (with a loud note on stderr) if it has not been fetched.
fn real_model(name: &str) -> Option<PathBuf> {
    let path = fixtures().join("models").join(format!("{name}.gguf"));
    if path.exists() {
        Some(path)
    } else {
        eprintln!(
            "SKIPPED: {} is absent; run fixtures/fetch-models.sh to fetch the real models",
            path.display()
        );
        None
    }
}

fn inspect(model: &Path, json: bool) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_openweight"));
    cmd.arg("inspect").arg(model);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().expect("run openweight");
    assert!(
        out.status.success(),
        "openweight inspect {} failed: {}",
        model.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("inspect output is UTF-8")
}

/// Structural equality where numbers that are not both integers compare after rounding to f32
/// (the golden floats are f32 metadata widened to f64 by Python).
fn assert_json_eq(ours: &Json, golden: &Json, path: &str) {
    match (ours, golden) {
        (Json::Object(a), Json::Object(b)) => {
            let mut ka: Vec<&String> = a.keys().collect();
            let mut kb: Vec<&String> = b.keys().collect();
            ka.sort();
            kb.sort();
            assert_eq!(ka, kb, "keys differ at {path}");
            for (k, v) in a {
                assert_json_eq(v, &b[k], &format!("{path}.{k}"));
            }
        }
        (Json::Array(a), Json::Array(b)) => {
            assert_eq!(a.len(), b.len(), "array length differs at {path}");
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                assert_json_eq(x, y, &format!("{path}[{i}]"));
            }
        }
        (Json::Number(a), Json::Number(b)) if !(a.is_f64() || b.is_f64()) => {
            assert_eq!(a, b, "integer differs at {path}");
        }
        (Json::Number(a), Json::Number(b)) => {
            let (x, y) = (a.as_f64().unwrap() as f32, b.as_f64().unwrap() as f32);
            assert_eq!(x, y, "float differs at {path}");
        }
        _ => assert_eq!(ours, golden, "value differs at {path}"),
    }
}

#[test]
fn inspect_json_matches_the_golden_inspect_json_of_each_real_model() {
    for name in REAL_MODELS {
        let Some(model) = real_model(name) else {
            continue;
        };
        let golden_path = fixtures().join(format!("golden/real/{name}.inspect.json"));
        let golden: Json =
            serde_json::from_str(&std::fs::read_to_string(&golden_path).unwrap()).unwrap();
        let ours: Json = serde_json::from_str(&inspect(&model, true))
            .unwrap_or_else(|e| panic!("{name}: inspect --json is not JSON: {e}"));
        assert_json_eq(&ours, &golden, name);
    }
}

#[test]
fn inspect_json_lists_metadata_keys_in_file_order() {
    // serde_json maps are sorted, so compare the key order on the raw texts. Ours prints
    // `"key": {"type": ...}` per line; the golden files print `"key": {` on a line of its own.
    fn our_order(text: &str) -> Vec<String> {
        text.lines()
            .filter_map(|l| {
                let rest = l.trim_start().strip_prefix('"')?;
                Some(rest[..rest.find("\": {\"type\"")?].to_owned())
            })
            .collect()
    }
    fn golden_order(text: &str) -> Vec<String> {
        text.lines()
            .filter_map(|l| Some(l.strip_prefix('"')?.strip_suffix("\": {")?.to_owned()))
            .filter(|k| k != "metadata")
            .collect()
    }
    for name in REAL_MODELS {
        let Some(model) = real_model(name) else {
            continue;
        };
        let golden =
            std::fs::read_to_string(fixtures().join(format!("golden/real/{name}.inspect.json")))
                .unwrap();
        let expected = golden_order(&golden);
        assert!(
            expected.len() > 20,
            "{name}: could not read the golden key order"
        );
        assert_eq!(our_order(&inspect(&model, true)), expected, "{name}");
    }
}

#[test]
fn inspect_text_summarises_the_vocabulary_of_each_real_model() {
    for (name, summary) in [
        ("smollm2-135m-q4_1", "[string; 49152]"),
        ("qwen2.5-coder-0.5b-q4_k_m", "[string; 151936]"),
        ("gemma3-270m-q4_k_m", "[string; 262144]"),
    ] {
        let Some(model) = real_model(name) else {
            continue;
        };
        let text = inspect(&model, false);
        let line = text
            .lines()
            .find(|l| l.starts_with("tokenizer.ggml.tokens "))
            .unwrap_or_else(|| panic!("{name}: no tokens row in\n{text}"));
        assert!(line.ends_with(summary), "{name}: {line}");
    }
}

#[test]
fn inspect_json_of_every_synthetic_model_parses_and_lists_all_tensors() {
    let dir = fixtures().join("golden/synthetic/models");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|x| x != "gguf") {
            continue;
        }
        let ours: Json = serde_json::from_str(&inspect(&path, true)).unwrap();
        let file = openweight::gguf::GgufFile::open(&path).unwrap();
        assert_eq!(
            ours["tensors"].as_array().unwrap().len(),
            file.tensors().len()
        );
        assert_eq!(ours["file_bytes"].as_u64(), Some(file.file_len()));
        n += 1;
    }
    assert!(
        n >= 30,
        "only {n} synthetic models found in {}",
        dir.display()
    );
}
