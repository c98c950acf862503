/* The textbook lock-order deadlock: transfer_ab() locks account A then B, transfer_ba()
 * locks B then A, each pausing in between, so each thread ends up waiting for the mutex
 * the other holds. The main thread joins the first of them (pthread_timedjoin_np, so the
 * program still ends by itself).
 *
 * With ABBA_WORKERS=N, N other workers keep serving all along (a short computation under
 * their own stats lock, then a 20 ms nap), as the rest of a server does while two of its
 * request threads deadlock. The request threads are named transfer_ab and transfer_ba
 * (/proc/PID/task/TID/comm). With ABBA_ORDERED=1, the healthy twin: both request threads
 * lock A then B, and keep transferring until the end.
 *
 * usage: [ABBA_WORKERS=N] [ABBA_ORDERED=1] abba_deadlock SECONDS BARRIER
 * Prints "ready <pid>", waits until BARRIER exists ("-" = start at once), prints
 * "started", "workers N" and "deadlocked 2" (ordered: "requests 2"), and exits by itself
 * after SECONDS, printing "transfers <N>" and "served <N>". */
#include "common.h"

#include <pthread.h>

#define MAX_WORKERS 64

static pthread_mutex_t account_a = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t account_b = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t stats_lock = PTHREAD_MUTEX_INITIALIZER;
static volatile int sink;
static int ordered;
static volatile int stopping;
static double deadline;
static long transfers;
static long served;

__attribute__((noinline)) static void transfer(pthread_mutex_t *from, pthread_mutex_t *to) {
    pthread_mutex_lock(from);
    usleep(100000); /* the other thread now holds its first lock */
    pthread_mutex_lock(to);
    sink++;
    transfers++;
    pthread_mutex_unlock(to);
    pthread_mutex_unlock(from);
}

__attribute__((noinline)) void *transfer_ab(void *arg) {
    (void)arg;
    do
        transfer(&account_a, &account_b);
    while (ordered && now_s() < deadline);
    return NULL;
}

__attribute__((noinline)) void *transfer_ba(void *arg) {
    (void)arg;
    do
        transfer(ordered ? &account_a : &account_b, ordered ? &account_b : &account_a);
    while (ordered && now_s() < deadline);
    return NULL;
}

/* One request of a busy worker: a little computation, counted under the stats lock. */
__attribute__((noinline)) static void serve_request(void) {
    unsigned x = 1;
    for (int i = 0; i < 20000; i++)
        x = x * 1103515245u + 12345u;
    sink += (int)(x & 1);
    pthread_mutex_lock(&stats_lock);
    served++;
    pthread_mutex_unlock(&stats_lock);
}

static void *worker(void *arg) {
    (void)arg;
    while (!stopping) {
        serve_request();
        sleep_ms(20);
    }
    return NULL;
}

int main(int argc, char **argv) {
    double seconds = start(argc, argv);
    const char *env = getenv("ABBA_WORKERS");
    int n_workers = env ? atoi(env) : 0;
    if (n_workers < 0 || n_workers > MAX_WORKERS) {
        fprintf(stderr, "ABBA_WORKERS must be 0..%d\n", MAX_WORKERS);
        return 2;
    }
    env = getenv("ABBA_ORDERED");
    ordered = env && strcmp(env, "1") == 0;
    deadline = now_s() + seconds;
    pthread_t workers[MAX_WORKERS];
    for (int i = 0; i < n_workers; i++) {
        pthread_create(&workers[i], NULL, worker, NULL);
        pthread_setname_np(workers[i], "worker");
    }
    printf("workers %d\n", n_workers);
    pthread_t ab, ba;
    pthread_create(&ab, NULL, transfer_ab, NULL);
    pthread_create(&ba, NULL, transfer_ba, NULL);
    pthread_setname_np(ab, "transfer_ab");
    pthread_setname_np(ba, "transfer_ba");
    printf(ordered ? "requests 2\n" : "deadlocked 2\n");
    fflush(stdout);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += (time_t)seconds;
    int joined = pthread_timedjoin_np(ab, NULL, &until) == 0;
    if (joined)
        pthread_join(ba, NULL);
    stopping = 1;
    for (int i = 0; i < n_workers; i++)
        pthread_join(workers[i], NULL);
    printf("transfers %ld\nserved %ld\n", transfers, served);
    fflush(stdout);
    /* A deadlocked pair is never joined: end the process with its threads. */
    _exit(0);
}
