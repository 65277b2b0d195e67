//! The CPU device: the graph's ops on host vectors, run by a [`Kernels`] set (the reference
//! twins or the SIMD kernels at a precision), over the checkpoint's borrowed tensors.

use super::{Acts, AttentionIo, Device, KvStore, Seq};
use crate::kv_cache::HostKv;
use crate::ops::MoeInput;
use crate::{ExpertWeights, Kernels, Result};
use mixtral_kernels::Weight;
use mixtral_kernels::attention::Attention;
use mixtral_kernels::matmul::Matmul;
use mixtral_kernels::matmul::cpu::Gemv;
use mixtral_kernels::moe::{Expert, Moe, cpu::MoeScratch};
use mixtral_kernels::rmsnorm::RmsNorm;
use mixtral_kernels::rope::{Rope, cpu::RopeTable};
use mixtral_kernels::router::Router;
use mixtral_tensor::Tensor;

/// Positions the RoPE table is extended by at a time.
const ROPE_BLOCK: usize = 1024;

/// The CPU: a kernel set, and whether every matmul keeps one summation order whatever its
/// row count ([`crate::Model::with_batch_invariance`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cpu {
    pub kernels: Kernels,
    pub invariant: bool,
}

/// A call's positions and the cos/sin table that covers them.
#[derive(Debug, Default)]
pub(crate) struct CpuPos {
    pub positions: Vec<usize>,
    rope: Option<RopeTable>,
}

/// Chosen experts `[T, K]` and their weights.
#[derive(Debug, Default)]
pub(crate) struct CpuRouting {
    pub ids: Vec<u32>,
    pub weights: Vec<f32>,
    top_k: usize,
}

/// Makes `v` exactly `n` long, reallocating only when it must grow past its capacity.
fn sized<T: Default + Clone>(v: &mut Vec<T>, n: usize) -> &mut [T] {
    v.resize(n, T::default());
    v
}

/// A weight tensor as a kernel view; [`crate::Model::new`] has checked that this succeeds.
fn w(t: &Tensor) -> Weight<'_> {
    Weight::new(t).expect("weight views are checked in Model::new")
}

/// Empty host buffers: they grow to each call's size as the ops write them.
impl Default for Acts<Cpu> {
    fn default() -> Acts<Cpu> {
        Acts {
            rows: 0,
            ids: vec![],
            pos: CpuPos::default(),
            h: vec![],
            x: vec![],
            q: vec![],
            k: vec![],
            v: vec![],
            att: vec![],
            out: vec![],
            router: vec![],
            routing: CpuRouting::default(),
            last: vec![],
            last_x: vec![],
            logits: vec![],
            work: MoeScratch::default(),
        }
    }
}

impl Cpu {
    fn kernels(&self, exact: bool) -> Kernels {
        match exact {
            true => self.kernels.exact(),
            false => self.kernels,
        }
    }
}

impl Device for Cpu {
    type Weight = Tensor;
    type Experts = Vec<ExpertWeights>;
    type F32 = Vec<f32>;
    type Act = Vec<f32>;
    type Routing = CpuRouting;
    type Ids = Vec<u32>;
    type Pos = CpuPos;
    type Kv = HostKv;
    type Work = MoeScratch;

    fn acts(&self, _: &crate::Config) -> Result<Acts<Cpu>> {
        Ok(Acts::default())
    }

    fn begin(
        &self,
        c: &crate::Config,
        a: &mut Acts<Cpu>,
        tokens: &[u32],
        positions: &[usize],
        _: &[Seq<'_, HostKv>],
    ) -> Result<()> {
        a.rows = a.rows.max(tokens.len());
        a.ids.clear();
        a.ids.extend_from_slice(tokens);
        let pos = &mut a.pos;
        pos.positions.clear();
        pos.positions.extend_from_slice(positions);
        // The sequences of a batched call are at different positions: cover the furthest.
        let end = positions.iter().max().map_or(0, |p| p + 1);
        let p = c.rope(c.num_attention_heads);
        let fits = pos
            .rope
            .as_ref()
            .is_some_and(|t| t.fits(p) && t.positions() >= end);
        if !fits {
            pos.rope = Some(RopeTable::new(p, end.div_ceil(ROPE_BLOCK) * ROPE_BLOCK));
        }
        Ok(())
    }

    fn embed(&self, table: &Tensor, ids: &Vec<u32>, d: usize, h: &mut Vec<f32>) -> Result<()> {
        let table = w(table);
        for (row, &id) in sized(h, ids.len() * d).chunks_exact_mut(d).zip(ids) {
            table.row_into(id as usize * d, row);
        }
        Ok(())
    }

    fn rms_norm(&self, p: RmsNorm, x: &Vec<f32>, wt: &Tensor, y: &mut Vec<f32>) -> Result<()> {
        let len = p.rows * p.cols;
        self.kernels.rms_norm(p, &x[..len], w(wt), sized(y, len));
        Ok(())
    }

    fn add(&self, h: &mut Vec<f32>, y: &Vec<f32>, len: usize) -> Result<()> {
        h[..len]
            .iter_mut()
            .zip(&y[..len])
            .for_each(|(a, b)| *a += b);
        Ok(())
    }

    fn matmul(
        &self,
        rows: usize,
        x: &Vec<f32>,
        jobs: &mut [(&Tensor, &mut Vec<f32>)],
        exact: bool,
    ) -> Result<()> {
        let kernels = self.kernels(exact);
        if rows == 1 && jobs.len() > 1 && !self.invariant {
            // One token: the projections as one parallel region.
            let mut gemvs: Vec<Gemv<'_>> = jobs
                .iter_mut()
                .map(|(wt, y)| Gemv {
                    x: &x[..wt.dims()[1]],
                    w: w(wt),
                    y: sized(y, wt.dims()[0]),
                })
                .collect();
            kernels.gemv_many(&mut gemvs);
            return Ok(());
        }
        for (wt, y) in jobs.iter_mut() {
            let (n, k) = (wt.dims()[0], wt.dims()[1]);
            let p = Matmul { rows, k, n };
            kernels.matmul(p, &x[..rows * k], w(wt), sized(y, rows * n), self.invariant);
        }
        Ok(())
    }

    fn attention(
        &self,
        l: usize,
        p: Attention,
        rope: [Rope; 2],
        io: AttentionIo<'_, Cpu>,
        seqs: &mut [Seq<'_, HostKv>],
        _: &mut MoeScratch,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let positions = &io.pos.positions;
        let table = io.pos.rope.as_ref().expect("begin covers every position");
        for (p, x) in rope.into_iter().zip([&mut *io.q, &mut *io.k]) {
            let len = positions.len() * p.n_heads * p.head_dim;
            self.kernels.rope(p, table, positions, &mut x[..len]);
        }
        let (qd, kvd) = (p.n_heads * p.head_dim, p.n_kv_heads * p.head_dim);
        let out = sized(out, positions.len() * qd);
        // Each sequence's keys and values go to its own cache, and its queries attend to it.
        for Seq { kv, rows, .. } in seqs.iter_mut() {
            let (a, b) = (rows.start, rows.end);
            kv.append(l, &io.k[a * kvd..b * kvd], &io.v[a * kvd..b * kvd])?;
            kv.with_layer(l, |view| {
                self.kernels.attention(
                    p,
                    &io.q[a * qd..b * qd],
                    &positions[a..b],
                    view,
                    &mut out[a * qd..b * qd],
                )
            });
        }
        Ok(())
    }

    fn top_k(&self, p: Router, logits: &Vec<f32>, r: &mut CpuRouting) -> Result<()> {
        let a = p.n_tokens * p.top_k;
        r.top_k = p.top_k;
        self.kernels.router_top_k(
            p,
            &logits[..p.n_tokens * p.n_experts],
            sized(&mut r.ids, a),
            sized(&mut r.weights, a),
        );
        Ok(())
    }

    fn moe(
        &self,
        p: Moe,
        x: &Vec<f32>,
        r: &CpuRouting,
        experts: &Vec<ExpertWeights>,
        work: &mut MoeScratch,
        y: &mut Vec<f32>,
    ) -> Result<()> {
        let len = p.n_tokens * p.hidden;
        let y = sized(y, len);
        let (kernels, invariant) = (self.kernels, self.invariant);
        with_experts(experts, |experts| {
            let input = MoeInput {
                x: &x[..len],
                ids: &r.ids,
                weights: &r.weights,
                experts,
            };
            kernels.moe(p, input, y, work, invariant)
        });
        Ok(())
    }

    fn gather(&self, src: &Vec<f32>, rows: &[usize], d: usize, dst: &mut Vec<f32>) -> Result<()> {
        dst.clear();
        for &r in rows {
            dst.extend_from_slice(&src[r * d..(r + 1) * d]);
        }
        Ok(())
    }

    fn edit(&self, x: &mut Vec<f32>, len: usize, f: &mut dyn FnMut(&mut [f32])) -> Result<()> {
        f(&mut x[..len]);
        Ok(())
    }

    fn edit_routing(
        &self,
        r: &mut CpuRouting,
        len: usize,
        f: &mut dyn FnMut(&mut [u32], &mut [f32]),
    ) -> Result<()> {
        f(&mut r.ids[..len], &mut r.weights[..len]);
        Ok(())
    }

    fn fits(&self, c: &crate::Config, kv: &HostKv) -> bool {
        kv.fits(c)
    }

    fn read(&self, x: &Vec<f32>, len: usize, out: &mut Vec<f32>) -> Result<()> {
        out.extend_from_slice(&x[..len]);
        Ok(())
    }

    fn read_act(&self, x: &Vec<f32>, len: usize, out: &mut Vec<f32>) -> Result<()> {
        self.read(x, len, out)
    }
}

/// Experts held in a stack array by the MoE call, so a decode step allocates nothing.
const INLINE_EXPERTS: usize = 16;

/// Calls `f` with the layer's experts as kernel views (on the stack for up to 16 experts).
fn with_experts(experts: &[ExpertWeights], f: impl FnOnce(&[Expert<'_>])) {
    fn view(x: &ExpertWeights) -> Expert<'_> {
        Expert {
            w1: w(&x.w1),
            w2: w(&x.w2),
            w3: w(&x.w3),
        }
    }
    let n = experts.len();
    if n <= INLINE_EXPERTS {
        let empty = Expert {
            w1: Weight::F32(&[]),
            w2: Weight::F32(&[]),
            w3: Weight::F32(&[]),
        };
        let views: [Expert<'_>; INLINE_EXPERTS] =
            std::array::from_fn(|i| experts.get(i).map_or(empty, view));
        f(&views[..n]);
    } else {
        f(&experts.iter().map(view).collect::<Vec<_>>());
    }
}

impl KvStore for HostKv {
    fn truncate(&mut self, len: usize) {
        HostKv::truncate(self, len)
    }

    fn reserve(&mut self, positions: usize) -> Result<()> {
        HostKv::reserve(self, positions)
    }

    fn reserved_bytes(&self) -> usize {
        HostKv::reserved_bytes(self)
    }
}
