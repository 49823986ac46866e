//! Fuzz target: chat templates with arbitrary roles and message contents, and arbitrary
//! template sources, under the default resource limits.
//!
//! Input layout: `selector, flags, body`. `selector == 0xff` means the body up to the first
//! `\0` is itself the template source; otherwise `selector % N` picks one of N fixed templates
//! (the three real models' templates, ChatML, and hostile ones: unbounded loops, deep recursion,
//! output blow-up, `raise_exception`). The rest of the body, split on `\0`, gives alternating roles and
//! contents. Rendering must return `Ok` or a `ChatError`, never panic, hang or exhaust memory
//! (the fuel, recursion and output-size limits bound every render).
//!
//! Run from the repository root: `python3 fuzz/seed.py`, then
//! `cargo +nightly fuzz run chat_template -- -max_total_time=600 -max_len=4096`.

#![no_main]

use std::sync::OnceLock;
use std::time::UNIX_EPOCH;

use libfuzzer_sys::fuzz_target;
use openweight::chat::{ChatMessage, ChatTemplate};
use openweight::gguf::GgufFile;
use openweight::tokenizer::Tokenizer;

#[path = "common_models.rs"]
mod common_models;

const HOSTILE: &[&str] = &[
    // Unbounded work: nested loops over large ranges.
    "{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}",
    // Deep recursion through a macro.
    "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    // Output blow-up: string repetition doubling.
    "{% set s = namespace(v='xxxxxxxx') %}{% for i in range(64) %}{% set s.v = s.v ~ s.v %}\
     {% endfor %}{{ s.v }}",
    // Templates that raise, index out of range, or touch undefined attributes.
    "{{ raise_exception('no') }}",
    "{{ messages[1000].content }}{{ messages[0].nope.deeper }}{{ (messages | length) // 0 }}",
    // Role-driven branching with filters applied to user content.
    "{% for m in messages %}{{ m.role | upper }}:{{ m.content | trim | replace('a', m.content) \
     }}{{ m.content | tojson }}{% if m.role == 'system' %}{{ m.content * 1000 }}{% endif %}\
     {% endfor %}{% if add_generation_prompt %}{{ strftime_now('%Y-%m-%d %H:%M:%S %%') }}{% endif %}",
];

struct Templates {
    fixed: Vec<ChatTemplate>,
    bos: String,
    eos: String,
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
        }
        Templates { fixed, bos, eos }
    })
}

fuzz_target!(|data: &[u8]| {
    let [selector, flags, body @ ..] = data else {
        return;
    };
    let t = templates();
    let body = String::from_utf8_lossy(body);
    let mut parts = body.split('\0');
    let compiled;
    let template = if *selector != 0xff {
        &t.fixed[*selector as usize % t.fixed.len()]
    } else {
        let source = parts.next().unwrap_or("");
        match ChatTemplate::from_source(source, &t.bos, &t.eos) {
            Ok(mut c) => {
                c.set_clock(Some(UNIX_EPOCH));
                compiled = c;
                &compiled
            }
            Err(_) => return,
        }
    };
    let rest: Vec<&str> = parts.collect();
    let messages: Vec<ChatMessage> = rest
        .chunks(2)
        .map(|c| ChatMessage::new(c[0], c.get(1).copied().unwrap_or("")))
        .collect();
    if let Ok(text) = template.render(&messages, flags & 1 != 0) {
        assert!(text.len() <= template.limits().max_output_bytes);
    }
});
