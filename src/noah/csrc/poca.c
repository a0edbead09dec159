/*
 * noah._poca: the NOAH head's CPU inference in one pass -- matmuls, softmax over positions,
 * product and both sums fused, so that no (heads, images, positions, classes) map is ever
 * written to memory.
 *
 * For features X (images x positions x channels, any strides), per POCA block n and class m:
 *
 *     out[img, m] += sum_l 2^K'[l, m] V[l, m] / sum_l 2^K'[l, m]      (l over the image's positions)
 *
 * with K' = log2(e) Xk_n Wk_n^T (the caller centres the key features over positions: softmax
 * ignores a per-class shift, so 2^K' is the unnormalised attention, and its largest term is
 * >= 1) and V = Xv_n Wv_n^T. A 6x16 register tile of keys (6 rows, 16 classes)
 * is computed, exponentiated and parked in L1, the matching tile of values computed next, and
 * both are folded into per-image sums. The matmul loop is a plain broadcast-FMA micro-kernel:
 * with the head's short inner dimension (C/2N channels) it runs close to the FMA units' peak,
 * while a BLAS call would write and re-read every map.
 *
 * The training path (forward and backward, train.c) is registered here too.
 *
 * No PyTorch headers: the module takes buffer-protocol objects (``tensor.numpy()`` views), so it
 * builds in a second with any C11 compiler. The kernel needs x86-64 with AVX2+FMA (checked at
 * run time, reported as ``vectorized``); elsewhere noah uses its PyTorch path.
 */
#include "common.h"
#include "train.h"

#ifdef NOAH_HAVE_AVX2
/* ---- the fused head ------------------------------------------------------------------------
 * Features are read in place through strides: element (image b, position l, channel k) of a
 * feature array is at base[b*img + l*row + k*col] -- NCHW has row = 1, col = L; channels-last
 * has row = C, col = 1. Weights are read as the head's grouped 1x1 conv weight, (heads*M, c)
 * row-major, and packed panel by panel (16 classes, c x 16, zero-padded past the last class)
 * into a small per-thread buffer right before use: no packed copy outlives the call, so a
 * weight changed in any way (even through ``.data``) is always seen. */

typedef struct {
    const float *base;
    Py_ssize_t img, row, col; /* strides in floats */
} Features;

typedef struct {
    Features xk, xv;
    const float *wk, *wv; /* (heads * classes, ck) and (heads * classes, cv), row-major */
    float *out;
    float *scratch; /* per thread: (ck + cv) * 16 floats, 32-byte aligned */
    Py_ssize_t out_stride, images, length, classes, panels, heads, ck, cv, k_step, v_step, scratch_stride;
    float key_scale;
} FusedJob;

#define ZERO2(i) __m256 c##i##0 = _mm256_setzero_ps(), c##i##1 = _mm256_setzero_ps();
#define FMA2(i)                                                         \
    {                                                                   \
        __m256 a = _mm256_broadcast_ss(ak + (i) * row);                 \
        c##i##0 = _mm256_fmadd_ps(a, b0, c##i##0);                      \
        c##i##1 = _mm256_fmadd_ps(a, b1, c##i##1);                      \
    }
#define GEMM_6x16                                                       \
    ZERO2(0) ZERO2(1) ZERO2(2) ZERO2(3) ZERO2(4) ZERO2(5)               \
    UNROLL_TILE                                                         \
    for (Py_ssize_t k = 0; k < c; k++) {                                \
        const float *ak = a + k * col;                                  \
        __m256 b0 = _mm256_load_ps(w + 16 * k), b1 = _mm256_load_ps(w + 16 * k + 8); \
        FMA2(0) FMA2(1) FMA2(2) FMA2(3) FMA2(4) FMA2(5)                 \
    }

/* e[6][16] = 2^(a[6 rows, c] @ w[c, 16]) for 6 consecutive positions starting at a. */
AVX2 static inline void exp_keys_6x16(const float *a, Py_ssize_t row, Py_ssize_t col, const float *w, Py_ssize_t c, float *e) {
    GEMM_6x16
#define STORE_EXP(i)                                                    \
    _mm256_store_ps(e + 16 * (i), exp2_clamped(c##i##0));               \
    _mm256_store_ps(e + 16 * (i) + 8, exp2_clamped(c##i##1));
    STORE_EXP(0) STORE_EXP(1) STORE_EXP(2) STORE_EXP(3) STORE_EXP(4) STORE_EXP(5)
#undef STORE_EXP
}

/* v = a[6 rows, c] @ w[c, 16]; den += sum_rows e, num += sum_rows e * v. */
AVX2 static inline void fold_values_6x16(const float *a, Py_ssize_t row, Py_ssize_t col, const float *w, Py_ssize_t c,
                                         const float *e, __m256 acc[4]) {
    GEMM_6x16
#define FOLD(i)                                                         \
    {                                                                   \
        __m256 e0 = _mm256_load_ps(e + 16 * (i)), e1 = _mm256_load_ps(e + 16 * (i) + 8); \
        acc[0] = _mm256_add_ps(acc[0], e0);                             \
        acc[1] = _mm256_add_ps(acc[1], e1);                             \
        acc[2] = _mm256_fmadd_ps(e0, c##i##0, acc[2]);                  \
        acc[3] = _mm256_fmadd_ps(e1, c##i##1, acc[3]);                  \
    }
    FOLD(0) FOLD(1) FOLD(2) FOLD(3) FOLD(4) FOLD(5)
#undef FOLD
}

/* One row: out = a[1 row, c] @ w[c, 16] as two vectors (two accumulator pairs for latency). */
AVX2 static inline void gemm_1x16(const float *a, Py_ssize_t col, const float *w, Py_ssize_t c, __m256 *lo, __m256 *hi) {
    __m256 c0 = _mm256_setzero_ps(), c1 = _mm256_setzero_ps(), d0 = _mm256_setzero_ps(), d1 = _mm256_setzero_ps();
    Py_ssize_t k = 0;
    for (; k + 1 < c; k += 2) {
        __m256 x = _mm256_broadcast_ss(a + k * col), y = _mm256_broadcast_ss(a + (k + 1) * col);
        c0 = _mm256_fmadd_ps(x, _mm256_load_ps(w + 16 * k), c0);
        c1 = _mm256_fmadd_ps(x, _mm256_load_ps(w + 16 * k + 8), c1);
        d0 = _mm256_fmadd_ps(y, _mm256_load_ps(w + 16 * k + 16), d0);
        d1 = _mm256_fmadd_ps(y, _mm256_load_ps(w + 16 * k + 24), d1);
    }
    if (k < c) {
        __m256 x = _mm256_broadcast_ss(a + k * col);
        c0 = _mm256_fmadd_ps(x, _mm256_load_ps(w + 16 * k), c0);
        c1 = _mm256_fmadd_ps(x, _mm256_load_ps(w + 16 * k + 8), c1);
    }
    *lo = _mm256_add_ps(c0, d0);
    *hi = _mm256_add_ps(c1, d1);
}

/* Head n, panels [p0, p1), images [b0, b1); `wk`/`wv`: this thread's panel buffers. */
AVX2 static void fused_block(const FusedJob *job, Py_ssize_t n, Py_ssize_t p0, Py_ssize_t p1, Py_ssize_t b0, Py_ssize_t b1,
                             float *wk, float *wv) {
    _Alignas(32) float e[NOAH_MR * NOAH_NR];
    _Alignas(32) float pooled[NOAH_NR];
    const Features *fk = &job->xk, *fv = &job->xv;
    for (Py_ssize_t p = p0; p < p1; p++) {
        const Py_ssize_t m0 = p * NOAH_NR, width = job->classes - m0 < NOAH_NR ? job->classes - m0 : NOAH_NR;
        const Py_ssize_t row0 = n * job->classes + m0;
        pack_panel(job->wk + row0 * job->ck, width, job->ck, job->key_scale, wk);
        pack_panel(job->wv + row0 * job->cv, width, job->cv, 1.0f, wv);
        for (Py_ssize_t b = b0; b < b1; b++) {
            const float *ak = fk->base + b * fk->img + n * job->k_step * fk->col;
            const float *av = fv->base + b * fv->img + n * job->v_step * fv->col;
            __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
            Py_ssize_t l = 0;
            for (; l + NOAH_MR <= job->length; l += NOAH_MR) {
                exp_keys_6x16(ak + l * fk->row, fk->row, fk->col, wk, job->ck, e);
                fold_values_6x16(av + l * fv->row, fv->row, fv->col, wv, job->cv, e, acc);
            }
            for (; l < job->length; l++) {
                __m256 k0, k1, v0, v1;
                gemm_1x16(ak + l * fk->row, fk->col, wk, job->ck, &k0, &k1);
                gemm_1x16(av + l * fv->row, fv->col, wv, job->cv, &v0, &v1);
                k0 = exp2_clamped(k0);
                k1 = exp2_clamped(k1);
                acc[0] = _mm256_add_ps(acc[0], k0);
                acc[1] = _mm256_add_ps(acc[1], k1);
                acc[2] = _mm256_fmadd_ps(k0, v0, acc[2]);
                acc[3] = _mm256_fmadd_ps(k1, v1, acc[3]);
            }
            _mm256_store_ps(pooled, _mm256_div_ps(acc[2], acc[0]));
            _mm256_store_ps(pooled + 8, _mm256_div_ps(acc[3], acc[1]));
            float *o = job->out + b * job->out_stride + m0;
            for (Py_ssize_t j = 0; j < width; j++) o[j] += pooled[j];
        }
    }
}

/* All heads, panels [p0, p1), on thread `t`: images in blocks whose key and value features
 * (about 64 Ki floats per block) stay in L2 while the weight panels stream past them, so each
 * panel is packed once per block. */
AVX2 static void fused_panel_range(const FusedJob *job, Py_ssize_t p0, Py_ssize_t p1, int t) {
    float *wk = job->scratch + t * job->scratch_stride, *wv = wk + job->ck * NOAH_NR;
    Py_ssize_t block = (1 << 16) / (job->length * (job->ck + job->cv));
    if (block < 1) block = 1;
    for (Py_ssize_t b0 = 0; b0 < job->images; b0 += block) {
        Py_ssize_t b1 = b0 + block < job->images ? b0 + block : job->images;
        for (Py_ssize_t n = 0; n < job->heads; n++) fused_block(job, n, p0, p1, b0, b1, wk, wv);
    }
}

/* Panels [p0, p1) split evenly over `threads` OpenMP threads. Built with OpenMP, the team comes
 * from the libgomp that PyTorch already loaded (same soname), i.e. PyTorch's own intra-op
 * threads -- a second runtime's threads would compete with PyTorch's spinning workers. */
AVX2 static void fused_all(const FusedJob *job, Py_ssize_t p0, Py_ssize_t p1, int threads) {
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static, 1) if (threads > 1)
#endif
    for (int t = 0; t < threads; t++) {
        fused_panel_range(job, p0 + (p1 - p0) * t / threads, p0 + (p1 - p0) * (t + 1) / threads, t);
    }
}

/* Key features of every image, centred over positions, into `dst` laid out [image][channel]
 * [position]: softmax ignores a per-class shift, so subtracting any per-(image, channel)
 * constant leaves the result exact; the mean keeps the exponents in range. And out = the sum
 * over blocks of the value bias (the attention sums to one, so each block adds its bias once). */
static void prepare(const Features *x, Py_ssize_t images, Py_ssize_t length, Py_ssize_t key_channels, float *dst,
                    const float *bias, Py_ssize_t heads, Py_ssize_t classes, float *out, Py_ssize_t out_stride, int threads) {
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
#endif
    for (Py_ssize_t b = 0; b < images; b++) {
        for (Py_ssize_t k = 0; k < key_channels; k++) {
            const float *src = x->base + b * x->img + k * x->col;
            float *d = dst + (b * key_channels + k) * length, mean = 0.0f;
            for (Py_ssize_t l = 0; l < length; l++) mean += src[l * x->row];
            mean /= (float)length;
            for (Py_ssize_t l = 0; l < length; l++) d[l] = src[l * x->row] - mean;
        }
        float *o = out + b * out_stride;
        for (Py_ssize_t m = 0; m < classes; m++) o[m] = 0.0f;
        for (Py_ssize_t n = 0; n < heads; n++)
            for (Py_ssize_t m = 0; m < classes; m++) o[m] += bias[n * classes + m];
    }
}

#endif

static int use_avx2 = 0;

static PyObject *fused_poca(PyObject *self, PyObject *args) {
    PyObject *objs[5];
    Py_ssize_t heads, key_channels, value_offset, k_step, v_step;
    int threads;
    float key_scale;
    if (!PyArg_ParseTuple(args, "OOOOOnnnnnif", &objs[0], &objs[1], &objs[2], &objs[3], &objs[4], &heads,
                          &key_channels, &value_offset, &k_step, &v_step, &threads, &key_scale))
        return NULL;
    static const char *names[5] = {"x", "wk", "wv", "bias", "out"};
    Py_buffer views[5];
    for (int i = 0; i < 5; i++) {
        if (get_float_buffer(objs[i], &views[i], i == 4, names[i]) < 0) {
            release_all(views, i);
            return NULL;
        }
    }
    PyObject *result = NULL;
    Py_buffer *x = &views[0], *wk = &views[1], *wv = &views[2], *bias = &views[3], *out = &views[4];
    Py_ssize_t sx[3], so[2];
    if (!use_avx2) {
        PyErr_SetString(PyExc_RuntimeError, "fused_poca needs an x86-64 CPU with AVX2 and FMA");
    } else if (float_strides(x, 3, "x", sx) < 0 || float_strides(out, 2, "out", so) < 0) {
    } else if (so[1] != 1) {
        PyErr_SetString(PyExc_ValueError, "out must have contiguous rows");
    } else if (wk->ndim != 2 || wv->ndim != 2 || bias->ndim != 1 || !PyBuffer_IsContiguous(wk, 'C')
               || !PyBuffer_IsContiguous(wv, 'C') || !PyBuffer_IsContiguous(bias, 'C')) {
        PyErr_SetString(PyExc_ValueError, "wk, wv must be C-contiguous (heads * classes, channels), bias (heads * classes,)");
    } else {
#ifdef NOAH_HAVE_AVX2
        const Py_ssize_t images = x->shape[0], length = x->shape[1], channels = x->shape[2], classes = out->shape[1];
        const Features raw = {x->buf, sx[0], sx[1], sx[2]};
        FusedJob job = {
            {NULL, key_channels * length, 1, length}, {raw.base + value_offset * raw.col, raw.img, raw.row, raw.col},
            wk->buf, wv->buf, out->buf, NULL, so[0], images, length, classes, (classes + NOAH_NR - 1) / NOAH_NR, heads,
            wk->shape[1], wv->shape[1], k_step, v_step, (wk->shape[1] + wv->shape[1]) * NOAH_NR, key_scale};
        if (heads <= 0 || classes <= 0 || wk->shape[0] != heads * classes || wv->shape[0] != heads * classes
            || bias->shape[0] != heads * classes || out->shape[0] != images || length <= 0 || job.ck <= 0 || job.cv <= 0
            || k_step < 0 || v_step < 0 || key_channels > channels || value_offset < 0
            || (heads - 1) * k_step + job.ck > key_channels || value_offset + (heads - 1) * v_step + job.cv > channels
            || threads < 1) {
            PyErr_SetString(PyExc_ValueError, "fused_poca: inconsistent shapes");
        } else {
            /* centred keys, then per-thread panel buffers (32-byte aligned: both sizes are
             * multiples of 8 floats after rounding the first) */
            Py_ssize_t keys = (images * key_channels * length + 7) / 8 * 8;
            char *raw_mem = PyMem_RawMalloc((keys + threads * job.scratch_stride) * sizeof(float) + 32);
            if (raw_mem == NULL) {
                PyErr_NoMemory();
            } else {
                float *aligned = (float *)(raw_mem + (32 - (uintptr_t)raw_mem % 32) % 32);
                job.xk.base = aligned;
                job.scratch = aligned + keys;
                int finite = 1;
                Py_BEGIN_ALLOW_THREADS
                prepare(&raw, images, length, key_channels, aligned, bias->buf, heads, classes, job.out, job.out_stride, threads);
                fused_all(&job, 0, job.panels, threads);
                for (Py_ssize_t b = 0; b < images; b++) {
                    const float *o = job.out + b * job.out_stride;
                    for (Py_ssize_t m = 0; m < classes; m++) finite &= isfinite(o[m]) != 0;
                }
                Py_END_ALLOW_THREADS
                PyMem_RawFree(raw_mem);
                result = Py_NewRef(finite ? Py_True : Py_False);
            }
        }
#endif
    }
    release_all(views, 5);
    return result;
}

static PyMethodDef methods[] = {
    {"fused_poca", fused_poca, METH_VARARGS,
     "fused_poca(x, wk, wv, bias, out, heads, key_channels, value_offset, k_step, v_step, threads, key_scale)\n\n"
     "NOAH logits: out[b, m] = sum_n (bias[n*M + m] + sum_l A[l] V[l]), A[l] proportional to\n"
     "2^(key_scale * K[l]) (key_scale = log2(e): A = softmax_l(K)), K = x[b, :, n*k_step : n*k_step+ck]\n"
     "@ wk[n*M : (n+1)*M].T, V = x[b, :, value_offset + n*v_step : ... + cv] @ wv[n*M : (n+1)*M].T.\n"
     "x: (images, length,\n"
     "channels) float32, any positive strides, keys within its first key_channels channels; wk/wv:\n"
     "C-contiguous (heads*M, ck) / (heads*M, cv); bias: (heads*M,); out: (images, M), contiguous\n"
     "rows, overwritten. threads: OpenMP threads (1 where built without OpenMP). Returns whether\n"
     "every logit is finite. AVX2+FMA only."},
    {"train_tiles_shape", noah_train_tiles_shape, METH_VARARGS, NOAH_TRAIN_TILES_SHAPE_DOC},
    {"train_forward", noah_train_forward, METH_VARARGS, NOAH_TRAIN_FORWARD_DOC},
    {"train_backward", noah_train_backward, METH_VARARGS, NOAH_TRAIN_BACKWARD_DOC},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_poca", "Fused softmax pooling for the NOAH head.", -1, methods};

PyMODINIT_FUNC PyInit__poca(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    use_avx2 = cpu_has_avx2();
#ifdef _OPENMP
    PyObject *openmp = Py_True;
#else
    PyObject *openmp = Py_False;
#endif
    if (PyModule_AddObjectRef(m, "vectorized", use_avx2 ? Py_True : Py_False) < 0
        || PyModule_AddObjectRef(m, "openmp", openmp) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
