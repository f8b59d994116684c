//! The Burn entry points of the fused path.
//!
//! - [`FusedWeight::linear`]: `x·Wᵀ` (or `x·W`) from a weight's fast form — the CPU kernels of
//!   [`super::cpu`] on Burn's Flex backend, the CubeCL kernel `fused_gemv` on a GPU.
//! - [`matmul`]: `x·w` for a dense weight as Burn holds it. On the CPU path it reads `w` in place
//!   whatever its layout (a transposed view included), where Burn's Flex matmul hands the strides
//!   to `gemm`, which repacks a transposed right-hand side on every call; elsewhere it is Burn's
//!   own matmul.

use std::sync::Arc;

use burn::tensor::{DType, Device, Tensor, TensorData};

use super::coded::CodedTiles;
use super::cpu::{matmul_w, matmul_wt, CpuPath};
use super::form::FastWeight;

/// How the stored matrix relates to the product.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Orientation {
    /// Stored `[out, in]` (Hugging Face Linear weights, an embedding used as the output head):
    /// `y = x·Wᵀ`.
    RowsAreOutputs,
    /// Stored `[in, out]` (Burn's own Linear layout): `y = x·W`.
    RowsAreInputs,
}

/// Where a fast form is kept.
enum Resident {
    /// Host RAM: the CPU kernels read it in place; for a GPU it is uploaded at each use (the
    /// fast form's bytes cross the bus, not a decoded weight's).
    Host(Arc<FastWeight>),
    /// Device memory (no host copy is kept).
    #[cfg(feature = "wgpu")]
    Device(Box<gpu::UploadedForm>),
    /// No fast form: the entropy-coded tiles, decoded a tile at a time inside each product.
    Coded(Arc<CodedTiles>),
}

/// A weight in its fast form, resident where its products run.
pub struct FusedWeight {
    resident: Resident,
    rows: usize,
    cols: usize,
    form_name: &'static str,
    device: Device,
}

impl std::fmt::Debug for FusedWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FusedWeight")
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .field("form", &self.form_name)
            .finish()
    }
}

#[cfg(feature = "wgpu")]
fn add_bias(y: Tensor<2>, bias: Option<Tensor<1>>) -> Tensor<2> {
    match bias {
        Some(b) => y + b.unsqueeze::<2>(),
        None => y,
    }
}

impl FusedWeight {
    /// Keeps `form` for products on `device`: in host RAM on the CPU path; on a GPU uploaded
    /// once when `on_device`, else kept in host RAM and uploaded at each use.
    pub fn new(form: FastWeight, device: &Device, on_device: bool) -> Self {
        let (rows, cols, form_name) = (form.rows, form.cols, form.form_name());
        #[cfg(feature = "wgpu")]
        let resident = if on_device && !crate::op::is_host(device) {
            Resident::Device(Box::new(gpu::UploadedForm::new(&form, device)))
        } else {
            Resident::Host(Arc::new(form))
        };
        #[cfg(not(feature = "wgpu"))]
        let resident = {
            let _ = on_device;
            Resident::Host(Arc::new(form))
        };
        Self { resident, rows, cols, form_name, device: device.clone() }
    }

    /// Multiplies straight from `tiles`, the smallest form (see [`super::coded`]). On the CPU
    /// path the products are fused; on a GPU they decode, then multiply.
    pub fn coded(tiles: CodedTiles, device: &Device) -> Self {
        let (rows, cols) = tiles.shape();
        Self {
            resident: Resident::Coded(Arc::new(tiles)),
            rows,
            cols,
            form_name: "entropy-coded",
            device: device.clone(),
        }
    }

    /// Stored rows and columns.
    pub fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// The fast form's name (`bf16-rank4`, `int8`, `int4`, ...).
    pub fn form_name(&self) -> &'static str {
        self.form_name
    }

    /// Bytes resident for this weight (host RAM, or device memory once uploaded).
    pub fn resident_bytes(&self) -> u64 {
        match &self.resident {
            Resident::Host(f) => f.resident_bytes(),
            #[cfg(feature = "wgpu")]
            Resident::Device(up) => up.bytes(),
            Resident::Coded(t) => t.compressed_bytes(),
        }
    }

    /// Whether the form lives in device memory.
    pub fn on_device(&self) -> bool {
        matches!(self.resident, Resident::Device(_))
    }

    /// Whether [`FusedWeight::linear`] runs without decoding the weight for `m` activation rows
    /// in this orientation (on the CPU path always; GPUs multiply `[out, in]` weights for up to
    /// `kernel::MAX_M` rows, and otherwise decode, then multiply).
    pub fn fuses(&self, orientation: Orientation, m: usize) -> bool {
        crate::op::is_host(&self.device)
            || (orientation == Orientation::RowsAreOutputs
                && !matches!(self.resident, Resident::Coded(_))
                && GPU_MAX_M.is_some_and(|max| m <= max))
    }

    /// `y = x·Wᵀ` (or `x·W`, by `orientation`) `+ bias`, for `x` `[m, in]`. Where
    /// [`FusedWeight::fuses`] says no, the weight is decoded and multiplied.
    ///
    /// # Panics
    /// If `x`'s last dimension is not the weight's input size.
    pub fn linear(&self, x: Tensor<2>, orientation: Orientation, bias: Option<Tensor<1>>) -> Tensor<2> {
        let [m, k] = x.dims();
        let (inputs, outputs) = match orientation {
            Orientation::RowsAreOutputs => (self.cols, self.rows),
            Orientation::RowsAreInputs => (self.rows, self.cols),
        };
        assert_eq!(k, inputs, "fused linear: x has {k} columns, the weight takes {inputs}");
        if crate::op::is_host(&self.device) {
            let xs = host_f32(x.clone());
            let bias = bias.clone().map(host_f32);
            let y = match (&self.resident, orientation) {
                (Resident::Host(form), Orientation::RowsAreOutputs) => {
                    Some(matmul_wt(&**form, &xs, m, bias.as_deref(), CpuPath::Best))
                }
                (Resident::Host(form), Orientation::RowsAreInputs) => {
                    Some(matmul_w(&**form, &xs, m, bias.as_deref(), CpuPath::Best))
                }
                (Resident::Coded(t), _) => Some(t.matmul(&xs, m, bias.as_deref(), orientation, CpuPath::Best)),
                #[cfg(feature = "wgpu")]
                (Resident::Device(_), _) => None,
            };
            if let Some(y) = y {
                return Tensor::from_data(TensorData::new(y, [m, outputs]), &self.device);
            }
        }
        #[cfg(feature = "wgpu")]
        {
            let with = |up: &gpu::UploadedForm| {
                if self.fuses(orientation, m) {
                    return add_bias(up.gemv(x.clone(), m, outputs), bias.clone());
                }
                let w = up.decode();
                let w = match orientation {
                    Orientation::RowsAreOutputs => w.transpose(),
                    Orientation::RowsAreInputs => w,
                };
                add_bias(x.clone().matmul(w), bias.clone())
            };
            match &self.resident {
                Resident::Device(up) => with(up),
                Resident::Host(form) => with(&gpu::UploadedForm::new(form, &self.device)),
                Resident::Coded(_) => {
                    let w = self.decode();
                    let w = match orientation {
                        Orientation::RowsAreOutputs => w.transpose(),
                        Orientation::RowsAreInputs => w,
                    };
                    add_bias(x.matmul(w), bias)
                }
            }
        }
        #[cfg(not(feature = "wgpu"))]
        unreachable!("without GPU support every device is the CPU path")
    }

    /// Stored rows `ids` decoded to f32, `[ids.len(), cols]` (an embedding lookup), without
    /// decoding the others where the form is in host RAM. `None` if an id is out of range.
    pub fn rows(&self, ids: &[usize]) -> Option<Tensor<2>> {
        let cols = self.cols;
        if ids.iter().any(|&r| r >= self.rows) {
            return None;
        }
        match &self.resident {
            Resident::Host(form) => {
                // From the pool: a fresh zeroed allocation of this size costs page faults.
                let mut out = super::scratch::take_zeroed(ids.len() * cols);
                for (o, &r) in out.chunks_mut(cols.max(1)).zip(ids) {
                    let mut c = 0;
                    while c < cols {
                        let len = (cols - c).min(super::cpu::SEG);
                        super::cpu::decode_segment(form, r, c, &mut o[c..c + len]);
                        c += len;
                    }
                }
                Some(Tensor::from_data(TensorData::new(out, [ids.len(), cols]), &self.device))
            }
            Resident::Coded(t) => {
                let out = t.select_rows(ids)?;
                Some(Tensor::from_data(TensorData::new(out, [ids.len(), cols]), &self.device))
            }
            #[cfg(feature = "wgpu")]
            Resident::Device(_) => {
                let ids: Vec<i32> = ids.iter().map(|&r| r as i32).collect();
                let n = ids.len();
                let index = Tensor::<1, burn::tensor::Int>::from_data(TensorData::new(ids, [n]), &self.device);
                Some(self.decode().select(0, index))
            }
        }
    }

    /// The whole weight decoded to f32, `[rows, cols]` as stored (on a GPU by a kernel).
    pub fn decode(&self) -> Tensor<2> {
        match &self.resident {
            #[cfg(feature = "wgpu")]
            Resident::Host(form) if !crate::op::is_host(&self.device) => {
                gpu::UploadedForm::new(form, &self.device).decode()
            }
            Resident::Host(form) => {
                Tensor::<1>::from_data(TensorData::new(form.decode_f32(), [self.rows * self.cols]), &self.device)
                    .reshape([self.rows, self.cols])
            }
            #[cfg(feature = "wgpu")]
            Resident::Device(up) => up.decode(),
            Resident::Coded(t) => {
                Tensor::<1>::from_data(TensorData::new(t.decode_f32(), [self.rows * self.cols]), &self.device)
                    .reshape([self.rows, self.cols])
            }
        }
    }
}

/// The largest batch (activation rows) for which `ember`'s `FusedMode::Auto` takes the fused
/// product on `device`; above it, decoding once and handing the weight to Burn's matmul wins.
///
/// CPU path: `fused-bench --shape 1536x576 --crossover` (`benches/results/cpu-fused-bench.json`)
/// puts fused ahead of decode + Burn's matmul up to 16 rows for every scheme and behind it from
/// 32 rows on, where Burn's packed GEMM reuses each packed weight block across the rows. GPUs:
/// the `fused_gemv` kernel's row limit.
pub fn crossover(device: &Device) -> usize {
    if crate::op::is_host(device) {
        CPU_CROSSOVER
    } else {
        GPU_MAX_M.unwrap_or(0)
    }
}

/// Activation rows the GPU kernel `fused_gemv` multiplies at most (`kernel::MAX_M`); `None` in a
/// build without GPU support, where every device is the CPU path.
#[cfg(feature = "wgpu")]
const GPU_MAX_M: Option<usize> = Some(crate::kernel::MAX_M);
#[cfg(not(feature = "wgpu"))]
const GPU_MAX_M: Option<usize> = None;

/// Rows up to which the CPU kernels beat Burn's packed GEMM (see [`crossover`]).
const CPU_CROSSOVER: usize = 16;

/// The values of a (small) activation tensor on the host, as f32.
fn host_f32<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    let data = t.into_data();
    let data = if data.dtype() == DType::F32 { data } else { data.convert::<f32>() };
    // Converted to f32 just above, so the typed read cannot fail.
    data.try_into_vec::<f32>().unwrap_or_default()
}

/// `x·w` for `x` `[m, k]` and a dense `w` `[k, n]` in any layout, without repacking `w` on the
/// CPU path for batches up to the crossover (Burn's matmul above it, and on GPUs). Use it where
/// a weight is read as a (possibly transposed) view every call.
pub fn matmul(x: Tensor<2>, w: Tensor<2>) -> Tensor<2> {
    if crate::op::is_host(&x.device()) {
        #[cfg(feature = "flex")]
        return Tensor::from_dispatch(<burn::backend::Dispatch as DenseOps>::ember_matmul(
            x.into_dispatch(),
            w.into_dispatch(),
        ));
    }
    x.matmul(w)
}

fn matmul_meta(
    x: &burn::backend::fusion::custom::TensorSpec,
    w: &burn::backend::fusion::custom::TensorSpec,
) -> burn::backend::fusion::custom::TensorSpec {
    burn::backend::fusion::custom::TensorSpec::new([x.shape[0], w.shape[1]].into(), x.dtype)
}

/// The dense product of [`matmul`] as a backend operation, so the CPU path sees the weight's
/// storage and layout.
#[burn::backend::backend_extension(
    Cube: cfg(feature = "wgpu"),
    Flex: cfg(feature = "flex"),
    Fusion,
)]
pub trait DenseOps: burn::backend::Backend {
    /// `x·w` for 2-D `x` `[m, k]` and `w` `[k, n]`.
    #[fusion(meta = matmul_meta)]
    fn ember_matmul(
        x: burn::backend::tensor::FloatTensor<Self>,
        w: burn::backend::tensor::FloatTensor<Self>,
    ) -> burn::backend::tensor::FloatTensor<Self>;
}

#[cfg(feature = "wgpu")]
impl DenseOps for burn_cubecl::CubeBackend {
    fn ember_matmul(
        x: burn_cubecl::tensor::CubeTensor,
        w: burn_cubecl::tensor::CubeTensor,
    ) -> burn_cubecl::tensor::CubeTensor {
        use burn::backend::ops::FloatTensorOps;
        burn_cubecl::CubeBackend::float_matmul(x, w)
    }
}

#[cfg(feature = "flex")]
mod flex {
    use burn::backend::ops::FloatTensorOps;
    use burn::backend::tensor::FloatTensor;
    use burn::backend::{Flex, TensorMetadata};
    use burn::tensor::{DType, TensorData};

    use super::super::cpu::{matmul_w, matmul_wt, CpuPath, StridedF32};
    use super::DenseOps;

    impl DenseOps for Flex {
        fn ember_matmul(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
            let (Some((k, n, s0, s1)), Some((m, kx, _, _))) = (w.layout().as_2d_strides(), x.layout().as_2d_strides())
            else {
                return Flex::float_matmul(x, w);
            };
            // Many rows amortise Burn's packing of the weight; few rows read it in place.
            if w.dtype() != DType::F32
                || x.dtype() != DType::F32
                || kx != k
                || s0 < 0
                || s1 < 0
                || m > super::CPU_CROSSOVER
            {
                return Flex::float_matmul(x, w);
            }
            let x = x.to_contiguous();
            let Some((x0, x1)) = x.layout().contiguous_offsets() else { return Flex::float_matmul(x, w) };
            let xs = &x.storage::<f32>()[x0..x1];
            let data: &[f32] = w.storage::<f32>();
            let offset = w.layout().start_offset();
            let (s0, s1) = (s0 as usize, s1 as usize);
            let y = if s0 == 1 && n > 1 {
                // A transposed view of `[n, k]` rows: the dot form reads each row once.
                let src = StridedF32 { data, rows: n, cols: k, offset, row_stride: s1, col_stride: 1 };
                if !src.in_bounds() {
                    return Flex::float_matmul(x, w);
                }
                matmul_wt(&src, xs, m, None, CpuPath::Best)
            } else if s1 == 1 || n == 1 {
                let src = StridedF32 { data, rows: k, cols: n, offset, row_stride: s0, col_stride: 1 };
                if !src.in_bounds() {
                    return Flex::float_matmul(x, w);
                }
                matmul_w(&src, xs, m, None, CpuPath::Best)
            } else {
                return Flex::float_matmul(x, w);
            };
            Flex::float_from_data(TensorData::new(y, [m, n]), &x.device())
        }
    }
}

#[cfg(feature = "wgpu")]
mod gpu {
    //! The fast form uploaded, and the `fused_gemv` launch through a backend op.
    use burn::backend::fusion::custom::TensorSpec;
    use burn::backend::{backend_extension, tensor::FloatTensor, tensor::IntTensor, Backend, Dispatch};
    use burn::tensor::{DType, Device, Int, Tensor, TensorData};

    use super::super::form::{FastCodes, FastWeight};
    use crate::kernel::{form_id, launch_fused_gemv, FusedLaunch};

    /// Host values of one launch.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct GemvSpec {
        /// The form (see [`form_id`]).
        pub form: u32,
        /// Activation rows.
        pub m: usize,
        /// Output features (stored rows).
        pub rows: usize,
    }

    fn gemv_meta(
        x: &TensorSpec,
        _: &TensorSpec,
        _: &TensorSpec,
        _: &TensorSpec,
        _: &TensorSpec,
        s: &GemvSpec,
    ) -> TensorSpec {
        TensorSpec::new([s.m, s.rows].into(), x.dtype)
    }

    /// The fused GEMV as a backend operation (GPUs only; the CPU path calls its kernels directly).
    #[backend_extension(Cube, Fusion)]
    pub trait FusedGemvOps: Backend {
        /// `y = x·Wᵀ` for `x` `[m, cols]` from an uploaded fast form.
        #[fusion(meta = gemv_meta)]
        fn ember_fused_gemv(
            x: FloatTensor<Self>,
            codes: IntTensor<Self>,
            aux: FloatTensor<Self>,
            meta: IntTensor<Self>,
            params: IntTensor<Self>,
            spec: GemvSpec,
        ) -> FloatTensor<Self>;

        /// The whole weight `[rows, cols]` decoded from an uploaded fast form.
        #[fusion(meta = form_decode_meta)]
        fn ember_form_decode(
            codes: IntTensor<Self>,
            aux: FloatTensor<Self>,
            meta: IntTensor<Self>,
            params: IntTensor<Self>,
            spec: DecodeSpec,
        ) -> FloatTensor<Self>;
    }

    /// Host values of a decode launch.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct DecodeSpec {
        /// The form (see [`form_id`]).
        pub form: u32,
        /// Stored rows.
        pub rows: usize,
        /// Stored columns.
        pub cols: usize,
    }

    fn form_decode_meta(_: &TensorSpec, _: &TensorSpec, _: &TensorSpec, _: &TensorSpec, s: &DecodeSpec) -> TensorSpec {
        TensorSpec::new([s.rows, s.cols].into(), DType::F32)
    }

    impl FusedGemvOps for burn_cubecl::CubeBackend {
        fn ember_fused_gemv(
            x: burn_cubecl::tensor::CubeTensor,
            codes: burn_cubecl::tensor::CubeTensor,
            aux: burn_cubecl::tensor::CubeTensor,
            meta: burn_cubecl::tensor::CubeTensor,
            params: burn_cubecl::tensor::CubeTensor,
            spec: GemvSpec,
        ) -> burn_cubecl::tensor::CubeTensor {
            let x = burn_cubecl::kernel::into_contiguous(x);
            let client = x.client.clone();
            let n = spec.m * spec.rows;
            let out = burn_cubecl::tensor::CubeTensor::new_contiguous(
                client.clone(),
                x.device.clone(),
                [spec.m, spec.rows].into(),
                client.empty(4 * n.max(1)),
                DType::F32,
            );
            let words = |t: &burn_cubecl::tensor::CubeTensor| (t.handle.clone(), t.meta.shape().num_elements());
            // SAFETY: the four form buffers are one `UploadedForm` (this module's only caller of
            // the op uploads them together from one fast form), `x` is contiguous `[m, cols]` and
            // `out` was just allocated with `m × rows` words.
            unsafe {
                launch_fused_gemv(
                    &client,
                    FusedLaunch { form: spec.form, m: spec.m, rows: spec.rows },
                    words(&codes),
                    words(&aux),
                    words(&meta),
                    words(&params),
                    words(&x),
                    (out.handle.clone(), n.max(1)),
                )
            };
            out
        }

        fn ember_form_decode(
            codes: burn_cubecl::tensor::CubeTensor,
            aux: burn_cubecl::tensor::CubeTensor,
            meta: burn_cubecl::tensor::CubeTensor,
            params: burn_cubecl::tensor::CubeTensor,
            spec: DecodeSpec,
        ) -> burn_cubecl::tensor::CubeTensor {
            let client = codes.client.clone();
            let n = spec.rows * spec.cols;
            let out = burn_cubecl::tensor::CubeTensor::new_contiguous(
                client.clone(),
                codes.device.clone(),
                [spec.rows, spec.cols].into(),
                client.empty(4 * n.max(1)),
                DType::F32,
            );
            let words = |t: &burn_cubecl::tensor::CubeTensor| (t.handle.clone(), t.meta.shape().num_elements());
            // SAFETY: the four form buffers are one `UploadedForm` and `out` was just allocated
            // with `rows × cols` words.
            unsafe {
                crate::kernel::launch_decode_form(
                    &client,
                    spec.form,
                    n,
                    words(&codes),
                    words(&aux),
                    words(&meta),
                    words(&params),
                    (out.handle.clone(), n.max(1)),
                )
            };
            out
        }
    }

    /// A fast form in device memory.
    pub(super) struct UploadedForm {
        form: u32,
        rows: usize,
        cols: usize,
        codes: Tensor<1, Int>,
        aux: Tensor<1>,
        meta: Tensor<1, Int>,
        params: Tensor<1, Int>,
        bytes: u64,
    }

    fn words_of(bytes: &[u8]) -> Vec<u32> {
        bytes
            .chunks(4)
            .map(|c| {
                let mut w = [0u8; 4];
                w[..c.len()].copy_from_slice(c);
                u32::from_le_bytes(w)
            })
            .collect()
    }

    impl UploadedForm {
        pub(super) fn new(w: &FastWeight, device: &Device) -> Self {
            let mut meta: Vec<u32> = vec![0; 4];
            let mut aux: Vec<f32> = Vec::new();
            let mut low_off = 0usize;
            let (form, mut codes, block) = match &w.codes {
                FastCodes::F32(v) => (form_id::F32, v.iter().map(|f| f.to_bits()).collect(), 1),
                FastCodes::Bf16(v) => (form_id::BF16, words_of(bytemuck::cast_slice(v)), 1),
                FastCodes::F16(v) => (form_id::F16, words_of(bytemuck::cast_slice(v)), 1),
                FastCodes::Bf16Rank { exponents, ranks, low, escapes, row_escapes } => {
                    meta = words_of(exponents);
                    let mut c = words_of(ranks);
                    low_off = c.len();
                    c.extend(words_of(low));
                    meta.extend_from_slice(row_escapes);
                    meta.extend(escapes.iter().flat_map(|&(col, bits)| [col, bits as u32]));
                    (form_id::BF16_RANK, c, 1)
                }
                FastCodes::Int8 { codes, block, scales } => {
                    aux = scales.clone();
                    (form_id::INT8, words_of(bytemuck::cast_slice(codes)), *block)
                }
                FastCodes::Int4 { packed, block, scales, mins } => {
                    let form = match mins {
                        None => {
                            aux = scales.clone();
                            form_id::INT4_SYM
                        }
                        Some(m) => {
                            aux = scales.iter().zip(m).flat_map(|(&s, &m)| [s, m]).collect();
                            form_id::INT4_ASYM
                        }
                    };
                    (form, words_of(packed), *block)
                }
            };
            if codes.is_empty() {
                codes.push(0);
            }
            if aux.is_empty() {
                aux.push(0.0);
            }
            let params = vec![w.rows as u32, w.cols as u32, w.stride as u32, block as u32, low_off as u32, 4, 0];
            let mut params = params;
            // Escape pairs start after the exponent table and the `rows + 1` row offsets.
            params[6] = 4 + (w.rows as u32 + 1);
            if meta.len() < 4 + w.rows + 1 {
                meta.resize(4 + w.rows + 1, 0);
            }
            let bytes = 4 * (codes.len() + aux.len() + meta.len() + params.len()) as u64;
            let ints = |v: Vec<u32>| {
                let n = v.len();
                Tensor::<1, Int>::from_data(TensorData::new(v, [n]), (device, DType::U32))
            };
            let n = aux.len();
            Self {
                form,
                rows: w.rows,
                cols: w.cols,
                codes: ints(codes),
                aux: Tensor::<1>::from_data(TensorData::new(aux, [n]), (device, DType::F32)),
                meta: ints(meta),
                params: ints(params),
                bytes,
            }
        }

        /// `x·Wᵀ` for `x` `[m, cols]`: `[m, rows]`.
        pub(super) fn gemv(&self, x: Tensor<2>, m: usize, rows: usize) -> Tensor<2> {
            Tensor::from_dispatch(<Dispatch as FusedGemvOps>::ember_fused_gemv(
                x.into_dispatch(),
                self.codes.clone().into_dispatch(),
                self.aux.clone().into_dispatch(),
                self.meta.clone().into_dispatch(),
                self.params.clone().into_dispatch(),
                GemvSpec { form: self.form, m, rows },
            ))
        }

        /// The whole weight decoded on the device, `[rows, cols]`.
        pub(super) fn decode(&self) -> Tensor<2> {
            Tensor::from_dispatch(<Dispatch as FusedGemvOps>::ember_form_decode(
                self.codes.clone().into_dispatch(),
                self.aux.clone().into_dispatch(),
                self.meta.clone().into_dispatch(),
                self.params.clone().into_dispatch(),
                DecodeSpec { form: self.form, rows: self.rows, cols: self.cols },
            ))
        }

        /// Bytes uploaded.
        pub(super) fn bytes(&self) -> u64 {
            self.bytes
        }
    }
}
