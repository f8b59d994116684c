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
    }
}

/// Runs one batch on `device` and returns the flat output (F32, or BF16/F16 with `native16`
/// where the batch allows it, see [`DecodeBatch::supports_native16`]).
pub fn decode_batch(batch: &DecodeBatch, device: &Device, native16: bool) -> Tensor<1> {
    let output = if native16 && batch.supports_native16() { OutputKind::Native16 } else { OutputKind::F32 };
    let dtype = match (output, batch.scheme) {
        (OutputKind::F32, _) => DType::F32,
        (_, KernelScheme::LosslessBf16 | KernelScheme::RawBf16) => DType::BF16,
        _ => DType::F16,
    };
    let upload = |w: &[u32]| {
        Tensor::<1, Int>::from_data(TensorData::new(w.to_vec(), [w.len()]), (device, DType::U32)).into_dispatch()
    };
    let spec = LaunchSpec {
        scheme: batch.scheme,
        output,
        lanes: batch.lanes,
        num_tiles: batch.num_tiles(),
        elements: batch.output_elements.max(2),
        dtype,
    };
    Tensor::from_dispatch(<Dispatch as DecodeOps>::ember_decode(
        upload(&batch.data),
        upload(&batch.tiles),
        upload(&batch.tables),
        upload(&batch.scales),
        spec,
    ))
}
