/* condvar_storm: THREADS threads pass a token around a ring through one mutex and one
 * condition variable; each pass broadcasts, so every waiter wakes, checks and waits
 * again: a storm of futex waits and wakes from many threads.
 *
 * usage: condvar_storm SECONDS BARRIER. ops = token passes. */
#include "storm.h"

#include <pthread.h>

#define THREADS 8

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static int token;
static int stop;
static unsigned long passes;

__attribute__((noinline)) static void pass_token(int me)
{
    pthread_mutex_lock(&lock);
    while (!stop) {
        while (token != me && !stop)
            pthread_cond_wait(&changed, &lock);
        if (stop)
            break;
        token = (me + 1) % THREADS;
        passes++;
        pthread_cond_broadcast(&changed);
    }
    pthread_mutex_unlock(&lock);
}

static void *worker(void *arg)
{
    pass_token((int)(long)arg);
    return NULL;
}

int main(int argc, char **argv)
{
    double seconds = storm_start(argc, argv);
    pthread_t threads[THREADS];
    double t0 = now_s();
    for (long i = 0; i < THREADS; i++)
        pthread_create(&threads[i], NULL, worker, (void *)i);
    sleep_ms((long)(seconds * 1000));
    pthread_mutex_lock(&lock);
    stop = 1;
    pthread_cond_broadcast(&changed);
    pthread_mutex_unlock(&lock);
    for (int i = 0; i < THREADS; i++)
        pthread_join(threads[i], NULL);
    storm_finish(passes, now_s() - t0);
    return 0;
}
