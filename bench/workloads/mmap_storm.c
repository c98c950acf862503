/* mmap_storm: maps 64 KiB of anonymous memory, writes every page, unmaps it, in a loop.
 * Two mapping syscalls and 16 page faults per operation.
 *
 * usage: mmap_storm SECONDS BARRIER. ops = map/touch/unmap cycles. */
#include "storm.h"

#include <sys/mman.h>

#define SIZE (64UL << 10)
#define PAGE 4096UL

__attribute__((noinline)) static void map_scratch(void)
{
    char *p = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    for (unsigned long off = 0; off < SIZE; off += PAGE)
        ((volatile char *)p)[off] = 1;
    munmap(p, SIZE);
}

int main(int argc, char **argv)
{
    double seconds = storm_start(argc, argv);
    unsigned long ops = 0;
    double t0 = now_s(), t = t0;
    while (t - t0 < seconds) {
        for (int i = 0; i < 64; i++)
            map_scratch();
        ops += 64;
        t = now_s();
    }
    storm_finish(ops, t - t0);
    return 0;
}
