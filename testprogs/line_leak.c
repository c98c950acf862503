/* line_leak: a malloc leak whose allocation and first use sit on consecutive lines.
 *
 * Every ~3 ms after the barrier, leak_here() mallocs a 64 KiB block, fills it on the
 * next line and keeps it: about 62.5 MiB in 3 s, steadily to the end (MAX_BLOCKS, 125
 * MiB, only bounds a run much longer than the tests' ones). The
 * allocator's return probe sees the registers at the return address, which lies in the
 * memset line: a profiler must look the frame up at the return address minus one to
 * name the malloc line. The malloc line carries the marker LEAK_LINE for tests.
 * Output: "ready <pid>", "started", then "leaked_bytes <N>" at the end. */
#include "common.h"

#define BLOCK_SIZE (64UL * 1024)
#define MAX_BLOCKS 2000

static void *blocks[MAX_BLOCKS];
static size_t n_blocks;
void *volatile sink;

__attribute__((noinline)) void leak_here(void)
{
    if (n_blocks == MAX_BLOCKS)
        return;
    char *p = malloc(BLOCK_SIZE); /* LEAK_LINE */
    memset(p, 0xab, BLOCK_SIZE);
    blocks[n_blocks++] = p;
    sink = p;
}

int main(int argc, char **argv)
{
    double duration = start(argc, argv);
    double end = now_s() + duration;
    while (now_s() < end) {
        leak_here();
        sleep_ms(3);
    }
    printf("leaked_bytes %zu\n", n_blocks * BLOCK_SIZE);
    return 0;
}
