//! Errors of attaching a container to a model and of decoding its weights.

use ember_codec::CodecError;
use ember_kernels::KernelError;

/// What can go wrong between a `.ember` file and a module.
#[derive(Debug, thiserror::Error)]
pub enum EmberError {
    /// The container could not be read or failed its checks.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A tensor could not be prepared for the device decoder.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// Tensors of the container that no module parameter maps to.
    #[error("{path}: {} tensor(s) of the container match no module parameter: {}{}", names.len(), list(names), hint)]
    UnusedTensors {
        /// The container.
        path: String,
        /// The unmatched tensor names.
        names: Vec<String>,
        /// How to resolve it.
        hint: &'static str,
    },
    /// Module parameters with no tensor in the container.
    #[error("{path}: {} module parameter(s) have no tensor in the container: {}{}", names.len(), list(names), hint)]
    MissingTensors {
        /// The container.
        path: String,
        /// `param path -> expected tensor name`.
        names: Vec<String>,
        /// How to resolve it.
        hint: &'static str,
    },
    /// A tensor's shape does not fit the parameter it maps to.
    #[error("{path}: tensor `{tensor}` has shape {file:?}, parameter `{param}` has shape {module:?}{}", if *transposed { " (mapped transposed)" } else { "" })]
    ShapeMismatch {
        /// The container.
        path: String,
        /// The container tensor.
        tensor: String,
        /// The module parameter.
        param: String,
        /// Shape in the file.
        file: Vec<u64>,
        /// Shape of the parameter.
        module: Vec<usize>,
        /// Whether the mapping asked for a transpose.
        transposed: bool,
    },
    /// A tensor whose dtype cannot back a float parameter.
    #[error("{path}: tensor `{tensor}` is {dtype}, which cannot back float parameter `{param}`")]
    DtypeMismatch {
        /// The container.
        path: String,
        /// The container tensor.
        tensor: String,
        /// The module parameter.
        param: String,
        /// The stored dtype.
        dtype: String,
    },
    /// An `adaptive` budget that cannot hold even one weight: every access would decode.
    #[error(
        "cache budget of {budget} bytes is smaller than the largest compressed weight `{tensor}` \
         ({bytes} bytes decoded); raise the budget or use the `none` policy"
    )]
    BudgetTooSmall {
        /// The budget.
        budget: u64,
        /// The largest weight.
        tensor: String,
        /// Its decoded size.
        bytes: u64,
    },
    /// A weight larger than the device's largest buffer (lavapipe binds at most 128 MiB, less
    /// than a Llama-3-8B MLP matrix in f32): checked at attach, not left to the allocator.
    #[error(
        "{path}: tensor `{tensor}` needs a {bytes}-byte buffer but at most {limit} bytes fit one \
         (the device's limit, or Config::max_buffer_bytes); run it on a device with larger buffers \
         or on the CPU path"
    )]
    TooLargeForDevice {
        /// The container.
        path: String,
        /// The tensor.
        tensor: String,
        /// Its decoded f32 size (or its compressed size, if larger).
        bytes: u64,
        /// The largest buffer allowed (the device's, or the configured one if lower).
        limit: u64,
    },
    /// A budget string that does not parse.
    #[error("invalid budget `{0}`: expected bytes with an optional unit, e.g. 2GiB, 512MiB, 1.5GB or 800000000")]
    BadBudget(String),
    /// A policy name that is not built in.
    #[error("unknown cache policy `{0}` (expected none, per-forward, full or adaptive)")]
    UnknownPolicy(String),
    /// A residency name that is not known.
    #[error("unknown residency `{0}` (expected host or device)")]
    UnknownResidency(String),
    /// A fused mode that is not known.
    #[error("unknown fused mode `{0}` (expected auto, on or off)")]
    UnknownFusedMode(String),
    /// A fused form that is not known.
    #[error("unknown fused form `{0}` (expected fast or coded)")]
    UnknownFusedForm(String),
    /// A selection pattern that does not compile.
    #[error("invalid selection pattern: {0}")]
    BadPattern(#[from] regex::Error),
}

fn list(names: &[String]) -> String {
    const SHOWN: usize = 12;
    let mut s = names.iter().take(SHOWN).map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
    if names.len() > SHOWN {
        s.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    s
}

/// The crate's result type.
pub type Result<T, E = EmberError> = std::result::Result<T, E>;
