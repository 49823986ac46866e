//! Memory-read bandwidth probe: how many bytes per second a thread pool can stream from
//! memory, the ceiling of a memory-bound decode step.
//!
//! The method: sum a buffer of `u64` words in one chunk per pool thread, each chunk summed
//! with four independent accumulators (so the loop is bound by loads, not by the add
//! latency). `benches/bandwidth.rs` and `openweight bench --bandwidth` both measure with it,
//! so their numbers agree.

use std::collections::TryReserveError;
use std::fmt;
use std::hint::black_box;
use std::time::Instant;

use rayon::prelude::*;

/// A buffer for the probe: `u64` words with non-zero contents (word `i` holds `i`), so every
/// page is really backed by memory rather than by the shared zero page.
#[derive(Debug)]
pub struct ProbeBuffer {
    words: Vec<u64>,
}

/// The probe's buffer could not be allocated.
#[derive(Debug)]
pub struct ProbeAllocError {
    n_bytes: usize,
    source: TryReserveError,
}

impl fmt::Display for ProbeAllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot allocate {} bytes for the bandwidth probe: {}",
            self.n_bytes, self.source
        )
    }
}

impl std::error::Error for ProbeAllocError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl ProbeBuffer {
    /// Allocates and fills a buffer of `n_bytes` rounded down to whole 8-byte words; an
    /// allocation failure is an error, not an abort.
    pub fn new(n_bytes: usize) -> Result<ProbeBuffer, ProbeAllocError> {
        let n_words = n_bytes / 8;
        let mut words = Vec::new();
        words
            .try_reserve_exact(n_words)
            .map_err(|source| ProbeAllocError { n_bytes, source })?;
        words.extend((0..n_words).map(|i| i as u64));
        Ok(ProbeBuffer { words })
    }

    /// The buffer's contents.
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// The buffer's size in bytes (what one read of it streams from memory).
    pub fn n_bytes(&self) -> usize {
        self.words.len() * 8
    }
}

/// The result of [`measure_read`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReadRate {
    /// Bytes read per second in the fastest repetition.
    pub bytes_per_second: f64,
    /// The wrapping sum of all words of the buffer (proof that every word was read).
    pub checksum: u64,
}

/// Sums `words` (wrapping) with four independent accumulators.
pub fn sum_words(words: &[u64]) -> u64 {
    let mut acc = [0u64; 4];
    let mut chunks = words.chunks_exact(4);
    for c in &mut chunks {
        for (a, &w) in acc.iter_mut().zip(c) {
            *a = a.wrapping_add(w);
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .fold(0u64, |a, &w| a.wrapping_add(w));
    acc.iter().fold(tail, |a, &w| a.wrapping_add(w))
}

/// Sums `words` (wrapping) on `pool`, one contiguous chunk per pool thread.
pub fn parallel_sum(pool: &rayon::ThreadPool, words: &[u64]) -> u64 {
    let chunk_len = words.len().div_ceil(pool.current_num_threads()).max(1);
    pool.install(|| {
        words
            .par_chunks(chunk_len)
            .map(sum_words)
            .reduce(|| 0, u64::wrapping_add)
    })
}

/// Reads the whole `buffer` on `pool` `reps` times (at least once) and returns the rate of
/// the fastest read, the closest to the machine's ceiling, in bytes per second.
pub fn measure_read(pool: &rayon::ThreadPool, buffer: &ProbeBuffer, reps: usize) -> ReadRate {
    let mut best_secs = f64::INFINITY;
    let mut checksum = 0;
    for _ in 0..reps.max(1) {
        let start = Instant::now();
        checksum = black_box(parallel_sum(pool, black_box(buffer.words())));
        best_secs = best_secs.min(start.elapsed().as_secs_f64());
    }
    ReadRate {
        bytes_per_second: buffer.n_bytes() as f64 / best_secs.max(1e-12),
        checksum,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n_threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n_threads)
            .build()
            .expect("thread pool")
    }

    /// 0 + 1 + ... + (n - 1), the sum of a buffer of `n` words.
    fn sum_below(n: u64) -> u64 {
        n * (n - 1) / 2
    }

    #[test]
    fn buffer_holds_whole_words_counting_up() {
        let b = ProbeBuffer::new(8 * 1000 + 5).unwrap();
        assert_eq!(b.n_bytes(), 8 * 1000);
        assert_eq!(b.words()[999], 999);
    }

    #[test]
    fn an_impossible_buffer_is_an_error() {
        let e = ProbeBuffer::new(usize::MAX).unwrap_err();
        assert!(e.to_string().contains("bandwidth probe"), "{e}");
    }

    #[test]
    fn sums_cover_every_word_whatever_the_chunking() {
        for n in [0u64, 1, 3, 4, 5, 1001, 4096] {
            let words: Vec<u64> = (0..n).collect();
            let expected = if n == 0 { 0 } else { sum_below(n) };
            assert_eq!(sum_words(&words), expected, "{n} words");
            for t in [1, 2, 3] {
                assert_eq!(parallel_sum(&pool(t), &words), expected, "{n} words {t}t");
            }
        }
    }

    #[test]
    fn measure_reads_the_whole_buffer_at_a_finite_positive_rate() {
        let n_words = 1 << 16;
        let b = ProbeBuffer::new(8 * n_words).unwrap();
        for t in [1, 2] {
            let r = measure_read(&pool(t), &b, 3);
            assert_eq!(r.checksum, sum_below(n_words as u64));
            assert!(r.bytes_per_second.is_finite() && r.bytes_per_second > 0.0);
        }
        // No repetitions still reads once.
        assert_eq!(
            measure_read(&pool(1), &b, 0).checksum,
            sum_below(n_words as u64)
        );
    }
}
