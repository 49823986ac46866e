//! Block formats, dequantization and quantized dot/matmul kernels for GGUF tensors.
//!
//! Layout of the crate:
//! - [`types`]: the GGUF type ids we support.
//! - [`blocks`]: `#[repr(C)]` block structs, the exact file layout of each type.
//! - [`formats`]: one descriptor per type (geometry, activation pairing, (de)quantizers).
//! - `scalar`: the reference implementation of every kernel; the oracle for tests.
//! - `avx2` / `avx512` / `neon`: SIMD kernels, checked against `scalar` by property tests
//!   (`avx512` holds AVX-512 VNNI kernels installed over the AVX2 set where the CPU has them).
//! - [`interleave`]: the row-interleaved weight layout (16 rows per group) that a model
//!   loader may rearrange the 32-element formats into, for kernel sets that read it.
//! - [`dispatch`]: picks the best kernels for the running CPU, once.
//! - [`matmul`]: `y = W x` for one activation row (GEMV) or many (GEMM) on a rayon pool.
//!
//! This crate knows nothing about models or files: it turns bytes into numbers, fast.

/// Memory-read bandwidth probe: the ceiling that memory-bound decode is measured against.
pub mod bandwidth;
pub mod blocks;
pub mod dispatch;
pub mod formats;
pub mod interleave;
pub mod matmul;
pub mod types;

mod scalar;

#[cfg(target_arch = "x86_64")]
mod avx2;

#[cfg(target_arch = "x86_64")]
mod avx512;

#[cfg(target_arch = "aarch64")]
mod neon;

pub use dispatch::{DotFn, KernelSet, QuantizeFn, MAX_ACT_ROWS};
pub use formats::{format, Format};
pub use types::GgmlType;
