//! `KvPool`: the keys and values of many sequences in one allocation of fixed-size pages, the
//! way a scheduler holds its KV budget. A paged cache ([`crate::Model::new_paged_cache`])
//! takes pages from the pool as it grows and gives them back when dropped; attention reads
//! them through the cache's page table ([`mixtral_kernels::attention::Pages`]).
//!
//! Why one allocation: caches that each grow their own buffers fragment the heap under
//! churn (a 64-client load test's resident memory went 30% past its KV budget with kept
//! prefixes), and every growth copies the cache. Pages of one buffer are reused in place,
//! so resident memory never exceeds the budget, and a cache grows without copying.
//! The buffer is zero-allocated: the operating system maps its memory as pages are first
//! written, so an idle budget costs address space, not memory.

use crate::kv_cache::Store;
use crate::{Config, Error, KvDType, Result};
use std::sync::{Arc, Mutex, MutexGuard};

/// Positions per page. 64 is the attention kernels' online-softmax block, so a page never
/// splits one; smaller pages share prefixes more finely but cut those blocks short.
pub const PAGE_POSITIONS: usize = 64;

/// A pool of KV pages for one model shape and element type; clones share the pool.
#[derive(Clone)]
pub struct KvPool(Arc<Mutex<Pool>>);

impl std::fmt::Debug for KvPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = self.lock();
        f.debug_struct("KvPool")
            .field("pages", &p.pages)
            .field("free", &p.free.len())
            .field("dtype", &p.dtype)
            .finish()
    }
}

/// The pool's state: per layer, keys and values of every page, and the free pages.
pub(crate) struct Pool {
    pub(crate) n_layers: usize,
    pub(crate) n_kv_heads: usize,
    pub(crate) head_dim: usize,
    pub(crate) dtype: KvDType,
    pages: usize,
    /// Elements per page per layer: `G · P · Dh`.
    pub(crate) stride: usize,
    /// `(k, v)` per layer, `pages · stride` elements each.
    pub(crate) layers: Vec<(Store, Store)>,
    free: Vec<u32>,
}

impl KvPool {
    /// A pool of `pages` pages of [`PAGE_POSITIONS`] positions for a model of `config`'s
    /// layers and KV heads, storing `dtype`.
    ///
    /// # Errors
    /// [`Error::KvPool`] when the pool's size overflows or has no page.
    pub fn new(config: &Config, dtype: KvDType, pages: usize) -> Result<KvPool> {
        KvPool::with_shape(
            (
                config.num_hidden_layers,
                config.num_key_value_heads,
                config.head_dim,
            ),
            dtype,
            pages,
        )
    }

    /// [`KvPool::new`] for `(layers, KV heads, head_dim)`.
    pub(crate) fn with_shape(
        (n_layers, g, dh): (usize, usize, usize),
        dtype: KvDType,
        pages: usize,
    ) -> Result<KvPool> {
        let stride = g
            .checked_mul(PAGE_POSITIONS)
            .and_then(|x| x.checked_mul(dh))
            .ok_or(Error::KvPool("a page's size overflows"))?;
        let elems = stride
            .checked_mul(pages)
            .filter(|&n| n.checked_mul(dtype.bytes()).is_some() && pages <= u32::MAX as usize)
            .ok_or(Error::KvPool("the pool's size overflows"))?;
        if pages == 0 {
            return Err(Error::KvPool("a pool needs at least one page"));
        }
        let layers = (0..n_layers)
            .map(|_| (Store::zeroed(dtype, elems), Store::zeroed(dtype, elems)))
            .collect();
        Ok(KvPool(Arc::new(Mutex::new(Pool {
            n_layers,
            n_kv_heads: g,
            head_dim: dh,
            dtype,
            pages,
            stride,
            layers,
            // Popped from the end: page 0 first.
            free: (0..pages as u32).rev().collect(),
        }))))
    }

    /// Bytes one page takes across `n_layers` layers, keys and values.
    pub fn page_bytes(
        n_layers: usize,
        n_kv_heads: usize,
        head_dim: usize,
        dtype: KvDType,
    ) -> usize {
        2 * n_layers * n_kv_heads * head_dim * PAGE_POSITIONS * dtype.bytes()
    }

    /// Pages in the pool.
    pub fn pages(&self) -> usize {
        self.lock().pages
    }

    /// Pages no cache holds.
    pub fn free_pages(&self) -> usize {
        self.lock().free.len()
    }

    /// The pool's state. A panic while it was held (a bug in a kernel) leaves only pages'
    /// contents half written, which their cache's length never counts: go on with it.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Pool> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Pool {
    /// A free page, or an error naming how many were wanted.
    pub(crate) fn take(&mut self) -> Result<u32> {
        self.free.pop().ok_or(Error::KvPool(
            "no free page: the scheduler's budget is larger than its pool",
        ))
    }

    /// Pages back to the free list.
    pub(crate) fn give_back(&mut self, pages: &[u32]) {
        self.free.extend_from_slice(pages);
    }
}
