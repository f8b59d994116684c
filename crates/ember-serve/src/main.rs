//! `ember-serve`: see the crate docs and `ember-serve --help`.

/// Burn's CPU backend frees and reallocates large decoded weights every pass; jemalloc reuses
/// the pages where glibc maps fresh ones (see `llama_lowmem`).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read before `main`: pages freed for a second go back to the system (a
/// background thread purges them even while the process waits for work) instead of after ten
/// seconds of allocator activity, so an idle model holds its compressed bytes and not the
/// temporaries of its attach or last pass (Gemma 3 270M kept 260 MiB of them), while a weight
/// freed and allocated again within a pass still reuses its pages.
#[cfg(not(target_env = "msvc"))]
#[export_name = "_rjem_malloc_conf"]
static MALLOC_CONF: &[u8; 60] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let options = ember_serve::Options::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(ember_serve::serve(options))
}
