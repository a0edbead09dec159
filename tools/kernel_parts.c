/*
 * Where the training kernel's time goes, part by part: a development tool (build and run it with
 * tools/kernel_parts.sh). It compiles src/noah/csrc/train.c with NOAH_PART_CYCLES, fills a job for
 * one head shape with random features and weights, runs the forward once for real softmax
 * statistics, then the backward's work items `repeats` times on one thread, and prints the
 * median time-stamp-counter ticks of each part of the backward and their ratio to recomputing
 * keys and values (the same multiply-adds as the dW and dX matmuls each), plus the forward's.
 *
 *   kernel_parts C M N KEY_RATIO H W [BATCH [REPEATS]]     e.g. kernel_parts 512 1000 4 0.5 7 7
 */
#define NOAH_PART_CYCLES 1
#include "train.c"
#include <stdio.h>

static float *random_floats(Py_ssize_t count, uint32_t seed) {
    float *p = aligned_alloc(64, ROUND_UP((size_t)count * sizeof(float), 64));
    if (p == NULL) {
        fprintf(stderr, "error: out of memory\n");
        exit(1);
    }
    for (Py_ssize_t i = 0; i < count; i++) p[i] = (float)(mix32((uint32_t)i ^ seed) >> 8) / 16777216.0f - 0.5f;
    return p;
}

static int by_value(const void *a, const void *b) {
    const unsigned long long x = *(const unsigned long long *)a, y = *(const unsigned long long *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr, "usage: %s C M N KEY_RATIO H W [BATCH [REPEATS]]\n", argv[0]);
        return 2;
    }
    const Py_ssize_t c = atol(argv[1]), m = atol(argv[2]), n = atol(argv[3]), length = atol(argv[5]) * atol(argv[6]);
    const double ratio = atof(argv[4]);
    const Py_ssize_t images = argc > 7 ? atol(argv[7]) : 32;
    const int repeats = argc > 8 ? atoi(argv[8]) : 11;
    const Py_ssize_t per_block = c / n, ck = (Py_ssize_t)(per_block * ratio + 0.5), cv = per_block - ck;
    if (c <= 0 || m <= 0 || n <= 0 || c % n || ck <= 0 || cv <= 0 || length <= 0 || images <= 0) {
        fprintf(stderr, "error: C=%zd must split into N=%zd blocks of key and value channels (KEY_RATIO %g), "
                "and M, H, W and BATCH must be positive\n", c, n, ratio);
        return 2;
    }
    if (repeats < 1 || repeats > 101) {
        fprintf(stderr, "error: REPEATS must be 1 to 101, got %d\n", repeats);
        return 2;
    }
    if (!cpu_has_avx2()) {
        fprintf(stderr, "error: the training kernel needs an x86-64 CPU with AVX2 and FMA\n");
        return 2;
    }
    TrainJob job = {0};
    job.images = images;
    job.length = length;
    job.heads = n;
    job.head_split = job.kv_split = 1;
    job.classes = m;
    job.ck = ck;
    job.cv = cv;
    job.pk = packing(n, ck, cv, 1, 1);
    job.panels = (m + NOAH_NR - 1) / NOAH_NR;
    job.image_block = IMAGE_BLOCK;
    job.key_scale = 1.4426950408889634f;
    job.keep_scale = 1.0f;
    float *features = random_floats(images * length * c, 1);
    job.x = random_floats(packed_floats(&job), 2);
    job.tiles = random_floats(tiled_floats(&job), 3);
    job.wk = random_floats(n * m * ck, 4);
    job.wv = random_floats(n * m * cv, 5);
    job.bv = random_floats(n * m, 6);
    job.stats = random_floats(2 * images * n * m, 7);
    job.grad = random_floats(images * m, 8);
    job.dx = random_floats(packed_floats(&job), 9);
    job.dwk = random_floats(n * m * ck, 10);
    job.dwv = random_floats(n * m * cv, 11);
    job.dbv = random_floats(n * m, 12);
    job.need_dx = job.need_dw = 1;
    const Py_ssize_t strides[3] = {length * c, c, 1};
    pack_features(&job, features, strides, (float *)job.x, 1);

    unsigned long long forward[101], parts[PART_COUNT][101];
    for (int r = 0; r < repeats; r++) {
        job.group = FORWARD_GROUP < job.panels ? FORWARD_GROUP : job.panels;
        job.items = n * ((job.panels + job.group - 1) / job.group);
        job.scratch_stride = ROUND_UP(scratch_floats(ck, cv, job.image_block * length, GROUP_MAX), 8);
        if (job.scratch == NULL) job.scratch = random_floats(job.scratch_stride, 13);
        const unsigned long long start = __rdtsc();
        forward_items(&job, 0, job.items, 0);
        forward[r] = __rdtsc() - start;
        job.group = 4; /* the backward's, as noah.head.cpu_train.GROUP */
        job.items = n * ((job.panels + job.group - 1) / job.group);
        memset(part_cycles, 0, sizeof part_cycles);
        backward_items(&job, 0, job.items, 0);
        for (int i = 0; i < PART_COUNT; i++) parts[i][r] = part_cycles[i];
    }
    static const char *names[PART_COUNT] = {"keys/values", "elementwise", "dW matmul", "dX matmul", "all"};
    printf("C=%zd M=%zd N=%zd (keys %zd, values %zd channels per block) L=%zd batch %zd: median of %d, 1 thread, "
           "million time-stamp-counter ticks\n", c, m, n, ck, cv, length, images, repeats);
    qsort(forward, repeats, sizeof forward[0], by_value);
    qsort(parts[PART_KEYS_VALUES], repeats, sizeof forward[0], by_value);
    const double keys_values = (double)parts[PART_KEYS_VALUES][repeats / 2];
    for (int i = 0; i < PART_COUNT; i++) {
        if (i != PART_KEYS_VALUES) qsort(parts[i], repeats, sizeof forward[0], by_value);
        printf("  backward, %-12s %8.1f  (%.3f x keys/values)\n", names[i], parts[i][repeats / 2] / 1e6,
               parts[i][repeats / 2] / keys_values);
    }
    printf("  forward, all          %8.1f  (%.3f x keys/values)\n", forward[repeats / 2] / 1e6,
           forward[repeats / 2] / keys_values);
    return 0;
}
