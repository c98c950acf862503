/* Shared by the test programs: arguments, start barrier, clock and page touching.
 *
 * Usage of every program: PROG DURATION_SECONDS BARRIER_FILE
 * It prints "ready <pid>", waits until BARRIER_FILE exists ("-": no wait), prints
 * "started", runs its loop for DURATION_SECONDS, then prints its result lines. */
#ifndef TESTPROGS_COMMON_H
#define TESTPROGS_COMMON_H

#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* How long to wait for the barrier file before giving up (seconds). */
#define BARRIER_TIMEOUT_S 60.0
#define PAGE 4096UL

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

/* Writes one byte in every page of [p, p + size) so the kernel backs it with memory. */
static void touch_pages(void *p, size_t size)
{
    volatile char *c = p;
    for (size_t off = 0; off < size; off += PAGE)
        c[off] = 1;
}

/* Parses argv, prints "ready <pid>", waits for the barrier, prints "started".
 * Returns the duration in seconds; exits 2 on bad usage or barrier timeout. */
static double start(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s DURATION_SECONDS BARRIER_FILE|-\n", argv[0]);
        exit(2);
    }
    char *end;
    double duration = strtod(argv[1], &end);
    if (*end != '\0' || duration < 0) {
        fprintf(stderr, "%s: bad duration '%s'\n", argv[0], argv[1]);
        exit(2);
    }
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    if (strcmp(argv[2], "-") != 0) {
        double deadline = now_s() + BARRIER_TIMEOUT_S;
        while (access(argv[2], F_OK) != 0) {
            if (now_s() > deadline) {
                fprintf(stderr, "%s: barrier file %s did not appear\n", argv[0], argv[2]);
                exit(2);
            }
            sleep_ms(1);
        }
    }
    printf("started\n");
    fflush(stdout);
    return duration;
}

#endif
