/* A fixed-size connection pool guarded by a mutex + condition variable. Each of N
 * workers takes one slot and then asks the same pool for a second one inside
 * acquire_nested(): with N workers and N slots, every worker waits forever (the
 * pool-exhaustion deadlock of a transaction that asks for a second connection).
 *
 * usage: pool_deadlock SECONDS BARRIER   (4 workers, 4 slots)
 * Prints "ready <pid>", waits until BARRIER exists ("-" = start at once), deadlocks,
 * prints "deadlocked <workers>" and exits by itself after SECONDS. */
#include "common.h"

#include <pthread.h>

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t slot_free = PTHREAD_COND_INITIALIZER;
static int free_slots;
static volatile int sink;

__attribute__((noinline)) static void pool_acquire(void) {
    pthread_mutex_lock(&pool_lock);
    while (free_slots == 0)
        pthread_cond_wait(&slot_free, &pool_lock);
    free_slots--;
    pthread_mutex_unlock(&pool_lock);
}

__attribute__((noinline)) static void pool_release(void) {
    pthread_mutex_lock(&pool_lock);
    free_slots++;
    pthread_cond_signal(&slot_free);
    pthread_mutex_unlock(&pool_lock);
}

/* The bug: a second connection while still holding the first. */
__attribute__((noinline)) void acquire_nested(void) {
    pool_acquire();
    sink++;
    pool_release();
}

/* A request: a transaction holds one pooled connection, then asks for another. */
__attribute__((noinline)) void handle_request(void) {
    pool_acquire();
    usleep(100000); /* every worker now holds its first slot */
    acquire_nested();
    pool_release();
}

static void *worker(void *arg) {
    (void)arg;
    handle_request();
    return NULL;
}

int main(int argc, char **argv) {
    double seconds = start(argc, argv);
    int workers = 4;
    free_slots = workers;
    pthread_t t;
    for (int i = 0; i < workers; i++)
        pthread_create(&t, NULL, worker, NULL);
    printf("deadlocked %d\n", workers);
    fflush(stdout);
    usleep((useconds_t)(seconds * 1e6));
    return 0;
}
