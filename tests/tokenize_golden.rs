//! Tokenization against the reference runtime's golden output.
//!
//! Golden source: `fixtures/golden/{real,synthetic}/NAME.tokenize.jsonl`, one line per
//! (text, parse_special) pair with the ids of `llama_tokenize(text, add_special = true,
//! parse_special)` from llama.cpp (see `fixtures/golden/README.md`). Every line must match
//! exactly.

use std::path::{Path, PathBuf};

use openweight::gguf::GgufFile;
use openweight::tokenizer::{StreamDecoder, Tokenizer, TokenizerKind};
use proptest::prelude::*;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// One golden line.
struct Case {
    text: String,
    add_special: bool,
    parse_special: bool,
    ids: Vec<u32>,
}

fn read_cases(path: &Path) -> Vec<Case> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("golden line is JSON");
            Case {
                text: v["text"].as_str().expect("text").to_owned(),
                add_special: v["add_special"].as_bool().expect("add_special"),
                parse_special: v["parse_special"].as_bool().expect("parse_special"),
                ids: v["ids"]
                    .as_array()
                    .expect("ids")
                    .iter()
                    .map(|x| x.as_u64().expect("id") as u32)
                    .collect(),
            }
        })
        .collect()
}

fn load(model: &Path) -> Tokenizer {
    let file = GgufFile::open(model).unwrap_or_else(|e| panic!("{}: {e}", model.display()));
    Tokenizer::from_gguf(&file).unwrap_or_else(|e| panic!("{}: {e}", model.display()))
}

/// Checks every golden line of `golden` with the tokenizer of `model`; returns the number of
/// lines checked, or `None` (after a loud message) if the model file is absent.
fn check_model(model: &Path, golden: &Path) -> Option<usize> {
    if !model.exists() {
        eprintln!(
            "SKIPPED: {} is absent; run fixtures/fetch-models.sh to fetch it",
            model.display()
        );
        return None;
    }
    let tok = load(model);
    let cases = read_cases(golden);
    assert!(!cases.is_empty(), "{} has no cases", golden.display());
    let mut failures = Vec::new();
    for c in &cases {
        let ours = tok.encode(&c.text, c.add_special, c.parse_special);
        match ours {
            Ok(ids) if ids == c.ids => {}
            other => failures.push(format!(
                "  text {:?} parse_special={}:\n    expected {:?}\n    got      {:?}",
                c.text, c.parse_special, c.ids, other
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{}: {} of {} golden lines differ:\n{}",
        model.display(),
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    Some(cases.len())
}

fn check_real(name: &str) {
    let model = fixtures().join(format!("models/{name}.gguf"));
    let golden = fixtures().join(format!("golden/real/{name}.tokenize.jsonl"));
    if let Some(n) = check_model(&model, &golden) {
        eprintln!("{name}: {n} golden lines match");
    }
}

#[test]
fn smollm2_byte_level_bpe_matches_every_golden_line() {
    check_real("smollm2-135m-q4_1");
}

#[test]
fn qwen2_5_coder_byte_level_bpe_matches_every_golden_line() {
    check_real("qwen2.5-coder-0.5b-q4_k_m");
}

#[test]
fn gemma3_sentencepiece_matches_every_golden_line() {
    check_real("gemma3-270m-q4_k_m");
}

/// All synthetic models share one SentencePiece-style vocabulary; each file's metadata is
/// checked against its own golden file.
#[test]
fn synthetic_sentencepiece_models_match_every_golden_line() {
    let dir = fixtures().join("golden/synthetic");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("synthetic golden dir") {
        let path = entry.expect("dir entry").path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(stem) = name.strip_suffix(".tokenize.jsonl") else {
            continue;
        };
        let model = dir.join(format!("models/{stem}.gguf"));
        assert!(model.exists(), "{} has no model {}", name, model.display());
        check_model(&model, &path);
        checked += 1;
    }
    assert!(checked >= 30, "only {checked} synthetic models found");
}

#[test]
fn real_tokenizers_have_the_expected_kind_and_special_tokens() {
    let dir = fixtures().join("models");
    let path = dir.join("qwen2.5-coder-0.5b-q4_k_m.gguf");
    if !path.exists() {
        eprintln!(
            "SKIPPED: {} is absent; run fixtures/fetch-models.sh",
            path.display()
        );
        return;
    }
    let qwen = load(&path);
    assert_eq!(qwen.kind(), TokenizerKind::ByteLevelBpe);
    assert_eq!(qwen.n_vocab(), 151936);
    assert!(!qwen.add_bos());
    let im_end = qwen.token_to_id("<|im_end|>").unwrap();
    assert_eq!(qwen.eos_id(), Some(im_end));
    assert!(qwen.is_eog(im_end));
    assert!(qwen.is_eog(qwen.token_to_id("<|endoftext|>").unwrap()));
    assert!(!qwen.is_eog(qwen.token_to_id("<|im_start|>").unwrap()));

    let path = dir.join("gemma3-270m-q4_k_m.gguf");
    if !path.exists() {
        eprintln!(
            "SKIPPED: {} is absent; run fixtures/fetch-models.sh",
            path.display()
        );
        return;
    }
    let gemma = load(&path);
    assert_eq!(gemma.kind(), TokenizerKind::SentencePiece);
    assert!(gemma.add_bos());
    let end_of_turn = gemma.token_to_id("<end_of_turn>").unwrap();
    assert!(gemma.is_eog(end_of_turn));
    assert_eq!(
        gemma.decode(&gemma.encode("Hello world", false, false).unwrap()),
        "Hello world"
    );
}

/// Building the largest vocabulary (Qwen2.5: 151,936 tokens, 151,387 merges) is fast.
#[test]
fn building_a_151k_token_bpe_tokenizer_takes_well_under_a_second() {
    let path = fixtures().join("models/qwen2.5-coder-0.5b-q4_k_m.gguf");
    if !path.exists() {
        eprintln!(
            "SKIPPED: {} is absent; run fixtures/fetch-models.sh",
            path.display()
        );
        return;
    }
    let file = GgufFile::open(&path).unwrap();
    // The best of three builds, to be robust to a busy machine.
    let mut built = std::time::Duration::MAX;
    let mut tok = None;
    for _ in 0..3 {
        let t0 = std::time::Instant::now();
        tok = Some(Tokenizer::from_gguf(&file).unwrap());
        built = built.min(t0.elapsed());
    }
    let tok = tok.unwrap();
    let text = std::fs::read_to_string(fixtures().join("golden/inputs/ppl_dev.txt")).unwrap();
    let t1 = std::time::Instant::now();
    let ids = tok.encode(&text, true, true).unwrap();
    let encoded = t1.elapsed();
    eprintln!(
        "qwen2.5 tokenizer: built in {built:?}; {} bytes -> {} tokens in {encoded:?}",
        text.len(),
        ids.len()
    );
    // Generous bounds (debug builds, shared CI machines); release is far faster.
    if !cfg!(debug_assertions) {
        assert!(built.as_secs_f64() < 1.0, "built in {built:?}");
    }
}

/// Encoding with the 262k-token SentencePiece vocabulary and its 6,400 control tokens is
/// fast too (the special-token search is pre-filtered by byte pairs).
#[test]
fn gemma3_tokenizer_builds_and_encodes_quickly() {
    let path = fixtures().join("models/gemma3-270m-q4_k_m.gguf");
    if !path.exists() {
        eprintln!(
            "SKIPPED: {} is absent; run fixtures/fetch-models.sh",
            path.display()
        );
        return;
    }
    let file = GgufFile::open(&path).unwrap();
    let t0 = std::time::Instant::now();
    let tok = Tokenizer::from_gguf(&file).unwrap();
    let built = t0.elapsed();
    let text = std::fs::read_to_string(fixtures().join("golden/inputs/ppl_dev.txt")).unwrap();
    let t1 = std::time::Instant::now();
    let ids = tok.encode(&text, true, true).unwrap();
    let encoded = t1.elapsed();
    eprintln!(
        "gemma3 tokenizer: built in {built:?}; {} bytes -> {} tokens in {encoded:?}",
        text.len(),
        ids.len()
    );
    assert_eq!(
        tok.decode(&ids[1..]),
        text,
        "SentencePiece without space prefix round-trips"
    );
    if !cfg!(debug_assertions) {
        assert!(built.as_secs_f64() < 2.0, "built in {built:?}");
    }
}

fn real_bpe(name: &str) -> Option<Tokenizer> {
    let path = fixtures().join(format!("models/{name}.gguf"));
    if !path.exists() {
        eprintln!(
            "SKIPPED: {} is absent; run fixtures/fetch-models.sh",
            path.display()
        );
        return None;
    }
    Some(load(&path))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Byte-level BPE loses nothing: decoding the ids gives back the text.
    #[test]
    fn real_bpe_tokenizers_round_trip_arbitrary_text(text in any::<String>()) {
        use std::sync::OnceLock;
        static TOKS: OnceLock<Vec<Tokenizer>> = OnceLock::new();
        let toks = TOKS.get_or_init(|| {
            ["smollm2-135m-q4_1", "qwen2.5-coder-0.5b-q4_k_m"].iter().filter_map(|n| real_bpe(n)).collect()
        });
        for tok in toks {
            let ids = tok.encode(&text, false, false).unwrap();
            prop_assert_eq!(tok.decode(&ids), text.clone());
        }
    }

    /// Streaming decoding gives valid UTF-8 pieces that concatenate to `decode`.
    #[test]
    fn real_stream_decoding_concatenates_to_decode(ids in proptest::collection::vec(0u32..49152, 0..64)) {
        use std::sync::OnceLock;
        static TOK: OnceLock<Option<Tokenizer>> = OnceLock::new();
        if let Some(tok) = TOK.get_or_init(|| real_bpe("smollm2-135m-q4_1")) {
            let mut d = StreamDecoder::new(tok);
            let mut streamed = String::new();
            for &id in &ids {
                streamed.push_str(&d.push(id));
            }
            streamed.push_str(&d.flush());
            prop_assert_eq!(streamed, tok.decode(&ids));
        }
    }
}

/// `openweight tokenize` prints the golden ids as one JSON array.
#[test]
fn tokenize_cli_prints_the_golden_ids_as_json() {
    let name = "qwen2.5-coder-0.5b-q4_k_m";
    let model = fixtures().join(format!("models/{name}.gguf"));
    if !model.exists() {
        eprintln!(
            "SKIPPED: {} is absent; run fixtures/fetch-models.sh",
            model.display()
        );
        return;
    }
    let cases = read_cases(&fixtures().join(format!("golden/real/{name}.tokenize.jsonl")));
    let case = cases
        .iter()
        .find(|c| c.parse_special && c.text.contains("<|im_start|>"))
        .expect("a chat-template line with parse_special");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_openweight"))
        .args(["tokenize", "-m"])
        .arg(&model)
        .args(["--parse-special", "-p", &case.text])
        .output()
        .expect("run openweight");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Vec<u32> = serde_json::from_slice(&out.stdout).expect("a JSON array of ids");
    assert_eq!(printed, case.ids);
}
