//! Fuzz target: the tokenizers of the three real models (SmolLM2 and Qwen2.5 byte-level BPE,
//! Gemma 3 SentencePiece; the synthetic models' if the real ones are absent) on arbitrary text.
//!
//! The first input byte picks the tokenizer and the flags; the rest, made UTF-8 lossily, is
//! encoded with and without `parse_special` and `add_special`. Checked: every id is inside the
//! vocabulary; streaming decode concatenates to `decode`; byte-level BPE without special-token
//! parsing gives back the input's bytes in order, possibly with some dropped (the reference
//! drops bytes whose byte-level character is not in the vocabulary, e.g. `\x04` in SmolLM2),
//! and exactly the input when it is printable ASCII, spaces and newlines; arbitrary ids (taken
//! from the input bytes, including ids past the vocabulary) decode and stream-decode without
//! panicking and agree.
//!
//! Run from the repository root: `python3 fuzz/seed.py`, then
//! `cargo +nightly fuzz run tokenizer -- -max_total_time=600 -max_len=4096`.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use openweight::gguf::GgufFile;
use openweight::tokenizer::{StreamDecoder, Tokenizer, TokenizerKind};

#[path = "common_models.rs"]
mod common_models;

fn tokenizers() -> &'static [Tokenizer] {
    static TOKENIZERS: OnceLock<Vec<Tokenizer>> = OnceLock::new();
    TOKENIZERS.get_or_init(|| {
        common_models::tokenizer_models()
            .iter()
            .map(|path| {
                let file = GgufFile::open(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
                Tokenizer::from_gguf(&file).unwrap_or_else(|e| panic!("{path:?}: {e}"))
            })
            .collect()
    })
}

// Loading happens before fuzzing starts, outside the per-input timeout.
fuzz_target!(init: {
    tokenizers();
}, |data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let toks = tokenizers();
    let tok = &toks[selector as usize % toks.len()];
    let add_special = selector & 0x10 != 0;
    let text = String::from_utf8_lossy(rest);

    for parse_special in [false, true] {
        let Ok(ids) = tok.encode(&text, add_special, parse_special) else {
            // Only a missing BOS/EOS may fail, and only when asked to add it.
            assert!(add_special, "encode failed without add_special");
            continue;
        };
        assert!(ids.iter().all(|&id| (id as usize) < tok.n_vocab()));
        let decoded = check_stream_matches_decode(tok, &ids);
        if tok.kind() == TokenizerKind::ByteLevelBpe && !parse_special && !add_special {
            let bytes: Vec<u8> = ids
                .iter()
                .flat_map(|&id| tok.token_bytes(id))
                .copied()
                .collect();
            assert!(
                is_subsequence(&bytes, text.as_bytes()),
                "byte-level BPE output is not a subsequence of the input"
            );
            if text
                .bytes()
                .all(|b| b.is_ascii_graphic() || b == b' ' || b == b'\n')
            {
                assert_eq!(
                    decoded, text,
                    "byte-level BPE must round-trip printable ASCII"
                );
            }
        }
    }

    // Arbitrary ids, including ones past the vocabulary.
    let ids: Vec<u32> = rest
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) % (tok.n_vocab() as u32 + 8))
        .collect();
    check_stream_matches_decode(tok, &ids);
    for &id in &ids {
        let _ = (tok.token_text(id), tok.token_type(id), tok.is_eog(id));
    }
    if let Ok(s) = std::str::from_utf8(rest) {
        let _ = tok.token_to_id(s);
    }
});

/// Streams `ids` through a `StreamDecoder` and checks the pieces concatenate to `decode`.
fn check_stream_matches_decode(tok: &Tokenizer, ids: &[u32]) -> String {
    let decoded = tok.decode(ids);
    let mut stream = StreamDecoder::new(tok);
    let mut streamed = String::new();
    for &id in ids {
        streamed.push_str(&stream.push(id));
    }
    streamed.push_str(&stream.flush());
    assert!(!stream.has_pending());
    assert_eq!(streamed, decoded);
    decoded
}

/// Whether `needle` is `hay` with zero or more bytes removed.
fn is_subsequence(needle: &[u8], hay: &[u8]) -> bool {
    let mut it = hay.iter();
    needle.iter().all(|b| it.any(|h| h == b))
}
