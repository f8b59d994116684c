//! One module per subcommand.

pub mod compress;
pub mod decompress;
pub mod inspect;
pub mod verify;

/// A rayon pool of `threads` threads (all cores when `None`). Each command builds one and runs
/// its work inside `pool.install`, so the codec's parallel loops honour `--threads`.
pub fn thread_pool(threads: Option<usize>) -> anyhow::Result<rayon::ThreadPool> {
    let mut builder = rayon::ThreadPoolBuilder::new();
    if let Some(n) = threads {
        anyhow::ensure!(n > 0, "--threads must be at least 1");
        builder = builder.num_threads(n);
    }
    Ok(builder.build()?)
}

/// `1234567` → `1.23 MB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}
