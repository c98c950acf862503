/* oom_grow: grows anonymous memory until the OOM killer stops it.
 *
 * After the barrier, every ~10 ms grow_until_killed() maps 1 MiB through map_chunk(),
 * touches every page and keeps it, so the stacks are
 * main -> grow_until_killed -> map_chunk -> mmap. Run it in a memory-limited cgroup:
 * it is OOM-killed (SIGKILL) once the limit is reached. If it is still alive after
 * DURATION_SECONDS (no limit, or the limit is above MAX_CHUNKS MiB), it prints
 * "not_killed <bytes>" and exits 0, so it always stops by itself.
 * Output: "ready <pid>", "started", and only when not killed "not_killed <N>". */
#include "common.h"

#include <sys/mman.h>

#define CHUNK (1024UL * 1024)
#define MAX_CHUNKS 1024

static size_t n_chunks;
void *volatile sink;

__attribute__((noinline, noclone)) static void *map_chunk(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    sink = p;
    return p;
}

__attribute__((noinline)) void grow_until_killed(void)
{
    if (n_chunks == MAX_CHUNKS)
        return;
    void *p = map_chunk(CHUNK);
    touch_pages(p, CHUNK);
    n_chunks++;
}

int main(int argc, char **argv)
{
    double duration = start(argc, argv);
    double end = now_s() + duration;
    while (now_s() < end) {
        grow_until_killed();
        sleep_ms(10);
    }
    printf("not_killed %zu\n", n_chunks * CHUNK);
    fflush(stdout);
    return 0;
}
