/*
 * noah._poca: the NOAH head's CPU inference in one pass -- matmuls, softmax over positions,
 * product and both sums fused, so that no (heads, images, positions, classes) map is ever
 * written to memory.
 *
 * For features X (rows = images * positions, row-major), per POCA block n and class m:
 *
 *     out[img, m] += sum_l 2^K'[l, m] V[l, m] / sum_l 2^K'[l, m]      (l over the image's rows)
 *
 * with K' = Xk_n Wk_n (the caller centres the key features over positions and scales them by
 * log2(e): softmax ignores a per-class shift, so 2^K' is the unnormalised attention, and its
 * largest term is >= 1) and V = Xv_n Wv_n. A 6x16 register tile of keys (6 rows, 16 classes)
 * is computed, exponentiated and parked in L1, the matching tile of values computed next, and
 * both are folded into per-image sums. The matmul loop is a plain broadcast-FMA micro-kernel:
 * with the head's short inner dimension (C/2N channels) it runs close to the FMA units' peak,
 * while a BLAS call would write and re-read every map.
 *
 * No PyTorch headers: the module takes buffer-protocol objects (``tensor.numpy()`` views), so it
 * builds in a second with any C11 compiler. The kernel needs x86-64 with AVX2+FMA (checked at
 * run time, reported as ``vectorized``); elsewhere noah uses its PyTorch path.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <string.h>
#include <stdlib.h>
#include <stdint.h>

#define NOAH_MR 6  /* positions per register tile */
#define NOAH_NR 16 /* classes per register tile and per weight panel */

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define NOAH_HAVE_AVX2 1
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,fma")))

/* 2^t, t clamped to [-125, 128] (NaN propagates): t = n + f with |f| <= 1/2, 2^f by Cephes'
 * degree-6 exp2f polynomial (about 2 ulp), 2^n by building the exponent bits. No denormal is
 * ever formed: a term below 2^-125 counts as 2^-125, far below float32 resolution next to a
 * denominator >= 1. t >= 127.5 gives +inf, which the caller detects as overflow. */
AVX2 static inline __m256 exp2_clamped(__m256 t) {
    t = _mm256_max_ps(_mm256_set1_ps(-125.0f), t); /* a NaN in the second operand is kept */
    t = _mm256_min_ps(_mm256_set1_ps(128.0f), t);
    __m256 n = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 f = _mm256_sub_ps(t, n);
    __m256 p = _mm256_set1_ps(1.535336188319500e-4f);
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.339887440266574e-3f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(9.618437357674640e-3f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(5.550332471162809e-2f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.402264791363012e-1f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(6.931472028550421e-1f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f));
    __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
}

/* ---- the fused head ------------------------------------------------------------------------
 * Features are read in place through strides: element (image b, position l, channel k) of a
 * feature array is at base[b*img + l*row + k*col] -- NCHW has row = 1, col = L; channels-last
 * has row = C, col = 1. Weights come packed as (heads, panels, c, 16): 16 classes per panel,
 * zero-padded past the last class. */

typedef struct {
    const float *base;
    Py_ssize_t img, row, col; /* strides in floats */
} Features;

typedef struct {
    Features xk, xv;
    const float *wk, *wv;
    float *out;
    Py_ssize_t out_stride, images, length, classes, panels, heads, ck, cv, k_step, v_step;
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

/* Head n, panels [p0, p1), images [b0, b1). */
AVX2 static void fused_block(const FusedJob *job, Py_ssize_t n, Py_ssize_t p0, Py_ssize_t p1, Py_ssize_t b0, Py_ssize_t b1) {
    _Alignas(32) float e[NOAH_MR * NOAH_NR];
    _Alignas(32) float pooled[NOAH_NR];
    const Features *fk = &job->xk, *fv = &job->xv;
    for (Py_ssize_t p = p0; p < p1; p++) {
        const float *wk = job->wk + (n * job->panels + p) * job->ck * NOAH_NR;
        const float *wv = job->wv + (n * job->panels + p) * job->cv * NOAH_NR;
        const Py_ssize_t m0 = p * NOAH_NR, width = job->classes - m0 < NOAH_NR ? job->classes - m0 : NOAH_NR;
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

/* All heads, panels [p0, p1): images in blocks whose key and value features (about 64 Ki
 * floats per block) stay in L2 while every weight panel streams past them. */
AVX2 static void fused_panel_range(const FusedJob *job, Py_ssize_t p0, Py_ssize_t p1) {
    Py_ssize_t block = (1 << 16) / (job->length * (job->ck + job->cv));
    if (block < 1) block = 1;
    for (Py_ssize_t b0 = 0; b0 < job->images; b0 += block) {
        Py_ssize_t b1 = b0 + block < job->images ? b0 + block : job->images;
        for (Py_ssize_t n = 0; n < job->heads; n++) fused_block(job, n, p0, p1, b0, b1);
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
        fused_panel_range(job, p0 + (p1 - p0) * t / threads, p0 + (p1 - p0) * (t + 1) / threads);
    }
}

static int cpu_has_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#else
static int cpu_has_avx2(void) { return 0; }
#endif

static int use_avx2 = 0;

/* Get a C-contiguous float32 buffer (or, for ``out``, a writable 2-d one with unit class
 * stride) and check its element count; sets a Python exception and returns -1 otherwise. */
static int get_float_buffer(PyObject *obj, Py_buffer *view, int writable, const char *name) {
    int flags = PyBUF_FORMAT | PyBUF_STRIDES | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0) return -1;
    if (view->itemsize != 4 || view->format == NULL || strcmp(view->format, "f") != 0) {
        PyErr_Format(PyExc_TypeError, "%s must hold float32 values, got format '%s'", name,
                     view->format ? view->format : "?");
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* Release every buffer in views[0..count). */
static void release_all(Py_buffer *views, int count) {
    for (int i = 0; i < count; i++) PyBuffer_Release(&views[i]);
}

/* Strides of a float32 array in floats; -1 (with an exception set) unless all are positive
 * multiples of the item size. */
static int float_strides(const Py_buffer *view, int ndim, const char *name, Py_ssize_t *out) {
    if (view->ndim != ndim) {
        PyErr_Format(PyExc_ValueError, "%s must be %d-dimensional, got %d dimensions", name, ndim, view->ndim);
        return -1;
    }
    for (int i = 0; i < ndim; i++) {
        if (view->strides[i] % 4 != 0 || (view->strides[i] <= 0 && view->shape[i] > 1)) {
            PyErr_Format(PyExc_ValueError, "%s must have positive strides", name);
            return -1;
        }
        out[i] = view->strides[i] / 4;
    }
    return 0;
}

static PyObject *fused_poca(PyObject *self, PyObject *args) {
    PyObject *objs[5];
    Py_ssize_t heads, k_step, v_step, p0, p1;
    int threads;
    if (!PyArg_ParseTuple(args, "OOOOOnnnnni", &objs[0], &objs[1], &objs[2], &objs[3], &objs[4],
                          &heads, &k_step, &v_step, &p0, &p1, &threads))
        return NULL;
    static const char *names[5] = {"xk", "xv", "wk", "wv", "out"};
    Py_buffer views[5];
    for (int i = 0; i < 5; i++) {
        if (get_float_buffer(objs[i], &views[i], i == 4, names[i]) < 0) {
            release_all(views, i);
            return NULL;
        }
    }
    PyObject *result = NULL;
    Py_buffer *xk = &views[0], *xv = &views[1], *wk = &views[2], *wv = &views[3], *out = &views[4];
    Py_ssize_t sk[3], sv[3], so[2];
    if (!use_avx2) {
        PyErr_SetString(PyExc_RuntimeError, "fused_poca needs an x86-64 CPU with AVX2 and FMA");
    } else if (float_strides(xk, 3, "xk", sk) < 0 || float_strides(xv, 3, "xv", sv) < 0 || float_strides(out, 2, "out", so) < 0) {
    } else if (so[1] != 1) {
        PyErr_SetString(PyExc_ValueError, "out must have contiguous rows");
    } else if (wk->ndim != 4 || wv->ndim != 4 || !PyBuffer_IsContiguous(wk, 'C') || !PyBuffer_IsContiguous(wv, 'C')
               || wk->shape[3] != NOAH_NR || wv->shape[3] != NOAH_NR || ((uintptr_t)wk->buf | (uintptr_t)wv->buf) % 32 != 0) {
        PyErr_SetString(PyExc_ValueError, "packed weights must be C-contiguous (heads, panels, c, 16) and 32-byte aligned");
    } else {
#ifdef NOAH_HAVE_AVX2
        FusedJob job = {
            {xk->buf, sk[0], sk[1], sk[2]}, {xv->buf, sv[0], sv[1], sv[2]}, wk->buf, wv->buf, out->buf, so[0],
            out->shape[0], xk->shape[1], out->shape[1], wk->shape[1], heads, wk->shape[2], wv->shape[2], k_step, v_step};
        if (heads <= 0 || wk->shape[0] != heads || wv->shape[0] != heads || wv->shape[1] != job.panels
            || job.panels != (job.classes + NOAH_NR - 1) / NOAH_NR || job.length <= 0 || job.ck <= 0 || job.cv <= 0
            || xk->shape[0] != job.images || xv->shape[0] != job.images || xv->shape[1] != job.length
            || k_step < 0 || v_step < 0 || (heads - 1) * k_step + job.ck > xk->shape[2]
            || (heads - 1) * v_step + job.cv > xv->shape[2] || p0 < 0 || p0 > p1 || p1 > job.panels
            || threads < 1) {
            PyErr_SetString(PyExc_ValueError, "fused_poca: inconsistent shapes");
        } else {
            int finite = 1;
            Py_BEGIN_ALLOW_THREADS
            fused_all(&job, p0, p1, threads);
            for (Py_ssize_t b = 0; b < job.images; b++) {
                const float *o = job.out + b * job.out_stride;
                for (Py_ssize_t m = p0 * NOAH_NR; m < job.classes && m < p1 * NOAH_NR; m++) finite &= isfinite(o[m]) != 0;
            }
            Py_END_ALLOW_THREADS
            result = Py_NewRef(finite ? Py_True : Py_False);
        }
#endif
    }
    release_all(views, 5);
    return result;
}

static PyMethodDef methods[] = {
    {"fused_poca", fused_poca, METH_VARARGS,
     "fused_poca(xk, xv, wk, wv, out, heads, k_step, v_step, p0, p1, threads)\n\n"
     "Adds sum_n sum_l 2^K' V / sum_l 2^K' to out (images, classes) for class panels [p0, p1);\n"
     "returns whether all of those entries of out are finite.\n"
     "K' = xk[b, :, n*k_step : n*k_step+ck] @ wk[n], V = xv[b, :, n*v_step : n*v_step+cv] @ wv[n];\n"
     "xk/xv: (images, length, channels) float32 arrays with any positive strides; wk/wv:\n"
     "packed (heads, panels, c, 16), C-contiguous and 32-byte aligned; threads: OpenMP threads\n"
     "over the class panels (1 where built without OpenMP). AVX2+FMA only."},
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
