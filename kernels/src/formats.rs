//! The one table that maps a GGUF type to everything the rest of the program needs to know
//! about it: block geometry, the activation format its dot product pairs with, the scalar
//! dequantizer and quantizer, and (through [`crate::dispatch`]) its dot kernel.
//!
//! Model code looks types up here and never `match`es on quant types itself.

use crate::blocks::{QK, QK_K};
use crate::dispatch::{self, DotFn, QuantizeFn};
use crate::scalar::{float, kquants, legacy, quantize};
use crate::types::GgmlType;

/// Dequantizes whole blocks: `src.len() == n_blocks * block_bytes`,
/// `dst.len() == n_blocks * block_elems` (panics otherwise: the sizes are the caller's).
pub type DequantizeFn = fn(src: &[u8], dst: &mut [f32]);

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
    pub dequantize: DequantizeFn,
    /// Scalar reference quantization of whole blocks, for the types we can produce:
    /// `src.len() == n_blocks * block_elems`, `dst.len() == n_blocks * block_bytes`.
    pub quantize: Option<QuantizeFn>,
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

/// Shorthand for one row of [`FORMATS`].
const fn row(
    ty: GgmlType,
    block_elems: usize,
    block_bytes: usize,
    vec_dot_type: GgmlType,
    dequantize: DequantizeFn,
    quantize: Option<QuantizeFn>,
) -> Format {
    Format {
        ty,
        block_elems,
        block_bytes,
        vec_dot_type,
        dequantize,
        quantize,
    }
}

/// One row per type, in the order of [`GgmlType::ALL`].
static FORMATS: [Format; 17] = {
    use GgmlType as T;
    [
        row(
            T::F32,
            1,
            4,
            T::F32,
            float::dequantize_f32,
            Some(quantize::quantize_f32),
        ),
        row(
            T::F16,
            1,
            2,
            T::F16,
            float::dequantize_f16,
            Some(quantize::quantize_f16),
        ),
        row(
            T::Q4_0,
            QK,
            18,
            T::Q8_0,
            legacy::dequantize_q4_0,
            Some(quantize::quantize_q4_0),
        ),
        row(
            T::Q4_1,
            QK,
            20,
            T::Q8_1,
            legacy::dequantize_q4_1,
            Some(quantize::quantize_q4_1),
        ),
        row(
            T::Q5_0,
            QK,
            22,
            T::Q8_0,
            legacy::dequantize_q5_0,
            Some(quantize::quantize_q5_0),
        ),
        row(
            T::Q5_1,
            QK,
            24,
            T::Q8_1,
            legacy::dequantize_q5_1,
            Some(quantize::quantize_q5_1),
        ),
        row(
            T::Q8_0,
            QK,
            34,
            T::Q8_0,
            legacy::dequantize_q8_0,
            Some(quantize::quantize_q8_0),
        ),
        row(
            T::Q8_1,
            QK,
            36,
            T::Q8_1,
            legacy::dequantize_q8_1,
            Some(quantize::quantize_q8_1),
        ),
        row(T::Q2_K, QK_K, 84, T::Q8_K, kquants::dequantize_q2_k, None),
        row(T::Q3_K, QK_K, 110, T::Q8_K, kquants::dequantize_q3_k, None),
        row(T::Q4_K, QK_K, 144, T::Q8_K, kquants::dequantize_q4_k, None),
        row(T::Q5_K, QK_K, 176, T::Q8_K, kquants::dequantize_q5_k, None),
        row(T::Q6_K, QK_K, 210, T::Q8_K, kquants::dequantize_q6_k, None),
        row(
            T::Q8_K,
            QK_K,
            292,
            T::Q8_K,
            kquants::dequantize_q8_k,
            Some(quantize::quantize_q8_k),
        ),
        row(T::IQ4_NL, QK, 18, T::Q8_0, legacy::dequantize_iq4_nl, None),
        row(
            T::IQ4_XS,
            QK_K,
            136,
            T::Q8_K,
            kquants::dequantize_iq4_xs,
            None,
        ),
        row(
            T::BF16,
            1,
            2,
            T::BF16,
            float::dequantize_bf16,
            Some(quantize::quantize_bf16),
        ),
    ]
};

/// The descriptor for `ty` (a static table lookup; every [`GgmlType`] has one).
///
/// Q8_1 and Q8_K are activation-only: they have a descriptor (and a quantizer) but no dot
/// kernel as weights; their `vec_dot_type` is themselves.
pub fn format(ty: GgmlType) -> &'static Format {
    let index = match ty {
        GgmlType::F32 => 0,
        GgmlType::F16 => 1,
        GgmlType::Q4_0 => 2,
        GgmlType::Q4_1 => 3,
        GgmlType::Q5_0 => 4,
        GgmlType::Q5_1 => 5,
        GgmlType::Q8_0 => 6,
        GgmlType::Q8_1 => 7,
        GgmlType::Q2_K => 8,
        GgmlType::Q3_K => 9,
        GgmlType::Q4_K => 10,
        GgmlType::Q5_K => 11,
        GgmlType::Q6_K => 12,
        GgmlType::Q8_K => 13,
        GgmlType::IQ4_NL => 14,
        GgmlType::IQ4_XS => 15,
        GgmlType::BF16 => 16,
    };
    &FORMATS[index]
}

#[cfg(test)]
mod tests {
    use std::mem::size_of;

    use super::*;
    use crate::blocks::*;

    #[test]
    fn every_type_has_its_own_row() {
        for (i, ty) in GgmlType::ALL.into_iter().enumerate() {
            assert_eq!(format(ty).ty, ty);
            assert!(
                std::ptr::eq(format(ty), &FORMATS[i]),
                "{ty} is row {i} of FORMATS"
            );
        }
    }

    #[test]
    fn block_bytes_match_the_block_structs() {
        let sizes = [
            (GgmlType::Q4_0, size_of::<BlockQ4_0>()),
            (GgmlType::Q4_1, size_of::<BlockQ4_1>()),
            (GgmlType::Q5_0, size_of::<BlockQ5_0>()),
            (GgmlType::Q5_1, size_of::<BlockQ5_1>()),
            (GgmlType::Q8_0, size_of::<BlockQ8_0>()),
            (GgmlType::Q8_1, size_of::<BlockQ8_1>()),
            (GgmlType::Q2_K, size_of::<BlockQ2K>()),
            (GgmlType::Q3_K, size_of::<BlockQ3K>()),
            (GgmlType::Q4_K, size_of::<BlockQ4K>()),
            (GgmlType::Q5_K, size_of::<BlockQ5K>()),
            (GgmlType::Q6_K, size_of::<BlockQ6K>()),
            (GgmlType::Q8_K, size_of::<BlockQ8K>()),
            (GgmlType::IQ4_NL, size_of::<BlockIQ4NL>()),
            (GgmlType::IQ4_XS, size_of::<BlockIQ4XS>()),
        ];
        for (ty, bytes) in sizes {
            assert_eq!(format(ty).block_bytes, bytes, "{ty}");
        }
    }

    #[test]
    fn vec_dot_types_follow_the_reference_pairing() {
        use GgmlType as T;
        let pairs = [
            (T::Q4_0, T::Q8_0),
            (T::Q5_0, T::Q8_0),
            (T::Q8_0, T::Q8_0),
            (T::IQ4_NL, T::Q8_0),
            (T::Q4_1, T::Q8_1),
            (T::Q5_1, T::Q8_1),
            (T::Q2_K, T::Q8_K),
            (T::Q3_K, T::Q8_K),
            (T::Q4_K, T::Q8_K),
            (T::Q5_K, T::Q8_K),
            (T::Q6_K, T::Q8_K),
            (T::IQ4_XS, T::Q8_K),
            (T::F32, T::F32),
            (T::F16, T::F16),
            (T::BF16, T::BF16),
        ];
        for (w, a) in pairs {
            assert_eq!(format(w).vec_dot_type, a, "{w}");
        }
    }

    #[test]
    fn every_weight_type_has_a_scalar_dot_and_every_activation_type_a_quantizer() {
        let scalar = dispatch::scalar();
        for ty in GgmlType::ALL {
            let f = format(ty);
            let activation_only = matches!(ty, GgmlType::Q8_1 | GgmlType::Q8_K);
            assert_eq!(scalar.dot(ty).is_some(), !activation_only, "dot for {ty}");
            let act = format(f.vec_dot_type);
            assert!(
                scalar.quantize(act.ty).is_some(),
                "quantizer for {}",
                act.ty
            );
            assert!(act.quantize.is_some(), "Format::quantize for {}", act.ty);
            assert_eq!(
                f.block_elems % act.block_elems,
                0,
                "{ty} blocks split into {}",
                act.ty
            );
        }
    }
}
