//! The reader on the synthetic golden models (`fixtures/golden/synthetic/models/*.gguf`, written
//! by the reference's own tools): each opens, each tensor's bytes lie inside the file, and
//! writing back what was read reproduces the file byte for byte.

use std::path::PathBuf;

use openweight::gguf::{GgufFile, GgufWriter};

fn synthetic_models() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/golden/synthetic/models");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
        .collect();
    paths.sort();
    assert!(
        paths.len() >= 30,
        "expected the synthetic models in {}",
        dir.display()
    );
    paths
}

#[test]
fn every_synthetic_model_opens_with_its_tensors_inside_the_file() {
    for path in synthetic_models() {
        let f = GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(f.architecture().is_ok(), "{}", path.display());
        assert!(!f.tensors().is_empty(), "{}", path.display());
        for t in f.tensors() {
            let start = f.data_offset() + t.offset;
            assert!(
                start + t.n_bytes <= f.file_len(),
                "{}: {}",
                path.display(),
                t.name
            );
            assert_eq!(start % f.alignment(), 0, "{}: {}", path.display(), t.name);
            assert_eq!(f.tensor_data(t).len() as u64, t.n_bytes);
        }
    }
}

#[test]
fn writing_back_a_synthetic_model_reproduces_it_byte_for_byte() {
    for path in synthetic_models() {
        let original = std::fs::read(&path).unwrap();
        let f = GgufFile::from_bytes(original.clone()).unwrap();
        let mut w = GgufWriter::new();
        w.set_version(f.version()).unwrap();
        for (k, v) in f.metadata() {
            w.add_metadata(k.clone(), v.clone()).unwrap();
        }
        for t in f.tensors() {
            w.add_tensor(t.name.clone(), &t.ne, t.type_id, f.tensor_data(t))
                .unwrap();
        }
        let rewritten = w.to_bytes().unwrap();
        assert_eq!(rewritten.len(), original.len(), "{}", path.display());
        assert!(rewritten == original, "{}: bytes differ", path.display());
    }
}
