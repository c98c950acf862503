/* mmap_leak: leaks 512 KiB anonymous mappings and churns 64 KiB scratch mappings.
 *
 * Every ~10 ms after the barrier: leak_sessions() maps 512 KiB, touches every page and
 * keeps it (up to MAX_LEAKS mappings, then it stops leaking); scratch_work() maps 64 KiB,
 * touches it and unmaps it. Both map through map_region(), so the stacks are
 * main -> leak_sessions|scratch_work -> map_region -> mmap.
 * Output: "ready <pid>", "started", then "leaked_bytes <N>" at the end. */
#include "common.h"

#include <sys/mman.h>

#define LEAK_SIZE (512UL * 1024)
#define SCRATCH_SIZE (64UL * 1024)
#define MAX_LEAKS 400

static void *leaked[MAX_LEAKS];
static size_t n_leaked;
void *volatile sink;

__attribute__((noinline, noclone)) static void *map_region(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    sink = p;
    return p;
}

__attribute__((noinline)) void leak_sessions(void)
{
    if (n_leaked == MAX_LEAKS)
        return;
    void *p = map_region(LEAK_SIZE);
    touch_pages(p, LEAK_SIZE);
    leaked[n_leaked++] = p;
}

__attribute__((noinline)) void scratch_work(void)
{
    void *p = map_region(SCRATCH_SIZE);
    touch_pages(p, SCRATCH_SIZE);
    sink = p;
    if (munmap(p, SCRATCH_SIZE) != 0) {
        perror("munmap");
        exit(1);
    }
}

int main(int argc, char **argv)
{
    double duration = start(argc, argv);
    double end = now_s() + duration;
    while (now_s() < end) {
        leak_sessions();
        scratch_work();
        sleep_ms(10);
    }
    printf("leaked_bytes %zu\n", n_leaked * LEAK_SIZE);
    fflush(stdout);
    return 0;
}
