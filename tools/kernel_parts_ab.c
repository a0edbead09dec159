/*
 * Two builds of train.c timed part by part in one process (tools/kernel_parts.sh --against), their
 * rounds alternating and each going first every other round, so that the machine's drift and the
 * cache state hit both alike. kernel_parts.c is compiled once per build with -DPARTS_LIBRARY and
 * PARTS_ROUND renamed to parts_round_old / parts_round_new.
 */
#include "kernel_parts.h"

void parts_round_old(const PartsShape *shape, unsigned long long ticks[PARTS_COUNT]);
void parts_round_new(const PartsShape *shape, unsigned long long ticks[PARTS_COUNT]);

int main(int argc, char **argv) {
    PartsShape shape;
    int repeats;
    if (parts_parse(argc, argv, &shape, &repeats) != 0) return 2;
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) {
        fprintf(stderr, "error: the training kernel needs an x86-64 CPU with AVX2 and FMA\n");
        return 2;
    }
    unsigned long long old[PARTS_MAX_REPEATS][PARTS_COUNT], new[PARTS_MAX_REPEATS][PARTS_COUNT];
    for (int r = 0; r < repeats; r++) { /* each goes first every other round */
        if (r % 2 == 0) parts_round_old(&shape, old[r]);
        parts_round_new(&shape, new[r]);
        if (r % 2 == 1) parts_round_old(&shape, old[r]);
    }
    parts_print(&shape, repeats, new, old);
    return 0;
}
