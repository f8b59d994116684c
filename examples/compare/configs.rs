//! The configurations `compare_policies` measures, and their names (`--single NAME` reads them back).

use anyhow::{bail, Result};
use ember::policy::{Adaptive, Full, NoCache, PerForward};
use ember::{Config, FusedMode, Residency};

/// A cache policy by name; `Adaptive` gets its budget when the config is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyKind {
    NoCache,
    PerForward,
    Full,
    Adaptive,
}

impl PolicyKind {
    pub const ALL: [PolicyKind; 4] =
        [PolicyKind::NoCache, PolicyKind::PerForward, PolicyKind::Full, PolicyKind::Adaptive];

    pub fn name(self) -> &'static str {
        match self {
            PolicyKind::NoCache => "none",
            PolicyKind::PerForward => "per-forward",
            PolicyKind::Full => "full",
            PolicyKind::Adaptive => "adaptive",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "none" => PolicyKind::NoCache,
            "per-forward" => PolicyKind::PerForward,
            "full" => PolicyKind::Full,
            "adaptive" => PolicyKind::Adaptive,
            other => bail!("unknown policy `{other}`"),
        })
    }
}

/// One measured configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Setup {
    /// Every weight decoded once into ordinary parameters.
    Dense,
    /// Weights kept compressed in a container coded with `scheme`; `fused`: products of small
    /// batches straight from the fast form (`FusedMode::Auto`), else decode + matmul.
    Offload { scheme: &'static str, policy: PolicyKind, residency: Residency, prefetch: bool, fused: bool },
}

/// Schemes a container can be coded with (`raw` is the plain-offload baseline).
const SCHEMES: [&str; 4] = ["raw", "lossless", "int8", "int4"];

/// The plain-offload baseline (what `accelerate` does): uncompressed tiles in host RAM, copied
/// to the device at every use.
pub const PLAIN_OFFLOAD: Setup = Setup::Offload {
    scheme: "raw",
    policy: PolicyKind::NoCache,
    residency: Residency::Host,
    prefetch: false,
    fused: false,
};

impl Setup {
    /// `dense`, `plain-offload`, or `scheme/policy/residency/pf-on|pf-off`, with `/fused` for
    /// the fused rows.
    pub fn name(&self) -> String {
        match self {
            Setup::Dense => "dense".into(),
            s if *s == PLAIN_OFFLOAD => "plain-offload".into(),
            Setup::Offload { scheme, policy, residency, prefetch, fused } => format!(
                "{scheme}/{}/{}/pf-{}{}",
                policy.name(),
                residency.name(),
                if *prefetch { "on" } else { "off" },
                if *fused { "/fused" } else { "" }
            ),
        }
    }

    /// The inverse of [`Setup::name`].
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "dense" => return Ok(Setup::Dense),
            "plain-offload" => return Ok(PLAIN_OFFLOAD),
            _ => {}
        }
        let (base, fused) = match name.strip_suffix("/fused") {
            Some(base) => (base, true),
            None => (name, false),
        };
        let parts: Vec<&str> = base.split('/').collect();
        let [scheme, policy, residency, prefetch] = parts[..] else {
            bail!("`{name}`: expected dense, plain-offload or scheme/policy/residency/pf-on|pf-off[/fused]")
        };
        let Some(scheme) = SCHEMES.iter().copied().find(|s| *s == scheme) else { bail!("unknown scheme `{scheme}`") };
        let prefetch = match prefetch {
            "pf-on" => true,
            "pf-off" => false,
            other => bail!("`{other}`: expected pf-on or pf-off"),
        };
        Ok(Setup::Offload {
            scheme,
            policy: PolicyKind::parse(policy)?,
            residency: residency.parse()?,
            prefetch,
            fused,
        })
    }

    /// The container scheme this setup reads (`dense` decodes the lossless one).
    pub fn scheme(&self) -> &'static str {
        match self {
            Setup::Dense => "lossless",
            Setup::Offload { scheme, .. } => scheme,
        }
    }

    /// The offload config; `budget` is the adaptive policy's byte budget.
    pub fn config(&self, budget: u64) -> Option<Config> {
        let Setup::Offload { policy, residency, prefetch, fused, .. } = self else { return None };
        let config = match policy {
            PolicyKind::NoCache => Config::new(NoCache),
            PolicyKind::PerForward => Config::new(PerForward),
            PolicyKind::Full => Config::new(Full),
            PolicyKind::Adaptive => Config::new(Adaptive::new(budget)),
        };
        let fused = if *fused { FusedMode::Auto } else { FusedMode::Off };
        Some(config.residency(*residency).prefetch(*prefetch).fused(fused).sync_timing(true))
    }
}

fn offload(scheme: &'static str, policy: PolicyKind, residency: Residency, prefetch: bool) -> Setup {
    Setup::Offload { scheme, policy, residency, prefetch, fused: false }
}

fn fused(scheme: &'static str, policy: PolicyKind) -> Setup {
    Setup::Offload { scheme, policy, residency: Residency::Host, prefetch: false, fused: true }
}

/// Every configuration: dense, plain offload, then policy × residency × scheme × prefetch
/// (decode + matmul), then the fused rows (scheme × `none`/`per-forward`). `quick` keeps
/// lossless × policy × residency without prefetch, prefetch for the no-cache host case of
/// lossless and int8, per-forward on the device for int8 and int4, and per-forward fused for
/// every scheme.
pub fn all(quick: bool) -> Vec<Setup> {
    let mut setups = vec![Setup::Dense, PLAIN_OFFLOAD];
    let residencies = [Residency::Host, Residency::Device];
    if quick {
        for policy in PolicyKind::ALL {
            for residency in residencies {
                setups.push(offload("lossless", policy, residency, false));
            }
        }
        for scheme in ["lossless", "int8"] {
            setups.push(offload(scheme, PolicyKind::NoCache, Residency::Host, true));
        }
        for scheme in ["int8", "int4"] {
            setups.push(offload(scheme, PolicyKind::PerForward, Residency::Device, false));
        }
        for scheme in ["lossless", "int8", "int4"] {
            setups.push(fused(scheme, PolicyKind::PerForward));
        }
    } else {
        for scheme in ["lossless", "int8", "int4"] {
            for policy in PolicyKind::ALL {
                for residency in residencies {
                    for prefetch in [false, true] {
                        setups.push(offload(scheme, policy, residency, prefetch));
                    }
                }
            }
        }
        for scheme in ["lossless", "int8", "int4"] {
            for policy in [PolicyKind::NoCache, PolicyKind::PerForward] {
                setups.push(fused(scheme, policy));
            }
        }
    }
    setups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for setup in all(false).into_iter().chain(all(true)) {
            assert_eq!(Setup::parse(&setup.name()).unwrap(), setup);
        }
        assert_eq!(all(true).len(), 17);
        assert_eq!(all(false).len(), 56);
        assert!(Setup::parse("lossless/none/host/pf-off/fused").is_ok());
        assert!(Setup::parse("lossless/none/host/fused").is_err());
    }
}
