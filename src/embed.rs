//! Embeddings: a fixed-size vector for a text, from the model's hidden states after the
//! final norm, for on-device retrieval and similarity.
//!
//! ```no_run
//! use openweight::{Model, Pooling};
//!
//! let model = Model::open("fixtures/models/smollm2-135m-q4_1.gguf")?;
//! let a = model.embed("a cat sat on the mat", Pooling::Mean, true)?;
//! let b = model.embed("a kitten on a rug", Pooling::Mean, true)?;
//! let cosine: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
//! println!("similarity {cosine:.3}");
//! # Ok::<(), openweight::Error>(())
//! ```

/// How the hidden states of a text's tokens become one vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pooling {
    /// The mean over all tokens.
    Mean,
    /// The last token's hidden state (it has seen the whole text through causal attention).
    Last,
}

/// Pools `hidden` (`[n][n_embd]`, `n >= 1`) into one vector, scaled to unit L2 norm if
/// `normalize` (a zero vector stays zero).
pub(crate) fn pool_hidden(
    hidden: &[f32],
    n_embd: usize,
    pooling: Pooling,
    normalize: bool,
) -> Vec<f32> {
    let n = hidden.len() / n_embd;
    let mut out = match pooling {
        Pooling::Last => hidden[(n - 1) * n_embd..n * n_embd].to_vec(),
        Pooling::Mean => {
            let mut sum = vec![0f64; n_embd];
            for row in hidden.chunks_exact(n_embd) {
                for (s, &v) in sum.iter_mut().zip(row) {
                    *s += v as f64;
                }
            }
            sum.iter().map(|&s| (s / n as f64) as f32).collect()
        }
    };
    if normalize {
        let norm = out
            .iter()
            .map(|&v| (v as f64) * (v as f64))
            .sum::<f64>()
            .sqrt();
        if norm > 0.0 {
            out.iter_mut().for_each(|v| *v = (*v as f64 / norm) as f32);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HIDDEN: [f32; 6] = [1.0, 2.0, 3.0, 4.0, 5.0, -6.0];

    #[test]
    fn mean_pooling_averages_the_rows() {
        assert_eq!(
            pool_hidden(&HIDDEN, 2, Pooling::Mean, false),
            vec![3.0, 0.0]
        );
    }

    #[test]
    fn last_pooling_takes_the_last_row() {
        assert_eq!(
            pool_hidden(&HIDDEN, 2, Pooling::Last, false),
            vec![5.0, -6.0]
        );
    }

    #[test]
    fn normalizing_scales_to_unit_length() {
        let v = pool_hidden(&HIDDEN, 3, Pooling::Last, true);
        let expected = [4.0 / 77f32.sqrt(), 5.0 / 77f32.sqrt(), -6.0 / 77f32.sqrt()];
        for (a, b) in v.iter().zip(expected) {
            assert!((a - b).abs() < 1e-6, "{v:?}");
        }
    }

    #[test]
    fn a_zero_vector_stays_zero_when_normalized() {
        assert_eq!(
            pool_hidden(&[0.0; 4], 2, Pooling::Mean, true),
            vec![0.0, 0.0]
        );
    }
}
