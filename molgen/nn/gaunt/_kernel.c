/* Fused CPU kernel of the S2-grid Gaunt product (half grid in phi), forward and first-order backward.
 *
 * The same algorithm as molgen/nn/gaunt/_grid.py (read that first; the tables are its HalfGridPlan), written
 * so that one tile of W pairs goes through every stage while it sits in the core's L1/L2 cache: gather the
 * SH coefficients into slots, Legendre step, phi step, pointwise product, projection, scatter. Every array of
 * the tile is laid out [...][W] with the W pairs as the innermost axis, so each multiply-add of a table entry
 * into a tile row is one SIMD FMA over the pairs (W = 16 floats or 8 doubles: one 512-bit register), and no
 * intermediate ever goes to main memory. Zero pads of the Legendre tables (degrees l < |m|) are skipped.
 *
 * Built at first use by molgen/nn/gaunt/_cpu.py with the system C compiler (once per source, flags and CPU;
 * compiled twice: -DREAL=float -DW=16 and -DREAL=double -DW=8). Plain C99 (+ OpenMP when the build can link
 * torch's OpenMP runtime), no Python or torch headers: the caller passes raw pointers to contiguous tensors.
 */
#define _POSIX_C_SOURCE 200112L
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifndef REAL
#define REAL float
#endif
#ifndef W
#define W 16
#endif

/* One tile row: W pairs in one SIMD register (GCC/Clang vector extension; split into halves without AVX-512). */
typedef REAL vec __attribute__((vector_size(W * sizeof(REAL))));
#define V(ptr) (*(vec *)(ptr))
#define V_CONST(ptr) (*(const vec *)(ptr))

typedef struct {
    int64_t L1, L2, Lo, T, K, n1, n2, no;
    const REAL *leg1, *phi1, *leg2, *phi2; /* [S][T][L+1], [2][K][L+1] */
    const REAL *phio, *lego;               /* [2][Lo+1][K], [So][Lo+1][T] */
    const int64_t *pos1, *pos2, *poso;     /* [n]: position of each SH index in the flattened [S][L+1] */
} plan_t;

/* Degrees stored in slot s of an operand of degree L: cos orders m = 0..L, an empty slot, sin orders 1..L. */
static inline int64_t n_valid(int64_t L, int64_t s) {
    if (s <= L) return L + 1 - s;
    if (s == L + 1) return 0;
    return L + 1 - (s - L - 1);
}

#if defined(__AVX512F__) && defined(REAL_IS_FLOAT) && W == 16
#include <immintrin.h>
#define TRANSPOSE16 1
/* In-register transpose of a 16 x 16 block of floats (r[i] = row i -> r[j] = column j). */
static inline void transpose16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 2]);
        __m512d c = _mm512_castps_pd(t[4 * i + 1]), d = _mm512_castps_pd(t[4 * i + 3]);
        r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
        r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
        r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, d));
        r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, d));
    }
    for (int i = 0; i < 4; i++) {
        t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xdd);
        t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xdd);
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
        r[i + 4] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0x88);
        r[i + 12] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0xdd);
    }
}
#endif

/* wv rows of x (row stride n) -> tile rows xs[pos[i]][W] = column i; lanes >= wv are zero. */
static void gather(const REAL *x, int64_t n, int64_t wv, const int64_t *pos, REAL *xs) {
#ifdef TRANSPOSE16
    for (int64_t i0 = 0; i0 < n; i0 += 16) {
        const int64_t nc = n - i0 < 16 ? n - i0 : 16;
        const __mmask16 mask = (__mmask16)((1u << nc) - 1);
        __m512 r[16];
        for (int64_t w = 0; w < 16; w++)
            r[w] = w < wv ? _mm512_maskz_loadu_ps(mask, x + w * n + i0) : _mm512_setzero_ps();
        transpose16(r);
        for (int64_t c = 0; c < nc; c++) _mm512_store_ps(xs + pos[i0 + c] * W, r[c]);
    }
#else
    for (int64_t i = 0; i < n; i++) {
        REAL *dst = xs + pos[i] * W;
        for (int64_t w = 0; w < wv; w++) dst[w] = x[w * n + i];
        for (int64_t w = wv; w < W; w++) dst[w] = 0;
    }
#endif
}

/* Tile rows co[pos[i]][W] -> column i of the wv rows of y (row stride n). */
static void scatter(const REAL *co, int64_t n, int64_t wv, const int64_t *pos, REAL *y) {
#ifdef TRANSPOSE16
    for (int64_t i0 = 0; i0 < n; i0 += 16) {
        const int64_t nc = n - i0 < 16 ? n - i0 : 16;
        const __mmask16 mask = (__mmask16)((1u << nc) - 1);
        __m512 r[16];
        for (int64_t c = 0; c < 16; c++) r[c] = c < nc ? _mm512_load_ps(co + pos[i0 + c] * W) : _mm512_setzero_ps();
        transpose16(r);
        for (int64_t w = 0; w < wv; w++) _mm512_mask_storeu_ps(y + w * n + i0, mask, r[w]);
    }
#else
    for (int64_t i = 0; i < n; i++) {
        const REAL *src = co + pos[i] * W;
        for (int64_t w = 0; w < wv; w++) y[w * n + i] = src[w];
    }
#endif
}

/* out[r][n] = sum_c A(r, c) in[c][n] for r < R, n < N (N a multiple of W), A(r, c) = A[r * rs + c * cs].
 * Rows of in and out are tile rows (ldi, ldo multiples of W). Register-blocked: 4 rows x 2 vectors (or 8 rows x
 * 1 vector) of independent accumulators, so the FMA latency is hidden and each loaded vector serves 4-8 FMAs. */
static void gemm(int64_t R, int64_t C, int64_t N, const REAL *A, int64_t rs, int64_t cs, const REAL *in,
                 int64_t ldi, REAL *out, int64_t ldo) {
    int64_t n = 0;
    for (; n + 2 * W <= N; n += 2 * W) {
        int64_t r = 0;
        for (; r + 4 <= R; r += 4) {
            vec c00 = {0}, c01 = {0}, c10 = {0}, c11 = {0}, c20 = {0}, c21 = {0}, c30 = {0}, c31 = {0};
            for (int64_t c = 0; c < C; c++) {
                const REAL *ip = in + c * ldi + n, *ap = A + r * rs + c * cs;
                const vec i0 = V_CONST(ip), i1 = V_CONST(ip + W);
                const REAL s0 = ap[0], s1 = ap[rs], s2 = ap[2 * rs], s3 = ap[3 * rs];
                c00 += s0 * i0; c01 += s0 * i1; c10 += s1 * i0; c11 += s1 * i1;
                c20 += s2 * i0; c21 += s2 * i1; c30 += s3 * i0; c31 += s3 * i1;
            }
            REAL *op = out + r * ldo + n;
            V(op) = c00; V(op + W) = c01; op += ldo;
            V(op) = c10; V(op + W) = c11; op += ldo;
            V(op) = c20; V(op + W) = c21; op += ldo;
            V(op) = c30; V(op + W) = c31;
        }
        for (; r < R; r++) {
            vec c0 = {0}, c1 = {0};
            for (int64_t c = 0; c < C; c++) {
                const REAL *ip = in + c * ldi + n;
                const REAL s0 = A[r * rs + c * cs];
                c0 += s0 * V_CONST(ip); c1 += s0 * V_CONST(ip + W);
            }
            V(out + r * ldo + n) = c0; V(out + r * ldo + n + W) = c1;
        }
    }
    for (; n < N; n += W) {
        int64_t r = 0;
        for (; r + 8 <= R; r += 8) {
            vec c0 = {0}, c1 = {0}, c2 = {0}, c3 = {0}, c4 = {0}, c5 = {0}, c6 = {0}, c7 = {0};
            for (int64_t c = 0; c < C; c++) {
                const vec i0 = V_CONST(in + c * ldi + n);
                const REAL *ap = A + r * rs + c * cs;
                c0 += ap[0] * i0; c1 += ap[rs] * i0; c2 += ap[2 * rs] * i0; c3 += ap[3 * rs] * i0;
                c4 += ap[4 * rs] * i0; c5 += ap[5 * rs] * i0; c6 += ap[6 * rs] * i0; c7 += ap[7 * rs] * i0;
            }
            REAL *op = out + r * ldo + n;
            V(op) = c0; V(op + ldo) = c1; V(op + 2 * ldo) = c2; V(op + 3 * ldo) = c3;
            V(op + 4 * ldo) = c4; V(op + 5 * ldo) = c5; V(op + 6 * ldo) = c6; V(op + 7 * ldo) = c7;
        }
        for (; r + 4 <= R; r += 4) {
            vec c0 = {0}, c1 = {0}, c2 = {0}, c3 = {0};
            for (int64_t c = 0; c < C; c++) {
                const vec i0 = V_CONST(in + c * ldi + n);
                const REAL *ap = A + r * rs + c * cs;
                c0 += ap[0] * i0; c1 += ap[rs] * i0; c2 += ap[2 * rs] * i0; c3 += ap[3 * rs] * i0;
            }
            REAL *op = out + r * ldo + n;
            V(op) = c0; V(op + ldo) = c1; V(op + 2 * ldo) = c2; V(op + 3 * ldo) = c3;
        }
        for (; r < R; r++) {
            vec c0 = {0};
            for (int64_t c = 0; c < C; c++) c0 += A[r * rs + c * cs] * V_CONST(in + c * ldi + n);
            V(out + r * ldo + n) = c0;
        }
    }
}

/* xs[S][L+1][W] -> cosine and sine parts f[2][K][T][W]. */
static void synthesize(const REAL *xs, int64_t L, int64_t T, int64_t K, const REAL *leg, const REAL *phi,
                       REAL *nodes, REAL *f) {
    const int64_t Kl = L + 1, S = 2 * L + 2, TW = T * W;
    for (int64_t s = 0; s < S; s++) /* nodes[s][t] = sum_j leg[s][t][j] xs[s][j] */
        gemm(T, n_valid(L, s), W, leg + s * T * Kl, Kl, 1, xs + s * Kl * W, W, nodes + s * TW, W);
    for (int64_t c = 0; c < 2; c++) /* f[c][k] = sum_m phi[c][k][m] nodes[c, m] (sin 0 = 0: skip the empty slot) */
        gemm(K, Kl - c, TW, phi + c * K * Kl + c, Kl, 1, nodes + (c * Kl + c) * TW, TW, f + c * K * TW, TW);
}

/* Transpose of synthesize: f[2][K][T][W] -> xs[S][L+1][W] (valid entries only). */
static void synthesize_adjoint(const REAL *f, int64_t L, int64_t T, int64_t K, const REAL *leg, const REAL *phi,
                               REAL *nodes, REAL *xs) {
    const int64_t Kl = L + 1, S = 2 * L + 2, TW = T * W;
    for (int64_t c = 0; c < 2; c++) /* nodes[c, m] = sum_k phi[c][k][m] f[c][k] */
        gemm(Kl - c, K, TW, phi + c * K * Kl + c, 1, Kl, f + c * K * TW, TW, nodes + (c * Kl + c) * TW, TW);
    for (int64_t s = 0; s < S; s++) /* xs[s][j] = sum_t leg[s][t][j] nodes[s][t] */
        gemm(n_valid(L, s), T, W, leg + s * T * Kl, 1, Kl, nodes + s * TW, W, xs + s * Kl * W, W);
}

/* h[2][K][T][W] -> projected coefficients co[So][Lo+1][W] (valid entries only). */
static void project(const REAL *h, int64_t Lo, int64_t T, int64_t K, const REAL *phio, const REAL *lego,
                    REAL *nodes, REAL *co) {
    const int64_t Ko = Lo + 1, So = 2 * Lo + 2, TW = T * W;
    for (int64_t c = 0; c < 2; c++) /* nodes[c, m] = sum_k phio[c][m][k] h[c][k] */
        gemm(Ko - c, K, TW, phio + (c * Ko + c) * K, K, 1, h + c * K * TW, TW, nodes + (c * Ko + c) * TW, TW);
    for (int64_t s = 0; s < So; s++) /* co[s][j] = sum_t lego[s][j][t] nodes[s][t] */
        gemm(n_valid(Lo, s), T, W, lego + s * Ko * T, T, 1, nodes + s * TW, W, co + s * Ko * W, W);
}

/* Transpose of project: go[So][Lo+1][W] (valid entries) -> gh[2][K][T][W]. */
static void project_adjoint(const REAL *go, int64_t Lo, int64_t T, int64_t K, const REAL *phio, const REAL *lego,
                            REAL *nodes, REAL *gh) {
    const int64_t Ko = Lo + 1, So = 2 * Lo + 2, TW = T * W;
    for (int64_t s = 0; s < So; s++) /* nodes[s][t] = sum_j lego[s][j][t] go[s][j] */
        gemm(T, n_valid(Lo, s), W, lego + s * Ko * T, 1, T, go + s * Ko * W, W, nodes + s * TW, W);
    for (int64_t c = 0; c < 2; c++) /* gh[c][k] = sum_m phio[c][m][k] nodes[c, m] */
        gemm(K, Ko - c, TW, phio + (c * Ko + c) * K, 1, K, nodes + (c * Ko + c) * TW, TW, gh + c * K * TW, TW);
}

/* (C, S) parts of a product: out = (a0 b0 + a1 b1, a0 b1 + a1 b0); half = K T W. */
static void times(const REAL *a, const REAL *b, int64_t half, REAL *out) {
    for (int64_t i = 0; i < half; i++) {
        const REAL a0 = a[i], a1 = a[half + i], b0 = b[i], b1 = b[half + i];
        out[i] = a0 * b0 + a1 * b1; /* vectorised by the compiler */
        out[half + i] = a0 * b1 + a1 * b0;
    }
}

static int64_t max3(int64_t a, int64_t b, int64_t c) { return a > b ? (a > c ? a : c) : (b > c ? b : c); }

/* Workspace sizes (elements of REAL): slots of the largest operand, nodes, and four grids. */
static REAL *workspace(const plan_t *p, REAL **xs, REAL **nodes, REAL **f, REAL **g, REAL **h) {
    const int64_t L = max3(p->L1, p->L2, p->Lo);
    const int64_t slots = (2 * L + 2) * (L + 1) * W, node = (2 * L + 2) * p->T * W, grid = 2 * p->K * p->T * W;
    void *mem = NULL;
    if (posix_memalign(&mem, 64, sizeof(REAL) * (slots + node + 3 * grid))) return NULL;
    REAL *buf = (REAL *)mem;
    *xs = buf;
    *nodes = buf + slots;
    *f = *nodes + node;
    *g = *f + grid;
    *h = *g + grid;
    return buf;
}

/* out[p] = x1[p] (x)_G x2[p] for pairs p in [start, end). Returns 0, or -1 when out of memory. */
int gaunt_forward(const plan_t *p, int64_t start, int64_t end, const REAL *x1, const REAL *x2, REAL *out) {
    REAL *xs, *nodes, *f, *g, *h;
    REAL *buf = workspace(p, &xs, &nodes, &f, &g, &h);
    if (!buf) return -1;
    const int64_t half = p->K * p->T * W;
    for (int64_t p0 = start; p0 < end; p0 += W) {
        const int64_t wv = end - p0 < W ? end - p0 : W;
        gather(x1 + p0 * p->n1, p->n1, wv, p->pos1, xs);
        synthesize(xs, p->L1, p->T, p->K, p->leg1, p->phi1, nodes, f);
        gather(x2 + p0 * p->n2, p->n2, wv, p->pos2, xs);
        synthesize(xs, p->L2, p->T, p->K, p->leg2, p->phi2, nodes, g);
        times(f, g, half, h);
        project(h, p->Lo, p->T, p->K, p->phio, p->lego, nodes, xs);
        scatter(xs, p->no, wv, p->poso, out + p0 * p->no);
    }
    free(buf);
    return 0;
}

/* Gradients of sum(gout * (x1 (x)_G x2)) into gx1 and gx2 (either may be NULL) for pairs in [start, end). */
int gaunt_backward(const plan_t *p, int64_t start, int64_t end, const REAL *x1, const REAL *x2, const REAL *gout,
                   REAL *gx1, REAL *gx2) {
    REAL *xs, *nodes, *f, *g, *gh;
    REAL *buf = workspace(p, &xs, &nodes, &f, &g, &gh);
    if (!buf) return -1;
    const int64_t half = p->K * p->T * W;
    for (int64_t p0 = start; p0 < end; p0 += W) {
        const int64_t wv = end - p0 < W ? end - p0 : W;
        gather(gout + p0 * p->no, p->no, wv, p->poso, xs);
        project_adjoint(xs, p->Lo, p->T, p->K, p->phio, p->lego, nodes, gh);
        if (gx1) { /* d/dx1 = S1^T (gh * S2 x2) */
            gather(x2 + p0 * p->n2, p->n2, wv, p->pos2, xs);
            synthesize(xs, p->L2, p->T, p->K, p->leg2, p->phi2, nodes, g);
            times(gh, g, half, f);
            synthesize_adjoint(f, p->L1, p->T, p->K, p->leg1, p->phi1, nodes, xs);
            scatter(xs, p->n1, wv, p->pos1, gx1 + p0 * p->n1);
        }
        if (gx2) { /* d/dx2 = S2^T (gh * S1 x1) */
            gather(x1 + p0 * p->n1, p->n1, wv, p->pos1, xs);
            synthesize(xs, p->L1, p->T, p->K, p->leg1, p->phi1, nodes, f);
            times(gh, f, half, g);
            synthesize_adjoint(g, p->L2, p->T, p->K, p->leg2, p->phi2, nodes, xs);
            scatter(xs, p->n2, wv, p->pos2, gx2 + p0 * p->n2);
        }
    }
    free(buf);
    return 0;
}

/* Threaded entry points: the pairs split in whole tiles over nthreads OpenMP threads. Built with -fopenmp and
 * linked against the OpenMP runtime torch itself loaded, these threads are torch's own intra-op threads (no
 * second pool competing for the cores). Without OpenMP they run on the calling thread. */
int gaunt_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

static int64_t split(int64_t npairs, int nthreads, int i) {
    const int64_t tiles = (npairs + W - 1) / W, per = (tiles + nthreads - 1) / nthreads;
    const int64_t at = (int64_t)i * per * W;
    return at < npairs ? at : npairs;
}

int gaunt_forward_threads(const plan_t *p, int64_t npairs, int nthreads, const REAL *x1, const REAL *x2,
                          REAL *out) {
    int status = 0;
#ifdef _OPENMP
#pragma omp parallel for num_threads(nthreads) schedule(static, 1) reduction(| : status)
#endif
    for (int i = 0; i < nthreads; i++)
        status |= gaunt_forward(p, split(npairs, nthreads, i), split(npairs, nthreads, i + 1), x1, x2, out);
    return status;
}

int gaunt_backward_threads(const plan_t *p, int64_t npairs, int nthreads, const REAL *x1, const REAL *x2,
                           const REAL *gout, REAL *gx1, REAL *gx2) {
    int status = 0;
#ifdef _OPENMP
#pragma omp parallel for num_threads(nthreads) schedule(static, 1) reduction(| : status)
#endif
    for (int i = 0; i < nthreads; i++)
        status |= gaunt_backward(p, split(npairs, nthreads, i), split(npairs, nthreads, i + 1), x1, x2, gout,
                                 gx1, gx2);
    return status;
}
