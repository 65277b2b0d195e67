//! `KvCache`: the keys and values of every layer for the positions already processed.

/// Positions reserved at a time: the cache grows in blocks as the sequence does, so a 32k
/// context costs memory only once it is used.
const BLOCK_POSITIONS: usize = 256;

/// Keys and values of one layer, `[S, G·Dh]` each, row `s` holding position `s`.
#[derive(Clone, Debug, Default)]
struct LayerKv {
    k: Vec<f32>,
    v: Vec<f32>,
}

/// The KV cache of one sequence: per layer, keys and values for positions `0..len()`.
///
/// A forward call appends its rows to each layer as it goes and the new length is committed
/// when the call ends, so positions passed to the model must continue from [`KvCache::len`].
///
/// The cache also owns the sequence's scratch buffers (activations, the MoE kernel's buffers,
/// the RoPE table), sized by the first calls and reused, so a decode step allocates nothing.
#[derive(Debug)]
pub struct KvCache {
    kv_dim: usize,
    len: usize,
    layers: Vec<LayerKv>,
    pub(crate) scratch: crate::scratch::Scratch,
}

impl KvCache {
    /// An empty cache for `n_layers` layers of `kv_dim` (= `G·Dh`) wide keys and values.
    pub fn new(n_layers: usize, kv_dim: usize) -> KvCache {
        KvCache {
            kv_dim,
            len: 0,
            layers: vec![LayerKv::default(); n_layers],
            scratch: Default::default(),
        }
    }

    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no position is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every position from `len` on (to reuse a prompt prefix, or start over with 0).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
        for layer in &mut self.layers {
            layer.k.truncate(self.len * self.kv_dim);
            layer.v.truncate(self.len * self.kv_dim);
        }
    }

    /// Bytes currently reserved for keys and values.
    pub fn reserved_bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| (l.k.capacity() + l.v.capacity()) * std::mem::size_of::<f32>())
            .sum()
    }

    /// Appends rows of keys and values to `layer` (uncommitted until [`KvCache::commit`]).
    pub(crate) fn append(&mut self, layer: usize, k: &[f32], v: &[f32]) {
        let kv = &mut self.layers[layer];
        let need = kv.k.len() + k.len();
        if kv.k.capacity() < need {
            let block = BLOCK_POSITIONS * self.kv_dim;
            let target = need.div_ceil(block) * block;
            kv.k.reserve_exact(target - kv.k.len());
            kv.v.reserve_exact(target - kv.v.len());
        }
        kv.k.extend_from_slice(k);
        kv.v.extend_from_slice(v);
    }

    /// Keys and values of `layer` for every position appended so far, `[S, G·Dh]` each.
    pub(crate) fn layer(&self, layer: usize) -> (&[f32], &[f32]) {
        let kv = &self.layers[layer];
        (&kv.k, &kv.v)
    }

    /// Makes the rows appended by the current forward call part of the cache.
    pub(crate) fn commit(&mut self, n_tokens: usize) {
        self.len += n_tokens;
        debug_assert!(
            self.layers
                .iter()
                .all(|l| l.k.len() == self.len * self.kv_dim)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_in_blocks_not_up_front() {
        let mut c = KvCache::new(2, 4);
        assert_eq!(c.reserved_bytes(), 0);
        for layer in 0..2 {
            c.append(layer, &[1.0; 12], &[2.0; 12]);
        }
        c.commit(3);
        assert_eq!(c.len(), 3);
        assert_eq!(c.reserved_bytes(), 2 * 2 * BLOCK_POSITIONS * 4 * 4);
        c.truncate(1);
        assert_eq!(c.layer(1).0.len(), 4);
    }
}
