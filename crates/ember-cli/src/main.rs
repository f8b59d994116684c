//! `ember`: compress models into `.ember` containers, inspect, verify and decompress them.
//!
//! Exit codes: 0 success, 1 bad input or a failed verification (the message names the file and
//! tensor), 2 a usage error (from clap).

use std::process::ExitCode;

use clap::Parser;
use ember_cli::{execute, Cli};

fn main() -> ExitCode {
    match execute(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
