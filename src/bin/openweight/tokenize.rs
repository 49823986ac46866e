//! `openweight tokenize`: a text's token ids under a model's tokenizer, as one JSON array.
//!
//! BOS/EOS are added as the model's metadata says (like the reference's `add_special = true`);
//! only the tokenizer metadata is read, never the weights.

use std::io::Write as _;
use std::path::PathBuf;

use openweight::gguf::GgufFile;
use openweight::tokenizer::Tokenizer;

/// Arguments of `openweight tokenize`.
#[derive(clap::Args)]
pub struct Args {
    /// The GGUF model whose tokenizer to use.
    #[arg(short, long)]
    pub model: PathBuf,
    /// Turn control tokens written in the text (e.g. `<|im_start|>`) into those tokens.
    #[arg(long)]
    pub parse_special: bool,
    /// The text to tokenize.
    #[arg(short, long, conflicts_with = "file", required_unless_present = "file")]
    pub prompt: Option<String>,
    /// Read the text to tokenize from this file (UTF-8).
    #[arg(short, long)]
    pub file: Option<PathBuf>,
}

/// Runs the subcommand: prints `[id, id, ...]` and a newline.
pub fn run(args: Args) -> openweight::Result<()> {
    let text = match (&args.prompt, &args.file) {
        (Some(p), _) => p.clone(),
        (None, Some(path)) => {
            let bytes = std::fs::read(path).map_err(|source| openweight::Error::Io {
                path: path.clone(),
                source,
            })?;
            String::from_utf8(bytes).map_err(|e| {
                openweight::Error::InvalidArgument(format!(
                    "{}: not UTF-8 text (invalid byte at offset {})",
                    path.display(),
                    e.utf8_error().valid_up_to()
                ))
            })?
        }
        (None, None) => {
            return Err(openweight::Error::InvalidArgument(
                "give the text with -p TEXT or -f FILE".into(),
            ))
        }
    };
    let file = GgufFile::open(&args.model)?;
    let tokenizer = Tokenizer::from_gguf(&file)?;
    let ids = tokenizer.encode(&text, true, args.parse_special)?;
    let mut out = String::with_capacity(ids.len() * 7 + 3);
    out.push('[');
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&id.to_string());
    }
    out.push_str("]\n");
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
    {
        // A closed pipe (`| head`) is not an error worth reporting.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(openweight::Error::Io {
            path: PathBuf::from("<stdout>"),
            source: e,
        }),
        _ => Ok(()),
    }
}
