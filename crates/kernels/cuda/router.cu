// router.cu: the MoE router on f32 logits: softmax over E experts, top-k (ties to the lower
// expert index), optional renormalisation of the k chosen probabilities.
//
// Reference twin: `mixtral_kernels::router::reference::router_top_k` (transformers' Mixtral
//   order: softmax in f32 over all E, then top-k, then divide by the sum of the k).
//
// Entry points
//   router_topk_f32  logits f32 [T, E] -> ids u32 [T, K] (most probable first),
//                    weights f32 [T, K]
// Work split: one warp per token (block of 128 threads = 4 tokens, grid.x = ceil(T/4)); lane e
//   holds expert e's logit. Softmax is two warp reductions (max, sum); top-k is k rounds of a
//   warp argmax over the lanes not yet taken; lane j < K writes the j-th choice.
// Bytes moved per call: T·E·4 read, T·K·8 written.
// Accumulation: f32. The softmax sum is a warp tree, not the reference's left-to-right sum, so
//   weights may differ by ~1 ulp; the ids match whenever the k-th and (k+1)-th probabilities
//   are not within that rounding of each other.
// Shape limits: 1 ≤ K ≤ E ≤ 32 (Mixtral: E = 8, K = 2).

#define ROUTER_TOKENS_PER_BLOCK 4

extern "C" __global__ void __launch_bounds__(ROUTER_TOKENS_PER_BLOCK * WARP)
router_topk_f32(const float* __restrict__ logits, unsigned* __restrict__ ids,
                float* __restrict__ weights, int n_tokens, int n_experts, int top_k,
                int norm_topk_prob) {
    const int lane = threadIdx.x % WARP;
    const int t = blockIdx.x * ROUTER_TOKENS_PER_BLOCK + threadIdx.x / WARP;
    if (t >= n_tokens) return;  // warp-uniform
    const bool live = lane < n_experts;
    const float x = live ? logits[(size_t)t * n_experts + lane] : -INFINITY;
    const float max = warp_max(x);
    const float e = live ? expf(x - max) : 0.0f;
    const float prob = e / warp_sum(e);

    float mine = live ? prob : -INFINITY;  // -inf once taken (or not an expert)
    float chosen_w = 0.0f, sum = 0.0f;
    int chosen_id = 0;
    for (int j = 0; j < top_k; ++j) {
        float v = mine;
        int i = lane;
        warp_argmax(v, i);  // ties -> lower index, as the reference's strict `>`
        if (lane == i) mine = -INFINITY;
        if (lane == j) { chosen_w = v; chosen_id = i; }
        sum += v;
    }
    if (lane < top_k) {
        ids[(size_t)t * top_k + lane] = (unsigned)chosen_id;
        weights[(size_t)t * top_k + lane] = norm_topk_prob ? chosen_w / sum : chosen_w;
    }
}
