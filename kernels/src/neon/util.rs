//! Shared NEON building blocks: the two integer dot strategies (`sdot` and the
//! `vmull_s8` fallback), f16 widening, and unaligned field reads from raw block bytes.
//!
//! Everything here is `#[inline(always)]` and meant to be inlined into the
//! `#[target_feature]` entry points of `mod.rs`; nothing here is reachable on its own.
//! Weight rows and activation scratch buffers carry no alignment guarantee, so every load
//! goes through a byte pointer (`vld1q_u8` or `read_unaligned`).

use core::arch::aarch64::*;
use core::arch::asm;

/// A way to add the 16 products of two `i8x16` vectors into four `i32` lanes.
///
/// How the products are spread over the lanes differs between implementations; callers
/// only ever use the sum of the four lanes (possibly after multiplying the whole vector by
/// one scale), so both strategies give identical results.
pub(super) trait IntDot {
    /// Returns `acc` plus the products `a[i] * b[i]` spread over the four lanes.
    ///
    /// # Safety
    /// The CPU must support the instructions of the implementation (see each impl).
    unsafe fn dot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t;
}

/// The `sdot` instruction (Armv8.2 dotprod): lane `i` gets products `4i .. 4i + 4`.
///
/// `vdotq_s32` is still unstable in Rust, so the instruction is written with `asm!`. It must
/// be inlined into a function compiled with `target_feature(enable = "dotprod")`, otherwise
/// the assembler rejects it.
pub(super) struct Sdot;

impl IntDot for Sdot {
    #[inline(always)]
    unsafe fn dot(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        // SAFETY: the caller guarantees the dotprod extension; the instruction only reads and
        // writes the three vector registers named here.
        unsafe {
            asm!(
                "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
                acc = inout(vreg) acc,
                a = in(vreg) a,
                b = in(vreg) b,
                options(pure, nomem, nostack, preserves_flags),
            );
        }
        acc
    }
}

/// Baseline NEON: widening multiplies into `i16` (`|a * b| <= 128 * 128` fits), then
/// pairwise widening adds into `i32`. Lane `i` gets products `2i, 2i+1, 8+2i, 9+2i`.
pub(super) struct Mull;

impl IntDot for Mull {
    #[inline(always)]
    unsafe fn dot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        // SAFETY: plain NEON, part of the aarch64 baseline.
        unsafe {
            let lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
            let hi = vmull_high_s8(a, b);
            vpadalq_s16(vpadalq_s16(acc, lo), hi)
        }
    }
}

/// The dot product of 32 weight bytes (`w0`, `w1`) with 32 activation bytes at `a`.
///
/// # Safety
/// `a .. a + 32` must be readable, and `D` supported by the CPU.
#[inline(always)]
pub(super) unsafe fn dot32<D: IntDot>(w0: int8x16_t, w1: int8x16_t, a: *const u8) -> int32x4_t {
    // SAFETY: the caller guarantees 32 readable bytes at `a`.
    unsafe {
        let a0 = load_s8(a);
        let a1 = load_s8(a.add(16));
        D::dot(D::dot(vdupq_n_s32(0), w0, a0), w1, a1)
    }
}

/// The dot product of 16 weight bytes with 16 activation bytes at `a`.
///
/// # Safety
/// `a .. a + 16` must be readable, and `D` supported by the CPU.
#[inline(always)]
pub(super) unsafe fn dot16<D: IntDot>(w: int8x16_t, a: *const u8) -> int32x4_t {
    // SAFETY: the caller guarantees 16 readable bytes at `a`.
    unsafe { D::dot(vdupq_n_s32(0), w, load_s8(a)) }
}

/// Loads 16 bytes from a possibly unaligned address.
///
/// # Safety
/// `p .. p + 16` must be readable.
#[inline(always)]
pub(super) unsafe fn load_u8(p: *const u8) -> uint8x16_t {
    // SAFETY: `vld1q_u8` has byte alignment; the caller guarantees the range.
    unsafe { vld1q_u8(p) }
}

/// Loads 16 signed bytes from a possibly unaligned address.
///
/// # Safety
/// `p .. p + 16` must be readable.
#[inline(always)]
pub(super) unsafe fn load_s8(p: *const u8) -> int8x16_t {
    // SAFETY: `vld1q_s8` has byte alignment; the caller guarantees the range.
    unsafe { vld1q_s8(p.cast::<i8>()) }
}

/// Loads 8 little-endian `i16` from a possibly unaligned address.
///
/// # Safety
/// `p .. p + 16` must be readable.
#[inline(always)]
pub(super) unsafe fn load_s16(p: *const u8) -> int16x8_t {
    // SAFETY: a byte load has no alignment requirement; aarch64 Linux is little-endian, so
    // reinterpreting the bytes gives the stored `i16` values.
    unsafe { vreinterpretq_s16_u8(vld1q_u8(p)) }
}

/// Loads 4 `f32` from a possibly unaligned address.
///
/// # Safety
/// `p .. p + 16` must be readable.
#[inline(always)]
pub(super) unsafe fn load_f32x4(p: *const u8) -> float32x4_t {
    // SAFETY: as `load_s16`.
    unsafe { vreinterpretq_f32_u8(vld1q_u8(p)) }
}

/// Reads a little-endian `u16` at a possibly unaligned address.
///
/// # Safety
/// `p .. p + 2` must be readable.
#[inline(always)]
pub(super) unsafe fn read_u16(p: *const u8) -> u16 {
    // SAFETY: the caller guarantees the range; `read_unaligned` has no alignment need.
    u16::from_le(unsafe { p.cast::<u16>().read_unaligned() })
}

/// Reads a little-endian `u32` at a possibly unaligned address.
///
/// # Safety
/// `p .. p + 4` must be readable.
#[inline(always)]
pub(super) unsafe fn read_u32(p: *const u8) -> u32 {
    // SAFETY: as `read_u16`.
    u32::from_le(unsafe { p.cast::<u32>().read_unaligned() })
}

/// Reads a little-endian `f32` at a possibly unaligned address.
///
/// # Safety
/// `p .. p + 4` must be readable.
#[inline(always)]
pub(super) unsafe fn read_f32(p: *const u8) -> f32 {
    // SAFETY: as `read_u16`.
    f32::from_bits(unsafe { read_u32(p) })
}

/// Reads an IEEE binary16 at a possibly unaligned address and widens it to `f32`.
///
/// # Safety
/// `p .. p + 2` must be readable.
#[inline(always)]
pub(super) unsafe fn read_f16(p: *const u8) -> f32 {
    // SAFETY: the caller guarantees the range.
    f16_to_f32(unsafe { read_u16(p) })
}

/// Widens one binary16 value (subnormals, infinities and NaN included) with `fcvt`.
#[inline(always)]
pub(super) fn f16_to_f32(bits: u16) -> f32 {
    let out: f32;
    // SAFETY: `fcvt` (half to single) is part of the aarch64 baseline FP unit; it touches only
    // the two registers named here. The half-precision type is unstable in Rust, so the
    // conversion is written as assembly.
    unsafe {
        asm!(
            "fcvt {out:s}, {bits:h}",
            out = lateout(vreg) out,
            bits = in(vreg) bits as i16,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    out
}

/// Widens the low four binary16 values of `h` to `f32` (`fcvtl`).
#[inline(always)]
pub(super) fn f16x4_low_to_f32(h: uint16x8_t) -> float32x4_t {
    let out: float32x4_t;
    // SAFETY: `fcvtl` is part of the aarch64 baseline; `vcvt_f32_f16` is unstable in Rust
    // because it needs the `f16` type, so the instruction is written directly.
    unsafe {
        asm!(
            "fcvtl {out:v}.4s, {h:v}.4h",
            out = lateout(vreg) out,
            h = in(vreg) h,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    out
}

/// Widens the high four binary16 values of `h` to `f32` (`fcvtl2`).
#[inline(always)]
pub(super) fn f16x4_high_to_f32(h: uint16x8_t) -> float32x4_t {
    let out: float32x4_t;
    // SAFETY: as `f16x4_low_to_f32`.
    unsafe {
        asm!(
            "fcvtl2 {out:v}.4s, {h:v}.8h",
            out = lateout(vreg) out,
            h = in(vreg) h,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    out
}

/// The sum of the products of 16 `i16` pairs, in `i32` (`|a| * |b| * 16` must fit).
///
/// # Safety
/// Plain NEON; always available on aarch64.
#[inline(always)]
pub(super) unsafe fn dot_s16x16(a0: int16x8_t, a1: int16x8_t, b0: int16x8_t, b1: int16x8_t) -> i32 {
    // SAFETY: register-only NEON arithmetic.
    unsafe {
        let p = vmull_s16(vget_low_s16(a0), vget_low_s16(b0));
        let p = vmlal_high_s16(p, a0, b0);
        let p = vmlal_s16(p, vget_low_s16(a1), vget_low_s16(b1));
        let p = vmlal_high_s16(p, a1, b1);
        vaddvq_s32(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_to_f32_is_exact_for_normals_subnormals_and_specials() {
        for bits in 0..=u16::MAX {
            let want = half::f16::from_bits(bits).to_f32();
            let got = f16_to_f32(bits);
            if want.is_nan() {
                assert!(got.is_nan(), "bits {bits:#06x}");
            } else {
                assert_eq!(got.to_bits(), want.to_bits(), "bits {bits:#06x}");
            }
        }
    }

    #[test]
    fn f16x4_widening_matches_scalar_conversion_lane_by_lane() {
        let bits: [u16; 8] = [
            0x3c00, 0x0001, 0x8400, 0x7bff, 0xfc00, 0x03ff, 0xc000, 0x0000,
        ];
        // SAFETY: the array is 16 readable bytes.
        let h = unsafe { vld1q_u16(bits.as_ptr()) };
        let mut got = [0f32; 8];
        // SAFETY: `got` has room for 8 f32.
        unsafe {
            vst1q_f32(got.as_mut_ptr(), f16x4_low_to_f32(h));
            vst1q_f32(got.as_mut_ptr().add(4), f16x4_high_to_f32(h));
        }
        for (g, b) in got.iter().zip(bits) {
            assert_eq!(g.to_bits(), half::f16::from_bits(b).to_f32().to_bits());
        }
    }

    #[test]
    fn both_integer_dot_strategies_give_the_same_total() {
        let a: [i8; 16] = core::array::from_fn(|i| (i as i8 * 17).wrapping_sub(100));
        let b: [i8; 16] = core::array::from_fn(|i| if i % 3 == 0 { -128 } else { 127 - i as i8 });
        let want: i32 = a.iter().zip(&b).map(|(&x, &y)| x as i32 * y as i32).sum();
        // SAFETY: 16 readable bytes each; Mull is baseline NEON.
        let mull = unsafe {
            vaddvq_s32(Mull::dot(
                vdupq_n_s32(5),
                load_s8(a.as_ptr().cast()),
                load_s8(b.as_ptr().cast()),
            ))
        };
        assert_eq!(mull, want + 20);
        if std::arch::is_aarch64_feature_detected!("dotprod") {
            // SAFETY: dotprod was just detected; `sdot_total` enables it.
            let sdot = unsafe { sdot_total(&a, &b) };
            assert_eq!(sdot, want + 20);
        } else {
            eprintln!(
                "SKIPPED sdot half of both_integer_dot_strategies_give_the_same_total: no dotprod"
            );
        }
    }

    #[target_feature(enable = "neon,dotprod")]
    unsafe fn sdot_total(a: &[i8; 16], b: &[i8; 16]) -> i32 {
        // SAFETY: 16 readable bytes each; the caller checked dotprod.
        unsafe {
            vaddvq_s32(Sdot::dot(
                vdupq_n_s32(5),
                load_s8(a.as_ptr().cast()),
                load_s8(b.as_ptr().cast()),
            ))
        }
    }
}
