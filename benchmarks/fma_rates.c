/* Peak multiply-add rate of one core per number format, from the instructions themselves: fp32 FMA
 * (VFMADD231PS), bf16 dot product (VDPBF16PS, AVX512-BF16) and fp16 FMA (VFMADD231PH, AVX512-FP16), each
 * on 512-bit registers, 12 independent accumulators (enough to cover the latency). Tells whether a slow
 * bf16 matmul is the CPU's or the library's: on a 2-core Intel Xeon with avx512_bf16 and no AMX
 * (2026-12-03) VDPBF16PS ran at half the fp32 rate (85 vs 175 GFLOP/s), as torch's bf16 matmul did.
 *
 *   gcc -O2 -march=sapphirerapids benchmarks/fma_rates.c -o /tmp/fma_rates && /tmp/fma_rates
 *
 * Only on a CPU with avx512_bf16 and avx512_fp16 (lscpu): elsewhere it stops with "Illegal instruction". */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

#define CHAINS 12
#define ITERS (200000000L / CHAINS)

static double seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(void) {
    __m512 acc[CHAINS];
    __m512 a = _mm512_set1_ps(1.0001f), b = _mm512_set1_ps(0.9999f);
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_setzero_ps();
    double t = seconds();
    for (long k = 0; k < ITERS; k++)
#pragma GCC unroll 12  /* the accumulators stay in registers */
        for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_fmadd_ps(a, b, acc[i]);
    t = seconds() - t;
    float sink = 0;
    for (int i = 0; i < CHAINS; i++) sink += _mm512_reduce_add_ps(acc[i]);
    double fp32 = ITERS * CHAINS * 16 * 2 / t / 1e9;  /* 16 lanes, multiply + add */
    printf("fp32 VFMADD231PS: %6.1f GFLOP/s per core\n", fp32);

    __m512bh x = (__m512bh)_mm512_set1_epi16(0x3f80), y = x;  /* bf16 1.0 */
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_setzero_ps();
    t = seconds();
    for (long k = 0; k < ITERS; k++)
#pragma GCC unroll 12  /* the accumulators stay in registers */
        for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_dpbf16_ps(acc[i], x, y);
    t = seconds() - t;
    for (int i = 0; i < CHAINS; i++) sink += _mm512_reduce_add_ps(acc[i]);
    double bf16 = ITERS * CHAINS * 32 * 2 / t / 1e9;  /* 32 products summed into 16 fp32 lanes */
    printf("bf16 VDPBF16PS:   %6.1f GFLOP/s per core (%.2fx fp32)\n", bf16, bf16 / fp32);

    __m512h h = _mm512_set1_ph((_Float16)0.001f), hacc[CHAINS];
    for (int i = 0; i < CHAINS; i++) hacc[i] = _mm512_setzero_ph();
    t = seconds();
    for (long k = 0; k < ITERS; k++)
#pragma GCC unroll 12  /* the accumulators stay in registers */
        for (int i = 0; i < CHAINS; i++) hacc[i] = _mm512_fmadd_ph(h, h, hacc[i]);
    t = seconds() - t;
    for (int i = 0; i < CHAINS; i++) sink += (float)_mm512_reduce_add_ph(hacc[i]);
    double fp16 = ITERS * CHAINS * 32 * 2 / t / 1e9;  /* 32 lanes, fp16 accumulation */
    printf("fp16 VFMADD231PH: %6.1f GFLOP/s per core (%.2fx fp32; accumulates in fp16)\n", fp16, fp16 / fp32);
    return sink == 12345.0f;  /* keeps the loops */
}
