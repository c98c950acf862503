/* cache_leak: a session cache that never evicts, leaking through glibc's malloc.
 *
 * Built like ordinary release code (-O2, no frame pointers, sibling calls allowed).
 * Every ~10 ms after the barrier, cache_insert_session() mallocs a 32 KiB session,
 * fills in its header, touches every page and keeps it in a global table (at most
 * MAX_SESSIONS, then it stops leaking). 32 KiB is below glibc's mmap threshold, so the
 * main arena grows by brk: the stacks are
 * main -> cache_insert_session -> malloc -> _int_malloc -> sysmalloc -> sbrk -> brk.
 * cache_insert_session works on the block after malloc returns, so malloc is not a
 * tail call and cache_insert_session stays on the stack.
 * Output: "ready <pid>", "started", then "leaked_bytes <N>" at the end. */
#include "common.h"

#define SESSION_SIZE (32UL * 1024)
#define MAX_SESSIONS 1000

struct session {
    unsigned long id;
    double created;
    char payload[SESSION_SIZE - sizeof(unsigned long) - sizeof(double)];
};

static struct session *sessions[MAX_SESSIONS];
static size_t n_sessions;
void *volatile sink;

__attribute__((noinline)) void cache_insert_session(unsigned long id)
{
    if (n_sessions == MAX_SESSIONS)
        return;
    struct session *s = malloc(sizeof *s);
    if (s == NULL) {
        perror("malloc");
        exit(1);
    }
    s->id = id;
    s->created = now_s();
    touch_pages(s, sizeof *s);
    sessions[n_sessions++] = s;
    sink = s;
}

int main(int argc, char **argv)
{
    double duration = start(argc, argv);
    double end = now_s() + duration;
    unsigned long id = 0;
    while (now_s() < end) {
        cache_insert_session(id++);
        sleep_ms(10);
    }
    printf("leaked_bytes %zu\n", n_sessions * SESSION_SIZE);
    fflush(stdout);
    return 0;
}
