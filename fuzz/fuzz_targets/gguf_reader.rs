//! Fuzz target: any byte string given to the GGUF reader yields `Ok` or `Err`, never a panic,
//! and whatever it accepts can be queried through every getter, sliced with `tensor_data`, and
//! written back by `GgufWriter` into a file that reads back the same.
//!
//! This target also covers the typed metadata getters (there is no separate `gguf_metadata`
//! target): every `get_*`, `get_*_opt`, `arch_*` getter and every `Value`/`Array` accessor runs
//! on every key of every accepted file, on a key that is absent, and with the architecture
//! prefix taken from whatever `general.architecture` the file declares.
//!
//! Run from the repository root: `python3 fuzz/seed.py` (seeds the git-ignored
//! `fuzz/corpus/gguf_reader/` from `fixtures/malformed/`, the synthetic models' metadata and a
//! few small valid files), then
//! `cargo +nightly fuzz run gguf_reader -- -max_total_time=300 -max_len=20000`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use openweight::gguf::{GgufFile, GgufWriter};

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    exercise_getters(&file);
    check_tensors(&file);
    check_rewrite(&file);
});

fn exercise_getters(file: &GgufFile) {
    let _ = (
        file.version(),
        file.alignment(),
        file.data_offset(),
        file.file_len(),
    );
    for (key, value) in file.metadata() {
        // Identity, not `==`: a NaN value is not equal to itself.
        assert!(file.get(key).is_some_and(|v| std::ptr::eq(v, value)));
        let _ = (value.type_name(), value.type_id());
        let _ = (
            value.as_u64(),
            value.as_i64(),
            value.as_f64(),
            value.as_str(),
            value.as_bool(),
            value.as_array(),
        );
        let _ = file.get_u32(key);
        let _ = file.get_u64(key);
        let _ = file.get_i64(key);
        let _ = file.get_f32(key);
        let _ = file.get_bool(key);
        let _ = file.get_str(key);
        if let Ok(a) = file.get_array(key) {
            exercise_array(a, 0);
        }
        let _ = file.get_u32_opt(key);
        let _ = file.get_u64_opt(key);
        let _ = file.get_i64_opt(key);
        let _ = file.get_f32_opt(key);
        let _ = file.get_bool_opt(key);
        let _ = file.get_str_opt(key);
        let _ = file.get_array_opt(key);
    }
    // Absent keys: every getter errors (or gives `None`) without panicking.
    let absent = "openweight.fuzz.absent";
    assert!(file.get(absent).is_none() || file.metadata().iter().any(|(k, _)| k == absent));
    let _ = (
        file.get_u32(absent),
        file.get_str(absent),
        file.get_array(absent),
    );
    let _ = (file.get_u32_opt(absent), file.get_array_opt(absent));
    let _ = file.architecture();
    for suffix in [
        "block_count",
        "context_length",
        "rope.freq_base",
        "attention.head_count",
    ] {
        let _ = file.arch_u32(suffix);
        let _ = file.arch_key(suffix);
        let _ = file.arch_u32_opt(suffix);
        let _ = file.arch_u64_opt(suffix);
        let _ = file.arch_f32(suffix);
        let _ = file.arch_f32_opt(suffix);
        let _ = file.arch_str_opt(suffix);
        let _ = file.arch_bool_opt(suffix);
        let _ = file.arch_array_opt(suffix);
    }
}

/// Every accessor of an array, recursing into arrays of arrays (depth is bounded by the reader).
fn exercise_array(a: &openweight::gguf::Array, depth: usize) {
    let _ = (a.len(), a.is_empty(), a.elem_type_id(), a.elem_type_name());
    let _ = (
        a.as_strings(),
        a.as_f32s(),
        a.as_f64s(),
        a.as_i32s(),
        a.as_u32s(),
    );
    let _ = (
        a.as_i64s(),
        a.as_u64s(),
        a.as_u8s(),
        a.as_i8s(),
        a.as_u16s(),
        a.as_i16s(),
    );
    let _ = (a.as_bools(), a.to_i64s());
    if let Some(inner) = a.as_arrays() {
        assert!(depth < 64, "reader accepted arrays nested {depth} deep");
        for i in inner {
            exercise_array(i, depth + 1);
        }
    }
}

fn check_tensors(file: &GgufFile) {
    for t in file.tensors() {
        assert_eq!(file.tensor(&t.name), Some(t));
        let data = file.tensor_data(t);
        assert_eq!(data.len() as u64, t.n_bytes);
        assert_eq!(t.offset % file.alignment(), 0);
        let _ = (t.type_name(), t.n_elements());
    }
}

fn check_rewrite(file: &GgufFile) {
    // A file without tensors may declare `general.alignment = 2^31`: the reader accepts it (the
    // data section is empty, as in the reference), but a faithful rewrite pads the header to
    // 2 GiB. Writing such a file is legitimate and not what this target tests.
    if file.data_offset() > file.file_len() + (1 << 16) {
        return;
    }
    let mut w = GgufWriter::new();
    w.set_version(file.version())
        .expect("reader accepted the version");
    for (key, value) in file.metadata() {
        w.add_metadata(key.clone(), value.clone())
            .expect("reader accepted the metadata");
    }
    for t in file.tensors() {
        w.add_tensor(t.name.clone(), &t.ne, t.type_id, file.tensor_data(t))
            .expect("reader accepted the tensor");
    }
    let again = GgufFile::from_bytes(w.to_bytes().expect("writable")).expect("rewrite reads back");
    assert_eq!(again.metadata().len(), file.metadata().len());
    for ((k1, v1), (k2, v2)) in again.metadata().iter().zip(file.metadata()) {
        assert_eq!(k1, k2);
        // NaN floats compare unequal to themselves; compare the encodings instead.
        assert_eq!(format!("{v1:?}"), format!("{v2:?}"));
    }
    assert_eq!(again.tensors().len(), file.tensors().len());
    for (a, b) in again.tensors().iter().zip(file.tensors()) {
        assert_eq!(
            (&a.name, &a.ne, a.type_id, a.n_bytes),
            (&b.name, &b.ne, b.type_id, b.n_bytes)
        );
        assert_eq!(again.tensor_data(a), file.tensor_data(b));
    }
}
