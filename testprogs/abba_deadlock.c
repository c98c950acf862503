/* The textbook lock-order deadlock: transfer_ab() locks account A then B, transfer_ba()
 * locks B then A, each pausing in between, so each thread ends up waiting for the mutex
 * the other holds. The main thread joins the first of them (pthread_timedjoin_np, so the
 * program still ends by itself).
 *
 * usage: abba_deadlock SECONDS BARRIER
 * Prints "ready <pid>", waits until BARRIER exists ("-" = start at once), prints
 * "started" and "deadlocked 2", and exits by itself after SECONDS. */
#include "common.h"

#include <pthread.h>

static pthread_mutex_t account_a = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t account_b = PTHREAD_MUTEX_INITIALIZER;
static volatile int sink;

__attribute__((noinline)) static void transfer(pthread_mutex_t *from, pthread_mutex_t *to) {
    pthread_mutex_lock(from);
    usleep(100000); /* the other thread now holds its first lock */
    pthread_mutex_lock(to);
    sink++;
    pthread_mutex_unlock(to);
    pthread_mutex_unlock(from);
}

__attribute__((noinline)) void *transfer_ab(void *arg) {
    (void)arg;
    transfer(&account_a, &account_b);
    return NULL;
}

__attribute__((noinline)) void *transfer_ba(void *arg) {
    (void)arg;
    transfer(&account_b, &account_a);
    return NULL;
}

int main(int argc, char **argv) {
    double seconds = start(argc, argv);
    pthread_t ab, ba;
    pthread_create(&ab, NULL, transfer_ab, NULL);
    pthread_create(&ba, NULL, transfer_ba, NULL);
    printf("deadlocked 2\n");
    fflush(stdout);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += (time_t)seconds;
    pthread_timedjoin_np(ab, NULL, &until);
    return 0;
}
