//! Streaming generation: [`Session::generate`] returns a [`Generation`], an iterator of
//! [`Token`]s, each with the text it adds.
//!
//! Text comes out in valid UTF-8 pieces only (bytes of a character split across tokens are
//! held back until it is complete), and text that matches a stop string is never emitted:
//! pieces that could be the start of a stop string are held back until they can be told
//! apart. Concatenated, the pieces are exactly the generated text up to (not including) the
//! first stop string.
//!
//! ```no_run
//! use std::sync::atomic::{AtomicBool, Ordering};
//! use std::sync::Arc;
//! use openweight::{GenerateOptions, Model, Sampler, Session, SessionOptions};
//!
//! let model = Model::open("fixtures/models/smollm2-135m-q4_1.gguf")?;
//! let mut session = Session::new(&model, SessionOptions::default())?;
//! session.set_prompt_text("Q: Name three colours.\nA:")?;
//! let cancel = Arc::new(AtomicBool::new(false)); // set it from another thread to stop
//! let options = GenerateOptions::new()
//!     .max_tokens(64)
//!     .stop("\nQ:")
//!     .stop_flag(cancel.clone());
//! let mut sampler = Sampler::builder().seed(7).build();
//! let mut generation = session.generate(&mut sampler, options);
//! for token in &mut generation {
//!     print!("{}", token?.text_piece);
//! }
//! println!("\n(stopped: {:?})", generation.stop_reason());
//! # Ok::<(), openweight::Error>(())
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::model::Session;
use crate::sample::Sampler;
use crate::tokenizer::StreamDecoder;
use crate::Result;

/// One generated token and the text it releases.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    /// The token id.
    pub id: u32,
    /// Text that became final with this token: valid UTF-8, possibly empty (held back as a
    /// partial character or a possible stop-string prefix), possibly including text held
    /// back from earlier tokens.
    pub text_piece: String,
}

/// Why a [`Generation`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced an end-of-generation token (not yielded).
    EndOfGeneration,
    /// [`GenerateOptions::max_tokens`] tokens were yielded.
    MaxTokens,
    /// A stop string appeared in the text (it and anything after it are not emitted).
    StopString,
    /// The stop flag was set.
    Cancelled,
    /// The session's KV cache is full.
    ContextFull,
    /// An evaluation or sampling error was yielded.
    Error,
}

/// When a generation stops, and how to cancel it.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    max_tokens: usize,
    stop: Vec<String>,
    stop_flag: Option<Arc<AtomicBool>>,
    stop_at_eog: bool,
}

impl Default for GenerateOptions {
    fn default() -> GenerateOptions {
        GenerateOptions::new()
    }
}

impl GenerateOptions {
    /// At most 256 tokens, stopping at end-of-generation tokens, no stop strings.
    pub fn new() -> GenerateOptions {
        GenerateOptions {
            max_tokens: 256,
            stop: Vec::new(),
            stop_flag: None,
            stop_at_eog: true,
        }
    }

    /// Yields at most `n` tokens.
    pub fn max_tokens(mut self, n: usize) -> Self {
        self.max_tokens = n;
        self
    }

    /// Adds a stop string: generation ends when the text contains it; it is not emitted.
    /// An empty string is ignored.
    pub fn stop(mut self, text: impl Into<String>) -> Self {
        let text = text.into();
        if !text.is_empty() {
            self.stop.push(text);
        }
        self
    }

    /// Ends the generation (before the next token) once `flag` is `true`; set it from any
    /// thread.
    pub fn stop_flag(mut self, flag: Arc<AtomicBool>) -> Self {
        self.stop_flag = Some(flag);
        self
    }

    /// Whether end-of-generation tokens end the generation (default `true`); with `false`
    /// they are yielded like any other token.
    pub fn stop_at_eog(mut self, yes: bool) -> Self {
        self.stop_at_eog = yes;
        self
    }
}

/// The iterator returned by [`Session::generate`].
///
/// Each step samples a token from the session's last logits and yields it; the next step
/// first evaluates it (so the session's cache holds every yielded token but the last).
/// It ends at an end-of-generation token, after `max_tokens` tokens, at a stop string, when
/// the stop flag is set, or when the cache is full; [`Generation::stop_reason`] says which.
/// Dropping it cancels: no work happens between steps. Errors are yielded once, then the
/// iterator ends.
pub struct Generation<'s, 'm> {
    session: &'s mut Session<'m>,
    sampler: &'s mut Sampler,
    options: GenerateOptions,
    decoder: StreamDecoder<'m>,
    /// Decoded text not emitted yet (a possible stop-string prefix).
    held: String,
    n_yielded: usize,
    /// The last yielded token, not evaluated yet.
    unevaluated: Option<u32>,
    /// A token already sampled (looking ahead) and not yielded yet.
    lookahead: Option<u32>,
    stop: Option<StopReason>,
}

impl<'s, 'm> Generation<'s, 'm> {
    pub(crate) fn new(
        session: &'s mut Session<'m>,
        sampler: &'s mut Sampler,
        options: GenerateOptions,
    ) -> Generation<'s, 'm> {
        let decoder = StreamDecoder::new(session.model().tokenizer());
        let stop = (options.max_tokens == 0).then_some(StopReason::MaxTokens);
        Generation {
            session,
            sampler,
            options,
            decoder,
            held: String::new(),
            n_yielded: 0,
            unevaluated: None,
            lookahead: None,
            stop,
        }
    }

    /// Why the generation ended (`None` while it is still running).
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.stop
    }

    /// Tokens yielded so far.
    pub fn n_yielded(&self) -> usize {
        self.n_yielded
    }

    /// Runs the generation to its end and returns the text (the concatenated pieces) and
    /// the ids.
    pub fn collect_text(self) -> Result<(String, Vec<u32>)> {
        let mut text = String::new();
        let mut ids = Vec::new();
        for token in self {
            let token = token?;
            text.push_str(&token.text_piece);
            ids.push(token.id);
        }
        Ok((text, ids))
    }

    /// Whether generation ends at `id`.
    fn ends_at(&self, id: u32) -> bool {
        self.options.stop_at_eog && self.session.model().tokenizer().is_eog(id)
    }

    /// Evaluates `id` and samples the token after it.
    fn eval_and_sample(&mut self, id: u32) -> Result<u32> {
        self.session.feed(&[id])?;
        self.session.sample(self.sampler)
    }

    /// The next token to yield, or why there is none.
    fn next_id(&mut self) -> Result<Option<u32>> {
        if let Some(id) = self.lookahead.take() {
            return Ok(Some(id));
        }
        if let Some(prev) = self.unevaluated.take() {
            if self.session.n_past() >= self.session.n_ctx() {
                self.stop = Some(StopReason::ContextFull);
                return Ok(None);
            }
            return self.eval_and_sample(prev).map(Some);
        }
        self.session.sample(self.sampler).map(Some)
    }

    /// Splits off the text that can be emitted now. Returns `true` if a stop string
    /// matched (then `held` is cleared and the text before the match is returned).
    fn release(&mut self, at_end: bool) -> (String, bool) {
        match releasable(&self.held, &self.options.stop, at_end) {
            Release::Stop(m) => {
                let out = self.held[..m].to_string();
                self.held.clear();
                (out, true)
            }
            Release::UpTo(cut) => {
                let out = self.held[..cut].to_string();
                self.held.drain(..cut);
                (out, false)
            }
        }
    }

    fn step(&mut self) -> Result<Option<Token>> {
        if let Some(flag) = &self.options.stop_flag {
            if flag.load(Ordering::Relaxed) {
                self.stop = Some(StopReason::Cancelled);
                return Ok(None);
            }
        }
        let Some(id) = self.next_id()? else {
            return Ok(None);
        };
        if self.ends_at(id) {
            self.stop = Some(StopReason::EndOfGeneration);
            return Ok(None);
        }
        self.n_yielded += 1;
        let piece = self.decoder.push(id);
        self.held.push_str(&piece);
        let mut last = None;
        if self.n_yielded >= self.options.max_tokens {
            last = Some(StopReason::MaxTokens);
        } else if self.session.n_past() >= self.session.n_ctx() {
            // No room to evaluate this token, so nothing can follow it.
            last = Some(StopReason::ContextFull);
        } else if !self.held.is_empty() || self.decoder.has_pending() {
            // Text is held back: if the next token ends the generation, it must go out
            // with this one, so look one token ahead.
            let next = self.eval_and_sample(id)?;
            if self.ends_at(next) {
                last = Some(StopReason::EndOfGeneration);
            } else {
                self.lookahead = Some(next);
            }
        }
        if last.is_some() {
            let rest = self.decoder.flush();
            self.held.push_str(&rest);
        }
        let (text_piece, matched) = self.release(last.is_some());
        if matched {
            self.stop = Some(StopReason::StopString);
            self.lookahead = None;
        } else if last.is_some() {
            self.stop = last;
        } else if self.lookahead.is_none() {
            self.unevaluated = Some(id);
        }
        Ok(Some(Token { id, text_piece }))
    }
}

impl Iterator for Generation<'_, '_> {
    type Item = Result<Token>;

    fn next(&mut self) -> Option<Result<Token>> {
        if self.stop.is_some() {
            return None;
        }
        match self.step() {
            Ok(Some(token)) => Some(Ok(token)),
            Ok(None) => None,
            Err(e) => {
                self.stop = Some(StopReason::Error);
                Some(Err(e))
            }
        }
    }
}

/// What part of the held-back text may be emitted.
#[derive(Debug, PartialEq, Eq)]
enum Release {
    /// A stop string starts at this byte offset: emit what is before it, then stop.
    Stop(usize),
    /// Emit the text before this byte offset; the rest could still become a stop string.
    UpTo(usize),
}

/// Decides how much of `held` can be emitted given the `stops` strings: everything before
/// the earliest complete match, or else everything before the earliest position from which
/// the text could still grow into a stop string (everything at the end of generation).
fn releasable(held: &str, stops: &[String], at_end: bool) -> Release {
    if let Some(m) = stops.iter().filter_map(|s| held.find(s.as_str())).min() {
        return Release::Stop(m);
    }
    if at_end {
        return Release::UpTo(held.len());
    }
    let cut = held
        .char_indices()
        .map(|(i, _)| i)
        .find(|&i| stops.iter().any(|s| s.starts_with(&held[i..])))
        .unwrap_or(held.len());
    Release::UpTo(cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stops(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn without_stop_strings_everything_is_released() {
        assert_eq!(releasable("abc", &[], false), Release::UpTo(3));
    }

    #[test]
    fn a_complete_match_releases_only_the_text_before_it() {
        assert_eq!(
            releasable("ab\nUser: hi", &stops(&["User:"]), false),
            Release::Stop(3)
        );
    }

    #[test]
    fn the_earliest_of_several_matches_wins() {
        let s = stops(&["cd", "b"]);
        assert_eq!(releasable("abcd", &s, false), Release::Stop(1));
    }

    #[test]
    fn a_possible_stop_prefix_at_the_end_is_held_back() {
        let s = stops(&["\n\nUser:"]);
        assert_eq!(releasable("Hello.\n", &s, false), Release::UpTo(6));
        assert_eq!(releasable("Hello.\n\nUs", &s, false), Release::UpTo(6));
        assert_eq!(releasable("Hello.\n\nUx", &s, false), Release::UpTo(10));
    }

    #[test]
    fn the_earliest_possible_prefix_among_several_stop_strings_is_held() {
        let s = stops(&["xyz", "yq"]);
        // "xy" could become "xyz"; "y" alone could become "yq": hold from the "x".
        assert_eq!(releasable("abxy", &s, false), Release::UpTo(2));
    }

    #[test]
    fn at_the_end_a_partial_prefix_is_released() {
        let s = stops(&["\n\nUser:"]);
        assert_eq!(releasable("Hello.\n\nUs", &s, true), Release::UpTo(10));
    }

    #[test]
    fn cuts_fall_on_character_boundaries() {
        let s = stops(&["é!"]);
        let held = "café";
        assert_eq!(releasable(held, &s, false), Release::UpTo(3));
        assert!(held.is_char_boundary(3));
    }
}
