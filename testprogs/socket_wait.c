/* A client that waits for a reply its server never sends: it connects to a listener on
 * loopback, accepts the connection itself (the server side stays silent), then
 * wait_for_reply() blocks in recv() on the client socket until DURATION_SECONDS pass
 * (SO_RCVTIMEO), as a request waits on a hung upstream.
 *
 * usage: socket_wait SECONDS BARRIER
 * Prints "ready <pid>"; after the barrier "started" and "peer 127.0.0.1:<port>", then
 * "timed_out 1" when recv() ended by its timeout. */
#include "common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>

static volatile long sink;

__attribute__((noinline)) int wait_for_reply(int fd)
{
    char byte;
    ssize_t n = recv(fd, &byte, 1, 0);
    sink += n;
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

int main(int argc, char **argv)
{
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = 0 };
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (listener < 0 || bind(listener, (struct sockaddr *)&addr, sizeof addr) != 0 ||
        listen(listener, 1) != 0 || getsockname(listener, (struct sockaddr *)&addr, &len) != 0) {
        perror("socket_wait: listener");
        return 1;
    }
    int client = socket(AF_INET, SOCK_STREAM, 0);
    if (client < 0 || connect(client, (struct sockaddr *)&addr, sizeof addr) != 0) {
        perror("socket_wait: connect");
        return 1;
    }
    int server = accept(listener, NULL, NULL);
    if (server < 0) {
        perror("socket_wait: accept");
        return 1;
    }
    double seconds = start(argc, argv);
    printf("peer 127.0.0.1:%d\n", ntohs(addr.sin_port));
    fflush(stdout);
    struct timeval timeout = { (time_t)seconds, (long)((seconds - (time_t)seconds) * 1e6) };
    setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    printf("timed_out %d\n", wait_for_reply(client));
    close(server);
    close(client);
    close(listener);
    return 0;
}
