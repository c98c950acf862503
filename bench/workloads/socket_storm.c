/* socket_storm: a client thread and a server thread bounce a 64-byte message over a TCP
 * connection on 127.0.0.1 (loopback only): each round trip is two writes and two
 * blocking reads.
 *
 * usage: socket_storm SECONDS BARRIER. ops = round trips. */
#include "storm.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>

#define MSG 64

static _Atomic int stop;

static void die(const char *what)
{
    perror(what);
    exit(1);
}

/* Reads exactly MSG bytes; returns 0 at end of stream. */
static int read_msg(int fd, char *buf)
{
    size_t got = 0;
    while (got < MSG) {
        ssize_t n = read(fd, buf + got, MSG - got);
        if (n <= 0)
            return 0;
        got += (size_t)n;
    }
    return 1;
}

static void write_msg(int fd, const char *buf)
{
    if (write(fd, buf, MSG) != MSG)
        die("write");
}

__attribute__((noinline)) static void serve(int fd)
{
    char buf[MSG];
    while (read_msg(fd, buf))
        write_msg(fd, buf);
}

static void *server(void *arg)
{
    serve((int)(long)arg);
    return NULL;
}

__attribute__((noinline)) static unsigned long ask(int fd)
{
    char buf[MSG] = "ping";
    unsigned long trips = 0;
    while (!atomic_load(&stop)) {
        write_msg(fd, buf);
        if (!read_msg(fd, buf))
            die("read");
        trips++;
    }
    return trips;
}

static void *timer(void *arg)
{
    sleep_ms((long)(*(double *)arg * 1000));
    atomic_store(&stop, 1);
    return NULL;
}

int main(int argc, char **argv)
{
    double seconds = storm_start(argc, argv);
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof addr;
    if (listener < 0 || bind(listener, (struct sockaddr *)&addr, sizeof addr) != 0 ||
        listen(listener, 1) != 0 || getsockname(listener, (struct sockaddr *)&addr, &len) != 0)
        die("listen on 127.0.0.1");
    int client = socket(AF_INET, SOCK_STREAM, 0);
    if (client < 0 || connect(client, (struct sockaddr *)&addr, sizeof addr) != 0)
        die("connect");
    int peer = accept(listener, NULL, NULL);
    if (peer < 0)
        die("accept");
    int one = 1;
    setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(peer, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    pthread_t srv, clock;
    pthread_create(&srv, NULL, server, (void *)(long)peer);
    pthread_create(&clock, NULL, timer, &seconds);
    double t0 = now_s();
    unsigned long trips = ask(client);
    double elapsed = now_s() - t0;
    shutdown(client, SHUT_WR);
    pthread_join(srv, NULL);
    pthread_join(clock, NULL);
    close(client);
    close(peer);
    close(listener);
    storm_finish(trips, elapsed);
    return 0;
}
