//! NEON kernels for aarch64, with an `sdot` path for CPUs that have the dotprod extension.
//!
//! Every weight type has one kernel body (a [`Kernel`] impl, generic over the integer dot
//! strategy [`util::IntDot`] and the number of activation rows `N`), compiled twice:
//! - `neon,dotprod`: the 16-byte integer dots use `sdot` ([`util::Sdot`]);
//! - `neon` only: `vmull_s8` + `vpadalq_s16` ([`util::Mull`]).
//!
//! The float kernels (F32, F16, BF16) need only baseline NEON and are shared by both sets.
//! Each body walks the weight row block by block, unpacks a block once and multiplies it
//! against all `N` activation rows, which keep their own accumulators.
//!
//! Layering, from the outside in: `install` stores safe wrappers ([`dot_sdot`],
//! [`dot_neon`]) that check the slice sizes and pick `N`; they call the
//! `#[target_feature]` entry points ([`entry_sdot`], [`entry_neon`]), into which the kernel
//! bodies and helpers are inlined. Only `dispatch` calls `install`, after it detected the
//! features, so the wrappers never run on a CPU without them.

mod float;
mod kquants;
mod legacy;
mod util;

use crate::dispatch::{KernelSet, MAX_ACT_ROWS};
use crate::types::GgmlType;
use util::{IntDot, Mull, Sdot};

/// One dot kernel body: a weight format paired with its activation format.
trait Kernel {
    /// Bytes per weight block.
    const W_BLOCK_BYTES: usize;
    /// Bytes per activation block.
    const A_BLOCK_BYTES: usize;

    /// Writes to `out[r]` (for `r < N`) the dot product of the `nb` weight blocks at `w`
    /// with the `nb` activation blocks at `a + r * stride`.
    ///
    /// # Safety
    /// `w .. w + nb * W_BLOCK_BYTES` and `a + r * stride .. + nb * A_BLOCK_BYTES` for every
    /// `r < N` must be readable, `out.len() >= N`, and the CPU must support `D`.
    unsafe fn rows<D: IntDot, const N: usize>(
        w: *const u8,
        nb: usize,
        a: *const u8,
        stride: usize,
        out: &mut [f32],
    );
}

/// Checks the [`crate::DotFn`] size contract and returns the number of weight blocks, or
/// `None` when there is no activation row (nothing to compute, as in the scalar set).
///
/// Panics (caller bug, never data-dependent) when `w` is not whole blocks, `out` has more
/// than [`MAX_ACT_ROWS`] rows, rows are closer than one activation row apart, or `acts` is
/// too short for `out.len()` rows of `stride` bytes.
fn checked_blocks<K: Kernel>(w: &[u8], acts: &[u8], stride: usize, out: &[f32]) -> Option<usize> {
    let n_rows = out.len();
    assert!(
        n_rows <= MAX_ACT_ROWS,
        "dot kernels take at most {MAX_ACT_ROWS} activation rows, got {n_rows}"
    );
    assert!(
        w.len() % K::W_BLOCK_BYTES == 0,
        "dot: weight row of {} bytes is not whole {}-byte blocks",
        w.len(),
        K::W_BLOCK_BYTES
    );
    if n_rows == 0 {
        return None;
    }
    let nb = w.len() / K::W_BLOCK_BYTES;
    let row_bytes = nb.checked_mul(K::A_BLOCK_BYTES);
    let needed = (n_rows - 1)
        .checked_mul(stride)
        .and_then(|start| start.checked_add(row_bytes?));
    assert!(
        (n_rows == 1 || row_bytes.is_some_and(|row| stride >= row))
            && needed.is_some_and(|needed| needed <= acts.len()),
        "activations too short: {} bytes for {n_rows} rows of stride {stride} and {nb} blocks",
        acts.len()
    );
    Some(nb)
}

/// Entry point of every kernel body on the dotprod path.
///
/// # Safety
/// The CPU must have `neon` and `dotprod`; the pointers must satisfy [`Kernel::rows`].
#[target_feature(enable = "neon,dotprod")]
unsafe fn entry_sdot<K: Kernel, const N: usize>(
    w: *const u8,
    nb: usize,
    a: *const u8,
    stride: usize,
    out: &mut [f32],
) {
    // SAFETY: forwarded from the caller; this function enables the features `Sdot` needs.
    unsafe { K::rows::<Sdot, N>(w, nb, a, stride, out) }
}

/// Entry point of every kernel body on the baseline NEON path.
///
/// # Safety
/// The CPU must have `neon`; the pointers must satisfy [`Kernel::rows`].
#[target_feature(enable = "neon")]
unsafe fn entry_neon<K: Kernel, const N: usize>(
    w: *const u8,
    nb: usize,
    a: *const u8,
    stride: usize,
    out: &mut [f32],
) {
    // SAFETY: forwarded from the caller; `Mull` needs only baseline NEON.
    unsafe { K::rows::<Mull, N>(w, nb, a, stride, out) }
}

/// Calls `$entry::<$k, N>` with `N = out.len()` (already checked to be 1..=8).
macro_rules! by_rows {
    ($entry:ident, $k:ty, $w:expr, $nb:expr, $a:expr, $stride:expr, $out:expr) => {
        match $out.len() {
            1 => $entry::<$k, 1>($w, $nb, $a, $stride, $out),
            2 => $entry::<$k, 2>($w, $nb, $a, $stride, $out),
            3 => $entry::<$k, 3>($w, $nb, $a, $stride, $out),
            4 => $entry::<$k, 4>($w, $nb, $a, $stride, $out),
            5 => $entry::<$k, 5>($w, $nb, $a, $stride, $out),
            6 => $entry::<$k, 6>($w, $nb, $a, $stride, $out),
            7 => $entry::<$k, 7>($w, $nb, $a, $stride, $out),
            8 => $entry::<$k, 8>($w, $nb, $a, $stride, $out),
            n => unreachable!("row count {n} passed the check"),
        }
    };
}

/// The [`crate::DotFn`] of kernel `K` on the dotprod path.
fn dot_sdot<K: Kernel>(w: &[u8], acts: &[u8], stride: usize, out: &mut [f32]) {
    let Some(nb) = checked_blocks::<K>(w, acts, stride, out) else {
        return;
    };
    // SAFETY: `install` stores this function only when `dispatch` detected neon and
    // dotprod; `checked_blocks` proved that `nb` weight blocks lie in `w` and that every
    // activation row `r < out.len()` has `nb` blocks at `r * stride` inside `acts`.
    unsafe { by_rows!(entry_sdot, K, w.as_ptr(), nb, acts.as_ptr(), stride, out) }
}

/// The [`crate::DotFn`] of kernel `K` on the baseline NEON path.
fn dot_neon<K: Kernel>(w: &[u8], acts: &[u8], stride: usize, out: &mut [f32]) {
    let Some(nb) = checked_blocks::<K>(w, acts, stride, out) else {
        return;
    };
    // SAFETY: `install` stores this function only when `dispatch` detected neon;
    // `checked_blocks` proved the ranges as in `dot_sdot`.
    unsafe { by_rows!(entry_neon, K, w.as_ptr(), nb, acts.as_ptr(), stride, out) }
}

/// Every integer kernel: `set_dot(type, wrapper::<kernel>)` for the chosen path.
macro_rules! integer_kernels {
    ($set:expr, $wrapper:ident) => {{
        $set.set_dot(GgmlType::Q4_0, $wrapper::<legacy::Legacy<legacy::Q4_0>>);
        $set.set_dot(GgmlType::Q4_1, $wrapper::<legacy::Legacy<legacy::Q4_1>>);
        $set.set_dot(GgmlType::Q5_0, $wrapper::<legacy::Legacy<legacy::Q5_0>>);
        $set.set_dot(GgmlType::Q5_1, $wrapper::<legacy::Legacy<legacy::Q5_1>>);
        $set.set_dot(GgmlType::Q8_0, $wrapper::<legacy::Legacy<legacy::Q8_0>>);
        $set.set_dot(GgmlType::IQ4_NL, $wrapper::<legacy::Legacy<legacy::IQ4NL>>);
        $set.set_dot(GgmlType::Q2_K, $wrapper::<kquants::Q2K>);
        $set.set_dot(GgmlType::Q3_K, $wrapper::<kquants::Q3K>);
        $set.set_dot(GgmlType::Q4_K, $wrapper::<kquants::Q4K>);
        $set.set_dot(GgmlType::Q5_K, $wrapper::<kquants::Q5K>);
        $set.set_dot(GgmlType::Q6_K, $wrapper::<kquants::Q6K>);
        $set.set_dot(GgmlType::IQ4_XS, $wrapper::<kquants::IQ4XS>);
    }};
}

/// Installs the NEON kernels. Only called by `dispatch` after it detected neon, with
/// `dotprod` telling whether the CPU also has the dotprod extension (`sdot`).
pub(crate) fn install(set: &mut KernelSet, dotprod: bool) {
    set.set_dot(GgmlType::F32, dot_neon::<float::F32>);
    set.set_dot(GgmlType::F16, dot_neon::<float::F16>);
    set.set_dot(GgmlType::BF16, dot_neon::<float::BF16>);
    if dotprod {
        integer_kernels!(set, dot_sdot);
        set.set_name("neon-dotprod");
    } else {
        integer_kernels!(set, dot_neon);
        set.set_name("neon");
    }
}

#[cfg(test)]
mod tests;
