//! The Burn op: `#[backend_extension]` dispatch of a decode batch to the GPU kernel
//! (`CubeBackend`, through Fusion) or to the CPU reference decoder (`Flex`).
//!
//! Burn 0.22's `Tensor` carries no backend type, so the op is a backend extension trait called
//! through `Dispatch`; Fusion treats it as an opaque node.

use burn::backend::fusion::custom::TensorSpec;
use burn::backend::{backend_extension, tensor::FloatTensor, tensor::IntTensor, Backend, Dispatch};
use burn::tensor::{DType, Device, Int, Tensor, TensorData};

use crate::batch::{BatchOutput, DecodeBatch, KernelScheme, OutputKind};
use crate::error::KernelError;

/// Host values a launch needs besides its buffers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchSpec {
    /// Kernel variant.
    pub scheme: KernelScheme,
    /// What to write.
    pub output: OutputKind,
    /// Threads per cube.
    pub lanes: usize,
    /// `lossless`: mantissa bits coded with the exponent.
    pub joint: u32,
    /// How tiles store their lanes' word counts ([`ember_codec::tile::LaneTable::code`]).
    pub lane_table: u32,
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

fn check_meta(_: &TensorSpec, _: &TensorSpec, _: &TensorSpec, _: &TensorSpec, spec: &LaunchSpec) -> TensorSpec {
    TensorSpec::new([spec.num_tiles.max(1)].into(), DType::U32)
}

/// Decoding `.ember` tiles as a backend operation.
///
/// Crate-private: the GPU implementation indexes the buffers with offsets read from the
/// descriptors, which only buffers built by [`DecodeBatch::new`] are known to keep in bounds;
/// [`UploadedBatch`] and [`decode_batch`] are the safe entry points.
#[backend_extension(
    Cube: cfg(feature = "wgpu"),
    Flex: cfg(feature = "flex"),
    Fusion,
)]
pub(crate) trait DecodeOps: Backend {
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

    /// Checks the tiles of a batch without writing values: one `u32` status per tile, 0 when it
    /// decodes exactly (every lane consumes exactly its words and ends at the initial state).
    #[fusion(meta = check_meta)]
    fn ember_check_tiles(
        data: IntTensor<Self>,
        tiles: IntTensor<Self>,
        tables: IntTensor<Self>,
        scales: IntTensor<Self>,
        spec: LaunchSpec,
    ) -> IntTensor<Self>;

    /// A plain copy of a `u32` tensor into a new buffer: the device-bandwidth yardstick of the
    /// decode benchmark.
    #[fusion(dtype = input, shape = input)]
    fn ember_copy_words(input: IntTensor<Self>) -> IntTensor<Self>;
}

#[cfg(feature = "wgpu")]
mod cube {
    use burn_cubecl::{tensor::CubeTensor, CubeBackend};

    use burn::tensor::DType;

    use super::{DecodeOps, LaunchSpec};
    use crate::kernel::{launch_decode_tiles, TileLaunch};

    fn words(t: &CubeTensor) -> (cubecl::server::Handle, usize) {
        (t.handle.clone(), t.meta.shape().num_elements())
    }

    /// Allocates the output (`elements` of `dtype`, at least one word) and launches the tile
    /// kernel over a batch's uploaded words.
    fn launch(
        [data, tiles, tables, scales]: [CubeTensor; 4],
        spec: &LaunchSpec,
        launch: TileLaunch,
        elements: usize,
        dtype: DType,
    ) -> CubeTensor {
        let client = data.client.clone();
        let bytes = elements * dtype.size();
        let out = CubeTensor::new_contiguous(
            client.clone(),
            data.device.clone(),
            [elements].into(),
            client.empty(bytes.max(4)),
            dtype,
        );
        // SAFETY: the four inputs are the words of one `DecodeBatch` uploaded by
        // `UploadedBatch::new` (the only caller of this crate-private op), launched with its tile
        // count, lanes and scheme; `out` holds the batch's output words for a decode, or one word
        // per tile for a check (the callers below size it so).
        unsafe {
            launch_decode_tiles(
                &client,
                spec.num_tiles,
                spec.lanes,
                spec.joint,
                spec.lane_table,
                spec.scheme,
                launch,
                words(&data),
                words(&tiles),
                words(&tables),
                words(&scales),
                (out.handle.clone(), (bytes / 4).max(1)),
            )
        };
        out
    }

    impl DecodeOps for CubeBackend {
        fn ember_decode(
            data: CubeTensor,
            tiles: CubeTensor,
            tables: CubeTensor,
            scales: CubeTensor,
            spec: LaunchSpec,
        ) -> CubeTensor {
            let decode = TileLaunch::Decode(spec.output);
            launch([data, tiles, tables, scales], &spec, decode, spec.elements, spec.dtype)
        }

        fn ember_check_tiles(
            data: CubeTensor,
            tiles: CubeTensor,
            tables: CubeTensor,
            scales: CubeTensor,
            spec: LaunchSpec,
        ) -> CubeTensor {
            let tiles_out = spec.num_tiles.max(1);
            launch([data, tiles, tables, scales], &spec, TileLaunch::Check, tiles_out, DType::U32)
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
            // SAFETY: `input` holds `words` words and `out` was just allocated with as many.
            unsafe { crate::kernel::launch_copy_words(&client, handle, out.handle.clone(), words) };
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

    /// The words of a host tensor. Only this crate builds the op's inputs (as `u32` tensors of
    /// a `DecodeBatch`), so a failed read is a bug here, not bad input.
    fn host_words(t: IntTensor<Flex>) -> Vec<u32> {
        let data =
            pollster::block_on(Flex::int_into_data(t)).unwrap_or_else(|e| panic!("reading a host tensor: {e:?}"));
        data.try_into_vec::<u32>().unwrap_or_else(|e| panic!("ember decode buffers are u32 tensors: {e:?}"))
    }

    /// Decodes the op's buffers with the reference decoder: the output bytes and the outcome.
    fn decode_host(
        data: IntTensor<Flex>,
        tiles: IntTensor<Flex>,
        tables: IntTensor<Flex>,
        scales: IntTensor<Flex>,
        spec: &LaunchSpec,
    ) -> (Vec<u8>, Result<(), crate::cpu::HostDecodeError>) {
        let mut out = vec![0u8; spec.elements * spec.dtype.size()];
        let decoded = decode_batch_host(
            &host_words(data),
            &host_words(tiles),
            &host_words(tables),
            &host_words(scales),
            spec.scheme,
            spec.output,
            spec.lanes,
            &mut out,
        );
        (out, decoded)
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
            let (out, decoded) = decode_host(data, tiles, tables, scales, &spec);
            if let Err(e) = decoded {
                super::failed_after_validation(&e);
            }
            Flex::float_from_data(TensorData::from_bytes_vec(out, [spec.elements], spec.dtype), &device)
        }

        fn ember_check_tiles(
            data: IntTensor<Self>,
            tiles: IntTensor<Self>,
            tables: IntTensor<Self>,
            scales: IntTensor<Self>,
            spec: LaunchSpec,
        ) -> IntTensor<Self> {
            let device = data.device();
            let mut status = vec![0u32; spec.num_tiles.max(1)];
            if let (_, Err(e)) = decode_host(data, tiles, tables, scales, &spec) {
                // A failure that is not one tile's marks them all.
                match e.tile.and_then(|t| status.get_mut(t)) {
                    Some(s) => *s = 1,
                    None => status.fill(1),
                }
            }
            let n = status.len();
            Flex::int_from_data(TensorData::new(status, [n]), &device)
        }

        fn ember_copy_words(input: IntTensor<Self>) -> IntTensor<Self> {
            let device = input.device();
            let data = pollster::block_on(Flex::int_into_data(input))
                .unwrap_or_else(|e| panic!("reading a host tensor: {e:?}"));
            Flex::int_from_data(data, &device)
        }
    }
}

/// A decode that failed although its batch passed [`validate_batch`] (or
/// [`UploadedBatch::validate`]): the bytes changed under us or a decoder disagrees with the
/// validation. Decodes run inside `Param::val()`, which cannot return an error, so this fails
/// loudly, once, with the decoder's own text.
#[cold]
fn failed_after_validation(e: &dyn std::fmt::Display) -> ! {
    panic!("ember: decoding a validated batch failed: {e}")
}

/// Runs one batch on `device` and returns the flat output (F32, or BF16/F16 with `native16`
/// where the batch allows it, see [`DecodeBatch::supports_native16`]).
///
/// For batches already checked with [`validate_batch`]: a GPU decode does not check the lanes'
/// ends, so an unchecked crafted tile would decode to garbage there; on the CPU path a failure
/// panics with the decoder's error. Use [`try_decode_batch`] for a batch checked on first use.
pub fn decode_batch(batch: &DecodeBatch, device: &Device, native16: bool) -> Tensor<1> {
    if is_host(device) {
        let data = decode_batch_to_data(batch, native16).unwrap_or_else(|e| failed_after_validation(&e));
        return host_tensor(data, device);
    }
    UploadedBatch::new(batch, device, native16).decode()
}

/// [`decode_batch`] for a batch not checked yet: on the CPU path the decode itself checks every
/// lane; on a GPU the batch is checked first (one status word per tile, read back).
pub fn try_decode_batch(batch: &DecodeBatch, device: &Device, native16: bool) -> Result<Tensor<1>, KernelError> {
    if is_host(device) {
        return Ok(host_tensor(decode_batch_to_data(batch, native16)?, device));
    }
    let up = UploadedBatch::new(batch, device, native16);
    up.validate()?;
    Ok(up.decode())
}

/// Checks that every tile of `batch` decodes exactly on `device` (`FORMAT.md` §3: each lane
/// consumes exactly its words and ends at the initial state), naming the file, tensor and tile
/// that does not. On the CPU path this is a decode into scratch memory; on a GPU it is the check
/// kernel (the decode's rANS steps without writing values) and a read-back of one word per tile.
pub fn validate_batch(batch: &DecodeBatch, device: &Device) -> Result<(), KernelError> {
    if is_host(device) {
        return decode_batch_to_data(batch, false).map(drop);
    }
    UploadedBatch::new(batch, device, false).validate()
}

/// Copies a `u32` tensor on its device (the bandwidth yardstick of `decode-bench`).
pub fn copy_words(t: Tensor<1, Int>) -> Tensor<1, Int> {
    Tensor::from_dispatch(<Dispatch as DecodeOps>::ember_copy_words(t.into_dispatch()))
}

/// Decodes `batch` on the host into an F32 (or, with `native16` where the batch allows it,
/// BF16/F16) tensor payload of `output_elements` values: the CPU path, with no tensor round trip.
/// Every lane is checked as it decodes; an error names the file, tensor and tile.
pub fn decode_batch_to_data(batch: &DecodeBatch, native16: bool) -> Result<TensorData, KernelError> {
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
    )
    .map_err(|e| batch.tile_error(e.tile, e.reason))?;
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
    /// The container and the tensors' tile ranges, to name a tile that fails its check.
    path: String,
    outputs: Vec<BatchOutput>,
}

/// Uploads a batch's buffers once, for repeated launches (benchmarks, resident weights).
pub struct UploadedBatch {
    buffers: Buffers,
    spec: LaunchSpec,
}

impl UploadedBatch {
    /// Uploads `batch` to `device`; `native16` as in [`decode_batch`]. Call
    /// [`UploadedBatch::validate`] once before trusting its decodes on a GPU.
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
                path: batch.path.clone(),
                outputs: batch.outputs.clone(),
            }))
        };
        Self {
            buffers,
            spec: LaunchSpec {
                scheme: batch.scheme,
                output,
                lanes: batch.lanes,
                joint: batch.joint,
                lane_table: batch.lane_table.code(),
                num_tiles: batch.num_tiles(),
                elements: batch.output_elements.max(2),
                dtype,
            },
        }
    }

    /// Checks every tile where it will be decoded (see [`validate_batch`]): the uploaded bytes
    /// never change, so one check covers every later [`UploadedBatch::decode`].
    pub fn validate(&self) -> Result<(), KernelError> {
        let b = match &self.buffers {
            Buffers::Host { batch, .. } => return decode_batch_to_data(batch, false).map(drop),
            Buffers::Device(b) => b,
        };
        let status = Tensor::<1, Int>::from_dispatch(<Dispatch as DecodeOps>::ember_check_tiles(
            b.data.clone().into_dispatch(),
            b.tiles.clone().into_dispatch(),
            b.tables.clone().into_dispatch(),
            b.scales.clone().into_dispatch(),
            self.spec.clone(),
        ));
        let data = status.try_into_data().map_err(|e| {
            crate::batch::tile_error(&b.path, &b.outputs, None, format!("reading the tile check back: {e:?}"))
        })?;
        let words = data.convert::<u32>().try_into_vec::<u32>().map_err(|e| {
            crate::batch::tile_error(&b.path, &b.outputs, None, format!("reading the tile check back: {e:?}"))
        })?;
        match words.iter().take(self.spec.num_tiles).position(|&w| w != 0) {
            None => Ok(()),
            Some(t) => Err(crate::batch::tile_error(
                &b.path,
                &b.outputs,
                Some(t),
                "a lane does not decode to its exact end (stream corrupt)".into(),
            )),
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
                    .unwrap_or_else(|e| failed_after_validation(&e));
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
            Buffers::Host { batch, .. } => batch.input_bytes(),
        }
    }
}
