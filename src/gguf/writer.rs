//! Writing GGUF files: metadata and tensors, laid out with the file's alignment.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use super::error::GgufError;
use super::reader::{ALIGNMENT_KEY, DEFAULT_ALIGNMENT};
use super::types::{tensor_bytes, type_info};
use super::value::{Array, Value};

/// One tensor waiting to be written.
#[derive(Debug, Clone)]
struct PendingTensor {
    name: String,
    ne: Vec<u64>,
    type_id: u32,
    bytes: Vec<u8>,
}

/// Builds a GGUF file: add metadata and tensors in the order they should appear, then write.
///
/// Tensor data is laid out in insertion order, each tensor starting at the next multiple of the
/// alignment (`general.alignment` if set, else 32) and padded with zeros to it, as llama.cpp and
/// the `gguf` Python package do, so that reading a standard file and writing it back reproduces
/// it byte for byte.
#[derive(Debug, Clone)]
pub struct GgufWriter {
    version: u32,
    metadata: Vec<(String, Value)>,
    keys: HashSet<String>,
    tensors: Vec<PendingTensor>,
    tensor_names: HashSet<String>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        GgufWriter::new()
    }
}

impl GgufWriter {
    /// An empty version-3 file.
    pub fn new() -> GgufWriter {
        GgufWriter {
            version: 3,
            metadata: Vec::new(),
            keys: HashSet::new(),
            tensors: Vec::new(),
            tensor_names: HashSet::new(),
        }
    }

    /// Sets the version written in the header (2 or 3; the layouts are identical).
    pub fn set_version(&mut self, version: u32) -> Result<(), GgufError> {
        if version != 2 && version != 3 {
            return Err(GgufError::WriteVersion { version });
        }
        self.version = version;
        Ok(())
    }

    /// Appends a metadata pair. Setting `general.alignment` (a power-of-two `uint32`) changes
    /// the data alignment.
    pub fn add_metadata(&mut self, key: impl Into<String>, value: Value) -> Result<(), GgufError> {
        let key = key.into();
        if key == ALIGNMENT_KEY && !matches!(value, Value::U32(a) if a.is_power_of_two()) {
            return Err(GgufError::BadAlignment {
                offset: 0,
                found: format!("{value:?}"),
            });
        }
        if !self.keys.insert(key.clone()) {
            return Err(GgufError::WriteDuplicate {
                what: "metadata key",
                name: key,
            });
        }
        self.metadata.push((key, value));
        Ok(())
    }

    /// Appends a tensor of ggml type `type_id` and shape `ne` (innermost first, 1 to 4 dims).
    /// `bytes` must be exactly the size the type and shape require.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        ne: &[u64],
        type_id: u32,
        bytes: impl Into<Vec<u8>>,
    ) -> Result<(), GgufError> {
        let name = name.into();
        let bytes = bytes.into();
        let Some(info) = type_info(type_id) else {
            return Err(GgufError::UnknownTensorType {
                offset: 0,
                name,
                type_id,
            });
        };
        if ne.is_empty() || ne.len() > 4 {
            return Err(GgufError::BadDimCount {
                offset: 0,
                name,
                n_dims: ne.len() as u32,
            });
        }
        if !ne[0].is_multiple_of(info.block_elems) {
            return Err(GgufError::PartialBlock {
                offset: 0,
                name,
                ne0: ne[0],
                type_name: info.name,
                block_elems: info.block_elems,
            });
        }
        let Some(expected) = tensor_bytes(type_id, ne) else {
            return Err(GgufError::ShapeOverflow {
                offset: 0,
                name,
                ne: ne.to_vec(),
            });
        };
        if expected != bytes.len() as u64 {
            return Err(GgufError::WriteTensorSize {
                name,
                ne: ne.to_vec(),
                expected,
                found: bytes.len() as u64,
            });
        }
        if !self.tensor_names.insert(name.clone()) {
            return Err(GgufError::WriteDuplicate {
                what: "tensor",
                name,
            });
        }
        self.tensors.push(PendingTensor {
            name,
            ne: ne.to_vec(),
            type_id,
            bytes,
        });
        Ok(())
    }

    /// The alignment the data section will use.
    pub fn alignment(&self) -> u64 {
        self.metadata
            .iter()
            .find(|(k, _)| k == ALIGNMENT_KEY)
            .and_then(|(_, v)| match v {
                Value::U32(a) => Some(u64::from(*a)),
                _ => None,
            })
            .unwrap_or(DEFAULT_ALIGNMENT)
    }

    /// The whole file as bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, GgufError> {
        let mut out = Vec::new();
        self.encode(&mut out);
        Ok(out)
    }

    /// Writes the file to `path` (created or truncated).
    pub fn write_file(&self, path: impl AsRef<Path>) -> Result<(), GgufError> {
        let path = path.as_ref();
        let io_err = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = std::io::BufWriter::new(std::fs::File::create(path).map_err(io_err)?);
        let mut header = Vec::new();
        self.encode_header(&mut header);
        file.write_all(&header).map_err(io_err)?;
        let align = self.alignment() as usize;
        for t in &self.tensors {
            file.write_all(&t.bytes).map_err(io_err)?;
            let pad = t.bytes.len().next_multiple_of(align) - t.bytes.len();
            file.write_all(&vec![0u8; pad]).map_err(io_err)?;
        }
        file.flush().map_err(io_err)
    }

    /// Header, metadata, tensor infos and padding up to the data section.
    fn encode_header(&self, out: &mut Vec<u8>) {
        let align = self.alignment();
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            put_str(out, key);
            out.extend_from_slice(&value.type_id().to_le_bytes());
            put_value(out, value);
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            put_str(out, &t.name);
            out.extend_from_slice(&(t.ne.len() as u32).to_le_bytes());
            for &n in &t.ne {
                out.extend_from_slice(&n.to_le_bytes());
            }
            out.extend_from_slice(&t.type_id.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offset = (offset + t.bytes.len() as u64).next_multiple_of(align);
        }
        out.resize((out.len() as u64).next_multiple_of(align) as usize, 0);
    }

    fn encode(&self, out: &mut Vec<u8>) {
        self.encode_header(out);
        let align = self.alignment() as usize;
        for t in &self.tensors {
            out.extend_from_slice(&t.bytes);
            out.resize(out.len().next_multiple_of(align), 0);
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(u8::from(*x)),
        Value::String(s) => put_str(out, s),
        Value::Array(a) => put_array(out, a),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

fn put_array(out: &mut Vec<u8>, a: &Array) {
    out.extend_from_slice(&a.elem_type_id().to_le_bytes());
    out.extend_from_slice(&(a.len() as u64).to_le_bytes());
    fn each<T: Copy, const N: usize>(out: &mut Vec<u8>, v: &[T], f: impl Fn(T) -> [u8; N]) {
        out.reserve(v.len() * N);
        for &x in v {
            out.extend_from_slice(&f(x));
        }
    }
    match a {
        Array::U8(v) => out.extend_from_slice(v),
        Array::I8(v) => each(out, v, i8::to_le_bytes),
        Array::U16(v) => each(out, v, u16::to_le_bytes),
        Array::I16(v) => each(out, v, i16::to_le_bytes),
        Array::U32(v) => each(out, v, u32::to_le_bytes),
        Array::I32(v) => each(out, v, i32::to_le_bytes),
        Array::F32(v) => each(out, v, f32::to_le_bytes),
        Array::Bool(v) => each(out, v, |b| [u8::from(b)]),
        Array::String(v) => v.iter().for_each(|s| put_str(out, s)),
        Array::Array(v) => v.iter().for_each(|inner| put_array(out, inner)),
        Array::U64(v) => each(out, v, u64::to_le_bytes),
        Array::I64(v) => each(out, v, i64::to_le_bytes),
        Array::F64(v) => each(out, v, f64::to_le_bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{GgufFile, TensorInfo};
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn empty_file_is_a_bare_padded_header() {
        let bytes = GgufWriter::new().to_bytes().unwrap();
        assert_eq!(bytes.len(), 32);
        assert_eq!(&bytes[..8], b"GGUF\x03\0\0\0");
        let f = GgufFile::from_bytes(bytes).unwrap();
        assert_eq!((f.version(), f.data_offset()), (3, 32));
    }

    #[test]
    fn general_alignment_sets_tensor_alignment() {
        let mut w = GgufWriter::new();
        w.add_metadata("general.alignment", Value::U32(64)).unwrap();
        w.add_tensor("a", &[1], 0, vec![0u8; 4]).unwrap();
        w.add_tensor("b", &[1], 0, vec![0u8; 4]).unwrap();
        let f = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();
        assert_eq!(f.alignment(), 64);
        assert_eq!(f.data_offset() % 64, 0);
        assert_eq!(f.tensor("b").unwrap().offset, 64);
    }

    #[test]
    fn rejects_bad_alignment_duplicates_and_wrong_sizes() {
        let mut w = GgufWriter::new();
        assert!(matches!(
            w.add_metadata("general.alignment", Value::U32(48)),
            Err(GgufError::BadAlignment { .. })
        ));
        w.add_metadata("k", Value::U8(1)).unwrap();
        assert!(matches!(
            w.add_metadata("k", Value::U8(2)),
            Err(GgufError::WriteDuplicate { .. })
        ));
        assert!(matches!(
            w.add_tensor("t", &[32], 2, vec![0u8; 17]),
            Err(GgufError::WriteTensorSize {
                expected: 18,
                found: 17,
                ..
            })
        ));
        assert!(matches!(
            w.add_tensor("t", &[16], 2, vec![0u8; 18]),
            Err(GgufError::PartialBlock { .. })
        ));
        assert!(matches!(
            w.add_tensor("t", &[1], 4, vec![0u8; 18]),
            Err(GgufError::UnknownTensorType { type_id: 4, .. })
        ));
        assert!(matches!(
            w.set_version(1),
            Err(GgufError::WriteVersion { version: 1 })
        ));
    }

    #[test]
    fn write_file_matches_to_bytes() {
        let mut w = GgufWriter::new();
        w.add_metadata("s", Value::String("x".into())).unwrap();
        w.add_tensor("t", &[3], 0, vec![7u8; 12]).unwrap();
        let path = std::env::temp_dir().join(format!("ow-gguf-writer-{}.gguf", std::process::id()));
        w.write_file(&path).unwrap();
        let on_disk = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(on_disk, w.to_bytes().unwrap());
    }

    fn leaf_array() -> impl Strategy<Value = Array> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..6).prop_map(Array::U8),
            prop::collection::vec(any::<i8>(), 0..6).prop_map(Array::I8),
            prop::collection::vec(any::<u16>(), 0..6).prop_map(Array::U16),
            prop::collection::vec(any::<i16>(), 0..6).prop_map(Array::I16),
            prop::collection::vec(any::<u32>(), 0..6).prop_map(Array::U32),
            prop::collection::vec(any::<i32>(), 0..6).prop_map(Array::I32),
            prop::collection::vec(-1e30f32..1e30, 0..6).prop_map(Array::F32),
            prop::collection::vec(any::<bool>(), 0..6).prop_map(Array::Bool),
            prop::collection::vec(".{0,8}", 0..6).prop_map(Array::String),
            prop::collection::vec(any::<u64>(), 0..6).prop_map(Array::U64),
            prop::collection::vec(any::<i64>(), 0..6).prop_map(Array::I64),
            prop::collection::vec(-1e300f64..1e300, 0..6).prop_map(Array::F64),
        ]
    }

    fn array() -> impl Strategy<Value = Array> {
        // Up to 3 levels of arrays of arrays, each inner array with its own element type.
        leaf_array().prop_recursive(3, 24, 4, |inner| {
            prop::collection::vec(inner, 0..4).prop_map(Array::Array)
        })
    }

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<u8>().prop_map(Value::U8),
            any::<i8>().prop_map(Value::I8),
            any::<u16>().prop_map(Value::U16),
            any::<i16>().prop_map(Value::I16),
            any::<u32>().prop_map(Value::U32),
            any::<i32>().prop_map(Value::I32),
            any::<f32>()
                .prop_filter("NaN != NaN", |x| !x.is_nan())
                .prop_map(Value::F32),
            any::<bool>().prop_map(Value::Bool),
            ".{0,16}".prop_map(Value::String),
            array().prop_map(Value::Array),
            any::<u64>().prop_map(Value::U64),
            any::<i64>().prop_map(Value::I64),
            any::<f64>()
                .prop_filter("NaN != NaN", |x| !x.is_nan())
                .prop_map(Value::F64),
        ]
    }

    /// A tensor: (type id, ne) with data bytes drawn to fit.
    fn tensor() -> impl Strategy<Value = (u32, Vec<u64>, Vec<u8>)> {
        let type_id = prop::sample::select(vec![0u32, 1, 2, 3, 8, 12, 14, 16, 24, 30, 39]);
        (type_id, prop::collection::vec(1u64..4, 0..3), 1u64..3).prop_flat_map(
            |(type_id, outer, blocks)| {
                let (block_elems, _) = super::super::block_geometry(type_id).unwrap();
                let mut ne = vec![blocks * block_elems];
                ne.extend(outer);
                let n = tensor_bytes(type_id, &ne).unwrap() as usize;
                prop::collection::vec(any::<u8>(), n).prop_map(move |b| (type_id, ne.clone(), b))
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn read_of_write_returns_what_was_written(
            version in 2u32..=3,
            alignment in prop::option::of(prop::sample::select(vec![1u32, 8, 32, 64, 256])),
            metadata in prop::collection::btree_map("[a-z.]{1,12}", value(), 0..8),
            tensors in prop::collection::vec(tensor(), 0..5),
        ) {
            let mut w = GgufWriter::new();
            w.set_version(version).unwrap();
            let mut expected_meta = Vec::new();
            if let Some(a) = alignment {
                w.add_metadata("general.alignment", Value::U32(a)).unwrap();
                expected_meta.push(("general.alignment".to_owned(), Value::U32(a)));
            }
            for (k, v) in metadata {
                if k == "general.alignment" {
                    continue;
                }
                w.add_metadata(k.clone(), v.clone()).unwrap();
                expected_meta.push((k, v));
            }
            for (i, (type_id, ne, bytes)) in tensors.iter().enumerate() {
                w.add_tensor(format!("t{i}"), ne, *type_id, bytes.clone()).unwrap();
            }
            let bytes = w.to_bytes().unwrap();
            let f = GgufFile::from_bytes(bytes.clone()).unwrap();

            prop_assert_eq!(f.version(), version);
            prop_assert_eq!(f.alignment(), u64::from(alignment.unwrap_or(32)));
            prop_assert_eq!(f.metadata(), &expected_meta[..]);
            prop_assert_eq!(f.tensors().len(), tensors.len());
            for (i, (t, (type_id, ne, data))) in f.tensors().iter().zip(&tensors).enumerate() {
                let want = TensorInfo {
                    name: format!("t{i}"),
                    ne: ne.clone(),
                    type_id: *type_id,
                    offset: t.offset,
                    n_bytes: data.len() as u64,
                };
                prop_assert_eq!(t, &want);
                prop_assert_eq!(t.offset % f.alignment(), 0);
                prop_assert_eq!(f.tensor_data(t), &data[..]);
            }

            // Writing what was read reproduces the file byte for byte.
            let mut again = GgufWriter::new();
            again.set_version(f.version()).unwrap();
            for (k, v) in f.metadata() {
                again.add_metadata(k.clone(), v.clone()).unwrap();
            }
            for t in f.tensors() {
                again.add_tensor(t.name.clone(), &t.ne, t.type_id, f.tensor_data(t)).unwrap();
            }
            prop_assert_eq!(again.to_bytes().unwrap(), bytes);
        }
    }
}
