/* Calls chain_a in libchain.so and writes, from inside chain_c: the mappings of
 * libchain.so, the registers, and 4 KiB of stack above sp (hex, 32 bytes a line).
 * Built with -DLIB='"libfpchain.so"' -DENTRY=fp_a, the same for libfpchain.so. */
#include <stdio.h>
#include <string.h>

#ifndef LIB
#define LIB "libchain.so"
#define ENTRY chain_a
#endif

void ENTRY(void (*sink)(unsigned long, unsigned long, unsigned long));

static void sink(unsigned long ip, unsigned long sp, unsigned long bp)
{
    char line[512];
    FILE *maps = fopen("/proc/self/maps", "r");
    while (fgets(line, sizeof line, maps)) {
        unsigned long start, end, offset;
        char perms[5];
        if (strstr(line, LIB) &&
            sscanf(line, "%lx-%lx %4s %lx", &start, &end, perms, &offset) == 4)
            printf("map %lx %lx %s %lx\n", start, end, perms, offset);
    }
    fclose(maps);
    printf("ip %lx\nsp %lx\nbp %lx\n", ip, sp, bp);
    const unsigned char *p = (const unsigned char *)sp;
    for (int i = 0; i < 4096; i += 32) {
        printf("stack");
        for (int j = 0; j < 32; j++)
            printf("%s%02x", j ? "" : " ", p[i + j]);
        printf("\n");
    }
}

int main(void)
{
    ENTRY(sink);
    return 0;
}
