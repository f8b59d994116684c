//! One compressed weight: its tiles (in host RAM or uploaded), and how its decoded values become
//! the parameter's tensor.

use burn::tensor::{Device, Tensor};
use ember_kernels::batch::DecodeBatch;
use ember_kernels::fused::op::FusedWeight;
use ember_kernels::op::{decode_batch, validate_batch, UploadedBatch};
use ember_kernels::KernelError;

use crate::config::Residency;

/// Where the compressed bytes are.
pub(crate) enum Source {
    /// Tile words in host RAM, uploaded by every decode.
    Host(DecodeBatch),
    /// Uploaded once.
    Device(Box<UploadedBatch>),
    /// The form the fused kernels multiply from (a fast form in host RAM on the CPU path or
    /// device memory on a GPU, or the entropy-coded tiles); decodes come from it too.
    Fast(Box<FusedWeight>),
}

pub(crate) struct Weight {
    /// The module parameter path.
    pub(crate) param: String,
    /// The container tensor.
    pub(crate) tensor: String,
    /// The scheme it is stored with.
    pub(crate) scheme: String,
    /// The stored shape.
    pub(crate) shape: Vec<usize>,
    /// The stored matrix is the parameter's transpose.
    pub(crate) transpose: bool,
    pub(crate) elements: usize,
    /// Bytes of the decoded (f32) tensor.
    pub(crate) decoded_bytes: u64,
    /// Bytes of tiles, tables and scales.
    pub(crate) compressed_bytes: u64,
    pub(crate) source: Source,
    pub(crate) device: Device,
}

impl Weight {
    /// Keeps `batch` where `residency` says, after checking on `device` that every tile
    /// decodes exactly (so a crafted file is an error here, naming the tensor and tile, rather
    /// than a panic or garbage inside a forward pass, where `Param::val()` cannot fail).
    pub(crate) fn new(
        batch: DecodeBatch,
        residency: Residency,
        device: &Device,
        param: String,
        entry: &ember_codec::TensorEntry,
        transpose: bool,
    ) -> Result<Self, KernelError> {
        let compressed_bytes = batch.input_bytes() as u64;
        let source = match residency {
            Residency::Host => {
                validate_batch(&batch, device)?;
                Source::Host(batch)
            }
            Residency::Device => {
                let up = UploadedBatch::new(&batch, device, false);
                up.validate()?;
                Source::Device(Box::new(up))
            }
        };
        Ok(Self::with_source(source, compressed_bytes, device, param, entry, transpose))
    }

    /// A weight kept for fused products (its fast form, or its entropy-coded tiles); decodes
    /// come from the same form.
    pub(crate) fn fused(
        fused: FusedWeight,
        device: &Device,
        param: String,
        entry: &ember_codec::TensorEntry,
        transpose: bool,
    ) -> Self {
        let bytes = fused.resident_bytes();
        Self::with_source(Source::Fast(Box::new(fused)), bytes, device, param, entry, transpose)
    }

    fn with_source(
        source: Source,
        compressed_bytes: u64,
        device: &Device,
        param: String,
        entry: &ember_codec::TensorEntry,
        transpose: bool,
    ) -> Self {
        let elements = entry.elements() as usize;
        Self {
            param,
            tensor: entry.name.clone(),
            scheme: entry.scheme.kind().name().to_string(),
            shape: entry.shape.iter().map(|&d| d as usize).collect(),
            transpose,
            elements,
            decoded_bytes: 4 * elements as u64,
            compressed_bytes,
            source,
            device: device.clone(),
        }
    }

    /// Decodes into a new flat `f32` tensor of exactly `elements` values.
    pub(crate) fn decode_flat(&self) -> Tensor<1> {
        let flat = match &self.source {
            Source::Host(batch) => decode_batch(batch, &self.device, false),
            Source::Device(up) => up.decode(),
            Source::Fast(f) => f.decode().reshape([self.elements]),
        };
        if flat.dims()[0] == self.elements {
            flat
        } else {
            // The kernel pads outputs to an even element count.
            flat.slice(0..self.elements)
        }
    }

    /// The fused form, where the weight is kept in one.
    pub(crate) fn fused_weight(&self) -> Option<&FusedWeight> {
        match &self.source {
            Source::Fast(f) => Some(f),
            _ => None,
        }
    }

    /// The parameter's view of decoded values: reshaped, and transposed where stored `[out, in]`
    /// (a strided view, nothing is copied).
    pub(crate) fn as_param<const D: usize>(&self, flat: Tensor<1>) -> Tensor<D> {
        let mut dims = [1usize; D];
        // Attach checked that the stored rank equals D.
        for (d, s) in dims.iter_mut().zip(&self.shape) {
            *d = *s;
        }
        let t: Tensor<D> = flat.reshape(dims);
        if self.transpose {
            t.transpose()
        } else {
            t
        }
    }
}
