//! `KvCache`: the keys and values of every layer for the positions already processed.

/// Positions reserved at a time: the cache grows in blocks as the sequence does, so a 32k
/// context costs memory only once it is used.
const BLOCK_POSITIONS: usize = 256;

use mixtral_kernels::attention::Kv;

/// Keys and values of one layer, `[G, capacity, Dh]` each: every KV head's positions are one
/// contiguous run, so attention reads each head's keys and values as one sequential stream
/// (see [`Kv::by_head`]).
#[derive(Clone, Debug, Default)]
struct LayerKv {
    k: Vec<f32>,
    v: Vec<f32>,
    /// Positions written (committed or not).
    filled: usize,
    /// Positions the buffers hold room for.
    capacity: usize,
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
    n_kv_heads: usize,
    head_dim: usize,
    len: usize,
    layers: Vec<LayerKv>,
    /// [`crate::Intervention::fingerprint`] of the steering the cached positions were
    /// computed under (0: none).
    steering: u64,
    pub(crate) scratch: crate::scratch::Scratch,
}

impl KvCache {
    /// An empty cache for `n_layers` layers of `n_kv_heads` key/value heads of `head_dim`.
    pub fn new(n_layers: usize, n_kv_heads: usize, head_dim: usize) -> KvCache {
        KvCache {
            n_kv_heads,
            head_dim,
            len: 0,
            steering: 0,
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
            layer.filled = layer.filled.min(self.len);
        }
    }

    /// Bytes currently reserved for keys and values.
    pub fn reserved_bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| (l.k.len() + l.v.len()) * std::mem::size_of::<f32>())
            .sum()
    }

    /// Appends rows of keys and values (`[T, G·Dh]`, as the projections produce them) to
    /// `layer` (uncommitted until [`KvCache::commit`]).
    pub(crate) fn append(&mut self, layer: usize, k: &[f32], v: &[f32]) {
        let (g_n, dh) = (self.n_kv_heads, self.head_dim);
        let width = g_n * dh;
        assert_eq!(k.len(), v.len(), "kv cache: k and v lengths differ");
        if width == 0 {
            return;
        }
        let rows = k.len() / width;
        let kv = &mut self.layers[layer];
        if kv.capacity < kv.filled + rows {
            kv.grow(g_n, dh, kv.filled + rows);
        }
        for (dst, src) in [(&mut kv.k, k), (&mut kv.v, v)] {
            for (r, row) in src.chunks_exact(width).enumerate() {
                for (g, head) in row.chunks_exact(dh).enumerate() {
                    let at = (g * kv.capacity + kv.filled + r) * dh;
                    dst[at..at + dh].copy_from_slice(head);
                }
            }
        }
        kv.filled += rows;
    }

    /// Keys and values of `layer` for every position appended so far.
    pub(crate) fn layer(&self, layer: usize) -> Kv<'_> {
        let kv = &self.layers[layer];
        Kv {
            k: &kv.k,
            v: &kv.v,
            len: kv.filled,
            row_stride: self.head_dim,
            group_stride: kv.capacity * self.head_dim,
        }
    }

    /// Makes the rows appended by the current forward call part of the cache.
    /// Takes the cache for a call under steering `fingerprint`: an empty cache adopts it; a
    /// filled one must have been filled under the same.
    pub(crate) fn claim_steering(&mut self, fingerprint: u64) -> crate::Result<()> {
        if self.len == 0 {
            self.steering = fingerprint;
        } else if self.steering != fingerprint {
            return Err(crate::Error::CacheSteering {
                cached: self.steering != 0,
                asked: fingerprint != 0,
            });
        }
        Ok(())
    }

    pub(crate) fn commit(&mut self, n_tokens: usize) {
        self.len += n_tokens;
        debug_assert!(self.layers.iter().all(|l| l.filled == self.len));
    }
}

impl LayerKv {
    /// Room for at least `need` positions, in blocks of [`BLOCK_POSITIONS`]; each head's
    /// positions so far move to the start of its new run.
    fn grow(&mut self, n_kv_heads: usize, dh: usize, need: usize) {
        let capacity = need.div_ceil(BLOCK_POSITIONS) * BLOCK_POSITIONS;
        for m in [&mut self.k, &mut self.v] {
            let mut grown = vec![0f32; n_kv_heads * capacity * dh];
            for g in 0..n_kv_heads {
                let (from, to) = (g * self.capacity * dh, g * capacity * dh);
                let n = self.filled * dh;
                grown[to..to + n].copy_from_slice(&m[from..from + n]);
            }
            *m = grown;
        }
        self.capacity = capacity;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_in_blocks_not_up_front() {
        let mut c = KvCache::new(2, 2, 2);
        assert_eq!(c.reserved_bytes(), 0);
        for layer in 0..2 {
            c.append(layer, &[1.0; 12], &[2.0; 12]);
        }
        c.commit(3);
        assert_eq!(c.len(), 3);
        assert_eq!(c.reserved_bytes(), 2 * 2 * BLOCK_POSITIONS * 4 * 4);
        c.truncate(1);
        assert_eq!(c.layer(1).len, 1);
    }

    #[test]
    fn each_head_is_one_run_of_positions_across_growth() {
        // G = 3, Dh = 2; 200 then 100 positions: the second append outgrows one block.
        let (g_n, dh) = (3, 2);
        let row = |s: usize, g: usize| [(s * 10 + g) as f32, -((s * 10 + g) as f32)];
        let rows = |range: std::ops::Range<usize>| -> Vec<f32> {
            range
                .flat_map(|s| (0..g_n).flat_map(move |g| row(s, g)))
                .collect()
        };
        let mut c = KvCache::new(1, g_n, dh);
        for range in [0..200, 200..300] {
            let k = rows(range.clone());
            let v: Vec<f32> = k.iter().map(|x| x + 0.5).collect();
            c.append(0, &k, &v);
            c.commit(range.len());
        }
        let kv = c.layer(0);
        assert_eq!((kv.len, kv.row_stride), (300, dh));
        for s in [0, 199, 200, 299] {
            for g in 0..g_n {
                let at = kv.offset(g, s);
                assert_eq!(kv.k[at..at + dh], row(s, g), "k s {s} g {g}");
                assert_eq!(
                    kv.v[at..at + dh],
                    row(s, g).map(|x| x + 0.5),
                    "v s {s} g {g}"
                );
            }
        }
    }
}
