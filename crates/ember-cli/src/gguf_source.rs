//! GGUF input for `ember compress`: every tensor dequantized to one float dtype (or, for
//! `Q4_0`/`Q4_1`/`Q8_0`/`Q5_0`/`Q4_K`/`Q6_K`, kept as its own codes and scales — [`GgufCodes`]), renamed to its
//! Hugging Face name, with llama.cpp's Q/K row permutation undone, so the container holds the same
//! tensors, in the same layout, as one compressed from the HF checkpoint. What the GGUF carries
//! besides weights (hyper-parameters, tokenizer, chat template) goes into the container metadata.

use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use ember_codec::schemes::QuantKind;
use ember_codec::{Dtype, QuantCodes};
use ember_gguf::{names, unpermute_qk, GgmlType, GgufFile, LlamaHParams, TensorInfo, Tokenizer};

use crate::source::SourceTensor;

/// The float type GGUF tensors are dequantized to.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum GgufDtype {
    /// bfloat16 (the dtype of most HF checkpoints).
    Bf16,
    /// IEEE binary16.
    F16,
    /// IEEE binary32 (exact: every GGUF type dequantizes to f32).
    F32,
}

impl GgufDtype {
    /// The dtype.
    pub fn dtype(self) -> Dtype {
        match self {
            GgufDtype::Bf16 => Dtype::BF16,
            GgufDtype::F16 => Dtype::F16,
            GgufDtype::F32 => Dtype::F32,
        }
    }

    fn encode(self, values: &[f32]) -> Vec<u8> {
        match self {
            GgufDtype::Bf16 => values.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect(),
            GgufDtype::F16 => values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect(),
            GgufDtype::F32 => values.iter().flat_map(|&v| v.to_le_bytes()).collect(),
        }
    }
}

/// Which GGUF tensors keep their own quantized codes instead of being dequantized.
///
/// A `Q4_0`/`Q4_1`/`Q4_K` matrix kept as its codes is stored as `int4`, a `Q8_0`/`Q5_0`/`Q6_K`
/// one as `int8` with per-block scales (the k-quants in super-blocks), each with the GGUF's own
/// scales (and minima), so it decodes to exactly the `f32` values the GGUF dequantizes to;
/// nothing is re-quantized. The other k-quants, `Q5_1` and the i-quants are dequantized
/// whatever this says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GgufCodes {
    /// Keep them where the scheme's grid is no finer than the source's: the 4-bit types for
    /// `int4`, all of them for `int8` (re-quantizing codes onto another grid as fine or finer
    /// only adds error). `lossless` and `raw` dequantize; `int4` re-quantizes the 5-, 6- and
    /// 8-bit types.
    Auto,
    /// Keep them for every scheme but `raw`, and keep the GGUF's float tensors (norms, and any
    /// F32/F16/BF16 matrix) at their own precision, `lossless`: the smallest container that is
    /// exact against the GGUF.
    Native,
    /// Always dequantize to `--gguf-dtype`.
    Dequantize,
}

impl GgufCodes {
    /// Whether a `source`-typed tensor coded with `scheme` keeps its codes.
    pub fn keeps_for(self, scheme: ember_codec::SchemeKind, source: GgmlType) -> bool {
        use ember_codec::SchemeKind;
        let q4 = matches!(source, GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q4_K);
        let wider = matches!(source, GgmlType::Q8_0 | GgmlType::Q5_0 | GgmlType::Q6_K);
        let float = matches!(source, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16);
        match self {
            GgufCodes::Auto => match scheme {
                SchemeKind::Int4 => q4,
                SchemeKind::Int8 => q4 || wider,
                _ => false,
            },
            // A float tensor at its own precision is exact under any scheme, `raw` included.
            GgufCodes::Native => float || (scheme != SchemeKind::Raw && (q4 || wider)),
            GgufCodes::Dequantize => false,
        }
    }
}

/// One tensor to produce.
struct Entry {
    /// Index into the file's tensor table.
    index: usize,
    /// The HF name (or the GGUF name when the table has none).
    name: String,
    shape: Vec<u64>,
    /// Heads to un-permute the rows over (Q/K of permuting architectures).
    unpermute_heads: Option<usize>,
    /// Subtracted from every value to get the HF weight (Gemma's norms, stored as `1 + w`).
    shift: f32,
}

/// An opened GGUF checkpoint.
pub struct GgufSource {
    file: GgufFile,
    dtype: GgufDtype,
    entries: Vec<Entry>,
    hparams: Option<LlamaHParams>,
    tokenizer: Option<Tokenizer>,
}

/// Heads to un-permute `t` over, or `None` when its rows are in HF order already.
fn unpermute_heads(t: &TensorInfo, hp: Option<&LlamaHParams>) -> Option<usize> {
    let hp = hp.filter(|h| h.qk_permuted)?;
    let rest = t.name.strip_prefix("blk.")?.split_once('.')?.1;
    match rest {
        "attn_q.weight" | "attn_q.bias" => Some(hp.n_heads),
        "attn_k.weight" | "attn_k.bias" => Some(hp.n_kv_heads),
        _ => None,
    }
}

impl GgufSource {
    /// Opens `path`, reads its hyper-parameters (when it names an architecture) and tokenizer
    /// (when it has one), and plans every tensor's name and layout. Fails on two tensors mapping
    /// to one name and on Q/K shapes that do not split into the heads.
    pub fn open(path: &Path, dtype: GgufDtype) -> Result<Self> {
        let file = GgufFile::open(path)?;
        let hparams = match file.architecture() {
            Some(_) => Some(LlamaHParams::from_gguf(&file)?),
            None => {
                eprintln!("warning: {}: no general.architecture; tensors are kept in GGUF row order", path.display());
                None
            }
        };
        let tokenizer = match file.meta("tokenizer.ggml.model") {
            Some(_) => Some(Tokenizer::from_gguf(&file).with_context(|| format!("{}", path.display()))?),
            None => None,
        };
        let mut entries = Vec::with_capacity(file.tensors().len());
        let mut seen = std::collections::HashSet::new();
        let arch = hparams.as_ref().map_or("llama", |h| h.architecture.as_str()).to_owned();
        for (index, t) in file.tensors().iter().enumerate() {
            let name = names::hf_name_for(&arch, &t.name).unwrap_or_else(|| t.name.clone());
            if !seen.insert(name.clone()) {
                bail!("{}: tensor `{}` maps to `{name}`, which another tensor already has", path.display(), t.name);
            }
            let unpermute_heads = unpermute_heads(t, hparams.as_ref());
            if let Some(h) = unpermute_heads {
                // A 0-dim tensor, zero rows or zero heads would pass a plain `rows % (2h)` test.
                let rows = t.shape.first().copied().unwrap_or(0);
                if t.shape.is_empty() || t.shape.len() > 2 || h == 0 || rows == 0 || rows % (2 * h) != 0 {
                    bail!(
                        "{}: tensor `{}` has shape {:?}, which does not split into {h} heads of an even size",
                        path.display(),
                        t.name,
                        t.shape
                    );
                }
            }
            let shift = names::norm_weight_shift(&arch, &t.name);
            entries.push(Entry {
                index,
                name,
                shape: t.shape.iter().map(|&d| d as u64).collect(),
                unpermute_heads,
                shift,
            });
        }
        Ok(GgufSource { file, dtype, entries, hparams, tokenizer })
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Bytes of all tensors once dequantized to the chosen dtype.
    pub fn total_bytes(&self) -> u64 {
        let size = self.dtype.dtype().size() as u64;
        self.entries.iter().map(|e| e.shape.iter().product::<u64>() * size).sum()
    }

    /// Container metadata: `ember.source`, and when the file has them `ember.llama.config`,
    /// `ember.tokenizer`, `ember.chat_template`, `ember.bos_id`, `ember.eos_ids`.
    pub fn container_metadata(&self) -> Result<Vec<(&'static str, String)>> {
        let mut m = vec![("ember.source", "gguf".to_string())];
        if let Some(hp) = &self.hparams {
            m.push(("ember.llama.config", hp.to_hf_config_json().to_string()));
        }
        if let Some(tok) = &self.tokenizer {
            m.extend(crate::hf_dir::tokenizer_metadata(tok)?);
        }
        Ok(m)
    }

    /// Hands each tensor to `f` in file order (one tensor in memory at a time): as its own
    /// codes when it is a matrix of one of the types `block_codes` reads whose values need no
    /// shift and `keep_codes(name, shape, type)` says so, else dequantized to the chosen dtype.
    pub fn for_each_tensor(
        &self,
        keep_codes: impl Fn(&str, &[u64], GgmlType) -> bool,
        mut f: impl FnMut(SourceTensor<'_>) -> Result<()>,
    ) -> Result<()> {
        for e in &self.entries {
            let t = &self.file.tensors()[e.index];
            let rows = t.shape.first().copied().unwrap_or(1).max(1);
            // `keep_codes` holds only for the block types `block_codes` reads (`GgufCodes::keeps_for`).
            if t.shape.len() == 2 && e.shift == 0.0 && keep_codes(&e.name, &e.shape, t.ggml_type) {
                if let Some(mut codes) = self.file.block_codes(&t.name)? {
                    if let Some(heads) = e.unpermute_heads {
                        codes
                            .unpermute_rows(rows, heads)
                            .with_context(|| format!("{}: tensor `{}`", self.file.path().display(), t.name))?;
                    }
                    let (block, blocks) = codes.blocks();
                    let kind = match codes.ggml_type {
                        GgmlType::Q8_0 | GgmlType::Q5_0 => QuantKind::Int8Blocks { block },
                        GgmlType::Q4_1 => QuantKind::Int4Asymmetric { block },
                        GgmlType::Q4_K => QuantKind::Int4Super { block, blocks },
                        GgmlType::Q6_K => QuantKind::Int8Super { block, blocks },
                        _ => QuantKind::Int4Symmetric { block },
                    };
                    let quant = QuantCodes { kind, codes: &codes.codes, scales: &codes.scales };
                    f(SourceTensor {
                        name: &e.name,
                        dtype: Dtype::F32,
                        shape: &e.shape,
                        data: &[],
                        codes: Some(quant),
                        exact: true,
                    })?;
                    continue;
                }
            }
            let mut values = self.file.dequantize(&t.name)?;
            if let Some(heads) = e.unpermute_heads {
                // `open` checked that Q/K tensors have rows that split into the heads.
                values = unpermute_qk(&values, rows, values.len() / rows, heads);
            }
            if e.shift != 0.0 {
                values.iter_mut().for_each(|v| *v -= e.shift);
            }
            // A float tensor kept at its own precision: its own dtype where no shift was
            // applied, else F32, which holds the shifted values exactly as they were computed.
            let float = matches!(t.ggml_type, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16);
            let exact = float && keep_codes(&e.name, &e.shape, t.ggml_type);
            let dtype = match t.ggml_type {
                GgmlType::F16 if exact && e.shift == 0.0 => GgufDtype::F16,
                GgmlType::BF16 if exact && e.shift == 0.0 => GgufDtype::Bf16,
                _ if exact => GgufDtype::F32,
                _ => self.dtype,
            };
            let data = dtype.encode(&values);
            drop(values);
            let shape = &e.shape;
            f(SourceTensor { name: &e.name, dtype: dtype.dtype(), shape, data: &data, codes: None, exact })?;
        }
        Ok(())
    }
}
