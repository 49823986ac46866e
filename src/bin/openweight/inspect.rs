//! `openweight inspect`: a GGUF file's header, metadata and tensor table, as aligned text
//! tables or (with `--json`) as one JSON object shaped like `fixtures/golden/real/*.inspect.json`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;

use openweight::gguf::{Array, GgufFile, TensorInfo, Value};

use crate::json;

/// Arrays with at most this many scalar elements are printed in full in the text table.
const MAX_INLINE_ARRAY: usize = 8;
/// Strings longer than this many characters are shortened in the text table.
const MAX_INLINE_STRING: usize = 72;

/// Arguments of `openweight inspect`.
#[derive(clap::Args)]
pub struct Args {
    /// The GGUF file to inspect.
    pub model: PathBuf,
    /// Print one JSON object (version, alignment, data_offset, metadata, tensors) instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// Runs the subcommand: opens the file (no tensor data is read) and prints its description.
pub fn run(args: Args) -> openweight::Result<()> {
    let file = GgufFile::open(&args.model)?;
    let out = if args.json {
        to_json(&file)
    } else {
        to_text(&file)
    };
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

/// The JSON description: `{"file_bytes", "version", "alignment", "data_offset", "metadata":
/// {key: {"type", "value"} | {"type": "array", "elem", "len"}}, "tensors": [{"name", "type",
/// "ne", "offset", "n_bytes"}]}`.
pub fn to_json(file: &GgufFile) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "{{\n  \"file_bytes\": {},\n  \"version\": {},\n  \"alignment\": {},\n  \"data_offset\": {},\n  \"metadata\": {{",
        file.file_len(),
        file.version(),
        file.alignment(),
        file.data_offset()
    );
    for (i, (key, value)) in file.metadata().iter().enumerate() {
        out.push_str(if i == 0 { "\n    " } else { ",\n    " });
        json::push_str(&mut out, key);
        out.push_str(": {\"type\": ");
        json::push_str(&mut out, value.type_name());
        match value {
            Value::Array(a) => {
                out.push_str(", \"elem\": ");
                json::push_str(&mut out, a.elem_type_name());
                let _ = write!(out, ", \"len\": {}", a.len());
            }
            scalar => {
                out.push_str(", \"value\": ");
                push_scalar_json(&mut out, scalar);
            }
        }
        out.push('}');
    }
    out.push_str("\n  },\n  \"tensors\": [");
    for (i, t) in file.tensors().iter().enumerate() {
        out.push_str(if i == 0 { "\n    " } else { ",\n    " });
        out.push_str("{\"name\": ");
        json::push_str(&mut out, &t.name);
        out.push_str(", \"type\": ");
        json::push_str(&mut out, t.type_name());
        let _ = write!(
            out,
            ", \"ne\": {}, \"offset\": {}, \"n_bytes\": {}}}",
            shape(t),
            t.offset,
            t.n_bytes
        );
    }
    out.push_str("\n  ]\n}\n");
    out
}

/// A non-array value as a JSON literal. Floats are printed as the f64 they widen to, as the
/// golden files (made with Python) do.
fn push_scalar_json(out: &mut String, v: &Value) {
    match v {
        Value::F32(x) => json::push_f64(out, f64::from(*x)),
        Value::F64(x) => json::push_f64(out, *x),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::String(s) => json::push_str(out, s),
        v => out.push_str(&integer_text(v)),
    }
}

/// Integer text of a value (empty for non-integers).
fn integer_text(v: &Value) -> String {
    match (v.as_i64(), v.as_u64()) {
        (Some(x), _) => x.to_string(),
        (None, Some(x)) => x.to_string(),
        (None, None) => String::new(),
    }
}

/// `[896, 151936]`
fn shape(t: &TensorInfo) -> String {
    let dims: Vec<String> = t.ne.iter().map(u64::to_string).collect();
    format!("[{}]", dims.join(", "))
}

/// The text description: a header line, then aligned metadata and tensor tables.
pub fn to_text(file: &GgufFile) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "GGUF v{}, {} bytes, alignment {}, data section at byte {}",
        file.version(),
        file.file_len(),
        file.alignment(),
        file.data_offset()
    );
    let total_tensor_bytes: u64 = file.tensors().iter().map(|t| t.n_bytes).sum();
    let _ = writeln!(
        out,
        "{} metadata keys, {} tensors ({} bytes of tensor data)\n",
        file.metadata().len(),
        file.tensors().len(),
        total_tensor_bytes
    );

    let rows: Vec<[String; 3]> = file
        .metadata()
        .iter()
        .map(|(k, v)| [k.clone(), v.type_name().to_owned(), display_value(v)])
        .collect();
    push_table(&mut out, ["KEY", "TYPE", "VALUE"], &rows, [false; 3]);
    out.push('\n');

    let rows: Vec<[String; 5]> = file
        .tensors()
        .iter()
        .map(|t| {
            [
                t.name.clone(),
                t.type_name().to_owned(),
                shape(t),
                t.offset.to_string(),
                t.n_bytes.to_string(),
            ]
        })
        .collect();
    push_table(
        &mut out,
        ["TENSOR", "TYPE", "NE", "OFFSET", "BYTES"],
        &rows,
        [false, false, false, true, true],
    );
    out
}

/// Appends a table with columns padded to their widest cell (`right[i]`: right-align column i).
fn push_table<const N: usize>(
    out: &mut String,
    header: [&str; N],
    rows: &[[String; N]],
    right: [bool; N],
) {
    let mut width = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header = header.map(str::to_owned);
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let pad = width[i] - cell.chars().count();
            if i > 0 {
                line.push_str("  ");
            }
            if right[i] {
                line.extend(std::iter::repeat_n(' ', pad));
                line.push_str(cell);
            } else {
                line.push_str(cell);
                if i + 1 < N {
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

/// A value for the text table: strings quoted, escaped and shortened; long arrays summarised
/// as `[string; 151936]`.
fn display_value(v: &Value) -> String {
    match v {
        Value::String(s) => display_string(s),
        Value::Array(a) => display_array(a),
        Value::F32(x) => format!("{x:?}"),
        Value::F64(x) => format!("{x:?}"),
        Value::Bool(b) => b.to_string(),
        v => integer_text(v),
    }
}

fn display_string(s: &str) -> String {
    let n_chars = s.chars().count();
    if n_chars <= MAX_INLINE_STRING {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(MAX_INLINE_STRING).collect();
        format!("{head:?}... ({} bytes)", s.len())
    }
}

fn display_array(a: &Array) -> String {
    fn list<T>(v: &[T], f: impl Fn(&T) -> String) -> String {
        let items: Vec<String> = v.iter().map(f).collect();
        format!("[{}]", items.join(", "))
    }
    if a.len() > MAX_INLINE_ARRAY || matches!(a, Array::Array(_)) {
        return format!("[{}; {}]", a.elem_type_name(), a.len());
    }
    match a {
        Array::U8(v) => list(v, u8::to_string),
        Array::I8(v) => list(v, i8::to_string),
        Array::U16(v) => list(v, u16::to_string),
        Array::I16(v) => list(v, i16::to_string),
        Array::U32(v) => list(v, u32::to_string),
        Array::I32(v) => list(v, i32::to_string),
        Array::F32(v) => list(v, |x| format!("{x:?}")),
        Array::Bool(v) => list(v, bool::to_string),
        Array::String(v) => list(v, |s| display_string(s)),
        Array::U64(v) => list(v, u64::to_string),
        Array::I64(v) => list(v, i64::to_string),
        Array::F64(v) => list(v, |x| format!("{x:?}")),
        Array::Array(v) => format!("[array; {}]", v.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openweight::gguf::GgufWriter;

    fn sample() -> GgufFile {
        let mut w = GgufWriter::new();
        w.add_metadata("general.architecture", Value::String("llama".into()))
            .unwrap();
        w.add_metadata("x.eps", Value::F32(1e-6)).unwrap();
        w.add_metadata(
            "x.tokens",
            Value::Array(Array::String(vec!["a".into(); 20])),
        )
        .unwrap();
        w.add_metadata("x.small", Value::Array(Array::I32(vec![1, -2])))
            .unwrap();
        w.add_tensor("t", &[32, 2], 8, vec![0u8; 68]).unwrap();
        GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap()
    }

    #[test]
    fn json_summarises_arrays_and_widens_floats() {
        let j = to_json(&sample());
        assert!(j.contains(r#""x.eps": {"type": "float32", "value": 9.999999974752427e-7}"#));
        assert!(j.contains(r#""x.tokens": {"type": "array", "elem": "string", "len": 20}"#));
        assert!(j.contains(
            r#"{"name": "t", "type": "Q8_0", "ne": [32, 2], "offset": 0, "n_bytes": 68}"#
        ));
    }

    #[test]
    fn text_summarises_long_arrays_and_lists_short_ones() {
        let t = to_text(&sample());
        assert!(t.contains("[string; 20]"), "{t}");
        assert!(t.contains("[1, -2]"), "{t}");
        assert!(t.contains("\"llama\""), "{t}");
    }

    #[test]
    fn table_columns_are_aligned() {
        let mut out = String::new();
        let rows = [
            ["a".to_owned(), "1".to_owned()],
            ["bbb".to_owned(), "22".to_owned()],
        ];
        push_table(&mut out, ["K", "V"], &rows, [false, true]);
        assert_eq!(out, "K     V\na     1\nbbb  22\n");
    }
}
