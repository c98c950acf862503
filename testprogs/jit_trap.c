/* A JIT-like program that lays traps for whoever reads its perf map.
 *
 * It copies a tiny function into anonymous executable memory (as a JIT does) and calls
 * through it: main → jitted code → jit_leak_chunk() → mmap, so every sampled stack holds
 * a frame in anonymous code that only a perf map can name. Before "ready" it prepares
 * /tmp/perf-<pid>.map as the environment variable PERF_MAP_TRAP says:
 *   fifo            a FIFO: a plain open() of it blocks forever;
 *   symlink:TARGET  a symlink to TARGET, and TARGET itself (in this root) a perf map naming
 *                   the jitted code IN_ROOT_NAME; run in a container root with an absolute
 *                   TARGET, a host file of the same path must never be what gets read.
 * Result line: leaked_bytes <N>. */
#include "common.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <stdint.h>

#define CHUNK (64 * 1024)
#define MAX_CHUNKS 400

static void *volatile sink;
static size_t leaked;

__attribute__((noinline)) void jit_leak_chunk(void)
{
    if (leaked >= (size_t)MAX_CHUNKS * CHUNK)
        return;
    void *p = mmap(NULL, CHUNK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return;
    touch_pages(p, CHUNK);
    sink = p;
    leaked += CHUNK;
}

/* push rbp; mov rbp, rsp; movabs rax, imm64; call rax; pop rbp; ret */
static void (*make_jit_code(void (*target)(void)))(void)
{
    unsigned char code[] = { 0x55, 0x48, 0x89, 0xe5, 0x48, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0,
                             0xff, 0xd0, 0x5d, 0xc3 };
    memcpy(code + 6, &target, sizeof(target));
    unsigned char *page = mmap(NULL, PAGE, PROT_READ | PROT_WRITE | PROT_EXEC,
                               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED) {
        perror("mmap code");
        exit(1);
    }
    memcpy(page, code, sizeof(code));
    return (void (*)(void))page;
}

static void lay_trap(void (*code)(void))
{
    const char *trap = getenv("PERF_MAP_TRAP");
    char path[64];
    snprintf(path, sizeof(path), "/tmp/perf-%d.map", (int)getpid());
    unlink(path);
    if (trap == NULL)
        return;
    if (strcmp(trap, "fifo") == 0) {
        if (mkfifo(path, 0666) != 0) {
            perror("mkfifo");
            exit(1);
        }
    } else if (strncmp(trap, "symlink:", 8) == 0) {
        const char *target = trap + 8;
        FILE *f = fopen(target, "w");
        if (f == NULL || symlink(target, path) != 0) {
            perror("symlink trap");
            exit(1);
        }
        fprintf(f, "%lx 100 IN_ROOT_NAME\n", (unsigned long)(uintptr_t)code);
        fclose(f);
    }
}

int main(int argc, char **argv)
{
    mkdir("/tmp", 01777);
    void (*code)(void) = make_jit_code(jit_leak_chunk);
    lay_trap(code);
    double duration = start(argc, argv);
    double end = now_s() + duration;
    while (now_s() < end) {
        code();
        sleep_ms(10);
    }
    printf("leaked_bytes %zu\n", leaked);
    return 0;
}
