/* Shared by the storm workloads of `cargo xtask bench`: arguments, start barrier, clock,
 * result line and the linger that keeps the process alive while a profiler finishes.
 *
 * Usage of every storm: STORM SECONDS BARRIER_FILE
 *  1. prints "ready <pid>" and waits until BARRIER_FILE exists ("-": no wait), so a
 *     profiler can attach before the measured part;
 *  2. prints "started", runs its loop for SECONDS (a float);
 *  3. prints "ops <N> seconds <S> cpu <C>": operations done, the loop's measured duration
 *     and the process's CPU time (user + system, all threads) so far;
 *  4. lingers until BARRIER_FILE is removed (at most 120 s), so the profiler's window
 *     ends on a live process, as it does in production; then exits 0. */
#ifndef BENCH_STORM_H
#define BENCH_STORM_H

#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>
#include <unistd.h>

#define STORM_BARRIER_TIMEOUT_S 120.0

static const char *storm_barrier;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* Waits until the barrier file exists (present != 0) or is gone (present == 0). */
static void wait_barrier(int present)
{
    if (strcmp(storm_barrier, "-") == 0)
        return;
    double deadline = now_s() + STORM_BARRIER_TIMEOUT_S;
    while ((access(storm_barrier, F_OK) == 0) != present) {
        if (now_s() > deadline) {
            fprintf(stderr, "barrier file %s did not %s\n", storm_barrier,
                    present ? "appear" : "go away");
            exit(2);
        }
        sleep_ms(2);
    }
}

/* Parses argv, prints "ready <pid>", waits for the barrier, prints "started".
 * Returns the duration in seconds; exits 2 on bad usage or barrier timeout. */
static double storm_start(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s SECONDS BARRIER_FILE|-\n", argv[0]);
        exit(2);
    }
    char *end;
    double seconds = strtod(argv[1], &end);
    if (*end != '\0' || seconds <= 0) {
        fprintf(stderr, "%s: bad duration '%s'\n", argv[0], argv[1]);
        exit(2);
    }
    storm_barrier = argv[2];
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    wait_barrier(1);
    printf("started\n");
    fflush(stdout);
    return seconds;
}

/* Prints the result line, then lingers until the barrier file is removed. */
static void storm_finish(unsigned long ops, double seconds)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                 (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    printf("ops %lu seconds %.6f cpu %.6f\n", ops, seconds, cpu);
    fflush(stdout);
    wait_barrier(0);
}

#endif
