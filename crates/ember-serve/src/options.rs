//! The command line: which models, how they are coded and cached, where to listen, and the
//! limits every request is held to.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;

/// Many compressed models behind one OpenAI-compatible endpoint, sharing one memory budget.
#[derive(Parser, Debug, Clone)]
#[command(name = "ember-serve", version, about)]
pub struct Options {
    /// A model to serve, as NAME=PATH (PATH: a .gguf file, a Hugging Face model directory or an
    /// .ember file); repeat for more. Default: the default model (SmolLM2-135M-Instruct) as
    /// `smollm2`.
    #[arg(long = "model", value_name = "NAME=PATH")]
    pub models: Vec<String>,
    /// How weights are coded when a GGUF file or a directory is compressed.
    #[arg(long, default_value = "lossless", value_parser = ["lossless", "int8", "int4"])]
    pub scheme: String,
    /// What stays decoded: none, per-forward, full, or adaptive within --budget (one cache for
    /// every model).
    #[arg(long, default_value = "adaptive", value_parser = ["none", "per-forward", "full", "adaptive"])]
    pub policy: String,
    /// Decoded-weight budget shared by all models, in bytes (`2GiB`) or as a fraction of their
    /// decoded weights (`0.25`). Default: a quarter of the decoded weights, at least the largest
    /// one.
    #[arg(long)]
    pub budget: Option<String>,
    /// What the fused products read: fast (a resident form transcoded at load, ≈ 12 bits per
    /// lossless weight, fastest) or coded (the entropy-coded tiles as stored, ≈ 10.6 bits, each
    /// product decodes them: the least memory, for many models on one machine; CPU path).
    #[arg(long, default_value = "fast", value_parser = ["fast", "coded"])]
    pub form: String,
    /// When products multiply compressed weights fused: on (wherever the device can: on the CPU
    /// path every batch, so prompts prefilled together stay fused; on a GPU up to its kernel's
    /// row limit), auto (batches up to the crossover measured for one product, and not for a
    /// weight the cache holds decoded), off (decode, then multiply).
    #[arg(long, default_value = "on", value_parser = ["auto", "on", "off"])]
    pub fused: String,
    /// auto: a hardware GPU through Vulkan if there is one, else the CPU.
    #[arg(long, default_value = "auto", value_parser = ["auto", "vulkan", "cpu"])]
    pub device: String,
    /// Address to listen on (loopback unless told otherwise).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0: any free port; the address is printed on stderr).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Require `Authorization: Bearer KEY` on /v1 requests (also read from `EMBER_API_KEY`).
    #[arg(long)]
    pub api_key: Option<String>,
    /// Sequences of one model decoded together, at most.
    #[arg(long, default_value_t = 16)]
    pub max_batch: usize,
    /// Largest `max_tokens` a request may ask for.
    #[arg(long, default_value_t = 1024)]
    pub max_tokens: usize,
    /// Context length: prompt plus `max_tokens`, in tokens.
    #[arg(long, default_value_t = 4096)]
    pub ctx: usize,
    /// Largest request body, in bytes (e.g. `1MiB`).
    #[arg(long, default_value = "1MiB")]
    pub max_body: String,
    /// On SIGTERM, how long running requests may take to finish, in seconds.
    #[arg(long, default_value_t = 30)]
    pub shutdown_grace: u64,
}

/// One `--model NAME=PATH`.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    /// The name clients use in `model`.
    pub name: String,
    /// The file or directory; `None` is the default model.
    pub path: Option<PathBuf>,
}

/// The decoded-weight budget as given: bytes, or a fraction of all models' decoded weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Budget {
    /// An absolute size.
    Bytes(u64),
    /// A fraction in `(0, 1]` of the decoded weights of every model together.
    Fraction(f64),
}

impl Options {
    /// The models to serve, checked: names unique, non-empty, without `=`.
    pub fn model_specs(&self) -> Result<Vec<ModelSpec>> {
        if self.models.is_empty() {
            return Ok(vec![ModelSpec { name: "smollm2".into(), path: None }]);
        }
        let mut specs: Vec<ModelSpec> = Vec::new();
        for m in &self.models {
            let Some((name, path)) = m.split_once('=') else {
                bail!("--model {m}: expected NAME=PATH");
            };
            if name.is_empty() || path.is_empty() {
                bail!("--model {m}: expected NAME=PATH with a name and a path");
            }
            if specs.iter().any(|s| s.name == name) {
                bail!("--model {m}: the name `{name}` is given twice");
            }
            specs.push(ModelSpec { name: name.into(), path: Some(PathBuf::from(path)) });
        }
        Ok(specs)
    }

    /// `--budget`, parsed.
    pub fn budget(&self) -> Result<Option<Budget>> {
        let Some(b) = self.budget.as_deref() else { return Ok(None) };
        if let Ok(f) = b.parse::<f64>() {
            if b.contains('.') || (f > 0.0 && f < 1.0) {
                if !(f > 0.0 && f <= 1.0) {
                    bail!("--budget {b}: a fraction must lie in (0, 1]");
                }
                return Ok(Some(Budget::Fraction(f)));
            }
        }
        Ok(Some(Budget::Bytes(ember::parse_bytes(b).with_context(|| format!("--budget {b}"))?)))
    }

    /// The API key: `--api-key`, else `EMBER_API_KEY` (which keeps it out of `ps`); empty is none.
    pub fn api_key(&self) -> Option<String> {
        self.api_key.clone().or_else(|| std::env::var("EMBER_API_KEY").ok()).filter(|k| !k.is_empty())
    }

    /// `--max-body`, in bytes.
    pub fn max_body_bytes(&self) -> Result<usize> {
        let n = ember::parse_bytes(&self.max_body).with_context(|| format!("--max-body {}", self.max_body))?;
        usize::try_from(n).with_context(|| format!("--max-body {}", self.max_body))
    }

    /// The address to bind.
    pub fn addr(&self) -> Result<SocketAddr> {
        let ip: std::net::IpAddr =
            self.host.parse().with_context(|| format!("--host {}: not an IP address", self.host))?;
        Ok(SocketAddr::new(ip, self.port))
    }

    /// `--shutdown-grace`.
    pub fn grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace)
    }

    /// Checks the limits relate sensibly.
    pub fn check(&self) -> Result<()> {
        if self.max_batch == 0 {
            bail!("--max-batch must be at least 1");
        }
        if self.max_tokens == 0 || self.ctx < 2 {
            bail!("--max-tokens must be at least 1 and --ctx at least 2");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Options {
        Options::try_parse_from(std::iter::once("ember-serve").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn models_and_budgets_parse_or_say_why_not() {
        let o = parse(&["--model", "a=x.gguf", "--model", "b=/m/dir", "--budget", "0.25"]);
        let specs = o.model_specs().unwrap();
        assert_eq!((specs[0].name.as_str(), specs[1].name.as_str()), ("a", "b"));
        assert_eq!(o.budget().unwrap(), Some(Budget::Fraction(0.25)));
        assert_eq!(parse(&["--budget", "2GiB"]).budget().unwrap(), Some(Budget::Bytes(2 << 30)));
        assert_eq!(parse(&["--budget", "1.0"]).budget().unwrap(), Some(Budget::Fraction(1.0)));
        assert!(parse(&["--budget", "1.5"]).budget().is_err());
        assert!(parse(&["--model", "a=x", "--model", "a=y"]).model_specs().unwrap_err().to_string().contains("twice"));
        assert!(parse(&["--model", "nopath"]).model_specs().is_err());
        assert_eq!(parse(&[]).model_specs().unwrap()[0].name, "smollm2");
        assert_eq!(parse(&[]).addr().unwrap().to_string(), "127.0.0.1:8080");
    }
}
