//! NEON kernels (with an `sdot` path when the CPU has dotprod). PLACEHOLDER: being written.

use crate::dispatch::KernelSet;

/// Installs the NEON kernels. Only called by `dispatch` after it detected neon.
pub(crate) fn install(set: &mut KernelSet, dotprod: bool) {
    set.set_name(if dotprod { "neon-dotprod" } else { "neon" });
}
