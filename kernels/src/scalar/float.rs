//! Float element types: F32, F16 (IEEE binary16, subnormals included) and BF16 (the upper
//! 16 bits of an f32). All are stored little-endian; none assumes alignment.
//!
//! Dot products pair each type with itself. Both operands are widened to `f32` (exactly),
//! each product is formed in `f64` (exact: two 24-bit significands fit in 53 bits), and the
//! products are summed in `f64` in element order, starting at `0.0`; the sum is rounded to
//! `f32` once at the end. This makes the scalar result the most accurate of all kernel
//! sets, so SIMD kernels (which sum `f32` lanes) are checked against it with a tolerance.

use half::{bf16, f16};

use crate::dispatch::MAX_ACT_ROWS;

/// The little-endian f32 in `c` (4 bytes).
#[inline]
fn f32_le(c: &[u8]) -> f32 {
    f32::from_le_bytes([c[0], c[1], c[2], c[3]])
}

/// The little-endian f16 in `c` (2 bytes), widened to f32 (exact, subnormals included).
#[inline]
fn f16_le(c: &[u8]) -> f32 {
    f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32()
}

/// The little-endian bf16 in `c` (2 bytes), widened to f32 (a 16-bit shift, exact).
#[inline]
fn bf16_le(c: &[u8]) -> f32 {
    bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32()
}

/// Converts every `elem_bytes`-byte value of `src` into `dst`, which must hold exactly as many.
///
/// # Panics
/// If the counts differ (caller bug).
fn fill(dst: &mut [f32], src: &[u8], elem_bytes: usize, convert: fn(&[u8]) -> f32) {
    assert!(
        src.len().is_multiple_of(elem_bytes) && dst.len() == src.len() / elem_bytes,
        "dequantize: {} bytes are not {} values of {elem_bytes} bytes",
        src.len(),
        dst.len()
    );
    for (d, c) in dst.iter_mut().zip(src.chunks_exact(elem_bytes)) {
        *d = convert(c);
    }
}

/// F32 -> f32: a copy.
pub(crate) fn dequantize_f32(src: &[u8], dst: &mut [f32]) {
    fill(dst, src, 4, f32_le);
}

/// F16 -> f32: exact widening, subnormals, infinities and NaNs preserved.
pub(crate) fn dequantize_f16(src: &[u8], dst: &mut [f32]) {
    fill(dst, src, 2, f16_le);
}

/// BF16 -> f32: the 16 bits become the upper half of the f32.
pub(crate) fn dequantize_bf16(src: &[u8], dst: &mut [f32]) {
    fill(dst, src, 2, bf16_le);
}

/// Shared body of the float dots: `convert` widens one `elem_bytes`-byte value to f32.
fn dot_float(
    w: &[u8],
    acts: &[u8],
    act_row_bytes: usize,
    out: &mut [f32],
    elem_bytes: usize,
    convert: fn(&[u8]) -> f32,
) {
    let n_rows = out.len();
    assert!(
        n_rows <= MAX_ACT_ROWS,
        "dot: {n_rows} activation rows, at most {MAX_ACT_ROWS}"
    );
    assert!(
        w.len().is_multiple_of(elem_bytes),
        "dot: {} bytes is not whole values",
        w.len()
    );
    if n_rows == 0 {
        return;
    }
    let used = w.len();
    assert!(
        (n_rows == 1 || act_row_bytes >= used) && acts.len() >= (n_rows - 1) * act_row_bytes + used,
        "dot: {} activation bytes cannot hold {n_rows} rows of {used} bytes, {act_row_bytes} apart",
        acts.len()
    );
    for (r, o) in out.iter_mut().enumerate() {
        let a = &acts[r * act_row_bytes..r * act_row_bytes + used];
        let sum: f64 = w
            .chunks_exact(elem_bytes)
            .zip(a.chunks_exact(elem_bytes))
            .map(|(x, y)| f64::from(convert(x)) * f64::from(convert(y)))
            .sum();
        *o = sum as f32;
    }
}

/// F32 x F32: exact products summed in f64, in element order, rounded to f32 at the end.
pub(crate) fn dot_f32(w: &[u8], acts: &[u8], act_row_bytes: usize, out: &mut [f32]) {
    dot_float(w, acts, act_row_bytes, out, 4, f32_le);
}

/// F16 x F16: both widened to f32, exact products summed in f64, rounded to f32 at the end.
pub(crate) fn dot_f16(w: &[u8], acts: &[u8], act_row_bytes: usize, out: &mut [f32]) {
    dot_float(w, acts, act_row_bytes, out, 2, f16_le);
}

/// BF16 x BF16: both widened to f32, exact products summed in f64, rounded to f32 at the end.
pub(crate) fn dot_bf16(w: &[u8], acts: &[u8], act_row_bytes: usize, out: &mut [f32]) {
    dot_float(w, acts, act_row_bytes, out, 2, bf16_le);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_subnormals_dequantize_exactly() {
        let bits: [u16; 4] = [0x0001, 0x03FF, 0x8001, 0x7BFF];
        let bytes: Vec<u8> = bits.iter().flat_map(|b| b.to_le_bytes()).collect();
        let mut y = [0f32; 4];
        dequantize_f16(&bytes, &mut y);
        assert_eq!(
            y,
            [
                2f32.powi(-24),
                1023.0 * 2f32.powi(-24),
                -(2f32.powi(-24)),
                65504.0
            ]
        );
    }

    #[test]
    fn bf16_is_the_upper_half_of_an_f32() {
        let x = 1.2345678f32;
        let hi = (x.to_bits() >> 16) as u16;
        let mut y = [0f32; 1];
        dequantize_bf16(&hi.to_le_bytes(), &mut y);
        assert_eq!(y[0].to_bits(), x.to_bits() & 0xFFFF_0000);
    }

    #[test]
    fn f32_dot_sums_exact_products_in_f64() {
        // In f32, (1e8 + 1) - 1e8 loses the 1; the f64 sum keeps it.
        let w: Vec<u8> = [1e8f32, 1.0, -1e8]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let a: Vec<u8> = [1f32, 1.0, 1.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let mut out = [0f32; 1];
        dot_f32(&w, &a, a.len(), &mut out);
        assert_eq!(out[0], 1.0);
    }

    #[test]
    fn float_dot_handles_several_activation_rows_with_padding() {
        let w: Vec<u8> = [1f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        // Rows of 3 floats (12 bytes), only the first 2 are read.
        let a: Vec<u8> = [1f32, 1.0, 99.0, 3.0, -1.0, 99.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let mut out = [0f32; 2];
        dot_f32(&w, &a, 12, &mut out);
        assert_eq!(out, [3.0, 1.0]);
    }
}
