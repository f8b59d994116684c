//! Which container tensor backs which module parameter.
//!
//! Burn names parameters by their module path (`layers.0.attn.wq.weight`), files by whatever the
//! exporter chose (`model.layers.0.self_attn.q_proj.weight`), and Burn's `Linear` stores its
//! weight `[in, out]` where PyTorch files store `[out, in]`. A [`NameMap`] answers both: the name,
//! and whether the stored matrix is the transpose of the parameter. Square matrices make the
//! second question impossible to infer from shapes, so the map must say it.

use std::sync::Arc;

/// The tensor behind one parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The tensor's name in the container.
    pub name: String,
    /// The stored 2-D tensor is the parameter's transpose (`[out, in]` files, `[in, out]` Linear).
    pub transpose: bool,
}

impl Target {
    /// Same layout as the parameter.
    pub fn plain(name: impl Into<String>) -> Self {
        Self { name: name.into(), transpose: false }
    }

    /// Stored transposed (a PyTorch `[out, in]` weight behind a Burn `Linear`).
    pub fn transposed(name: impl Into<String>) -> Self {
        Self { name: name.into(), transpose: true }
    }
}

/// Maps a module parameter path to its container tensor, or `None` for parameters the container
/// does not hold.
#[derive(Clone)]
pub struct NameMap(Arc<MapFn>);

/// The function behind a [`NameMap`].
type MapFn = dyn Fn(&str) -> Option<Target> + Send + Sync;

impl NameMap {
    /// A map from a function.
    pub fn new(f: impl Fn(&str) -> Option<Target> + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// Parameter path = tensor name, same layout (a container written from the Burn model).
    pub fn identity() -> Self {
        Self::new(|p| Some(Target::plain(p)))
    }

    /// Looks a parameter up.
    pub fn map(&self, param_path: &str) -> Option<Target> {
        (self.0)(param_path)
    }
}

impl Default for NameMap {
    fn default() -> Self {
        Self::identity()
    }
}

impl std::fmt::Debug for NameMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NameMap(..)")
    }
}
