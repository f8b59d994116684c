//! Errors of the GPU decode path.

/// An error while preparing or running a decode on a device.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The container rejected a read (checksum, bounds, ...).
    #[error(transparent)]
    Codec(#[from] ember_codec::CodecError),
    /// A tensor cannot be decoded on the device as asked.
    #[error("{path}: tensor `{tensor}`: {reason}")]
    Tensor {
        /// The container.
        path: String,
        /// The tensor.
        tensor: String,
        /// Why.
        reason: String,
    },
    /// A batch needs at least one tensor.
    #[error("a decode batch needs at least one tensor")]
    EmptyBatch,
    /// A batch exceeds the kernel's 32-bit offsets (4 Gi words); split it.
    #[error("decode batch larger than 2^32 words; decode fewer tensors at once")]
    TooLarge,
    /// No Vulkan device could be opened.
    #[error("no Vulkan device: {0} (install a Vulkan driver, e.g. `apt-get install mesa-vulkan-drivers libvulkan1` for lavapipe)")]
    NoVulkan(String),
    /// A device choice other than `auto`, `vulkan` or `cpu`.
    #[error("unknown device `{0}` (expected auto, vulkan or cpu)")]
    UnknownDevice(String),
}
