// The CUDA block decoders of kernels/quant.cuh, compiled for the host by
// tests/cuda_quant_host.rs: reads a type name and `rows k` from argv and the rows' blocks from
// stdin, writes every value as little-endian f32 to stdout, decoded 8 at a time by `deq8`.
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <vector>

#define QDEV inline
#define QMUL(a, b) ((a) * (b))

// IEEE half to f32 (the device uses PTX's cvt); exact for every half, NaN kept NaN.
static float f16_to_f32(unsigned short h) {
    const unsigned sign = h >> 15, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    float v;
    if (exp == 0) v = std::ldexp((float)man, -24);
    else if (exp == 31) v = man ? NAN : INFINITY;
    else v = std::ldexp((float)(man | 0x400), (int)exp - 25);
    return sign ? -v : v;
}

#include "quant.cuh"

template <class B>
static int run(int rows, int k) {
    if (k % B::QK) return 2;
    const size_t row_bytes = (size_t)(k / B::QK) * B::BYTES;
    std::vector<qbyte_t> in(row_bytes * rows);
    if (fread(in.data(), 1, in.size(), stdin) != in.size()) return 3;
    std::vector<float> out((size_t)rows * k);
    for (int r = 0; r < rows; ++r)
        for (int k0 = 0; k0 < k; k0 += 8) B::deq8(in.data() + r * row_bytes, k0, &out[(size_t)r * k + k0]);
    return fwrite(out.data(), sizeof(float), out.size(), stdout) == out.size() ? 0 : 4;
}

int main(int argc, char** argv) {
    if (argc != 4) return 1;
    const int rows = atoi(argv[2]), k = atoi(argv[3]);
    const char* t = argv[1];
    if (!strcmp(t, "q80")) return run<BlockQ8_0>(rows, k);
    if (!strcmp(t, "q40")) return run<BlockQ4_0>(rows, k);
    if (!strcmp(t, "q4k")) return run<BlockQ4_K>(rows, k);
    if (!strcmp(t, "q5k")) return run<BlockQ5_K>(rows, k);
    if (!strcmp(t, "q6k")) return run<BlockQ6_K>(rows, k);
    return 1;
}
