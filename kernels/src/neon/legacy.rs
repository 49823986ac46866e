//! 32-element "legacy" blocks: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and IQ4_NL.
//!
//! Every weight block is unpacked once into two `i8x16` vectors holding elements 0..16 and
//! 16..32 in order (low nibbles, then high nibbles), then multiplied against the same
//! block of each activation row:
//! - with Q8_0 activations: `acc += d_w * d_a * sum(q_w * q_a)`;
//! - with Q8_1 activations (Q4_1, Q5_1): the same plus `m_w * s_a`, where `s_a = d_a * sum(q_a)`
//!   is stored in the block, so the offset never touches the quants.

use core::arch::aarch64::*;
use core::marker::PhantomData;

use super::util::{dot32, load_s8, load_u8, read_f16, read_u32, IntDot};
use super::Kernel;
use crate::blocks::IQ4NL_TABLE;

/// Bytes of one Q8_0 activation block (`d: f16`, `qs[32]`).
const Q8_0_BYTES: usize = 34;
/// Bytes of one Q8_1 activation block (`d: f16`, `s: f16`, `qs[32]`).
const Q8_1_BYTES: usize = 36;

/// One weight block turned into signed bytes plus its scale and (for Q4_1/Q5_1) minimum.
pub(super) struct Unpacked {
    /// Weight scale `d`.
    d: f32,
    /// Weight minimum `m` (0 for types without one).
    m: f32,
    /// Elements 0..16 as `i8`.
    lo: int8x16_t,
    /// Elements 16..32 as `i8`.
    hi: int8x16_t,
}

/// A 32-element weight format that unpacks to signed bytes.
pub(super) trait Unpack32 {
    /// Bytes per weight block.
    const BYTES: usize;
    /// Whether `x = d * q + m` (paired with Q8_1) rather than `x = d * q` (paired with Q8_0).
    const HAS_MIN: bool;
    /// Unpacks the block at `p`.
    ///
    /// # Safety
    /// `p .. p + BYTES` must be readable.
    unsafe fn unpack(p: *const u8) -> Unpacked;
}

/// The dot kernel of any [`Unpack32`] weight format with its activation format.
pub(super) struct Legacy<U>(PhantomData<U>);

impl<U: Unpack32> Kernel for Legacy<U> {
    const W_BLOCK_BYTES: usize = U::BYTES;
    const A_BLOCK_BYTES: usize = if U::HAS_MIN { Q8_1_BYTES } else { Q8_0_BYTES };

    #[inline(always)]
    unsafe fn rows<D: IntDot, const N: usize>(
        w: *const u8,
        nb: usize,
        a: *const u8,
        stride: usize,
        out: &mut [f32],
    ) {
        let qs_offset = if U::HAS_MIN { 4 } else { 2 };
        // SAFETY: the caller guarantees `nb` weight blocks at `w` and `nb` activation blocks
        // at every `a + r * stride` for `r < N`; every access stays inside those.
        unsafe {
            let mut acc = [vdupq_n_f32(0.0); N];
            let mut offsets = [0f32; N];
            for i in 0..nb {
                let u = U::unpack(w.add(i * U::BYTES));
                for r in 0..N {
                    let ab = a.add(r * stride + i * Self::A_BLOCK_BYTES);
                    let isum = dot32::<D>(u.lo, u.hi, ab.add(qs_offset));
                    acc[r] = vfmaq_n_f32(acc[r], vcvtq_f32_s32(isum), u.d * read_f16(ab));
                    if U::HAS_MIN {
                        offsets[r] += u.m * read_f16(ab.add(2));
                    }
                }
            }
            for r in 0..N {
                out[r] = vaddvq_f32(acc[r]) + offsets[r];
            }
        }
    }
}

/// Splits 16 packed bytes into their low nibbles (elements 0..16) and high nibbles (16..32).
#[inline(always)]
unsafe fn nibbles(q: uint8x16_t) -> (uint8x16_t, uint8x16_t) {
    // SAFETY: register-only NEON.
    unsafe { (vandq_u8(q, vdupq_n_u8(0x0F)), vshrq_n_u8::<4>(q)) }
}

/// The fifth bits of a Q5 block as `0x10` bytes: element `j` takes bit `j` of `qh`.
#[inline(always)]
unsafe fn fifth_bits(qh: u32) -> (uint8x16_t, uint8x16_t) {
    const BIT: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
    // Lanes 0..8 of the low half test byte 0 of `qh`, lanes 8..16 byte 1; the high half
    // uses bytes 2 and 3.
    const LO_IDX: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1];
    const HI_IDX: [u8; 16] = [2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3];
    // SAFETY: the constant arrays are 16 readable bytes each; the rest is register-only.
    unsafe {
        let word = vreinterpretq_u8_u32(vdupq_n_u32(qh));
        let bit = vld1q_u8(BIT.as_ptr());
        let ten = vdupq_n_u8(0x10);
        let lo = vqtbl1q_u8(word, vld1q_u8(LO_IDX.as_ptr()));
        let hi = vqtbl1q_u8(word, vld1q_u8(HI_IDX.as_ptr()));
        (
            vandq_u8(vtstq_u8(lo, bit), ten),
            vandq_u8(vtstq_u8(hi, bit), ten),
        )
    }
}

/// Q4_0: `x = d * (q - 8)`.
pub(super) struct Q4_0;

impl Unpack32 for Q4_0 {
    const BYTES: usize = 18;
    const HAS_MIN: bool = false;

    #[inline(always)]
    unsafe fn unpack(p: *const u8) -> Unpacked {
        // SAFETY: the caller guarantees 18 readable bytes: `d` at 0, `qs` at 2..18.
        unsafe {
            let (lo, hi) = nibbles(load_u8(p.add(2)));
            let eight = vdupq_n_s8(8);
            Unpacked {
                d: read_f16(p),
                m: 0.0,
                lo: vsubq_s8(vreinterpretq_s8_u8(lo), eight),
                hi: vsubq_s8(vreinterpretq_s8_u8(hi), eight),
            }
        }
    }
}

/// Q4_1: `x = d * q + m`.
pub(super) struct Q4_1;

impl Unpack32 for Q4_1 {
    const BYTES: usize = 20;
    const HAS_MIN: bool = true;

    #[inline(always)]
    unsafe fn unpack(p: *const u8) -> Unpacked {
        // SAFETY: the caller guarantees 20 readable bytes: `d` at 0, `m` at 2, `qs` at 4..20.
        unsafe {
            let (lo, hi) = nibbles(load_u8(p.add(4)));
            Unpacked {
                d: read_f16(p),
                m: read_f16(p.add(2)),
                lo: vreinterpretq_s8_u8(lo),
                hi: vreinterpretq_s8_u8(hi),
            }
        }
    }
}

/// Q5_0: `x = d * (q - 16)` with a fifth bit per element in `qh`.
pub(super) struct Q5_0;

impl Unpack32 for Q5_0 {
    const BYTES: usize = 22;
    const HAS_MIN: bool = false;

    #[inline(always)]
    unsafe fn unpack(p: *const u8) -> Unpacked {
        // SAFETY: the caller guarantees 22 readable bytes: `d` at 0, `qh` at 2, `qs` at 6..22.
        unsafe {
            let (lo, hi) = nibbles(load_u8(p.add(6)));
            let (hlo, hhi) = fifth_bits(read_u32(p.add(2)));
            let sixteen = vdupq_n_s8(16);
            Unpacked {
                d: read_f16(p),
                m: 0.0,
                lo: vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(lo, hlo)), sixteen),
                hi: vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(hi, hhi)), sixteen),
            }
        }
    }
}

/// Q5_1: `x = d * q + m` with a fifth bit per element in `qh`.
pub(super) struct Q5_1;

impl Unpack32 for Q5_1 {
    const BYTES: usize = 24;
    const HAS_MIN: bool = true;

    #[inline(always)]
    unsafe fn unpack(p: *const u8) -> Unpacked {
        // SAFETY: the caller guarantees 24 readable bytes: `d` at 0, `m` at 2, `qh` at 4,
        // `qs` at 8..24.
        unsafe {
            let (lo, hi) = nibbles(load_u8(p.add(8)));
            let (hlo, hhi) = fifth_bits(read_u32(p.add(4)));
            Unpacked {
                d: read_f16(p),
                m: read_f16(p.add(2)),
                lo: vreinterpretq_s8_u8(vorrq_u8(lo, hlo)),
                hi: vreinterpretq_s8_u8(vorrq_u8(hi, hhi)),
            }
        }
    }
}

/// Q8_0: `x = d * q`.
pub(super) struct Q8_0;

impl Unpack32 for Q8_0 {
    const BYTES: usize = 34;
    const HAS_MIN: bool = false;

    #[inline(always)]
    unsafe fn unpack(p: *const u8) -> Unpacked {
        // SAFETY: the caller guarantees 34 readable bytes: `d` at 0, `qs` at 2..34.
        unsafe {
            Unpacked {
                d: read_f16(p),
                m: 0.0,
                lo: load_s8(p.add(2)),
                hi: load_s8(p.add(18)),
            }
        }
    }
}

/// IQ4_NL: `x = d * IQ4NL_TABLE[nibble]`, looked up with `tbl`.
pub(super) struct IQ4NL;

impl Unpack32 for IQ4NL {
    const BYTES: usize = 18;
    const HAS_MIN: bool = false;

    #[inline(always)]
    unsafe fn unpack(p: *const u8) -> Unpacked {
        // SAFETY: the caller guarantees 18 readable bytes: `d` at 0, `qs` at 2..18; the table
        // constant is 16 readable bytes.
        unsafe {
            let table = vld1q_s8(IQ4NL_TABLE.as_ptr());
            let (lo, hi) = nibbles(load_u8(p.add(2)));
            Unpacked {
                d: read_f16(p),
                m: 0.0,
                lo: vqtbl1q_s8(table, lo),
                hi: vqtbl1q_s8(table, hi),
            }
        }
    }
}
