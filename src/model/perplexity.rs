//! Scoring a token sequence: the negative log-likelihood of every token given the ones
//! before it, the quantity behind perplexity.

use super::error::ModelError;
use super::session::{LogitsMode, Session};

/// Tokens per `eval` call while scoring (bounds the logits buffer to
/// `SCORE_CHUNK * n_vocab` floats).
pub const SCORE_CHUNK: usize = 256;

/// Appends `ids` to the session and returns `nll[i] = -ln p(ids[i + 1] | ids[..=i])` for
/// every `i < ids.len() - 1`, with the softmax over the full vocabulary in f64.
///
/// The sequence goes through the KV cache in chunks of [`SCORE_CHUNK`] tokens; `progress`
/// is called after each chunk with (tokens done, total).
pub fn token_nlls(
    session: &mut Session<'_>,
    ids: &[u32],
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<f64>, ModelError> {
    if ids.is_empty() {
        return Err(ModelError::EmptyInput);
    }
    let n_vocab = session.model().config().n_vocab;
    let mut nll = Vec::with_capacity(ids.len() - 1);
    for (ci, chunk) in ids.chunks(SCORE_CHUNK).enumerate() {
        let start = ci * SCORE_CHUNK;
        let logits = session.eval(chunk, LogitsMode::All)?;
        for (t, row) in logits.chunks_exact(n_vocab).enumerate() {
            let Some(&next) = ids.get(start + t + 1) else {
                break;
            };
            nll.push(row_nll(row, next));
        }
        progress(start + chunk.len(), ids.len());
    }
    Ok(nll)
}

/// `-ln softmax(row)[target]`, computed as `lse(row) - row[target]` in f64.
pub fn row_nll(row: &[f32], target: u32) -> f64 {
    let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
    max + sum.ln() - row[target as usize] as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nll_of_a_uniform_row_is_ln_of_the_vocabulary_size() {
        let row = [0.5f32; 8];
        assert!((row_nll(&row, 3) - 8f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn nll_of_a_dominant_logit_is_near_zero() {
        let row = [0.0, 50.0, 0.0];
        assert!(row_nll(&row, 1) < 1e-20 + 2.0 * (-50f64).exp());
        assert!((row_nll(&row, 0) - 50.0).abs() < 1e-9);
    }
}
