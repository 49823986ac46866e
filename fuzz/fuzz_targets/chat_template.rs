//! Fuzz target: the real models' chat templates, ChatML and a few hostile templates, rendered
//! with arbitrary roles and message contents.
//!
//! Input layout: `selector, flags, body`. `selector % N` picks one of the N fixed templates (the
//! three real models' templates, ChatML, and hostile ones: unbounded loops, deep recursion,
//! output blow-up, `raise_exception`, out-of-range indexing, filters applied to the content);
//! `flags & 1` asks for the generation prompt; the body, split on `\0`, gives alternating roles
//! and contents. Rendering must return `Ok` or a `ChatError`, never panic or hang.
//!
//! The fuel is lowered to 200 000 instructions (the default 5 million takes seconds per render
//! in this instrumented build; real templates need about a hundred per message), so the limit
//! itself is exercised on every hostile input.
//!
//! Arbitrary template *sources* are not fuzzed: minijinja bounds instructions (fuel), nesting
//! and (here) output size, but not the size of intermediate values, so a template of a few
//! dozen bytes can double a string until memory runs out (`{% set s.v = s.v ~ s.v %}` in a
//! loop). That is a known limitation, documented in SECURITY.md; fuzzing sources would only
//! rediscover it.
//!
//! Run from the repository root: `python3 fuzz/seed.py`, then
//! `cargo +nightly fuzz run chat_template -- -max_total_time=600 -max_len=4096`.

#![no_main]

use std::sync::OnceLock;
use std::time::UNIX_EPOCH;

use libfuzzer_sys::fuzz_target;
use openweight::chat::{ChatLimits, ChatMessage, ChatTemplate};
use openweight::gguf::GgufFile;
use openweight::tokenizer::Tokenizer;

#[path = "common_models.rs"]
mod common_models;

const HOSTILE: &[&str] = &[
    // Unbounded work: nested loops over large ranges.
    "{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}",
    // Deep recursion through a macro.
    "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    // Output blow-up: a megabyte per iteration, stopped by the output-size limit.
    "{% for i in range(1000000) %}{{ 'x' * 1000000 }}{% endfor %}",
    // Templates that raise, index out of range, or touch undefined attributes.
    "{{ raise_exception('no') }}",
    "{{ messages[1000].content }}{{ messages[0].nope.deeper }}{{ (messages | length) // 0 }}",
    // Role-driven branching with filters applied to user content.
    "{% for m in messages %}{{ m.role | upper }}:{{ m.content | trim | replace('a', m.content) \
     }}{{ m.content | tojson }}{% if m.role == 'system' %}{{ m.content * 1000 }}{% endif %}\
     {% endfor %}{% if add_generation_prompt %}{{ strftime_now('%Y-%m-%d %H:%M:%S %%') }}\
     {% endif %}",
];

struct Templates {
    fixed: Vec<ChatTemplate>,
}

fn templates() -> &'static Templates {
    static T: OnceLock<Templates> = OnceLock::new();
    T.get_or_init(|| {
        let mut fixed = Vec::new();
        let (mut bos, mut eos) = (String::new(), String::new());
        for path in common_models::tokenizer_models() {
            let file = GgufFile::open(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
            let tok = Tokenizer::from_gguf(&file).unwrap_or_else(|e| panic!("{path:?}: {e}"));
            let t =
                ChatTemplate::from_gguf(&file, &tok).unwrap_or_else(|e| panic!("{path:?}: {e}"));
            bos = t.bos_token().to_owned();
            eos = t.eos_token().to_owned();
            fixed.push(t);
        }
        fixed.push(ChatTemplate::chatml());
        for src in HOSTILE {
            fixed.push(
                ChatTemplate::from_source(src, &bos, &eos).expect("hostile template compiles"),
            );
        }
        for t in &mut fixed {
            t.set_clock(Some(UNIX_EPOCH));
            t.set_limits(ChatLimits {
                fuel: 200_000,
                ..ChatLimits::default()
            });
        }
        Templates { fixed }
    })
}

// Loading happens before fuzzing starts, outside the per-input timeout.
fuzz_target!(init: {
    templates();
}, |data: &[u8]| {
    let [selector, flags, body @ ..] = data else {
        return;
    };
    let t = templates();
    let body = String::from_utf8_lossy(body);
    let template = &t.fixed[*selector as usize % t.fixed.len()];
    let parts: Vec<&str> = body.split('\0').collect();
    let messages: Vec<ChatMessage> = parts
        .chunks(2)
        .map(|c| ChatMessage::new(c[0], c.get(1).copied().unwrap_or("")))
        .collect();
    if let Ok(text) = template.render(&messages, flags & 1 != 0) {
        assert!(text.len() <= template.limits().max_output_bytes);
    }
});
