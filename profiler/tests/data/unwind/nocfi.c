/* A function with no CFI that saves the caller's rbp and uses rbp for its own data,
 * as musl's malloc internals do; it hands its registers to a recorder. Built without
 * unwind tables into libfpchain.so by gen.sh. */
typedef void (*sink_t)(unsigned long ip, unsigned long sp, unsigned long bp);

volatile int nocfi_keep;

__attribute__((noinline)) void nocfi_c(sink_t sink)
{
    unsigned long ip, sp, bp;
    __asm__ volatile("mov $0x5a5a5a5a, %%rbp\n\tlea 0(%%rip), %0\n\tmov %%rsp, %1\n\tmov %%rbp, %2"
                     : "=r"(ip), "=r"(sp), "=r"(bp)
                     :
                     : "rbp");
    sink(ip, sp, bp);
    nocfi_keep++;
}
