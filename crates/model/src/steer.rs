//! Steering the router: interventions applied inside the graph, per request, to the router's
//! logits of every layer (before the softmax), as a researcher patches transformers'
//! `MixtralTopKRouter`.

use crate::{Config, Error, Result};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// One layer's router logits as a [`RouterHook`] sees them: `[T, E]` row-major, one row per
/// token of the call, with each token's absolute position.
#[derive(Debug)]
pub struct RouterLogits<'a> {
    /// The layer.
    pub layer: usize,
    /// Each row's position in the sequence.
    pub positions: &'a [usize],
    /// `E`.
    pub n_experts: usize,
    /// The logits, `[T, E]`; set an expert's to `f32::NEG_INFINITY` to remove it.
    pub logits: &'a mut [f32],
}

impl RouterLogits<'_> {
    /// Token `t`'s logits over the experts.
    pub fn token(&mut self, t: usize) -> &mut [f32] {
        let e = self.n_experts;
        &mut self.logits[t * e..(t + 1) * e]
    }
}

/// A user function run on each layer's router logits after the named interventions and
/// before the softmax (for what [`Intervention`]'s fields do not cover).
pub type RouterHook = Arc<dyn Fn(&mut RouterLogits<'_>) + Send + Sync>;

/// A routing forced at some positions of one layer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ForceRouting {
    /// The layer.
    pub layer: usize,
    /// Absolute positions in the sequence (tokens elsewhere route as usual).
    pub positions: Vec<usize>,
    /// The experts chosen there, in this order (as many as experts per token); their weights
    /// are the softmax over their own router logits.
    pub experts: Vec<u32>,
}

/// Interventions on the router, applied in every forward call of a request, the decoded
/// tokens included. The default changes nothing.
#[derive(Clone, Default)]
pub struct Intervention {
    /// `(layer, expert)` pairs removed: their logits become −∞ before the softmax, so the
    /// top-k is taken among the rest and the weights renormalised over the chosen as usual.
    pub ablate: Vec<(usize, usize)>,
    /// Experts removed in every layer.
    pub ablate_everywhere: Vec<usize>,
    /// Routings forced at given positions.
    pub force: Vec<ForceRouting>,
    /// Experts per token, 1 … E, instead of the model's.
    pub experts_per_token: Option<usize>,
    /// A function run on each layer's logits last.
    pub hook: Option<RouterHook>,
}

impl std::fmt::Debug for Intervention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intervention")
            .field("ablate", &self.ablate)
            .field("ablate_everywhere", &self.ablate_everywhere)
            .field("force", &self.force)
            .field("experts_per_token", &self.experts_per_token)
            .field("hook", &self.hook.as_ref().map(|_| "Fn"))
            .finish()
    }
}

impl PartialEq for Intervention {
    /// Equal named interventions and the same hook (the same `Arc`), as
    /// [`Intervention::fingerprint`] compares them.
    fn eq(&self, other: &Intervention) -> bool {
        let same_hook = match (&self.hook, &other.hook) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        same_hook
            && self.ablate == other.ablate
            && self.ablate_everywhere == other.ablate_everywhere
            && self.force == other.force
            && self.experts_per_token == other.experts_per_token
    }
}

impl Intervention {
    /// True when it changes nothing.
    pub fn is_none(&self) -> bool {
        self.ablate.is_empty()
            && self.ablate_everywhere.is_empty()
            && self.force.is_empty()
            && self.experts_per_token.is_none()
            && self.hook.is_none()
    }

    /// Experts per token under this intervention.
    pub fn top_k(&self, cfg: &Config) -> usize {
        self.experts_per_token.unwrap_or(cfg.num_experts_per_tok)
    }

    /// Whether expert `e` of layer `l` is removed.
    pub(crate) fn ablated(&self, l: usize, e: usize) -> bool {
        self.ablate_everywhere.contains(&e) || self.ablate.contains(&(l, e))
    }

    /// Checks every layer, expert and count against `cfg`: top-k in 1 … E, at least top-k
    /// experts left in every layer, forced routings of exactly top-k distinct experts.
    pub fn validate(&self, cfg: &Config) -> Result<()> {
        let (layers, experts) = (cfg.num_hidden_layers, cfg.num_local_experts);
        let bad = |reason: String| Err(Error::Intervention { reason });
        let k = self.top_k(cfg);
        if k == 0 || k > experts {
            return bad(format!("{k} experts per token: the model has {experts}"));
        }
        for &(l, e) in &self.ablate {
            if l >= layers || e >= experts {
                return bad(format!(
                    "ablate {l}:{e}: the model has {layers} layers of {experts} experts"
                ));
            }
        }
        if let Some(&e) = self.ablate_everywhere.iter().find(|&&e| e >= experts) {
            return bad(format!(
                "ablate expert {e}: the model has {experts} experts"
            ));
        }
        for l in 0..layers {
            let left = (0..experts).filter(|&e| !self.ablated(l, e)).count();
            if left < k {
                return bad(format!(
                    "layer {l} keeps {left} experts after ablation, fewer than {k} per token"
                ));
            }
        }
        for f in &self.force {
            if let Some(&e) = f
                .experts
                .iter()
                .find(|&&e| self.ablated(f.layer, e as usize))
            {
                return bad(format!(
                    "expert {e} of layer {} is both forced and ablated",
                    f.layer
                ));
            }
            if f.layer >= layers {
                return bad(format!(
                    "force at layer {}: the model has {layers}",
                    f.layer
                ));
            }
            let mut seen = f.experts.clone();
            seen.sort_unstable();
            seen.dedup();
            if f.experts.len() != k
                || seen.len() != k
                || seen.iter().any(|&e| e as usize >= experts)
            {
                return bad(format!(
                    "force at layer {}: {:?} must be {k} distinct experts below {experts}",
                    f.layer, f.experts
                ));
            }
        }
        Ok(())
    }

    /// Identifies what this intervention computes, for the cache: a cache filled under one
    /// intervention must not be continued under another. A hook counts as itself (the same
    /// `Arc`), since its effect cannot be compared. 0 for no intervention.
    pub fn fingerprint(&self) -> u64 {
        if self.is_none() {
            return 0;
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.ablate.hash(&mut h);
        self.ablate_everywhere.hash(&mut h);
        self.force.hash(&mut h);
        self.experts_per_token.hash(&mut h);
        self.hook
            .as_ref()
            .map(|f| Arc::as_ptr(f).cast::<()>() as usize)
            .hash(&mut h);
        h.finish() | 1
    }

    /// Applies the ablations and the hook to layer `l`'s logits `[T, E]`.
    pub(crate) fn edit_logits(&self, l: usize, positions: &[usize], e: usize, logits: &mut [f32]) {
        for row in logits.chunks_exact_mut(e) {
            for (x, v) in row.iter_mut().enumerate() {
                if self.ablated(l, x) {
                    *v = f32::NEG_INFINITY;
                }
            }
        }
        if let Some(hook) = &self.hook {
            hook(&mut RouterLogits {
                layer: l,
                positions,
                n_experts: e,
                logits,
            });
        }
    }

    /// Overwrites the choices of forced positions of layer `l`: `ids`/`weights` `[T, K]`.
    #[expect(
        clippy::too_many_arguments,
        reason = "the layer's logits and choices, in and out"
    )]
    pub(crate) fn force_choices(
        &self,
        l: usize,
        positions: &[usize],
        logits: &[f32],
        e: usize,
        ids: &mut [u32],
        weights: &mut [f32],
    ) {
        for f in self.force.iter().filter(|f| f.layer == l) {
            let k = f.experts.len();
            for (t, p) in positions.iter().enumerate() {
                if !f.positions.contains(p) {
                    continue;
                }
                let row = &logits[t * e..(t + 1) * e];
                let chosen: Vec<f32> = f.experts.iter().map(|&x| row[x as usize]).collect();
                let max = chosen.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let exps: Vec<f32> = chosen.iter().map(|v| (v - max).exp()).collect();
                let sum: f32 = exps.iter().sum();
                ids[t * k..(t + 1) * k].copy_from_slice(&f.experts);
                for (w, x) in weights[t * k..(t + 1) * k].iter_mut().zip(&exps) {
                    *w = x / sum;
                }
            }
        }
    }
}
