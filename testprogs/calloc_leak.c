/* calloc_leak: the same bytes leak through calloc and through malloc.
 *
 * Every ~1 ms after the barrier, leak_with_calloc() callocs a 2 KiB block and
 * leak_with_malloc() mallocs one, and both keep them (at most MAX_BLOCKS each, then they
 * stop leaking). musl's calloc calls its own malloc inside libc, so an allocator probe
 * on both sees a nested call: it must count the bytes once and keep calloc's caller on
 * the stack. Built like release code (-O2). Both functions work on the block after the
 * call returns, so neither call is a tail call.
 * Output: "ready <pid>", "started", then "leaked_bytes_each <N>" at the end: the bytes
 * each of the two functions leaked (they run in lockstep). */
#include "common.h"

#define BLOCK_SIZE 2048UL
#define MAX_BLOCKS 20000

static void *calloc_blocks[MAX_BLOCKS];
static void *malloc_blocks[MAX_BLOCKS];
static size_t n_calloc, n_malloc;
void *volatile sink;

__attribute__((noinline)) void leak_with_calloc(void)
{
    if (n_calloc == MAX_BLOCKS)
        return;
    char *p = calloc(1, BLOCK_SIZE);
    if (p == NULL) {
        perror("calloc");
        exit(1);
    }
    p[0] = 1;
    calloc_blocks[n_calloc++] = p;
    sink = p;
}

__attribute__((noinline)) void leak_with_malloc(void)
{
    if (n_malloc == MAX_BLOCKS)
        return;
    char *p = malloc(BLOCK_SIZE);
    if (p == NULL) {
        perror("malloc");
        exit(1);
    }
    memset(p, 1, BLOCK_SIZE);
    malloc_blocks[n_malloc++] = p;
    sink = p;
}

int main(int argc, char **argv)
{
    double duration = start(argc, argv);
    double end = now_s() + duration;
    while (now_s() < end) {
        leak_with_calloc();
        leak_with_malloc();
        sleep_ms(1);
    }
    printf("leaked_bytes_each %zu\n", n_calloc * BLOCK_SIZE);
    fflush(stdout);
    return 0;
}
