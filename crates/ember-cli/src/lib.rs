//! The `ember` command as a library, so examples and tools can run its commands in-process
//! (e.g. `llama_lowmem` compresses its default model on first use) without a second binary.
//!
//! ```no_run
//! ember_cli::run(["ember", "inspect", "model.ember"])?;
//! # Ok::<(), anyhow::Error>(())
//! ```

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub mod commands;
mod gguf_source;
pub mod hf_dir;
pub mod model_cache;
mod safetensors_out;
mod source;

use clap::{Parser, Subcommand};

/// Keep LLM weights compressed: entropy-coded tiles, decoded on the GPU when a layer needs them.
#[derive(Parser)]
#[command(name = "ember", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Compress a .safetensors file, a Hugging Face model directory or a .gguf file into an .ember container.
    Compress(commands::compress::Args),
    /// List the tensors of a container with their sizes and entropy bounds.
    Inspect(commands::inspect::Args),
    /// Check every checksum and decode every tensor; optionally compare with the original.
    Verify(commands::verify::Args),
    /// Write the container's tensors back as a .safetensors file.
    Decompress(commands::decompress::Args),
}

/// Runs one parsed command line.
pub fn execute(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Compress(a) => commands::compress::run(a),
        Command::Inspect(a) => commands::inspect::run(a),
        Command::Verify(a) => commands::verify::run(a),
        Command::Decompress(a) => commands::decompress::run(a),
    }
}

/// Parses `args` (the first is the program name) and runs the command; usage errors are
/// returned, not printed-and-exited.
pub fn run<I, T>(args: I) -> anyhow::Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    execute(Cli::try_parse_from(args)?)
}
