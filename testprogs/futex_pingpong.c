/* futex_pingpong: two threads hand a token back and forth through a mutex + condvar
 * pair as fast as they can: a storm of futex waits and wakes, each far shorter than
 * the profiler's wait threshold.
 *
 * usage: futex_pingpong SECONDS BARRIER
 * Output: "ready <pid>", "started", then "round_trips <N>" at the end. */
#include "common.h"

#include <pthread.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t turn_changed = PTHREAD_COND_INITIALIZER;
static int turn;
static volatile int stop;
static unsigned long round_trips;

__attribute__((noinline)) static void play(int me)
{
    pthread_mutex_lock(&lock);
    while (!stop) {
        while (turn != me && !stop)
            pthread_cond_wait(&turn_changed, &lock);
        turn = !me;
        if (me == 0)
            round_trips++;
        pthread_cond_signal(&turn_changed);
    }
    pthread_cond_broadcast(&turn_changed);
    pthread_mutex_unlock(&lock);
}

static void *player(void *arg)
{
    play((int)(long)arg);
    return NULL;
}

int main(int argc, char **argv)
{
    double seconds = start(argc, argv);
    pthread_t a, b;
    pthread_create(&a, NULL, player, (void *)0L);
    pthread_create(&b, NULL, player, (void *)1L);
    usleep((useconds_t)(seconds * 1e6));
    stop = 1;
    pthread_mutex_lock(&lock);
    pthread_cond_broadcast(&turn_changed);
    pthread_mutex_unlock(&lock);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    printf("round_trips %lu\n", round_trips);
    return 0;
}
