//! Choosing the next token from a row of logits.
//!
//! A [`Sampler`] applies, in the order of the reference runtime's default chain:
//! repetition/frequency/presence penalties over a window of recent tokens, top-k, top-p
//! (nucleus), min-p, temperature, then a draw from the softmax with a small seeded PRNG, so
//! a seed reproduces a run exactly. A temperature of 0 (or [`Sampler::greedy`]) takes the
//! most likely token after the penalties.
//!
//! ```
//! use openweight::Sampler;
//!
//! let mut sampler = Sampler::builder()
//!     .temperature(0.8)
//!     .top_k(40)
//!     .top_p(0.95)
//!     .min_p(0.05)
//!     .repetition_penalty(1.1)
//!     .penalty_window(64)
//!     .seed(42)
//!     .build();
//! let logits = [0.5, 2.0, 1.9, -1.0];
//! let id = sampler.sample(&logits);
//! assert!(id == 1 || id == 2);
//! assert_eq!(Sampler::greedy().sample(&logits), 1);
//! ```

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

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

/// Settings of a [`Sampler`]; each stage is off at its neutral value.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Settings {
    temperature: f32,
    top_k: usize,
    top_p: f32,
    min_p: f32,
    repetition_penalty: f32,
    frequency_penalty: f32,
    presence_penalty: f32,
    penalty_window: usize,
}

/// Builds a [`Sampler`]. The defaults are the reference runtime's: temperature 0.8, top-k
/// 40, top-p 0.95, min-p 0.05, no penalties (repetition 1.0, frequency and presence 0.0)
/// over a window of 64 tokens, and seed 0.
#[derive(Clone, Debug)]
pub struct SamplerBuilder {
    settings: Settings,
    seed: u64,
}

impl Default for SamplerBuilder {
    fn default() -> SamplerBuilder {
        SamplerBuilder {
            settings: Settings {
                temperature: 0.8,
                top_k: 40,
                top_p: 0.95,
                min_p: 0.05,
                repetition_penalty: 1.0,
                frequency_penalty: 0.0,
                presence_penalty: 0.0,
                penalty_window: 64,
            },
            seed: 0,
        }
    }
}

impl SamplerBuilder {
    /// Divides the logits by `t` before the draw; `t <= 0` (or NaN) is greedy.
    pub fn temperature(mut self, t: f32) -> Self {
        self.settings.temperature = t;
        self
    }

    /// Keeps only the `k` most likely tokens; 0 keeps all.
    pub fn top_k(mut self, k: usize) -> Self {
        self.settings.top_k = k;
        self
    }

    /// Keeps the most likely tokens whose probabilities sum to at least `p`; `p >= 1` keeps
    /// all.
    pub fn top_p(mut self, p: f32) -> Self {
        self.settings.top_p = p;
        self
    }

    /// Drops tokens less likely than `p` times the most likely one; `p <= 0` keeps all.
    pub fn min_p(mut self, p: f32) -> Self {
        self.settings.min_p = p;
        self
    }

    /// Divides positive logits (multiplies negative ones) of recently seen tokens by
    /// `penalty`; 1.0 is off.
    pub fn repetition_penalty(mut self, penalty: f32) -> Self {
        self.settings.repetition_penalty = penalty;
        self
    }

    /// Subtracts `penalty` times a token's count in the window from its logit; 0 is off.
    pub fn frequency_penalty(mut self, penalty: f32) -> Self {
        self.settings.frequency_penalty = penalty;
        self
    }

    /// Subtracts `penalty` from the logit of every token present in the window; 0 is off.
    pub fn presence_penalty(mut self, penalty: f32) -> Self {
        self.settings.presence_penalty = penalty;
        self
    }

    /// How many of the most recent tokens the penalties look at; 0 turns them off.
    pub fn penalty_window(mut self, n: usize) -> Self {
        self.settings.penalty_window = n;
        self
    }

    /// Seeds the random draw: the same seed and the same logits give the same tokens.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The sampler.
    pub fn build(self) -> Sampler {
        Sampler {
            settings: self.settings,
            rng: Rng::new(self.seed),
            candidates: Vec::new(),
            counts: Vec::new(),
            heap: BinaryHeap::new(),
        }
    }
}

/// A token sampler (see the [module docs](self) for the order of its stages).
#[derive(Clone, Debug)]
pub struct Sampler {
    settings: Settings,
    rng: Rng,
    /// `(logit, id)` pairs still in the running.
    candidates: Vec<(f32, u32)>,
    /// Sorted copy of the penalty window, for counting.
    counts: Vec<u32>,
    /// The worst of the best `top_k` so far on top, for [`top_k_scan`].
    heap: BinaryHeap<Reverse<Ranked>>,
}

impl Sampler {
    /// A builder with the reference runtime's defaults (see [`SamplerBuilder`]).
    pub fn builder() -> SamplerBuilder {
        SamplerBuilder::default()
    }

    /// Always the most likely token (argmax, the lowest id on ties).
    pub fn greedy() -> Sampler {
        Sampler::builder().temperature(0.0).build()
    }

    /// Temperature and top-k sampling only (no top-p, min-p or penalties); `top_k == 0`
    /// keeps the whole vocabulary.
    pub fn new(temperature: f32, top_k: usize, seed: u64) -> Sampler {
        Sampler::builder()
            .temperature(temperature)
            .top_k(top_k)
            .top_p(1.0)
            .min_p(0.0)
            .seed(seed)
            .build()
    }

    /// Whether this sampler always takes the most likely token (after penalties).
    pub fn is_greedy(&self) -> bool {
        let t = self.settings.temperature;
        t.is_nan() || t <= 0.0
    }

    /// Picks the next token from one row of logits, with no history for the penalties.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        self.sample_with_history(logits, &[])
    }

    /// Picks the next token from one row of logits; `history` is the sequence so far (its
    /// last `penalty_window` tokens are penalised). Returns 0 for an empty row.
    pub fn sample_with_history(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        if logits.is_empty() {
            return 0;
        }
        let s = self.settings;
        let window = &history[history.len().saturating_sub(s.penalty_window)..];
        let penalise = !window.is_empty()
            && (s.repetition_penalty != 1.0
                || s.frequency_penalty != 0.0
                || s.presence_penalty != 0.0);
        let greedy = self.is_greedy();
        if greedy && !penalise {
            return argmax(logits);
        }
        let c = &mut self.candidates;
        if !penalise && !greedy && s.top_k > 0 && s.top_k.saturating_mul(8) < logits.len() {
            // A small top-k of a large vocabulary: one pass with a heap instead of copying
            // and partitioning the whole row (same set, same order).
            top_k_scan(logits, s.top_k, &mut self.heap, c);
        } else {
            c.clear();
            c.extend(logits.iter().enumerate().map(|(i, &v)| (v, i as u32)));
        }
        if penalise {
            apply_penalties(c, window, &mut self.counts, &s);
        }
        if greedy {
            let best = c
                .iter()
                .fold(c[0], |best, &x| if x.0 > best.0 { x } else { best });
            return best.1;
        }
        top_k(c, s.top_k);
        top_p(c, s.top_p);
        min_p(c, s.min_p);
        let inv_t = 1.0 / s.temperature as f64;
        let max = c[0].0;
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

/// Candidates sorted by logit, highest first (lowest id first on ties).
fn by_logit_desc(a: &(f32, u32), b: &(f32, u32)) -> Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

/// A `(logit, id)` candidate ordered by preference: a higher logit is greater, and on equal
/// logits the lower id is greater (the order of [`by_logit_desc`], reversed).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Ranked(f32, u32);

impl Eq for Ranked {}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Ranked) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ranked {
    fn cmp(&self, other: &Ranked) -> Ordering {
        by_logit_desc(&(other.0, other.1), &(self.0, self.1))
    }
}

/// Writes the `k` (`>= 1`) best `(logit, id)` pairs of `logits` to `out`, highest first:
/// the same result as sorting the whole row and keeping `k`, in one pass.
fn top_k_scan(
    logits: &[f32],
    k: usize,
    heap: &mut BinaryHeap<Reverse<Ranked>>,
    out: &mut Vec<(f32, u32)>,
) {
    heap.clear();
    for (i, &v) in logits.iter().enumerate() {
        let r = Ranked(v, i as u32);
        if heap.len() < k {
            heap.push(Reverse(r));
        } else if let Some(mut worst) = heap.peek_mut() {
            if r > worst.0 {
                *worst = Reverse(r);
            }
        }
    }
    out.clear();
    out.extend(heap.drain().map(|Reverse(Ranked(v, id))| (v, id)));
    out.sort_unstable_by(by_logit_desc);
}

/// Repetition, frequency and presence penalties for the tokens in `window`. `c` is indexed
/// by id (not yet filtered).
fn apply_penalties(c: &mut [(f32, u32)], window: &[u32], counts: &mut Vec<u32>, s: &Settings) {
    counts.clear();
    counts.extend_from_slice(window);
    counts.sort_unstable();
    for run in counts.chunk_by(|a, b| a == b) {
        let Some(cand) = c.get_mut(run[0] as usize) else {
            continue;
        };
        let v = &mut cand.0;
        if *v <= 0.0 {
            *v *= s.repetition_penalty;
        } else {
            *v /= s.repetition_penalty;
        }
        *v -= run.len() as f32 * s.frequency_penalty + s.presence_penalty;
    }
}

/// Keeps the `k` highest logits (all for `k == 0`) and sorts them, highest first.
fn top_k(c: &mut Vec<(f32, u32)>, k: usize) {
    if k > 0 && k < c.len() {
        c.select_nth_unstable_by(k - 1, by_logit_desc);
        c.truncate(k);
    }
    c.sort_unstable_by(by_logit_desc);
}

/// Keeps the shortest prefix of the sorted candidates whose probability reaches `p`.
fn top_p(c: &mut Vec<(f32, u32)>, p: f32) {
    if p.is_nan() || p >= 1.0 || c.len() <= 1 {
        return;
    }
    let max = c[0].0;
    let weights = |v: f32| ((v - max) as f64).exp();
    let total: f64 = c.iter().map(|&(v, _)| weights(v)).sum();
    let target = p as f64 * total;
    let mut cum = 0.0;
    let mut keep = c.len();
    for (i, &(v, _)) in c.iter().enumerate() {
        cum += weights(v);
        if cum >= target {
            keep = i + 1;
            break;
        }
    }
    c.truncate(keep.max(1));
}

/// Drops sorted candidates whose probability is below `p` times the largest.
fn min_p(c: &mut Vec<(f32, u32)>, p: f32) {
    if p.is_nan() || p <= 0.0 || c.len() <= 1 {
        return;
    }
    let threshold = c[0].0 + p.ln();
    let keep = c.iter().take_while(|&&(v, _)| v >= threshold).count();
    c.truncate(keep.max(1));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Draws `n` tokens and returns how often each id came up.
    fn histogram(s: &mut Sampler, logits: &[f32], history: &[u32], n: usize) -> Vec<usize> {
        let mut h = vec![0; logits.len()];
        for _ in 0..n {
            h[s.sample_with_history(logits, history) as usize] += 1;
        }
        h
    }

    /// A sampler that only draws (every filter off) at temperature 1.
    fn plain() -> SamplerBuilder {
        Sampler::builder()
            .temperature(1.0)
            .top_k(0)
            .top_p(1.0)
            .min_p(0.0)
            .seed(9)
    }

    #[test]
    fn zero_temperature_is_argmax() {
        let mut s = Sampler::new(0.0, 0, 1);
        assert_eq!(s.sample(&[0.1, 3.0, -2.0, 3.0]), 1);
        assert!(Sampler::greedy().is_greedy());
    }

    #[test]
    fn the_same_seed_reproduces_the_same_draws() {
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let mut a = Sampler::builder().seed(42).top_k(0).build();
        let mut b = Sampler::builder().seed(42).top_k(0).build();
        let da: Vec<u32> = (0..20).map(|_| a.sample(&logits)).collect();
        let db: Vec<u32> = (0..20).map(|_| b.sample(&logits)).collect();
        assert_eq!(da, db);
        let mut c = Sampler::builder().seed(43).top_k(0).build();
        let dc: Vec<u32> = (0..20).map(|_| c.sample(&logits)).collect();
        assert_ne!(da, dc, "a different seed gives different draws");
    }

    #[test]
    fn top_k_one_is_greedy_at_any_temperature() {
        let mut s = Sampler::new(5.0, 1, 7);
        for _ in 0..10 {
            assert_eq!(s.sample(&[0.0, 0.5, 0.4]), 1);
        }
    }

    #[test]
    fn top_k_keeps_only_the_k_most_likely_tokens() {
        let logits = [1.0, 4.0, 3.0, 2.0, 0.0];
        let h = histogram(&mut plain().top_k(2).build(), &logits, &[], 2000);
        assert_eq!((h[0], h[3], h[4]), (0, 0, 0), "{h:?}");
        assert!(h[1] > 0 && h[2] > 0, "{h:?}");
    }

    #[test]
    fn top_p_keeps_the_smallest_set_reaching_p() {
        // p = [0.5, 0.25, 0.125, 0.125]: top-p 0.7 keeps ids 0 and 1 (0.5 < 0.7 <= 0.75).
        let l = |p: f32| p.ln();
        let logits = [l(0.5), l(0.25), l(0.125), l(0.125)];
        let h = histogram(&mut plain().top_p(0.7).build(), &logits, &[], 3000);
        assert_eq!((h[2], h[3]), (0, 0), "{h:?}");
        let p0 = h[0] as f64 / 3000.0;
        assert!(
            (p0 - 2.0 / 3.0).abs() < 0.04,
            "renormalised over the kept set: {p0}"
        );
        // A p the best token alone reaches keeps only it.
        let h = histogram(&mut plain().top_p(0.45).build(), &logits, &[], 200);
        assert_eq!(h[0], 200, "{h:?}");
    }

    #[test]
    fn min_p_drops_tokens_below_a_fraction_of_the_best() {
        // p = [0.6, 0.3, 0.1]: min-p 0.2 keeps tokens with p >= 0.12.
        let logits = [0.6f32.ln(), 0.3f32.ln(), 0.1f32.ln()];
        let h = histogram(&mut plain().min_p(0.2).build(), &logits, &[], 2000);
        assert_eq!(h[2], 0, "{h:?}");
        assert!(h[1] > 0, "{h:?}");
    }

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative_logits() {
        let mut s = Sampler::builder()
            .temperature(0.0)
            .repetition_penalty(2.0)
            .build();
        // id 0: 3.0 -> 1.5 (below id 1's 2.0).
        assert_eq!(s.sample_with_history(&[3.0, 2.0], &[0]), 1);
        // id 1: -1.0 -> -2.0 (below id 0's -1.5).
        assert_eq!(s.sample_with_history(&[-1.5, -1.0], &[1]), 0);
        assert_eq!(s.sample(&[3.0, 2.0]), 0, "no history, no penalty");
    }

    #[test]
    fn frequency_penalty_grows_with_the_count_and_presence_penalty_does_not() {
        let greedy = || Sampler::builder().temperature(0.0);
        let logits = [5.0, 3.5, 0.0];
        let mut f = greedy().frequency_penalty(1.0).build();
        assert_eq!(f.sample_with_history(&logits, &[0]), 0, "5 - 1 > 3.5");
        assert_eq!(f.sample_with_history(&logits, &[0, 2, 0]), 1, "5 - 2 < 3.5");
        let mut p = greedy().presence_penalty(1.0).build();
        assert_eq!(p.sample_with_history(&logits, &[0, 0, 0]), 0, "5 - 1 > 3.5");
        assert_eq!(
            greedy()
                .presence_penalty(2.0)
                .build()
                .sample_with_history(&logits, &[0]),
            1
        );
    }

    #[test]
    fn penalties_look_only_at_the_window() {
        let mut s = Sampler::builder()
            .temperature(0.0)
            .repetition_penalty(10.0)
            .penalty_window(1)
            .build();
        // Only the most recent token is penalised: 3.0 stays, 2.0 -> 0.2.
        assert_eq!(s.sample_with_history(&[3.0, 2.0], &[0, 1]), 0);
        // 3.0 -> 0.3, 2.0 stays.
        assert_eq!(s.sample_with_history(&[3.0, 2.0], &[1, 0]), 1);
    }

    #[test]
    fn history_ids_outside_the_row_are_ignored() {
        let mut s = Sampler::builder()
            .temperature(0.0)
            .repetition_penalty(2.0)
            .build();
        assert_eq!(s.sample_with_history(&[1.0, 2.0], &[7, u32::MAX]), 1);
    }

    #[test]
    fn top_p_applies_before_temperature() {
        // With temperature last, a high temperature cannot bring back what top-p removed.
        let l = |p: f32| p.ln();
        let logits = [l(0.9), l(0.05), l(0.05)];
        let mut s = plain().temperature(100.0).top_p(0.8).build();
        let h = histogram(&mut s, &logits, &[], 300);
        assert_eq!(h[0], 300, "{h:?}");
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
    fn temperature_sharpens_or_flattens_the_distribution() {
        let logits = [0.0, 3f32.ln()];
        let cold = histogram(&mut plain().temperature(0.5).build(), &logits, &[], 20000);
        // p1 = 9 / 10 at T = 0.5.
        let p = cold[1] as f64 / 20000.0;
        assert!((p - 0.9).abs() < 0.02, "frequency {p}");
    }

    #[test]
    fn degenerate_rows_do_not_panic() {
        let mut s = plain().build();
        assert_eq!(s.sample(&[]), 0);
        let id = s.sample(&[f32::NAN, 1.0, f32::NEG_INFINITY]);
        assert!(id < 3);
        let id = s.sample(&[f32::NEG_INFINITY; 4]);
        assert!(id < 4);
        let mut g = Sampler::builder()
            .temperature(f32::NAN)
            .repetition_penalty(0.0)
            .build();
        assert!(g.sample_with_history(&[1.0, 2.0], &[1]) < 2);
    }

    #[test]
    fn the_one_pass_top_k_equals_sorting_the_whole_row() {
        let mut rng = Rng::new(5);
        let mut heap = BinaryHeap::new();
        let mut fast = Vec::new();
        for (n, k) in [(1000, 1), (1000, 40), (517, 64), (64, 63)] {
            // Few distinct values, so ties are everywhere; a NaN and infinities too.
            let mut logits: Vec<f32> = (0..n).map(|_| (rng.next_u64() % 13) as f32).collect();
            logits[7] = f32::INFINITY;
            logits[9] = f32::NEG_INFINITY;
            logits[11] = f32::NAN;
            top_k_scan(&logits, k, &mut heap, &mut fast);
            let mut all: Vec<(f32, u32)> = logits
                .iter()
                .enumerate()
                .map(|(i, &v)| (v, i as u32))
                .collect();
            top_k(&mut all, k);
            let same = fast.len() == all.len()
                && fast
                    .iter()
                    .zip(&all)
                    .all(|(a, b)| a.1 == b.1 && a.0.to_bits() == b.0.to_bits());
            assert!(same, "n {n} k {k}");
        }
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
