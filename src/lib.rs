//! openweight: run quantized open-weight language models (GGUF files) on CPU, in pure Rust.
//!
//! The crate is organised by job:
//! - [`gguf`]: the GGUF container: memory-mapped, validated, zero-copy tensor data.
//! - [`tokenizer`]: byte-level BPE and SentencePiece-style tokenizers built from GGUF metadata.
//! - [`model`]: per-architecture descriptions, the forward pass and the KV cache.
//! - [`sample`]: choosing the next token ([`Sampler`]: penalties, top-k, top-p, min-p,
//!   temperature, seeded draw).
//! - [`generate`]: streaming generation with stop strings and cancellation.
//! - [`embed`]: text embeddings from the hidden states.
//! - [`chat`]: rendering a conversation with the model's chat template.
//! - [`Error`]: the one error type of the public API.
//!
//! Kernels (block formats, dequantization, dot products, matmul) live in the
//! `openweight-kernels` crate, re-exported as [`kernels`].

pub mod chat;
pub mod embed;
pub mod error;
pub mod generate;
pub mod gguf;
pub mod model;
pub mod sample;
pub mod tokenizer;

pub use embed::Pooling;
pub use error::{Error, Result};
pub use generate::{GenerateOptions, Generation, StopReason, Token};
pub use model::{Model, Session, SessionOptions};
pub use openweight_kernels as kernels;
pub use sample::{Sampler, SamplerBuilder};

/// The README's Rust examples, compiled (and `no_run` ones type-checked) by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
