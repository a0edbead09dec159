/* Shared by tools/kernel_parts.c and tools/kernel_parts_ab.c: the shape, its parsing, and the
 * table of median ticks per part. */
#ifndef NOAH_KERNEL_PARTS_H
#define NOAH_KERNEL_PARTS_H

#include <stdio.h>
#include <stdlib.h>

/* The parts, in the order of train.c's PART_* (checked there), then the whole forward. */
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

#endif
