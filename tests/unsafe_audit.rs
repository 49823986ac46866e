//! `unsafe` audit over the library sources (`src/` and `kernels/src/`):
//!
//! - every `unsafe { ... }` block and `unsafe impl` has a `// SAFETY` comment (`// SAFETY:` or
//!   `// SAFETY (scope):`) on its line or within the few lines before it;
//! - every `#[target_feature(...)]` function is an `unsafe fn` that is not `pub` (at most
//!   `pub(crate)` / `pub(super)`), so it is reachable only through code in its crate;
//! - the SIMD kernel modules (`avx2`, `neon`) are private modules of the kernels crate: the only
//!   way in is `dispatch`, which installs them after detecting the CPU features.

use std::path::{Path, PathBuf};

/// How many lines above an `unsafe` block its `// SAFETY` comment may start (a comment of a
/// few lines, then the statement the block is part of).
const LOOKBACK: usize = 8;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("source directory is readable") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn sources() -> Vec<(PathBuf, Vec<String>)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    rust_files(&root.join("kernels/src"), &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("source is UTF-8");
            let lines = text.lines().map(str::to_owned).collect();
            (p.strip_prefix(&root).unwrap_or(&p).to_path_buf(), lines)
        })
        .collect()
}

/// The code part of a line (before a `//` comment; string literals holding `//` are rare
/// enough in this code base not to matter, and would only hide code from the audit).
fn code(line: &str) -> &str {
    line.split("//").next().unwrap_or("")
}

/// Whether `s` contains the keyword `unsafe` followed (after spaces) by `next`.
fn has_unsafe_then(s: &str, next: &str) -> bool {
    s.match_indices("unsafe").any(|(i, _)| {
        let before_ok = s[..i]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        before_ok && s[i + "unsafe".len()..].trim_start().starts_with(next)
    })
}

#[test]
fn every_unsafe_block_and_impl_has_a_safety_comment() {
    let mut missing = Vec::new();
    let mut n_blocks = 0;
    for (path, lines) in sources() {
        for (i, line) in lines.iter().enumerate() {
            let c = code(line);
            if !(has_unsafe_then(c, "{") || has_unsafe_then(c, "impl")) {
                continue;
            }
            n_blocks += 1;
            let documented = lines[i.saturating_sub(LOOKBACK)..=i]
                .iter()
                .any(|l| l.contains("// SAFETY:") || l.contains("// SAFETY ("));
            if !documented {
                missing.push(format!("{}:{}: {}", path.display(), i + 1, line.trim()));
            }
        }
    }
    eprintln!("unsafe audit: {n_blocks} unsafe blocks/impls checked");
    assert!(
        n_blocks > 0,
        "the audit found no unsafe code at all: wrong directories?"
    );
    assert!(
        missing.is_empty(),
        "unsafe without a `// SAFETY:` comment in the {LOOKBACK} lines above:\n{}",
        missing.join("\n")
    );
}

#[test]
fn target_feature_functions_are_unsafe_and_not_public() {
    let mut bad = Vec::new();
    let mut n_fns = 0;
    for (path, lines) in sources() {
        for (i, line) in lines.iter().enumerate() {
            if !code(line).contains("#[target_feature(") {
                continue;
            }
            let Some((j, sig)) = lines
                .iter()
                .enumerate()
                .skip(i + 1)
                .take(8)
                .find(|(_, l)| code(l).contains("fn "))
            else {
                bad.push(format!(
                    "{}:{}: no fn after target_feature",
                    path.display(),
                    i + 1
                ));
                continue;
            };
            n_fns += 1;
            let sig = code(sig).trim_start();
            if !has_unsafe_then(sig, "fn") {
                bad.push(format!("{}:{}: not unsafe: {sig}", path.display(), j + 1));
            }
            if sig.starts_with("pub ") {
                bad.push(format!(
                    "{}:{}: public SIMD fn: {sig}",
                    path.display(),
                    j + 1
                ));
            }
        }
    }
    eprintln!("unsafe audit: {n_fns} #[target_feature] functions checked");
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn simd_kernel_modules_are_private_to_the_kernels_crate() {
    let lib = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("kernels/src/lib.rs"),
    )
    .expect("kernels/src/lib.rs");
    for module in ["avx2", "avx512", "neon"] {
        let decl = lib
            .lines()
            .map(code)
            .find(|l| {
                l.trim_start()
                    .trim_start_matches("pub ")
                    .starts_with(&format!("mod {module};"))
            })
            .unwrap_or_else(|| panic!("kernels/src/lib.rs declares no `mod {module};`"));
        assert!(
            decl.trim_start().starts_with("mod "),
            "`{module}` must be a private module (reached only through dispatch): {decl}"
        );
    }
}
