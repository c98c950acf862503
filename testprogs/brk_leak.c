/* brk_leak: grows the heap with brk in 256 KiB steps and churns 64 KiB brk scratch.
 *
 * Every ~10 ms after the barrier: grow_heap() moves the program break up by 256 KiB and
 * touches every page, never shrinking (up to MAX_GROWS times, then it stops growing);
 * scratch_work() moves the break up by 64 KiB, touches it and moves it back down. Both go
 * through move_break(), so the stacks are main -> grow_heap|scratch_work -> move_break ->
 * sbrk. Nothing calls malloc after the barrier, so only these calls move the break.
 * Output: "ready <pid>", "started", then "leaked_bytes <N>" at the end. */
#include "common.h"

#include <errno.h>
#include <stdint.h>
#include <sys/syscall.h>

#define GROW_SIZE (256L * 1024)
#define SCRATCH_SIZE (64L * 1024)
#define MAX_GROWS 400

static size_t n_grown;
void *volatile sink;

#ifdef __GLIBC__
static void *sbrk_compat(intptr_t increment)
{
    return sbrk(increment);
}
#else
/* musl's sbrk() refuses non-zero increments: use the brk system call directly. */
static void *sbrk_compat(intptr_t increment)
{
    uintptr_t old = (uintptr_t)syscall(SYS_brk, 0);
    uintptr_t wanted = old + (uintptr_t)increment;
    if ((uintptr_t)syscall(SYS_brk, wanted) != wanted) {
        errno = ENOMEM;
        return (void *)-1;
    }
    return (void *)old;
}
#endif

/* Moves the program break by `increment` bytes; returns the old break. */
__attribute__((noinline, noclone)) static void *move_break(intptr_t increment)
{
    void *old = sbrk_compat(increment);
    if (old == (void *)-1) {
        perror("sbrk");
        exit(1);
    }
    sink = old;
    return old;
}

__attribute__((noinline)) void grow_heap(void)
{
    if (n_grown == MAX_GROWS)
        return;
    void *p = move_break(GROW_SIZE);
    touch_pages(p, GROW_SIZE);
    n_grown++;
}

__attribute__((noinline)) void scratch_work(void)
{
    void *p = move_break(SCRATCH_SIZE);
    touch_pages(p, SCRATCH_SIZE);
    move_break(-SCRATCH_SIZE);
}

int main(int argc, char **argv)
{
    double duration = start(argc, argv);
    double end = now_s() + duration;
    while (now_s() < end) {
        grow_heap();
        scratch_work();
        sleep_ms(10);
    }
    printf("leaked_bytes %zu\n", n_grown * (size_t)GROW_SIZE);
    fflush(stdout);
    return 0;
}
