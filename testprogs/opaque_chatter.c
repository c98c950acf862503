/* A client with two connections whose bytes fit no protocol: it connects to the
 * loopback ports CHATTER_PORT and SILENT_PORT (peers the test runs), then sends 16
 * binary bytes on the first and reads the reply, every 0.5 ms (a sleep below the
 * profiler's 1 ms wait threshold: no stacks to unwind), for DURATION_SECONDS; the
 * second connection stays silent.
 *
 * usage: CHATTER_PORT=p SILENT_PORT=q opaque_chatter SECONDS BARRIER
 * Prints "ready <pid>"; after the barrier "started", then "transfers N" each second
 * (writes plus reads so far) and at the end. */
#include "common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

static int connect_to(const char *port_var)
{
    const char *port = getenv(port_var);
    struct sockaddr_in addr = { .sin_family = AF_INET };
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(port ? (unsigned short)atoi(port) : 0);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (!port || fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        fprintf(stderr, "opaque_chatter: cannot connect to %s=%s\n", port_var,
                port ? port : "(unset)");
        exit(1);
    }
    return fd;
}

int main(int argc, char **argv)
{
    int chatter = connect_to("CHATTER_PORT");
    int silent = connect_to("SILENT_PORT");
    double seconds = start(argc, argv);
    static const char message[16] = { 0x01, 0x02, 0x7f, 0x00, 0xfe, 'b', 'i', 'n' };
    char reply[64];
    long transfers = 0;
    double t0 = now_s(), next_report = t0 + 1;
    while (now_s() - t0 < seconds) {
        if (write(chatter, message, sizeof message) != sizeof message ||
            read(chatter, reply, sizeof reply) <= 0) {
            perror("opaque_chatter: transfer");
            return 1;
        }
        transfers += 2;
        if (now_s() >= next_report) {
            printf("transfers %ld\n", transfers);
            fflush(stdout);
            next_report += 1;
        }
        usleep(500);
    }
    printf("transfers %ld\n", transfers);
    close(chatter);
    close(silent);
    return 0;
}
