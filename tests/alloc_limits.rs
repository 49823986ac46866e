//! Resource limits against hostile model files and long generations, measured with a counting
//! global allocator (heap bytes live at once; memory-mapped file pages are not counted).
//!
//! - A crafted file declaring a 2^40-element vocabulary, a 2^40-element tensor, a 2^50-element
//!   metadata array, a 2^40-element array of arrays or a 2^62-byte string: `Model::open` fails
//!   without its heap peak exceeding `16 x file size + 1 MiB`.
//! - Valid but allocation-heavy metadata (a 200k-token vocabulary of empty strings, 100k empty
//!   nested arrays): the same bound holds while the tokenizer is built.
//! - A session run token by token to its full context allocates nothing after the first
//!   tokens: its memory is fixed by the preset KV size.
//!
//! The tests of this file share the allocator counters, so they take a lock and run one at a
//! time.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use openweight::model::{KvType, LogitsMode, Model, Session, SessionOptions};
use openweight::sample::Sampler;

/// `System`, counting live heap bytes and their peak.
struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn add(n: usize) {
    let now = CURRENT.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract holds exactly as it does for `System`; the counters only observe.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `alloc`'s contract.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            add(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `alloc_zeroed`'s contract.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            add(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is; `ptr` was allocated by `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `realloc`'s contract.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            add(new_size);
            CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Serializes the tests of this binary: they share the counters.
fn exclusive() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `f` and returns its result with the heap peak it reached above the live bytes at entry.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed).saturating_sub(base))
}

// ---- crafting GGUF bytes by hand (the writer refuses to write such files) ----

const T_U8: u32 = 0;
const T_U32: u32 = 4;
const T_STRING: u32 = 8;
const T_ARRAY: u32 = 9;
const GGML_F32: u32 = 0;

fn gstr(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Header (v3) followed by `kvs`, the already-encoded `key, type, value` entries.
fn header(n_tensors: u64, n_kv: u64) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&n_tensors.to_le_bytes());
    out.extend_from_slice(&n_kv.to_le_bytes());
    out
}

fn kv_str(out: &mut Vec<u8>, key: &str, value: &str) {
    gstr(out, key);
    out.extend_from_slice(&T_STRING.to_le_bytes());
    gstr(out, value);
}

/// The key and the array header `(elem type, count)` of an array value; elements follow.
fn kv_array_head(out: &mut Vec<u8>, key: &str, elem: u32, count: u64) {
    gstr(out, key);
    out.extend_from_slice(&T_ARRAY.to_le_bytes());
    out.extend_from_slice(&elem.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
}

fn arch_and_model(out: &mut Vec<u8>) {
    kv_str(out, "general.architecture", "llama");
    kv_str(out, "tokenizer.ggml.model", "gpt2");
}

/// A temporary file holding `bytes`, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, bytes: &[u8]) -> TempFile {
        let path = std::env::temp_dir().join(format!(
            "openweight-alloc-limits-{}-{name}.gguf",
            std::process::id()
        ));
        std::fs::write(&path, bytes).expect("temp file is writable");
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Opens `bytes` as a model, asserts it fails, and that the heap peak while trying stays within
/// `16 x file size + 1 MiB`. Returns the peak.
fn assert_open_fails_within_bound(name: &str, bytes: &[u8]) -> usize {
    let file = TempFile::new(name, bytes);
    let (result, peak) = peak_during(|| Model::open(&file.0).map(drop));
    let bound = 16 * bytes.len() + (1 << 20);
    eprintln!(
        "{name}: file {} B, heap peak {peak} B (bound {bound} B), error: {}",
        bytes.len(),
        result
            .as_ref()
            .err()
            .map_or("none".into(), |e| e.to_string())
    );
    assert!(result.is_err(), "{name}: a crafted file must not load");
    assert!(
        peak <= bound,
        "{name}: heap peak {peak} B exceeds 16 x {} B + 1 MiB",
        bytes.len()
    );
    peak
}

#[test]
fn vocabulary_declaring_2_pow_40_tokens_fails_without_allocating_for_them() {
    let _g = exclusive();
    let mut f = header(0, 3);
    arch_and_model(&mut f);
    kv_array_head(&mut f, "tokenizer.ggml.tokens", T_STRING, 1 << 40);
    for t in ["a", "b", "c"] {
        gstr(&mut f, t);
    }
    assert_open_fails_within_bound("vocab-2^40", &f);
}

#[test]
fn tensor_of_2_pow_40_elements_fails_without_allocating_for_it() {
    let _g = exclusive();
    let mut f = header(1, 1);
    kv_str(&mut f, "general.architecture", "llama");
    gstr(&mut f, "token_embd.weight");
    f.extend_from_slice(&2u32.to_le_bytes());
    f.extend_from_slice(&(1u64 << 20).to_le_bytes());
    f.extend_from_slice(&(1u64 << 20).to_le_bytes());
    f.extend_from_slice(&GGML_F32.to_le_bytes());
    f.extend_from_slice(&0u64.to_le_bytes());
    f.resize(f.len().next_multiple_of(32) + 4096, 0);
    assert_open_fails_within_bound("tensor-2^40", &f);
}

#[test]
fn metadata_array_of_2_pow_50_bytes_fails_without_allocating_for_it() {
    let _g = exclusive();
    let mut f = header(0, 2);
    kv_str(&mut f, "general.architecture", "llama");
    kv_array_head(&mut f, "huge.bytes", T_U8, 1 << 50);
    f.extend_from_slice(&[7; 64]);
    assert_open_fails_within_bound("u8-array-2^50", &f);
}

#[test]
fn array_of_2_pow_40_arrays_fails_without_allocating_for_them() {
    let _g = exclusive();
    let mut f = header(0, 2);
    kv_str(&mut f, "general.architecture", "llama");
    kv_array_head(&mut f, "huge.nested", T_ARRAY, 1 << 40);
    for _ in 0..4 {
        f.extend_from_slice(&T_U32.to_le_bytes());
        f.extend_from_slice(&0u64.to_le_bytes());
    }
    assert_open_fails_within_bound("nested-array-2^40", &f);
}

#[test]
fn string_of_2_pow_62_bytes_fails_without_allocating_for_it() {
    let _g = exclusive();
    let mut f = header(0, 2);
    kv_str(&mut f, "general.architecture", "llama");
    gstr(&mut f, "tokenizer.chat_template");
    f.extend_from_slice(&T_STRING.to_le_bytes());
    f.extend_from_slice(&(1u64 << 62).to_le_bytes());
    f.extend_from_slice(b"{{ messages }}");
    assert_open_fails_within_bound("string-2^62", &f);
}

#[test]
fn vocabulary_of_200k_empty_tokens_stays_within_the_bound_while_the_tokenizer_is_built() {
    let _g = exclusive();
    let n = 200_000u64;
    let mut f = header(0, 4);
    arch_and_model(&mut f);
    kv_array_head(&mut f, "tokenizer.ggml.tokens", T_STRING, n);
    for _ in 0..n {
        gstr(&mut f, "");
    }
    kv_array_head(&mut f, "tokenizer.ggml.merges", T_STRING, 0);
    // The file is valid GGUF; loading fails later (no tensors), after the tokenizer is built.
    assert_open_fails_within_bound("vocab-200k-empty", &f);
}

#[test]
fn hundred_thousand_empty_nested_arrays_stay_within_the_bound() {
    let _g = exclusive();
    let n = 100_000u64;
    let mut f = header(0, 2);
    kv_str(&mut f, "general.architecture", "llama");
    kv_array_head(&mut f, "many.empty", T_ARRAY, n);
    for _ in 0..n {
        f.extend_from_slice(&T_U8.to_le_bytes());
        f.extend_from_slice(&0u64.to_le_bytes());
    }
    assert_open_fails_within_bound("nested-100k-empty", &f);
}

#[test]
fn header_only_file_with_alignment_2_pow_31_opens_without_allocating_the_padding() {
    // Found by fuzzing: the data section of a tensor-less file may start past its end (as in
    // the reference); nothing may be allocated for the 2 GiB of padding.
    let _g = exclusive();
    let mut f = header(0, 2);
    kv_str(&mut f, "general.architecture", "llama");
    gstr(&mut f, "general.alignment");
    f.extend_from_slice(&T_U32.to_le_bytes());
    f.extend_from_slice(&(1u32 << 31).to_le_bytes());
    let (file, peak) = peak_during(|| openweight::gguf::GgufFile::from_bytes(f.clone()));
    let file = file.expect("a header-only file with a large alignment is valid");
    assert_eq!(file.data_offset(), 1 << 31);
    assert!(peak <= 16 * f.len() + (1 << 20), "heap peak {peak} B");
    assert_open_fails_within_bound("alignment-2^31-no-tensors", &f);
}

fn synthetic_model_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/golden/synthetic/models/llama-q4_0.gguf")
}

#[test]
fn generation_allocates_nothing_after_the_first_tokens_up_to_the_full_context() {
    let _g = exclusive();
    let model = Model::open(synthetic_model_path()).expect("synthetic model loads");
    let n_ctx = 256;
    let options = SessionOptions {
        n_ctx,
        kv_type: KvType::F16,
        n_threads: 2,
        ..SessionOptions::default()
    };
    let mut session = Session::new(&model, options).expect("session");
    let mut sampler = Sampler::new(0.8, 40, 7);
    let mut next = model.tokenizer().bos_id().unwrap_or(0);
    // Warm-up: the first tokens size the scratch buffers and logits.
    for _ in 0..4 {
        let logits = session.eval(&[next], LogitsMode::Last).expect("eval");
        next = sampler.sample(logits);
    }
    let live_after_warmup = CURRENT.load(Ordering::Relaxed);
    let ((), peak) = peak_during(|| {
        while session.n_past() < n_ctx {
            let logits = session.eval(&[next], LogitsMode::Last).expect("eval");
            next = sampler.sample(logits);
        }
    });
    let grown = CURRENT
        .load(Ordering::Relaxed)
        .saturating_sub(live_after_warmup);
    eprintln!(
        "generation to n_ctx {n_ctx}: live heap after warm-up {live_after_warmup} B, \
         peak above it while filling the context {peak} B, still held at the end {grown} B"
    );
    // Attention may keep a per-position score buffer that grows with the sequence (at most
    // n_head x n_ctx f32s); anything beyond 64 KiB would be an allocation per token.
    let c = model.config();
    let slack = c.n_head * n_ctx * 4 + (64 << 10);
    assert!(
        peak <= slack,
        "heap grew by {peak} B while generating to the full context (allowed {slack} B)"
    );
    let err = session.eval(&[next], LogitsMode::Last).unwrap_err();
    assert!(err.to_string().contains("context"), "full context: {err}");
}

#[test]
fn block_count_far_above_the_tensor_count_fails_before_sizing_the_layers() {
    // Found by fuzzing (model_load): a synthetic model whose `llama.block_count` was
    // overwritten from 2 to 0x00FF0000 made the loader reserve 16.7M layers (32 GB) up front.
    let _g = exclusive();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/golden/synthetic/models/llama-q2_k.gguf");
    let mut bytes = std::fs::read(&path).expect("synthetic model");
    let key = b"llama.block_count";
    let at = bytes
        .windows(key.len())
        .position(|w| w == key)
        .expect("the model has a block_count key")
        + key.len();
    // Type id (u32 = 4), then the value.
    assert_eq!(
        bytes[at..at + 4],
        4u32.to_le_bytes(),
        "block_count is a u32"
    );
    assert_eq!(
        bytes[at + 4..at + 8],
        2u32.to_le_bytes(),
        "the model has 2 blocks"
    );
    for n_block in [0x00FF_0000u32, u32::MAX] {
        bytes[at + 4..at + 8].copy_from_slice(&n_block.to_le_bytes());
        let file = TempFile::new("block-count", &bytes);
        let err = match Model::open(&file.0) {
            Ok(_) => panic!("block_count {n_block} must not load"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("block_count") && err.contains("tensors"),
            "block_count {n_block}: {err}"
        );
        assert_open_fails_within_bound("block-count", &bytes);
    }
}
