//! `KvCache`: one sequence's cached keys and values, on whichever device its model runs, with
//! the length and the router steering they were computed under.

use crate::device::cpu::Cpu;
use crate::device::cuda::CudaKv;
use crate::device::{Acts, KvStore};
use crate::kv_cache::{BLOCK_POSITIONS, HostKv};
use crate::{KvDType, Result};

/// Where the keys and values live.
pub(crate) enum Store {
    /// Host memory, with the sequence's own activation buffers (sized by its first calls and
    /// reused, so a decode step allocates nothing).
    Host(HostKv, Option<Box<Acts<Cpu>>>),
    /// GPU memory (the activations are the model's: one stream runs one call at a time).
    Cuda(CudaKv),
}

/// The KV cache of one sequence: per layer, keys and values for positions `0..len()`.
///
/// A forward call appends its rows to each layer as it goes and the new length is committed
/// when the call ends, so positions passed to the model must continue from [`KvCache::len`].
/// Made by [`crate::Model::new_cache`] on the model's device.
pub struct KvCache {
    len: usize,
    /// [`crate::Intervention::fingerprint`] of the steering the cached positions were
    /// computed under (0: none).
    steering: u64,
    pub(crate) store: Store,
    /// The last call's logits `[rows, V]` on the host.
    pub(crate) logits: Vec<f32>,
}

impl std::fmt::Debug for KvCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvCache")
            .field("len", &self.len)
            .field("dtype", &self.dtype())
            .field("reserved_bytes", &self.reserved_bytes())
            .finish_non_exhaustive()
    }
}

impl KvCache {
    /// An empty host cache of f32 for `n_layers` layers of `n_kv_heads` key/value heads of
    /// `head_dim`.
    pub fn new(n_layers: usize, n_kv_heads: usize, head_dim: usize) -> KvCache {
        KvCache::with_dtype(n_layers, n_kv_heads, head_dim, KvDType::F32)
    }

    /// An empty host cache storing keys and values as `dtype`.
    pub fn with_dtype(
        n_layers: usize,
        n_kv_heads: usize,
        head_dim: usize,
        dtype: KvDType,
    ) -> KvCache {
        let kv = HostKv::new(n_layers, n_kv_heads, head_dim, dtype);
        KvCache::from_store(Store::Host(kv, None))
    }

    pub(crate) fn from_store(store: Store) -> KvCache {
        KvCache {
            len: 0,
            steering: 0,
            store,
            logits: Vec::new(),
        }
    }

    fn kv(&self) -> &dyn KvStore {
        match &self.store {
            Store::Host(kv, _) => kv,
            Store::Cuda(kv) => kv,
        }
    }

    fn kv_mut(&mut self) -> &mut dyn KvStore {
        match &mut self.store {
            Store::Host(kv, _) => kv,
            Store::Cuda(kv) => kv,
        }
    }

    /// The element type keys and values are stored in.
    pub fn dtype(&self) -> KvDType {
        match &self.store {
            Store::Host(kv, _) => kv.dtype(),
            Store::Cuda(kv) => kv.dtype(),
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
        let len = self.len;
        self.kv_mut().truncate(len);
    }

    /// Makes room for `positions` positions in every layer now, in whole blocks, so that
    /// filling them never reallocates (what a scheduler does when it admits a sequence under
    /// a memory budget of [`KvCache::block_bytes`] blocks). Fails only when device memory
    /// runs out.
    pub fn reserve(&mut self, positions: usize) -> Result<()> {
        self.kv_mut().reserve(positions)
    }

    /// Publishes the whole pages of a paged cache's positions (`ids` are their tokens, from
    /// position 0; at least [`KvCache::len`] of them are read) so that other caches of its
    /// pool start from them ([`crate::Model::new_paged_cache_from`]). A cache of its own
    /// has nothing to share: a no-op.
    pub fn publish_prefix(&mut self, ids: &[u32]) {
        let len = self.len;
        if let Store::Host(kv, _) = &mut self.store {
            kv.publish(ids, len);
        }
    }

    /// Positions per block: caches grow (and [`KvCache::reserve`] reserves) in whole blocks.
    pub const BLOCK_POSITIONS: usize = BLOCK_POSITIONS;

    /// Bytes one block of [`KvCache::BLOCK_POSITIONS`] positions takes across `n_layers`
    /// layers, keys and values.
    pub fn block_bytes(
        n_layers: usize,
        n_kv_heads: usize,
        head_dim: usize,
        dtype: KvDType,
    ) -> usize {
        2 * n_layers * n_kv_heads * head_dim * BLOCK_POSITIONS * dtype.bytes()
    }

    /// Bytes currently reserved for keys and values.
    pub fn reserved_bytes(&self) -> usize {
        self.kv().reserved_bytes()
    }

    /// Takes the cache for a call under steering `fingerprint`: an empty cache adopts it; a
    /// filled one must have been filled under the same.
    pub(crate) fn claim_steering(&mut self, fingerprint: u64) -> Result<()> {
        self.check_steering(fingerprint)?;
        if self.len == 0 {
            self.steering = fingerprint;
        }
        Ok(())
    }

    /// Whether a call under steering `fingerprint` may continue this cache (see
    /// [`KvCache::claim_steering`]), without taking it.
    pub(crate) fn check_steering(&self, fingerprint: u64) -> Result<()> {
        if self.len > 0 && self.steering != fingerprint {
            return Err(crate::Error::CacheSteering {
                cached: self.steering != 0,
                asked: fingerprint != 0,
            });
        }
        Ok(())
    }

    /// Makes the rows appended by a finished forward call part of the cache.
    pub(crate) fn commit(&mut self, n_tokens: usize) {
        self.len += n_tokens;
    }
}
