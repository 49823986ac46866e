//! AVX-512 VNNI GEMM tiles.

use crate::dispatch::KernelSet;

/// Installs this file's tiles.
pub(super) fn install(_set: &mut KernelSet) {}
