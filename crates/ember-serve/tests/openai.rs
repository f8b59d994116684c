//! `ember-serve` on the CPU path with two real models — SmolLM2-135M and Gemma 3 270M, both
//! `lossless`, one shared budget — driven by the official `openai` Python client
//! (`tests/openai_client.py`, in a venv this test makes under the ember cache):
//!
//! - listing models; greedy chat, non-streaming and streaming, equal to `llama_lowmem --greedy`
//!   for the same prompt and model, with the same token counts in `usage`;
//! - 32 concurrent requests over both models, each equal to its answer alone, the shared cache
//!   within its budget;
//! - every bad input with its status and an OpenAI error body, and a flood of 200 malformed
//!   requests after which the server answers normally;
//! - a streamed request dropped mid-way frees its slot;
//! - SIGTERM lets a running request finish and exits 0.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::Value;

const KEY: &str = "test-key-6d1f";
const OPENAI: &str = "openai==3.57.0";

fn built(rel: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let p = exe.parent().and_then(Path::parent).expect("target/<profile>/deps").join(rel);
    assert!(p.exists(), "{} is missing: run the tests with `cargo test --workspace`", p.display());
    p
}

/// A Python that imports the `openai` client: a venv made once under the ember cache, or where
/// `python3 -m venv` is unavailable (Debian without `python3-venv`), the package installed into
/// a directory put on `PYTHONPATH`. Either is built in a temporary directory and renamed into
/// place, so a half-made one is never used.
fn python() -> Command {
    let cache = ember_gguf::fetch::cache_dir();
    let venv = cache.join(format!("venv-{}", OPENAI.replace("==", "-")));
    let target = cache.join(format!("pylib-{}", OPENAI.replace("==", "-")));
    if venv.join("bin/python").exists() {
        return Command::new(venv.join("bin/python"));
    }
    let with_path = |dir: &Path| {
        let mut c = Command::new("python3");
        c.env("PYTHONPATH", dir);
        c
    };
    if target.exists() {
        return with_path(&target);
    }
    std::fs::create_dir_all(&cache).unwrap();
    let tmp = tempfile::Builder::new().prefix(".python-openai-").tempdir_in(&cache).unwrap();
    let ok = |cmd: &mut Command| cmd.output().map(|o| o.status.success()).unwrap_or(false);
    let (made, dest) = if ok(Command::new("python3").args(["-m", "venv"]).arg(tmp.path())) {
        (ok(Command::new(tmp.path().join("bin/python")).args(["-m", "pip", "install", "--quiet", OPENAI])), &venv)
    } else {
        (
            ok(Command::new("python3")
                .args(["-m", "pip", "install", "--quiet", "--target"])
                .arg(tmp.path())
                .arg(OPENAI)),
            &target,
        )
    };
    assert!(made, "cannot install {OPENAI} with pip (network access to PyPI is needed once)");
    let dir = tmp.keep();
    if std::fs::rename(&dir, dest).is_err() {
        // Another run made it meanwhile.
        let _ = std::fs::remove_dir_all(&dir);
    }
    python()
}

struct Server {
    child: Child,
    base: String,
    log: Arc<Mutex<String>>,
}

impl Server {
    fn start(models: &[(&str, &Path)]) -> Server {
        let mut cmd = Command::new(built("ember-serve"));
        cmd.args(["--device", "cpu", "--port", "0", "--api-key", KEY, "--max-tokens", "512", "--ctx", "2048"]);
        cmd.args(["--max-body", "2MiB", "--shutdown-grace", "60"]);
        for (name, path) in models {
            cmd.arg("--model").arg(format!("{name}={}", path.display()));
        }
        let mut child = cmd.stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
                }
                let mut l = log2.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let base = rx
            .recv_timeout(std::time::Duration::from_secs(900))
            .unwrap_or_else(|_| panic!("ember-serve did not start:\n{}", log.lock().unwrap()));
        Server { child, base, log }
    }

    fn client(&self, scenario: &str, models: &[&str]) -> Value {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openai_client.py");
        let out = python().arg(script).args([&self.base, KEY, scenario]).args(models).output().unwrap();
        assert!(
            out.status.success(),
            "openai_client.py {scenario}:\n{}\nserver:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log.lock().unwrap()
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{scenario}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
    }

    fn addr(&self) -> String {
        self.base.trim_start_matches("http://").to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `llama_lowmem --greedy --chat` on the CPU path: its text, tokens and prompt length.
fn llama_lowmem(model: &Path, prompt: &str, max_tokens: usize) -> Value {
    let out = Command::new(built("examples/llama_lowmem"))
        .arg("--model")
        .arg(model)
        .args(["--device", "cpu", "--greedy", "--chat", "--prompt", prompt, "--json"])
        .args(["--max-tokens", &max_tokens.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "llama_lowmem:\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// One HTTP/1.1 request on a fresh connection; the status and body.
fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

fn error_of(case: &Value) -> (&Value, &Value) {
    (&case["status"], &case["body"]["error"]["message"])
}

#[test]
fn openai_clients_are_served_two_models_on_one_budget() {
    let smollm = ember_gguf::fetch::default_model_gguf().expect("the SmolLM2 GGUF");
    let gemma = ember_gguf::fetch::packaged_gguf(&ember_gguf::fetch::GEMMA3_270M).expect("the Gemma 3 270M GGUF");
    let server = Server::start(&[("smollm2", &smollm), ("gemma3", &gemma)]);

    // Listing, greedy chat (whole and streamed), completions, stop strings, seeds.
    let basic = server.client("basic", &["smollm2"]);
    assert_eq!(basic["models"], serde_json::json!(["smollm2", "gemma3"]));
    let reference = llama_lowmem(&smollm, "What is the capital of France?", 12);
    let want_text = reference["text"].as_str().unwrap();
    assert_eq!(basic["chat"], want_text, "chat = llama_lowmem --greedy --chat");
    assert_eq!(basic["stream"], want_text, "streamed chat = llama_lowmem --greedy --chat");
    let tokens = reference["tokens"].as_array().unwrap().len() as u64;
    let prompt_tokens = reference["prompt_tokens"].as_u64().unwrap();
    for usage in [&basic["chat_usage"], &basic["stream_usage"]] {
        assert_eq!(usage["prompt_tokens"].as_u64(), Some(prompt_tokens), "{basic}");
        assert_eq!(usage["completion_tokens"].as_u64(), Some(tokens), "{basic}");
        assert_eq!(usage["total_tokens"].as_u64(), Some(prompt_tokens + tokens), "{basic}");
    }
    assert_eq!(basic["completion"], " Berlin. The capital", "{basic}");
    assert_eq!(
        (&basic["stopped"], &basic["stopped_finish"]),
        (&Value::from(" Berlin"), &Value::from("stop")),
        "{basic}"
    );
    assert_eq!(basic["seeded"][0], basic["seeded"][1], "the same seed samples the same text");

    // 32 concurrent requests over both models.
    let c = server.client("concurrent", &["smollm2", "gemma3"]);
    assert_eq!((c["requests"].as_u64(), c["answers"].as_u64()), (Some(32), Some(32)));
    assert_eq!(c["mismatches"], serde_json::json!([]), "every answer equals the request alone: {c}");
    let (peak, budget) = (c["cache_peak_bytes"].as_f64().unwrap(), c["cache_budget_bytes"].as_f64().unwrap());
    assert!(peak <= budget, "the shared cache stays within its budget: {c}");
    eprintln!("32 concurrent requests over two models in {:.1} s", c["seconds"].as_f64().unwrap());

    // Bad input.
    let bad = server.client("bad_input", &["smollm2"]);
    for (case, status, needle) in [
        ("malformed_json", 400, "Invalid request body"),
        ("wrong_type", 400, "invalid type"),
        ("missing_field", 400, "missing field"),
        ("unknown_model", 404, "no-such-model"),
        ("max_tokens_over_cap", 400, "limit of 512"),
        ("prompt_over_context", 400, "maximum context length is 2048"),
        ("body_over_cap", 413, "length limit"),
        ("no_key", 401, "API key"),
        ("wrong_key", 401, "API key"),
        ("models_without_key", 401, "API key"),
    ] {
        let (got, message) = error_of(&bad[case]);
        assert_eq!(got.as_u64(), Some(status), "{case}: {}", bad[case]);
        assert!(message.as_str().is_some_and(|m| m.contains(needle)), "{case}: {}", bad[case]);
    }
    assert_eq!(bad["prompt_over_context"]["body"]["error"]["code"], "context_length_exceeded");
    assert_eq!(bad["flood_count"], 200);
    assert_eq!(bad["flood_statuses"], serde_json::json!([400]));
    assert_eq!(bad["after_flood"]["status"], 200, "{}", bad["after_flood"]);
    assert_eq!(bad["health"]["status"], 200);

    // Cancellation.
    let cancel = server.client("cancel", &["smollm2"]);
    assert!(cancel["cancelled_after"].as_f64() > cancel["cancelled_before"].as_f64(), "{cancel}");
    assert_eq!(cancel["running_after"].as_f64(), Some(0.0), "{cancel}");
    assert_eq!(cancel["next_served"], "length", "{cancel}");

    // SIGTERM: the running request finishes, new ones are refused, the process exits 0.
    let addr = server.addr();
    let running = std::thread::spawn(move || {
        http(
            &addr,
            "POST",
            "/v1/completions",
            r#"{"model":"gemma3","prompt":"Count to ten:","max_tokens":24,"temperature":0}"#,
        )
    });
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let mut server = server;
    let term = Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap();
    assert!(term.success());
    let (status, body) = running.join().unwrap();
    assert_eq!(status, 200, "the request running at SIGTERM completes: {body}");
    let exit = server.child.wait().unwrap();
    assert!(exit.success(), "exit status after SIGTERM: {exit}\n{}", server.log.lock().unwrap());
    assert!(TcpStream::connect(server.addr()).is_err(), "nothing listens after shutdown");
}
