/*
 * noah._poca, training: forward and backward of the NOAH head in float32 without any
 * (images, blocks, classes, positions) map in memory -- the FlashAttention pattern on a CPU.
 *
 * Per POCA block n, 16-class panel and image, with X the image's features (positions x channels):
 *
 *   forward   K'[l, j] = key_scale * Xk[l] . Wk[j]   (key_scale = log2(e); the key bias is a
 *                                                      per-class shift, which softmax ignores)
 *             V[l, j]  = (Xv[l] . Wv[j] + bv[j]) * D[l, j]    (D: dropout mask, 0 or 1/(1-p))
 *             mx = max_l K', den = sum_l 2^(K' - mx), y = sum_l 2^(K' - mx) V / den
 *             kept for backward: lse = mx + log2(den) (so A = 2^(K' - lse)) and y
 *   backward  A = 2^(K' - lse), dK = g A (V - y), dV = g A D       (g = dloss/dlogit)
 *             dWk += dK^T Xk, dWv += dV^T Xv, dbv += sum_l dV, dX += dK Wk + dV Wv
 *
 * Work items are (block, group of up to 4 panels) pairs. For each pair of images, keys and values
 * of the group's panels are recomputed into two buffers that stay in L1/L2, turned into dK and dV
 * in place, and consumed there by the gradient matmuls (inner loops over both images' positions).
 * sum_l dK = 0, so the key bias gets no gradient, and dX needs no term for the shift either.
 * Every matmul is a register-tile micro-kernel (up to 6 rows x 16 columns, broadcast-FMA, inner
 * loop unrolled 8 times): keys and values read a position-tiled copy of the features (the 5 or 6
 * positions of a tile adjacent, one stream per tile), dW the features themselves (any strides,
 * image by image in one register tile), dX writes packed rows.
 *
 * Threads: PyTorch's OpenMP team. Forward items are handed out one at a time. Backward items are
 * split evenly and in order; the weight gradients of an item belong to one thread, and dX goes
 * to one buffer of the thread's own, added up at the end -- or, when every thread's items are
 * whole blocks, to disjoint slices of one shared buffer. Either way the sums do not depend on
 * timing: the gradients are reproducible.
 *
 * The forward writes the position-tiled copy of the features once per step (slices x images x
 * positions x the block's channels: one slice per block with the first-level split, else one
 * shared by all blocks); the caller keeps it and the features for backward: the same size as the
 * features, which the caller holds anyway. dX is summed in a block-major packed layout (a row
 * per position: the block's key channels, zero-padded to a multiple of 8, then its value channels
 * likewise, or only the shared channels without the second-level split) and mapped back to the
 * features' layout at the end (NCHW by 8x8 register transposes). Dropout masks are a hash of
 * (seed, image, block, class, position), so backward regenerates them exactly.
 */
#include "common.h"
#include "train.h"
#ifdef _OPENMP
#include <omp.h>
#endif

/* This thread's number in the current OpenMP team (0 outside one). */
static inline int thread_number(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* Development only: built with -DNOAH_PART_CYCLES (tools/kernel_parts.sh), thread 0's backward
 * work items add the time-stamp-counter ticks of each of their parts to part_cycles. */
#ifdef NOAH_PART_CYCLES
#include <x86intrin.h>
enum { PART_KEYS_VALUES, PART_MAPS, PART_DW, PART_DX, PART_ITEMS, PART_COUNT };
static unsigned long long part_cycles[PART_COUNT];
#define PART_CLOCK(name) const unsigned long long name = __rdtsc()
#define PART_ADD(t, part, since) ((t) == 0 ? (void)(part_cycles[part] += __rdtsc() - (since)) : (void)0)
#else
#define PART_CLOCK(name) (void)0
#define PART_ADD(t, part, since) (void)0
#endif

#define ROUND_UP(a, b) (((a) + (b) - 1) / (b) * (b))
#define GROUP_MAX 8     /* panels per backward work item */
#define FORWARD_GROUP 4 /* panels per forward work item: an image's features are read once for them */
#define IMAGE_BLOCK 2   /* images per matmul: longer inner loops for the weight gradients */


/* dX's packed layout: `slices` x images x positions x `row` floats, value columns from `vo`.
 * The position-tiled features: `slices` x images x positions x `tiled`. */
typedef struct {
    Py_ssize_t slices, row, vo, tiled;
} Packing;

static Packing packing(Py_ssize_t heads, Py_ssize_t ck, Py_ssize_t cv, int head_split, int kv_split) {
    Packing p;
    p.slices = head_split ? heads : 1;
    p.vo = kv_split ? ROUND_UP(ck, 8) : 0;
    p.row = kv_split ? ROUND_UP(ck, 8) + ROUND_UP(cv, 8) : ROUND_UP(ck, 8);
    p.tiled = kv_split ? ck + cv : ck;
    return p;
}

/* An image's positions split into register tiles of at most NOAH_MR rows, spread evenly
 * (49 = 4 x 6 + 5 x 5, not 8 x 6 + 1: a tile with fewer than 8 accumulators cannot hide the FMA
 * latency): tile t has tile_rows(..., t) rows and starts at row tile_start(..., t). */
static inline Py_ssize_t tile_count(Py_ssize_t length) { return (length + NOAH_MR - 1) / NOAH_MR; }
static inline Py_ssize_t tile_start(Py_ssize_t length, Py_ssize_t t) {
    const Py_ssize_t count = tile_count(length), base = length / count, extra = length % count;
    return t * base + (t < extra ? t : extra);
}
static inline Py_ssize_t tile_rows(Py_ssize_t length, Py_ssize_t t) {
    const Py_ssize_t count = tile_count(length);
    return length / count + (t < length % count);
}

/* The dropout hash: a 32-bit integer mixer (constants from Wellons' hash-prospector, both below
 * 2^31 so that a reference in int64 arithmetic never overflows). */
static inline uint32_t mix32(uint32_t x) {
    x ^= x >> 16;
    x *= 0x21f0aaadu;
    x ^= x >> 15;
    x *= 0x735a2d97u;
    x ^= x >> 15;
    return x;
}

#define POSITION_STEP 0x9E3779B9u

/* Per-(image, block, class) stream key of the dropout hash; row = (image*heads + block)*M + class. */
static inline uint32_t class_key(uint64_t row, uint64_t seed) {
    return mix32(mix32((uint32_t)row ^ (uint32_t)seed) ^ (uint32_t)(row >> 32) ^ (uint32_t)(seed >> 32));
}

typedef struct {
    const float *x;    /* the features: images x positions x channels, strides xs (floats) */
    Py_ssize_t xs[3];
    float *tiles;      /* their position-tiled copy (block_tiles): the forward writes it, the backward reads it */
    Packing pk;
    int head_split, kv_split;
    const float *wk, *wv, *bv; /* (heads*classes, ck), (heads*classes, cv), (heads*classes,) */
    Py_ssize_t images, length, classes, panels, heads, ck, cv;
    Py_ssize_t group, items; /* panels per work item, work items */
    Py_ssize_t image_block;  /* images per matmul */
    float key_scale, keep_scale;
    uint32_t threshold; /* dropout: keep where hash >> 8 >= threshold; 0: no dropout */
    uint64_t seed;
    float *stats; /* (2, images, heads, classes): lse, y */
    /* backward only */
    const float *grad; /* (images, classes) */
    float *dx;         /* packed-layout dX: one per thread, or one shared (dx_stride 0) */
    Py_ssize_t dx_stride;
    float *dwk, *dwv, *dbv;
    int need_dx, need_dw;
    float *scratch; /* per thread, scratch_stride floats, 32-byte aligned */
    Py_ssize_t scratch_stride;
} TrainJob;

static Py_ssize_t packed_floats(const TrainJob *job) { return job->pk.slices * job->images * job->length * job->pk.row; }

/* Block n's packed row of position 0 of image b. */
static const float *block_rows(const TrainJob *job, const float *base, Py_ssize_t n, Py_ssize_t b) {
    return base + ((job->head_split ? n : 0) * job->images + b) * job->length * job->pk.row;
}

/* Block n's position-tiled features of image b: per tile of r rows, the keys (ck x r, one
 * channel's r positions adjacent), all tiles, then likewise the values (with the second-level
 * split; without it the keys are the values). */
static float *block_tiles(const TrainJob *job, Py_ssize_t n, Py_ssize_t b) {
    return job->tiles + ((job->head_split ? n : 0) * job->images + b) * job->length * job->pk.tiled;
}

/* Channel of column k of slice s: keys (value = 0) or values (value = 1). */
static Py_ssize_t channel_of(const TrainJob *job, Py_ssize_t s, int value, Py_ssize_t k) {
    const Py_ssize_t blocks = job->head_split ? job->heads : 1;
    if (!value) return s * job->ck + k;
    return blocks * job->ck + s * job->cv + k;
}

/* Work items of `group` panels each: one per (block, panel group). */
static void use_group(TrainJob *job, Py_ssize_t group) {
    job->group = group;
    job->items = job->heads * ((job->panels + group - 1) / group);
}

/* The forward's panels per work item: FORWARD_GROUP, fewer where that leaves under two items per
 * thread. */
static Py_ssize_t forward_group(const TrainJob *job, int threads) {
    Py_ssize_t group = FORWARD_GROUP < job->panels ? FORWARD_GROUP : job->panels;
    while (group > 1 && job->heads * ((job->panels + group - 1) / group) < 2 * threads) group--;
    return group;
}

#ifdef NOAH_HAVE_AVX2

/* ---- the register tile -------------------------------------------------------------------
 * c[i][0..8V) (+)= sum_{k < inner} a[i*row + k*col] * w[k*ldw + 0..8V)  for i < R: R*V <= 12
 * accumulators (R <= 6 rows of 16 columns, or R <= 12 rows of 8), one broadcast per row and V
 * loads per step. R and V are constants in each instance below, so the unused accumulators
 * drop out (named variables, not an array: GCC keeps an array of vectors on the stack). */
#define T_INIT(i)                                                                                  \
    __m256 c##i##0 = _mm256_setzero_ps(), c##i##1 = _mm256_setzero_ps();                           \
    if (R > i && accumulate) {                                                                     \
        c##i##0 = _mm256_loadu_ps(c + i * ldc);                                                    \
        if (V > 1) c##i##1 = _mm256_loadu_ps(c + i * ldc + 8);                                     \
    }
#define T_FMA(i)                                                                                   \
    if (R > i) {                                                                                   \
        __m256 x = _mm256_broadcast_ss(ak + i * row);                                              \
        c##i##0 = _mm256_fmadd_ps(x, b0, c##i##0);                                                 \
        if (V > 1) c##i##1 = _mm256_fmadd_ps(x, b1, c##i##1);                                      \
    }
#define T_STORE(i)                                                                                 \
    if (R > i) {                                                                                   \
        _mm256_storeu_ps(c + i * ldc, c##i##0);                                                    \
        if (V > 1) _mm256_storeu_ps(c + i * ldc + 8, c##i##1);                                     \
    }
#define T_ALL(m) m(0) m(1) m(2) m(3) m(4) m(5) m(6) m(7) m(8) m(9) m(10) m(11)

AVX2 static inline __attribute__((always_inline)) void tile_body(const int R, const int V, const float *a, Py_ssize_t row,
                                                                  Py_ssize_t col, const float *w, Py_ssize_t ldw,
                                                                  Py_ssize_t inner, Py_ssize_t segments, Py_ssize_t jump,
                                                                  float *c, Py_ssize_t ldc, int accumulate) {
    T_ALL(T_INIT)
    for (Py_ssize_t s = 0; s < segments; s++) {
        const float *as = a + s * jump, *ws = w + s * inner * ldw;
        UNROLL_TILE
        for (Py_ssize_t k = 0; k < inner; k++) {
            const float *ak = as + k * col, *wk = ws + k * ldw;
            const __m256 b0 = _mm256_loadu_ps(wk), b1 = V > 1 ? _mm256_loadu_ps(wk + 8) : b0;
            T_ALL(T_FMA)
        }
    }
    T_ALL(T_STORE)
}
#undef T_INIT
#undef T_FMA
#undef T_STORE
#undef T_ALL

typedef void (*TileFn)(const float *, Py_ssize_t, Py_ssize_t, const float *, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                       float *, Py_ssize_t, int);

#define TILE(R, V)                                                                                                      \
    AVX2 static void tile_##R##x##V(const float *a, Py_ssize_t row, Py_ssize_t col, const float *w, Py_ssize_t ldw,     \
                                    Py_ssize_t inner, Py_ssize_t segments, Py_ssize_t jump, float *c, Py_ssize_t ldc,   \
                                    int accumulate) {                                                                   \
        tile_body(R, V, a, row, col, w, ldw, inner, segments, jump, c, ldc, accumulate);                                \
    }
TILE(1, 1) TILE(2, 1) TILE(3, 1) TILE(4, 1) TILE(5, 1) TILE(6, 1)
TILE(7, 1) TILE(8, 1) TILE(9, 1) TILE(10, 1) TILE(11, 1) TILE(12, 1)
TILE(1, 2) TILE(2, 2) TILE(3, 2) TILE(4, 2) TILE(5, 2) TILE(6, 2)
#undef TILE

/* c[i][0..16) = sum_{k < inner} a[k*R + i] * w[k*16 + 0..16) for i < R: the same register tile
 * with a position-tiled A (one stream, immediate offsets) and a packed 16-class weight panel. */
#define P_FMA(i)                                                                                   \
    if (R > i) {                                                                                   \
        __m256 x = _mm256_broadcast_ss(ak + i);                                                    \
        c##i##0 = _mm256_fmadd_ps(x, b0, c##i##0);                                                 \
        c##i##1 = _mm256_fmadd_ps(x, b1, c##i##1);                                                 \
    }
#define P_STORE(i)                                                                                 \
    if (R > i) {                                                                                   \
        _mm256_store_ps(c + i * ldc, c##i##0);                                                     \
        _mm256_store_ps(c + i * ldc + 8, c##i##1);                                                 \
    }
AVX2 static inline __attribute__((always_inline)) void packed_tile_body(const int R, const float *a, const float *w,
                                                                         Py_ssize_t inner, float *c, Py_ssize_t ldc) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    UNROLL_TILE
    for (Py_ssize_t k = 0; k < inner; k++) {
        const float *ak = a + k * R;
        const __m256 b0 = _mm256_load_ps(w + k * NOAH_NR), b1 = _mm256_load_ps(w + k * NOAH_NR + 8);
        P_FMA(0) P_FMA(1) P_FMA(2) P_FMA(3) P_FMA(4) P_FMA(5)
    }
    P_STORE(0) P_STORE(1) P_STORE(2) P_STORE(3) P_STORE(4) P_STORE(5)
}
#undef P_FMA
#undef P_STORE

typedef void (*PackedTileFn)(const float *, const float *, Py_ssize_t, float *, Py_ssize_t);
#define PACKED_TILE(R)                                                                                          \
    AVX2 static void packed_tile_##R(const float *a, const float *w, Py_ssize_t inner, float *c, Py_ssize_t ldc) { \
        packed_tile_body(R, a, w, inner, c, ldc);                                                               \
    }
PACKED_TILE(1) PACKED_TILE(2) PACKED_TILE(3) PACKED_TILE(4) PACKED_TILE(5) PACKED_TILE(6)
#undef PACKED_TILE
static const PackedTileFn packed_tiles[NOAH_MR + 1] = {NULL, packed_tile_1, packed_tile_2, packed_tile_3,
                                                       packed_tile_4, packed_tile_5, packed_tile_6};

static const TileFn tiles8[13] = {NULL, tile_1x1, tile_2x1, tile_3x1, tile_4x1, tile_5x1, tile_6x1,
                                  tile_7x1, tile_8x1, tile_9x1, tile_10x1, tile_11x1, tile_12x1};
static const TileFn tiles16[7] = {NULL, tile_1x2, tile_2x2, tile_3x2, tile_4x2, tile_5x2, tile_6x2};

/* Columns [j0, j0 + 8V) of c[rows] (+)= a @ w, the rows spread evenly over tiles of at most
 * `most` rows (49 = 4 x 6 + 5 x 5, not 8 x 6 + 1: a tile with fewer than 8 accumulators cannot
 * hide the FMA latency). */
AVX2 static void matmul_columns(const TileFn *fns, int most, Py_ssize_t j0, Py_ssize_t rows, const float *a, Py_ssize_t row,
                                Py_ssize_t col, const float *w, Py_ssize_t ldw, Py_ssize_t inner, Py_ssize_t segments,
                                Py_ssize_t jump, float *c, Py_ssize_t ldc, int accumulate) {
    const Py_ssize_t count = (rows + most - 1) / most;
    for (Py_ssize_t t = 0, i = 0; t < count; t++) {
        const int r = (int)(rows / count + (t < rows % count));
        fns[r](a + i * row, row, col, w + j0, ldw, inner, segments, jump, c + i * ldc + j0, ldc, accumulate);
        i += r;
    }
}

/* c[rows][cols] (+)= a[rows, inner * segments] @ w[inner * segments, cols] (cols a multiple of
 * 8): tiles of 6 rows x 16 columns, and 12 rows x 8 columns for an odd 8; a's rows are `row`
 * apart, its inner steps `col` apart, and each segment of `inner` steps starts `jump` after the
 * last one's start (w's rows are `ldw` apart throughout). */
AVX2 static void matmul_segments(Py_ssize_t rows, Py_ssize_t cols, const float *a, Py_ssize_t row, Py_ssize_t col,
                                 const float *w, Py_ssize_t ldw, Py_ssize_t inner, Py_ssize_t segments, Py_ssize_t jump,
                                 float *c, Py_ssize_t ldc, int accumulate) {
    Py_ssize_t j = 0;
    for (; j + 16 <= cols; j += 16)
        matmul_columns(tiles16, 6, j, rows, a, row, col, w, ldw, inner, segments, jump, c, ldc, accumulate);
    if (j < cols) matmul_columns(tiles8, 12, j, rows, a, row, col, w, ldw, inner, segments, jump, c, ldc, accumulate);
}

/* matmul_segments with one segment. */
AVX2 static void matmul(Py_ssize_t rows, Py_ssize_t cols, const float *a, Py_ssize_t row, Py_ssize_t col, const float *w,
                        Py_ssize_t ldw, Py_ssize_t inner, float *c, Py_ssize_t ldc, int accumulate) {
    matmul_segments(rows, cols, a, row, col, w, ldw, inner, 1, 0, c, ldc, accumulate);
}

/* ---- softmax terms ------------------------------------------------------------------------- */

/* 2^t for t <= 0 (a key minus its max or its normaliser), clamped below at -125 (NaN
 * propagates): t = n + f with |f| <= 1/2 by the float rounding of t + 1.5 * 2^23, whose low bits
 * then hold n; 2^f by a degree-5 polynomial fitted for relative error (below 2e-7, about 3 ulp;
 * exp2_clamped's degree 6 serves the inference kernel, whose keys are not max-subtracted).
 * Twelve operations instead of fourteen: the exponentials are most of the elementwise work. */
AVX2 static inline __m256 exp2_nonpositive(__m256 t) {
    const __m256 shifter = _mm256_set1_ps(12582912.0f); /* 1.5 * 2^23 */
    t = _mm256_max_ps(_mm256_set1_ps(-125.0f), t);      /* a NaN in the second operand is kept */
    const __m256 r = _mm256_add_ps(t, shifter);
    const __m256 f = _mm256_sub_ps(t, _mm256_sub_ps(r, shifter));
    __m256 p = _mm256_set1_ps(1.32647e-3f);
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(9.67151e-3f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(5.550734e-2f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.4022242e-1f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(6.9314698e-1f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f));
    /* the low 9 bits of r's pattern are n's (two's complement): shifted, n + 127 is the exponent */
    const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_castps_si256(r), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
}

/* ---- dropout masks -------------------------------------------------------------------------- */

AVX2 static inline __m256i mix32x8(__m256i x) {
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
    x = _mm256_mullo_epi32(x, _mm256_set1_epi32(0x21f0aaad));
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 15));
    x = _mm256_mullo_epi32(x, _mm256_set1_epi32(0x735a2d97));
    return _mm256_xor_si256(x, _mm256_srli_epi32(x, 15));
}

/* The scaled mask (0 or keep_scale) of 8 classes with stream keys `key` at position l. */
AVX2 static inline __m256 keep_mask(__m256i key, Py_ssize_t l, __m256i below, __m256 scale) {
    __m256i u = mix32x8(_mm256_add_epi32(key, _mm256_set1_epi32((int)((uint32_t)l * POSITION_STEP))));
    __m256i keep = _mm256_cmpgt_epi32(_mm256_srli_epi32(u, 8), below); /* both below 2^24: signed compare is fine */
    return _mm256_and_ps(_mm256_castsi256_ps(keep), scale);
}

/* ---- one group of panels of one image ------------------------------------------------------- */

/* Per-thread buffers for a group of G panels (the forward uses G = 1 and the first four). */
typedef struct {
    float *wkp, *wvp;   /* G packed (c x 16) panels, keys scaled by key_scale */
    float *kbuf, *vbuf; /* (length x 16G): keys/values, then dK/dV */
    float *wkn, *wvn;   /* natural (16G x c rounded up to 8) weights, zero-padded */
    float *acck, *accv; /* G (c x 16) panels: dWk^T, dWv^T */
    Py_ssize_t ld;      /* 16G: floats per kbuf/vbuf row */
} Buffers;

static Py_ssize_t scratch_floats(Py_ssize_t ck, Py_ssize_t cv, Py_ssize_t length, Py_ssize_t group) {
    return NOAH_NR * group * (2 * ck + 2 * cv + ROUND_UP(ck, 8) + ROUND_UP(cv, 8) + 2 * length);
}

static Buffers buffers_of(const TrainJob *job, int t) {
    Buffers p;
    const Py_ssize_t g = job->group;
    p.ld = NOAH_NR * g;
    p.wkp = job->scratch + t * job->scratch_stride;
    p.wvp = p.wkp + g * job->ck * NOAH_NR;
    p.kbuf = p.wvp + g * job->cv * NOAH_NR;
    p.vbuf = p.kbuf + job->image_block * job->length * p.ld;
    p.wkn = p.vbuf + job->image_block * job->length * p.ld;
    p.wvn = p.wkn + p.ld * ROUND_UP(job->ck, 8);
    p.acck = p.wvn + p.ld * ROUND_UP(job->cv, 8);
    p.accv = p.acck + g * job->ck * NOAH_NR;
    return p;
}

/* `width` rows of a (rows, c) matrix into a (rows_out, c8) block, zero-padded. */
static void pack_natural(const float *w, Py_ssize_t width, Py_ssize_t c, Py_ssize_t rows_out, float *dst) {
    const Py_ssize_t c8 = ROUND_UP(c, 8);
    for (Py_ssize_t j = 0; j < rows_out; j++)
        for (Py_ssize_t k = 0; k < c8; k++) dst[j * c8 + k] = j < width && k < c ? w[j * c + k] : 0.0f;
}

/* Keys (key_scale units) and values (no bias) of images [b0, b0 + nb) of block n for panel i of
 * the group: columns [16i, 16i + 16) of kbuf/vbuf, one row per position, image after image. */
AVX2 static void keys_values(const TrainJob *job, Py_ssize_t n, Py_ssize_t b0, Py_ssize_t nb, const Buffers *p, Py_ssize_t i) {
    const Py_ssize_t length = job->length, ck = job->ck, cv = job->cv, tiles = tile_count(length);
    const float *wk = p->wkp + i * ck * NOAH_NR, *wv = p->wvp + i * cv * NOAH_NR;
    for (Py_ssize_t b = b0; b < b0 + nb; b++) {
        const float *keys = block_tiles(job, n, b), *values = job->kv_split ? keys + length * ck : keys;
        float *k = p->kbuf + (b - b0) * length * p->ld + i * NOAH_NR, *v = p->vbuf + (b - b0) * length * p->ld + i * NOAH_NR;
        for (Py_ssize_t t = 0; t < tiles; t++) {
            const Py_ssize_t r = tile_rows(length, t), l = tile_start(length, t);
            packed_tiles[r](keys + l * ck, wk, ck, k + l * p->ld, p->ld);
            packed_tiles[r](values + l * cv, wv, cv, v + l * p->ld, p->ld);
        }
    }
}

typedef struct {
    _Alignas(32) float bias[NOAH_NR];
    _Alignas(32) uint32_t keys[NOAH_NR]; /* dropout stream keys */
} PanelConsts;

static void panel_consts(const TrainJob *job, Py_ssize_t b, Py_ssize_t n, Py_ssize_t m0, Py_ssize_t width, PanelConsts *pc) {
    memset(pc->keys, 0, sizeof pc->keys);
    if (width == NOAH_NR) {
        memcpy(pc->bias, job->bv + n * job->classes + m0, sizeof pc->bias);
    } else {
        for (Py_ssize_t j = 0; j < NOAH_NR; j++) pc->bias[j] = j < width ? job->bv[n * job->classes + m0 + j] : 0.0f;
    }
    if (job->threshold)
        for (Py_ssize_t j = 0; j < width; j++)
            pc->keys[j] = class_key(((uint64_t)(b * job->heads + n)) * (uint64_t)job->classes + (uint64_t)(m0 + j), job->seed);
}

/* Forward: softmax over positions of the keys k (rows ld apart), pooled with the values v;
 * lse[j] = max + log2(sum 2^(K' - max)), y[j] = the pooled value. */
AVX2 static void fold_forward(const TrainJob *job, const float *k, const float *v, Py_ssize_t ld, const PanelConsts *pc,
                              float *lse, float *y) {
    const Py_ssize_t length = job->length;
    __m256 mx0 = _mm256_set1_ps(-INFINITY), mx1 = mx0;
    for (Py_ssize_t l = 0; l < length; l++) {
        mx0 = _mm256_max_ps(mx0, _mm256_load_ps(k + ld * l));
        mx1 = _mm256_max_ps(mx1, _mm256_load_ps(k + ld * l + 8));
    }
    const __m256 b0 = _mm256_load_ps(pc->bias), b1 = _mm256_load_ps(pc->bias + 8);
    const __m256i k0 = _mm256_load_si256((const __m256i *)pc->keys), k1 = _mm256_load_si256((const __m256i *)(pc->keys + 8));
    const __m256i below = _mm256_set1_epi32((int)job->threshold - 1);
    const __m256 scale = _mm256_set1_ps(job->keep_scale);
    __m256 den0 = _mm256_setzero_ps(), den1 = den0, num0 = den0, num1 = den0;
    for (Py_ssize_t l = 0; l < length; l++) {
        const float *kl = k + ld * l, *vl = v + ld * l;
        __m256 e0 = exp2_nonpositive(_mm256_sub_ps(_mm256_load_ps(kl), mx0));
        __m256 e1 = exp2_nonpositive(_mm256_sub_ps(_mm256_load_ps(kl + 8), mx1));
        __m256 v0 = _mm256_load_ps(vl), v1 = _mm256_load_ps(vl + 8);
        if (job->threshold) { /* without dropout the bias is added to y after the sum */
            v0 = _mm256_add_ps(v0, b0);
            v1 = _mm256_add_ps(v1, b1);
            v0 = _mm256_mul_ps(v0, keep_mask(k0, l, below, scale));
            v1 = _mm256_mul_ps(v1, keep_mask(k1, l, below, scale));
        }
        den0 = _mm256_add_ps(den0, e0);
        den1 = _mm256_add_ps(den1, e1);
        num0 = _mm256_fmadd_ps(e0, v0, num0);
        num1 = _mm256_fmadd_ps(e1, v1, num1);
    }
    _Alignas(32) float mx[NOAH_NR], den[NOAH_NR], num[NOAH_NR];
    _mm256_store_ps(mx, mx0);
    _mm256_store_ps(mx + 8, mx1);
    _mm256_store_ps(den, den0);
    _mm256_store_ps(den + 8, den1);
    _mm256_store_ps(num, num0);
    _mm256_store_ps(num + 8, num1);
    for (int j = 0; j < NOAH_NR; j++) {
        lse[j] = mx[j] + log2f(den[j]);
        y[j] = num[j] / den[j] + (job->threshold ? 0.0f : pc->bias[j]);
    }
}

/* Backward: the keys k become dK = g A (V - y) and the values v dV = g A D, in place (rows ld
 * apart); dbv += sum over positions of dV (g itself without dropout: A sums to 1). */
AVX2 static void maps_backward(const TrainJob *job, float *k, float *v, Py_ssize_t ld, const PanelConsts *pc,
                               const float *lse, const float *y, const float *g, __m256 dbv[2]) {
    const __m256 b0 = _mm256_load_ps(pc->bias), b1 = _mm256_load_ps(pc->bias + 8);
    const __m256 s0 = _mm256_load_ps(lse), s1 = _mm256_load_ps(lse + 8);
    const int drop = job->threshold != 0;
    const __m256 y0 = _mm256_load_ps(y), y1 = _mm256_load_ps(y + 8);
    const __m256 g0 = _mm256_load_ps(g), g1 = _mm256_load_ps(g + 8);
    const __m256i k0 = _mm256_load_si256((const __m256i *)pc->keys), k1 = _mm256_load_si256((const __m256i *)(pc->keys + 8));
    const __m256i below = _mm256_set1_epi32((int)job->threshold - 1);
    const __m256 scale = _mm256_set1_ps(job->keep_scale);
    __m256 db0 = dbv[0], db1 = dbv[1];
    for (Py_ssize_t l = 0; l < job->length; l++) {
        float *kl = k + ld * l, *vl = v + ld * l;
        __m256 ga0 = _mm256_mul_ps(g0, exp2_nonpositive(_mm256_sub_ps(_mm256_load_ps(kl), s0)));
        __m256 ga1 = _mm256_mul_ps(g1, exp2_nonpositive(_mm256_sub_ps(_mm256_load_ps(kl + 8), s1)));
        __m256 v0 = _mm256_add_ps(_mm256_load_ps(vl), b0), v1 = _mm256_add_ps(_mm256_load_ps(vl + 8), b1);
        __m256 dv0 = ga0, dv1 = ga1;
        if (drop) {
            __m256 d0 = keep_mask(k0, l, below, scale), d1 = keep_mask(k1, l, below, scale);
            v0 = _mm256_mul_ps(v0, d0);
            v1 = _mm256_mul_ps(v1, d1);
            dv0 = _mm256_mul_ps(ga0, d0);
            dv1 = _mm256_mul_ps(ga1, d1);
            db0 = _mm256_add_ps(db0, dv0);
            db1 = _mm256_add_ps(db1, dv1);
        }
        _mm256_store_ps(kl, _mm256_mul_ps(ga0, _mm256_sub_ps(v0, y0)));
        _mm256_store_ps(kl + 8, _mm256_mul_ps(ga1, _mm256_sub_ps(v1, y1)));
        _mm256_store_ps(vl, dv0);
        _mm256_store_ps(vl + 8, dv1);
    }
    dbv[0] = drop ? db0 : _mm256_add_ps(db0, g0);
    dbv[1] = drop ? db1 : _mm256_add_ps(db1, g1);
}

/* ---- work items: (block, panel group) pairs ------------------------------------------------- */

/* Work item `item`: block n, classes [m0, m0 + classes) in `count` 16-class panels. */
typedef struct {
    Py_ssize_t n, m0, count, classes;
} Group;

static Group group_of(const TrainJob *job, Py_ssize_t item) {
    const Py_ssize_t groups = (job->panels + job->group - 1) / job->group, p0 = item % groups * job->group;
    Group g;
    g.n = item / groups;
    g.m0 = p0 * NOAH_NR;
    g.count = job->panels - p0 < job->group ? job->panels - p0 : job->group;
    g.classes = job->classes - g.m0 < g.count * NOAH_NR ? job->classes - g.m0 : g.count * NOAH_NR;
    return g;
}

/* Classes in panel i of the group (16 but for the last panel of a block). */
static inline Py_ssize_t panel_width(const Group *g, Py_ssize_t i) {
    return g->classes - i * NOAH_NR < NOAH_NR ? g->classes - i * NOAH_NR : NOAH_NR;
}

/* Images in the image block starting at b0. */
static inline Py_ssize_t block_images(const TrainJob *job, Py_ssize_t b0) {
    return job->images - b0 < job->image_block ? job->images - b0 : job->image_block;
}

/* The group's key and value weight panels, packed (keys scaled by key_scale). */
AVX2 static void pack_group(const TrainJob *job, const Group *g, const Buffers *p) {
    for (Py_ssize_t i = 0; i < g->count; i++) {
        const Py_ssize_t row0 = g->n * job->classes + g->m0 + i * NOAH_NR;
        pack_panel(job->wk + row0 * job->ck, panel_width(g, i), job->ck, job->key_scale, p->wkp + i * job->ck * NOAH_NR);
        pack_panel(job->wv + row0 * job->cv, panel_width(g, i), job->cv, 1.0f, p->wvp + i * job->cv * NOAH_NR);
    }
}

AVX2 static void forward_items(const TrainJob *job, Py_ssize_t i0, Py_ssize_t i1, int t) {
    const Buffers p = buffers_of(job, t);
    PanelConsts pc;
    _Alignas(32) float lse[NOAH_NR], y[NOAH_NR];
    const Py_ssize_t plane = job->images * job->heads * job->classes;
    for (Py_ssize_t item = i0; item < i1; item++) {
        const Group g = group_of(job, item);
        pack_group(job, &g, &p);
        for (Py_ssize_t b0 = 0; b0 < job->images; b0 += job->image_block) {
            const Py_ssize_t nb = block_images(job, b0);
            for (Py_ssize_t i = 0; i < g.count; i++) {
                const Py_ssize_t mi = g.m0 + i * NOAH_NR, width = panel_width(&g, i);
                keys_values(job, g.n, b0, nb, &p, i);
                for (Py_ssize_t b = b0; b < b0 + nb; b++) {
                    const Py_ssize_t off = (b - b0) * job->length * p.ld + i * NOAH_NR;
                    panel_consts(job, b, g.n, mi, width, &pc);
                    fold_forward(job, p.kbuf + off, p.vbuf + off, p.ld, &pc, lse, y);
                    float *out = job->stats + (b * job->heads + g.n) * job->classes + mi;
                    for (Py_ssize_t j = 0; j < width; j++) {
                        out[j] = lse[j];
                        out[plane + j] = y[j];
                    }
                }
            }
        }
    }
}

AVX2 static void backward_items(const TrainJob *job, Py_ssize_t i0, Py_ssize_t i1, int t) {
    const Buffers p = buffers_of(job, t);
    PanelConsts pc;
    _Alignas(32) float lse[NOAH_NR], y[NOAH_NR], g[NOAH_NR], db[NOAH_NR];
    const Py_ssize_t plane = job->images * job->heads * job->classes, ck8 = ROUND_UP(job->ck, 8), cv8 = ROUND_UP(job->cv, 8);
    const Py_ssize_t ck = job->ck, cv = job->cv;
    float *dx = job->need_dx ? job->dx + t * job->dx_stride : NULL;
    PART_CLOCK(items_start);
    for (Py_ssize_t item = i0; item < i1; item++) {
        const Group grp = group_of(job, item);
        const Py_ssize_t n = grp.n, m0 = grp.m0, count = grp.count, classes = grp.classes, row0 = n * job->classes + m0;
        pack_group(job, &grp, &p);
        if (dx) {
            pack_natural(job->wk + row0 * ck, classes, ck, p.ld, p.wkn);
            pack_natural(job->wv + row0 * cv, classes, cv, p.ld, p.wvn);
        }
        memset(p.acck, 0, sizeof(float) * NOAH_NR * job->group * (ck + cv));
        __m256 dbv[GROUP_MAX][2];
        for (Py_ssize_t i = 0; i < count; i++) dbv[i][0] = dbv[i][1] = _mm256_setzero_ps();
        for (Py_ssize_t b0 = 0; b0 < job->images; b0 += job->image_block) {
            const Py_ssize_t nb = block_images(job, b0), rows = nb * job->length;
            /* block n's key and value channels of image b0 at position 0 in the features */
            const Py_ssize_t slice = job->head_split ? n : 0;
            const float *xk = job->x + b0 * job->xs[0] + channel_of(job, slice, 0, 0) * job->xs[2];
            const float *xv = job->x + b0 * job->xs[0] + channel_of(job, slice, job->kv_split, 0) * job->xs[2];
            for (Py_ssize_t i = 0; i < count; i++) {
                const Py_ssize_t mi = m0 + i * NOAH_NR, width = panel_width(&grp, i);
                PART_CLOCK(kv_start);
                keys_values(job, n, b0, nb, &p, i);
                PART_ADD(t, PART_KEYS_VALUES, kv_start);
                PART_CLOCK(maps_start);
                for (Py_ssize_t b = b0; b < b0 + nb; b++) {
                    const Py_ssize_t off = (b - b0) * job->length * p.ld + i * NOAH_NR;
                    panel_consts(job, b, n, mi, width, &pc);
                    const float *saved = job->stats + (b * job->heads + n) * job->classes + mi;
                    if (width == NOAH_NR) {
                        memcpy(lse, saved, sizeof lse);
                        memcpy(y, saved + plane, sizeof y);
                        memcpy(g, job->grad + b * job->classes + mi, sizeof g);
                    } else {
                        for (Py_ssize_t j = 0; j < NOAH_NR; j++) {
                            lse[j] = j < width ? saved[j] : 0.0f;
                            y[j] = j < width ? saved[plane + j] : 0.0f;
                            g[j] = j < width ? job->grad[b * job->classes + mi + j] : 0.0f;
                        }
                    }
                    maps_backward(job, p.kbuf + off, p.vbuf + off, p.ld, &pc, lse, y, g, dbv[i]);
                }
                PART_ADD(t, PART_MAPS, maps_start);
                PART_CLOCK(dw_start);
                if (job->need_dw) { /* dW^T[channel][class] += X^T dK: rows = channels, inner = positions (per image) */
                    const Py_ssize_t *xs = job->xs;
                    matmul_segments(ck, NOAH_NR, xk, xs[2], xs[1], p.kbuf + i * NOAH_NR, p.ld, job->length, nb, xs[0],
                                    p.acck + i * ck * NOAH_NR, NOAH_NR, 1);
                    matmul_segments(cv, NOAH_NR, xv, xs[2], xs[1], p.vbuf + i * NOAH_NR, p.ld, job->length, nb, xs[0],
                                    p.accv + i * cv * NOAH_NR, NOAH_NR, 1);
                }
                PART_ADD(t, PART_DW, dw_start);
            }
            PART_CLOCK(dx_start);
            if (dx) { /* dX[position][channel] += dK W: inner = the group's classes */
                float *dxb = (float *)block_rows(job, dx, n, b0);
                matmul(rows, ck8, p.kbuf, p.ld, 1, p.wkn, ck8, classes, dxb, job->pk.row, 1);
                matmul(rows, cv8, p.vbuf, p.ld, 1, p.wvn, cv8, classes, dxb + job->pk.vo, job->pk.row, 1);
            }
            PART_ADD(t, PART_DX, dx_start);
        }
        for (Py_ssize_t i = 0; i < count; i++) {
            const Py_ssize_t mi = m0 + i * NOAH_NR, width = panel_width(&grp, i);
            const Py_ssize_t r = n * job->classes + mi;
            if (job->need_dw) {
                const float *ak = p.acck + i * ck * NOAH_NR, *av = p.accv + i * cv * NOAH_NR;
                for (Py_ssize_t j = 0; j < width; j++) {
                    for (Py_ssize_t k = 0; k < ck; k++) job->dwk[(r + j) * ck + k] = ak[k * NOAH_NR + j];
                    for (Py_ssize_t k = 0; k < cv; k++) job->dwv[(r + j) * cv + k] = av[k * NOAH_NR + j];
                }
            }
            _mm256_store_ps(db, dbv[i][0]);
            _mm256_store_ps(db + 8, dbv[i][1]);
            for (Py_ssize_t j = 0; j < width; j++) job->dbv[r + j] = db[j];
        }
    }
    PART_ADD(t, PART_ITEMS, items_start);
}

/* Work items over `threads` OpenMP threads (PyTorch's team: the extension links the libgomp
 * PyTorch already loaded). Forward items are handed out one at a time, so a thread on a busier
 * core takes fewer (each writes its own statistics: the result does not depend on who ran what).
 * Backward items are split evenly and in order: a thread's dX sums then always have the same
 * terms in the same order, so the gradients are reproducible. */
AVX2 static void run_items(const TrainJob *job, int backward, int threads) {
    if (!backward) {
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1) if (threads > 1)
#endif
        for (Py_ssize_t item = 0; item < job->items; item++) forward_items(job, item, item + 1, thread_number());
        return;
    }
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static, 1) if (threads > 1)
#endif
    for (int t = 0; t < threads; t++) {
        const Py_ssize_t i0 = job->items * t / threads, i1 = job->items * (t + 1) / threads;
        if (job->need_dx && job->dx_stride) {
            memset(job->dx + t * job->dx_stride, 0, sizeof(float) * packed_floats(job));
        } else if (job->need_dx && i1 > i0) { /* the slices of this thread's blocks */
            const Py_ssize_t groups = job->items / job->heads, slice = job->images * job->length * job->pk.row;
            const Py_ssize_t n0 = i0 / groups, n1 = (i1 - 1) / groups + 1;
            memset(job->dx + n0 * slice, 0, sizeof(float) * (n1 - n0) * slice);
        }
        backward_items(job, i0, i1, t);
    }
}

#endif /* NOAH_HAVE_AVX2 */

/* Slice s of image b's features into its position-tiled copy (any strides; from NCHW, as
 * noah.head.cpu_train hands them over, each channel's r positions are one contiguous run). */
static void tile_image(const TrainJob *job, Py_ssize_t s, Py_ssize_t b) {
    const Py_ssize_t length = job->length, ps = job->xs[1], cs = job->xs[2];
    for (int value = 0; value <= job->kv_split; value++) {
        const Py_ssize_t c = value ? job->cv : job->ck;
        const float *d = job->x + b * job->xs[0] + channel_of(job, s, value, 0) * cs;
        float *tiled = block_tiles(job, s, b) + (value ? length * job->ck : 0);
        for (Py_ssize_t t = 0; t < tile_count(length); t++) {
            const Py_ssize_t r = tile_rows(length, t), l0 = tile_start(length, t);
            float *out = tiled + l0 * c;
            for (Py_ssize_t k = 0; k < c; k++)
                for (Py_ssize_t i = 0; i < r; i++) out[k * r + i] = d[(l0 + i) * ps + k * cs];
        }
    }
}

#ifdef NOAH_HAVE_AVX2
/* Positions [l0, l0 + 8) x channels [k0, k0 + 8) of the sum of `count` packed buffers (`stride`
 * apart, rows `row` apart) into the first `width` of dx's 8 channel rows (`cs` apart) whose
 * positions are adjacent (NCHW): an 8x8 register transpose. */
AVX2 static void sum_dx_8x8(const float *sv, Py_ssize_t row, Py_ssize_t stride, int count, float *out, Py_ssize_t cs,
                            Py_ssize_t width) {
    __m256 r[8];
    for (int i = 0; i < 8; i++) {
        r[i] = _mm256_loadu_ps(sv + i * row);
        for (int t = 1; t < count; t++) r[i] = _mm256_add_ps(r[i], _mm256_loadu_ps(sv + t * stride + i * row));
    }
    transpose_8x8(r);
    for (Py_ssize_t k = 0; k < width; k++) _mm256_storeu_ps(out + k * cs, r[k]);
}
#endif

/* Channels are summed 8 at a time over all positions (for NCHW gradients each channel's run of
 * positions stays in L1 while its 8 columns are read). */
#define CHANNEL_BLOCK 8

/* Image b's slice s of dx (strides `st`) = the sum of `count` packed-layout buffers `stride`
 * floats apart, `rows` the image's slice in the first. */
static void sum_slice(const TrainJob *job, Py_ssize_t b, Py_ssize_t s, const Py_ssize_t *st, const float *rows,
                      Py_ssize_t stride, int count, float *dx) {
    const Py_ssize_t row = job->pk.row, length = job->length;
    for (int value = 0; value <= job->kv_split; value++) {
        const Py_ssize_t c = value ? job->cv : job->ck, c0 = channel_of(job, s, value, 0);
        const float *d = rows + (value ? job->pk.vo : 0);
        for (Py_ssize_t k0 = 0; k0 < c; k0 += CHANNEL_BLOCK) {
            const Py_ssize_t width = (k0 + CHANNEL_BLOCK < c ? k0 + CHANNEL_BLOCK : c) - k0;
            const Py_ssize_t f0 = b * st[0] + (c0 + k0) * st[2]; /* channel k0 at position 0 in the features */
            Py_ssize_t l = 0;
#ifdef NOAH_HAVE_AVX2
            if (st[1] == 1) /* adjacent positions (NCHW): 8 x 8 blocks (rows are padded to 8 channels) */
                for (; l + 8 <= length; l += 8) sum_dx_8x8(d + l * row + k0, row, stride, count, dx + f0 + l, st[2], width);
#endif
            for (; l < length; l++) {
                for (Py_ssize_t k = 0; k < width; k++) {
                    const float *p = d + l * row + k0 + k;
                    float sum = *p;
                    for (int t = 1; t < count; t++) sum += p[t * stride];
                    dx[f0 + l * st[1] + k * st[2]] = sum;
                }
            }
        }
    }
}

/* The position-tiled copy of every image's features (the forward's: the backward reads it). */
static void tile_features(const TrainJob *job, int threads) {
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
#endif
    for (Py_ssize_t b = 0; b < job->images; b++)
        for (Py_ssize_t s = 0; s < job->pk.slices; s++) tile_image(job, s, b);
}

/* dx (strides `st`) = the sum of the per-thread packed-layout buffers, mapped back to channels. */
static void sum_dx(const TrainJob *job, float *buffers, int count, float *dx, const Py_ssize_t *st, int threads) {
    const Py_ssize_t floats = job->length * job->pk.row, stride = packed_floats(job);
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
#endif
    for (Py_ssize_t b = 0; b < job->images; b++)
        for (Py_ssize_t s = 0; s < job->pk.slices; s++)
            sum_slice(job, b, s, st, buffers + (s * job->images + b) * floats, stride, count, dx);
}

/* ---- Python entry points -------------------------------------------------------------------- */

typedef struct {
    Py_ssize_t heads;
    int head_split, kv_split;
    unsigned int threshold;
    float keep_scale, key_scale;
    unsigned long long seed;
    int threads;
} Config;

/* Fill `job` from the buffers shared by both entry points and check them; -1 with an exception. */
static int setup_job(TrainJob *job, const Config *cfg, const Py_buffer *x, const Py_buffer *tiles, const Py_buffer *wk,
                     const Py_buffer *wv, const Py_buffer *bv, const Py_buffer *stats) {
    if (!cpu_has_avx2()) {
        PyErr_SetString(PyExc_RuntimeError, "the NOAH training kernel needs an x86-64 CPU with AVX2 and FMA");
        return -1;
    }
    if (float_strides(x, 3, "x", job->xs) < 0) return -1;
    const Py_buffer *contiguous[5] = {tiles, wk, wv, bv, stats};
    for (int i = 0; i < 5; i++) {
        if (!PyBuffer_IsContiguous(contiguous[i], 'C')) {
            PyErr_SetString(PyExc_ValueError, "tiles, wk, wv, bv and stats must be C-contiguous");
            return -1;
        }
    }
    const Py_ssize_t images = x->shape[0], length = x->shape[1], channels = x->shape[2];
    if (tiles->ndim != 4 || wk->ndim != 2 || wv->ndim != 2 || bv->ndim != 1 || stats->ndim != 4 || cfg->heads <= 0
        || cfg->threads < 1 || cfg->threshold > (1u << 24)) {
        PyErr_SetString(PyExc_ValueError, "NOAH training kernel: wrong dimensions, heads, threads or threshold");
        return -1;
    }
    job->images = images;
    job->length = length;
    job->heads = cfg->heads;
    job->head_split = cfg->head_split != 0;
    job->kv_split = cfg->kv_split != 0;
    job->classes = wk->shape[0] / cfg->heads;
    job->ck = wk->shape[1];
    job->cv = wv->shape[1];
    job->pk = packing(cfg->heads, job->ck, job->cv, job->head_split, job->kv_split);
    job->panels = (job->classes + NOAH_NR - 1) / NOAH_NR;
    use_group(job, forward_group(job, cfg->threads));
    job->image_block = IMAGE_BLOCK;
    job->key_scale = cfg->key_scale;
    job->keep_scale = cfg->keep_scale;
    job->threshold = cfg->threshold;
    job->seed = cfg->seed;
    job->x = x->buf;
    job->tiles = tiles->buf;
    job->wk = wk->buf;
    job->wv = wv->buf;
    job->bv = bv->buf;
    job->stats = stats->buf;
    const Py_ssize_t blocks = job->head_split ? job->heads : 1;
    const Py_ssize_t expected = job->kv_split ? blocks * (job->ck + job->cv) : blocks * job->ck;
    if (job->classes <= 0 || wk->shape[0] != cfg->heads * job->classes || wv->shape[0] != wk->shape[0]
        || bv->shape[0] != wk->shape[0] || job->ck <= 0 || job->cv <= 0 || images <= 0 || length <= 0
        || (!job->kv_split && job->ck != job->cv) || channels != expected
        || tiles->shape[0] != job->pk.slices || tiles->shape[1] != images || tiles->shape[2] != length
        || tiles->shape[3] != job->pk.tiled || stats->shape[0] != 2 || stats->shape[1] != images
        || stats->shape[2] != cfg->heads || stats->shape[3] != job->classes) {
        PyErr_SetString(PyExc_ValueError, "NOAH training kernel: inconsistent shapes");
        return -1;
    }
    return 0;
}

/* Aligned per-thread scratch plus `extra` floats (returned); NULL with MemoryError set. */
static float *alloc_scratch(TrainJob *job, int threads, Py_ssize_t extra, void **raw) {
    job->scratch_stride = ROUND_UP(scratch_floats(job->ck, job->cv, job->image_block * job->length, job->group), 8);
    *raw = PyMem_RawMalloc((threads * job->scratch_stride + extra) * sizeof(float) + 32);
    if (*raw == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    float *aligned = (float *)((char *)*raw + (32 - (uintptr_t)*raw % 32) % 32);
    job->scratch = aligned;
    return aligned + threads * job->scratch_stride;
}

PyObject *noah_train_tiles_shape(PyObject *self, PyObject *args) {
    Py_ssize_t images, length, heads, ck, cv;
    int head_split, kv_split;
    if (!PyArg_ParseTuple(args, "nnnnnpp", &images, &length, &heads, &ck, &cv, &head_split, &kv_split)) return NULL;
    if (images < 0 || length <= 0 || heads <= 0 || ck <= 0 || cv <= 0) {
        PyErr_SetString(PyExc_ValueError, "train_tiles_shape: sizes must be positive");
        return NULL;
    }
    Packing p = packing(heads, ck, cv, head_split, kv_split);
    return Py_BuildValue("(nnnn)", p.slices, images, length, p.tiled);
}

PyObject *noah_train_forward(PyObject *self, PyObject *args) {
    PyObject *objs[7];
    Config cfg;
    if (!PyArg_ParseTuple(args, "OOOOOOOnppIfKif", &objs[0], &objs[1], &objs[2], &objs[3], &objs[4], &objs[5], &objs[6],
                          &cfg.heads, &cfg.head_split, &cfg.kv_split, &cfg.threshold, &cfg.keep_scale, &cfg.seed,
                          &cfg.threads, &cfg.key_scale))
        return NULL;
    static const char *names[7] = {"x", "tiles", "wk", "wv", "bv", "stats", "logits"};
    Py_buffer views[7];
    for (int i = 0; i < 7; i++) {
        if (get_float_buffer(objs[i], &views[i], i == 1 || i >= 5, names[i]) < 0) {
            release_all(views, i);
            return NULL;
        }
    }
    PyObject *result = NULL;
    TrainJob job = {0};
    Py_buffer *logits = &views[6];
    if (setup_job(&job, &cfg, &views[0], &views[1], &views[2], &views[3], &views[4], &views[5]) < 0) {
    } else if (logits->ndim != 2 || logits->shape[0] != job.images || logits->shape[1] != job.classes
               || !PyBuffer_IsContiguous(logits, 'C')) {
        PyErr_SetString(PyExc_ValueError, "train_forward: logits must be C-contiguous (images, classes)");
    } else {
#ifdef NOAH_HAVE_AVX2
        void *raw;
        if (alloc_scratch(&job, cfg.threads, 0, &raw) != NULL) {
            int finite = 1;
            float *out = logits->buf;
            const Py_ssize_t plane = job.images * job.heads * job.classes;
            Py_BEGIN_ALLOW_THREADS
            tile_features(&job, cfg.threads);
            run_items(&job, 0, cfg.threads);
            for (Py_ssize_t b = 0; b < job.images; b++) {
                for (Py_ssize_t m = 0; m < job.classes; m++) {
                    float sum = 0.0f;
                    for (Py_ssize_t n = 0; n < job.heads; n++) sum += job.stats[plane + (b * job.heads + n) * job.classes + m];
                    out[b * job.classes + m] = sum;
                    finite &= isfinite(sum) != 0;
                }
            }
            Py_END_ALLOW_THREADS
            PyMem_RawFree(raw);
            result = Py_NewRef(finite ? Py_True : Py_False);
        }
#endif
    }
    release_all(views, 7);
    return result;
}

PyObject *noah_train_backward(PyObject *self, PyObject *args) {
    PyObject *objs[11];
    Config cfg;
    Py_ssize_t group;
    if (!PyArg_ParseTuple(args, "OOOOOOOOOOOnppIfKifn", &objs[0], &objs[1], &objs[2], &objs[3], &objs[4], &objs[5],
                          &objs[6], &objs[7], &objs[8], &objs[9], &objs[10], &cfg.heads, &cfg.head_split, &cfg.kv_split,
                          &cfg.threshold, &cfg.keep_scale, &cfg.seed, &cfg.threads, &cfg.key_scale, &group))
        return NULL;
    static const char *names[11] = {"x", "tiles", "wk", "wv", "bv", "stats", "grad", "dx", "dwk", "dwv", "dbv"};
    Py_buffer views[11];
    int held[11] = {0};
    PyObject *result = NULL;
    TrainJob job = {0};
    Py_ssize_t sdx[3] = {0, 0, 0};
    for (int i = 0; i < 11; i++) {
        if ((i == 7 || i == 8 || i == 9) && objs[i] == Py_None) continue; /* dx, dwk, dwv: not needed */
        if (get_float_buffer(objs[i], &views[i], i >= 7, names[i]) < 0) goto done;
        held[i] = 1;
    }
    Py_buffer *grad = &views[6], *dx = &views[7], *dwk = &views[8], *dwv = &views[9], *dbv = &views[10];
    job.need_dx = held[7];
    job.need_dw = held[8] && held[9];
    if (held[8] != held[9] || group < 1 || group > GROUP_MAX) {
        PyErr_SetString(PyExc_ValueError, "train_backward: give both dwk and dwv or neither, and 1 <= group <= 8");
    } else if (job.need_dx && float_strides(dx, 3, "dx", sdx) < 0) {
    } else if (setup_job(&job, &cfg, &views[0], &views[1], &views[2], &views[3], &views[4], &views[5]) < 0) {
    } else if (grad->ndim != 2 || grad->shape[0] != job.images || grad->shape[1] != job.classes
               || !PyBuffer_IsContiguous(grad, 'C') || dbv->ndim != 1 || dbv->shape[0] != job.heads * job.classes
               || !PyBuffer_IsContiguous(dbv, 'C')
               || (job.need_dx && (dx->shape[0] != job.images || dx->shape[1] != job.length
                                   || dx->shape[2] != views[0].shape[2]))
               || (job.need_dw && (dwk->ndim != 2 || dwv->ndim != 2 || dwk->shape[0] != views[2].shape[0]
                                   || dwk->shape[1] != job.ck || dwv->shape[0] != views[3].shape[0]
                                   || dwv->shape[1] != job.cv || !PyBuffer_IsContiguous(dwk, 'C')
                                   || !PyBuffer_IsContiguous(dwv, 'C')))) {
        PyErr_SetString(PyExc_ValueError, "train_backward: grad, dx, dwk, dwv or dbv has the wrong shape or layout");
    } else {
#ifdef NOAH_HAVE_AVX2
        void *raw;
        use_group(&job, group);
        /* with the first-level split and every thread's items whole blocks, the threads write
         * disjoint slices of dX: one shared buffer, nothing to add up */
        int shared = job.head_split;
        for (int t = 1; t < cfg.threads; t++) shared &= (job.items * t / cfg.threads) % (job.items / job.heads) == 0;
        job.dx_stride = job.need_dx && !shared ? packed_floats(&job) : 0;
        const int dx_buffers = !job.need_dx ? 0 : shared ? 1 : cfg.threads;
        float *buffers = alloc_scratch(&job, cfg.threads, dx_buffers * packed_floats(&job), &raw);
        if (buffers != NULL) {
            job.grad = grad->buf;
            job.dx = buffers;
            job.dwk = job.need_dw ? dwk->buf : NULL;
            job.dwv = job.need_dw ? dwv->buf : NULL;
            job.dbv = dbv->buf;
            Py_BEGIN_ALLOW_THREADS
            run_items(&job, 1, cfg.threads);
            if (job.need_dx) sum_dx(&job, buffers, dx_buffers, dx->buf, sdx, cfg.threads);
            Py_END_ALLOW_THREADS
            PyMem_RawFree(raw);
            result = Py_NewRef(Py_None);
        }
#endif
    }
done:
    for (int i = 0; i < 11; i++)
        if (held[i]) PyBuffer_Release(&views[i]);
    return result;
}
