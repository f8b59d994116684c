//! `ember-serve`: see the crate docs and `ember-serve --help`.

/// Burn's CPU backend frees and reallocates large decoded weights every pass; jemalloc reuses
/// the pages where glibc maps fresh ones (see `llama_lowmem`).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let options = ember_serve::Options::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(ember_serve::serve(options))
}
