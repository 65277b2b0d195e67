//! `Weights`: every tensor a Mixtral needs, found by name, checked against the config, and
//! borrowed from the memory-mapped checkpoint.

use crate::names::{ExpertMatrix, Layout};
use crate::{Config, Error, Result, names};
use mixtral_tensor::{Shape, Tensor, TensorStore};
use std::collections::BTreeSet;
use std::path::PathBuf;

/// One expert's SwiGLU weights: `w2(silu(w1 x) ⊙ w3 x)`.
#[derive(Clone, Debug)]
pub struct ExpertWeights {
    /// Gate projection `[F, D]`.
    pub w1: Tensor,
    /// Down projection `[D, F]`.
    pub w2: Tensor,
    /// Up projection `[F, D]`.
    pub w3: Tensor,
}

/// One decoder layer's weights, borrowed from the checkpoint.
pub type LayerWeights = crate::device::Layer<Tensor, Vec<ExpertWeights>>;

/// All of a Mixtral's weights, borrowed from the checkpoint's mapping.
pub type Weights = crate::device::Stack<Tensor, Vec<ExpertWeights>>;

/// Something worth telling the user that does not stop loading.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Warning {
    /// The checkpoint holds tensors the model does not use.
    UnusedTensors {
        /// Their names, sorted.
        names: Vec<String>,
    },
    /// A safetensors file's data is not aligned for its dtypes (its header length is not a
    /// multiple of 8): its tensors were copied to aligned memory instead of being borrowed.
    AlignedCopy {
        /// The file.
        path: PathBuf,
    },
}

/// Names listed in a warning before the rest are only counted (a crafted checkpoint can hold
/// millions of tensors; the message stays one short line).
const MAX_NAMES_SHOWN: usize = 8;

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Warning::UnusedTensors { names } => {
                let shown: Vec<String> = names
                    .iter()
                    .take(MAX_NAMES_SHOWN)
                    .map(|n| mixtral_tensor::escape(n))
                    .collect();
                write!(
                    f,
                    "{} unused tensor(s) in the checkpoint: {}",
                    names.len(),
                    shown.join(", ")
                )?;
                match names.len().saturating_sub(MAX_NAMES_SHOWN) {
                    0 => Ok(()),
                    more => write!(f, " and {more} more"),
                }
            }
            Warning::AlignedCopy { path } => write!(
                f,
                "{}: tensor data is not aligned (header length not a multiple of 8); its \
                 tensors were copied to aligned memory instead of being memory-mapped",
                path.display()
            ),
        }
    }
}

/// Looks tensors up by name, checks them, and remembers which were used.
struct Loader<'a> {
    store: &'a TensorStore,
    used: BTreeSet<String>,
}

impl Loader<'_> {
    /// The tensor `name`, which must have shape `expected` and a float dtype.
    fn get(&mut self, name: &str, expected: &[usize]) -> Result<Tensor> {
        let Some((info, path)) = self.store.info(name) else {
            return Err(Error::MissingTensor {
                path: self.root(),
                name: name.to_string(),
            });
        };
        let path = path.to_path_buf();
        if info.shape.dims() != expected {
            return Err(Error::WrongShape {
                path,
                name: name.to_string(),
                expected: Shape::from(expected),
                found: info.shape.clone(),
            });
        }
        let tensor = self.store.tensor(name)?;
        if !tensor.dtype().is_float() {
            return Err(Error::WeightDtype {
                path,
                name: name.to_string(),
                dtype: tensor.dtype(),
            });
        }
        self.used.insert(name.to_string());
        Ok(tensor)
    }

    fn has(&self, name: &str) -> bool {
        self.store.info(name).is_some()
    }

    /// Where a tensor no file holds should have been, for messages: the file when the
    /// checkpoint is one (a GGUF file, a lone `model.safetensors`), which is what the user
    /// gave or can open; the folder of the shards otherwise.
    fn root(&self) -> PathBuf {
        match self.store.files() {
            [one] => one.path().to_path_buf(),
            [first, ..] => {
                let first = first.path();
                first.parent().unwrap_or(first).to_path_buf()
            }
            [] => PathBuf::new(),
        }
    }
}

impl Weights {
    /// Finds and checks every tensor `cfg` implies, by `layout`'s names; returns warnings
    /// about the rest.
    pub fn load(
        store: &TensorStore,
        cfg: &Config,
        layout: Layout,
    ) -> Result<(Weights, Vec<Warning>)> {
        let mut ld = Loader {
            store,
            used: BTreeSet::new(),
        };
        let (v, d) = (cfg.vocab_size, cfg.hidden_size);
        let embed = ld.get(layout.embed(), &[v, d])?;
        let lm_head = if cfg.tie_word_embeddings && !ld.has(layout.lm_head()) {
            embed.clone()
        } else {
            ld.get(layout.lm_head(), &[v, d])?
        };
        let norm = ld.get(layout.final_norm(), &[d])?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|l| load_layer(&mut ld, cfg, layout, l))
            .collect::<Result<_>>()?;
        let unused: Vec<String> = store
            .names()
            .filter(|n| !ld.used.contains(*n))
            .map(String::from)
            .collect();
        let warnings = if unused.is_empty() {
            vec![]
        } else {
            vec![Warning::UnusedTensors { names: unused }]
        };
        Ok((
            Weights {
                embed,
                layers,
                norm,
                lm_head,
            },
            warnings,
        ))
    }

    /// Every weight tensor once (the embedding once even when tied).
    pub fn tensors(&self) -> Vec<&Tensor> {
        let mut all = vec![&self.embed, &self.norm];
        if !std::ptr::eq(
            self.lm_head.as_bytes().as_ptr(),
            self.embed.as_bytes().as_ptr(),
        ) {
            all.push(&self.lm_head);
        }
        for l in &self.layers {
            all.extend([
                &l.attn_norm,
                &l.wq,
                &l.wk,
                &l.wv,
                &l.wo,
                &l.moe_norm,
                &l.router,
            ]);
            all.extend(l.experts.iter().flat_map(|e| [&e.w1, &e.w2, &e.w3]));
        }
        all
    }
}

impl Weights {
    /// Bytes of weights one decoded token reads: one embedding row, every dense tensor, and
    /// `top_k` of each layer's experts (the average for any routing: each expert is the same size).
    pub fn bytes_read_per_token(&self, top_k: usize) -> u64 {
        let bytes = |t: &Tensor| t.as_bytes().len() as u64;
        let embed_row = bytes(&self.embed) / self.embed.dims()[0] as u64;
        let mut total = embed_row + bytes(&self.norm) + bytes(&self.lm_head);
        for l in &self.layers {
            total += [
                &l.attn_norm,
                &l.wq,
                &l.wk,
                &l.wv,
                &l.wo,
                &l.moe_norm,
                &l.router,
            ]
            .into_iter()
            .map(bytes)
            .sum::<u64>();
            let experts: u64 = l
                .experts
                .iter()
                .map(|e| bytes(&e.w1) + bytes(&e.w2) + bytes(&e.w3))
                .sum();
            total += experts * top_k as u64 / l.experts.len() as u64;
        }
        total
    }
}

fn load_layer(ld: &mut Loader<'_>, cfg: &Config, layout: Layout, l: usize) -> Result<LayerWeights> {
    let (d, q, kv, e) = (
        cfg.hidden_size,
        cfg.q_dim(),
        cfg.kv_dim(),
        cfg.num_local_experts,
    );
    let fused = layout == Layout::HuggingFace && ld.has(&names::fused_gate_up(l));
    let merged = layout
        .merged_experts(l, ExpertMatrix::W1)
        .is_some_and(|n| ld.has(&n));
    let router_name = if fused {
        names::fused_router(l)
    } else {
        layout.router(l)
    };
    Ok(LayerWeights {
        attn_norm: ld.get(&layout.attn_norm(l), &[d])?,
        wq: ld.get(&layout.wq(l), &[q, d])?,
        wk: ld.get(&layout.wk(l), &[kv, d])?,
        wv: ld.get(&layout.wv(l), &[kv, d])?,
        wo: ld.get(&layout.wo(l), &[d, q])?,
        moe_norm: ld.get(&layout.moe_norm(l), &[d])?,
        router: ld.get(&router_name, &[e, d])?,
        experts: if fused {
            fused_experts(ld, cfg, l)?
        } else if merged {
            merged_experts(ld, cfg, layout, l)?
        } else {
            split_experts(ld, cfg, layout, l)?
        },
    })
}

fn split_experts(
    ld: &mut Loader<'_>,
    cfg: &Config,
    layout: Layout,
    l: usize,
) -> Result<Vec<ExpertWeights>> {
    let (d, f) = (cfg.hidden_size, cfg.intermediate_size);
    (0..cfg.num_local_experts)
        .map(|e| {
            Ok(ExpertWeights {
                w1: ld.get(&layout.expert(l, e, ExpertMatrix::W1), &[f, d])?,
                w2: ld.get(&layout.expert(l, e, ExpertMatrix::W2), &[d, f])?,
                w3: ld.get(&layout.expert(l, e, ExpertMatrix::W3), &[f, d])?,
            })
        })
        .collect()
}

/// Experts of GGUF's merged layout: one 3-D tensor per matrix, each expert a borrowed slab
/// (quantized rows stay whole blocks: a slab is whole rows).
fn merged_experts(
    ld: &mut Loader<'_>,
    cfg: &Config,
    layout: Layout,
    l: usize,
) -> Result<Vec<ExpertWeights>> {
    let (d, f, e) = (
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.num_local_experts,
    );
    let name = |m| layout.merged_experts(l, m).expect("a merged layout");
    let gate = ld.get(&name(ExpertMatrix::W1), &[e, f, d])?;
    let down = ld.get(&name(ExpertMatrix::W2), &[e, d, f])?;
    let up = ld.get(&name(ExpertMatrix::W3), &[e, f, d])?;
    (0..e)
        .map(|i| {
            Ok(ExpertWeights {
                w1: gate.index_outer(i)?,
                w2: down.index_outer(i)?,
                w3: up.index_outer(i)?,
            })
        })
        .collect()
}

/// Experts of the transformers 5.x layout, each a borrowed slice of the 3-D tensors.
fn fused_experts(ld: &mut Loader<'_>, cfg: &Config, l: usize) -> Result<Vec<ExpertWeights>> {
    let (d, f, e) = (
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.num_local_experts,
    );
    let gate_up = ld.get(&names::fused_gate_up(l), &[e, 2 * f, d])?;
    let down = ld.get(&names::fused_down(l), &[e, d, f])?;
    (0..e)
        .map(|i| {
            let gu = gate_up.index_outer(i)?; // [2F, D], gate rows first
            Ok(ExpertWeights {
                w1: gu.narrow_outer(0, f)?,
                w3: gu.narrow_outer(f, f)?,
                w2: down.index_outer(i)?,
            })
        })
        .collect()
}
