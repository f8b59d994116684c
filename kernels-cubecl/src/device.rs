//! Opening the GPU explicitly as Vulkan: a missing driver is an error, never a silent fallback
//! to OpenGL (which would lose f16 and atomics and change what the kernels compile to).

use std::path::Path;
use std::sync::OnceLock;

use burn::tensor::wgpu::WgpuBackend;
use burn::tensor::Device;

use crate::error::KernelError;

/// The opened Vulkan device and its adapter's description.
#[derive(Clone, Debug)]
pub struct VulkanDevice {
    /// The Burn device.
    pub device: Device,
    /// Adapter name and driver, e.g. `llvmpipe (LLVM 15.0.6, 256 bits) (Mesa 22.3.6)`.
    pub adapter: String,
    /// A software rasterizer (lavapipe): correct, but slower than Burn's own CPU backend, so
    /// `auto` device choices skip it.
    pub software: bool,
    /// The largest buffer the device binds, in bytes (the smaller of its storage-binding and
    /// buffer limits: what CubeCL allocates at most). Lavapipe's 128 MiB is less than one
    /// Llama-3-8B MLP matrix decoded to f32, so weights are checked against it up front rather
    /// than failing inside the allocator.
    pub max_buffer_bytes: u64,
}

/// The outcome of the one initialisation, kept for every later caller.
static DEVICE: OnceLock<Result<VulkanDevice, String>> = OnceLock::new();

/// Initialises the default adapter through Vulkan (once per process).
///
/// The runtime can be initialised only once, so the outcome — device or error message — is kept
/// and every later call gets the same answer.
pub fn open_vulkan() -> Result<VulkanDevice, KernelError> {
    DEVICE
        .get_or_init(|| {
            quiet_headless_device_select();
            let (device, setup) = Device::wgpu_options()
                .graphics_api(WgpuBackend::Vulkan)
                .init_with_setup()
                .map_err(|e| e.to_string())?;
            let info = setup.adapter.get_info();
            let limits = setup.device.limits();
            Ok(VulkanDevice {
                device,
                adapter: format!("{} ({}, {:?})", info.name, info.driver_info, info.backend),
                software: info.device_type == burn::tensor::wgpu::wgpu::DeviceType::Cpu,
                max_buffer_bytes: limits.max_storage_buffer_binding_size.min(limits.max_buffer_size),
            })
        })
        .clone()
        .map_err(KernelError::NoVulkan)
}

/// Turns off Mesa's device-select layer on a headless machine, before the Vulkan loader starts.
///
/// The layer (installed with Mesa's Vulkan drivers, lavapipe included) asks the Wayland
/// compositor which GPU drives the screen. Without `XDG_RUNTIME_DIR` there is no compositor to ask,
/// and libwayland prints `error: XDG_RUNTIME_DIR is invalid or not set in the environment.` once
/// per enumeration — four lines that read like a failure on every headless run. The layer only
/// reorders adapters for a display; wgpu picks the adapter itself, so disabling it (its own
/// documented switch, `NODEVICE_SELECT=1`) changes nothing else. A desktop session, or a user
/// who set `NODEVICE_SELECT` either way, is left as it is.
fn quiet_headless_device_select() {
    let has_runtime_dir = std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|d| Path::new(&d).is_dir());
    let has_display = std::env::var_os("WAYLAND_DISPLAY").is_some() || std::env::var_os("WAYLAND_SOCKET").is_some();
    if !has_runtime_dir && !has_display && std::env::var_os("NODEVICE_SELECT").is_none() {
        std::env::set_var("NODEVICE_SELECT", "1");
    }
}

/// The Burn device of [`open_vulkan`].
pub fn vulkan_device() -> Result<Device, KernelError> {
    open_vulkan().map(|d| d.device)
}

/// The largest buffer `device` can allocate, where it is the device [`open_vulkan`] opened;
/// `None` for any other device (the CPU path has no such limit). Never opens a device itself.
pub fn max_buffer_bytes(device: &Device) -> Option<u64> {
    match DEVICE.get() {
        Some(Ok(v)) if v.device == *device => Some(v.max_buffer_bytes),
        _ => None,
    }
}

/// The device a user's `--device` names, with a description for the log. `auto`: a hardware GPU
/// through Vulkan if there is one, else the CPU path (a software Vulkan driver such as lavapipe
/// is slower than Burn's CPU backend); `vulkan` insists on Vulkan; `cpu` takes the CPU path.
#[cfg(feature = "flex")]
pub fn choose(choice: &str) -> Result<(Device, String), KernelError> {
    match choice {
        "cpu" => Ok((Device::flex(), "cpu (burn flex)".into())),
        "vulkan" => {
            let v = open_vulkan()?;
            Ok((v.device, format!("vulkan: {}", v.adapter)))
        }
        "auto" => match open_vulkan() {
            Ok(v) if !v.software => Ok((v.device, format!("vulkan: {}", v.adapter))),
            Ok(v) => Ok((Device::flex(), format!("cpu (burn flex; skipped software Vulkan {})", v.adapter))),
            Err(e) => Ok((Device::flex(), format!("cpu (burn flex; no GPU: {e})"))),
        },
        other => Err(KernelError::UnknownDevice(other.to_string())),
    }
}
