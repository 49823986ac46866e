//! AVX2 dot kernels for the float weight types, each against activations of the same type:
//! F32 · F32, F16 · F16 (F16C conversion, subnormals included) and BF16 · BF16 (shift into
//! the upper half of an f32). Products are accumulated in f32 with FMA.

use std::arch::x86_64::*;

use super::util::{check_dot_args, dispatch_rows, hsum_ps};

const F32: u8 = 0;
const F16: u8 = 1;
const BF16: u8 = 2;

/// Bytes per element of `kind`.
const fn elem_bytes(kind: u8) -> usize {
    if kind == F32 {
        4
    } else {
        2
    }
}

/// Loads 8 consecutive elements of `KIND` at `p` as f32.
///
/// # Safety
/// `8 * elem_bytes(KIND)` bytes at `p` must be readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load8<const KIND: u8>(p: *const u8) -> __m256 {
    // SAFETY: the caller guarantees the 8 elements are readable; unaligned loads.
    unsafe {
        match KIND {
            F32 => _mm256_loadu_ps(p.cast()),
            F16 => _mm256_cvtph_ps(_mm_loadu_si128(p.cast())),
            _ => {
                let wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast()));
                _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16))
            }
        }
    }
}

/// Loads the one element of `KIND` at `p` as f32.
///
/// # Safety
/// `elem_bytes(KIND)` bytes at `p` must be readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load1<const KIND: u8>(p: *const u8) -> f32 {
    // SAFETY: the caller guarantees the element is readable; unaligned reads.
    unsafe {
        match KIND {
            F32 => p.cast::<f32>().read_unaligned(),
            F16 => super::util::f16_at(p),
            _ => f32::from_bits(u32::from(p.cast::<u16>().read_unaligned()) << 16),
        }
    }
}

/// `out[r] = Σ_i w[i] · a_r[i]` for the `N` activation rows.
///
/// # Safety
/// `check_dot_args` accepted the slices with one-element blocks of `KIND`, `n` is the
/// element count it returned, `out.len() == N`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn float_rows<const KIND: u8, const N: usize>(
    w: &[u8],
    n: usize,
    acts: &[u8],
    act_row_bytes: usize,
    out: &mut [f32],
) {
    let eb = elem_bytes(KIND);
    let (wp, ap) = (w.as_ptr(), acts.as_ptr());
    // One accumulator per row, updated in the same order whatever N is: a row's result
    // does not depend on how many rows share the call (batch and decode agree bit for bit).
    let mut acc = [_mm256_setzero_ps(); N];
    let mut i = 0;
    // SAFETY (all reads below): elements i .. i + 16 (or + 8, or the tail) are < n, inside
    // the weight row and every activation row r < N (`check_dot_args`).
    unsafe {
        while i + 16 <= n {
            let w0 = load8::<KIND>(wp.add(i * eb));
            let w1 = load8::<KIND>(wp.add((i + 8) * eb));
            for (r, acc) in acc.iter_mut().enumerate() {
                let a = ap.add(r * act_row_bytes + i * eb);
                let sum = _mm256_fmadd_ps(w0, load8::<KIND>(a), *acc);
                *acc = _mm256_fmadd_ps(w1, load8::<KIND>(a.add(8 * eb)), sum);
            }
            i += 16;
        }
        if i + 8 <= n {
            let w0 = load8::<KIND>(wp.add(i * eb));
            for (r, acc) in acc.iter_mut().enumerate() {
                let a = ap.add(r * act_row_bytes + i * eb);
                *acc = _mm256_fmadd_ps(w0, load8::<KIND>(a), *acc);
            }
            i += 8;
        }
        for r in 0..N {
            let mut sum = hsum_ps(acc[r]);
            for k in i..n {
                let a = ap.add(r * act_row_bytes + k * eb);
                sum += load1::<KIND>(wp.add(k * eb)) * load1::<KIND>(a);
            }
            out[r] = sum;
        }
    }
}

/// Defines the safe [`crate::dispatch::DotFn`] wrapper for one float kind.
macro_rules! float_dot_fn {
    ($name:ident, $kind:expr) => {
        pub(super) fn $name(w: &[u8], acts: &[u8], act_row_bytes: usize, out: &mut [f32]) {
            let eb = elem_bytes($kind);
            let n = check_dot_args(w, eb, acts, act_row_bytes, eb, out);
            dispatch_rows!(out.len(), N => {
                // SAFETY: avx2, fma and f16c were detected before `install` made this
                // function reachable; `check_dot_args` validated the slice lengths.
                unsafe { float_rows::<{ $kind }, N>(w, n, acts, act_row_bytes, out) }
            })
        }
    };
}

float_dot_fn!(dot_f32, F32);
float_dot_fn!(dot_f16, F16);
float_dot_fn!(dot_bf16, BF16);
