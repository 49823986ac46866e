//! Everything that can go wrong reading, querying or writing a GGUF file.

use std::path::PathBuf;

/// Why a GGUF file could not be read, queried or written.
///
/// Reading errors carry the absolute byte `offset` in the file where the problem was found and,
/// where one is involved, the metadata key or tensor name, so that the message points at the
/// broken spot. Each kind of damage has its own variant; match on it rather than on the text.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened, inspected or memory-mapped (or written, for the writer).
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The first four bytes are not `GGUF`.
    #[error(
        "byte {offset}: not a GGUF file (starts with \"{}\" instead of \"GGUF\")",
        found.escape_ascii()
    )]
    BadMagic {
        /// Always 0.
        offset: u64,
        /// The bytes found instead (fewer than 4 if the file is shorter).
        found: Vec<u8>,
    },
    /// The version field is not 2 or 3 (version 1 used 32-bit counts and is not supported).
    #[error("byte {offset}: unsupported GGUF version {version} (only 2 and 3 are supported)")]
    UnsupportedVersion {
        /// Offset of the version field (4).
        offset: u64,
        /// The version found.
        version: u32,
    },
    /// The file ends before a fixed-size field or a block of bytes it announced.
    #[error(
        "byte {offset}: file truncated: {what} needs {needed} bytes but only {available} remain"
    )]
    Truncated {
        /// Where the missing field starts.
        offset: u64,
        /// How many bytes the field needs.
        needed: u64,
        /// How many bytes the file still has from `offset`.
        available: u64,
        /// What was being read, naming the key or tensor (e.g. `value of key "general.name"`).
        what: String,
    },
    /// The tensor or key count in the header is more than the file could possibly hold.
    #[error("byte {offset}: the header announces {count} {what}, more than the file can hold")]
    CountTooLarge {
        /// Offset of the count field.
        offset: u64,
        /// `"tensors"` or `"metadata keys"`.
        what: &'static str,
        /// The count found.
        count: u64,
    },
    /// A string's length prefix points past the end of the file.
    #[error("byte {offset}: {what}: string of {len} bytes runs past the end of the file ({available} bytes remain)")]
    StringPastEnd {
        /// Offset of the length prefix.
        offset: u64,
        /// The length found.
        len: u64,
        /// Bytes remaining after the length prefix.
        available: u64,
        /// What the string is (e.g. `key #3`, `name of tensor #0`, `value of key "general.name"`).
        what: String,
    },
    /// An array's element count cannot fit in the rest of the file.
    #[error("byte {offset}: key {key:?}: array of {count} {elem_type} elements cannot fit in the {available} bytes left in the file")]
    ArrayPastEnd {
        /// Offset of the count field.
        offset: u64,
        /// The key holding the array.
        key: String,
        /// The element type name.
        elem_type: &'static str,
        /// The count found.
        count: u64,
        /// Bytes remaining after the count field.
        available: u64,
    },
    /// Arrays nested deeper than [`MAX_ARRAY_DEPTH`](crate::gguf::MAX_ARRAY_DEPTH).
    #[error("byte {offset}: key {key:?}: arrays nested more than {max} deep")]
    ArrayTooDeep {
        /// Offset of the array that exceeded the limit.
        offset: u64,
        /// The key holding the array.
        key: String,
        /// The limit.
        max: usize,
    },
    /// A string (key, tensor name or value) is not valid UTF-8.
    #[error("byte {offset}: {what} is not valid UTF-8")]
    InvalidUtf8 {
        /// Offset of the string's first byte.
        offset: u64,
        /// What the string is (e.g. `key #3`, `value of key "general.name"`).
        what: String,
    },
    /// A metadata value type id outside 0..=12.
    #[error("byte {offset}: key {key:?}: unknown metadata value type {type_id}")]
    UnknownValueType {
        /// Offset of the type field.
        offset: u64,
        /// The key whose value has that type.
        key: String,
        /// The type id found.
        type_id: u32,
    },
    /// A bool value byte other than 0 or 1.
    #[error("byte {offset}: key {key:?}: bool value byte is {byte}, expected 0 or 1")]
    InvalidBool {
        /// Offset of the byte.
        offset: u64,
        /// The key holding the value.
        key: String,
        /// The byte found.
        byte: u8,
    },
    /// The same metadata key appears twice.
    #[error("byte {offset}: duplicate metadata key {key:?}")]
    DuplicateKey {
        /// Offset of the second occurrence.
        offset: u64,
        /// The key.
        key: String,
    },
    /// `general.alignment` is not a non-zero power of two stored as uint32.
    #[error("byte {offset}: general.alignment must be a power-of-two uint32, found {found}")]
    BadAlignment {
        /// Offset of the key's value (0 when raised by the writer).
        offset: u64,
        /// The value found, as text (`"uint32 0"`, `"string"`, ...).
        found: String,
    },
    /// Two tensors have the same name.
    #[error("byte {offset}: duplicate tensor name {name:?}")]
    DuplicateTensor {
        /// Offset of the second tensor info.
        offset: u64,
        /// The name.
        name: String,
    },
    /// A tensor with 0 or more than 4 dimensions.
    #[error("byte {offset}: tensor {name:?} has {n_dims} dimensions (expected 1 to 4)")]
    BadDimCount {
        /// Offset of the `n_dims` field.
        offset: u64,
        /// The tensor.
        name: String,
        /// The count found.
        n_dims: u32,
    },
    /// A tensor's dimensions, element count or byte size overflow (more than `i64::MAX`).
    #[error("byte {offset}: tensor {name:?}: shape {ne:?} overflows")]
    ShapeOverflow {
        /// Offset of the dimensions.
        offset: u64,
        /// The tensor.
        name: String,
        /// The dimensions found.
        ne: Vec<u64>,
    },
    /// A tensor type id that is not a known ggml type.
    #[error("byte {offset}: tensor {name:?} has unknown type id {type_id}")]
    UnknownTensorType {
        /// Offset of the type field (0 when raised by the writer).
        offset: u64,
        /// The tensor.
        name: String,
        /// The id found.
        type_id: u32,
    },
    /// A tensor's row length `ne[0]` is not a multiple of its type's block size.
    #[error("byte {offset}: tensor {name:?}: ne[0] = {ne0} is not a multiple of the {type_name} block size {block_elems}")]
    PartialBlock {
        /// Offset of the dimensions (0 when raised by the writer).
        offset: u64,
        /// The tensor.
        name: String,
        /// The row length.
        ne0: u64,
        /// The type's name.
        type_name: &'static str,
        /// Elements per block of that type.
        block_elems: u64,
    },
    /// A tensor's offset is not a multiple of the file's alignment.
    #[error("byte {offset}: tensor {name:?}: data offset {tensor_offset} is not a multiple of the alignment {alignment}")]
    MisalignedTensor {
        /// Offset of the tensor's offset field.
        offset: u64,
        /// The tensor.
        name: String,
        /// The tensor's offset (relative to the data section).
        tensor_offset: u64,
        /// The alignment.
        alignment: u64,
    },
    /// A tensor's data runs past the end of the file.
    #[error("byte {offset}: tensor {name:?}: data bytes {start}..{end} run past the end of the file ({file_len} bytes)")]
    TensorPastEnd {
        /// Offset of the tensor's offset field.
        offset: u64,
        /// The tensor.
        name: String,
        /// Absolute start of the data (saturated at `u64::MAX` if it overflows).
        start: u64,
        /// Absolute end of the data (saturated at `u64::MAX` if it overflows).
        end: u64,
        /// The file size.
        file_len: u64,
    },
    /// Two tensors' data ranges overlap.
    #[error("byte {offset}: tensor {name:?} (data {start}..{end}) overlaps tensor {other:?}")]
    TensorOverlap {
        /// Offset of the tensor's offset field.
        offset: u64,
        /// The tensor whose data starts inside the other one's.
        name: String,
        /// Its absolute data start.
        start: u64,
        /// Its absolute data end.
        end: u64,
        /// The tensor it overlaps.
        other: String,
    },
    /// A metadata key the caller asked for is absent.
    #[error("metadata key {key:?} is missing")]
    MissingKey {
        /// The key.
        key: String,
    },
    /// A metadata value has a type the caller cannot use.
    #[error("metadata key {key:?} has type {found}, expected {expected}")]
    WrongType {
        /// The key.
        key: String,
        /// What the caller asked for (`uint32`, `string`, ...).
        expected: &'static str,
        /// The type stored in the file.
        found: &'static str,
    },
    /// An integer value of a usable type that does not fit the requested type.
    #[error("metadata key {key:?}: value {value} does not fit in {expected}")]
    OutOfRange {
        /// The key.
        key: String,
        /// What the caller asked for (`uint32`, `int64`, ...).
        expected: &'static str,
        /// The value, as text.
        value: String,
    },
    /// The writer was given the same key or tensor name twice.
    #[error("cannot write GGUF: {what} {name:?} added twice")]
    WriteDuplicate {
        /// `"metadata key"` or `"tensor"`.
        what: &'static str,
        /// The key or name.
        name: String,
    },
    /// The writer was given a tensor whose byte count does not match its type and shape.
    #[error(
        "cannot write GGUF: tensor {name:?} of shape {ne:?} needs {expected} bytes, got {found}"
    )]
    WriteTensorSize {
        /// The tensor.
        name: String,
        /// Its shape.
        ne: Vec<u64>,
        /// Bytes its type and shape need.
        expected: u64,
        /// Bytes supplied.
        found: u64,
    },
    /// The writer was asked to write a version other than 2 or 3.
    #[error("cannot write GGUF version {version} (only 2 and 3)")]
    WriteVersion {
        /// The version asked for.
        version: u32,
    },
}
