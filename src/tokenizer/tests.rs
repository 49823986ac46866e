//! Unit tests of the public tokenizer API on small hand-made vocabularies.

use proptest::prelude::*;

use super::*;

fn owned(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A byte-level BPE vocabulary: the 256 byte characters, a few merges, and special tokens.
struct BpeFixture {
    tokens: Vec<String>,
    types: Vec<i32>,
    merges: Vec<String>,
}

impl BpeFixture {
    fn new() -> BpeFixture {
        let mut tokens: Vec<String> = (0..=255u8)
            .map(|b| bpe::byte_to_char(b).to_string())
            .collect();
        let mut types = vec![1; 256];
        let merges = owned(&["Ġ t", "l l", "e ll", "h ell", "hell o", "h e", "Ġt he"]);
        for m in &merges {
            tokens.push(m.replace(' ', ""));
            types.push(1);
        }
        for (text, ty) in [
            ("<|endoftext|>", 3),
            ("<|im_start|>", 3),
            ("<|im_end|>", 1),
            ("<x>", 4),
        ] {
            tokens.push(text.to_string());
            types.push(ty);
        }
        BpeFixture {
            tokens,
            types,
            merges,
        }
    }

    fn tokenizer(&self, pre: &str) -> Tokenizer {
        let mut spec = TokenizerSpec::new("gpt2", &self.tokens);
        spec.pre = Some(pre);
        spec.token_types = Some(&self.types);
        spec.merges = Some(&self.merges);
        spec.bos = Some(self.id("<|endoftext|>"));
        spec.eos = Some(self.id("<|endoftext|>"));
        Tokenizer::from_spec(&spec).unwrap()
    }

    fn id(&self, text: &str) -> u32 {
        self.tokens.iter().position(|t| t == text).unwrap() as u32
    }
}

/// A SentencePiece-style vocabulary with byte fallback.
struct SpmFixture {
    tokens: Vec<String>,
    scores: Vec<f32>,
    types: Vec<i32>,
}

impl SpmFixture {
    fn new() -> SpmFixture {
        let mut tokens = owned(&["<unk>", "<s>", "</s>"]);
        let mut types = vec![2, 3, 3];
        for b in 0..=255u8 {
            tokens.push(format!("<0x{b:02X}>"));
            types.push(6);
        }
        for t in ["▁", "a", "b", "▁a", "ab", "▁ab"] {
            tokens.push(t.to_string());
            types.push(1);
        }
        let scores = (0..tokens.len()).map(|i| -(i as f32)).collect();
        SpmFixture {
            tokens,
            scores,
            types,
        }
    }

    fn spec(&self) -> TokenizerSpec<'_> {
        let mut spec = TokenizerSpec::new("llama", &self.tokens);
        spec.scores = Some(&self.scores);
        spec.token_types = Some(&self.types);
        spec
    }

    fn id(&self, text: &str) -> u32 {
        self.tokens.iter().position(|t| t == text).unwrap() as u32
    }
}

#[test]
fn unsupported_model_is_an_error_naming_it() {
    let tokens = owned(&["a"]);
    let err = Tokenizer::from_spec(&TokenizerSpec::new("rwkv", &tokens)).unwrap_err();
    assert!(err.to_string().contains("'rwkv'"), "{err}");
}

#[test]
fn unsupported_pre_tokenizer_is_an_error_naming_it() {
    let f = BpeFixture::new();
    let mut spec = TokenizerSpec::new("gpt2", &f.tokens);
    spec.merges = Some(&f.merges);
    spec.pre = Some("chatglm-bpe");
    let err = Tokenizer::from_spec(&spec).unwrap_err();
    assert!(
        matches!(err, TokenizerError::UnsupportedPreTokenizer { ref pre } if pre == "chatglm-bpe")
    );
}

#[test]
fn scores_of_the_wrong_length_are_an_error_naming_the_key() {
    let f = SpmFixture::new();
    let mut spec = f.spec();
    let short = [0.0f32; 3];
    spec.scores = Some(&short);
    let err = Tokenizer::from_spec(&spec).unwrap_err();
    assert!(err.to_string().contains("tokenizer.ggml.scores"), "{err}");
}

#[test]
fn byte_level_bpe_merges_words_and_keeps_spaces_as_g_dot() {
    let f = BpeFixture::new();
    let tok = f.tokenizer("gpt2");
    let ids = tok.encode("hello the", false, false).unwrap();
    assert_eq!(ids, [f.id("hello"), f.id("Ġthe")]);
}

#[test]
fn bpe_adds_bos_only_for_llama3_by_default() {
    let f = BpeFixture::new();
    assert!(!f.tokenizer("gpt2").add_bos());
    let tok = f.tokenizer("llama3");
    assert!(tok.add_bos());
    assert_eq!(
        tok.encode("", true, false).unwrap(),
        [f.id("<|endoftext|>")]
    );
    assert!(tok.encode("", false, false).unwrap().is_empty());
}

#[test]
fn control_tokens_in_text_need_parse_special_but_user_defined_do_not() {
    let f = BpeFixture::new();
    let tok = f.tokenizer("gpt2");
    let start = f.id("<|im_start|>");
    assert_eq!(tok.encode("<|im_start|>", false, true).unwrap(), [start]);
    assert!(!tok
        .encode("<|im_start|>", false, false)
        .unwrap()
        .contains(&start));
    assert_eq!(tok.encode("<x>", false, false).unwrap(), [f.id("<x>")]);
}

#[test]
fn end_markers_end_generation_and_become_control_tokens() {
    let f = BpeFixture::new();
    let tok = f.tokenizer("gpt2");
    let im_end = f.id("<|im_end|>");
    // The vocabulary says "normal", but an end marker is always a control token.
    assert_eq!(tok.token_type(im_end), Some(TokenType::Control));
    assert!(tok.is_eog(im_end));
    assert!(tok.is_eog(f.id("<|endoftext|>")));
    assert!(!tok.is_eog(f.id("<|im_start|>")));
    assert_eq!(tok.eot_id(), Some(im_end));
    // And, being control, it is parsed only with parse_special.
    assert_eq!(tok.encode("<|im_end|>", false, true).unwrap(), [im_end]);
}

#[test]
fn bpe_decodes_through_the_inverse_byte_table() {
    let f = BpeFixture::new();
    let tok = f.tokenizer("gpt2");
    assert_eq!(tok.token_bytes(f.id("Ġthe")), b" the");
    assert_eq!(tok.token_bytes(f.id("<|im_start|>")), b"<|im_start|>");
    assert_eq!(tok.decode(&[f.id("hello"), f.id("Ġthe")]), "hello the");
}

#[test]
fn out_of_range_ids_decode_to_replacement_characters() {
    let f = BpeFixture::new();
    let tok = f.tokenizer("gpt2");
    assert_eq!(tok.decode(&[f.id("hello"), 1_000_000]), "hello\u{fffd}");
    assert_eq!(tok.token_text(1_000_000), None);
}

#[test]
fn spm_prefixes_a_space_and_adds_bos_by_default() {
    let f = SpmFixture::new();
    let tok = Tokenizer::from_spec(&f.spec()).unwrap();
    assert_eq!(tok.kind(), TokenizerKind::SentencePiece);
    let ids = tok.encode("ab a", true, false).unwrap();
    assert_eq!(ids, [f.id("<s>"), f.id("▁ab"), f.id("▁a")]);
}

#[test]
fn spm_space_prefix_can_be_turned_off() {
    let f = SpmFixture::new();
    let mut spec = f.spec();
    spec.add_space_prefix = Some(false);
    spec.add_bos = Some(false);
    let tok = Tokenizer::from_spec(&spec).unwrap();
    assert_eq!(tok.encode("ab", true, false).unwrap(), [f.id("ab")]);
}

#[test]
fn spm_text_after_a_special_token_gets_the_space_prefix_again() {
    let f = SpmFixture::new();
    let tok = Tokenizer::from_spec(&f.spec()).unwrap();
    let ids = tok.encode("a</s>b", false, true).unwrap();
    assert_eq!(ids, [f.id("▁a"), f.id("</s>"), f.id("▁"), f.id("b")]);
}

#[test]
fn spm_byte_fallback_encodes_and_decodes_unknown_characters() {
    let f = SpmFixture::new();
    let tok = Tokenizer::from_spec(&f.spec()).unwrap();
    let ids = tok.encode("a€", false, false).unwrap();
    // € is E2 82 AC.
    assert_eq!(
        ids,
        [f.id("▁a"), f.id("<0xE2>"), f.id("<0x82>"), f.id("<0xAC>")]
    );
    assert_eq!(tok.decode(&ids), " a€");
    assert_eq!(tok.token_bytes(f.id("<0xE2>")), [0xe2]);
}

#[test]
fn spm_adds_eos_when_the_metadata_says_so() {
    let f = SpmFixture::new();
    let mut spec = f.spec();
    spec.add_eos = Some(true);
    let tok = Tokenizer::from_spec(&spec).unwrap();
    assert_eq!(
        tok.encode("a", true, false).unwrap(),
        [f.id("<s>"), f.id("▁a"), f.id("</s>")]
    );
}

#[test]
fn token_to_id_finds_vocabulary_text() {
    let f = SpmFixture::new();
    let tok = Tokenizer::from_spec(&f.spec()).unwrap();
    assert_eq!(tok.token_to_id("▁ab"), Some(f.id("▁ab")));
    assert_eq!(tok.token_to_id("zzz"), None);
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.eos_id(), Some(2));
}

#[test]
fn stream_decoder_holds_back_incomplete_characters() {
    let f = SpmFixture::new();
    let tok = Tokenizer::from_spec(&f.spec()).unwrap();
    let mut d = StreamDecoder::new(&tok);
    assert_eq!(d.push(f.id("▁a")), " a");
    assert_eq!(d.push(f.id("<0xE2>")), "");
    assert_eq!(d.push(f.id("<0x82>")), "");
    assert!(d.has_pending());
    assert_eq!(d.push(f.id("<0xAC>")), "€");
    assert!(!d.has_pending());
}

#[test]
fn stream_decoder_flushes_an_unfinished_character_as_replacement() {
    let f = SpmFixture::new();
    let tok = Tokenizer::from_spec(&f.spec()).unwrap();
    let mut d = StreamDecoder::new(&tok);
    assert_eq!(d.push(f.id("<0xE2>")), "");
    assert_eq!(d.flush(), "\u{fffd}");
    assert_eq!(d.flush(), "");
}

proptest! {
    #[test]
    fn bpe_round_trips_any_text(text in any::<String>(), pre in 0usize..5) {
        let f = BpeFixture::new();
        let name = ["default", "gpt2", "llama3", "qwen2", "smollm"][pre];
        let tok = f.tokenizer(name);
        let ids = tok.encode(&text, false, false).unwrap();
        prop_assert_eq!(tok.decode(&ids), text);
    }

    #[test]
    fn stream_pieces_concatenate_to_decode(ids in proptest::collection::vec(0u32..270, 0..40)) {
        let f = SpmFixture::new();
        let tok = Tokenizer::from_spec(&f.spec()).unwrap();
        let mut d = StreamDecoder::new(&tok);
        let mut streamed = String::new();
        for &id in &ids {
            streamed.push_str(&d.push(id));
        }
        streamed.push_str(&d.flush());
        prop_assert_eq!(streamed, tok.decode(&ids));
    }

    #[test]
    fn spm_round_trips_text_after_the_prefix_space(text in "[ab €\u{e9}]{0,20}") {
        let f = SpmFixture::new();
        let tok = Tokenizer::from_spec(&f.spec()).unwrap();
        let ids = tok.encode(&text, false, false).unwrap();
        let expected = if text.is_empty() { String::new() } else { format!(" {text}") };
        prop_assert_eq!(tok.decode(&ids), expected);
    }
}

mod from_gguf {
    use super::*;
    use crate::gguf::{Array, GgufWriter, Value};

    /// A GGUF file (no tensors) holding the SentencePiece fixture's metadata, with `edit`
    /// applied to the key/value list first.
    fn file_with(edit: impl FnOnce(&mut Vec<(&'static str, Value)>)) -> GgufFile {
        let f = SpmFixture::new();
        let mut kv: Vec<(&'static str, Value)> = vec![
            ("tokenizer.ggml.model", Value::String("llama".into())),
            (
                "tokenizer.ggml.tokens",
                Value::Array(Array::String(f.tokens.clone())),
            ),
            (
                "tokenizer.ggml.scores",
                Value::Array(Array::F32(f.scores.clone())),
            ),
            (
                "tokenizer.ggml.token_type",
                Value::Array(Array::I32(f.types.clone())),
            ),
            ("tokenizer.ggml.bos_token_id", Value::U32(1)),
            ("tokenizer.ggml.add_space_prefix", Value::Bool(false)),
        ];
        edit(&mut kv);
        let mut w = GgufWriter::new();
        for (k, v) in kv {
            w.add_metadata(k, v).unwrap();
        }
        GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap()
    }

    #[test]
    fn reads_the_same_tokenizer_as_the_spec() {
        let f = SpmFixture::new();
        let tok = Tokenizer::from_gguf(&file_with(|_| {})).unwrap();
        assert_eq!(tok.n_vocab(), f.tokens.len());
        // add_space_prefix = false comes from the metadata.
        assert_eq!(
            tok.encode("ab", true, false).unwrap(),
            [f.id("<s>"), f.id("ab")]
        );
    }

    #[test]
    fn missing_model_key_is_an_error_naming_it() {
        let file = file_with(|kv| kv.retain(|(k, _)| *k != "tokenizer.ggml.model"));
        let err = Tokenizer::from_gguf(&file).unwrap_err();
        assert!(matches!(err, TokenizerError::Metadata(_)));
        assert!(err.to_string().contains("tokenizer.ggml.model"), "{err}");
    }

    #[test]
    fn token_types_of_the_wrong_element_type_are_an_error_naming_the_key() {
        let file = file_with(|kv| {
            kv.retain(|(k, _)| *k != "tokenizer.ggml.token_type");
            kv.push((
                "tokenizer.ggml.token_type",
                Value::Array(Array::F32(vec![1.0; 265])),
            ));
        });
        let err = Tokenizer::from_gguf(&file).unwrap_err();
        assert!(
            err.to_string().contains("tokenizer.ggml.token_type"),
            "{err}"
        );
    }

    #[test]
    fn byte_level_bpe_without_merges_is_an_error_naming_the_key() {
        let file = file_with(|kv| kv[0].1 = Value::String("gpt2".into()));
        let err = Tokenizer::from_gguf(&file).unwrap_err();
        assert!(err.to_string().contains("tokenizer.ggml.merges"), "{err}");
    }

    #[test]
    fn special_ids_outside_the_vocabulary_fall_back_to_the_defaults() {
        let file = file_with(|kv| kv[4].1 = Value::U32(1_000_000));
        let tok = Tokenizer::from_gguf(&file).unwrap();
        assert_eq!(tok.bos_id(), Some(1));
    }
}
