/* slow_leak: a request log that is never trimmed, growing at a steady 1 MiB a second
 * for as long as it runs: the daemon's timeline and time-to-OOM test.
 *
 * Every 50 ms after the barrier, keep_request_log() mallocs a 48 KiB entry (below
 * glibc's mmap threshold: the main arena grows by brk), touches every page and keeps
 * it (at most MAX_ENTRIES, 240 MiB, then it stops leaking). The rate does not depend
 * on how fast the machine is: entries are kept on a clock, not per loop.
 * Output: "ready <pid>", "started", then "leaked_bytes <N>" at the end. */
#include "common.h"

#define ENTRY_SIZE (48UL * 1024)
#define EVERY_MS 50
#define MAX_ENTRIES 5120

static void *entries[MAX_ENTRIES];
static size_t n_entries;
void *volatile sink;

__attribute__((noinline)) void keep_request_log(void)
{
    if (n_entries == MAX_ENTRIES)
        return;
    char *e = malloc(ENTRY_SIZE);
    if (e == NULL) {
        perror("malloc");
        exit(1);
    }
    e[0] = 1;
    touch_pages(e, ENTRY_SIZE);
    entries[n_entries++] = e;
    sink = e;
}

int main(int argc, char **argv)
{
    double duration = start(argc, argv);
    double begin = now_s();
    double end = begin + duration;
    size_t due = 0;
    while (now_s() < end) {
        /* Catch up after a late wake-up, so the growth follows the clock. */
        size_t target = (size_t)((now_s() - begin) * 1000.0 / EVERY_MS) + 1;
        while (due < target) {
            keep_request_log();
            due++;
        }
        sleep_ms(EVERY_MS);
    }
    printf("leaked_bytes %zu\n", n_entries * ENTRY_SIZE);
    fflush(stdout);
    return 0;
}
