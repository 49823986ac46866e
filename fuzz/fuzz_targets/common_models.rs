//! Shared by the fuzz targets: locating the fixture models from the repository root.

use std::path::PathBuf;

/// The repository root (the fuzz crate lives in `fuzz/`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("fuzz/ has a parent")
        .to_path_buf()
}

/// The three real models if all are present in `fixtures/models/`, otherwise (loudly) three
/// synthetic models from `fixtures/golden/synthetic/models/` with the same tokenizer kinds.
pub fn tokenizer_models() -> Vec<PathBuf> {
    let root = repo_root();
    let real: Vec<PathBuf> = [
        "smollm2-135m-q4_1.gguf",
        "qwen2.5-coder-0.5b-q4_k_m.gguf",
        "gemma3-270m-q4_k_m.gguf",
    ]
    .iter()
    .map(|m| root.join("fixtures/models").join(m))
    .collect();
    if real.iter().all(|p| p.exists()) {
        return real;
    }
    eprintln!(
        "\n*** fuzz: real models missing in fixtures/models/ (run fixtures/fetch-models.sh); \
         FALLING BACK to the synthetic models' tokenizers ***\n"
    );
    ["llama-q4_0.gguf", "qwen2-q4_k_m.gguf", "gemma3-q4_k_m.gguf"]
        .iter()
        .map(|m| root.join("fixtures/golden/synthetic/models").join(m))
        .collect()
}
