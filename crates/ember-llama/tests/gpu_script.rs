//! What a GPU run will execute, run here on Vulkan (lavapipe in CI) so it cannot rot before a
//! GPU is at hand: `benches/gpu/on-device.sh --rehearse` with this build's binaries (same steps
//! and flags, tiny shapes), and `llama_lowmem --device vulkan` on the real SmolLM2, dense and
//! compressed, giving the CPU path's tokens.
//!
//! The binaries are this build's own (`cargo test --workspace` builds the workspace's binaries
//! and examples next to the test executables).

use std::path::{Path, PathBuf};
use std::process::Command;

/// `target/<profile>`, where cargo put this test's binaries and examples.
fn build_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    // target/<profile>/deps/<test>
    exe.parent().and_then(Path::parent).expect("target/<profile>/deps").to_path_buf()
}

fn built(rel: &str) -> PathBuf {
    let p = build_dir().join(rel);
    assert!(p.exists(), "{} is missing: run the tests with `cargo test --workspace`", p.display());
    p
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_gpu_script_rehearses_on_vulkan() {
    let out = tempfile::tempdir().unwrap();
    for rel in ["decode-bench", "fused-bench", "examples/compare_policies"] {
        built(rel);
    }
    let run = Command::new("bash")
        .arg(repo_root().join("benches/gpu/on-device.sh"))
        .arg("--rehearse")
        .current_dir(repo_root())
        .env("BIN", build_dir())
        .env("XDG_RUNTIME_DIR", std::env::var_os("XDG_RUNTIME_DIR").unwrap_or_else(|| std::env::temp_dir().into()))
        .env("OUT", out.path())
        .env("XDG_CACHE_HOME", out.path().join("cache"))
        .output()
        .unwrap();
    let log = format!("{}\n{}", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "on-device.sh --rehearse failed:\n{log}");
    assert!(!log.contains("panicked"), "{log}");

    let decode = json(&out.path().join("rehearsal-decode-bench.json"));
    assert_eq!(decode["paths"][0]["path"], "gpu", "{decode}");
    let rows = decode["paths"][0]["results"].as_array().unwrap_or_else(|| panic!("no decode results in {decode}"));
    assert!(!rows.is_empty(), "{decode}");
    for r in rows {
        assert!(r["check_vs_decode"].as_f64().is_some_and(|x| x > 0.0), "the tile check is timed: {r}");
    }
    for shape in ["256x128", "128x256"] {
        json(&out.path().join(format!("rehearsal-fused-bench-{shape}.json")));
    }
    for tag in ["rehearsal-quick"] {
        let report = json(&out.path().join(format!("{tag}-synthetic-tiny.json")));
        let rows = report["rows"].as_array().unwrap_or_else(|| panic!("no rows in {tag}: {report}"));
        assert!(rows.len() > 3, "{tag}: {report}");
        for r in rows {
            assert!(r["error"].is_null(), "{tag}: a configuration failed: {r}");
            assert_eq!(r["memory_source"], "allocator", "{tag}: every row reads the device meter: {r}");
        }
    }
}

fn llama_lowmem(device: &str, policy: &str) -> Vec<u64> {
    let run = Command::new(built("examples/llama_lowmem"))
        .args(["--device", device, "--policy", policy, "--greedy", "--max-tokens", "3", "--json"])
        .current_dir(repo_root())
        // Headless, as in CI: without a Wayland runtime directory Mesa's device-select layer
        // would make libwayland print `error: XDG_RUNTIME_DIR …` lines on a good run.
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("NODEVICE_SELECT")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "llama_lowmem --device {device} --policy {policy}:\n{stderr}");
    assert!(
        !stderr.lines().any(|l| l.starts_with("error")),
        "nothing is reported as an error on a good run:\n{stderr}"
    );
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).expect("one JSON object");
    let want_source = if device == "cpu" { "process_resident_set" } else { "device_allocator" };
    assert_eq!(report["memory_source"], want_source, "{report}");
    report["tokens"].as_array().expect("tokens").iter().map(|t| t.as_u64().expect("a token id")).collect()
}

#[test]
fn smollm2_on_vulkan_generates_the_cpu_tokens() {
    let cpu = llama_lowmem("cpu", "dense");
    assert_eq!(cpu.len(), 3);
    assert_eq!(llama_lowmem("vulkan", "dense"), cpu, "dense on Vulkan");
    assert_eq!(llama_lowmem("vulkan", "per-forward"), cpu, "lossless per-forward on Vulkan");
}
