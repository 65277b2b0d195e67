// attention.cu: causal grouped-query attention over a bf16, f16 or f32 KV cache, optional
// sliding window, online (streaming) softmax in f32.
//
// Reference twin: `mixtral_kernels::attention::reference::attention`
//   out[t, h] = Σ_s softmax_s(q[t, h] · k[s, g] / sqrt(Dh)) · v[s, g], g = h / (H / G), over
//   the positions s visible from positions[t]: first ≤ s ≤ positions[t], first = 0 without a
//   window, else max(0, positions[t] + 1 − window). The cache holds bf16 or f16 (the reference
//   takes f32): feed the reference k and v rounded the same way to compare.
//
// Entry points
//   attention_prefill_bf16  q f32 [T, H·Dh], positions u32 [T] (increasing), k_cache, v_cache
//                           bf16 [S, G·Dh] -> out bf16 [T, H·Dh]
//   attention_decode_bf16   flash-decoding, step 1: one query token (q f32 [H·Dh] at
//                           position[0]); the visible keys are cut into splits of split_len;
//                           block (split, g) writes each head's unnormalised partial acc f32
//                           [splits, H, Dh] and (max, sum) f32 [splits, H, 2]. Empty splits
//                           write (−inf, 0), so the grid can be sized for the longest context.
//   attention_reduce_bf16   step 2: merges the splits per head -> out bf16 [H·Dh].
//   attention_prefill_f16, attention_prefill_f32, attention_decode_f16, attention_decode_f32
//                           the same over f16 / f32 caches (--kv-dtype); the suffix names the
//                           cache's type, the output is bf16 for all.
// Work split: 8 warps per block; each warp owns one query row (token t, head h). Prefill
//   blocks take 8 consecutive "grouped rows" t·(H/G) + j of one KV head g (grid
//   (ceil(T·H/G / 8), G)), so the H/G heads sharing a KV head share each K/V tile. The block
//   stages 32 keys of K and V as f32 in shared memory (row stride Dh + 1: conflict-free); then
//   lane s scores key s against the warp's q, the warp updates its running max and sum, and
//   each lane accumulates P·V for dimensions lane + 32i.
// Bytes moved per call: prefill reads the visible K/V rows of each KV head once per block
//   (G·Dh·2·e bytes per key, e the cache element's bytes), T·H·Dh·4 of q, writes T·H·Dh·2; decode reads (pos+1)·G·Dh·4 once
//   plus splits·H·(Dh + 2)·4 of partials.
// Accumulation: f32 scores, softmax and P·V (expf, not __expf); the softmax is streamed, so the
//   rounding differs from the reference's two-pass softmax at the 1e-6 relative level.
// Shape limits: Dh ≤ 128 and Dh % 32 == 0 (Mixtral 128); H % G == 0 and H/G ≤ 8 for decode;
//   split_len % 32 == 0; positions < S.

#define ATT_WARPS 8
#define ATT_KEYS 32
#define ATT_MAX_DH 128
#define ATT_PER_LANE (ATT_MAX_DH / WARP)

// A warp's running softmax state: max, sum of exp, and its lanes' slice of Σ p·v.
struct Online {
    float m, l, acc[ATT_PER_LANE];
};

__device__ __forceinline__ int first_visible(int pos, int window) {
    return window > 0 ? max(0, pos + 1 - window) : 0;
}

// Streams keys [lo, hi) of KV head `g` through shared memory; the calling warp scores those in
// [first, last] against its query `q` (shared memory) when `active`. All threads must call it.
template <class K>
__device__ __forceinline__ void attend(const typename K::elem* __restrict__ k_cache,
                                       const typename K::elem* __restrict__ v_cache, int kv_width,
                                       int kv_off, int dh, int lo, int hi, const float* q,
                                       int first, int last, bool active, Online& o) {
    __shared__ float ks[ATT_KEYS][ATT_MAX_DH + 1];
    __shared__ float vs[ATT_KEYS][ATT_MAX_DH + 1];
    const int lane = threadIdx.x % WARP, pairs = dh / 2;
    const float scale = 1.0f / sqrtf((float)dh);  // as the reference (rsqrtf is approximate)
    o.m = -INFINITY;
    o.l = 0.0f;
#pragma unroll
    for (int i = 0; i < ATT_PER_LANE; ++i) o.acc[i] = 0.0f;

    for (int c0 = lo; c0 < hi; c0 += ATT_KEYS) {
        __syncthreads();  // the previous tile is consumed; q is in place before the first
        for (int p = threadIdx.x; p < ATT_KEYS * pairs; p += blockDim.x) {
            const int s = p / pairs, d = (p % pairs) * 2;
            float k0 = 0.0f, k1 = 0.0f, v0 = 0.0f, v1 = 0.0f;
            if (c0 + s < hi) {
                const size_t off = (size_t)(c0 + s) * kv_width + kv_off + d;
                K::load2(k_cache + off, k0, k1);
                K::load2(v_cache + off, v0, v1);
            }
            ks[s][d] = k0;
            ks[s][d + 1] = k1;
            vs[s][d] = v0;
            vs[s][d + 1] = v1;
        }
        __syncthreads();
        // Warp-uniform: skip tiles with no key this row may see (last < hi always holds).
        if (!active || c0 > last || c0 + ATT_KEYS <= first) continue;
        const int s = c0 + lane;
        const bool visible = s >= first && s <= last;
        float score = -INFINITY;
        if (visible) {
            float dot = 0.0f;
            for (int d = 0; d < dh; ++d) dot = fmaf(q[d], ks[lane][d], dot);
            score = dot * scale;
        }
        const float m_new = fmaxf(o.m, warp_max(score));
        const float alpha = expf(o.m - m_new);  // 0 on the first visible tile
        const float p = visible ? expf(score - m_new) : 0.0f;
        o.l = o.l * alpha + warp_sum(p);
#pragma unroll
        for (int i = 0; i < ATT_PER_LANE; ++i) o.acc[i] *= alpha;
        for (int j = 0; j < ATT_KEYS; ++j) {
            const float pj = __shfl_sync(FULL_MASK, p, j);
#pragma unroll
            for (int i = 0; i < ATT_PER_LANE; ++i)
                if (lane + WARP * i < dh) o.acc[i] = fmaf(pj, vs[j][lane + WARP * i], o.acc[i]);
        }
        o.m = m_new;
    }
}

// The body of attention_prefill_<dtype>, over a cache of element type K.
template <class K>
__device__ __forceinline__ void attention_prefill(const float* __restrict__ q,
                                                  const unsigned* __restrict__ positions,
                                                  const typename K::elem* __restrict__ k_cache,
                                                  const typename K::elem* __restrict__ v_cache,
                                                  bf16_t* __restrict__ out, int n_tokens,
                                                  int n_heads, int n_kv_heads, int head_dim,
                                                  int window) {
    __shared__ float qs[ATT_WARPS][ATT_MAX_DH];
    const int group = n_heads / n_kv_heads, g = blockIdx.y;
    const int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    const int row0 = blockIdx.x * ATT_WARPS, r = row0 + warp;
    const int t = r / group, h = g * group + r % group;
    const bool active = t < n_tokens;
    const int t_last = min(n_tokens - 1, (row0 + ATT_WARPS - 1) / group);
    const int lo = first_visible((int)positions[row0 / group], window);
    const int hi = (int)positions[t_last] + 1;
    int first = 0, last = -1;
    const size_t q_row = (size_t)t * n_heads * head_dim + (size_t)h * head_dim;
    if (active) {
        last = (int)positions[t];
        first = first_visible(last, window);
        for (int d = lane; d < head_dim; d += WARP) qs[warp][d] = q[q_row + d];
    }
    Online o;
    attend<K>(k_cache, v_cache, n_kv_heads * head_dim, g * head_dim, head_dim, lo, hi, qs[warp],
           first, last, active, o);
    if (!active) return;
    const float inv_l = 1.0f / o.l;
#pragma unroll
    for (int i = 0; i < ATT_PER_LANE; ++i) {
        const int d = lane + WARP * i;
        if (d < head_dim) out[q_row + d] = f32_to_bf16(o.acc[i] * inv_l);
    }
}

extern "C" __global__ void __launch_bounds__(ATT_WARPS * WARP)
attention_prefill_bf16(const float* __restrict__ q, const unsigned* __restrict__ positions,
                       const bf16_t* __restrict__ k_cache, const bf16_t* __restrict__ v_cache,
                       bf16_t* __restrict__ out, int n_tokens, int n_heads, int n_kv_heads,
                       int head_dim, int window) {
    attention_prefill<KvBf16>(q, positions, k_cache, v_cache, out, n_tokens, n_heads, n_kv_heads,
                          head_dim, window);
}

extern "C" __global__ void __launch_bounds__(ATT_WARPS * WARP)
attention_prefill_f16(const float* __restrict__ q, const unsigned* __restrict__ positions,
                      const unsigned short* __restrict__ k_cache, const unsigned short* __restrict__ v_cache,
                      bf16_t* __restrict__ out, int n_tokens, int n_heads, int n_kv_heads,
                      int head_dim, int window) {
    attention_prefill<KvF16>(q, positions, k_cache, v_cache, out, n_tokens, n_heads, n_kv_heads,
                          head_dim, window);
}

extern "C" __global__ void __launch_bounds__(ATT_WARPS * WARP)
attention_prefill_f32(const float* __restrict__ q, const unsigned* __restrict__ positions,
                      const float* __restrict__ k_cache, const float* __restrict__ v_cache,
                      bf16_t* __restrict__ out, int n_tokens, int n_heads, int n_kv_heads,
                      int head_dim, int window) {
    attention_prefill<KvF32>(q, positions, k_cache, v_cache, out, n_tokens, n_heads, n_kv_heads,
                          head_dim, window);
}

// The body of attention_decode_<dtype>, over a cache of element type K.
template <class K>
__device__ __forceinline__ void attention_decode(const float* __restrict__ q,
                                                 const unsigned* __restrict__ position,
                                                 const typename K::elem* __restrict__ k_cache,
                                                 const typename K::elem* __restrict__ v_cache,
                                                 float* __restrict__ part_acc,
                                                 float* __restrict__ part_ml, int n_heads,
                                                 int n_kv_heads, int head_dim, int window,
                                                 int split_len) {
    __shared__ float qs[ATT_WARPS][ATT_MAX_DH];
    const int group = n_heads / n_kv_heads, g = blockIdx.y, split = blockIdx.x;
    const int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    const int h = g * group + warp;
    const bool active = warp < group;
    const int last = (int)position[0], first = first_visible(last, window);
    const int lo = first + split * split_len, hi = min(lo + split_len, last + 1);
    if (active)
        for (int d = lane; d < head_dim; d += WARP) qs[warp][d] = q[(size_t)h * head_dim + d];
    Online o;
    attend<K>(k_cache, v_cache, n_kv_heads * head_dim, g * head_dim, head_dim, lo, hi, qs[warp],
           first, last, active, o);  // lo >= hi (empty split): no tiles, state stays (-inf, 0)
    if (!active) return;
    const size_t slot = (size_t)split * n_heads + h;
#pragma unroll
    for (int i = 0; i < ATT_PER_LANE; ++i) {
        const int d = lane + WARP * i;
        if (d < head_dim) part_acc[slot * head_dim + d] = o.acc[i];
    }
    if (lane == 0) {
        part_ml[slot * 2] = o.m;
        part_ml[slot * 2 + 1] = o.l;
    }
}

extern "C" __global__ void __launch_bounds__(ATT_WARPS * WARP)
attention_decode_bf16(const float* __restrict__ q, const unsigned* __restrict__ position,
                      const bf16_t* __restrict__ k_cache, const bf16_t* __restrict__ v_cache,
                      float* __restrict__ part_acc, float* __restrict__ part_ml, int n_heads,
                      int n_kv_heads, int head_dim, int window, int split_len) {
    attention_decode<KvBf16>(q, position, k_cache, v_cache, part_acc, part_ml, n_heads, n_kv_heads,
                         head_dim, window, split_len);
}

extern "C" __global__ void __launch_bounds__(ATT_WARPS * WARP)
attention_decode_f16(const float* __restrict__ q, const unsigned* __restrict__ position,
                     const unsigned short* __restrict__ k_cache, const unsigned short* __restrict__ v_cache,
                     float* __restrict__ part_acc, float* __restrict__ part_ml, int n_heads,
                     int n_kv_heads, int head_dim, int window, int split_len) {
    attention_decode<KvF16>(q, position, k_cache, v_cache, part_acc, part_ml, n_heads, n_kv_heads,
                         head_dim, window, split_len);
}

extern "C" __global__ void __launch_bounds__(ATT_WARPS * WARP)
attention_decode_f32(const float* __restrict__ q, const unsigned* __restrict__ position,
                     const float* __restrict__ k_cache, const float* __restrict__ v_cache,
                     float* __restrict__ part_acc, float* __restrict__ part_ml, int n_heads,
                     int n_kv_heads, int head_dim, int window, int split_len) {
    attention_decode<KvF32>(q, position, k_cache, v_cache, part_acc, part_ml, n_heads, n_kv_heads,
                         head_dim, window, split_len);
}

extern "C" __global__ void __launch_bounds__(ATT_MAX_DH)
attention_reduce_bf16(const float* __restrict__ part_acc, const float* __restrict__ part_ml,
                      bf16_t* __restrict__ out, int n_splits, int n_heads, int head_dim) {
    const int h = blockIdx.x;
    float m = -INFINITY;
    for (int s = 0; s < n_splits; ++s) m = fmaxf(m, part_ml[((size_t)s * n_heads + h) * 2]);
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float l = 0.0f, acc = 0.0f;
        for (int s = 0; s < n_splits; ++s) {
            const size_t slot = (size_t)s * n_heads + h;
            const float w = expf(part_ml[slot * 2] - m);  // 0 for empty splits
            l = fmaf(part_ml[slot * 2 + 1], w, l);
            acc = fmaf(part_acc[slot * head_dim + d], w, acc);
        }
        out[(size_t)h * head_dim + d] = f32_to_bf16(acc / l);
    }
}
