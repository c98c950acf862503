/* futex_storm: two threads hand a turn back and forth through one futex word as fast as
 * they can. Every hand-over is a FUTEX_WAKE and (usually) a short FUTEX_WAIT: the wait
 * storm that wait profilers pay for per event.
 *
 * usage: futex_storm SECONDS BARRIER. ops = hand-overs. */
#include "storm.h"

#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/syscall.h>

static _Atomic int turn;
static _Atomic int stop;
static unsigned long handovers[2];

static void futex_wait(_Atomic int *word, int expected)
{
    syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

static void futex_wake(_Atomic int *word)
{
    syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

__attribute__((noinline)) static void play(int me)
{
    while (!atomic_load(&stop)) {
        int now = atomic_load(&turn);
        if (now != me) {
            futex_wait(&turn, now);
            continue;
        }
        atomic_store(&turn, !me);
        futex_wake(&turn);
        handovers[me]++;
    }
}

static void *player(void *arg)
{
    play((int)(long)arg);
    return NULL;
}

int main(int argc, char **argv)
{
    double seconds = storm_start(argc, argv);
    pthread_t threads[2];
    double t0 = now_s();
    for (long i = 0; i < 2; i++)
        pthread_create(&threads[i], NULL, player, (void *)i);
    sleep_ms((long)(seconds * 1000));
    atomic_store(&stop, 1);
    /* Whoever waits is woken by the turn change. */
    atomic_store(&turn, 2);
    syscall(SYS_futex, &turn, FUTEX_WAKE_PRIVATE, 2, NULL, NULL, 0);
    for (int i = 0; i < 2; i++)
        pthread_join(threads[i], NULL);
    double elapsed = now_s() - t0;
    storm_finish(handovers[0] + handovers[1], elapsed);
    return 0;
}
