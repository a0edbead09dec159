/*
 * Shared by the NOAH kernels (poca.c: inference, train.c: training): the AVX2 building blocks
 * (2^t, 8x8 transposes, weight-panel packing), the run-time CPU check and the buffer-protocol
 * helpers. Everything is static: each translation unit gets its own copy.
 */
#ifndef NOAH_COMMON_H
#define NOAH_COMMON_H

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

/* The register tiles' loops over the inner dimension are unrolled 8 times: fewer loop-counter
 * and pointer updates between the FMAs (a training step of the head took about 9 % less on a
 * 2-core Zen 3). */
#define UNROLL_TILE _Pragma("GCC unroll 8")

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


/* r[i][k] -> r[k][i]: an 8x8 block transposed in registers. */
AVX2 static inline void transpose_8x8(__m256 r[8]) {
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
    r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
    r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

/* Transpose the 8x8 block r (rows i, columns k) and store its columns 16 floats apart. */
AVX2 static inline void store_transposed_8x8(__m256 r0, __m256 r1, __m256 r2, __m256 r3, __m256 r4, __m256 r5,
                                             __m256 r6, __m256 r7, float *d) {
    __m256 r[8] = {r0, r1, r2, r3, r4, r5, r6, r7};
    transpose_8x8(r);
    for (int k = 0; k < 8; k++) _mm256_store_ps(d + k * NOAH_NR, r[k]);
}

/* dst[k][j] = scale * w[j][k] for j < width (rows of w `c` floats apart), 0 for width <= j < 16:
 * one 16-class panel, transposed by 8x8 blocks in registers. */
AVX2 static inline void pack_panel(const float *w, Py_ssize_t width, Py_ssize_t c, float scale, float *dst) {
    const __m256 s = _mm256_set1_ps(scale);
    const Py_ssize_t c8 = c - c % 8;
    if (width == NOAH_NR) {
        for (Py_ssize_t j0 = 0; j0 < NOAH_NR; j0 += 8) {
            const float *r = w + j0 * c;
            for (Py_ssize_t k = 0; k < c8; k += 8) {
#define ROW(i) _mm256_mul_ps(_mm256_loadu_ps(r + (i) * c + k), s)
                store_transposed_8x8(ROW(0), ROW(1), ROW(2), ROW(3), ROW(4), ROW(5), ROW(6), ROW(7), dst + k * NOAH_NR + j0);
#undef ROW
            }
        }
    } else {
        _Alignas(32) float rows[8][8];
        for (Py_ssize_t j0 = 0; j0 < NOAH_NR; j0 += 8) {
            for (Py_ssize_t k = 0; k < c8; k += 8) {
                for (int i = 0; i < 8; i++)
                    for (int q = 0; q < 8; q++) rows[i][q] = j0 + i < width ? scale * w[(j0 + i) * c + k + q] : 0.0f;
#define ROW(i) _mm256_load_ps(rows[i])
                store_transposed_8x8(ROW(0), ROW(1), ROW(2), ROW(3), ROW(4), ROW(5), ROW(6), ROW(7), dst + k * NOAH_NR + j0);
#undef ROW
            }
        }
    }
    for (Py_ssize_t k = c8; k < c; k++)
        for (Py_ssize_t j = 0; j < NOAH_NR; j++) dst[k * NOAH_NR + j] = j < width ? scale * w[j * c + k] : 0.0f;
}

static inline int cpu_has_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#else
static inline int cpu_has_avx2(void) { return 0; }
#endif

/* Get a C-contiguous float32 buffer (or, for ``out``, a writable 2-d one with unit class
 * stride) and check its element count; sets a Python exception and returns -1 otherwise. */
static inline int get_float_buffer(PyObject *obj, Py_buffer *view, int writable, const char *name) {
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
static inline void release_all(Py_buffer *views, int count) {
    for (int i = 0; i < count; i++) PyBuffer_Release(&views[i]);
}

/* Strides of a float32 array in floats; -1 (with an exception set) unless all are non-negative
 * multiples of the item size (0 is fine: an expanded tensor is only read). */
static inline int float_strides(const Py_buffer *view, int ndim, const char *name, Py_ssize_t *out) {
    if (view->ndim != ndim) {
        PyErr_Format(PyExc_ValueError, "%s must be %d-dimensional, got %d dimensions", name, ndim, view->ndim);
        return -1;
    }
    for (int i = 0; i < ndim; i++) {
        if (view->strides[i] % 4 != 0 || view->strides[i] < 0) {
            PyErr_Format(PyExc_ValueError, "%s must have non-negative strides that are whole elements", name);
            return -1;
        }
        out[i] = view->strides[i] / 4;
    }
    return 0;
}

#endif /* NOAH_COMMON_H */
