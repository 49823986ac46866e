//! Chat templates of the real models, the ChatML fallback and hostile templates.
//!
//! Expected strings are written out by reading each template's semantics (see the comments
//! next to them): they are what Hugging Face `transformers` / llama.cpp produce for the
//! same conversation. Real-model tests skip loudly when `fixtures/models/` lacks the file.

use std::path::{Path, PathBuf};

use openweight::chat::{ChatError, ChatLimit, ChatMessage, ChatTemplate, CHAT_TEMPLATE_KEY};
use openweight::gguf::{GgufFile, GgufWriter, Value};
use openweight::tokenizer::{Tokenizer, TokenizerSpec};

const SMOLLM: &str = "smollm2-135m-q4_1";
const QWEN: &str = "qwen2.5-coder-0.5b-q4_k_m";
const GEMMA: &str = "gemma3-270m-q4_k_m";

fn model_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/models")
        .join(format!("{name}.gguf"))
}

/// The template of a real model, or `None` (with a loud message) if the file is absent.
fn real_template(name: &str) -> Option<ChatTemplate> {
    let path = model_path(name);
    if !path.exists() {
        eprintln!(
            "SKIPPED: {} is missing; real-model chat template test not run",
            path.display()
        );
        return None;
    }
    let gguf = GgufFile::open(&path).unwrap();
    let tokenizer = Tokenizer::from_gguf(&gguf).unwrap();
    Some(ChatTemplate::from_gguf(&gguf, &tokenizer).unwrap())
}

/// system + user + assistant + user.
fn conversation() -> Vec<ChatMessage> {
    vec![
        ChatMessage::system("You are a terse assistant."),
        ChatMessage::user("Hi"),
        ChatMessage::assistant("Hello! How can I help?"),
        ChatMessage::user("What is 2+2?"),
    ]
}

/// [`conversation`] in ChatML, as SmolLM2's, Qwen2.5's and the fallback template write it.
const CHATML_CONVERSATION: &str = "<|im_start|>system\nYou are a terse assistant.<|im_end|>\n\
     <|im_start|>user\nHi<|im_end|>\n\
     <|im_start|>assistant\nHello! How can I help?<|im_end|>\n\
     <|im_start|>user\nWhat is 2+2?<|im_end|>\n";

/// [`CHATML_CONVERSATION`] followed by the generation prompt.
const CHATML_CONVERSATION_WITH_PROMPT: &str =
    "<|im_start|>system\nYou are a terse assistant.<|im_end|>\n\
     <|im_start|>user\nHi<|im_end|>\n\
     <|im_start|>assistant\nHello! How can I help?<|im_end|>\n\
     <|im_start|>user\nWhat is 2+2?<|im_end|>\n\
     <|im_start|>assistant\n";

fn user_only() -> Vec<ChatMessage> {
    vec![ChatMessage::user("Hi")]
}

/// Content that would do something if it were executed as template code.
const JINJA_CONTENT: &str =
    "{{ 7 * 6 }} {% for x in range(3) %}x{% endfor %} {{ raise_exception('boom') }} {# c #}";

// ---- SmolLM2: ChatML with a default system prompt when the first message is not `system`.

#[test]
fn smollm2_conversation_with_generation_prompt() {
    let Some(t) = real_template(SMOLLM) else {
        return;
    };
    assert!(!t.is_fallback());
    assert_eq!(
        t.render(&conversation(), true).unwrap(),
        CHATML_CONVERSATION_WITH_PROMPT
    );
}

#[test]
fn smollm2_conversation_without_generation_prompt() {
    let Some(t) = real_template(SMOLLM) else {
        return;
    };
    assert_eq!(
        t.render(&conversation(), false).unwrap(),
        CHATML_CONVERSATION
    );
}

#[test]
fn smollm2_user_only_gets_the_default_system_prompt() {
    let Some(t) = real_template(SMOLLM) else {
        return;
    };
    let system = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by \
                  Hugging Face<|im_end|>\n";
    assert_eq!(
        t.render(&user_only(), true).unwrap(),
        format!("{system}<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    );
    assert_eq!(
        t.render(&user_only(), false).unwrap(),
        format!("{system}<|im_start|>user\nHi<|im_end|>\n")
    );
}

#[test]
fn smollm2_special_tokens_come_from_the_vocabulary() {
    let Some(t) = real_template(SMOLLM) else {
        return;
    };
    assert_eq!(t.bos_token(), "<|im_start|>");
    assert_eq!(t.eos_token(), "<|im_end|>");
}

// ---- Qwen2.5: ChatML; "You are Qwen, ..." when no system message is given.

#[test]
fn qwen25_conversation_with_generation_prompt() {
    let Some(t) = real_template(QWEN) else { return };
    assert!(!t.is_fallback());
    assert_eq!(
        t.render(&conversation(), true).unwrap(),
        CHATML_CONVERSATION_WITH_PROMPT
    );
}

#[test]
fn qwen25_conversation_without_generation_prompt() {
    let Some(t) = real_template(QWEN) else { return };
    assert_eq!(
        t.render(&conversation(), false).unwrap(),
        CHATML_CONVERSATION
    );
}

#[test]
fn qwen25_user_only_gets_the_default_system_prompt() {
    let Some(t) = real_template(QWEN) else { return };
    let system = "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful \
                  assistant.<|im_end|>\n";
    assert_eq!(
        t.render(&user_only(), true).unwrap(),
        format!("{system}<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    );
    assert_eq!(
        t.render(&user_only(), false).unwrap(),
        format!("{system}<|im_start|>user\nHi<|im_end|>\n")
    );
}

#[test]
fn qwen25_special_tokens_come_from_the_vocabulary() {
    let Some(t) = real_template(QWEN) else { return };
    assert_eq!(t.bos_token(), "<|endoftext|>");
    assert_eq!(t.eos_token(), "<|im_end|>");
}

#[test]
fn qwen25_renders_jinja_in_message_content_literally() {
    let Some(t) = real_template(QWEN) else { return };
    let text = t
        .render(
            &[
                ChatMessage::system(JINJA_CONTENT),
                ChatMessage::user(JINJA_CONTENT),
            ],
            false,
        )
        .unwrap();
    assert_eq!(
        text,
        format!(
            "<|im_start|>system\n{JINJA_CONTENT}<|im_end|>\n\
             <|im_start|>user\n{JINJA_CONTENT}<|im_end|>\n"
        )
    );
}

// ---- Gemma 3 270M (the pretrained model) ships no template: ChatML, as llama.cpp does.

#[test]
fn gemma3_270m_has_no_template_and_falls_back_to_chatml() {
    let Some(t) = real_template(GEMMA) else {
        return;
    };
    assert!(t.is_fallback());
    assert_eq!(t.bos_token(), "<bos>");
    assert_eq!(t.eos_token(), "<eos>");
    assert_eq!(
        t.render(&conversation(), true).unwrap(),
        CHATML_CONVERSATION_WITH_PROMPT
    );
    assert_eq!(
        t.render(&user_only(), false).unwrap(),
        "<|im_start|>user\nHi<|im_end|>\n"
    );
}

// ---- The Gemma 3 instruction-tuned template, as published with gemma-3-*-it: BOS text
// first, the system message folded into the first user turn (followed by a blank line),
// `assistant` shown as `model`, content trimmed, roles must alternate.

const GEMMA3_IT_TEMPLATE: &str = r#"{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"#;

fn gemma3_it() -> ChatTemplate {
    ChatTemplate::from_source(GEMMA3_IT_TEMPLATE, "<bos>", "<eos>").unwrap()
}

#[test]
fn gemma3_it_folds_the_system_message_into_the_first_user_turn() {
    assert_eq!(
        gemma3_it().render(&conversation(), true).unwrap(),
        "<bos><start_of_turn>user\nYou are a terse assistant.\n\nHi<end_of_turn>\n\
         <start_of_turn>model\nHello! How can I help?<end_of_turn>\n\
         <start_of_turn>user\nWhat is 2+2?<end_of_turn>\n\
         <start_of_turn>model\n"
    );
    assert_eq!(
        gemma3_it().render(&conversation(), false).unwrap(),
        "<bos><start_of_turn>user\nYou are a terse assistant.\n\nHi<end_of_turn>\n\
         <start_of_turn>model\nHello! How can I help?<end_of_turn>\n\
         <start_of_turn>user\nWhat is 2+2?<end_of_turn>\n"
    );
}

#[test]
fn gemma3_it_user_only_has_no_system_prefix() {
    assert_eq!(
        gemma3_it().render(&user_only(), true).unwrap(),
        "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
    );
    assert_eq!(
        gemma3_it().render(&user_only(), false).unwrap(),
        "<bos><start_of_turn>user\nHi<end_of_turn>\n"
    );
}

#[test]
fn gemma3_it_trims_message_content() {
    assert_eq!(
        gemma3_it()
            .render(&[ChatMessage::user("  \n Hi \n")], false)
            .unwrap(),
        "<bos><start_of_turn>user\nHi<end_of_turn>\n"
    );
}

#[test]
fn gemma3_it_rejects_roles_that_do_not_alternate() {
    let messages = [ChatMessage::user("a"), ChatMessage::user("b")];
    match gemma3_it().render(&messages, true) {
        Err(ChatError::Raised(msg)) => assert_eq!(
            msg,
            "Conversation roles must alternate user/assistant/user/assistant/..."
        ),
        other => panic!("expected the template's exception, got {other:?}"),
    }
}

// ---- Fallback and metadata handling with synthetic files.

/// A tiny SentencePiece vocabulary with BOS `<s>` and EOS `</s>`.
fn tiny_tokenizer() -> Tokenizer {
    let tokens: Vec<String> = ["<unk>", "<s>", "</s>", "a"].map(String::from).to_vec();
    let mut spec = TokenizerSpec::new("llama", &tokens);
    spec.bos = Some(1);
    spec.eos = Some(2);
    spec.unknown = Some(0);
    Tokenizer::from_spec(&spec).unwrap()
}

fn gguf_with(template: Option<Value>) -> GgufFile {
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", Value::String("llama".into()))
        .unwrap();
    if let Some(v) = template {
        w.add_metadata(CHAT_TEMPLATE_KEY, v).unwrap();
    }
    GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap()
}

#[test]
fn a_file_without_template_falls_back_to_chatml() {
    let t = ChatTemplate::from_gguf(&gguf_with(None), &tiny_tokenizer()).unwrap();
    assert!(t.is_fallback());
    assert_eq!(
        t.render(&conversation(), true).unwrap(),
        ChatTemplate::chatml()
            .render(&conversation(), true)
            .unwrap()
    );
}

#[test]
fn an_empty_template_string_falls_back_to_chatml() {
    let file = gguf_with(Some(Value::String(String::new())));
    assert!(ChatTemplate::from_gguf(&file, &tiny_tokenizer())
        .unwrap()
        .is_fallback());
}

#[test]
fn the_stored_template_gets_the_vocabulary_special_tokens() {
    let file = gguf_with(Some(Value::String(
        "{{ bos_token }}{% for m in messages %}[{{ m.role }}:{{ m.content }}]{% endfor %}{{ eos_token }}"
            .into(),
    )));
    let t = ChatTemplate::from_gguf(&file, &tiny_tokenizer()).unwrap();
    assert!(!t.is_fallback());
    assert_eq!(t.render(&user_only(), false).unwrap(), "<s>[user:Hi]</s>");
}

#[test]
fn a_template_key_that_is_not_a_string_is_an_error() {
    let file = gguf_with(Some(Value::U32(7)));
    let err = ChatTemplate::from_gguf(&file, &tiny_tokenizer()).unwrap_err();
    assert!(matches!(err, ChatError::Gguf(_)), "{err:?}");
}

#[test]
fn a_stored_template_with_a_syntax_error_is_an_error() {
    let file = gguf_with(Some(Value::String("{% if messages %}".into())));
    let err = ChatTemplate::from_gguf(&file, &tiny_tokenizer()).unwrap_err();
    assert!(matches!(err, ChatError::Syntax(_)), "{err:?}");
}

#[test]
fn chatml_renders_jinja_in_message_content_literally() {
    let text = ChatTemplate::chatml()
        .render(&[ChatMessage::user(JINJA_CONTENT)], true)
        .unwrap();
    assert_eq!(
        text,
        format!("<|im_start|>user\n{JINJA_CONTENT}<|im_end|>\n<|im_start|>assistant\n")
    );
}

// ---- Hostile templates: errors, never panics or hangs.

fn render_source(source: &str) -> Result<String, ChatError> {
    ChatTemplate::from_source(source, "<s>", "</s>")?.render(&conversation(), true)
}

#[test]
fn raise_exception_is_a_raised_error_carrying_the_message() {
    let err =
        render_source("{% if messages|length > 2 %}{{ raise_exception('too long') }}{% endif %}")
            .unwrap_err();
    match err {
        ChatError::Raised(msg) => assert_eq!(msg, "too long"),
        other => panic!("expected Raised, got {other:?}"),
    }
}

#[test]
fn an_endless_loop_runs_out_of_fuel() {
    let err = render_source(
        "{% for a in range(100000) %}{% for b in range(100000) %}{{ '' }}{% endfor %}{% endfor %}",
    )
    .unwrap_err();
    assert!(matches!(err, ChatError::Limit(ChatLimit::Fuel)), "{err:?}");
}

#[test]
fn unbounded_macro_recursion_hits_the_recursion_limit() {
    let err = render_source("{% macro deeper() %}x{{ deeper() }}{% endmacro %}{{ deeper() }}")
        .unwrap_err();
    assert!(
        matches!(err, ChatError::Limit(ChatLimit::Recursion)),
        "{err:?}"
    );
}

#[test]
fn a_template_including_itself_hits_the_recursion_limit() {
    let err = render_source("{% include 'chat_template' %}").unwrap_err();
    assert!(
        matches!(err, ChatError::Limit(ChatLimit::Recursion)),
        "{err:?}"
    );
}

#[test]
fn huge_output_hits_the_output_size_limit() {
    // 1 MB per iteration; the default cap is 8 MiB.
    let err =
        render_source("{% for i in range(100) %}{{ 'x' * 1000000 }}{% endfor %}").unwrap_err();
    assert!(
        matches!(err, ChatError::Limit(ChatLimit::OutputSize)),
        "{err:?}"
    );
}

#[test]
fn templates_cannot_read_files() {
    let err = render_source("{% include '/etc/passwd' %}").unwrap_err();
    assert!(matches!(err, ChatError::Render(_)), "{err:?}");
}

#[test]
fn chat_errors_convert_into_the_crate_error() {
    let err: openweight::Error = render_source("{{ raise_exception('no') }}")
        .unwrap_err()
        .into();
    assert!(matches!(err, openweight::Error::Chat(ChatError::Raised(_))));
    assert!(err.to_string().contains("no"), "{err}");
}
