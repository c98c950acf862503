/* ns_leak: leaks 256 KiB anonymous mappings from inside a container-like sandbox.
 *
 * Built static (it runs chrooted into a directory that holds nothing else). Every
 * ~10 ms after the barrier, ns_leak_sessions() maps 256 KiB, touches every page and
 * keeps it (up to MAX_LEAKS mappings, then it stops leaking): the stacks are
 * main -> ns_leak_sessions -> mmap.
 * Output: "ready <pid>" (the pid in its own PID namespace), "started", then
 * "leaked_bytes <N>" at the end. */
#include "common.h"

#include <sys/mman.h>

#define LEAK_SIZE (256UL * 1024)
#define MAX_LEAKS 400

static void *leaked[MAX_LEAKS];
static size_t n_leaked;
void *volatile sink;

__attribute__((noinline)) void ns_leak_sessions(void)
{
    if (n_leaked == MAX_LEAKS)
        return;
    void *p = mmap(NULL, LEAK_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    touch_pages(p, LEAK_SIZE);
    leaked[n_leaked++] = p;
    sink = p;
}

int main(int argc, char **argv)
{
    double duration = start(argc, argv);
    double end = now_s() + duration;
    while (now_s() < end) {
        ns_leak_sessions();
        sleep_ms(10);
    }
    printf("leaked_bytes %zu\n", n_leaked * LEAK_SIZE);
    fflush(stdout);
    return 0;
}
