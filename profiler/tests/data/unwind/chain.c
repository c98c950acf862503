/* Three functions without frame pointers, each with a different frame shape, that
 * hand registers of the innermost one to a recorder. Built into libchain.so by gen.sh. */
typedef void (*sink_t)(unsigned long ip, unsigned long sp, unsigned long bp);

volatile int chain_keep;

__attribute__((noinline)) void chain_c(sink_t sink)
{
    unsigned long ip, sp, bp;
    __asm__ volatile("lea 0(%%rip), %0\n\tmov %%rsp, %1\n\tmov %%rbp, %2"
                     : "=r"(ip), "=r"(sp), "=r"(bp));
    sink(ip, sp, bp);
    chain_keep++;
}

__attribute__((noinline)) void chain_b(sink_t sink)
{
    volatile char buf[200];
    buf[0] = 1;
    chain_c(sink);
    chain_keep += buf[0];
}

__attribute__((noinline)) void chain_a(sink_t sink)
{
    chain_b(sink);
    chain_keep++;
}
