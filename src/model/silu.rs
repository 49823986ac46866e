//! SwiGLU's gate, `gate = silu(gate) * up` with `silu(x) = x / (1 + e^-x)`, eight values
//! at a time.
//!
//! The exponential is computed here rather than by libm's `expf` (which took 4-6% of a
//! Qwen2.5 token, one call per FFN unit and layer, on one thread in decode), in f64 and
//! rounded once to f32: `k = round(x · log2 e)`, `r = x - k · ln 2` (ln 2 split in two so
//! `k · ln2_hi` is exact), `e^r` by its Taylor polynomial of degree 10 (|r| <= ln 2 / 2, so
//! the error is below 3e-13 relative), times `2^k` put in the exponent bits. That is
//! accurate far beyond f32, so the rounded result is the correctly rounded `e^x` except when
//! `e^x` lies within about 2^-40 of a rounding midpoint: the same bits as libm's `expf` for
//! practically every input (tested), so models compute what they computed with libm.
//! Inputs beyond ±200 are clamped (the result is 0 or infinite in f32 either way).
//!
//! The AVX2 path and the scalar path do the same operations (fused multiply-adds where
//! `mul_add` is written), so every element gets the same bits whichever path takes it.

/// `log2(e)`.
const LOG2E: f64 = std::f64::consts::LOG2_E;
/// High part of ln 2 (its low 32 bits zero, so `k · LN2_HI` is exact for |k| < 2^20).
const LN2_HI: f64 = 0.693_147_180_369_123_8;
/// `ln 2 - LN2_HI`.
const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
/// `1/10!, 1/9!, ..., 1/1!, 1/0!`: the Taylor polynomial of `e^r`, highest degree first.
const TAYLOR: [f64; 11] = [
    1.0 / 3_628_800.0,
    1.0 / 362_880.0,
    1.0 / 40_320.0,
    1.0 / 5_040.0,
    1.0 / 720.0,
    1.0 / 120.0,
    1.0 / 24.0,
    1.0 / 6.0,
    1.0 / 2.0,
    1.0,
    1.0,
];
/// The input clamp: beyond it `e^x` is 0 or infinite in f32 anyway, and `k` stays a valid
/// f64 exponent.
const X_LIMIT: f64 = 200.0;

/// `e^x` as the vector path computes it: in f64, rounded once to f32 (see the module docs).
#[inline]
pub(crate) fn exp(x: f32) -> f32 {
    let x = clamp_input(f64::from(x));
    let k = (x * LOG2E).round_ties_even();
    let r = k.mul_add(-LN2_HI, x);
    let r = k.mul_add(-LN2_LO, r);
    let p = TAYLOR[1..]
        .iter()
        .fold(TAYLOR[0], |acc, &c| acc.mul_add(r, c));
    (p * f64::from_bits(((k as i64 + 1023) as u64) << 52)) as f32
}

/// `x` clamped to ±[`X_LIMIT`] as `_mm256_min_pd(_mm256_max_pd(x, lo), hi)` does it (NaN
/// compares false and becomes `-X_LIMIT`; silu(NaN) is still NaN: `NaN / (1 + e)`).
#[inline]
fn clamp_input(x: f64) -> f64 {
    let x = if x > -X_LIMIT { x } else { -X_LIMIT };
    if x < X_LIMIT {
        x
    } else {
        X_LIMIT
    }
}

/// `silu(g) · u` for one value.
#[inline]
fn silu_times(g: f32, u: f32) -> f32 {
    g / (1.0 + exp(-g)) * u
}

/// `gate[i] = silu(gate[i]) * up[i]` for every `i` (the shorter length of the two).
pub(crate) fn silu_gate(gate: &mut [f32], up: &[f32]) {
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: AVX2 and FMA were just detected.
        done = unsafe { silu_gate_avx2(gate, up) };
    }
    for (g, &u) in gate[done..].iter_mut().zip(&up[done..]) {
        *g = silu_times(*g, u);
    }
}

/// [`silu_gate`] eight values at a time; returns how many leading values it did (a multiple
/// of 8), bit for bit what [`silu_times`] gives each.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn silu_gate_avx2(gate: &mut [f32], up: &[f32]) -> usize {
    use std::arch::x86_64::*;
    /// `e^x` of four f64 lanes, rounded to four f32 (the steps of [`exp`]).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn exp4(x: __m256d) -> __m128 {
        let x = _mm256_min_pd(
            _mm256_max_pd(x, _mm256_set1_pd(-X_LIMIT)),
            _mm256_set1_pd(X_LIMIT),
        );
        let k = _mm256_round_pd::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_pd(x, _mm256_set1_pd(LOG2E)),
        );
        let r = _mm256_fnmadd_pd(k, _mm256_set1_pd(LN2_HI), x);
        let r = _mm256_fnmadd_pd(k, _mm256_set1_pd(LN2_LO), r);
        let mut p = _mm256_set1_pd(TAYLOR[0]);
        for &c in &TAYLOR[1..] {
            p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(c));
        }
        let k = _mm256_cvtepi32_epi64(_mm256_cvtpd_epi32(k));
        let pow2 = _mm256_slli_epi64::<52>(_mm256_add_epi64(k, _mm256_set1_epi64x(1023)));
        _mm256_cvtpd_ps(_mm256_mul_pd(p, _mm256_castsi256_pd(pow2)))
    }
    let n = gate.len().min(up.len()) / 8 * 8;
    let one = _mm256_set1_ps(1.0);
    for (g, u) in gate[..n].chunks_exact_mut(8).zip(up[..n].chunks_exact(8)) {
        // SAFETY: each chunk holds 8 f32 (unaligned loads and stores).
        unsafe {
            let gv = _mm256_loadu_ps(g.as_ptr());
            let x = _mm256_xor_ps(gv, _mm256_set1_ps(-0.0));
            let lo = exp4(_mm256_cvtps_pd(_mm256_castps256_ps128(x)));
            let hi = exp4(_mm256_cvtps_pd(_mm256_extractf128_ps::<1>(x)));
            let e = _mm256_set_m128(hi, lo);
            let silu = _mm256_div_ps(gv, _mm256_add_ps(one, e));
            _mm256_storeu_ps(
                g.as_mut_ptr(),
                _mm256_mul_ps(silu, _mm256_loadu_ps(u.as_ptr())),
            );
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place between two finite positive f32.
    fn ulps(a: f32, b: f32) -> u32 {
        a.to_bits().abs_diff(b.to_bits())
    }

    #[test]
    fn exp_gives_libm_bits_for_practically_every_input() {
        // Every 97th f32 from -110 to 89 (subnormal results and overflow included).
        let (mut n, mut differ) = (0u32, 0u32);
        let (lo, hi) = ((-110f32).to_bits(), 89f32.to_bits());
        let mut check = |x: f32| {
            let (got, want) = (exp(x), x.exp());
            n += 1;
            if got.to_bits() != want.to_bits() {
                differ += 1;
                assert!(ulps(got, want) <= 1, "exp({x}) = {got}, libm {want}");
            }
        };
        for b in (0..=lo).rev().step_by(97).filter(|&b| b >= 0x8000_0000) {
            check(f32::from_bits(b));
        }
        for b in (0..=hi).step_by(97) {
            check(f32::from_bits(b));
        }
        assert!(differ * 10_000 <= n, "{differ} of {n} differ from libm");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(1000.0), f32::INFINITY);
        assert_eq!(exp(-1000.0), 0.0);
    }

    #[test]
    fn silu_of_extremes_and_nan() {
        let mut g = [f32::NAN, 100.0, -100.0, 0.0, -0.0, 1e30, -1e30, 0.5];
        silu_gate(&mut g, &[1.0; 8]);
        assert!(g[0].is_nan());
        assert_eq!(g[1], 100.0);
        assert!(g[2] <= 0.0 && g[2] > -1e-40);
        assert_eq!((g[3], g[4]), (0.0, 0.0));
        assert_eq!(g[5], 1e30);
        assert_eq!(g[6], 0.0);
        assert_eq!(g[7].to_bits(), (0.5f32 / (1.0 + (-0.5f32).exp())).to_bits());
    }

    #[test]
    fn vector_and_scalar_paths_give_the_same_bits() {
        // 1027 values (8-wide chunks plus a scalar tail) across the interesting range, and
        // every tail position compared with the value the vector path gives it.
        let gate: Vec<f32> = (0..1027)
            .map(|i| ((i as f32) * 0.618_034).sin() * 30.0 * (1.0 + (i % 7) as f32))
            .collect();
        let up: Vec<f32> = (0..1027).map(|i| 1.0 + (i % 13) as f32 * 0.25).collect();
        let mut fast = gate.clone();
        silu_gate(&mut fast, &up);
        for (i, (&g, &u)) in gate.iter().zip(&up).enumerate() {
            assert_eq!(fast[i].to_bits(), silu_times(g, u).to_bits(), "element {i}");
        }
    }

    #[test]
    fn silu_is_close_to_the_f64_function() {
        // Down to -88: below, e^-x overflows f32 and silu is -0 (as with libm's `expf`).
        for i in -17_600..20_000 {
            let x = i as f32 * 0.005;
            let want = (x as f64) / (1.0 + (-(x as f64)).exp());
            let got = silu_times(x, 1.0) as f64;
            let tol = 2.0 * f32::EPSILON as f64 * want.abs().max(1e-38);
            assert!((got - want).abs() <= tol, "silu({x}) = {got}, want {want}");
        }
    }
}
