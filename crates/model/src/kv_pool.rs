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
//!
//! **Prefix caching.** A page filled with 64 committed positions can be *published*: indexed
//! by a hash of its tokens and of the page before it, so that another cache whose tokens
//! begin the same way takes the page instead of computing it again (vLLM's automatic prefix
//! caching). Pages are reference-counted: a published page that no cache holds any more
//! stays cached, evicted least recently released first when a page is needed. A cache never
//! writes into a page another holds or the index points at: it copies the page first.
//!
//! The hash is SipHash keyed at random per pool (std's `RandomState`), so a client cannot
//! craft prompts whose pages collide; and a match also compares the tokens and the previous
//! page, so even a collision gives a miss, never another prompt's keys.

use crate::kv_cache::Store;
use crate::{Config, Error, KvDType, Result};
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
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
            .field("cached", &p.lru.len())
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
    /// Caches holding each page.
    refs: Vec<u32>,
    /// What each published page holds (`None`: unpublished).
    keys: Vec<Option<PageKey>>,
    /// Published pages by their hash.
    index: HashMap<u64, u32>,
    /// Published pages no cache holds, by the tick they were released at (oldest first).
    lru: BTreeMap<u64, u32>,
    /// The tick each page in `lru` was released at.
    released_at: Vec<u64>,
    /// Times each page was taken: a key names its parent by page and generation, so a
    /// child of an evicted page never matches the page's next contents.
    generation: Vec<u32>,
    clock: u64,
    hasher: std::hash::RandomState,
}

/// What a published page holds: its tokens, the page before it (`None` for a first page)
/// and its hash, which covers both and the cache's root (see [`Pool::publish`]).
#[derive(Debug)]
struct PageKey {
    hash: u64,
    /// The page before it, and that page's generation.
    parent: Option<(u32, u32)>,
    tokens: Box<[u32]>,
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
            refs: vec![0; pages],
            keys: (0..pages).map(|_| None).collect(),
            index: HashMap::new(),
            lru: BTreeMap::new(),
            released_at: vec![0; pages],
            generation: vec![0; pages],
            clock: 0,
            hasher: std::hash::RandomState::new(),
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

    /// Pages no cache holds, cached ones included (they are evicted when needed).
    pub fn free_pages(&self) -> usize {
        self.lock().available()
    }

    /// Published pages no cache holds: kept for later prefixes until a page is needed.
    pub fn cached_pages(&self) -> usize {
        self.lock().lru.len()
    }

    /// The pool's state. A panic while it was held (a bug in a kernel) leaves only pages'
    /// contents half written, which their cache's length never counts: go on with it.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Pool> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Pool {
    /// Pages a cache can take: the free ones and the cached ones no cache holds.
    pub(crate) fn available(&self) -> usize {
        self.free.len() + self.lru.len()
    }

    /// A page for the caller alone: a free one, else the least recently released cached
    /// one, unpublished first.
    pub(crate) fn take(&mut self) -> Result<u32> {
        let page = match self.free.pop() {
            Some(page) => page,
            None => {
                let (_, page) = self.lru.pop_first().ok_or(Error::KvPool(
                    "no free page: the scheduler's budget is larger than its pool",
                ))?;
                self.unpublish(page);
                page
            }
        };
        self.refs[page as usize] = 1;
        self.generation[page as usize] = self.generation[page as usize].wrapping_add(1);
        Ok(page)
    }

    /// One more holder of `page` (a published page found by [`Pool::lookup`]).
    pub(crate) fn acquire(&mut self, page: u32) {
        let p = page as usize;
        if self.refs[p] == 0 {
            self.lru.remove(&self.released_at[p]);
        }
        self.refs[p] += 1;
    }

    /// One holder fewer of each page, released in order: a page no cache holds stays
    /// cached if it is published, and is free otherwise. A cache releases its last page
    /// first, so a prefix is evicted from its end and its first pages, the ones most
    /// shared, last.
    pub(crate) fn release(&mut self, pages: impl IntoIterator<Item = u32>) {
        for page in pages {
            let p = page as usize;
            self.refs[p] = self.refs[p].saturating_sub(1);
            if self.refs[p] > 0 {
                continue;
            }
            if self.keys[p].is_some() {
                self.clock += 1;
                self.released_at[p] = self.clock;
                self.lru.insert(self.clock, page);
            } else {
                self.free.push(page);
            }
        }
    }

    /// Whether writing into `page` would change what another cache or the index reads.
    pub(crate) fn is_shared(&self, page: u32) -> bool {
        self.refs[page as usize] > 1 || self.keys[page as usize].is_some()
    }

    /// The parent hash of a cache's first page: the same for every cache without a salt,
    /// and one per salt (so caches of different salts never share a page).
    pub(crate) fn root(&self, salt: &[u8]) -> u64 {
        match salt {
            [] => 0,
            salt => self.hasher.hash_one(("cache salt", salt)),
        }
    }

    /// The hash of a page of `tokens` after the page hashed `parent` (`root` for a first
    /// page: the cache's salt, so that only caches of the same root share pages).
    pub(crate) fn hash(&self, parent: u64, tokens: &[u32]) -> u64 {
        self.hasher.hash_one((parent, tokens))
    }

    /// The published page holding `tokens` after `parent` (a page of the caller's, or
    /// `None` for a first page) whose hash is `hash`.
    pub(crate) fn lookup(&self, hash: u64, parent: Option<u32>, tokens: &[u32]) -> Option<u32> {
        let page = *self.index.get(&hash)?;
        let key = self.keys[page as usize].as_ref()?;
        (key.parent == self.with_generation(parent) && *key.tokens == *tokens).then_some(page)
    }

    /// Indexes `page`, which holds `tokens` after `parent`, under `hash`. A page of the same
    /// hash already indexed (the same tokens computed twice, or a collision) keeps its place,
    /// and `page` stays unpublished.
    pub(crate) fn publish(&mut self, page: u32, hash: u64, parent: Option<u32>, tokens: &[u32]) {
        if self.index.contains_key(&hash) || self.keys[page as usize].is_some() {
            return;
        }
        self.index.insert(hash, page);
        self.keys[page as usize] = Some(PageKey {
            hash,
            parent: self.with_generation(parent),
            tokens: tokens.into(),
        });
    }

    fn with_generation(&self, page: Option<u32>) -> Option<(u32, u32)> {
        page.map(|p| (p, self.generation[p as usize]))
    }

    /// Takes `page` out of the index (it is about to hold something else).
    fn unpublish(&mut self, page: u32) {
        if let Some(key) = self.keys[page as usize].take()
            && self.index.get(&key.hash) == Some(&page)
        {
            self.index.remove(&key.hash);
        }
    }

    /// Copies every layer's keys and values of page `from` into page `to`.
    pub(crate) fn copy_page(&mut self, from: u32, to: u32) {
        let (stride, from, to) = (self.stride, from as usize, to as usize);
        for (k, v) in &mut self.layers {
            k.copy_within(from * stride..(from + 1) * stride, to * stride);
            v.copy_within(from * stride..(from + 1) * stride, to * stride);
        }
    }
}
