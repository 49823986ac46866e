//! AVX2 (+FMA, F16C) kernels. PLACEHOLDER: being written.

use crate::dispatch::KernelSet;

/// Installs the AVX2 kernels. Only called by `dispatch` after it detected avx2, fma and f16c.
pub(crate) fn install(set: &mut KernelSet) {
    set.set_name("avx2");
}
