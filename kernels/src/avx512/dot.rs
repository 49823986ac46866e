//! AVX-512 VNNI one-row dot kernels.

use crate::dispatch::KernelSet;

/// Installs this file's kernels.
pub(super) fn install(_set: &mut KernelSet) {}
