/* cache_churn: caches and batches that are not leaks, and one slow leak beside churn.
 *
 * The mode comes from the environment, CACHE_MODE:
 *   full  (default) an LRU cache of ENTRIES blocks of 1.5-2.5 KiB, filled before
 *         "ready": every ~10 ms cache_put() frees the oldest entry and mallocs a new
 *         one, FULL_OPS_PER_TICK times, so live bytes stay constant and the whole cache
 *         turns over in about a second.
 *   warm  the same cache, empty at the barrier: cache_put() only inserts until it holds
 *         ENTRIES (about WARM_SECONDS), then replaces the oldest entry, so live bytes
 *         grow and then stop.
 *   batch every BATCH_PERIOD_MS, batch_load() mallocs BATCH_BYTES in 4 KiB blocks and
 *         batch_release() frees them all BATCH_HOLD_MS later: periodic growth and
 *         release, nothing kept.
 *   leak  a full cache churning at LEAK_CHURN_OPS_PER_TICK beside remember_session(),
 *         which keeps a 16 KiB block every ~940 ms: a slow leak of about 1 MiB a minute.
 * Output: "ready <pid>", "started", then "live_bytes <N>" (bytes held at the end) and
 * "leaked_bytes <N>" (bytes kept by remember_session, 0 in other modes). */
#include "common.h"

#define ENTRIES 20000
#define FULL_OPS_PER_TICK 200
#define WARM_SECONDS 6.0
#define LEAK_CHURN_OPS_PER_TICK 50
#define LEAK_BLOCK (16UL * 1024)
#define LEAK_EVERY_MS 940
#define MAX_LEAKS 4096
#define BATCH_BYTES (24UL * 1024 * 1024)
#define BATCH_BLOCK 4096UL
#define BATCH_PERIOD_MS 5000
#define BATCH_HOLD_MS 2500

static void *entries[ENTRIES];
static size_t entry_size[ENTRIES];
static size_t n_entries, oldest;
static size_t live_bytes;
static void *leaks[MAX_LEAKS];
static size_t n_leaks;
static void *batch[BATCH_BYTES / BATCH_BLOCK];
static unsigned seed = 7;
void *volatile sink;

static size_t entry_bytes(void)
{
    seed = seed * 1103515245u + 12345u;
    return 1536 + (seed >> 8) % 1024;
}

/* Insert one entry; when the cache is full, the oldest entry makes room. */
__attribute__((noinline)) void cache_put(void)
{
    size_t slot;
    if (n_entries < ENTRIES) {
        slot = n_entries++;
    } else {
        slot = oldest;
        oldest = (oldest + 1) % ENTRIES;
        free(entries[slot]);
        live_bytes -= entry_size[slot];
    }
    size_t size = entry_bytes();
    char *e = malloc(size);
    if (e == NULL) {
        perror("malloc");
        exit(1);
    }
    memset(e, (int)slot, size);
    entries[slot] = e;
    entry_size[slot] = size;
    live_bytes += size;
    sink = e;
}

__attribute__((noinline)) void remember_session(void)
{
    if (n_leaks == MAX_LEAKS)
        return;
    char *s = malloc(LEAK_BLOCK);
    if (s == NULL) {
        perror("malloc");
        exit(1);
    }
    memset(s, 1, LEAK_BLOCK);
    leaks[n_leaks++] = s;
    live_bytes += LEAK_BLOCK;
    sink = s;
}

__attribute__((noinline)) void batch_load(void)
{
    for (size_t i = 0; i < BATCH_BYTES / BATCH_BLOCK; i++) {
        batch[i] = malloc(BATCH_BLOCK);
        if (batch[i] == NULL) {
            perror("malloc");
            exit(1);
        }
        memset(batch[i], 2, BATCH_BLOCK);
        sink = batch[i];
    }
    live_bytes += BATCH_BYTES;
}

__attribute__((noinline)) void batch_release(void)
{
    for (size_t i = 0; i < BATCH_BYTES / BATCH_BLOCK; i++)
        free(batch[i]);
    live_bytes -= BATCH_BYTES;
}

int main(int argc, char **argv)
{
    const char *mode = getenv("CACHE_MODE");
    if (mode == NULL)
        mode = "full";
    int full = strcmp(mode, "full") == 0, warm = strcmp(mode, "warm") == 0;
    int batching = strcmp(mode, "batch") == 0, leak = strcmp(mode, "leak") == 0;
    if (!(full || warm || batching || leak)) {
        fprintf(stderr, "cache_churn: unknown CACHE_MODE '%s'\n", mode);
        return 2;
    }
    if (full || leak)
        while (n_entries < ENTRIES)
            cache_put();
    double duration = start(argc, argv);
    double t0 = now_s(), end = t0 + duration;
    double next_leak = t0, next_batch = t0, release_at = 0;
    int holding = 0;
    int warm_per_tick = (int)(ENTRIES / (WARM_SECONDS * 100));
    while (now_s() < end) {
        double t = now_s();
        if (full)
            for (int i = 0; i < FULL_OPS_PER_TICK; i++)
                cache_put();
        if (warm)
            for (int i = 0; i < warm_per_tick; i++)
                cache_put();
        if (leak) {
            for (int i = 0; i < LEAK_CHURN_OPS_PER_TICK; i++)
                cache_put();
            if (t >= next_leak) {
                remember_session();
                next_leak += LEAK_EVERY_MS / 1000.0;
            }
        }
        if (batching) {
            if (!holding && t >= next_batch) {
                batch_load();
                holding = 1;
                release_at = next_batch + BATCH_HOLD_MS / 1000.0;
                next_batch += BATCH_PERIOD_MS / 1000.0;
            } else if (holding && t >= release_at) {
                batch_release();
                holding = 0;
            }
        }
        sleep_ms(10);
    }
    printf("live_bytes %zu\n", live_bytes);
    printf("leaked_bytes %zu\n", n_leaks * LEAK_BLOCK);
    fflush(stdout);
    return 0;
}
