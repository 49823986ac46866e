//! AVX-512 VNNI kernels (with AVX-512 F/BW/VL, on top of AVX2, FMA and F16C): installed over
//! the AVX2 set on CPUs that have them (Intel Ice Lake and later, AMD Zen 4 and later), for
//! the entries where `vpdpbusd` (u8 x i8 products summed four at a time straight into i32
//! lanes) beats the AVX2 `maddubs` / `madd` pairs.
//!
//! - [`gemm`]: [`crate::dispatch::GemmFn`] tiles (prefill).
//! - [`dot`]: one-row [`crate::dispatch::DotFn`] / [`crate::dispatch::ScaledDotFn`] kernels
//!   (decode).
//! - [`interleaved`]: decode and prompt kernels for weights rearranged at load time into
//!   the row-interleaved layout of [`crate::interleave`].
//!
//! Every entry point here is an `unsafe fn` with `#[target_feature]`, reached only through
//! the safe wrappers that [`install`] puts in the table, and [`install`] is only called by
//! `dispatch` after it detected avx512f, avx512bw, avx512vl and avx512vnni. Entries this module leaves
//! alone keep their AVX2 kernels. `OPENWEIGHT_KERNELS=avx2` keeps this module out (so the
//! AVX2 kernels can be tested and timed on a VNNI machine).

mod dot;
mod dot_kquants;
mod gemm;
mod interleaved;

use crate::dispatch::KernelSet;

/// Installs the AVX-512 VNNI kernels over an AVX2 set. Only called by `dispatch` after it
/// detected avx2, fma, f16c, avx512f, avx512bw, avx512vl and avx512vnni.
pub(crate) fn install(set: &mut KernelSet) {
    gemm::install(set);
    dot::install(set);
    interleaved::install(set);
    set.set_name("avx512-vnni");
}
