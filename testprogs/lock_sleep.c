/* A mutex held across a sleep: hold_lock() takes the mutex and sleeps with it held (in
 * 500 ms naps, as a retry loop or a "wait a bit" under a lock does), 5 request threads
 * pile up on it in take_lock(), and main joins the holder.
 * With LOCK_SLEEP_SHORT=1, the healthy twin: the same 6 threads take the same mutex
 * for short critical sections (a 1 ms nap inside), over and over, and main joins them.
 *
 * usage: [LOCK_SLEEP_SHORT=1] lock_sleep SECONDS BARRIER
 * Prints "ready <pid>", waits until BARRIER exists ("-" = start at once), prints
 * "started", then "holder <tid>" once the mutex is held and "waiters 5" once the 5
 * request threads run (threads named holder and request in /proc/PID/task/TID/comm);
 * exits by itself after SECONDS, printing "served <N>". */
#include "common.h"

#include <pthread.h>
#include <sys/syscall.h>

#define WAITERS 5

static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t holding_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t holding = PTHREAD_COND_INITIALIZER;
static int holder_tid;
static int short_sections;
static double deadline;
static volatile long served;

/* Takes the table lock and naps with it held until the deadline (the bad case), or
 * for 1 ms per round (the healthy twin). */
__attribute__((noinline)) void hold_lock(void) {
    pthread_mutex_lock(&table_lock);
    pthread_mutex_lock(&holding_lock);
    holder_tid = (int)syscall(SYS_gettid);
    pthread_cond_signal(&holding);
    pthread_mutex_unlock(&holding_lock);
    if (short_sections) {
        sleep_ms(1);
    } else {
        while (now_s() < deadline)
            usleep(500000);
    }
    served++;
    pthread_mutex_unlock(&table_lock);
}

static void *holder(void *arg) {
    (void)arg;
    do {
        hold_lock();
        sleep_ms(1);
    } while (short_sections && now_s() < deadline);
    return NULL;
}

/* A request's short critical section on the same table. */
__attribute__((noinline)) void take_lock(void) {
    pthread_mutex_lock(&table_lock);
    served++;
    if (short_sections)
        sleep_ms(1);
    pthread_mutex_unlock(&table_lock);
}

static void *request(void *arg) {
    (void)arg;
    do {
        take_lock();
        sleep_ms(2);
    } while (now_s() < deadline);
    return NULL;
}

int main(int argc, char **argv) {
    double seconds = start(argc, argv);
    const char *mode = getenv("LOCK_SLEEP_SHORT");
    short_sections = mode && strcmp(mode, "1") == 0;
    deadline = now_s() + seconds;
    pthread_t hold, waiters[WAITERS];
    pthread_create(&hold, NULL, holder, NULL);
    pthread_setname_np(hold, "holder");
    pthread_mutex_lock(&holding_lock);
    while (holder_tid == 0)
        pthread_cond_wait(&holding, &holding_lock);
    pthread_mutex_unlock(&holding_lock);
    printf("holder %d\n", holder_tid);
    fflush(stdout);
    for (int i = 0; i < WAITERS; i++) {
        pthread_create(&waiters[i], NULL, request, NULL);
        pthread_setname_np(waiters[i], "request");
    }
    printf("waiters %d\n", WAITERS);
    fflush(stdout);
    pthread_join(hold, NULL);
    for (int i = 0; i < WAITERS; i++)
        pthread_join(waiters[i], NULL);
    printf("served %ld\n", served);
    return 0;
}
