//! `HostKv`: the keys and values of every layer of one sequence in host memory, as the CPU
//! device stores them (the public [`crate::KvCache`] wraps it).

/// Positions reserved at a time: the cache grows in blocks as the sequence does, so a 32k
/// context costs memory only once it is used.
pub(crate) const BLOCK_POSITIONS: usize = 256;

use crate::Result;
use crate::kv_pool::{KvPool, PAGE_POSITIONS};
use half::{bf16, f16};
use mixtral_kernels::attention::Kv;

/// The element type a KV cache stores keys and values in. Attention widens them to f32 in
/// registers as it reads them; the arithmetic is f32 whatever this is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum KvDType {
    /// Exact: what the fixtures' f32 tolerance is checked on.
    #[default]
    F32,
    /// Half the bytes; 11-bit significands (keys and values of Mixtral stay far inside f16's
    /// range).
    F16,
    /// Half the bytes; 8-bit significands, f32's range.
    Bf16,
}

impl KvDType {
    /// Bytes per element.
    pub fn bytes(self) -> usize {
        match self {
            KvDType::F32 => 4,
            KvDType::F16 | KvDType::Bf16 => 2,
        }
    }
}

impl std::str::FromStr for KvDType {
    type Err = String;

    /// `f32`, `f16` or `bf16`.
    fn from_str(s: &str) -> std::result::Result<KvDType, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(KvDType::F32),
            "f16" => Ok(KvDType::F16),
            "bf16" => Ok(KvDType::Bf16),
            _ => Err(format!(
                "unknown KV cache dtype `{s}` (expected f32, f16 or bf16)"
            )),
        }
    }
}

/// One layer's keys or values in the cache's element type.
#[derive(Clone, Debug)]
pub(crate) enum Store {
    F32(Vec<f32>),
    F16(Vec<f16>),
    Bf16(Vec<bf16>),
}

impl Store {
    fn new(dtype: KvDType) -> Store {
        match dtype {
            KvDType::F32 => Store::F32(Vec::new()),
            KvDType::F16 => Store::F16(Vec::new()),
            KvDType::Bf16 => Store::Bf16(Vec::new()),
        }
    }

    /// `n` zeros, zero-allocated (the operating system maps the memory as it is written).
    pub(crate) fn zeroed(dtype: KvDType, n: usize) -> Store {
        match dtype {
            KvDType::F32 => Store::F32(vec![0.0; n]),
            KvDType::F16 => Store::F16(bytemuck::zeroed_vec(n)),
            KvDType::Bf16 => Store::Bf16(bytemuck::zeroed_vec(n)),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Store::F32(v) => v.len() * 4,
            Store::F16(v) => v.len() * 2,
            Store::Bf16(v) => v.len() * 2,
        }
    }

    /// Writes `src` (rounded to nearest even for a half-precision store) at `at`.
    fn write(&mut self, at: usize, src: &[f32]) {
        match self {
            Store::F32(v) => v[at..at + src.len()].copy_from_slice(src),
            Store::F16(v) => v[at..at + src.len()]
                .iter_mut()
                .zip(src)
                .for_each(|(d, &x)| *d = f16::from_f32(x)),
            Store::Bf16(v) => v[at..at + src.len()]
                .iter_mut()
                .zip(src)
                .for_each(|(d, &x)| *d = bf16::from_f32(x)),
        }
    }

    /// Copies `src` to `dst` within the store (a page copied before it is written).
    pub(crate) fn copy_within(&mut self, src: std::ops::Range<usize>, dst: usize) {
        match self {
            Store::F32(v) => v.copy_within(src, dst),
            Store::F16(v) => v.copy_within(src, dst),
            Store::Bf16(v) => v.copy_within(src, dst),
        }
    }

    /// A buffer of `len` elements holding, for each of `heads` runs, the first `n` elements of
    /// the run at `from · h` moved to `to · h`.
    fn regrow(&mut self, len: usize, heads: usize, (from, to, n): (usize, usize, usize)) {
        fn regrow<T: Copy + Default>(
            m: &mut Vec<T>,
            len: usize,
            heads: usize,
            (from, to, n): (usize, usize, usize),
        ) {
            let mut grown = vec![T::default(); len];
            for g in 0..heads {
                grown[g * to..g * to + n].copy_from_slice(&m[g * from..g * from + n]);
            }
            *m = grown;
        }
        match self {
            Store::F32(v) => regrow(v, len, heads, (from, to, n)),
            Store::F16(v) => regrow(v, len, heads, (from, to, n)),
            Store::Bf16(v) => regrow(v, len, heads, (from, to, n)),
        }
    }
}

/// One layer's keys and values as attention reads them, in the cache's element type.
#[derive(Clone, Copy, Debug)]
pub enum LayerView<'a> {
    /// An f32 cache.
    F32(Kv<'a, f32>),
    /// An f16 cache.
    F16(Kv<'a, f16>),
    /// A bf16 cache.
    Bf16(Kv<'a, bf16>),
}

impl LayerView<'_> {
    /// Positions held.
    pub fn len(&self) -> usize {
        match self {
            LayerView::F32(kv) => kv.len,
            LayerView::F16(kv) => kv.len,
            LayerView::Bf16(kv) => kv.len,
        }
    }

    /// True when no position is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Keys and values of one layer, `[G, capacity, Dh]` each: every KV head's positions are one
/// contiguous run, so attention reads each head's keys and values as one sequential stream
/// (see [`Kv::by_head`]).
#[derive(Clone, Debug)]
struct LayerKv {
    k: Store,
    v: Store,
    /// Positions written (committed or not).
    filled: usize,
    /// Positions the buffers hold room for.
    capacity: usize,
}

/// One sequence's keys and values in host memory: per layer, for the positions appended.
#[derive(Debug)]
pub(crate) struct HostKv {
    n_kv_heads: usize,
    head_dim: usize,
    dtype: KvDType,
    body: Body,
}

/// Where a host cache keeps its rows.
#[derive(Debug)]
enum Body {
    /// Buffers of its own, grown by reallocation (a session's cache).
    Owned(Vec<LayerKv>),
    /// Pages of a shared pool (a scheduler's sequences).
    Paged(PagedKv),
}

/// A cache's pages in a [`KvPool`], and the positions each layer holds.
struct PagedKv {
    pool: KvPool,
    /// Page of each run of [`PAGE_POSITIONS`] positions.
    table: Vec<u32>,
    /// Positions written per layer (committed or not).
    filled: Vec<usize>,
    /// The prefix hash of each leading page whose tokens are known (published, or taken
    /// from the index): page `i`'s covers pages `0..=i`.
    hashes: Vec<u64>,
    /// The parent hash of the first page ([`crate::kv_pool::Pool::root`] of the salt).
    root: u64,
}

impl std::fmt::Debug for PagedKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PagedKv")
            .field("pages", &self.table.len())
            .field("filled", &self.filled.first())
            .finish()
    }
}

impl Drop for PagedKv {
    fn drop(&mut self) {
        // The last page first: a cached prefix is evicted from its end.
        self.pool.lock().release(self.table.iter().rev().copied());
    }
}

impl PagedKv {
    /// Pages enough for `positions` positions, taken from the pool now.
    fn reserve(&mut self, positions: usize) -> Result<()> {
        let need = positions.div_ceil(PAGE_POSITIONS);
        if self.table.len() < need {
            let mut pool = self.pool.lock();
            while self.table.len() < need {
                let page = pool.take()?;
                self.table.push(page);
            }
        }
        Ok(())
    }

    /// Gives the cache pages of its own for the positions `range` is about to write: a page
    /// another cache holds, or the index points at, is copied first (copy on write).
    fn own(&mut self, range: std::ops::Range<usize>) -> Result<()> {
        if range.is_empty() {
            return Ok(());
        }
        let mut pool = self.pool.lock();
        for i in range.start / PAGE_POSITIONS..=(range.end - 1) / PAGE_POSITIONS {
            let old = self.table[i];
            if pool.is_shared(old) {
                let new = pool.take()?;
                pool.copy_page(old, new);
                pool.release([old]);
                self.table[i] = new;
                self.hashes.truncate(i);
            }
        }
        Ok(())
    }

    /// Publishes every whole page of the first `len` positions not yet published, `ids`
    /// being their tokens. A page another cache already published with the same tokens
    /// after the same pages (two requests computed a shared prefix at once) is taken in
    /// place of this cache's copy, which is freed: so the cache's later pages hang off an
    /// indexed parent and can be found, and the prefix is held once. (Whole committed pages
    /// are never written again, so the swap changes nothing the cache reads, but the copy's
    /// last bits where the two were computed in different batches.)
    fn publish(&mut self, ids: &[u32], len: usize) {
        let whole = len.min(ids.len()) / PAGE_POSITIONS;
        if self.hashes.len() >= whole {
            return;
        }
        let mut pool = self.pool.lock();
        for i in self.hashes.len()..whole {
            let tokens = &ids[i * PAGE_POSITIONS..(i + 1) * PAGE_POSITIONS];
            let parent = i.checked_sub(1);
            let hash = pool.hash(parent.map_or(self.root, |p| self.hashes[p]), tokens);
            let parent = parent.map(|p| self.table[p]);
            match pool.lookup(hash, parent, tokens) {
                Some(twin) if twin != self.table[i] => {
                    pool.acquire(twin);
                    pool.release([self.table[i]]);
                    self.table[i] = twin;
                }
                Some(_) => {}
                None => pool.publish(self.table[i], hash, parent, tokens),
            }
            self.hashes.push(hash);
        }
    }

    /// Takes the published pages that hold the longest run of whole pages of `ids`, at most
    /// `max_pages`; returns how many.
    fn take_prefix(&mut self, ids: &[u32], max_pages: usize) -> usize {
        let mut pool = self.pool.lock();
        for (i, tokens) in ids.chunks_exact(PAGE_POSITIONS).take(max_pages).enumerate() {
            let parent = i.checked_sub(1);
            let hash = pool.hash(parent.map_or(self.root, |p| self.hashes[p]), tokens);
            let Some(page) = pool.lookup(hash, parent.map(|p| self.table[p]), tokens) else {
                break;
            };
            pool.acquire(page);
            self.table.push(page);
            self.hashes.push(hash);
        }
        self.table.len()
    }
}

impl HostKv {
    /// An empty cache storing keys and values as `dtype`.
    pub(crate) fn new(
        n_layers: usize,
        n_kv_heads: usize,
        head_dim: usize,
        dtype: KvDType,
    ) -> HostKv {
        let layer = LayerKv {
            k: Store::new(dtype),
            v: Store::new(dtype),
            filled: 0,
            capacity: 0,
        };
        HostKv {
            n_kv_heads,
            head_dim,
            dtype,
            body: Body::Owned(vec![layer; n_layers]),
        }
    }

    /// An empty cache taking its pages from `pool` as it grows.
    pub(crate) fn paged(pool: &KvPool) -> HostKv {
        let p = pool.lock();
        HostKv {
            n_kv_heads: p.n_kv_heads,
            head_dim: p.head_dim,
            dtype: p.dtype,
            body: Body::Paged(PagedKv {
                pool: pool.clone(),
                table: vec![],
                filled: vec![0; p.n_layers],
                hashes: vec![],
                root: p.root(&[]),
            }),
        }
    }

    /// A cache taking its pages from `pool`, starting with the published pages that hold
    /// the longest run of whole pages of `ids` (at most `max_positions` positions) that
    /// caches of the same `salt` published; returns it and the positions it holds.
    pub(crate) fn paged_from(
        pool: &KvPool,
        ids: &[u32],
        max_positions: usize,
        salt: &[u8],
    ) -> (HostKv, usize) {
        let mut kv = HostKv::paged(pool);
        let Body::Paged(p) = &mut kv.body else {
            unreachable!("a paged cache")
        };
        p.root = pool.lock().root(salt);
        let held = p.take_prefix(ids, max_positions / PAGE_POSITIONS) * PAGE_POSITIONS;
        p.filled.iter_mut().for_each(|f| *f = held);
        (kv, held)
    }

    /// Publishes the whole pages of the first `len` positions, whose tokens are `ids`, for
    /// other caches of the pool to take (a no-op for a cache of its own).
    pub(crate) fn publish(&mut self, ids: &[u32], len: usize) {
        if let Body::Paged(p) = &mut self.body {
            p.publish(ids, len);
        }
    }

    /// Whether this cache has `c`'s layers and key/value shape.
    pub(crate) fn fits(&self, c: &crate::Config) -> bool {
        let layers = match &self.body {
            Body::Owned(layers) => layers.len(),
            Body::Paged(p) => p.filled.len(),
        };
        layers == c.num_hidden_layers
            && self.n_kv_heads == c.num_key_value_heads
            && self.head_dim == c.head_dim
    }

    /// The element type keys and values are stored in.
    pub(crate) fn dtype(&self) -> KvDType {
        self.dtype
    }

    /// Forgets every position from `len` on.
    pub(crate) fn truncate(&mut self, len: usize) {
        match &mut self.body {
            Body::Owned(layers) => {
                for layer in layers {
                    layer.filled = layer.filled.min(len);
                }
            }
            // Pages past `len` stay the cache's: it is about to grow into them again (a
            // published one is copied first, see `PagedKv::own`).
            Body::Paged(p) => {
                p.filled.iter_mut().for_each(|f| *f = (*f).min(len));
                p.hashes.truncate(len / PAGE_POSITIONS);
            }
        }
    }

    /// Makes room for `positions` positions in every layer now, in whole blocks, so that
    /// filling them never reallocates (what a scheduler does when it admits a sequence under
    /// a memory budget of [`KvCache::block_bytes`] blocks).
    ///
    /// # Errors
    /// [`crate::Error::KvPool`] when a paged cache's pool has no free page left.
    pub(crate) fn reserve(&mut self, positions: usize) -> Result<()> {
        let (g_n, dh) = (self.n_kv_heads, self.head_dim);
        match &mut self.body {
            Body::Owned(layers) => {
                for kv in layers {
                    if kv.capacity < positions {
                        kv.grow(g_n, dh, positions);
                    }
                }
                Ok(())
            }
            Body::Paged(p) => p.reserve(positions),
        }
    }

    /// Bytes currently reserved for keys and values.
    pub(crate) fn reserved_bytes(&self) -> usize {
        match &self.body {
            Body::Owned(layers) => layers.iter().map(|l| l.k.bytes() + l.v.bytes()).sum(),
            Body::Paged(p) => {
                p.table.len()
                    * KvPool::page_bytes(p.filled.len(), self.n_kv_heads, self.head_dim, self.dtype)
            }
        }
    }

    /// Appends rows of keys and values (`[T, G·Dh]`, as the projections produce them) to
    /// `layer` (uncommitted until [`KvCache::commit`]).
    ///
    /// # Errors
    /// [`crate::Error::KvPool`] when a paged cache needs a page its pool does not have.
    pub(crate) fn append(&mut self, layer: usize, k: &[f32], v: &[f32]) -> Result<()> {
        let (g_n, dh) = (self.n_kv_heads, self.head_dim);
        let width = g_n * dh;
        assert_eq!(k.len(), v.len(), "kv cache: k and v lengths differ");
        if width == 0 {
            return Ok(());
        }
        let rows = k.len() / width;
        let layers = match &mut self.body {
            Body::Owned(layers) => layers,
            Body::Paged(p) => {
                let filled = p.filled[layer];
                p.reserve(filled + rows)?;
                p.own(filled..filled + rows)?;
                let mut pool = p.pool.lock();
                let stride = pool.stride;
                let (ks, vs) = &mut pool.layers[layer];
                for (dst, src) in [(ks, k), (vs, v)] {
                    for (r, row) in src.chunks_exact(width).enumerate() {
                        let s = filled + r;
                        let page = p.table[s / PAGE_POSITIONS] as usize * stride;
                        for (g, head) in row.chunks_exact(dh).enumerate() {
                            dst.write(page + (g * PAGE_POSITIONS + s % PAGE_POSITIONS) * dh, head);
                        }
                    }
                }
                p.filled[layer] += rows;
                return Ok(());
            }
        };
        let kv = &mut layers[layer];
        if kv.capacity < kv.filled + rows {
            kv.grow(g_n, dh, kv.filled + rows);
        }
        for (dst, src) in [(&mut kv.k, k), (&mut kv.v, v)] {
            for (r, row) in src.chunks_exact(width).enumerate() {
                for (g, head) in row.chunks_exact(dh).enumerate() {
                    dst.write((g * kv.capacity + kv.filled + r) * dh, head);
                }
            }
        }
        kv.filled += rows;
        Ok(())
    }

    /// Calls `f` with the keys and values of `layer` for every position appended so far
    /// (a paged cache's pool is locked meanwhile).
    pub(crate) fn with_layer<R>(&self, layer: usize, f: impl FnOnce(LayerView<'_>) -> R) -> R {
        let p = match &self.body {
            Body::Owned(layers) => return f(self.owned_view(&layers[layer])),
            Body::Paged(p) => p,
        };
        let pool = p.pool.lock();
        let attention = mixtral_kernels::attention::Attention {
            n_heads: self.n_kv_heads,
            n_kv_heads: self.n_kv_heads,
            head_dim: self.head_dim,
            window: None,
        };
        let (len, table) = (p.filled[layer], &p.table[..]);
        f(match &pool.layers[layer] {
            (Store::F32(k), Store::F32(v)) => {
                LayerView::F32(Kv::paged(attention, k, v, len, table, PAGE_POSITIONS))
            }
            (Store::F16(k), Store::F16(v)) => {
                LayerView::F16(Kv::paged(attention, k, v, len, table, PAGE_POSITIONS))
            }
            (Store::Bf16(k), Store::Bf16(v)) => {
                LayerView::Bf16(Kv::paged(attention, k, v, len, table, PAGE_POSITIONS))
            }
            _ => unreachable!("keys and values share the pool's dtype"),
        })
    }

    /// Keys and values of one layer of an owned cache for every position appended so far.
    fn owned_view<'a>(&self, kv: &'a LayerKv) -> LayerView<'a> {
        let (len, row_stride, group_stride) =
            (kv.filled, self.head_dim, kv.capacity * self.head_dim);
        match (&kv.k, &kv.v) {
            (Store::F32(k), Store::F32(v)) => LayerView::F32(Kv {
                k,
                v,
                len,
                row_stride,
                group_stride,
                pages: None,
            }),
            (Store::F16(k), Store::F16(v)) => LayerView::F16(Kv {
                k,
                v,
                len,
                row_stride,
                group_stride,
                pages: None,
            }),
            (Store::Bf16(k), Store::Bf16(v)) => LayerView::Bf16(Kv {
                k,
                v,
                len,
                row_stride,
                group_stride,
                pages: None,
            }),
            _ => unreachable!("keys and values share the cache's dtype"),
        }
    }
}

impl LayerKv {
    /// Room for at least `need` positions, in blocks of [`BLOCK_POSITIONS`]; each head's
    /// positions so far move to the start of its new run.
    fn grow(&mut self, n_kv_heads: usize, dh: usize, need: usize) {
        let capacity = need.div_ceil(BLOCK_POSITIONS) * BLOCK_POSITIONS;
        let moves = (self.capacity * dh, capacity * dh, self.filled * dh);
        for m in [&mut self.k, &mut self.v] {
            m.regrow(n_kv_heads * capacity * dh, n_kv_heads, moves);
        }
        self.capacity = capacity;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_caches_round_and_halve_the_bytes() {
        for (dtype, want) in [(KvDType::F16, 1.0 + 2f32.powi(-10)), (KvDType::Bf16, 1.0)] {
            let mut c = HostKv::new(1, 1, 2, dtype);
            // 1 + 2⁻¹⁰ + 2⁻¹² rounds to 1 + 2⁻¹⁰ in f16 and to 1 in bf16.
            let x = 1.0 + 2f32.powi(-10) + 2f32.powi(-12);
            c.append(0, &[x, -2.0], &[0.5, x]).unwrap();
            assert_eq!(c.reserved_bytes(), 2 * BLOCK_POSITIONS * 2 * 2);
            let first = c.with_layer(0, |view| match view {
                LayerView::F16(kv) => kv.k[0].to_f32(),
                LayerView::Bf16(kv) => kv.k[0].to_f32(),
                LayerView::F32(_) => unreachable!(),
            });
            assert_eq!(first, want, "{dtype:?}");
        }
    }

    #[test]
    fn grows_in_blocks_not_up_front() {
        let mut c = HostKv::new(2, 2, 2, KvDType::F32);
        assert_eq!(c.reserved_bytes(), 0);
        for layer in 0..2 {
            c.append(layer, &[1.0; 12], &[2.0; 12]).unwrap();
        }
        assert_eq!(c.reserved_bytes(), 2 * 2 * BLOCK_POSITIONS * 4 * 4);
        c.truncate(1);
        assert_eq!(c.with_layer(1, |v| v.len()), 1);
    }

    /// Rows of position `s`, KV head `g` (`Dh` = 2), and `[T, G·Dh]` rows for `range`.
    fn row(s: usize, g: usize) -> [f32; 2] {
        [(s * 10 + g) as f32, -((s * 10 + g) as f32)]
    }

    fn rows(g_n: usize, range: std::ops::Range<usize>) -> Vec<f32> {
        range
            .flat_map(|s| (0..g_n).flat_map(move |g| row(s, g)))
            .collect()
    }

    /// Appends positions 0..200 then 200..300 (outgrowing a block and several pages).
    fn fill(c: &mut HostKv, g_n: usize) {
        for range in [0..200, 200..300] {
            let k = rows(g_n, range.clone());
            let v: Vec<f32> = k.iter().map(|x| x + 0.5).collect();
            c.append(0, &k, &v).unwrap();
        }
    }

    /// Every position's rows read back where attention reads them.
    fn check_rows(c: &HostKv, g_n: usize, dh: usize) {
        c.with_layer(0, |view| {
            let LayerView::F32(kv) = view else {
                panic!("an f32 cache")
            };
            assert_eq!((kv.len, kv.row_stride), (300, dh));
            for s in [0, 63, 64, 199, 200, 299] {
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
        });
    }

    #[test]
    fn each_head_is_one_run_of_positions_across_growth() {
        let (g_n, dh) = (3, 2);
        let mut c = HostKv::new(1, g_n, dh, KvDType::F32);
        fill(&mut c, g_n);
        check_rows(&c, g_n, dh);
    }

    /// Two caches growing side by side in one pool interleave their pages; each reads back
    /// its own rows, the pool runs out with an error rather than a panic, and dropping a
    /// cache frees its pages.
    #[test]
    fn paged_caches_share_a_pool_and_give_their_pages_back() {
        let (g_n, dh) = (3, 2);
        let pool = KvPool::with_shape((1, g_n, dh), KvDType::F32, 10).unwrap();
        let (mut a, mut b) = (HostKv::paged(&pool), HostKv::paged(&pool));
        for range in [0..200, 200..300] {
            for c in [&mut a, &mut b] {
                let k = rows(g_n, range.clone());
                let v: Vec<f32> = k.iter().map(|x| x + 0.5).collect();
                c.append(0, &k, &v).unwrap();
            }
        }
        check_rows(&a, g_n, dh);
        check_rows(&b, g_n, dh);
        assert_eq!(pool.free_pages(), 0);
        assert_eq!(
            a.reserved_bytes(),
            5 * KvPool::page_bytes(1, g_n, dh, KvDType::F32)
        );
        let err = a
            .append(0, &rows(g_n, 300..400), &rows(g_n, 300..400))
            .unwrap_err();
        assert!(matches!(err, crate::Error::KvPool(_)), "{err}");
        drop(b);
        assert_eq!(pool.free_pages(), 5);
    }

    /// `n` positions of rows for a cache of `g_n` heads of `Dh` = 2, appended in one call.
    fn append_range(c: &mut HostKv, g_n: usize, range: std::ops::Range<usize>) {
        let k = rows(g_n, range);
        let v: Vec<f32> = k.iter().map(|x| x + 0.5).collect();
        c.append(0, &k, &v).unwrap();
    }

    /// The key of position `s`, head 0, as a cache reads it.
    fn key_at(c: &HostKv, s: usize) -> f32 {
        c.with_layer(0, |view| {
            let LayerView::F32(kv) = view else {
                panic!("an f32 cache")
            };
            kv.k[kv.offset(0, s)]
        })
    }

    /// A published page is found by a cache whose tokens begin the same way, shared rather
    /// than copied, and read back as the publisher wrote it; different tokens, or the same
    /// tokens after a different first page, miss.
    #[test]
    fn published_pages_are_shared_by_caches_that_begin_the_same_way() {
        let (g_n, dh) = (2, 2);
        let pool = KvPool::with_shape((1, g_n, dh), KvDType::F32, 8).unwrap();
        let ids: Vec<u32> = (0..200).collect();
        let mut a = HostKv::paged(&pool);
        append_range(&mut a, g_n, 0..150);
        a.publish(&ids, 150);
        assert_eq!(pool.free_pages(), 8 - 3);
        // Two whole pages, capped by what the caller allows.
        let (b, held) = HostKv::paged_from(&pool, &ids, 199, &[]);
        assert_eq!(held, 128);
        assert_eq!(pool.free_pages(), 8 - 3, "shared, not copied");
        for s in [0, 63, 64, 127] {
            assert_eq!(key_at(&b, s), row(s, 0)[0], "position {s}");
        }
        assert_eq!(HostKv::paged_from(&pool, &ids, 100, &[]).1, 64);
        let mut other = ids.clone();
        other[70] = 9999;
        assert_eq!(HostKv::paged_from(&pool, &other, 199, &[]).1, 64);
        other[3] = 9999;
        assert_eq!(HostKv::paged_from(&pool, &other, 199, &[]).1, 0);
        // Another salt shares nothing; a salted cache's pages are for its salt only.
        assert_eq!(HostKv::paged_from(&pool, &ids, 199, b"tenant").1, 0);
        let (mut salted, _) = HostKv::paged_from(&pool, &other, 199, b"tenant");
        append_range(&mut salted, g_n, 0..64);
        salted.publish(&other, 64);
        assert_eq!(HostKv::paged_from(&pool, &other, 199, &[]).1, 0);
        assert_eq!(HostKv::paged_from(&pool, &other, 199, b"tenant").1, 64);
        drop(salted);
        drop((a, b));
        // The three published pages (two unsalted, one salted) stay cached; the partial
        // third of `a` is free.
        assert_eq!((pool.free_pages(), pool.cached_pages()), (8, 3));
        assert_eq!(HostKv::paged_from(&pool, &ids, 199, &[]).1, 128);
    }

    /// A cache that truncates into a shared page and writes again copies the page first:
    /// the other holder, and the index, still read the original.
    #[test]
    fn writing_into_a_shared_page_copies_it_first() {
        let (g_n, dh) = (1, 2);
        let pool = KvPool::with_shape((1, g_n, dh), KvDType::F32, 4).unwrap();
        let ids: Vec<u32> = (0..64).collect();
        let mut a = HostKv::paged(&pool);
        append_range(&mut a, g_n, 0..64);
        a.publish(&ids, 64);
        let (mut b, held) = HostKv::paged_from(&pool, &ids, 64, &[]);
        assert_eq!(held, 64);
        b.truncate(10);
        append_range(&mut b, g_n, 1000..1054);
        assert_eq!(key_at(&b, 10), row(1000, 0)[0]);
        assert_eq!(key_at(&b, 9), row(9, 0)[0], "copied before the write");
        assert_eq!(
            key_at(&a, 10),
            row(10, 0)[0],
            "the publisher's page untouched"
        );
        assert_eq!(pool.free_pages(), 2);
        drop(a);
        let (c, held) = HostKv::paged_from(&pool, &ids, 64, &[]);
        assert_eq!(held, 64);
        assert_eq!(key_at(&c, 10), row(10, 0)[0], "the index's page untouched");
        // The pool running dry while copying is an error, not a panic.
        let mut d = HostKv::paged(&pool);
        append_range(&mut d, g_n, 0..128);
        assert_eq!(pool.free_pages(), 0);
        let (mut e, _) = HostKv::paged_from(&pool, &ids, 64, &[]);
        e.truncate(5);
        let k = rows(g_n, 5..6);
        assert!(matches!(e.append(0, &k, &k), Err(crate::Error::KvPool(_))));
    }

    /// When pages run out a free page is taken first, then the least recently released
    /// cached one (a prefix's last page before its first), and an evicted page misses.
    #[test]
    fn cached_pages_are_evicted_oldest_first() {
        let (g_n, dh) = (1, 2);
        let pool = KvPool::with_shape((1, g_n, dh), KvDType::F32, 3).unwrap();
        let first: Vec<u32> = (0..128).collect();
        let second: Vec<u32> = (1000..1064).collect();
        let mut a = HostKv::paged(&pool);
        append_range(&mut a, g_n, 0..128);
        a.publish(&first, 128);
        drop(a); // Its second page is released first, so it is evicted first.
        let mut b = HostKv::paged(&pool);
        append_range(&mut b, g_n, 0..64);
        assert_eq!(pool.cached_pages(), 2, "a free page was taken first");
        append_range(&mut b, g_n, 64..128);
        assert_eq!(pool.cached_pages(), 1);
        assert_eq!(
            HostKv::paged_from(&pool, &first, 128, &[]).1,
            64,
            "the first page stayed"
        );
        b.publish(
            &second.iter().chain(&second).copied().collect::<Vec<_>>(),
            64,
        );
        drop(b);
        // Take every page: the first page of `first` is evicted and reused.
        let mut c = HostKv::paged(&pool);
        append_range(&mut c, g_n, 0..192);
        drop(c);
        assert_eq!(HostKv::paged_from(&pool, &first, 128, &[]).1, 0);
    }

    /// Two caches that computed the same first page at once: the second to publish takes
    /// the first's page and frees its own, so its next page hangs off an indexed parent and
    /// a third cache finds both pages.
    #[test]
    fn a_page_computed_twice_is_held_once() {
        let (g_n, dh) = (1, 2);
        let pool = KvPool::with_shape((1, g_n, dh), KvDType::F32, 6).unwrap();
        let ids: Vec<u32> = (0..128).collect();
        let (mut a, mut b) = (HostKv::paged(&pool), HostKv::paged(&pool));
        append_range(&mut a, g_n, 0..64);
        append_range(&mut b, g_n, 0..64);
        assert_eq!(pool.free_pages(), 4);
        a.publish(&ids, 64);
        b.publish(&ids, 64);
        assert_eq!(pool.free_pages(), 5, "b's copy freed");
        append_range(&mut b, g_n, 64..128);
        b.publish(&ids, 128);
        drop(a);
        let (c, held) = HostKv::paged_from(&pool, &ids, 128, &[]);
        assert_eq!(held, 128);
        assert_eq!(key_at(&c, 100), row(100, 0)[0]);
        assert_eq!(key_at(&b, 10), row(10, 0)[0]);
    }
}
