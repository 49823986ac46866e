//! Embeddings for retrieval: embed a few sentences and rank them against a query by cosine
//! similarity (the vectors are unit length, so it is a dot product).
//!
//! `cargo run --release --example embed [MODEL.gguf]`

use openweight::{Model, Pooling};

fn main() -> openweight::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fixtures/models/smollm2-135m-q4_1.gguf".into());
    let model = Model::open(&path)?;

    let documents = [
        "The cat sleeps on the warm windowsill.",
        "Interest rates rose again this quarter.",
        "A kitten naps in the sun.",
    ];
    let query = model.embed("Where is the cat resting?", Pooling::Mean, true)?;
    println!("dimensions: {}", query.len());
    let mut ranked = Vec::new();
    for doc in documents {
        let v = model.embed(doc, Pooling::Mean, true)?;
        let cosine: f32 = query.iter().zip(&v).map(|(a, b)| a * b).sum();
        ranked.push((cosine, doc));
    }
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (cosine, doc) in ranked {
        println!("{cosine:.4}  {doc}");
    }
    Ok(())
}
