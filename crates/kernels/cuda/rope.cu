// rope.cu: rotary position embedding, angles from integer positions. Pair i of a head is
// elements (i, i + Dh/2) (Hugging Face rotate_half) or, with `interleaved` nonzero, (2i, 2i + 1)
// (Mistral's and llama.cpp's order: the q/k rows of consolidated.safetensors and GGUF files).
//
// Reference twin: `mixtral_kernels::rope::reference::rope`
//   inv_freq[i] = theta^(-2i/Dh), angle = pos · inv_freq[i], both in f64, then cos/sin rounded
//   to f32; (a, b) -> (a·cos − b·sin, b·cos + a·sin) in f32. Computing the angle in f64 from the
//   integer position keeps it exact at 32k positions (bf16 or f32 positions would not).
//
// Entry points
//   rope_f32     x f32 [T, n_heads·Dh] rotated in place (the queries)
//   rope_kv_bf16 k f32 [T, G·Dh] rotated, then k and v f32 [T, G·Dh] written as bf16 into row
//                positions[t] of the caches k_cache, v_cache bf16 [S_max, G·Dh]
//   rope_kv_f16, rope_kv_f32  the same into f16 / f32 caches (--kv-dtype)
// Work split: one block per token row (grid.x = T), one thread per pair index i < Dh/2 (block
//   of Dh/2 threads, rounded up to 32); each thread computes its cos/sin once and rotates pair i
//   of every head.
// Bytes moved per call: rope_f32 2·T·H·Dh·4; rope_kv_bf16 T·G·Dh·(4 + 4 + 2 + 2) (+ 4·T ids).
// Accumulation: f64 angle (pow, sincos: Dh/2 per token, negligible), f32 rotation.
// Shape limits: Dh even, Dh/2 ≤ 1024 threads; positions must be < S_max (not checked here).

__device__ __forceinline__ void rope_cos_sin(unsigned pos, int i, int head_dim, double theta,
                                             float& c, float& s) {
    const double inv_freq = pow(theta, -(double)(2 * i) / (double)head_dim);
    double sd, cd;
    sincos((double)pos * inv_freq, &sd, &cd);
    c = (float)cd;
    s = (float)sd;
}

extern "C" __global__ void __launch_bounds__(1024)
rope_f32(float* __restrict__ x, const unsigned* __restrict__ positions, int n_heads,
         int head_dim, double theta, int interleaved) {
    const int half = head_dim / 2, i = threadIdx.x;
    if (i >= half) return;
    const int ia = interleaved ? 2 * i : i, ib = interleaved ? 2 * i + 1 : i + half;
    float c, s;
    rope_cos_sin(positions[blockIdx.x], i, head_dim, theta, c, s);
    float* row = x + (size_t)blockIdx.x * n_heads * head_dim;
    for (int h = 0; h < n_heads; ++h) {
        float* head = row + h * head_dim;
        const float a = head[ia], b = head[ib];
        head[ia] = a * c - b * s;
        head[ib] = b * c + a * s;
    }
}

// The body of rope_kv_<dtype>: the cache element type K decides only how values are rounded.
template <class K>
__device__ __forceinline__ void rope_kv(const float* __restrict__ k, const float* __restrict__ v,
                                        const unsigned* __restrict__ positions,
                                        typename K::elem* __restrict__ k_cache,
                                        typename K::elem* __restrict__ v_cache, int n_kv_heads,
                                        int head_dim, double theta, int interleaved) {
    const int half = head_dim / 2, i = threadIdx.x;
    if (i >= half) return;
    const int ia = interleaved ? 2 * i : i, ib = interleaved ? 2 * i + 1 : i + half;
    const unsigned pos = positions[blockIdx.x];
    float c, s;
    rope_cos_sin(pos, i, head_dim, theta, c, s);
    const size_t width = (size_t)n_kv_heads * head_dim;
    const float* k_row = k + blockIdx.x * width;
    const float* v_row = v + blockIdx.x * width;
    typename K::elem* kc = k_cache + pos * width;
    typename K::elem* vc = v_cache + pos * width;
    for (int h = 0; h < n_kv_heads; ++h) {
        const int o = h * head_dim;
        const float a = k_row[o + ia], b = k_row[o + ib];
        kc[o + ia] = K::store(a * c - b * s);
        kc[o + ib] = K::store(b * c + a * s);
        vc[o + i] = K::store(v_row[o + i]);
        vc[o + i + half] = K::store(v_row[o + i + half]);
    }
}

extern "C" __global__ void __launch_bounds__(1024)
rope_kv_bf16(const float* __restrict__ k, const float* __restrict__ v,
             const unsigned* __restrict__ positions, bf16_t* __restrict__ k_cache,
             bf16_t* __restrict__ v_cache, int n_kv_heads, int head_dim, double theta,
             int interleaved) {
    rope_kv<KvBf16>(k, v, positions, k_cache, v_cache, n_kv_heads, head_dim, theta, interleaved);
}

extern "C" __global__ void __launch_bounds__(1024)
rope_kv_f16(const float* __restrict__ k, const float* __restrict__ v,
            const unsigned* __restrict__ positions, unsigned short* __restrict__ k_cache,
            unsigned short* __restrict__ v_cache, int n_kv_heads, int head_dim, double theta,
            int interleaved) {
    rope_kv<KvF16>(k, v, positions, k_cache, v_cache, n_kv_heads, head_dim, theta, interleaved);
}

extern "C" __global__ void __launch_bounds__(1024)
rope_kv_f32(const float* __restrict__ k, const float* __restrict__ v,
            const unsigned* __restrict__ positions, float* __restrict__ k_cache,
            float* __restrict__ v_cache, int n_kv_heads, int head_dim, double theta,
            int interleaved) {
    rope_kv<KvF32>(k, v, positions, k_cache, v_cache, n_kv_heads, head_dim, theta, interleaved);
}
