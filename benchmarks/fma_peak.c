/* The CPU's fp32 FMA peak, measured: twelve independent AVX2 FMA chains per core (enough to hide
 * the 4-5 cycle FMA latency on two FMA pipes), timed in the thread's own CPU time so that other
 * processes on the machine do not lower the figure. Used to say how close a runtime's convolutions
 * are to the hardware (benchmarks/RESULTS_RUNTIMES.md).
 *
 *   gcc -O2 -mavx2 -mfma -o fma_peak benchmarks/fma_peak.c && ./fma_peak
 */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

enum { CHAINS = 12, LANES = 8, FLOP_PER_FMA = 2, ROUNDS = 5 };

static double thread_cpu_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(void) {
    __m256 acc[CHAINS];
    const __m256 mul = _mm256_set1_ps(0.999999f), add = _mm256_set1_ps(1e-7f);
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm256_set1_ps((float)i);
    const long steps = 400000000L / CHAINS;
    double best = 0;
    for (int r = 0; r < ROUNDS; r++) {
        double t = thread_cpu_seconds();
        for (long k = 0; k < steps; k++) {
#pragma GCC unroll 12
            for (int i = 0; i < CHAINS; i++) acc[i] = _mm256_fmadd_ps(acc[i], mul, add);
        }
        double gflops = steps * (double)CHAINS * LANES * FLOP_PER_FMA / (thread_cpu_seconds() - t) / 1e9;
        if (gflops > best) best = gflops;
    }
    float sum = 0, v[LANES];  /* the results are used, so the loop is not removed */
    for (int i = 0; i < CHAINS; i++) { _mm256_storeu_ps(v, acc[i]); sum += v[0]; }
    printf("fp32 FMA peak of one core: %.1f GFLOP/s (= %.2f GHz x 32 FLOP/cycle with two 256-bit FMA pipes)"
           " [checksum %g]\n", best, best / 32, sum);
    return 0;
}
