//! `ember verify`: every checksum, every tile decoded, and optionally a comparison with the
//! original checkpoint (bit-exact for `lossless`/`raw`, error bounds for the quantised schemes).

use std::path::PathBuf;

use anyhow::{bail, Result};
use ember_codec::{Container, SchemeKind};
use rayon::prelude::*;

use super::with_threads;
use crate::source::Source;

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

/// Runs `ember verify`.
pub fn run(a: Args) -> Result<()> {
    let c = Container::open(&a.file)?;
    with_threads(a.threads, || c.verify_checksums())??;
    let source = a.against.as_deref().map(Source::open).transpose()?;
    let mut problems = Vec::new();
    if let Some(src) = &source {
        for name in src.names() {
            if c.get(name).is_err() {
                problems.push(format!("tensor `{name}` of the original is missing from {}", a.file.display()));
            }
        }
    }
    for t in c.tensors() {
        let decoded = with_threads(a.threads, || c.decode(t))??;
        let Some(src) = &source else { continue };
        let Ok(orig) = src.tensor(&t.name) else {
            problems.push(format!("tensor `{}` is not in the original", t.name));
            continue;
        };
        if orig.dtype != t.dtype || orig.shape != t.shape {
            problems.push(format!(
                "tensor `{}`: {} {:?} in the container, {} {:?} in the original",
                t.name, t.dtype, t.shape, orig.dtype, orig.shape
            ));
            continue;
        }
        match t.scheme.kind() {
            SchemeKind::Lossless | SchemeKind::Raw => {
                if decoded.data != orig.data {
                    problems.push(format!("tensor `{}`: decoded bytes differ from the original", t.name));
                } else {
                    println!("{:<40} {:<8} bit-exact", t.name, t.scheme.kind().name());
                }
            }
            kind => {
                let got = decoded.to_f32().unwrap_or_default();
                let n = got.len();
                let want: Vec<f32> =
                    (0..n).into_par_iter().map(|i| orig.dtype.read_f32(orig.data, i).unwrap_or(f32::NAN)).collect();
                let amax = want.iter().fold(0f32, |m, x| m.max(x.abs()));
                let max_err = got.iter().zip(&want).fold(0f32, |m, (g, w)| m.max((g - w).abs()));
                // Half a quantisation step of the widest group, with room for f16 scale rounding.
                let bound = if kind == SchemeKind::Int8 { amax / 127.0 } else { amax / 7.0 };
                println!(
                    "{:<40} {:<8} max abs error {max_err:.3e}, relative {:.3e}",
                    t.name,
                    kind.name(),
                    max_err / amax.max(f32::MIN_POSITIVE)
                );
                if max_err.is_nan() || max_err > bound {
                    problems.push(format!("tensor `{}`: error {max_err:e} exceeds {bound:e}", t.name));
                }
            }
        }
    }
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("mismatch: {p}");
        }
        bail!("{}: {} problem(s) found", a.file.display(), problems.len());
    }
    eprintln!("{}: ok ({} tensors)", a.file.display(), c.tensors().len());
    Ok(())
}
