//! `RoutingTrace`: which experts each token went to, layer by layer, for research code.

/// The router's choices for the tokens of one forward call.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RoutingTrace {
    /// `K`: experts per token.
    pub top_k: usize,
    /// One entry per layer.
    pub layers: Vec<LayerRouting>,
}

/// One layer's choices: `[T, K]` expert ids (most probable first) and their weights.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LayerRouting {
    /// Expert ids, `[T, K]` row-major.
    pub experts: Vec<u32>,
    /// Router weights (renormalised), `[T, K]` row-major.
    pub weights: Vec<f32>,
}

impl RoutingTrace {
    /// Tokens traced.
    pub fn n_tokens(&self) -> usize {
        self.layers
            .first()
            .map_or(0, |l| l.experts.len() / self.top_k.max(1))
    }

    /// The experts token `t` went to in `layer`, most probable first.
    pub fn experts(&self, layer: usize, t: usize) -> &[u32] {
        &self.layers[layer].experts[t * self.top_k..(t + 1) * self.top_k]
    }

    /// The weights matching [`RoutingTrace::experts`].
    pub fn weights(&self, layer: usize, t: usize) -> &[f32] {
        &self.layers[layer].weights[t * self.top_k..(t + 1) * self.top_k]
    }

    /// Appends another call's trace (e.g. a decode step after a prefill).
    pub fn extend(&mut self, other: RoutingTrace) {
        if self.layers.is_empty() {
            *self = other;
            return;
        }
        for (mine, theirs) in self.layers.iter_mut().zip(other.layers) {
            mine.experts.extend(theirs.experts);
            mine.weights.extend(theirs.weights);
        }
    }
}
