//! Fuzz target: loading a mutated copy of the smallest synthetic model
//! (`fixtures/golden/synthetic/models/llama-q2_k.gguf`, 480 KiB, embedded in the binary) with
//! `Tokenizer::from_gguf` + `Model::from_gguf` from bytes, then 4 decode steps (a prompt and
//! three greedy tokens) in a session with an 8-token context, on one worker thread shared by
//! all inputs.
//!
//! The input is not the file itself but a list of patches to the model, so that libFuzzer's
//! small mutations stay meaningful on a half-megabyte file: each patch is
//! `kind: u8, offset: u32 LE, len: u8, bytes[len]`. `kind & 1` aims the offset at the metadata
//! and tensor-info region (else anywhere in the file); `kind & 6` chooses overwrite (0),
//! insert (2), truncate at the offset (4) or delete `len` bytes (6). Errors are fine; panics,
//! aborts, timeouts and runaway allocations are not.
//!
//! Run from the repository root: `python3 fuzz/seed.py`, then
//! `cargo +nightly fuzz run model_load -- -max_total_time=600 -max_len=512 -rss_limit_mb=2048`.

#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use openweight::gguf::GgufFile;
use openweight::model::{KvType, LogitsMode, Model, Session, SessionOptions};
use openweight::sample::argmax;
use openweight::tokenizer::Tokenizer;

static BASE: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../fixtures/golden/synthetic/models/llama-q2_k.gguf"
));

/// Length of the metadata + tensor-info region of the unmutated model.
fn header_len() -> usize {
    static LEN: OnceLock<usize> = OnceLock::new();
    *LEN.get_or_init(|| {
        let file = GgufFile::from_bytes(BASE.to_vec()).expect("the base model is valid");
        file.data_offset() as usize
    })
}

fn apply_patches(mut data: &[u8]) -> Vec<u8> {
    let mut file = BASE.to_vec();
    while let [kind, o0, o1, o2, o3, len, rest @ ..] = data {
        let len = (*len as usize).min(rest.len());
        let (bytes, tail) = rest.split_at(len);
        data = tail;
        let raw = u32::from_le_bytes([*o0, *o1, *o2, *o3]) as usize;
        // The header region may be longer than a file an earlier patch truncated.
        let span = if kind & 1 != 0 {
            header_len().min(file.len())
        } else {
            file.len()
        };
        let offset = raw % span.max(1);
        match kind & 6 {
            0 => {
                let end = (offset + len).min(file.len());
                file[offset..end].copy_from_slice(&bytes[..end - offset]);
            }
            2 => {
                file.splice(offset..offset, bytes.iter().copied());
            }
            4 => file.truncate(offset),
            _ => {
                let end = (offset + len).min(file.len());
                file.drain(offset..end);
            }
        }
        if file.is_empty() {
            break;
        }
    }
    file
}

/// One worker thread shared by every input's session. A private pool per session would
/// spawn a thread per input and leave it exiting after the pool is dropped (rayon does not
/// join its threads), and LeakSanitizer, checking right after the input, then reports that
/// thread's half-torn-down state as leaks.
fn pool() -> Arc<rayon::ThreadPool> {
    static POOL: OnceLock<Arc<rayon::ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        Arc::new(
            rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .expect("one worker thread"),
        )
    })
    .clone()
}

// Loading happens before fuzzing starts, outside the per-input timeout.
fuzz_target!(init: {
    header_len();
    pool();
}, |data: &[u8]| {
    let bytes = apply_patches(data);
    let Ok(file) = GgufFile::from_bytes(bytes) else {
        return;
    };
    let Ok(tokenizer) = Tokenizer::from_gguf(&file) else {
        return;
    };
    let Ok(model) = Model::from_gguf(file, tokenizer) else {
        return;
    };
    let options = SessionOptions {
        n_ctx: 8,
        kv_type: KvType::F16,
        pool: Some(pool()),
        ..SessionOptions::default()
    };
    let Ok(mut session) = Session::new(&model, options) else {
        return;
    };
    let prompt = model
        .tokenizer()
        .encode("Hello world", true, false)
        .unwrap_or_default();
    let mut next: Vec<u32> = prompt.into_iter().take(4).collect();
    if next.is_empty() {
        next.push(0);
    }
    for _ in 0..4 {
        let Ok(logits) = session.eval(&next, LogitsMode::Last) else {
            return;
        };
        assert_eq!(logits.len(), model.config().n_vocab);
        next = vec![argmax(logits)];
    }
});
