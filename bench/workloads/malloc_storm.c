/* malloc_storm: mallocs 96 KiB (under the mmap threshold, so from the brk heap), writes
 * every page and frees it, in a loop. With the trim threshold and top pad small, every
 * malloc grows the break and every free trims it: two brk calls per operation.
 *
 * usage: malloc_storm SECONDS BARRIER. ops = malloc/touch/free cycles. */
#include "storm.h"

#include <malloc.h>

#define SIZE (96UL << 10)
#define PAGE 4096UL

__attribute__((noinline)) static void use_buffer(void)
{
    char *p = malloc(SIZE);
    if (p == NULL) {
        perror("malloc");
        exit(1);
    }
    for (unsigned long off = 0; off < SIZE; off += PAGE)
        ((volatile char *)p)[off] = 1;
    free(p);
}

int main(int argc, char **argv)
{
    /* Fixed thresholds (no dynamic mmap threshold), so the heap grows and shrinks. */
    mallopt(M_MMAP_THRESHOLD, 256 << 10);
    mallopt(M_TRIM_THRESHOLD, 16 << 10);
    mallopt(M_TOP_PAD, 0);
    double seconds = storm_start(argc, argv);
    unsigned long ops = 0;
    double t0 = now_s(), t = t0;
    while (t - t0 < seconds) {
        for (int i = 0; i < 64; i++)
            use_buffer();
        ops += 64;
        t = now_s();
    }
    storm_finish(ops, t - t0);
    return 0;
}
