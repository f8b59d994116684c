//! `ember`: compress models into `.ember` containers, inspect, verify and decompress them.
//!
//! Exit codes: 0 success, 1 bad input or a failed verification (the message names the file and
//! tensor), 2 a usage error (from clap).

mod commands;
mod safetensors_out;
mod source;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Keep LLM weights compressed: entropy-coded tiles, decoded on the GPU when a layer needs them.
#[derive(Parser)]
#[command(name = "ember", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compress a .safetensors file or a Hugging Face model directory into an .ember container.
    Compress(commands::compress::Args),
    /// List the tensors of a container with their sizes and entropy bounds.
    Inspect(commands::inspect::Args),
    /// Check every checksum and decode every tensor; optionally compare with the original.
    Verify(commands::verify::Args),
    /// Write the container's tensors back as a .safetensors file.
    Decompress(commands::decompress::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Compress(a) => commands::compress::run(a),
        Command::Inspect(a) => commands::inspect::run(a),
        Command::Verify(a) => commands::verify::run(a),
        Command::Decompress(a) => commands::decompress::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
