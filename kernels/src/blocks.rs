//! Block structs: the exact in-file layout of every quantized GGUF type.
//!
//! Each struct is `#[repr(C)]` plain data (`bytemuck::Pod`), so a row of a weight tensor
//! can be viewed as a slice of blocks without copying. Sizes are asserted at compile time.
//! Field order is the in-memory order; the formulas that turn a block into numbers live in
//! `scalar.rs` (the reference) and are documented there.

use bytemuck::{Pod, Zeroable};
use half::f16;

/// Elements in one legacy block (Q4_0 ... Q8_1, IQ4_NL).
pub const QK: usize = 32;
/// Elements in one K-quant super-block (Q2_K ... Q8_K, IQ4_XS).
pub const QK_K: usize = 256;
/// Bytes in the packed 6-bit scale/min field of Q4_K and Q5_K (and Q3_K's scales).
pub const K_SCALE_BYTES: usize = 12;

/// Q4_0: 32 weights, `x = d * (q - 8)`; byte `j` holds element `j` (low nibble) and `j + 16` (high).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ4_0 {
    /// Scale.
    pub d: f16,
    /// 4-bit quants, two per byte.
    pub qs: [u8; QK / 2],
}

/// Q4_1: 32 weights, `x = d * q + m`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ4_1 {
    /// Scale.
    pub d: f16,
    /// Minimum (offset).
    pub m: f16,
    /// 4-bit quants, two per byte.
    pub qs: [u8; QK / 2],
}

/// Q5_0: 32 weights, `x = d * (q - 16)`, fifth bit of element `j` in bit `j` of `qh` (LE u32).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ5_0 {
    /// Scale.
    pub d: f16,
    /// Fifth bits, little-endian u32.
    pub qh: [u8; 4],
    /// Low 4 bits, two per byte.
    pub qs: [u8; QK / 2],
}

/// Q5_1: 32 weights, `x = d * q + m`, fifth bits as in Q5_0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ5_1 {
    /// Scale.
    pub d: f16,
    /// Minimum (offset).
    pub m: f16,
    /// Fifth bits, little-endian u32.
    pub qh: [u8; 4],
    /// Low 4 bits, two per byte.
    pub qs: [u8; QK / 2],
}

/// Q8_0: 32 values, `x = d * q`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ8_0 {
    /// Scale.
    pub d: f16,
    /// Signed 8-bit quants.
    pub qs: [i8; QK],
}

/// Q8_1: 32 values, `x = d * q`, plus `s = d * sum(q)` for the offset term of Q4_1/Q5_1 dots.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ8_1 {
    /// Scale.
    pub d: f16,
    /// `d * sum(qs)`.
    pub s: f16,
    /// Signed 8-bit quants.
    pub qs: [i8; QK],
}

/// Q2_K: 256 weights in 16 groups of 16; `x = d * (sc & 15) * q - dmin * (sc >> 4)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ2K {
    /// Per-16 scale (low nibble) and min (high nibble).
    pub scales: [u8; QK_K / 16],
    /// 2-bit quants, four per byte.
    pub qs: [u8; QK_K / 4],
    /// Super-block scale for the scales.
    pub d: f16,
    /// Super-block scale for the mins.
    pub dmin: f16,
}

/// Q3_K: 256 weights; 2 low bits in `qs`, high bit in `hmask`, 16 6-bit scales biased by 32.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ3K {
    /// High bits (set means no -4 offset).
    pub hmask: [u8; QK_K / 8],
    /// Low 2 bits, four per byte.
    pub qs: [u8; QK_K / 4],
    /// 16 packed 6-bit scales.
    pub scales: [u8; K_SCALE_BYTES],
    /// Super-block scale.
    pub d: f16,
}

/// Q4_K: 256 weights in 8 sub-blocks of 32; `x = d * sc * q - dmin * m`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ4K {
    /// Super-block scale for the scales.
    pub d: f16,
    /// Super-block scale for the mins.
    pub dmin: f16,
    /// 8 packed 6-bit scales and 8 packed 6-bit mins.
    pub scales: [u8; K_SCALE_BYTES],
    /// 4-bit quants: each 32 bytes feed 64 elements (low nibbles first).
    pub qs: [u8; QK_K / 2],
}

/// Q5_K: Q4_K plus a fifth bit per weight in `qh`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ5K {
    /// Super-block scale for the scales.
    pub d: f16,
    /// Super-block scale for the mins.
    pub dmin: f16,
    /// 8 packed 6-bit scales and 8 packed 6-bit mins.
    pub scales: [u8; K_SCALE_BYTES],
    /// Fifth bits: bit `2c` / `2c + 1` of `qh[l]` for chunk `c`.
    pub qh: [u8; QK_K / 8],
    /// Low 4 bits.
    pub qs: [u8; QK_K / 2],
}

/// Q6_K: 256 weights, `x = d * scale * (q - 32)`, 16 signed 8-bit scales.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ6K {
    /// Low 4 bits.
    pub ql: [u8; QK_K / 2],
    /// High 2 bits.
    pub qh: [u8; QK_K / 4],
    /// Per-16 signed scales.
    pub scales: [i8; QK_K / 16],
    /// Super-block scale.
    pub d: f16,
}

/// Q8_K: 256 activations, `x = d * q` with an f32 `d` that may be negative, plus 16-element sums.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ8K {
    /// Scale (f32, may be negative).
    pub d: f32,
    /// Signed 8-bit quants.
    pub qs: [i8; QK_K],
    /// `bsums[k]` = sum of `qs[16k..16k + 16]`.
    pub bsums: [i16; QK_K / 16],
}

/// IQ4_NL: 32 weights, `x = d * IQ4NL_TABLE[nibble]`, nibble order as Q4_0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockIQ4NL {
    /// Scale.
    pub d: f16,
    /// 4-bit table indices, two per byte.
    pub qs: [u8; QK / 2],
}

/// IQ4_XS: 256 weights in 8 sub-blocks of 32 with 6-bit scales (biased by 32); table as IQ4_NL.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockIQ4XS {
    /// Super-block scale.
    pub d: f16,
    /// High 2 bits of the 8 sub-block scales (bits `2i..2i + 2`).
    pub scales_h: u16,
    /// Low 4 bits of the 8 sub-block scales, two per byte.
    pub scales_l: [u8; QK_K / 64],
    /// 4-bit table indices; each 16 bytes feed one 32-element sub-block.
    pub qs: [u8; QK_K / 2],
}

/// The non-linear 4-bit code book shared by IQ4_NL and IQ4_XS.
pub const IQ4NL_TABLE: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

const _: () = {
    assert!(std::mem::size_of::<BlockQ4_0>() == 18);
    assert!(std::mem::size_of::<BlockQ4_1>() == 20);
    assert!(std::mem::size_of::<BlockQ5_0>() == 22);
    assert!(std::mem::size_of::<BlockQ5_1>() == 24);
    assert!(std::mem::size_of::<BlockQ8_0>() == 34);
    assert!(std::mem::size_of::<BlockQ8_1>() == 36);
    assert!(std::mem::size_of::<BlockQ2K>() == 84);
    assert!(std::mem::size_of::<BlockQ3K>() == 110);
    assert!(std::mem::size_of::<BlockQ4K>() == 144);
    assert!(std::mem::size_of::<BlockQ5K>() == 176);
    assert!(std::mem::size_of::<BlockQ6K>() == 210);
    assert!(std::mem::size_of::<BlockQ8K>() == 292);
    assert!(std::mem::size_of::<BlockIQ4NL>() == 18);
    assert!(std::mem::size_of::<BlockIQ4XS>() == 136);
};
