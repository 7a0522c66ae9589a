/* Fused bf16 CPU kernels of BrainOmni's criss-cross blocks (see cpu_kernels.py).
 *
 * Built at first use by cpu_kernels.py with the system C compiler
 * (cc -O3 -march=native -shared -fPIC [-fopenmp]) and called through ctypes on the
 * contiguous storage of torch tensors. bf16 values are uint16_t bit patterns: widened to
 * float by a 16-bit shift, rounded back to nearest-even by AVX512-BF16's vcvtneps2bf16 where
 * the CPU has it, else by integer arithmetic as torch's c10::BFloat16 (NaN -> 0x7FC0). Every
 * kernel computes in float32 and rounds once per output element. The loops use GCC/Clang
 * vector extensions (16 float lanes: one AVX-512 register, two AVX2 or four SSE ones); exp
 * is a polynomial (the only libm call is one logf per cross-entropy row).
 *
 * Dropout draws come from a counter-based generator: element e of a call with 64-bit seed k
 * keeps iff u >= t, u the low 15 bits of the 16-bit lane e % 4 of the splitmix64 output
 * mix64(k + (e / 4) * 0x9E3779B97F4A7C15), t the threshold of cpu_kernels.py (P(keep) =
 * 1 - t / 2^15): one 64-bit hash per four elements, a kernel can recompute the mask in its
 * backward instead of storing it, and no generator state is shared between threads.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif

typedef uint16_t bf16;

static inline float bf2f(bf16 h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline bf16 f2bf(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t r = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    return (u & 0x7FFFFFFFu) > 0x7F800000u ? (bf16)0x7FC0 : (bf16)r;
}

#define GOLDEN 0x9E3779B97F4A7C15ull

static inline uint64_t mix64(uint64_t z) { /* splitmix64's finaliser */
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* 15 random bits for element e: 16-bit lane e % 4 of splitmix64 word e / 4, low 15 bits */
static inline uint32_t draw15(uint64_t seed, uint64_t e) {
    return (uint32_t)(mix64(seed + (e >> 2) * GOLDEN) >> (16 * (e & 3))) & 0x7FFFu;
}

#ifdef _OPENMP
#define PARALLEL_FOR _Pragma("omp parallel for num_threads(nthreads) schedule(static)")
#else
#define PARALLEL_FOR
#endif

#define SIMD _Pragma("omp simd")
#define SIMD_SUM(v) _Pragma(SIMD_STR(omp simd reduction(+ : v)))
#define SIMD_MAX(v) _Pragma(SIMD_STR(omp simd reduction(max : v)))
#define SIMD_STR(x) #x


/* Row reductions with GCC/Clang vector extensions: 16 float lanes (one AVX-512 register,
 * two AVX2 or four SSE ones, whatever the target has), reduced by halves at the end.
 * Plain loops did not do: GCC does not vectorise a float sum without reassociation flags,
 * and its "omp simd reduction" spilled 32 lanes and summed them serially per row (slower
 * than the row itself on the spatial attention's 16-long rows). */
#define LANES 16
typedef float v16f __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));
typedef uint32_t v16u __attribute__((vector_size(64)));
typedef uint16_t v16h __attribute__((vector_size(32)));
typedef float v8f __attribute__((vector_size(32)));
typedef float v4f __attribute__((vector_size(16)));

static inline v16f vload(const bf16 *p) {
    v16h h;
    memcpy(&h, p, sizeof h);
    return (v16f)(__builtin_convertvector(h, v16u) << 16);
}

#if defined(__AVX512BF16__) && defined(__AVX512F__)
#include <immintrin.h>
/* AVX512-BF16's vcvtneps2bf16: round to nearest even in one instruction (it flushes float
 * denormals, below 1.2e-38, to zero; the integer rounding below keeps them) */
static inline void vstore(bf16 *p, v16f f) {
    __m256bh h = _mm512_cvtneps_pbh((__m512)f);
    memcpy(p, &h, sizeof h);
}
#else
static inline void vstore(bf16 *p, v16f f) {
    v16u u = (v16u)f;
    v16u r = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    v16u nan = (v16u)((u & 0x7FFFFFFFu) > 0x7F800000u); /* all ones where NaN */
    r = (r & ~nan) | (0x7FC0u & nan);
    v16h h = __builtin_convertvector(r, v16h);
    memcpy(p, &h, sizeof h);
}
#endif

static inline v16f vsel(v16i mask, v16f a, v16f b) { /* mask ? a : b */
    return (v16f)(((v16i)a & mask) | ((v16i)b & ~mask));
}

#if defined(__has_builtin)
#if __has_builtin(__builtin_shufflevector) /* GCC >= 12, Clang */
#define HAVE_SHUFFLEVECTOR 1
#endif
#endif

static inline float hsum(v16f v) {
#ifdef HAVE_SHUFFLEVECTOR
    v8f a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7);
    v8f b = __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
    a += b;
    v4f c = __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
    return (c[0] + c[2]) + (c[1] + c[3]);
#else
    float a[LANES];
    memcpy(a, &v, sizeof a);
    for (int w = LANES / 2; w > 0; w /= 2)
        for (int k = 0; k < w; k++) a[k] += a[k + w];
    return a[0];
#endif
}

static inline float hmax(v16f v) {
    float m = v[0];
    for (int k = 1; k < LANES; k++) m = v[k] > m ? v[k] : m;
    return m;
}

/* exp(x) for x <= 0 (softmax after the max is subtracted; SELU's negative side): Cephes'
 * expf polynomial, ~1 ulp; x clamped at -87 (exp < 1.7e-38, which no bf16 softmax weight
 * resolves). n = round(x / ln 2) by the 1.5 * 2^23 trick: plain arithmetic, no libm. */
static inline v16f vexp_nonpos(v16f x) {
    x = vsel(x < -87.0f, (v16f){} - 87.0f, x);
    v16f n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    v16f r = x - n * 0.693359375f + n * 2.12194440e-4f;
    v16f p = (v16f){} + 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    v16i e = (__builtin_convertvector(n, v16i) + 127) << 23;
    return p * (v16f)e;
}

static inline float exp_nonpos(float x) { /* one lane of it, for the rows' scalar tails */
    return vexp_nonpos((v16f){} + x)[0];
}

/* draw15(seed, e + k) >= t for the 16 elements e .. e + 15 (e a multiple of 4) as an all-ones /
 * zero mask: the four splitmix64 words' 16-bit lanes are the elements' draws in order. */
typedef uint64_t v4u64 __attribute__((vector_size(32)));
static inline v16i vkeep(uint64_t seed, uint64_t e, uint32_t t) {
    uint64_t w = e >> 2;
    v4u64 z = seed + ((v4u64){w, w + 1, w + 2, w + 3}) * GOLDEN;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    v16h u = (v16h)z & (uint16_t)0x7FFF;
    return __builtin_convertvector(u >= (uint16_t)t, v16i);
}

#define MAX_ROW 16384 /* the longest softmax row (cpu_kernels.py's MAX_ROW) */
#define MAX_HEAD 1024 /* the widest attention head (cpu_kernels.py's MAX_HEAD) */

/* ------------------------------------------------------------------ softmax + dropout
 * p = softmax(alpha s) per row of length L; pd = p * ks where kept (ks = 1 / P(keep)), else 0;
 * t == 0: no dropout, pd = p.
 * The row bodies are inlined with L a compile-time constant for the common lengths (the
 * criss-cross attention's 16 sources and 160 steps): with a runtime L, GCC's loop set-up
 * per row cost more than the row itself on short rows. */
static inline __attribute__((always_inline)) void softmax_row(const bf16 *sr, bf16 *pr,
                                                              bf16 *dr, int64_t L,
                                                              uint64_t g0, uint64_t seed,
                                                              uint32_t t, float ks,
                                                              float alpha) {
    float buf[MAX_ROW] __attribute__((aligned(64)));
    int64_t full = L - L % LANES, j;
    v16f vm = (v16f){} - 3.4e38f;
    for (j = 0; j < full; j += LANES) {
        v16f x = vload(sr + j) * alpha;
        memcpy(buf + j, &x, sizeof x);
        vm = vsel(x > vm, x, vm);
    }
    float m = hmax(vm);
    for (; j < L; j++) {
        buf[j] = bf2f(sr[j]) * alpha;
        m = buf[j] > m ? buf[j] : m;
    }
    v16f vs = (v16f){};
    for (j = 0; j < full; j += LANES) {
        v16f x;
        memcpy(&x, buf + j, sizeof x);
        x = vexp_nonpos(x - m);
        memcpy(buf + j, &x, sizeof x);
        vs += x;
    }
    float sum = hsum(vs);
    for (; j < L; j++) {
        buf[j] = exp_nonpos(buf[j] - m);
        sum += buf[j];
    }
    float inv = 1.0f / sum;
    if (t == 0) { /* no dropout: one output (cpu_kernels.py passes pd == p) */
        for (j = 0; j < full; j += LANES) {
            v16f v;
            memcpy(&v, buf + j, sizeof v);
            vstore(pr + j, v * inv);
        }
        for (; j < L; j++) pr[j] = f2bf(buf[j] * inv);
        if (dr != pr) memcpy(dr, pr, (size_t)L * sizeof(bf16));
    } else {
        j = 0;
        if (g0 % 4 == 0)
            for (; j < full; j += LANES) {
                v16f v;
                memcpy(&v, buf + j, sizeof v);
                v *= inv;
                vstore(pr + j, v);
                vstore(dr + j, vsel(vkeep(seed, g0 + (uint64_t)j, t), v * ks, (v16f){}));
            }
        for (; j < L; j++) {
            pr[j] = f2bf(buf[j] * inv);
            dr[j] = draw15(seed, g0 + (uint64_t)j) >= t ? f2bf(buf[j] * inv * ks) : (bf16)0;
        }
    }
}

#define SOFTMAX_ROWS(LEN)                                                                    \
    PARALLEL_FOR                                                                             \
    for (int64_t r = 0; r < rows; r++)                                                       \
        softmax_row(s + r * (LEN), p + r * (LEN), pd + r * (LEN), (LEN),                     \
                    (uint64_t)(r * (LEN)), seed, t, ks, alpha);

/* the row loop with L a constant for the criss-cross block's lengths */
#define BY_LENGTH(ROWS)    \
    if (L == 16) {         \
        ROWS(16)           \
    } else if (L == 160) { \
        ROWS(160)          \
    } else {               \
        ROWS(L)            \
    }

void softmax_dropout_fwd(const bf16 *s, bf16 *p, bf16 *pd, int64_t rows, int64_t L,
                         uint64_t seed, uint32_t t, float ks, float alpha, int nthreads) {
    BY_LENGTH(SOFTMAX_ROWS)
}

/* the gradient reaching the softmax weights: g * ks where kept (pd != 0), else 0 */
static inline v16f dropped_grad(const bf16 *g, const bf16 *pd, int masked, float ks) {
    v16f d = vload(g);
    if (!masked) return d;
    v16h k;
    memcpy(&k, pd, sizeof k);
    return vsel(__builtin_convertvector(k != 0, v16i), d * ks, (v16f){});
}

static inline float dropped_grad1(bf16 g, bf16 pd, int masked, float ks) {
    return !masked ? bf2f(g) : pd != 0 ? bf2f(g) * ks : 0.0f;
}

/* ds = p * (dp - <dp, p>) with dp = g where pd != 0 (kept, or p == 0: then ds = 0 anyway),
 * 0 where dropped; masked = 0: dp = g (no dropout). */
static inline __attribute__((always_inline)) void softmax_bwd_row(const bf16 *gr,
                                                                  const bf16 *pr,
                                                                  const bf16 *dr, bf16 *o,
                                                                  int64_t L, int masked,
                                                                  float ks, float alpha) {
    int64_t full = L - L % LANES, j;
    v16f vc = (v16f){};
    for (j = 0; j < full; j += LANES) vc += dropped_grad(gr + j, dr + j, masked, ks) * vload(pr + j);
    float c = hsum(vc);
    for (; j < L; j++) c += dropped_grad1(gr[j], dr[j], masked, ks) * bf2f(pr[j]);
    for (j = 0; j < full; j += LANES)
        vstore(o + j, alpha * vload(pr + j) * (dropped_grad(gr + j, dr + j, masked, ks) - c));
    for (; j < L; j++) o[j] = f2bf(alpha * bf2f(pr[j]) * (dropped_grad1(gr[j], dr[j], masked, ks) - c));
}

#define SOFTMAX_BWD_ROWS(LEN)                                                                \
    PARALLEL_FOR                                                                             \
    for (int64_t r = 0; r < rows; r++)                                                       \
        softmax_bwd_row(g + r * (LEN), p + r * (LEN), pd + r * (LEN), ds + r * (LEN), (LEN), \
                        masked, ks, alpha);

void softmax_dropout_bwd(const bf16 *g, const bf16 *p, const bf16 *pd, bf16 *ds, int64_t rows,
                         int64_t L, int masked, float ks, float alpha, int nthreads) {
    BY_LENGTH(SOFTMAX_BWD_ROWS)
}

/* ------------------------------------------------------------------ rows + column sums
 * The backward kernels that also give a bias gradient: row(n, acc, args) writes output row
 * n and adds it into acc (this thread's float32 partial column sums, or NULL when sums ==
 * NULL); the partials are then added into sums[0..cols). Returns -1 if out of memory. */
typedef void (*row_fn)(int64_t n, float *acc, const void *args);

static int rows_with_sums(int64_t rows, int64_t cols, float *sums, row_fn row,
                          const void *args, int nthreads) {
    int nt = nthreads < 1 ? 1 : nthreads;
    float *part = NULL;
    if (sums) {
        part = calloc((size_t)nt * (size_t)cols, sizeof(float));
        if (part == NULL) return -1;
    }
#ifdef _OPENMP
#pragma omp parallel num_threads(nt)
#endif
    {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        float *acc = part ? part + (size_t)tid * (size_t)cols : NULL;
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
        for (int64_t n = 0; n < rows; n++) row(n, acc, args);
    }
    if (part) {
        for (int64_t j = 0; j < cols; j++) {
            float sum = 0.0f;
            for (int i = 0; i < nt; i++) sum += part[(size_t)i * (size_t)cols + (size_t)j];
            sums[j] = sum;
        }
        free(part);
    }
    return 0;
}

static inline void add_row(float *acc, const bf16 *y, int64_t n) { /* acc[0..n) += y */
    int64_t j = 0;
    for (; j + LANES <= n; j += LANES) {
        v16f a;
        memcpy(&a, acc + j, sizeof a);
        a += vload(y + j);
        memcpy(acc + j, &a, sizeof a);
    }
    for (; j < n; j++) acc[j] += bf2f(y[j]);
}

/* ------------------------------------------------------------------ q, k, v heads + RoPE
 * Sequence b's position t is token row TOKEN(b, t) of the packed (tokens, ...) array: with
 * inner = 1 sequences are consecutive runs of T rows (b, t) -> b T + t; with inner = W the
 * sequences interleave as the criss-cross block's spatial ones do in its (B, S, W) token
 * order: sequence (b0, w) = b0 W + w, position s -> (b0 S + s) W + w. So the spatial
 * attention needs no transposed copy of its input or output. */
#define TOKEN(b, t) (((b) / inner) * (T * inner) + (t) * inner + (b) % inner)

/* Forward: qkv (tokens, 3, H, Dh) [+ bias (3 H Dh), float32] -> q, k, v (B, H, T, Dh); with
 * tables c, s (T, H, Dh) q and k are rotated in the halves order: y = x * c + swap(x) * s,
 * swap exchanging the two halves of each head. */
static inline void head_row(const bf16 *x, const float *bias, const bf16 *cr, const bf16 *sr,
                            float sign, bf16 *y, int64_t Dh) {
    const int64_t h2 = Dh / 2;
    if (Dh == 2 * LANES) { /* both model sizes: 32-wide heads, one register per half */
        v16f lo = vload(x), hi = vload(x + LANES);
        if (bias) {
            v16f b0, b1;
            memcpy(&b0, bias, sizeof b0);
            memcpy(&b1, bias + LANES, sizeof b1);
            lo += b0;
            hi += b1;
        }
        if (cr != NULL) {
            v16f c0 = vload(cr), c1 = vload(cr + LANES), s0 = vload(sr), s1 = vload(sr + LANES);
            v16f y0 = lo * c0 + sign * hi * s0;
            hi = hi * c1 + sign * lo * s1;
            lo = y0;
        }
        vstore(y, lo);
        vstore(y + LANES, hi);
        return;
    }
    float v[MAX_HEAD];
    for (int64_t j = 0; j < Dh; j++) v[j] = bf2f(x[j]) + (bias ? bias[j] : 0.0f);
    if (cr == NULL) {
        for (int64_t j = 0; j < Dh; j++) y[j] = f2bf(v[j]);
        return;
    }
    for (int64_t j = 0; j < h2; j++) {
        y[j] = f2bf(v[j] * bf2f(cr[j]) + sign * v[j + h2] * bf2f(sr[j]));
        y[j + h2] = f2bf(v[j + h2] * bf2f(cr[j + h2]) + sign * v[j] * bf2f(sr[j + h2]));
    }
}

void qkv_heads_fwd(const bf16 *src, const float *bias, const bf16 *c, const bf16 *s, bf16 *q,
                   bf16 *k, bf16 *v, int64_t B, int64_t T, int64_t H, int64_t Dh, int64_t inner,
                   int nthreads) {
    bf16 *out[3] = {q, k, v};
    PARALLEL_FOR
    for (int64_t bt = 0; bt < B * T; bt++) {
        int64_t b = bt / T, t = bt % T;
        for (int64_t i = 0; i < 3; i++)
            for (int64_t h = 0; h < H; h++) {
                int64_t po = ((TOKEN(b, t) * 3 + i) * H + h) * Dh; /* (tokens, 3, H, Dh) */
                int64_t ho = ((b * H + h) * T + t) * Dh;           /* (B, H, T, Dh) */
                int rot = c != NULL && i < 2;
                head_row(src + po, bias ? bias + (i * H + h) * Dh : NULL,
                         rot ? c + (t * H + h) * Dh : NULL, rot ? s + (t * H + h) * Dh : NULL,
                         1.0f, out[i] + ho, Dh);
            }
    }
}

/* Backward: gq, gk, gv (B, H, T, Dh; NULL: zero) -> dst (B, T, 3, H, Dh) with the inverse
 * rotation (s negated); gbias (3 H Dh, float32; NULL: not wanted) = the sum over B, T. Bit i
 * of transposed: gradient i is stored (B, H, Dh, T) (autograd's gradient of k from q k^T). */
struct qkv_bwd_args {
    const bf16 *g[3], *c, *s;
    bf16 *dst;
    int64_t B, T, H, Dh, inner;
    int transposed;
};

static void qkv_bwd_row(int64_t bt, float *acc, const void *args) {
    const struct qkv_bwd_args *a = args;
    const int64_t T = a->T, H = a->H, Dh = a->Dh, inner = a->inner;
    int64_t b = bt / T, t = bt % T;
    for (int64_t i = 0; i < 3; i++)
        for (int64_t h = 0; h < H; h++) {
            bf16 *y = a->dst + ((TOKEN(b, t) * 3 + i) * H + h) * Dh;
            if (a->g[i] == NULL) {
                memset(y, 0, (size_t)Dh * sizeof(bf16));
                continue;
            }
            const bf16 *x = a->g[i] + ((b * H + h) * T + t) * Dh;
            bf16 col[MAX_HEAD];
            if (a->transposed >> i & 1) { /* (B, H, Dh, T) storage: gather the column */
                const bf16 *base = a->g[i] + (b * H + h) * Dh * T + t;
                for (int64_t j = 0; j < Dh; j++) col[j] = base[j * T];
                x = col;
            }
            int rot = a->c != NULL && i < 2;
            head_row(x, NULL, rot ? a->c + (t * H + h) * Dh : NULL,
                     rot ? a->s + (t * H + h) * Dh : NULL, -1.0f, y, Dh);
            if (acc) add_row(acc + (i * H + h) * Dh, y, Dh);
        }
}

int qkv_heads_bwd(const bf16 *gq, const bf16 *gk, const bf16 *gv, int transposed, const bf16 *c,
                  const bf16 *s, bf16 *dst, float *gbias, int64_t B, int64_t T, int64_t H,
                  int64_t Dh, int64_t inner, int nthreads) {
    struct qkv_bwd_args a = {{gq, gk, gv}, c, s, dst, B, T, H, Dh, inner, transposed};
    return rows_with_sums(B * T, 3 * H * Dh, gbias, qkv_bwd_row, &a, nthreads);
}

/* (B, H, T, Dh) <-> (tokens, H Dh) in TOKEN order: the attention output merged back into
 * the tokens' rows (backward = 0), or its gradient split into heads (backward = 1). */
void merge_heads(const bf16 *src, bf16 *dst, int64_t B, int64_t T, int64_t H, int64_t Dh,
                 int64_t inner, int backward, int nthreads) {
    PARALLEL_FOR
    for (int64_t bt = 0; bt < B * T; bt++) {
        int64_t b = bt / T, t = bt % T;
        for (int64_t h = 0; h < H; h++) {
            int64_t po = (TOKEN(b, t) * H + h) * Dh, ho = ((b * H + h) * T + t) * Dh;
            if (backward)
                memcpy(dst + ho, src + po, (size_t)Dh * sizeof(bf16));
            else
                memcpy(dst + po, src + ho, (size_t)Dh * sizeof(bf16));
        }
    }
}

/* ------------------------------------------------------------------ RMS scale
 * y = x * r, r = 1 / sqrt(mean(x^2) + eps) per row of length D (r stored, float32). */
void rms_fwd(const bf16 *x, bf16 *y, float *rstd, int64_t rows, int64_t D, float eps,
             int nthreads) {
    PARALLEL_FOR
    for (int64_t n = 0; n < rows; n++) {
        const bf16 *xr = x + n * D;
        int64_t full = D - D % LANES, j;
        v16f vs = (v16f){};
        for (j = 0; j < full; j += LANES) {
            v16f v = vload(xr + j);
            vs += v * v;
        }
        float ss = hsum(vs);
        for (; j < D; j++) ss += bf2f(xr[j]) * bf2f(xr[j]);
        float r = 1.0f / __builtin_sqrtf(ss / (float)D + eps);
        rstd[n] = r;
        bf16 *yr = y + n * D;
        for (j = 0; j < full; j += LANES) vstore(yr + j, vload(xr + j) * r);
        for (; j < D; j++) yr[j] = f2bf(bf2f(xr[j]) * r);
    }
}

/* dx = [gres +] g r - x r^3 <g, x> / D: gres (nullable) the gradient x also gets from the
 * residual path, added here instead of by autograd (one pass less). */
void rms_bwd(const bf16 *g, const bf16 *gres, const bf16 *x, const float *rstd, bf16 *dx,
             int64_t rows, int64_t D, int nthreads) {
    PARALLEL_FOR
    for (int64_t n = 0; n < rows; n++) {
        const bf16 *gr = g + n * D, *xr = x + n * D, *rr = gres ? gres + n * D : NULL;
        int64_t full = D - D % LANES, j;
        v16f vd = (v16f){};
        for (j = 0; j < full; j += LANES) vd += vload(gr + j) * vload(xr + j);
        float dot = hsum(vd);
        for (; j < D; j++) dot += bf2f(gr[j]) * bf2f(xr[j]);
        float r = rstd[n], coef = -r * r * r * dot / (float)D;
        bf16 *o = dx + n * D;
        for (j = 0; j < full; j += LANES) {
            v16f v = vload(gr + j) * r + vload(xr + j) * coef;
            vstore(o + j, rr ? v + vload(rr + j) : v);
        }
        for (; j < D; j++)
            o[j] = f2bf(bf2f(gr[j]) * r + bf2f(xr[j]) * coef + (rr ? bf2f(rr[j]) : 0.0f));
    }
}

/* ------------------------------------------------------------------ FFN: bias + SELU
 * in place on h (N, F): h = selu(h + b), b float32 (F). */
#define SELU_ALPHA 1.6732632423543772f
#define SELU_SCALE 1.0507009873554805f

void bias_selu_fwd(bf16 *h, const float *b, int64_t rows, int64_t F, int nthreads) {
    PARALLEL_FOR
    for (int64_t n = 0; n < rows; n++) {
        bf16 *hr = h + n * F;
        int64_t full = F - F % LANES, j;
        for (j = 0; j < full; j += LANES) {
            v16f bb, v = vload(hr + j);
            memcpy(&bb, b + j, sizeof bb);
            v += bb;
            v16i pos = v > 0.0f;
            v16f neg = SELU_ALPHA * (vexp_nonpos(vsel(pos, (v16f){}, v)) - 1.0f);
            vstore(hr + j, SELU_SCALE * vsel(pos, v, neg));
        }
        for (; j < F; j++) {
            float v = bf2f(hr[j]) + b[j];
            float neg = SELU_ALPHA * (exp_nonpos(v < 0.0f ? v : 0.0f) - 1.0f);
            hr[j] = f2bf(SELU_SCALE * (v > 0.0f ? v : neg));
        }
    }
}

/* gh = g * (y > 0 ? scale : y + scale * alpha) (the derivative from the output, as torch's
 * elu_backward with is_result), gb[f] = sum_n gh[n, f] (float32; partial sums per thread). */
struct selu_bwd_args {
    const bf16 *g, *y;
    bf16 *gh;
    int64_t F;
};

static void selu_bwd_row(int64_t n, float *acc, const void *args) {
    const struct selu_bwd_args *a = args;
    const int64_t F = a->F;
    const bf16 *gr = a->g + n * F, *yr = a->y + n * F;
    bf16 *o = a->gh + n * F;
    int64_t j = 0;
    for (; j + LANES <= F; j += LANES) {
        v16f yv = vload(yr + j);
        v16f d = vsel(yv > 0.0f, (v16f){} + SELU_SCALE, yv + SELU_SCALE * SELU_ALPHA);
        vstore(o + j, vload(gr + j) * d);
    }
    for (; j < F; j++) {
        float yv = bf2f(yr[j]);
        float d = yv > 0.0f ? SELU_SCALE : yv + SELU_SCALE * SELU_ALPHA;
        o[j] = f2bf(bf2f(gr[j]) * d);
    }
    add_row(acc, o, F);
}

int bias_selu_bwd(const bf16 *g, const bf16 *y, bf16 *gh, float *gb, int64_t rows, int64_t F,
                  int nthreads) {
    struct selu_bwd_args a = {g, y, gh, F};
    return rows_with_sums(rows, F, gb, selu_bwd_row, &a, nthreads);
}

/* ------------------------------------------------------------------ bias + dropout + residual
 * out = x + keep * (f + b) * scale (t == 0: no dropout), f and x (N, D), b float32 (D). */
void bias_dropout_add_fwd(const bf16 *x, const bf16 *f, const float *b, bf16 *out,
                          int64_t rows, int64_t D, uint64_t seed, uint32_t t, float scale,
                          int nthreads) {
    PARALLEL_FOR
    for (int64_t n = 0; n < rows; n++) {
        const bf16 *xr = x + n * D, *fr = f + n * D;
        bf16 *o = out + n * D;
        uint64_t g0 = (uint64_t)(n * D);
        int64_t j = 0;
        if (g0 % 4 == 0)
            for (; j + LANES <= D; j += LANES) {
                v16f bb;
                memcpy(&bb, b + j, sizeof bb);
                v16f v = (vload(fr + j) + bb) * scale;
                if (t) v = vsel(vkeep(seed, g0 + (uint64_t)j, t), v, (v16f){});
                vstore(o + j, vload(xr + j) + v);
            }
        for (; j < D; j++) {
            int keep = t == 0 || draw15(seed, g0 + (uint64_t)j) >= t;
            float v = keep ? (bf2f(fr[j]) + b[j]) * scale : 0.0f;
            o[j] = f2bf(bf2f(xr[j]) + v);
        }
    }
}

/* gf = keep * g * scale (the same draws), gb[d] = sum_n gf[n, d] (float32). */
struct drop_bwd_args {
    const bf16 *g;
    bf16 *gf;
    int64_t D;
    uint64_t seed;
    uint32_t t;
    float scale;
};

static void drop_bwd_row(int64_t n, float *acc, const void *args) {
    const struct drop_bwd_args *a = args;
    const int64_t D = a->D;
    const uint32_t t = a->t;
    const bf16 *gr = a->g + n * D;
    bf16 *o = a->gf + n * D;
    uint64_t g0 = (uint64_t)(n * D);
    int64_t j = 0;
    if (g0 % 4 == 0)
        for (; j + LANES <= D; j += LANES) {
            v16f v = vload(gr + j) * a->scale;
            if (t) v = vsel(vkeep(a->seed, g0 + (uint64_t)j, t), v, (v16f){});
            vstore(o + j, v);
        }
    for (; j < D; j++) {
        int keep = t == 0 || draw15(a->seed, g0 + (uint64_t)j) >= t;
        o[j] = keep ? f2bf(bf2f(gr[j]) * a->scale) : (bf16)0;
    }
    add_row(acc, o, D);
}

int bias_dropout_add_bwd(const bf16 *g, bf16 *gf, float *gb, int64_t rows, int64_t D,
                         uint64_t seed, uint32_t t, float scale, int nthreads) {
    struct drop_bwd_args a = {g, gf, D, seed, t, scale};
    return rows_with_sums(rows, D, gb, drop_bwd_row, &a, nthreads);
}

/* ------------------------------------------------------------------ cross-entropy rows
 * logits x (R, K) bf16, labels (R) in [0, K) (checked by the caller): loss[r] = lse[r] -
 * x[r, label], lse = log sum exp over the row (float32, saved for the backward), am[r] the
 * first index of the row's maximum (torch.argmax's choice). */
void xent_fwd(const bf16 *x, const int64_t *lab, float *loss, float *lse, int64_t *am,
              int64_t R, int64_t K, int nthreads) {
    PARALLEL_FOR
    for (int64_t r = 0; r < R; r++) {
        const bf16 *xr = x + r * K;
        int64_t full = K - K % LANES, j;
        v16f vm = (v16f){} - 3.4e38f;
        for (j = 0; j < full; j += LANES) {
            v16f v = vload(xr + j);
            vm = vsel(v > vm, v, vm);
        }
        float m = hmax(vm);
        for (; j < K; j++) m = bf2f(xr[j]) > m ? bf2f(xr[j]) : m;
        int64_t arg = 0;
        while (arg < K - 1 && bf2f(xr[arg]) != m) arg++;
        v16f vs = (v16f){};
        for (j = 0; j < full; j += LANES) vs += vexp_nonpos(vload(xr + j) - m);
        float sum = hsum(vs);
        for (; j < K; j++) sum += exp_nonpos(bf2f(xr[j]) - m);
        float l = m + logf(sum);
        lse[r] = l;
        loss[r] = l - bf2f(xr[lab[r]]);
        am[r] = arg;
    }
}

/* dx[r, j] = g[r] * (exp(x[r, j] - lse[r]) - [j == label]) */
void xent_bwd(const bf16 *x, const int64_t *lab, const float *lse, const float *g, bf16 *dx,
              int64_t R, int64_t K, int nthreads) {
    PARALLEL_FOR
    for (int64_t r = 0; r < R; r++) {
        const bf16 *xr = x + r * K;
        bf16 *o = dx + r * K;
        float l = lse[r], gr = g[r];
        int64_t full = K - K % LANES, j;
        for (j = 0; j < full; j += LANES) vstore(o + j, gr * vexp_nonpos(vload(xr + j) - l));
        for (; j < K; j++) o[j] = f2bf(gr * exp_nonpos(bf2f(xr[j]) - l));
        o[lab[r]] = f2bf(gr * (exp_nonpos(bf2f(xr[lab[r]]) - l) - 1.0f));
    }
}

/* ------------------------------------------------------------------ residual + [a, b]
 * out = x + [a + ba, b + bb]: the criss-cross block's residual add of its two attention
 * outputs (their projections without the bias), concatenated, biases added, in one pass.
 * x and out (N, h1 + h2), a (N, h1), b (N, h2), ba and bb float32. */
static inline void add3_row(const bf16 *x, const bf16 *a, const float *ba, bf16 *o, int64_t n) {
    int64_t j = 0;
    for (; j + LANES <= n; j += LANES) {
        v16f bv;
        memcpy(&bv, ba + j, sizeof bv);
        vstore(o + j, vload(x + j) + vload(a + j) + bv);
    }
    for (; j < n; j++) o[j] = f2bf(bf2f(x[j]) + bf2f(a[j]) + ba[j]);
}

void residual_cat_fwd(const bf16 *x, const bf16 *a, const bf16 *b, const float *ba,
                      const float *bb, bf16 *out, int64_t rows, int64_t h1, int64_t h2,
                      int nthreads) {
    const int64_t D = h1 + h2;
    PARALLEL_FOR
    for (int64_t n = 0; n < rows; n++) {
        add3_row(x + n * D, a + n * h1, ba, out + n * D, h1);
        add3_row(x + n * D + h1, b + n * h2, bb, out + n * D + h1, h2);
    }
}

struct colsum_args {
    const bf16 *g;
    int64_t cols;
};

static void colsum_row(int64_t n, float *acc, const void *args) {
    const struct colsum_args *a = args;
    add_row(acc, a->g + n * a->cols, a->cols);
}

/* sums[j] = sum_n g[n, j] (float32): the biases' gradients */
int column_sums(const bf16 *g, float *sums, int64_t rows, int64_t cols, int nthreads) {
    struct colsum_args a = {g, cols};
    return rows_with_sums(rows, cols, sums, colsum_row, &a, nthreads);
}

/* the ABI version cpu_kernels.py checks after loading */
int brainomni_kernels_version(void) { return 7; }
