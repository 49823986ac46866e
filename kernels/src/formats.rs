//! The one table that maps a GGUF type to everything the rest of the program needs to know
//! about it: block geometry, the activation format its dot product pairs with, the scalar
//! dequantizer and quantizer, and (through [`crate::dispatch`]) its dot kernel.
//!
//! Model code looks types up here and never `match`es on quant types itself.

use crate::dispatch::{self, DotFn};
use crate::types::GgmlType;

/// Everything the runtime knows about one tensor type.
pub struct Format {
    /// The type this row describes.
    pub ty: GgmlType,
    /// Elements per block (1 for F32/F16/BF16, 32 for legacy quants, 256 for K-quants).
    pub block_elems: usize,
    /// Bytes per block.
    pub block_bytes: usize,
    /// The activation type a dot product with this weight type expects.
    pub vec_dot_type: GgmlType,
    /// Scalar reference dequantization of whole blocks:
    /// `src.len() == n_blocks * block_bytes`, `dst.len() == n_blocks * block_elems`.
    pub dequantize: fn(src: &[u8], dst: &mut [f32]),
    /// Scalar reference quantization of whole blocks, for the types we can produce.
    pub quantize: Option<fn(src: &[f32], dst: &mut [u8])>,
}

impl Format {
    /// Bytes of a row of `n_elems` elements (which must be a multiple of `block_elems`).
    pub fn row_bytes(&self, n_elems: usize) -> usize {
        n_elems / self.block_elems * self.block_bytes
    }

    /// The dot kernel for this weight type on this CPU (see [`dispatch::best`]).
    pub fn dot(&self) -> Option<DotFn> {
        dispatch::best().dot(self.ty)
    }
}

/// The descriptor for `ty`. PLACEHOLDER table: being written; only F32 so far.
pub fn format(ty: GgmlType) -> &'static Format {
    static F32: Format = Format {
        ty: GgmlType::F32,
        block_elems: 1,
        block_bytes: 4,
        vec_dot_type: GgmlType::F32,
        dequantize: |s, d| d.copy_from_slice(bytemuck::cast_slice(s)),
        quantize: None,
    };
    match ty {
        GgmlType::F32 => &F32,
        other => panic!("format table not written yet for {other}"),
    }
}
