//! Architectures, forward pass and KV cache.

pub mod arch;
pub mod attention;
mod error;
pub mod kv_cache;
pub mod rope;

pub use error::ModelError;
pub use kv_cache::KvType;
