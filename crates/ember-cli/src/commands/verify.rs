//! `ember verify`: every checksum, every tile decoded, and optionally a comparison with the
//! original checkpoint (bit-exact for `lossless`/`raw`, error bounds for the quantised schemes).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Result};
use ember_codec::{Container, DecodedTensor, SchemeKind, TensorEntry};
use rayon::prelude::*;
use rayon::ThreadPool;

use super::thread_pool;
use crate::source::{Source, SourceTensor};

/// `ember verify` arguments.
#[derive(clap::Args)]
pub struct Args {
    /// The .ember file.
    file: PathBuf,
    /// The original .safetensors file or model directory to compare with.
    #[arg(long)]
    against: Option<PathBuf>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

/// How far a quantised tensor's decoded values are from the original's.
#[derive(Clone, Copy, Default)]
struct ErrorStats {
    /// Largest `|decoded − original|` over finite pairs.
    max_abs: f32,
    /// Largest `|original|`.
    amax: f32,
    /// First element where either side is NaN or infinite (quantised schemes never store one).
    non_finite: Option<usize>,
}

impl ErrorStats {
    fn merge(self, o: Self) -> Self {
        let non_finite = match (self.non_finite, o.non_finite) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Self { max_abs: self.max_abs.max(o.max_abs), amax: self.amax.max(o.amax), non_finite }
    }
}

fn error_stats(got: &[f32], orig: &SourceTensor) -> ErrorStats {
    got.par_iter()
        .enumerate()
        .with_min_len(1 << 14)
        .fold(ErrorStats::default, |mut s, (i, &g)| {
            let w = orig.dtype.read_f32(orig.data, i).unwrap_or(f32::NAN);
            if g.is_finite() && w.is_finite() {
                s.max_abs = s.max_abs.max((g - w).abs());
                s.amax = s.amax.max(w.abs());
            } else if s.non_finite.is_none() {
                s.non_finite = Some(i);
            }
            s
        })
        .reduce(ErrorStats::default, ErrorStats::merge)
}

/// Compares one decoded tensor with the original: `Ok(summary)` or `Err(what is wrong)`.
fn compare(t: &TensorEntry, decoded: &DecodedTensor, orig: &SourceTensor, pool: &ThreadPool) -> Result<String, String> {
    if orig.dtype != t.dtype || orig.shape != t.shape.as_slice() {
        return Err(format!(
            "{} {:?} in the container, {} {:?} in the original",
            t.dtype, t.shape, orig.dtype, orig.shape
        ));
    }
    let kind = t.scheme.kind();
    match kind {
        SchemeKind::Lossless | SchemeKind::Raw => match decoded.data.iter().zip(orig.data).position(|(a, b)| a != b) {
            None if decoded.data.len() == orig.data.len() => Ok("bit-exact".into()),
            None => Err(format!("decoded {} bytes, the original has {}", decoded.data.len(), orig.data.len())),
            Some(byte) => Err(format!("element {} differs from the original", byte / t.dtype.size())),
        },
        SchemeKind::Int8 | SchemeKind::Int4 => {
            let got = decoded.to_f32().ok_or_else(|| format!("decoded {} is not a float type", decoded.dtype))?;
            if got.len() as u64 != t.elements() {
                return Err(format!("decoded {} values, the shape has {}", got.len(), t.elements()));
            }
            let s = pool.install(|| error_stats(&got, orig));
            if let Some(i) = s.non_finite {
                return Err(format!("element {i} is not finite (decoded or original)"));
            }
            // Loose bounds: half a step is the theory (amax/254 for int8), the rest is room for
            // f16 scale rounding and for the min of asymmetric int4.
            let bound = if kind == SchemeKind::Int8 { s.amax / 127.0 } else { s.amax / 7.0 };
            let relative = if s.amax > 0.0 { s.max_abs / s.amax } else { 0.0 };
            let summary = format!("max abs error {:.3e}, relative {relative:.3e}", s.max_abs);
            if s.max_abs > bound {
                return Err(format!("{summary}: exceeds the {kind} bound {bound:.3e}"));
            }
            Ok(summary)
        }
    }
}

/// Runs `ember verify`.
pub fn run(a: Args) -> Result<()> {
    let pool = thread_pool(a.threads)?;
    let c = Container::open(&a.file)?;
    // Checksums first: corruption is reported as such (tensor, part, offset), before decoding.
    pool.install(|| c.verify_checksums())?;
    let source = a.against.as_deref().map(Source::open).transpose()?;
    let mut problems = Vec::new();
    if let Some(src) = &source {
        for t in src.tensors() {
            if c.get(t.name).is_err() {
                problems.push(format!("tensor `{}` of the original is missing from {}", t.name, a.file.display()));
            }
        }
    }
    let width = c.tensors().iter().map(|t| t.name.len()).max().unwrap_or(0).max(4);
    let mut out = std::io::stdout().lock();
    for t in c.tensors() {
        // Decoding checks every rANS lane ends where it should; an error names the tile.
        let decoded = pool.install(|| c.decode(t))?;
        let Some(src) = &source else { continue };
        let kind = t.scheme.kind().name();
        let Some(orig) = src.get(&t.name) else {
            problems.push(format!("tensor `{}` is not in the original", t.name));
            writeln!(out, "{:<width$}  {kind:<8}  MISSING from the original", t.name)?;
            continue;
        };
        match compare(t, &decoded, &orig, &pool) {
            Ok(summary) => writeln!(out, "{:<width$}  {kind:<8}  {summary}", t.name)?,
            Err(problem) => {
                writeln!(out, "{:<width$}  {kind:<8}  MISMATCH: {problem}", t.name)?;
                problems.push(format!("tensor `{}`: {problem}", t.name));
            }
        }
    }
    out.flush()?;
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("mismatch: {p}");
        }
        bail!("{}: {} problem(s) found", a.file.display(), problems.len());
    }
    match &a.against {
        Some(orig) => eprintln!("{}: ok ({} tensors, matches {})", a.file.display(), c.tensors().len(), orig.display()),
        None => eprintln!("{}: ok ({} tensors, every checksum and tile)", a.file.display(), c.tensors().len()),
    }
    Ok(())
}
