/*
 * Where the training kernel's time goes, part by part: a development tool (build and run it with
 * tools/kernel_parts.sh). It compiles a train.c (by default src/noah/csrc/train.c) with
 * NOAH_PART_CYCLES, fills a job for one head shape with random features and weights, and per round
 * runs the forward once (for real softmax statistics) and then the backward's work items, on one
 * thread. It prints the median time-stamp-counter ticks of each part of the backward and their
 * ratio to recomputing keys and values (the same multiply-adds as the dW and dX matmuls each),
 * plus the whole forward's.
 *
 *   kernel_parts C M N KEY_RATIO H W [BATCH [REPEATS]]     e.g. kernel_parts 512 1000 4 0.5 7 7
 *
 * Built with -DPARTS_LIBRARY it has no main and exports PARTS_ROUND (a name given with -D), so
 * that kernel_parts_ab.c can alternate the rounds of two builds of train.c in one process.
 */
#define NOAH_PART_CYCLES 1
#ifndef TRAIN_SOURCE
#define TRAIN_SOURCE "train.c"
#endif
#ifndef PARTS_ROUND
#define PARTS_ROUND parts_round
#endif
#include TRAIN_SOURCE
#include <stdio.h>
#include "kernel_parts.h"

_Static_assert((int)PART_KEYS_VALUES == PARTS_KEYS_VALUES && (int)PART_MAPS == PARTS_ELEMENTWISE
                   && (int)PART_DW == PARTS_DW && (int)PART_DX == PARTS_DX && (int)PART_ITEMS == PARTS_BACKWARD
                   && (int)PART_COUNT == PARTS_FORWARD,
               "train.c's parts and kernel_parts.h's must be the same, in the same order");

static float *random_floats(Py_ssize_t count, uint32_t seed) {
    float *p = aligned_alloc(64, ROUND_UP((size_t)count * sizeof(float), 64));
    if (p == NULL) {
        fprintf(stderr, "error: out of memory\n");
        exit(1);
    }
    for (Py_ssize_t i = 0; i < count; i++) p[i] = (float)(mix32((uint32_t)i ^ seed) >> 8) / 16777216.0f - 0.5f;
    return p;
}

/* The job of `shape`, with random features packed as the forward packs them. */
static TrainJob make_job(const PartsShape *shape) {
    const Py_ssize_t n = shape->heads, m = shape->classes, ck = shape->ck, cv = shape->cv;
    const Py_ssize_t images = shape->images, length = shape->length, c = n * (ck + cv);
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
    job.scratch_stride = ROUND_UP(scratch_floats(ck, cv, job.image_block * length, GROUP_MAX), 8);
    job.scratch = random_floats(job.scratch_stride, 13);
    const Py_ssize_t strides[3] = {length * c, c, 1};
    pack_features(&job, features, strides, (float *)job.x, 1);
    free(features);
    return job;
}

void PARTS_ROUND(const PartsShape *shape, unsigned long long ticks[PARTS_COUNT]) {
    static TrainJob job;
    static int ready = 0;
    if (!ready) {
        job = make_job(shape);
        ready = 1;
    }
    use_group(&job, forward_group(&job, 1));
    const unsigned long long start = __rdtsc();
    forward_items(&job, 0, job.items, 0);
    ticks[PARTS_FORWARD] = __rdtsc() - start;
    use_group(&job, 4); /* the backward's, as noah.head.cpu_train.GROUP */
    memset(part_cycles, 0, sizeof part_cycles);
    backward_items(&job, 0, job.items, 0);
    for (int i = 0; i < PART_COUNT; i++) ticks[i] = part_cycles[i];
}

#ifndef PARTS_LIBRARY
int main(int argc, char **argv) {
    PartsShape shape;
    int repeats;
    if (parts_parse(argc, argv, &shape, &repeats) != 0) return 2;
    if (!cpu_has_avx2()) {
        fprintf(stderr, "error: the training kernel needs an x86-64 CPU with AVX2 and FMA\n");
        return 2;
    }
    unsigned long long ticks[PARTS_MAX_REPEATS][PARTS_COUNT];
    for (int r = 0; r < repeats; r++) PARTS_ROUND(&shape, ticks[r]);
    parts_print(&shape, repeats, ticks, NULL);
    return 0;
}
#endif
