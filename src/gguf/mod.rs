//! The GGUF container: a validated, memory-mapped view of a model file.
//!
//! [`GgufFile::open`] maps the file with `memmap2`, parses the header (versions 2 and 3), all
//! metadata (the 13 value types, arrays of arrays included) and the tensor-info table, and
//! checks every count, length, offset and size against the file before using it, so that any
//! byte string yields either a valid [`GgufFile`] or a specific [`GgufError`], never a panic.
//! Tensor data is not read at open: [`GgufFile::tensor_data`] returns a zero-copy slice of the
//! mapping, so only the pages a caller touches are ever loaded. Metadata is read through typed
//! getters ([`GgufFile::get_u32`], [`GgufFile::arch_u32`], ...) whose errors name the key and
//! the type found. [`GgufWriter`] writes files in the same layout, and [`type_info`] knows the
//! name and block geometry of every ggml tensor type, independently of the kernels crate.

mod error;
mod reader;
mod tensor;
mod types;
mod value;
mod writer;

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

pub use error::GgufError;
pub use reader::{DEFAULT_ALIGNMENT, MAX_ARRAY_DEPTH};
pub use tensor::TensorInfo;
pub use types::{block_geometry, tensor_bytes, type_info, type_name, TypeInfo};
pub use value::{Array, Value};
pub use writer::GgufWriter;

/// Where the file's bytes live.
enum Backing {
    /// A read-only mapping of a file on disk.
    Mapped(memmap2::Mmap),
    /// Bytes handed over by the caller.
    Owned(Vec<u8>),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Backing::Mapped(m) => m,
            Backing::Owned(v) => v,
        }
    }
}

/// An open, validated GGUF file: header, metadata, tensor infos, and zero-copy tensor data.
pub struct GgufFile {
    backing: Backing,
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Vec<(String, Value)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version)
            .field("file_len", &self.file_len())
            .field("alignment", &self.alignment)
            .field("data_offset", &self.data_offset)
            .field("n_metadata", &self.metadata.len())
            .field("n_tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Opens and validates the GGUF file at `path`, memory-mapping it (tensor data is not read).
    ///
    /// The file must not be modified or truncated by another process while it is open: the
    /// mapping would then show the change, or the process could receive `SIGBUS`.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, GgufError> {
        let path = path.as_ref();
        let io_err = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        if len == 0 {
            // Mapping an empty file fails on some platforms; an empty file is simply truncated.
            return GgufFile::from_bytes(Vec::new());
        }
        // SAFETY: the mapping is read-only and private to this `GgufFile`. Its soundness relies on
        // the documented requirement that no one modifies or truncates the file while it is
        // mapped; all reads go through bounds-checked slices of the mapping's length.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io_err)?;
        GgufFile::from_backing(Backing::Mapped(map))
    }

    /// Validates `bytes` as a GGUF file exactly as [`GgufFile::open`] does (for tests and fuzzing).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
        GgufFile::from_backing(Backing::Owned(bytes))
    }

    fn from_backing(backing: Backing) -> Result<GgufFile, GgufError> {
        let p = reader::parse(backing.bytes())?;
        Ok(GgufFile {
            backing,
            version: p.version,
            alignment: p.alignment,
            data_offset: p.data_offset,
            metadata: p.metadata,
            key_index: p.key_index,
            tensors: p.tensors,
            tensor_index: p.tensor_index,
        })
    }

    /// The GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The alignment of tensor data: `general.alignment`, or 32 when absent.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// The absolute byte offset where the data section starts (tensor offsets are relative to it).
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// The file's size in bytes.
    pub fn file_len(&self) -> u64 {
        self.backing.bytes().len() as u64
    }

    /// All metadata pairs in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.key_index.get(key).map(|&i| &self.metadata[i].1)
    }

    fn require(&self, key: &str) -> Result<&Value, GgufError> {
        self.get(key).ok_or_else(|| GgufError::MissingKey {
            key: key.to_owned(),
        })
    }

    /// Converts an integer value with `conv`, telling a wrong type from a value out of range.
    fn integer<T>(
        key: &str,
        value: &Value,
        expected: &'static str,
        conv: impl Fn(&Value) -> Option<T>,
    ) -> Result<T, GgufError> {
        if !value.is_integer() {
            return Err(wrong_type(key, expected, value));
        }
        conv(value).ok_or_else(|| GgufError::OutOfRange {
            key: key.to_owned(),
            expected,
            value: value.integer_text(),
        })
    }

    /// `key` as `u32`; any integer type is accepted if the value fits.
    pub fn get_u32(&self, key: &str) -> Result<u32, GgufError> {
        Self::integer(key, self.require(key)?, "uint32", |v| {
            v.as_u64().and_then(|x| u32::try_from(x).ok())
        })
    }

    /// `key` as `u64`; any integer type is accepted if the value is non-negative.
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        Self::integer(key, self.require(key)?, "uint64", Value::as_u64)
    }

    /// `key` as `i64`; any integer type is accepted if the value fits.
    pub fn get_i64(&self, key: &str) -> Result<i64, GgufError> {
        Self::integer(key, self.require(key)?, "int64", Value::as_i64)
    }

    /// `key` as `f32`; `float32` and `float64` (rounded to `f32`) are accepted.
    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        match self.require(key)? {
            Value::F32(v) => Ok(*v),
            Value::F64(v) => Ok(*v as f32),
            other => Err(wrong_type(key, "float32", other)),
        }
    }

    /// `key` as `bool`.
    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> {
        let v = self.require(key)?;
        v.as_bool().ok_or_else(|| wrong_type(key, "bool", v))
    }

    /// `key` as a string.
    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| wrong_type(key, "string", v))
    }

    /// `key` as an array.
    pub fn get_array(&self, key: &str) -> Result<&Array, GgufError> {
        let v = self.require(key)?;
        v.as_array().ok_or_else(|| wrong_type(key, "array", v))
    }

    /// Like [`GgufFile::get_u32`], but `Ok(None)` when the key is absent.
    pub fn get_u32_opt(&self, key: &str) -> Result<Option<u32>, GgufError> {
        self.optional(key, Self::get_u32)
    }

    /// Like [`GgufFile::get_u64`], but `Ok(None)` when the key is absent.
    pub fn get_u64_opt(&self, key: &str) -> Result<Option<u64>, GgufError> {
        self.optional(key, Self::get_u64)
    }

    /// Like [`GgufFile::get_i64`], but `Ok(None)` when the key is absent.
    pub fn get_i64_opt(&self, key: &str) -> Result<Option<i64>, GgufError> {
        self.optional(key, Self::get_i64)
    }

    /// Like [`GgufFile::get_f32`], but `Ok(None)` when the key is absent.
    pub fn get_f32_opt(&self, key: &str) -> Result<Option<f32>, GgufError> {
        self.optional(key, Self::get_f32)
    }

    /// Like [`GgufFile::get_bool`], but `Ok(None)` when the key is absent.
    pub fn get_bool_opt(&self, key: &str) -> Result<Option<bool>, GgufError> {
        self.optional(key, Self::get_bool)
    }

    /// Like [`GgufFile::get_str`], but `Ok(None)` when the key is absent.
    pub fn get_str_opt(&self, key: &str) -> Result<Option<&str>, GgufError> {
        self.optional(key, Self::get_str)
    }

    /// Like [`GgufFile::get_array`], but `Ok(None)` when the key is absent.
    pub fn get_array_opt(&self, key: &str) -> Result<Option<&Array>, GgufError> {
        self.optional(key, Self::get_array)
    }

    fn optional<'a, T>(
        &'a self,
        key: &str,
        get: impl FnOnce(&'a Self, &str) -> Result<T, GgufError>,
    ) -> Result<Option<T>, GgufError> {
        if self.key_index.contains_key(key) {
            get(self, key).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The model architecture, `general.architecture` (e.g. `"llama"`, `"qwen2"`).
    pub fn architecture(&self) -> Result<&str, GgufError> {
        self.get_str("general.architecture")
    }

    /// The key `"{architecture}.{suffix}"`, e.g. `"qwen2.block_count"` for `"block_count"`.
    pub fn arch_key(&self, suffix: &str) -> Result<String, GgufError> {
        Ok(format!("{}.{suffix}", self.architecture()?))
    }

    /// `"{arch}.{suffix}"` as `u32`, e.g. `arch_u32("block_count")`.
    pub fn arch_u32(&self, suffix: &str) -> Result<u32, GgufError> {
        self.get_u32(&self.arch_key(suffix)?)
    }

    /// `"{arch}.{suffix}"` as `u32`, `Ok(None)` when absent.
    pub fn arch_u32_opt(&self, suffix: &str) -> Result<Option<u32>, GgufError> {
        self.get_u32_opt(&self.arch_key(suffix)?)
    }

    /// `"{arch}.{suffix}"` as `u64`, `Ok(None)` when absent.
    pub fn arch_u64_opt(&self, suffix: &str) -> Result<Option<u64>, GgufError> {
        self.get_u64_opt(&self.arch_key(suffix)?)
    }

    /// `"{arch}.{suffix}"` as `f32`.
    pub fn arch_f32(&self, suffix: &str) -> Result<f32, GgufError> {
        self.get_f32(&self.arch_key(suffix)?)
    }

    /// `"{arch}.{suffix}"` as `f32`, `Ok(None)` when absent.
    pub fn arch_f32_opt(&self, suffix: &str) -> Result<Option<f32>, GgufError> {
        self.get_f32_opt(&self.arch_key(suffix)?)
    }

    /// `"{arch}.{suffix}"` as a string, `Ok(None)` when absent.
    pub fn arch_str_opt(&self, suffix: &str) -> Result<Option<&str>, GgufError> {
        self.get_str_opt(&self.arch_key(suffix)?)
    }

    /// `"{arch}.{suffix}"` as `bool`, `Ok(None)` when absent.
    pub fn arch_bool_opt(&self, suffix: &str) -> Result<Option<bool>, GgufError> {
        self.get_bool_opt(&self.arch_key(suffix)?)
    }

    /// `"{arch}.{suffix}"` as an array, `Ok(None)` when absent.
    pub fn arch_array_opt(&self, suffix: &str) -> Result<Option<&Array>, GgufError> {
        self.get_array_opt(&self.arch_key(suffix)?)
    }

    /// All tensor infos in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor called `name`, if present (a hash lookup).
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// Lets the operating system drop the resident pages that lie wholly inside `bytes` (a
    /// slice of this file's data, e.g. part of [`GgufFile::tensor_data`]) from this process's
    /// memory: for tensors whose bytes were copied elsewhere (weights rearranged at load
    /// time), so they are not counted twice. Reading them later stays correct (the pages come
    /// back from the file), only slower. Does nothing for files held in memory, off Unix, or
    /// for a slice that is not inside the mapping.
    pub fn release_pages(&self, bytes: &[u8]) {
        #[cfg(unix)]
        if let Backing::Mapped(map) = &self.backing {
            // Whole 64 KiB units: a multiple of every page size Linux uses (4, 16, 64 KiB).
            const UNIT: usize = 64 * 1024;
            let base = map.as_ptr() as usize;
            let start = bytes.as_ptr() as usize;
            if start < base || start + bytes.len() > base + map.len() {
                return;
            }
            let first = (start - base).next_multiple_of(UNIT);
            let end = (start - base + bytes.len()) / UNIT * UNIT;
            if end > first {
                // SAFETY: the range is inside the mapping (checked above). The mapping is
                // read-only and private, so no page of it was ever written: after
                // MADV_DONTNEED a read faults the page back in from the file with the same
                // bytes, and every slice into the mapping keeps seeing the values it saw
                // (the assumption the mapping already makes: the file is not modified while
                // open). A failed advice changes nothing, so its error is ignored.
                let _ = unsafe {
                    map.unchecked_advise_range(
                        memmap2::UncheckedAdvice::DontNeed,
                        first,
                        end - first,
                    )
                };
            }
        }
        #[cfg(not(unix))]
        let _ = bytes;
    }

    /// The bytes of tensor `t`: a zero-copy slice of the file, exactly `t.n_bytes` long.
    ///
    /// The start is aligned within the file to [`GgufFile::alignment`], but the slice's address
    /// need not be aligned (files given to [`GgufFile::from_bytes`] may sit anywhere in memory).
    ///
    /// # Panics
    /// If `t` was not obtained from this file and its range lies outside it (a caller bug; the
    /// reader has verified the ranges of all of this file's tensors).
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        let range = self
            .data_offset
            .checked_add(t.offset)
            .and_then(|start| Some(start..start.checked_add(t.n_bytes)?))
            .and_then(|r| Some(usize::try_from(r.start).ok()?..usize::try_from(r.end).ok()?));
        range
            .and_then(|r| self.backing.bytes().get(r))
            .unwrap_or_else(|| {
                panic!(
                    "tensor {:?} is not a tensor of this GGUF file (its range lies outside it)",
                    t.name
                )
            })
    }
}

fn wrong_type(key: &str, expected: &'static str, found: &Value) -> GgufError {
    GgufError::WrongType {
        key: key.to_owned(),
        expected,
        found: found.type_name(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(metadata: Vec<(&str, Value)>) -> GgufFile {
        let mut w = GgufWriter::new();
        for (k, v) in metadata {
            w.add_metadata(k, v).unwrap();
        }
        GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap()
    }

    #[test]
    fn gguf_file_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<GgufFile>();
    }

    #[test]
    fn integer_getters_accept_any_integer_type_that_fits() {
        let f = file_with(vec![("a", Value::U8(7)), ("b", Value::I64(70000))]);
        assert_eq!(f.get_u32("a").unwrap(), 7);
        assert_eq!(f.get_u32("b").unwrap(), 70000);
        assert_eq!(f.get_i64("a").unwrap(), 7);
        assert_eq!(f.get_u64("b").unwrap(), 70000);
    }

    #[test]
    fn integer_getters_reject_values_that_do_not_fit() {
        let f = file_with(vec![("neg", Value::I32(-1)), ("big", Value::U64(1 << 40))]);
        assert!(matches!(f.get_u32("neg"), Err(GgufError::OutOfRange { key, .. }) if key == "neg"));
        assert!(matches!(
            f.get_u32("big"),
            Err(GgufError::OutOfRange { .. })
        ));
        assert_eq!(f.get_u64("big").unwrap(), 1 << 40);
    }

    #[test]
    fn wrong_type_names_key_expected_and_found() {
        let f = file_with(vec![("s", Value::String("x".into()))]);
        match f.get_u32("s") {
            Err(GgufError::WrongType {
                key,
                expected,
                found,
            }) => assert_eq!((key.as_str(), expected, found), ("s", "uint32", "string")),
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            f.get_f32("s"),
            Err(GgufError::WrongType {
                found: "string",
                ..
            })
        ));
    }

    #[test]
    fn missing_key_is_an_error_and_opt_getters_return_none() {
        let f = file_with(vec![("x", Value::F32(1.5))]);
        assert!(matches!(f.get_u32("y"), Err(GgufError::MissingKey { key }) if key == "y"));
        assert_eq!(f.get_u32_opt("y").unwrap(), None);
        assert_eq!(f.get_f32_opt("x").unwrap(), Some(1.5));
        assert!(f.get_u32_opt("x").is_err());
    }

    #[test]
    fn get_f32_accepts_float64() {
        let f = file_with(vec![("x", Value::F64(0.25))]);
        assert_eq!(f.get_f32("x").unwrap(), 0.25);
    }

    #[test]
    fn arch_getters_prefix_the_architecture() {
        let f = file_with(vec![
            ("general.architecture", Value::String("qwen2".into())),
            ("qwen2.block_count", Value::U32(24)),
            ("qwen2.rope.freq_base", Value::F32(1e6)),
        ]);
        assert_eq!(f.arch_u32("block_count").unwrap(), 24);
        assert_eq!(f.arch_f32("rope.freq_base").unwrap(), 1e6);
        assert_eq!(f.arch_u32_opt("context_length").unwrap(), None);
        assert!(matches!(
            f.arch_u32("embedding_length"),
            Err(GgufError::MissingKey { key }) if key == "qwen2.embedding_length"
        ));
    }

    #[test]
    fn arch_getters_without_architecture_report_the_missing_key() {
        let f = file_with(vec![]);
        assert!(matches!(
            f.arch_u32("block_count"),
            Err(GgufError::MissingKey { key }) if key == "general.architecture"
        ));
    }

    #[test]
    fn nan_floats_are_read_bit_exactly() {
        // Found by the fuzzer as a harness bug (NaN != NaN), kept as a reader property.
        let nan = f32::from_bits(0x7fc0_1234);
        let f = file_with(vec![("x", Value::Array(Array::F32(vec![nan])))]);
        let read = f.get_array("x").unwrap().as_f32s().unwrap()[0];
        assert_eq!(read.to_bits(), nan.to_bits());
    }

    #[test]
    fn tensor_data_is_the_exact_byte_range() {
        let mut w = GgufWriter::new();
        w.add_tensor("a", &[3], 0, vec![1u8; 12]).unwrap();
        w.add_tensor("b", &[2, 2], 0, vec![2u8; 16]).unwrap();
        let f = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();
        let b = f.tensor("b").unwrap();
        assert_eq!(b.offset, 32);
        assert_eq!(f.tensor_data(b), &[2u8; 16][..]);
        assert_eq!(f.tensor_data(f.tensor("a").unwrap()), &[1u8; 12][..]);
        assert!(f.tensor("c").is_none());
    }

    #[test]
    fn open_reads_a_file_from_disk_and_reports_missing_files() {
        let mut w = GgufWriter::new();
        w.add_metadata("k", Value::Bool(true)).unwrap();
        w.add_tensor("t", &[4], 0, vec![0u8; 16]).unwrap();
        let path = std::env::temp_dir().join(format!("ow-gguf-open-{}.gguf", std::process::id()));
        w.write_file(&path).unwrap();
        let f = GgufFile::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(f.get_bool("k").unwrap());
        assert_eq!(f.tensor_data(&f.tensors()[0]).len(), 16);
        assert!(matches!(GgufFile::open(&path), Err(GgufError::Io { .. })));
    }
}
