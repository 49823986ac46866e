//! A scripted two-turn chat: the model's own chat template renders the history, and the
//! session evaluates only the tokens that are not already in its cache.
//!
//! `cargo run --release --example chat [MODEL.gguf]`

use openweight::chat::{ChatMessage, ChatTemplate};
use openweight::{GenerateOptions, Model, Sampler, Session, SessionOptions};

fn main() -> openweight::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fixtures/models/smollm2-135m-q4_1.gguf".into());
    let model = Model::open(&path)?;
    let template = ChatTemplate::from_model(&model)?;
    let options = SessionOptions {
        n_ctx: 1024,
        ..SessionOptions::default()
    };
    let mut session = Session::new(&model, options)?;
    let mut sampler = Sampler::builder().temperature(0.5).seed(1).build();

    let mut history = vec![ChatMessage::system(
        "You are a helpful assistant. Be brief.",
    )];
    for question in ["What is the capital of France?", "And of Italy?"] {
        println!("> {question}");
        history.push(ChatMessage::user(question));
        let prompt = template.render(&history, true)?;
        let ids = model.prompt_tokens(&prompt)?;
        let cached = session
            .tokens()
            .iter()
            .zip(&ids)
            .take_while(|(a, b)| a == b);
        let reused = cached.count();
        session.set_prompt(&ids)?;
        let generate = GenerateOptions::new().max_tokens(40);
        let (reply, _ids) = session.generate(&mut sampler, generate).collect_text()?;
        println!("{reply}");
        println!(
            "  ({} prompt tokens, {reused} reused from the cache)",
            ids.len()
        );
        history.push(ChatMessage::assistant(reply));
    }
    Ok(())
}
