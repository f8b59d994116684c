//! Opening the GPU explicitly as Vulkan: a missing driver is an error, never a silent fallback
//! to OpenGL (which would lose f16 and atomics and change what the kernels compile to).

use std::sync::OnceLock;

use burn::tensor::wgpu::WgpuBackend;
use burn::tensor::Device;

use crate::error::KernelError;

/// Initialises the default adapter through Vulkan (once per process) and returns its Burn device.
///
/// The runtime can be initialised only once, so the outcome — device or error message — is kept
/// and every later call gets the same answer.
pub fn vulkan_device() -> Result<Device, KernelError> {
    static DEVICE: OnceLock<Result<Device, String>> = OnceLock::new();
    DEVICE
        .get_or_init(|| Device::wgpu_options().graphics_api(WgpuBackend::Vulkan).init().map_err(|e| e.to_string()))
        .clone()
        .map_err(KernelError::NoVulkan)
}
