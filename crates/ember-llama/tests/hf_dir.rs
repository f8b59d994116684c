//! A Hugging Face model directory end to end, as a user holds one: the SmolLM2 GGUF rebuilt as a
//! directory (BF16 safetensors with HF names and un-permuted Q/K, `config.json`, `tokenizer.json`,
//! `tokenizer_config.json`, `generation_config.json`) by `ember decompress --model-dir`, then run
//! by `llama_lowmem --model DIR`, through the hub cache layout (`models--ORG--NAME`, symlinked
//! blobs), and from the `.ember` made of it once the directory is gone.
//!
//! The binaries are this build's own (`cargo test --workspace` builds them next to the tests).

use std::path::{Path, PathBuf};
use std::process::Command;

/// " Berlin", the greedy continuation of the default prompt (see `smollm.rs`).
const BERLIN: u64 = 11452;

fn built(rel: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps");
    let p = dir.join(rel);
    assert!(p.exists(), "{} is missing: run the tests with `cargo test --workspace`", p.display());
    p
}

fn ember(args: &[&std::ffi::OsStr]) {
    let run = Command::new(built("ember")).args(args).output().unwrap();
    assert!(run.status.success(), "ember {args:?}:\n{}", String::from_utf8_lossy(&run.stderr));
}

/// `llama_lowmem --model model` on the CPU path, greedy: the report and what it printed on stderr.
fn llama_lowmem(model: &Path, cache: &Path, extra: &[&str]) -> (serde_json::Value, String) {
    let run = Command::new(built("examples/llama_lowmem"))
        .arg("--model")
        .arg(model)
        .args(["--device", "cpu", "--greedy", "--max-tokens", "2", "--json"])
        .args(extra)
        .env("EMBER_CACHE", cache)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(run.status.success(), "llama_lowmem --model {} {extra:?}:\n{stderr}", model.display());
    assert!(!stderr.lines().any(|l| l.starts_with("error")), "nothing is reported as an error:\n{stderr}");
    (serde_json::from_slice(&run.stdout).expect("one JSON object"), stderr)
}

fn first_token(report: &serde_json::Value) -> u64 {
    report["tokens"][0].as_u64().unwrap_or_else(|| panic!("no tokens in {report}"))
}

/// Moves `dir`'s files into a hub cache entry (`blobs/` + symlinks in `snapshots/REV/`).
fn as_hub_cache(dir: &Path, hub: &Path) -> PathBuf {
    let repo = hub.join("models--HuggingFaceTB--SmolLM2-135M-Instruct");
    let snapshot = repo.join("snapshots").join("0123abcd");
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123abcd").unwrap();
    for (i, entry) in std::fs::read_dir(dir).unwrap().enumerate() {
        let path = entry.unwrap().path();
        let blob = repo.join("blobs").join(format!("blob{i:04}"));
        std::fs::rename(&path, &blob).unwrap();
        std::os::unix::fs::symlink(
            Path::new("../../blobs").join(blob.file_name().unwrap()),
            snapshot.join(path.file_name().unwrap()),
        )
        .unwrap();
    }
    repo
}

#[test]
fn a_model_directory_runs_directly_through_the_hub_layout_and_as_its_ember_file() {
    let gguf = ember_gguf::fetch::default_model_gguf().expect("the SmolLM2 GGUF (cached or downloadable)");
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let raw = tmp.path().join("raw.ember");
    let dir = tmp.path().join("SmolLM2-135M-Instruct");
    ember(&[
        "compress".as_ref(),
        gguf.as_os_str(),
        "-o".as_ref(),
        raw.as_os_str(),
        "--scheme".as_ref(),
        "raw".as_ref(),
    ]);
    ember(&["decompress".as_ref(), raw.as_os_str(), "-o".as_ref(), dir.as_os_str(), "--model-dir".as_ref()]);
    std::fs::remove_file(&raw).unwrap();
    for file in
        ["config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json", "model.safetensors"]
    {
        assert!(dir.join(file).is_file(), "{file} is written");
    }
    let header = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&header).unwrap();
    let q = st.tensor("model.layers.0.self_attn.q_proj.weight").unwrap();
    assert_eq!((q.dtype(), q.shape()), (safetensors::Dtype::BF16, &[576usize, 576][..]));
    drop(header);

    // The directory as it is: compressed on first use, cached, then reused.
    let (report, stderr) = llama_lowmem(&dir, &cache, &[]);
    assert_eq!(first_token(&report), BERLIN, "{report}");
    assert!(stderr.contains("compressing"), "the first run compresses:\n{stderr}");
    let (again, stderr) = llama_lowmem(&dir, &cache, &["--policy", "dense"]);
    assert_eq!(first_token(&again), BERLIN, "{again}");
    assert!(!stderr.contains("compressing"), "the second run reuses the cached container:\n{stderr}");

    // The same files in the hub cache layout: `refs/main` → snapshot → symlinked blobs.
    let container = tmp.path().join("smollm2.ember");
    let hub = as_hub_cache(&dir, &tmp.path().join("hub"));
    let (report, _) = llama_lowmem(&hub, &cache, &["--scheme", "int8"]);
    assert_eq!(first_token(&report), BERLIN, "{report}");
    ember(&["compress".as_ref(), hub.as_os_str(), "-o".as_ref(), container.as_os_str()]);

    // The .ember file alone: config, tokenizer, chat template and stop ids travel inside it.
    std::fs::remove_dir_all(tmp.path().join("hub")).unwrap();
    std::fs::remove_dir_all(&cache).unwrap();
    let (report, _) = llama_lowmem(&container, &cache, &[]);
    assert_eq!(first_token(&report), BERLIN, "{report}");
    let (chat, _) = llama_lowmem(&container, &cache, &["--chat", "--prompt", "Hi"]);
    assert!(!chat["tokens"].as_array().unwrap().is_empty(), "{chat}");
}

#[test]
fn a_directory_missing_its_tokenizer_is_named_in_the_error() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("config.json"), "{}").unwrap();
    let run = Command::new(built("examples/llama_lowmem"))
        .arg("--model")
        .arg(tmp.path())
        .args(["--device", "cpu"])
        .env("EMBER_CACHE", tmp.path().join("cache"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(stderr.contains("no tokenizer.json in this model directory"), "{stderr}");
    assert!(stderr.contains(&tmp.path().display().to_string()), "{stderr}");
}
