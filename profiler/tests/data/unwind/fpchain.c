/* Two functions built with frame pointers (their CFI finds each frame through rbp)
 * that call nocfi_c, built without CFI (nocfi.c). Built into libfpchain.so by gen.sh. */
typedef void (*sink_t)(unsigned long ip, unsigned long sp, unsigned long bp);

volatile int fp_keep;

void nocfi_c(sink_t sink);

__attribute__((noinline)) void fp_b(sink_t sink)
{
    volatile char buf[200];
    buf[0] = 1;
    nocfi_c(sink);
    fp_keep += buf[0];
}

__attribute__((noinline)) void fp_a(sink_t sink)
{
    fp_b(sink);
    fp_keep++;
}
