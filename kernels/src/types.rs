//! GGUF tensor type ids that the kernels understand.

/// A tensor element type, numbered as GGUF (and ggml) number them.
///
/// Only the types this crate can dequantize or compute with are listed; the GGUF
/// container knows the sizes of every type id, including ones we cannot run.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum GgmlType {
    /// 32-bit IEEE float.
    F32 = 0,
    /// 16-bit IEEE float (binary16).
    F16 = 1,
    /// 4-bit, 32-element blocks: `x = d * (q - 8)`.
    Q4_0 = 2,
    /// 4-bit, 32-element blocks with a minimum: `x = d * q + m`.
    Q4_1 = 3,
    /// 5-bit, 32-element blocks: `x = d * (q - 16)`.
    Q5_0 = 6,
    /// 5-bit, 32-element blocks with a minimum: `x = d * q + m`.
    Q5_1 = 7,
    /// 8-bit, 32-element blocks: `x = d * q`.
    Q8_0 = 8,
    /// 8-bit, 32-element blocks with the block sum `s = d * sum(q)` (activation format).
    Q8_1 = 9,
    /// 2-bit K-quant, 256-element super-blocks.
    Q2_K = 10,
    /// 3-bit K-quant, 256-element super-blocks.
    Q3_K = 11,
    /// 4-bit K-quant, 256-element super-blocks.
    Q4_K = 12,
    /// 5-bit K-quant, 256-element super-blocks.
    Q5_K = 13,
    /// 6-bit K-quant, 256-element super-blocks.
    Q6_K = 14,
    /// 8-bit K-quant with f32 scale and 16-element sums (activation format).
    Q8_K = 15,
    /// 4-bit non-linear (table lookup), 32-element blocks.
    IQ4_NL = 20,
    /// 4-bit non-linear, 256-element super-blocks with 6-bit sub-block scales.
    IQ4_XS = 23,
    /// bfloat16: the upper 16 bits of an f32.
    BF16 = 30,
}

impl GgmlType {
    /// One past the largest id in this enum: tables indexed by id have this length.
    pub const ID_LIMIT: usize = 31;

    /// Every type, in id order.
    pub const ALL: [GgmlType; 17] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q8_1,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::Q8_K,
        GgmlType::IQ4_NL,
        GgmlType::IQ4_XS,
        GgmlType::BF16,
    ];

    /// The type with GGUF id `id`, if the kernels support it.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        GgmlType::ALL.iter().copied().find(|t| t.id() == id)
    }

    /// The GGUF type id.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// The name GGUF tools print (`Q4_K`, `F32`, `IQ4_NL`, ...).
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q5_0 => "Q5_0",
            GgmlType::Q5_1 => "Q5_1",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q8_1 => "Q8_1",
            GgmlType::Q2_K => "Q2_K",
            GgmlType::Q3_K => "Q3_K",
            GgmlType::Q4_K => "Q4_K",
            GgmlType::Q5_K => "Q5_K",
            GgmlType::Q6_K => "Q6_K",
            GgmlType::Q8_K => "Q8_K",
            GgmlType::IQ4_NL => "IQ4_NL",
            GgmlType::IQ4_XS => "IQ4_XS",
            GgmlType::BF16 => "BF16",
        }
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_fit_the_id_limit() {
        for t in GgmlType::ALL {
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
            assert!((t.id() as usize) < GgmlType::ID_LIMIT);
        }
        assert_eq!(
            GgmlType::from_id(4),
            None,
            "id 4 (old Q4_2) was removed from GGUF"
        );
    }
}
