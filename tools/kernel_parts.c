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
 * Two builds of train.c timed side by side (kernel_parts.sh --against): this file is compiled once
 * per build, with PARTS_ROUND renamed by -D; the old build with -DPARTS_LIBRARY (no main), the new
 * one with -DPARTS_AGAINST, whose main alternates the two builds' rounds, each going first every
 * other round, so that the machine's drift and the cache state hit both alike.
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
#include <stdlib.h>

/* The parts, in the order of train.c's PART_* (checked below), then the whole forward. */
enum { PARTS_KEYS_VALUES, PARTS_ELEMENTWISE, PARTS_DW, PARTS_DX, PARTS_BACKWARD, PARTS_FORWARD, PARTS_COUNT };
#define PARTS_MAX_REPEATS 101

typedef struct {
    long heads, classes, ck, cv, length, images; /* blocks, classes, key/value channels per block */
} PartsShape;

/* argv: C M N KEY_RATIO H W [BATCH [REPEATS]]; 0, or -1 after a one-line error on stderr. */
static inline int parts_parse(int argc, char **argv, PartsShape *shape, int *repeats) {
    if (argc < 7) {
        fprintf(stderr, "usage: %s C M N KEY_RATIO H W [BATCH [REPEATS]]\n", argv[0]);
        return -1;
    }
    const long c = atol(argv[1]), n = atol(argv[3]);
    const double ratio = atof(argv[4]);
    shape->heads = n;
    shape->classes = atol(argv[2]);
    shape->ck = n > 0 ? (long)(c / n * ratio + 0.5) : 0;
    shape->cv = n > 0 ? c / n - shape->ck : 0;
    shape->length = atol(argv[5]) * atol(argv[6]);
    shape->images = argc > 7 ? atol(argv[7]) : 32;
    *repeats = argc > 8 ? atoi(argv[8]) : 11;
    if (c <= 0 || n <= 0 || c % n || shape->ck <= 0 || shape->cv <= 0 || shape->classes <= 0 || shape->length <= 0
        || shape->images <= 0) {
        fprintf(stderr, "error: C=%ld must split into N=%ld blocks of key and value channels (KEY_RATIO %g), "
                "and M, H, W and BATCH must be positive\n", c, n, ratio);
        return -1;
    }
    if (*repeats < 1 || *repeats > PARTS_MAX_REPEATS) {
        fprintf(stderr, "error: REPEATS must be 1 to %d, got %d\n", PARTS_MAX_REPEATS, *repeats);
        return -1;
    }
    return 0;
}

static inline int parts_by_value(const void *a, const void *b) {
    const unsigned long long x = *(const unsigned long long *)a, y = *(const unsigned long long *)b;
    return (x > y) - (x < y);
}

/* The median of column `part` over `repeats` rounds. */
static inline double parts_median(int repeats, unsigned long long ticks[][PARTS_COUNT], int part) {
    unsigned long long column[PARTS_MAX_REPEATS];
    for (int r = 0; r < repeats; r++) column[r] = ticks[r][part];
    qsort(column, repeats, sizeof column[0], parts_by_value);
    return (double)column[repeats / 2];
}

/* Median ticks per part and their ratio to the keys/values recompute; with `old` (another build's
 * rounds, interleaved with these), also old's medians and new/old per part. */
static inline void parts_print(const PartsShape *s, int repeats, unsigned long long ticks[][PARTS_COUNT],
                               unsigned long long old[][PARTS_COUNT]) {
    static const char *names[PARTS_COUNT] = {"backward, keys/values", "backward, elementwise", "backward, dW matmul",
                                             "backward, dX matmul", "backward, all", "forward, all"};
    printf("C=%ld M=%ld N=%ld (keys %ld, values %ld channels per block) L=%ld batch %ld: medians of %d rounds, "
           "1 thread, million time-stamp-counter ticks%s\n", s->heads * (s->ck + s->cv), s->classes, s->heads, s->ck,
           s->cv, s->length, s->images, repeats, old ? "; the two builds' rounds alternate" : "");
    const double kv = parts_median(repeats, ticks, PARTS_KEYS_VALUES);
    for (int i = 0; i < PARTS_COUNT; i++) {
        const double t = parts_median(repeats, ticks, i);
        printf("  %-22s %8.1f  (%.3f x keys/values)", names[i], t / 1e6, t / kv);
        if (old) {
            const double o = parts_median(repeats, old, i);
            printf("   old %8.1f  new/old %.3f", o / 1e6, t / o);
        }
        printf("\n");
    }
}

_Static_assert((int)PART_KEYS_VALUES == PARTS_KEYS_VALUES && (int)PART_MAPS == PARTS_ELEMENTWISE
                   && (int)PART_DW == PARTS_DW && (int)PART_DX == PARTS_DX && (int)PART_ITEMS == PARTS_BACKWARD
                   && (int)PART_COUNT == PARTS_FORWARD,
               "train.c's parts and these must be the same, in the same order");

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
    job.x = random_floats(images * length * c, 1);
    job.xs[0] = length * c;
    job.xs[1] = 1; /* NCHW, as the Python side hands them over */
    job.xs[2] = length;
    job.tiles = random_floats(job.pk.slices * images * length * job.pk.tiled, 3);
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
    tile_features(&job, 1);
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
#ifdef PARTS_AGAINST
void parts_round_old(const PartsShape *shape, unsigned long long ticks[PARTS_COUNT]);
#endif

int main(int argc, char **argv) {
    PartsShape shape;
    int repeats;
    if (parts_parse(argc, argv, &shape, &repeats) != 0) return 2;
    if (!cpu_has_avx2()) {
        fprintf(stderr, "error: the training kernel needs an x86-64 CPU with AVX2 and FMA\n");
        return 2;
    }
    static unsigned long long ticks[PARTS_MAX_REPEATS][PARTS_COUNT], old[PARTS_MAX_REPEATS][PARTS_COUNT];
    for (int r = 0; r < repeats; r++) {
#ifdef PARTS_AGAINST
        if (r % 2 == 0) parts_round_old(&shape, old[r]);
        PARTS_ROUND(&shape, ticks[r]);
        if (r % 2 == 1) parts_round_old(&shape, old[r]);
#else
        PARTS_ROUND(&shape, ticks[r]);
#endif
    }
#ifdef PARTS_AGAINST
    parts_print(&shape, repeats, ticks, old);
#else
    parts_print(&shape, repeats, ticks, NULL);
#endif
    return 0;
}
#endif
