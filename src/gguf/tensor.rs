//! Tensor descriptors: name, shape, type and where the bytes are.

use super::types::type_name;

/// One tensor's description from the file's tensor-info table (validated by the reader).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Dimensions, innermost first: `ne[0]` elements are contiguous (1 to 4 entries).
    pub ne: Vec<u64>,
    /// ggml type id (see [`type_name`](super::type_name)).
    pub type_id: u32,
    /// Byte offset of the data, relative to the start of the data section.
    pub offset: u64,
    /// Size of the data in bytes.
    pub n_bytes: u64,
}

impl TensorInfo {
    /// The type's name (`"Q4_K"`), or `"unknown"` for an id outside the ggml type table (never
    /// the case for a tensor returned by the reader).
    pub fn type_name(&self) -> &'static str {
        type_name(self.type_id).unwrap_or("unknown")
    }

    /// Total number of elements (the product of `ne`; the reader has checked it fits `i64`).
    pub fn n_elements(&self) -> u64 {
        self.ne.iter().fold(1u64, |acc, &n| acc.saturating_mul(n))
    }
}
