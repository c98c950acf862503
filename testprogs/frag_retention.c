/* frag_retention: allocator retention through fragmentation, with no leak.
 *
 * Every ROUND_MS after the barrier, load_batch() mallocs BATCH blocks of BLOCK bytes
 * (64 MiB in all) and touches them; drop_batch_keep_every_64th() frees all but every
 * 64th block; the survivors of the previous round are freed by release_old_survivors().
 * So the program holds at most two rounds of survivors (~2 MiB): nothing leaks. But the
 * survivors are spread over the whole batch, so the freed memory between them cannot
 * go back to the kernel (glibc only trims the top of the heap), and each round leaves
 * the heap a little larger: the heap and RSS grow while live blocks stay flat.
 * Output: "ready <pid>", "started", then "rounds <N>" and "live_bytes <N>" (bytes the
 * program still holds) at the end. */
#include "common.h"

#define BLOCK 512UL
#define BATCH (64UL * 1024 * 1024 / BLOCK)
#define KEEP_EVERY 64
#define ROUND_MS 700

static void **batch;
static void **survivors, **old_survivors;
static size_t n_survivors, n_old_survivors;
void *volatile sink;

__attribute__((noinline)) void load_batch(void)
{
    for (size_t i = 0; i < BATCH; i++) {
        batch[i] = malloc(BLOCK);
        if (batch[i] == NULL) {
            perror("malloc");
            exit(1);
        }
        memset(batch[i], (int)i, BLOCK);
        sink = batch[i];
    }
}

__attribute__((noinline)) void drop_batch_keep_every_64th(void)
{
    n_survivors = 0;
    for (size_t i = 0; i < BATCH; i++) {
        if (i % KEEP_EVERY == 0)
            survivors[n_survivors++] = batch[i];
        else
            free(batch[i]);
    }
}

__attribute__((noinline)) void release_old_survivors(void)
{
    for (size_t i = 0; i < n_old_survivors; i++)
        free(old_survivors[i]);
    void **t = old_survivors;
    old_survivors = survivors;
    n_old_survivors = n_survivors;
    survivors = t;
}

int main(int argc, char **argv)
{
    /* Bookkeeping arrays come from mmap so that they stay out of the measured heap. */
    batch = calloc(BATCH, sizeof *batch);
    survivors = calloc(BATCH / KEEP_EVERY + 1, sizeof *survivors);
    old_survivors = calloc(BATCH / KEEP_EVERY + 1, sizeof *old_survivors);
    if (!batch || !survivors || !old_survivors) {
        perror("calloc");
        return 1;
    }
    double duration = start(argc, argv);
    double end = now_s() + duration;
    unsigned rounds = 0;
    while (now_s() < end) {
        load_batch();
        drop_batch_keep_every_64th();
        release_old_survivors();
        rounds++;
        sleep_ms(ROUND_MS);
    }
    printf("rounds %u\n", rounds);
    printf("live_bytes %zu\n", (n_survivors + n_old_survivors) * BLOCK);
    fflush(stdout);
    return 0;
}
