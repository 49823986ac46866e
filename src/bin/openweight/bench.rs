//! `openweight bench`: prompt-processing and generation speed, measured the way llama-bench
//! measures them.
//!
//! - `pp<P>`: one prompt of `P` token ids, evaluated as one batch (split only at the session's
//!   batch limit) into an empty KV cache; the whole evaluation is timed.
//! - `tg<N>`: `N` tokens decoded one at a time into an empty KV cache, every step feeding the
//!   same token (as llama-bench does); the whole run of `N` steps is timed as one.
//!
//! Each test runs once untimed (warm-up), then `r` timed repetitions; the result is the mean
//! and the sample standard deviation of tokens/s over the repetitions. Token ids are
//! pseudo-random but fixed (the same every run), valid for the vocabulary, and no BOS is added.
//!
//! With `--bandwidth`, the tests are followed by the memory-read probe
//! ([`openweight::kernels::bandwidth`], the method of `benches/bandwidth.rs`) on the session's
//! own thread pool, and decode's weight traffic (`tg` tokens/s x bytes of weights read per
//! token) is reported as a fraction of it.

use std::path::PathBuf;
use std::time::Instant;

use openweight::gguf::TensorInfo;
use openweight::kernels::bandwidth::{measure_read, ProbeBuffer};
use openweight::model::{LogitsMode, Model, Session, SessionOptions};
use openweight::{Error, Result};

use crate::json;

/// Arguments of `openweight bench`.
#[derive(clap::Args)]
pub struct Args {
    /// The GGUF model file.
    #[arg(short = 'm', long = "model")]
    pub model: PathBuf,
    /// Prompt length of the prompt-processing test (0 skips it).
    #[arg(short = 'p', long = "n-prompt", default_value_t = 512)]
    pub n_prompt: usize,
    /// Tokens generated in the generation test (0 skips it).
    #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
    pub n_gen: usize,
    /// Worker threads (0 = all available cores).
    #[arg(short = 't', long = "threads", default_value_t = 2)]
    pub threads: usize,
    /// Timed repetitions of each test (after one untimed warm-up run).
    #[arg(short = 'r', long = "repetitions", default_value_t = 3)]
    pub repetitions: usize,
    /// Print one JSON object `{"model", "threads", "pp_tps", "pp_sd", "tg_tps", "tg_sd", ...}`
    /// instead of the table.
    #[arg(long)]
    pub json: bool,
    /// After the tests, measure memory-read bandwidth on the same threads (sum of a 1 GiB
    /// buffer, best of 3) and report decode's weight traffic (tg t/s x the weight bytes one
    /// token reads, "decode_bytes_per_token" in --json) as a fraction of it. Adds
    /// "bandwidth_gbs", "tg_weight_gbs" and "tg_bandwidth_fraction" to --json (the last two
    /// null with -n 0); without this flag the fields are absent.
    #[arg(long)]
    pub bandwidth: bool,
}

/// Bytes the `--bandwidth` probe reads per repetition.
const PROBE_BYTES: usize = 1 << 30;
/// Repetitions of the `--bandwidth` probe; the fastest counts.
const PROBE_REPS: usize = 3;

/// Mean and sample standard deviation of tokens/s over the timed repetitions of one test.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Speed {
    mean: f64,
    sd: f64,
}

impl Speed {
    /// Summarises per-repetition speeds (tokens/s); the deviation uses `n - 1` (as
    /// llama-bench does) and is 0 for a single repetition.
    fn of(samples: &[f64]) -> Speed {
        if samples.is_empty() {
            return Speed::default();
        }
        let n = samples.len() as f64;
        let mean = samples.iter().sum::<f64>() / n;
        let sd = if samples.len() < 2 {
            0.0
        } else {
            (samples.iter().map(|s| (s - mean) * (s - mean)).sum::<f64>() / (n - 1.0)).sqrt()
        };
        Speed { mean, sd }
    }
}

/// The `--bandwidth` figures: the read probe and decode's weight traffic against it.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Bandwidth {
    /// The read probe, GB/s (1e9 bytes per second).
    probe_gbs: f64,
    /// Bytes of weights decode reads per second, GB/s; `None` when tg was not run.
    tg_weight_gbs: Option<f64>,
}

impl Bandwidth {
    /// Decode's weight traffic as a fraction of the probe; `None` when tg was not run.
    fn fraction(&self) -> Option<f64> {
        self.tg_weight_gbs.map(|w| w / self.probe_gbs)
    }
}

/// Runs the subcommand.
pub fn run(args: Args) -> Result<()> {
    if args.n_prompt == 0 && args.n_gen == 0 {
        return Err(Error::InvalidArgument(
            "-p and -n are both 0: nothing to measure".into(),
        ));
    }
    if args.repetitions == 0 {
        return Err(Error::InvalidArgument(
            "-r must be at least 1 (timed repetitions)".into(),
        ));
    }
    let model = Model::open(&args.model)?;
    let config = model.config();
    let n_ctx_train = config.n_ctx_train;
    if args.n_prompt + args.n_gen > n_ctx_train {
        return Err(Error::InvalidArgument(format!(
            "-p {} plus -n {} is {} tokens, beyond the model's context length of {n_ctx_train}",
            args.n_prompt,
            args.n_gen,
            args.n_prompt + args.n_gen
        )));
    }
    let threads = if args.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        args.threads
    };
    let options = SessionOptions {
        n_ctx: args.n_prompt.max(args.n_gen),
        n_threads: threads,
        ..Default::default()
    };
    let mut session = Session::new(&model, options)?;
    let n_vocab = config.n_vocab;
    let kernels = openweight::kernels::dispatch::best().name();

    let pp = if args.n_prompt > 0 {
        let prompt = token_ids(args.n_prompt, n_vocab, 0x5eed_0001);
        measure(&mut session, "pp", args.n_prompt, args.repetitions, |s| {
            s.clear();
            let start = Instant::now();
            s.eval(&prompt, LogitsMode::Last)?;
            Ok(start.elapsed().as_secs_f64())
        })?
    } else {
        Speed::default()
    };
    let tg = if args.n_gen > 0 {
        let token = token_ids(1, n_vocab, 0x5eed_0002)[0];
        measure(&mut session, "tg", args.n_gen, args.repetitions, |s| {
            s.clear();
            let start = Instant::now();
            for _ in 0..args.n_gen {
                s.eval(&[token], LogitsMode::Last)?;
            }
            Ok(start.elapsed().as_secs_f64())
        })?
    } else {
        Speed::default()
    };

    let weight_bytes: u64 = model.gguf().tensors().iter().map(|t| t.n_bytes).sum();
    let experts_used = config.moe.as_ref().map(|m| (m.n_expert_used, m.n_expert));
    let decode_bytes = decode_bytes_per_token(model.gguf().tensors(), experts_used);
    let n_params: u64 = model.gguf().tensors().iter().map(|t| t.n_elements()).sum();
    // F16 cache (the session default): one key and one value row per layer and KV head, or
    // the latent plus the rotary key per layer with latent attention.
    let kv_bytes_per_token = config.kv_values_per_token() * 2;
    let bandwidth = if args.bandwidth {
        let probe_gbs = probe_gbs(session.pool(), threads)?;
        let tg_weight_gbs = (args.n_gen > 0).then(|| tg.mean * decode_bytes as f64 / 1e9);
        Some(Bandwidth {
            probe_gbs,
            tg_weight_gbs,
        })
    } else {
        None
    };

    if args.json {
        let mut out = String::from("{\"model\": ");
        json::push_str(&mut out, &args.model.display().to_string());
        out.push_str(&format!(", \"threads\": {threads}, \"pp_tps\": "));
        json::push_f64(&mut out, pp.mean);
        out.push_str(", \"pp_sd\": ");
        json::push_f64(&mut out, pp.sd);
        out.push_str(", \"tg_tps\": ");
        json::push_f64(&mut out, tg.mean);
        out.push_str(", \"tg_sd\": ");
        json::push_f64(&mut out, tg.sd);
        out.push_str(&format!(
            ", \"n_prompt\": {}, \"n_gen\": {}, \"repetitions\": {}, \
             \"kv_bytes_per_token\": {kv_bytes_per_token}, \"weight_bytes\": {weight_bytes}, \
             \"decode_bytes_per_token\": {decode_bytes}, \"n_params\": {n_params}, \
             \"kernels\": ",
            args.n_prompt, args.n_gen, args.repetitions
        ));
        json::push_str(&mut out, kernels);
        let il = model.interleaved();
        out.push_str(&format!(
            ", \"interleaved_matrices\": {}, \"interleaved_bytes\": {}, \"interleave_ms\": ",
            il.matrices, il.bytes
        ));
        json::push_f64(&mut out, il.elapsed.as_secs_f64() * 1e3);
        if let Some(bw) = bandwidth {
            push_bandwidth_json(&mut out, &bw);
        }
        out.push('}');
        println!("{out}");
    } else {
        let name = args.model.file_name().map_or_else(
            || args.model.display().to_string(),
            |f| f.to_string_lossy().into(),
        );
        let mut rows = Vec::new();
        if args.n_prompt > 0 {
            rows.push((format!("pp{}", args.n_prompt), pp));
        }
        if args.n_gen > 0 {
            rows.push((format!("tg{}", args.n_gen), tg));
        }
        print_table(
            &name,
            &human_bytes(weight_bytes),
            &human_count(n_params),
            kernels,
            threads,
            &rows,
        );
        let il = model.interleaved();
        if il.matrices > 0 {
            println!(
                "weights interleaved at load: {} matrices, {} in {:.0} ms",
                il.matrices,
                human_bytes(il.bytes as u64),
                il.elapsed.as_secs_f64() * 1e3
            );
        }
        if let Some(bw) = bandwidth {
            println!("{}", bandwidth_line(&bw, threads));
        }
    }
    Ok(())
}

/// Runs the memory-read probe on `pool` ([`PROBE_BYTES`], best of [`PROBE_REPS`]) with
/// progress on stderr, and returns its rate in GB/s.
fn probe_gbs(pool: &rayon::ThreadPool, threads: usize) -> Result<f64> {
    eprintln!(
        "bench: bandwidth probe: reading {} {PROBE_REPS} times on {threads} thread(s)",
        human_bytes(PROBE_BYTES as u64)
    );
    let buffer = ProbeBuffer::new(PROBE_BYTES)
        .map_err(|e| Error::InvalidArgument(format!("--bandwidth: {e}")))?;
    let gbs = measure_read(pool, &buffer, PROBE_REPS).bytes_per_second / 1e9;
    eprintln!("bench: bandwidth probe: {gbs:.2} GB/s (best of {PROBE_REPS})");
    Ok(gbs)
}

/// Appends the `--bandwidth` fields (with a leading comma) to a JSON object being written.
fn push_bandwidth_json(out: &mut String, bw: &Bandwidth) {
    out.push_str(", \"bandwidth_gbs\": ");
    json::push_f64(out, bw.probe_gbs);
    out.push_str(", \"tg_weight_gbs\": ");
    json::push_f64(out, bw.tg_weight_gbs.unwrap_or(f64::NAN));
    out.push_str(", \"tg_bandwidth_fraction\": ");
    json::push_f64(out, bw.fraction().unwrap_or(f64::NAN));
}

/// Bytes of weights one decoded token reads: every tensor, except that a token embedding
/// table that is not also the output matrix (the file has its own `output.weight`) is read
/// one row per token, and expert tensors (`*_exps`) only for the `used` of `total` experts
/// (`experts_used`).
fn decode_bytes_per_token(tensors: &[TensorInfo], experts_used: Option<(usize, usize)>) -> u64 {
    let has_output = tensors.iter().any(|t| t.name == "output.weight");
    tensors
        .iter()
        .map(|t| {
            if has_output && t.name == "token_embd.weight" {
                let rows = t.ne.get(1).copied().unwrap_or(1).max(1);
                t.n_bytes / rows
            } else if let (true, Some((used, total))) = (t.name.contains("_exps"), experts_used) {
                t.n_bytes * used as u64 / total.max(1) as u64
            } else {
                t.n_bytes
            }
        })
        .sum()
}

/// The line printed under the table with `--bandwidth`.
fn bandwidth_line(bw: &Bandwidth, threads: usize) -> String {
    match (bw.tg_weight_gbs, bw.fraction()) {
        (Some(weights), Some(fraction)) => format!(
            "decode: {weights:.1} GB/s of weights = {:.0}% of the {threads}-thread read probe \
             ({:.1} GB/s)",
            fraction * 100.0,
            bw.probe_gbs
        ),
        _ => format!("{threads}-thread read probe: {:.1} GB/s", bw.probe_gbs),
    }
}

/// Runs `run_once` on `session` once untimed, then `reps` times timed, printing progress on
/// stderr, and returns the speed of `n_tokens` per run. `run_once` returns the seconds one
/// run took.
fn measure<'m>(
    session: &mut Session<'m>,
    label: &str,
    n_tokens: usize,
    reps: usize,
    mut run_once: impl FnMut(&mut Session<'m>) -> Result<f64>,
) -> Result<Speed> {
    eprintln!("bench: {label}{n_tokens} warm-up");
    run_once(session)?;
    let mut samples = Vec::with_capacity(reps);
    for rep in 1..=reps {
        let secs = run_once(session)?;
        let tps = n_tokens as f64 / secs.max(1e-12);
        eprintln!("bench: {label}{n_tokens} run {rep}/{reps}: {secs:.3} s, {tps:.2} t/s");
        samples.push(tps);
    }
    Ok(Speed::of(&samples))
}

/// `n` pseudo-random token ids below `n_vocab`, the same for the same `seed` (splitmix64).
fn token_ids(n: usize, n_vocab: usize, seed: u64) -> Vec<u32> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            (z % n_vocab as u64) as u32
        })
        .collect()
}

/// A byte count as llama-bench shows model sizes (`93.80 MiB`, `1.20 GiB`).
fn human_bytes(bytes: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    let b = bytes as f64;
    if b >= 1024.0 * MIB {
        format!("{:.2} GiB", b / (1024.0 * MIB))
    } else {
        format!("{:.2} MiB", b / MIB)
    }
}

/// A parameter count as llama-bench shows it (`134.52 M`, `1.24 B`).
fn human_count(n: u64) -> String {
    let x = n as f64;
    if x >= 1e9 {
        format!("{:.2} B", x / 1e9)
    } else {
        format!("{:.2} M", x / 1e6)
    }
}

/// Prints the markdown table: one row per test.
fn print_table(
    model: &str,
    size: &str,
    params: &str,
    kernels: &str,
    threads: usize,
    rows: &[(String, Speed)],
) {
    let header = [
        "model", "size", "params", "kernels", "threads", "test", "t/s",
    ];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|(test, s)| {
            [
                model.to_string(),
                size.to_string(),
                params.to_string(),
                kernels.to_string(),
                threads.to_string(),
                test.clone(),
                format!("{:.2} ± {:.2}", s.mean, s.sd),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: Vec<String>| {
        let padded: Vec<String> = cols
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (c, w))| {
                // Text left-aligned, numbers (threads, t/s) right-aligned as in llama-bench.
                if i == 4 || i == 6 {
                    format!("{c:>w$}")
                } else {
                    format!("{c:<w$}")
                }
            })
            .collect();
        println!("| {} |", padded.join(" | "));
    };
    line(header.iter().map(|h| h.to_string()).collect());
    line(
        widths
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                if i == 4 || i == 6 {
                    format!("{}:", "-".repeat(w.max(2) - 1))
                } else {
                    "-".repeat(w)
                }
            })
            .collect(),
    );
    for row in cells {
        line(row.to_vec());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speed_of_one_sample_has_zero_deviation() {
        assert_eq!(
            Speed::of(&[42.0]),
            Speed {
                mean: 42.0,
                sd: 0.0
            }
        );
    }

    #[test]
    fn speed_deviation_is_the_sample_standard_deviation() {
        let s = Speed::of(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert_eq!(s.mean, 5.0);
        assert!((s.sd - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn token_ids_are_in_vocabulary_and_reproducible() {
        let a = token_ids(1000, 37, 7);
        assert!(a.iter().all(|&t| t < 37));
        assert_eq!(a, token_ids(1000, 37, 7));
        assert_ne!(a, token_ids(1000, 37, 8));
    }

    #[test]
    fn decode_reads_one_embedding_row_unless_it_is_the_output_and_only_the_used_experts() {
        let tensor = |name: &str, ne: &[u64], n_bytes: u64| TensorInfo {
            name: name.into(),
            ne: ne.to_vec(),
            type_id: 8,
            offset: 0,
            n_bytes,
        };
        let untied = [
            tensor("token_embd.weight", &[64, 1000], 68_000),
            tensor("output.weight", &[64, 1000], 68_000),
            tensor("blk.0.ffn_up_exps.weight", &[64, 32, 8], 8_000),
            tensor("blk.0.attn_q.weight", &[64, 64], 4_352),
        ];
        assert_eq!(
            decode_bytes_per_token(&untied, Some((2, 8))),
            68 + 68_000 + 2_000 + 4_352
        );
        assert_eq!(decode_bytes_per_token(&untied[..2], None), 68 + 68_000);
        // Tied: the embedding table is the output matrix, read whole.
        assert_eq!(decode_bytes_per_token(&untied[..1], None), 68_000);
    }

    #[test]
    fn bandwidth_line_gives_the_fraction_or_only_the_probe() {
        let bw = Bandwidth {
            probe_gbs: 32.9,
            tg_weight_gbs: Some(26.6),
        };
        assert_eq!(
            bandwidth_line(&bw, 2),
            "decode: 26.6 GB/s of weights = 81% of the 2-thread read probe (32.9 GB/s)"
        );
        let probe_only = Bandwidth {
            tg_weight_gbs: None,
            ..bw
        };
        assert_eq!(
            bandwidth_line(&probe_only, 2),
            "2-thread read probe: 32.9 GB/s"
        );
        let mut out = String::new();
        push_bandwidth_json(&mut out, &probe_only);
        assert_eq!(
            out,
            ", \"bandwidth_gbs\": 32.9, \"tg_weight_gbs\": null, \"tg_bandwidth_fraction\": null"
        );
    }

    #[test]
    fn sizes_are_shown_in_llama_bench_units() {
        assert_eq!(human_bytes(98_362_432), "93.81 MiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024 / 2), "1.50 GiB");
        assert_eq!(human_count(134_515_008), "134.52 M");
        assert_eq!(human_count(1_240_000_000), "1.24 B");
    }
}
