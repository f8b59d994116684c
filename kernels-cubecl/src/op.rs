//! The Burn op: `#[backend_extension]` dispatch of a decode batch to the GPU kernel
//! (`CubeBackend`, through Fusion) or to the CPU reference decoder (`Flex`).
//!
//! Burn 0.22's `Tensor` carries no backend type, so the op is a backend extension trait called
//! through `Dispatch`; Fusion treats it as an opaque node.

use burn::backend::fusion::custom::TensorSpec;
use burn::backend::{backend_extension, tensor::FloatTensor, tensor::IntTensor, Backend, Dispatch};
use burn::tensor::{DType, Device, Int, Tensor, TensorData};

use crate::batch::{DecodeBatch, KernelScheme, OutputKind};

/// Host values a launch needs besides its buffers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchSpec {
    /// Kernel variant.
    pub scheme: KernelScheme,
    /// What to write.
    pub output: OutputKind,
    /// Threads per cube.
    pub lanes: usize,
    /// Cubes.
    pub num_tiles: usize,
    /// Elements of the output (a multiple of 2).
    pub elements: usize,
    /// The output dtype (F32, or BF16/F16 for [`OutputKind::Native16`]).
    pub dtype: DType,
}

fn decode_meta(_: &TensorSpec, _: &TensorSpec, _: &TensorSpec, _: &TensorSpec, spec: &LaunchSpec) -> TensorSpec {
    TensorSpec::new([spec.elements].into(), spec.dtype)
}

/// Decoding `.ember` tiles as a backend operation.
#[backend_extension(
    Cube: cfg(feature = "wgpu"),
    Flex: cfg(feature = "flex"),
    Fusion,
)]
pub trait DecodeOps: Backend {
    /// Decodes the tiles described by `tiles` from `data` into a flat tensor of
    /// `spec.elements` values (see [`DecodeBatch`] for the buffers' layout).
    #[fusion(meta = decode_meta)]
    fn ember_decode(
        data: IntTensor<Self>,
        tiles: IntTensor<Self>,
        tables: IntTensor<Self>,
        scales: IntTensor<Self>,
        spec: LaunchSpec,
    ) -> FloatTensor<Self>;

    /// A plain copy of a `u32` tensor into a new buffer: the device-bandwidth yardstick of the
    /// decode benchmark.
    #[fusion(dtype = input, shape = input)]
    fn ember_copy_words(input: IntTensor<Self>) -> IntTensor<Self>;
}

#[cfg(feature = "wgpu")]
mod cube {
    use burn_cubecl::{tensor::CubeTensor, CubeBackend};

    use super::{DecodeOps, LaunchSpec};
    use crate::kernel::launch_decode_tiles;

    fn words(t: &CubeTensor) -> (cubecl::server::Handle, usize) {
        (t.handle.clone(), t.meta.shape().num_elements())
    }

    impl DecodeOps for CubeBackend {
        fn ember_decode(
            data: CubeTensor,
            tiles: CubeTensor,
            tables: CubeTensor,
            scales: CubeTensor,
            spec: LaunchSpec,
        ) -> CubeTensor {
            let client = data.client.clone();
            let bytes = spec.elements * spec.dtype.size();
            let out = CubeTensor::new_contiguous(
                client.clone(),
                data.device.clone(),
                [spec.elements].into(),
                client.empty(bytes.max(4)),
                spec.dtype,
            );
            let out_words = (bytes / 4).max(1);
            launch_decode_tiles(
                &client,
                spec.num_tiles,
                spec.lanes,
                spec.scheme,
                spec.output,
                words(&data),
                words(&tiles),
                words(&tables),
                words(&scales),
                (out.handle.clone(), out_words),
            );
            out
        }

        fn ember_copy_words(input: CubeTensor) -> CubeTensor {
            let client = input.client.clone();
            let (handle, words) = words(&input);
            let out = CubeTensor::new_contiguous(
                client.clone(),
                input.device.clone(),
                input.meta.shape().clone(),
                client.empty(4 * words.max(1)),
                input.dtype,
            );
            crate::kernel::launch_copy_words(&client, handle, out.handle.clone(), words);
            out
        }
    }
}

#[cfg(feature = "flex")]
mod flex {
    use burn::backend::ops::{FloatTensorOps, IntTensorOps};
    use burn::backend::tensor::{FloatTensor, IntTensor};
    use burn::backend::Flex;
    use burn::backend::TensorMetadata;
    use burn::tensor::TensorData;

    use super::{DecodeOps, LaunchSpec};
    use crate::cpu::decode_batch_host;

    fn host_words(t: IntTensor<Flex>) -> Vec<u32> {
        let data = pollster::block_on(Flex::int_into_data(t)).expect("reading a host tensor cannot fail");
        data.try_into_vec::<u32>().expect("decode buffers are u32 tensors")
    }

    impl DecodeOps for Flex {
        fn ember_decode(
            data: IntTensor<Self>,
            tiles: IntTensor<Self>,
            tables: IntTensor<Self>,
            scales: IntTensor<Self>,
            spec: LaunchSpec,
        ) -> FloatTensor<Self> {
            let device = data.device();
            let mut out = vec![0u8; spec.elements * spec.dtype.size()];
            decode_batch_host(
                &host_words(data),
                &host_words(tiles),
                &host_words(tables),
                &host_words(scales),
                spec.scheme,
                spec.output,
                spec.lanes,
                &mut out,
            )
            .expect("the batch was validated when it was built");
            Flex::float_from_data(TensorData::from_bytes_vec(out, [spec.elements], spec.dtype), &device)
        }

        fn ember_copy_words(input: IntTensor<Self>) -> IntTensor<Self> {
            let device = input.device();
            Flex::int_from_data(pollster::block_on(Flex::int_into_data(input)).expect("host tensor"), &device)
        }
    }
}

/// Runs one batch on `device` and returns the flat output (F32, or BF16/F16 with `native16`
/// where the batch allows it, see [`DecodeBatch::supports_native16`]).
pub fn decode_batch(batch: &DecodeBatch, device: &Device, native16: bool) -> Tensor<1> {
    if is_host(device) {
        let data = decode_batch_to_data(batch, native16).expect("the batch was validated when it was built");
        return host_tensor(data, device);
    }
    UploadedBatch::new(batch, device, native16).decode()
}

/// Copies a `u32` tensor on its device (the bandwidth yardstick of `decode-bench`).
pub fn copy_words(t: Tensor<1, Int>) -> Tensor<1, Int> {
    Tensor::from_dispatch(<Dispatch as DecodeOps>::ember_copy_words(t.into_dispatch()))
}

/// Decodes `batch` on the host into an F32 (or, with `native16` where the batch allows it,
/// BF16/F16) tensor payload of `output_elements` values: the CPU path, with no tensor round trip.
pub fn decode_batch_to_data(batch: &DecodeBatch, native16: bool) -> Result<TensorData, String> {
    let (output, dtype) = output_of(batch, native16);
    let elements = batch.output_elements.max(2);
    let mut out = vec![0u8; elements * dtype.size()];
    crate::cpu::decode_batch_host(
        &batch.data,
        &batch.tiles,
        &batch.tables,
        &batch.scales,
        batch.scheme,
        output,
        batch.lanes,
        &mut out,
    )?;
    Ok(TensorData::from_bytes_vec(out, [elements], dtype))
}

fn output_of(batch: &DecodeBatch, native16: bool) -> (OutputKind, DType) {
    let output = if native16 && batch.supports_native16() { OutputKind::Native16 } else { OutputKind::F32 };
    let dtype = match (output, batch.scheme) {
        (OutputKind::F32, _) => DType::F32,
        (_, KernelScheme::LosslessBf16 | KernelScheme::RawBf16) => DType::BF16,
        _ => DType::F16,
    };
    (output, dtype)
}

/// A tensor of `data` on the CPU path, in `data`'s own dtype: a plain `from_data` may convert to
/// the backend's default float type, and native-16 output would come back as f32 (found by
/// `decode-bench`'s bit-for-bit check in a build with only this crate's features).
fn host_tensor(data: TensorData, device: &Device) -> Tensor<1> {
    let dtype = data.dtype();
    Tensor::from_data(data, (device, dtype))
}

/// Whether `device` is Burn's CPU backend, where "uploading" would only copy host memory.
pub fn is_host(device: &Device) -> bool {
    #[cfg(feature = "flex")]
    {
        *device == Device::flex()
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = device;
        false
    }
}

/// Where a batch's buffers live.
enum Buffers {
    /// On a GPU, as `u32` tensors the kernel binds.
    Device(Box<DeviceBuffers>),
    /// On the CPU path: the host words themselves, decoded in place by the reference decoder
    /// (copying them into tensors and back out would cost more than the decode).
    Host { batch: std::sync::Arc<DecodeBatch>, device: Device },
}

/// A batch's buffers on a GPU.
struct DeviceBuffers {
    data: Tensor<1, Int>,
    tiles: Tensor<1, Int>,
    tables: Tensor<1, Int>,
    scales: Tensor<1, Int>,
}

/// Uploads a batch's buffers once, for repeated launches (benchmarks, resident weights).
pub struct UploadedBatch {
    buffers: Buffers,
    spec: LaunchSpec,
}

impl UploadedBatch {
    /// Uploads `batch` to `device`; `native16` as in [`decode_batch`].
    pub fn new(batch: &DecodeBatch, device: &Device, native16: bool) -> Self {
        let (output, dtype) = output_of(batch, native16);
        let upload =
            |w: &[u32]| Tensor::<1, Int>::from_data(TensorData::new(w.to_vec(), [w.len()]), (device, DType::U32));
        let buffers = if is_host(device) {
            Buffers::Host { batch: std::sync::Arc::new(batch.clone()), device: device.clone() }
        } else {
            Buffers::Device(Box::new(DeviceBuffers {
                data: upload(&batch.data),
                tiles: upload(&batch.tiles),
                tables: upload(&batch.tables),
                scales: upload(&batch.scales),
            }))
        };
        Self {
            buffers,
            spec: LaunchSpec {
                scheme: batch.scheme,
                output,
                lanes: batch.lanes,
                num_tiles: batch.num_tiles(),
                elements: batch.output_elements.max(2),
                dtype,
            },
        }
    }

    /// Decodes the batch into a new flat tensor.
    pub fn decode(&self) -> Tensor<1> {
        match &self.buffers {
            Buffers::Device(b) => Tensor::from_dispatch(<Dispatch as DecodeOps>::ember_decode(
                b.data.clone().into_dispatch(),
                b.tiles.clone().into_dispatch(),
                b.tables.clone().into_dispatch(),
                b.scales.clone().into_dispatch(),
                self.spec.clone(),
            )),
            Buffers::Host { batch, device } => {
                let data = decode_batch_to_data(batch, self.spec.output == OutputKind::Native16)
                    .expect("the batch was validated when it was built");
                host_tensor(data, device)
            }
        }
    }

    /// Bytes the decoded output occupies.
    pub fn output_bytes(&self) -> usize {
        self.spec.elements * self.spec.dtype.size()
    }

    /// Bytes uploaded (compressed tiles, descriptors, tables, scales).
    pub fn uploaded_bytes(&self) -> usize {
        match &self.buffers {
            Buffers::Device(b) => {
                4 * (b.data.shape().num_elements()
                    + b.tiles.shape().num_elements()
                    + b.tables.shape().num_elements()
                    + b.scales.shape().num_elements())
            }
            Buffers::Host { batch, .. } => {
                4 * (batch.data.len() + batch.tiles.len() + batch.tables.len() + batch.scales.len())
            }
        }
    }
}
