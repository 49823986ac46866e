//! Shared by the kernels crate's integration tests.

use openweight_kernels::GgmlType;

/// Weight types with GEMM tile kernels in some kernel set (Q6_K: AVX-512 VNNI only; the
/// tests skip, loudly, the types the running set lacks).
pub const TILE_TYPES: [GgmlType; 8] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];
