//! Generate text from a prompt, streaming it as it comes.
//!
//! `cargo run --release --example generate [MODEL.gguf] [PROMPT]`

use std::io::Write;

use openweight::{GenerateOptions, Model, Sampler, Session, SessionOptions};

fn main() -> openweight::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .unwrap_or_else(|| "fixtures/models/smollm2-135m-q4_1.gguf".into());
    let prompt = args
        .next()
        .unwrap_or_else(|| "The three primary colours are".into());

    let model = Model::open(&path)?;
    let options = SessionOptions {
        n_ctx: 256,
        ..SessionOptions::default()
    };
    let mut session = Session::new(&model, options)?;
    session.set_prompt_text(&prompt)?;

    let mut sampler = Sampler::builder().temperature(0.7).seed(42).build();
    let generate = GenerateOptions::new().max_tokens(32).stop("\n\n");
    print!("{prompt}");
    for token in session.generate(&mut sampler, generate) {
        print!("{}", token?.text_piece);
        std::io::stdout().flush().ok();
    }
    println!();
    Ok(())
}
