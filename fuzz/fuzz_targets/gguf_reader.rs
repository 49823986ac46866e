//! Fuzz target: any byte string given to the GGUF reader yields `Ok` or `Err`, never a panic,
//! and whatever it accepts can be queried through every getter, sliced with `tensor_data`, and
//! written back by `GgufWriter` into a file that reads back the same.
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
        let _ = value.type_name();
        let _ = (
            value.as_u64(),
            value.as_i64(),
            value.as_f64(),
            value.as_str(),
        );
        let _ = file.get_u32(key);
        let _ = file.get_u64(key);
        let _ = file.get_i64(key);
        let _ = file.get_f32(key);
        let _ = file.get_bool(key);
        let _ = file.get_str(key);
        if let Ok(a) = file.get_array(key) {
            let _ = (a.len(), a.elem_type_name(), a.as_strings(), a.as_f32s());
            let _ = (a.as_i32s(), a.as_u32s(), a.to_i64s());
        }
        let _ = file.get_u32_opt(key);
        let _ = file.get_u64_opt(key);
        let _ = file.get_f32_opt(key);
        let _ = file.get_bool_opt(key);
        let _ = file.get_str_opt(key);
        let _ = file.get_array_opt(key);
    }
    let _ = file.architecture();
    for suffix in [
        "block_count",
        "context_length",
        "rope.freq_base",
        "attention.head_count",
    ] {
        let _ = file.arch_u32(suffix);
        let _ = file.arch_u32_opt(suffix);
        let _ = file.arch_f32(suffix);
        let _ = file.arch_f32_opt(suffix);
        let _ = file.arch_str_opt(suffix);
        let _ = file.arch_bool_opt(suffix);
        let _ = file.arch_array_opt(suffix);
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
