//! The parameter hook: a `Reparameterization` whose `apply` ignores the zero-stride placeholder
//! base and returns the decoded weight instead.

use std::collections::HashMap;
use std::sync::Arc;

use burn::module::{Module, Param, Reparameterization, Reparameterizer};
use burn::tensor::Tensor;

use crate::attachment::Attachment;
use crate::weight::Weight;
use ember_kernels::fused::op::Orientation;

/// Which attachment and weight a hooked parameter reads.
#[derive(Clone)]
pub struct Slot {
    att: Arc<Attachment>,
    index: usize,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let w = &self.att.weights[self.index];
        write!(f, "ember:{} ({})", w.tensor, w.scheme)
    }
}

/// Attached to every compressed parameter: `Param::val()` returns the weight decoded on the
/// parameter's device (or the cached decode), never the stored base.
#[derive(Module, Debug)]
pub struct CompressedWeight {
    #[module(skip)]
    slot: Slot,
}

impl CompressedWeight {
    /// `x·P (+ bias)` for the parameter `P` this hook backs (`[in, out]`, as a Burn `Linear`
    /// weight), computed fused from the weight's fast form when its attachment's
    /// [`crate::FusedMode`] and the batch size allow it; `None` means: take the decode path.
    pub fn fused_matmul(&self, x: &Tensor<2>, bias: Option<&Tensor<1>>) -> Option<Tensor<2>> {
        // P is the stored matrix (rows are inputs), or its transpose (rows are outputs).
        let orientation = if self.slot.att.transposed(self.slot.index) {
            Orientation::RowsAreOutputs
        } else {
            Orientation::RowsAreInputs
        };
        self.slot.att.fused_linear(self.slot.index, x, bias, orientation)
    }

    /// `x·Pᵀ` — e.g. a tied output head multiplying by the `[vocab, hidden]` embedding — fused
    /// when allowed, as [`CompressedWeight::fused_matmul`].
    pub fn fused_matmul_transposed(&self, x: &Tensor<2>) -> Option<Tensor<2>> {
        let orientation = if self.slot.att.transposed(self.slot.index) {
            Orientation::RowsAreInputs
        } else {
            Orientation::RowsAreOutputs
        };
        self.slot.att.fused_linear(self.slot.index, x, None, orientation)
    }

    /// Rows `ids` of the parameter (an embedding lookup) decoded from the fast form alone;
    /// `None` where that does not apply (no fast form, stored transposed, an id out of range).
    pub fn fused_rows(&self, ids: &[usize]) -> Option<Tensor<2>> {
        self.slot.att.fused_rows(self.slot.index, ids)
    }
}

impl Reparameterization for CompressedWeight {
    const NAME: &'static str = "ember";

    fn apply<const D: usize>(&self, _placeholder: Tensor<D>) -> Tensor<D> {
        self.slot.att.access(self.slot.index)
    }
}

/// What attach does with one parameter.
pub(crate) enum Plan {
    /// Hook weight `i` of the attachment.
    Compressed(usize),
    /// Replace the base with this dense value (decoded once at attach).
    Dense(Box<(Weight, Tensor<1>)>),
}

pub(crate) struct Attacher {
    pub(crate) plans: HashMap<String, Plan>,
    pub(crate) att: Arc<Attachment>,
}

impl Reparameterizer for Attacher {
    type Reparam = CompressedWeight;

    fn reparameterize<const D: usize>(
        &mut self,
        path: &str,
        param: Param<Tensor<D>>,
    ) -> (Param<Tensor<D>>, Option<CompressedWeight>) {
        match self.plans.remove(path) {
            Some(Plan::Compressed(index)) => {
                // A zero-stride view of one zero: the parameter keeps its shape, its id and its
                // device, and no dense weight is ever allocated.
                let device = param.lazy_device();
                let shape = param.lazy_shape();
                let placeholder = Tensor::<D>::zeros([1usize; D], &device).expand(shape);
                let slot = Slot { att: Arc::clone(&self.att), index };
                (Param::initialized(param.id, placeholder), Some(CompressedWeight { slot }))
            }
            Some(Plan::Dense(dense)) => {
                let (weight, flat) = *dense;
                (Param::initialized(param.id, weight.as_param(flat)), None)
            }
            None => (param, None),
        }
    }
}

/// Collects float parameter paths and shapes without initialising lazy parameters.
#[derive(Default)]
pub(crate) struct ParamLister {
    path: Vec<String>,
    pub(crate) params: Vec<(String, Vec<usize>, burn::tensor::Device)>,
}

impl burn::module::ModuleVisitor for ParamLister {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.params.push((self.path.join("."), param.lazy_shape().to_vec(), param.lazy_device()));
    }
}

pub(crate) fn list_params<M: Module>(model: &M) -> Vec<(String, Vec<usize>, burn::tensor::Device)> {
    let mut lister = ParamLister::default();
    model.visit(&mut lister);
    lister.params
}
