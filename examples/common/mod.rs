//! What the examples share: the default model (fetched once, compressed once, cached) and the
//! choice of device.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::tensor::Device;

/// The container for `gguf` coded with `scheme`, compressed on first use into the cache
/// (`$EMBER_CACHE`, else `~/.cache/ember`) and reused afterwards.
pub fn compressed(gguf: &Path, scheme: &str) -> Result<PathBuf> {
    let len = std::fs::metadata(gguf).with_context(|| format!("{}", gguf.display()))?.len();
    let stem = gguf.file_stem().and_then(|s| s.to_str()).unwrap_or("model");
    let dir = ember_gguf::fetch::cache_dir().join("containers");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // The source's size is part of the name, so a different file never reuses a stale container.
    let out = dir.join(format!("{stem}-{len}.{scheme}.ember"));
    if !out.exists() {
        eprintln!("compressing {} with `{scheme}` (once; cached at {})", gguf.display(), out.display());
        let args: Vec<std::ffi::OsString> = vec![
            "ember".into(),
            "compress".into(),
            gguf.into(),
            "-o".into(),
            out.clone().into(),
            "--scheme".into(),
            scheme.into(),
        ];
        ember_cli::run(args).with_context(|| format!("compressing {}", gguf.display()))?;
    }
    Ok(out)
}

/// The model a path names: a `.ember` container as is, a `.gguf` compressed with `scheme`
/// (cached); no path means the default model (SmolLM2-135M-Instruct, fetched once).
pub fn container_for(model: Option<&Path>, scheme: &str) -> Result<PathBuf> {
    match model {
        Some(p) if p.extension().is_some_and(|e| e == "ember") => Ok(p.to_path_buf()),
        Some(p) if p.extension().is_some_and(|e| e == "gguf") => compressed(p, scheme),
        Some(p) => anyhow::bail!(
            "{}: expected a .gguf or .ember file (compress a Hugging Face directory with `ember compress DIR -o model.ember`)",
            p.display()
        ),
        None => {
            let gguf = ember_gguf::fetch::default_model_gguf().context("fetching the default model")?;
            compressed(&gguf, scheme)
        }
    }
}

/// `auto`: a hardware GPU through Vulkan if there is one, else the CPU path (a software Vulkan
/// driver such as lavapipe is slower than Burn's CPU backend). `vulkan` insists on Vulkan; `cpu`
/// takes the CPU path. Returns the device and a description.
pub fn pick_device(choice: &str) -> Result<(Device, String)> {
    match choice {
        "cpu" => Ok((Device::flex(), "cpu (burn flex)".into())),
        "vulkan" => {
            let v = ember_kernels::device::open_vulkan()?;
            Ok((v.device, format!("vulkan: {}", v.adapter)))
        }
        "auto" => match ember_kernels::device::open_vulkan() {
            Ok(v) if !v.software => Ok((v.device, format!("vulkan: {}", v.adapter))),
            Ok(v) => Ok((Device::flex(), format!("cpu (burn flex; skipped software Vulkan {})", v.adapter))),
            Err(e) => Ok((Device::flex(), format!("cpu (burn flex; no GPU: {e})"))),
        },
        other => anyhow::bail!("unknown device `{other}` (expected auto, vulkan or cpu)"),
    }
}

/// Peak and current resident set of this process, in bytes (the CPU path's "device memory").
pub fn process_memory() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}
