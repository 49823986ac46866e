//! Choosing the next token from a row of logits: greedy (argmax) or temperature sampling
//! with a small seeded PRNG, so a seed reproduces a run exactly.

/// SplitMix64: a tiny, well-mixed 64-bit generator (enough for sampling; not cryptographic).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose sequence is fixed by `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform value in `[0, 1)` with 53 bits of precision.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Index of the largest value (the first one on ties).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// A token sampler: greedy when `temperature <= 0`, otherwise a draw from
/// `softmax(logits / temperature)` restricted to the `top_k` most likely tokens.
#[derive(Clone, Debug)]
pub struct Sampler {
    temperature: f32,
    top_k: usize,
    rng: Rng,
    candidates: Vec<(f32, u32)>,
}

impl Sampler {
    /// A sampler; `top_k == 0` keeps the whole vocabulary.
    pub fn new(temperature: f32, top_k: usize, seed: u64) -> Sampler {
        Sampler {
            temperature,
            top_k,
            rng: Rng::new(seed),
            candidates: Vec::new(),
        }
    }

    /// Picks the next token from one row of logits.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.temperature.is_nan() || self.temperature <= 0.0 || logits.len() <= 1 {
            return argmax(logits);
        }
        let c = &mut self.candidates;
        c.clear();
        c.extend(logits.iter().enumerate().map(|(i, &v)| (v, i as u32)));
        let k = if self.top_k == 0 {
            c.len()
        } else {
            self.top_k.min(c.len())
        };
        let by_logit_desc =
            |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
        if k < c.len() {
            c.select_nth_unstable_by(k - 1, by_logit_desc);
            c.truncate(k);
        }
        c.sort_unstable_by(by_logit_desc);
        let max = c[0].0;
        let inv_t = 1.0 / self.temperature as f64;
        let total: f64 = c
            .iter()
            .map(|&(v, _)| ((v - max) as f64 * inv_t).exp())
            .sum();
        let mut r = self.rng.next_f64() * total;
        for &(v, id) in c.iter() {
            r -= ((v - max) as f64 * inv_t).exp();
            if r <= 0.0 {
                return id;
            }
        }
        c[c.len() - 1].1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_temperature_is_argmax() {
        let mut s = Sampler::new(0.0, 0, 1);
        assert_eq!(s.sample(&[0.1, 3.0, -2.0, 3.0]), 1);
    }

    #[test]
    fn the_same_seed_reproduces_the_same_draws() {
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let mut a = Sampler::new(0.9, 0, 42);
        let mut b = Sampler::new(0.9, 0, 42);
        let da: Vec<u32> = (0..20).map(|_| a.sample(&logits)).collect();
        let db: Vec<u32> = (0..20).map(|_| b.sample(&logits)).collect();
        assert_eq!(da, db);
    }

    #[test]
    fn top_k_one_is_greedy_at_any_temperature() {
        let mut s = Sampler::new(5.0, 1, 7);
        for _ in 0..10 {
            assert_eq!(s.sample(&[0.0, 0.5, 0.4]), 1);
        }
    }

    #[test]
    fn sampling_frequencies_follow_the_softmax() {
        // p = softmax([0, ln 3]) = [0.25, 0.75]
        let mut s = Sampler::new(1.0, 0, 3);
        let n = 20000;
        let ones = (0..n).filter(|_| s.sample(&[0.0, 3f32.ln()]) == 1).count();
        let p = ones as f64 / n as f64;
        assert!((p - 0.75).abs() < 0.02, "frequency {p}");
    }

    #[test]
    fn rng_values_are_in_the_unit_interval() {
        let mut r = Rng::new(0);
        for _ in 0..1000 {
            let x = r.next_f64();
            assert!((0.0..1.0).contains(&x));
        }
    }
}
