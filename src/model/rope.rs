//! Rotary position embedding (RoPE): angles, scaling (linear, Llama 3 frequency factors,
//! YaRN) and the rotation itself in both pairings.
//!
//! Pair `i` (`0 <= i < n_rot / 2`) of a head at absolute position `p` is rotated by
//! `theta_i = p * base^(-2i / n_rot)`, computed as the reference does: a running f32 product
//! `p * s^i` with `s = base^(-2 / n_rot)`, divided by the frequency factor, then mixed with
//! its interpolated value under YaRN. Dimensions `>= n_rot` pass through unchanged.

use super::arch::RopeStyle;

/// YaRN parameters (`rope.scaling.type = "yarn"`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Yarn {
    /// Low and high correction dimensions (pair indices), already clamped.
    pub corr_dims: [f32; 2],
}

impl Yarn {
    /// Correction dimensions for `n_rot` rotary dims trained on `n_ctx_orig` positions.
    pub fn new(n_rot: usize, n_ctx_orig: u32, base: f32, beta_fast: f32, beta_slow: f32) -> Yarn {
        let corr_dim = |beta: f32| {
            n_rot as f32 * (n_ctx_orig as f32 / (beta * 2.0 * std::f32::consts::PI)).ln()
                / (2.0 * base.ln())
        };
        let start = corr_dim(beta_fast).floor();
        let end = corr_dim(beta_slow).ceil();
        Yarn {
            corr_dims: [start.max(0.0), end.min(n_rot as f32 - 1.0)],
        }
    }

    /// The extrapolation weight of pair `i`: 1 keeps the original angle, 0 interpolates.
    fn ramp(&self, pair: usize) -> f32 {
        let [low, high] = self.corr_dims;
        let y = (pair as f32 - low) / (high - low).max(0.001);
        1.0 - y.clamp(0.0, 1.0)
    }
}

/// A model's RoPE: pairing, base, scaling. Built once at load.
#[derive(Clone, Debug)]
pub struct Rope {
    /// Pairing of dimensions.
    pub style: RopeStyle,
    /// Number of rotated dimensions per head (even, at most head_dim).
    pub n_rot: usize,
    /// `rope.freq_base`.
    pub base: f32,
    /// `1 / rope.scaling.factor` for linear and YaRN scaling, else 1.
    pub freq_scale: f32,
    /// YaRN ramp, when YaRN scaling is on.
    pub yarn: Option<Yarn>,
    /// Factor on cos and sin (attention factor).
    pub attn_factor: f32,
    /// Llama 3.1+ frequency factors (`rope_freqs.weight`, `n_rot / 2` entries) that divide
    /// each pair's angle.
    pub freq_factors: Option<Vec<f32>>,
}

impl Rope {
    /// Number of rotated pairs per head.
    pub fn n_pairs(&self) -> usize {
        self.n_rot / 2
    }

    /// Writes `[cos, sin]` of every pair for position `pos` into `out`
    /// (`out.len() == n_rot`, interleaved cos/sin).
    pub fn fill_cos_sin(&self, pos: usize, out: &mut [f32]) {
        debug_assert_eq!(out.len(), self.n_rot);
        let theta_scale = self.base.powf(-2.0 / self.n_rot as f32);
        let mut theta = pos as f32;
        for (i, cs) in out.chunks_exact_mut(2).enumerate() {
            let ff = self.freq_factors.as_ref().map_or(1.0, |f| f[i]);
            let theta_extrap = theta / ff;
            let theta_interp = self.freq_scale * theta_extrap;
            let (angle, mscale) = match &self.yarn {
                None => (theta_interp, self.attn_factor),
                Some(y) => {
                    let mix = y.ramp(i);
                    let angle = theta_interp * (1.0 - mix) + theta_extrap * mix;
                    (
                        angle,
                        self.attn_factor * (1.0 + 0.1 * (1.0 / self.freq_scale).ln()),
                    )
                }
            };
            cs[0] = angle.cos() * mscale;
            cs[1] = angle.sin() * mscale;
            theta *= theta_scale;
        }
    }

    /// Rotates one head vector `x` (`head_dim` values) with the table `cos_sin` of its
    /// position (from [`Rope::fill_cos_sin`]).
    pub fn rotate(&self, x: &mut [f32], cos_sin: &[f32]) {
        let half = self.n_rot / 2;
        for (i, cs) in cos_sin.chunks_exact(2).enumerate() {
            let (c, s) = (cs[0], cs[1]);
            let (a, b) = match self.style {
                RopeStyle::Norm => (2 * i, 2 * i + 1),
                RopeStyle::Neox => (i, i + half),
            };
            let (x0, x1) = (x[a], x[b]);
            x[a] = x0 * c - x1 * s;
            x[b] = x0 * s + x1 * c;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(style: RopeStyle, n_rot: usize) -> Rope {
        Rope {
            style,
            n_rot,
            base: 10000.0,
            freq_scale: 1.0,
            yarn: None,
            attn_factor: 1.0,
            freq_factors: None,
        }
    }

    #[test]
    fn position_zero_is_the_identity() {
        let rope = plain(RopeStyle::Neox, 8);
        let mut cs = vec![0.0; 8];
        rope.fill_cos_sin(0, &mut cs);
        let mut x: Vec<f32> = (0..8).map(|i| i as f32 - 3.5).collect();
        let before = x.clone();
        rope.rotate(&mut x, &cs);
        assert_eq!(x, before);
    }

    #[test]
    fn norm_style_rotates_adjacent_pairs_by_the_position_angle() {
        let rope = plain(RopeStyle::Norm, 4);
        let mut cs = vec![0.0; 4];
        rope.fill_cos_sin(3, &mut cs);
        // pair 0 has theta = 3 rad exactly
        let mut x = vec![1.0, 0.0, 0.0, 0.0];
        rope.rotate(&mut x, &cs);
        assert!((x[0] - 3f32.cos()).abs() < 1e-6 && (x[1] - 3f32.sin()).abs() < 1e-6);
        assert_eq!(&x[2..], &[0.0, 0.0]);
    }

    #[test]
    fn neox_style_pairs_dimension_i_with_i_plus_half() {
        let rope = plain(RopeStyle::Neox, 4);
        let mut cs = vec![0.0; 4];
        rope.fill_cos_sin(3, &mut cs);
        let mut x = vec![1.0, 0.0, 0.0, 0.0];
        rope.rotate(&mut x, &cs);
        assert!((x[0] - 3f32.cos()).abs() < 1e-6 && (x[2] - 3f32.sin()).abs() < 1e-6);
        assert_eq!(x[1], 0.0);
    }

    #[test]
    fn rotation_preserves_the_norm_and_leaves_unrotated_dims_alone() {
        let rope = plain(RopeStyle::Norm, 4);
        let mut cs = vec![0.0; 4];
        rope.fill_cos_sin(17, &mut cs);
        let mut x = vec![0.3, -1.2, 0.7, 2.0, 5.0, -6.0];
        let n0: f32 = x[..4].iter().map(|v| v * v).sum();
        rope.rotate(&mut x, &cs);
        let n1: f32 = x[..4].iter().map(|v| v * v).sum();
        assert!((n0 - n1).abs() < 1e-4);
        assert_eq!(&x[4..], &[5.0, -6.0]);
    }

    #[test]
    fn linear_scaling_divides_the_angle_by_the_factor() {
        let mut rope = plain(RopeStyle::Norm, 2);
        rope.freq_scale = 0.25;
        let mut cs = vec![0.0; 2];
        rope.fill_cos_sin(8, &mut cs);
        assert!((cs[0] - 2f32.cos()).abs() < 1e-6 && (cs[1] - 2f32.sin()).abs() < 1e-6);
    }

    #[test]
    fn frequency_factors_divide_each_pairs_angle() {
        let mut rope = plain(RopeStyle::Norm, 2);
        rope.freq_factors = Some(vec![4.0]);
        let mut cs = vec![0.0; 2];
        rope.fill_cos_sin(8, &mut cs);
        assert!((cs[0] - 2f32.cos()).abs() < 1e-6);
    }

    #[test]
    fn yarn_keeps_high_frequency_pairs_and_interpolates_low_ones() {
        let n_rot = 64;
        let yarn = Yarn::new(n_rot, 4096, 10000.0, 32.0, 1.0);
        assert!(yarn.corr_dims[0] < yarn.corr_dims[1]);
        assert_eq!(yarn.ramp(0), 1.0);
        assert_eq!(yarn.ramp(n_rot / 2 - 1), 0.0);
        let rope = Rope {
            freq_scale: 0.25,
            yarn: Some(yarn),
            ..plain(RopeStyle::Neox, n_rot)
        };
        let mut cs = vec![0.0; n_rot];
        rope.fill_cos_sin(1, &mut cs);
        let mscale = 1.0 + 0.1 * 4f32.ln();
        // pair 0: theta = 1, extrapolated (unscaled)
        assert!((cs[0] - 1f32.cos() * mscale).abs() < 1e-5);
    }
}
