/* session_cache: a leak hidden behind allocation churn, through the C library's malloc.
 *
 * Built like release code (-O2, no frame pointers). Every ~10 ms after the barrier, one
 * "request" runs:
 *   handle_request_scratch() mallocs four scratch buffers of 16-112 KiB (pseudo-random,
 *   below glibc's mmap threshold) and touches them;
 *   cache_insert_session() mallocs a 32 KiB session, touches it and keeps it in a global
 *   table (at most MAX_SESSIONS, then it stops leaking);
 *   release_scratch() frees the scratch buffers.
 * Only the sessions leak. On glibc the scratch buffers keep extending the heap top that
 * the leaked sessions then pin, so the brk view blames the scratch path; the allocator
 * view (live blocks by stack) names cache_insert_session.
 * Output: "ready <pid>", "started", then "leaked_bytes <N>" and "scratch_bytes <N>"
 * (total scratch allocated and freed) at the end. */
#include "common.h"

#define SESSION_SIZE (32UL * 1024)
#define MAX_SESSIONS 2000
#define SCRATCH_BUFFERS 4

static void *sessions[MAX_SESSIONS];
static size_t n_sessions;
static size_t scratch_total;
void *volatile sink;

struct scratch {
    void *buf[SCRATCH_BUFFERS];
};

__attribute__((noinline)) void cache_insert_session(unsigned long id)
{
    if (n_sessions == MAX_SESSIONS)
        return;
    unsigned long *s = malloc(SESSION_SIZE);
    if (s == NULL) {
        perror("malloc");
        exit(1);
    }
    s[0] = id;
    touch_pages(s, SESSION_SIZE);
    sessions[n_sessions++] = s;
    sink = s;
}

__attribute__((noinline)) void handle_request_scratch(struct scratch *sc, unsigned *seed)
{
    for (int i = 0; i < SCRATCH_BUFFERS; i++) {
        *seed = *seed * 1103515245u + 12345u;
        size_t size = 16 * 1024 + ((*seed >> 8) % (96 * 1024));
        sc->buf[i] = malloc(size);
        if (sc->buf[i] == NULL) {
            perror("malloc");
            exit(1);
        }
        touch_pages(sc->buf[i], size);
        scratch_total += size;
        sink = sc->buf[i];
    }
}

__attribute__((noinline)) void release_scratch(struct scratch *sc)
{
    for (int i = 0; i < SCRATCH_BUFFERS; i++)
        free(sc->buf[i]);
}

int main(int argc, char **argv)
{
    double duration = start(argc, argv);
    double end = now_s() + duration;
    unsigned long id = 0;
    unsigned seed = 42;
    struct scratch sc;
    while (now_s() < end) {
        handle_request_scratch(&sc, &seed);
        cache_insert_session(id++);
        release_scratch(&sc);
        sleep_ms(10);
    }
    printf("leaked_bytes %zu\n", n_sessions * SESSION_SIZE);
    printf("scratch_bytes %zu\n", scratch_total);
    fflush(stdout);
    return 0;
}
