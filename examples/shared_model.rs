//! One model, four threads: each thread runs its own session (its own KV cache) on the
//! same weights, which are loaded and memory-mapped once.
//!
//! `cargo run --release --example shared_model [MODEL.gguf]`

use openweight::{GenerateOptions, Model, Sampler, Session, SessionOptions};

fn main() -> openweight::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fixtures/models/smollm2-135m-q4_1.gguf".into());
    let model = Model::open(&path)?;
    let prompts = [
        "Once upon a time",
        "The ocean is",
        "My favourite food",
        "In 1492,",
    ];

    let replies: Vec<openweight::Result<String>> = std::thread::scope(|scope| {
        let workers: Vec<_> = prompts
            .iter()
            .enumerate()
            .map(|(i, prompt)| {
                let model = &model;
                scope.spawn(move || {
                    let options = SessionOptions {
                        n_ctx: 128,
                        n_threads: 1,
                        ..SessionOptions::default()
                    };
                    let mut session = Session::new(model, options)?;
                    session.set_prompt_text(prompt)?;
                    let mut sampler = Sampler::builder().seed(i as u64).build();
                    let generate = GenerateOptions::new().max_tokens(20);
                    let (text, _ids) = session.generate(&mut sampler, generate).collect_text()?;
                    Ok(format!("{prompt}{text}"))
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("worker thread panicked"))
            .collect()
    });
    for (i, reply) in replies.into_iter().enumerate() {
        println!("[thread {i}] {}", reply?.replace('\n', " "));
    }
    Ok(())
}
