//! `ember compress`: checkpoint → `.ember`, tensor by tensor (memory stays bounded by the largest
//! tensor), written atomically.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::ValueEnum;
use ember_codec::{encode_quant_codes, encode_tensor, ContainerWriter, EncodeOptions, SchemeKind};
use indicatif::{ProgressBar, ProgressStyle};
use regex::Regex;

use super::{human_bytes, thread_pool};
use crate::gguf_source::{GgufCodes, GgufDtype};
use crate::source::Input;

/// The scheme asked for on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SchemeArg {
    /// Bit-exact.
    Lossless,
    /// Symmetric per-row int8.
    Int8,
    /// Per-block int4.
    Int4,
    /// Stored as is.
    Raw,
}

impl From<SchemeArg> for SchemeKind {
    fn from(s: SchemeArg) -> Self {
        match s {
            SchemeArg::Lossless => SchemeKind::Lossless,
            SchemeArg::Int8 => SchemeKind::Int8,
            SchemeArg::Int4 => SchemeKind::Int4,
            SchemeArg::Raw => SchemeKind::Raw,
        }
    }
}

/// `ember compress` arguments.
#[derive(clap::Args)]
pub struct Args {
    /// A .safetensors file, a Hugging Face model directory, or a .gguf file.
    input: PathBuf,
    /// The .ember file to write.
    #[arg(short, long)]
    output: PathBuf,
    /// How to code the selected tensors.
    #[arg(long, value_enum, default_value = "lossless")]
    scheme: SchemeArg,
    /// Target elements per tile.
    #[arg(long, default_value_t = ember_codec::tile::DEFAULT_TILE_ELEMS)]
    tile_elems: usize,
    /// Only tensors whose name matches this regex get the scheme (others are stored raw).
    #[arg(long)]
    include: Option<String>,
    /// Tensors whose name matches this regex are stored raw.
    #[arg(long)]
    exclude: Option<String>,
    /// Tensors with fewer elements are stored raw.
    #[arg(long, default_value_t = 4096)]
    min_elems: u64,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// rANS lanes per tile (a power of two; tensors with small tiles get fewer).
    #[arg(long, default_value_t = 64)]
    lanes: u32,
    /// int4 block length along the last dimension.
    #[arg(long, default_value_t = 32)]
    int4_block: u32,
    /// int4 with a per-block minimum (like GGUF Q4_1) instead of symmetric codes.
    #[arg(long)]
    int4_asymmetric: bool,
    /// The float type GGUF tensors are dequantized to before coding.
    #[arg(long, value_enum, default_value = "bf16")]
    gguf_dtype: GgufDtype,
    /// Which GGUF `Q4_0`/`Q4_1`/`Q8_0`/`Q5_0`/`Q4_K`/`Q6_K` tensors keep their own codes and
    /// scales (stored `int4` or block-scaled `int8`, decoding to exactly the GGUF's values) instead of being dequantized
    /// to `--gguf-dtype`.
    #[arg(long, value_enum, default_value = "auto")]
    gguf_codes: GgufCodes,
    /// Write a file that builds reading format versions up to 4 open: a plain JSON index
    /// instead of a zstd-compressed one, and 16-bit lane tables instead of 8-bit ones (a little
    /// larger: about 4× the index bytes and 60 bytes more per 64-lane tile).
    #[arg(long)]
    compat_v4: bool,
}

/// Which scheme a tensor gets: the requested one if it is selected and a float; quantised
/// schemes only for matrices (vectors such as norms and biases fall back to `lossless`, since a
/// per-row scale of a 1-D tensor would be one scale for everything); else `raw`.
fn scheme_for(
    name: &str,
    dtype: ember_codec::Dtype,
    shape: &[u64],
    want: SchemeKind,
    a: &Args,
    include: &Option<Regex>,
    exclude: &Option<Regex>,
) -> SchemeKind {
    let n: u64 = shape.iter().product();
    let selected = include.as_ref().is_none_or(|r| r.is_match(name))
        && !exclude.as_ref().is_some_and(|r| r.is_match(name))
        && n >= a.min_elems;
    if !selected || dtype.float_layout().is_none() {
        return SchemeKind::Raw;
    }
    match want {
        SchemeKind::Int8 | SchemeKind::Int4 if shape.len() < 2 => SchemeKind::Lossless,
        other => other,
    }
}

/// Runs `ember compress`.
pub fn run(a: Args) -> Result<()> {
    let regex = |r: &Option<String>, flag: &str| -> Result<Option<Regex>> {
        r.as_deref().map(|s| Regex::new(s).with_context(|| format!("{flag}: invalid regex `{s}`"))).transpose()
    };
    let include = regex(&a.include, "--include")?;
    let exclude = regex(&a.exclude, "--exclude")?;
    let want = SchemeKind::from(a.scheme);
    let opts = EncodeOptions {
        tile_elems: a.tile_elems,
        lanes: a.lanes,
        int4_block: a.int4_block,
        int4_asymmetric: a.int4_asymmetric,
        counts8: !a.compat_v4,
        ..EncodeOptions::default()
    };
    // Everything that can be checked up front is, before a temporary file exists.
    let pool = thread_pool(a.threads)?;
    let source = Input::open(&a.input, a.gguf_dtype)?;
    let total = source.total_bytes();
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let start = Instant::now();
    let mut writer = ContainerWriter::create(&a.output)?;
    if a.compat_v4 {
        writer.plain_header();
    }
    writer.set_metadata("producer", format!("ember {}", env!("CARGO_PKG_VERSION")));
    writer.set_metadata("source", a.input.display().to_string());
    for (key, value) in source.container_metadata()? {
        writer.set_metadata(key, value);
    }
    let mut per_scheme: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut kept = 0usize;
    // One tensor at a time (memory bounded by the largest), its tiles coded on the pool.
    pool.install(|| -> Result<()> {
        // GGUF block-quantized matrices selected for a scheme that keeps codes come as codes.
        // With `--gguf-codes native`, GGUF float tensors (any shape) keep their own precision.
        let keep_codes = |name: &str, shape: &[u64], source: ember_gguf::GgmlType| {
            let kind = scheme_for(name, a.gguf_dtype.dtype(), shape, want, &a, &include, &exclude);
            let float =
                matches!(source, ember_gguf::GgmlType::F32 | ember_gguf::GgmlType::F16 | ember_gguf::GgmlType::BF16);
            (shape.len() >= 2 || float) && a.gguf_codes.keeps_for(kind, source)
        };
        source.for_each_tensor(keep_codes, |t| {
            bar.set_message(t.name.to_string());
            let n: u64 = t.shape.iter().product();
            let (encoded, source_bytes) = match t.codes {
                Some(codes) => {
                    kept += 1;
                    let encoded = encode_quant_codes(t.name, t.shape, codes, &opts);
                    (encoded, n * a.gguf_dtype.dtype().size() as u64)
                }
                None => {
                    let kind = match scheme_for(t.name, t.dtype, t.shape, want, &a, &include, &exclude) {
                        SchemeKind::Int8 | SchemeKind::Int4 if t.exact => SchemeKind::Lossless,
                        kind => kind,
                    };
                    // A tiny tensor that lossless coding would grow comes back `raw`
                    // (`EncodeOptions::raw_if_smaller`).
                    (encode_tensor(t.name, t.dtype, t.shape, t.data, kind, &opts), t.data.len() as u64)
                }
            };
            let encoded = encoded.with_context(|| format!("{}", a.input.display()))?;
            *per_scheme.entry(encoded.scheme.kind().name()).or_default() += 1;
            writer.add(encoded)?;
            bar.inc(source_bytes);
            Ok(())
        })
    })?;
    let file_bytes = writer.finish()?;
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    let mut schemes: Vec<String> = per_scheme.iter().map(|(k, n)| format!("{n} {k}")).collect();
    if kept > 0 {
        schemes.push(format!("{kept} of them kept as their GGUF codes"));
    }
    eprintln!(
        "{} tensors ({}): {} -> {} ({:.2}% of the original) in {secs:.2} s, {:.1} MB/s",
        source.len(),
        schemes.join(", "),
        human_bytes(total),
        human_bytes(file_bytes),
        100.0 * file_bytes as f64 / total.max(1) as f64,
        total as f64 / 1e6 / secs.max(1e-9),
    );
    Ok(())
}
