/* http_storm: HTTP/1.1 keep-alive requests and answers on 127.0.0.1 (loopback only).
 * CLIENTS client threads each hold one connection to a server thread of their own and
 * loop: write "GET /orders/<n> HTTP/1.1" with a few headers, read the answer
 * ("HTTP/1.1 200 OK", Content-Length 2). The request/response storm of the connection
 * ledger: every transfer is framed (a request line in, a status line out).
 *
 * usage: http_storm SECONDS BARRIER. ops = requests answered.
 * HTTP_STORM_RATE=N (optional): pace all clients together to about N requests/s, to
 * measure the profiler's cost at a given load rather than at saturation.
 * HTTP_STORM_APART=1 (optional): the clients run in a child process forked before
 * "ready", so the pid printed (the one to profile) is a server only, as a service
 * serving N requests/s would be. */
#include <sys/wait.h>
#include "storm.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>

#define CLIENTS 2

static _Atomic int stop;
static double pace_s; /* seconds between two requests of one client; 0: no pacing */

static void die(const char *what)
{
    perror(what);
    exit(1);
}

/* Reads until the buffer holds a full head ("\r\n\r\n") plus `body` bytes; returns 0
 * at end of stream. Requests and answers are small and sent in one write each. */
static int read_message(int fd, char *buf, size_t size, size_t body)
{
    size_t got = 0;
    for (;;) {
        ssize_t n = read(fd, buf + got, size - 1 - got);
        if (n <= 0)
            return 0;
        got += (size_t)n;
        buf[got] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        if (end && (size_t)(buf + got - (end + 4)) >= body)
            return 1;
        if (got >= size - 1)
            return 0;
    }
}

__attribute__((noinline)) static void serve(int fd)
{
    static const char answer[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                                 "Content-Length: 2\r\n\r\nok";
    char buf[1024];
    while (read_message(fd, buf, sizeof buf, 0))
        if (write(fd, answer, sizeof answer - 1) != (ssize_t)(sizeof answer - 1))
            die("write answer");
}

static void *server(void *arg)
{
    serve((int)(long)arg);
    return NULL;
}

struct client {
    int fd;
    unsigned long answered;
};

__attribute__((noinline)) static void ask(struct client *c)
{
    char request[256], buf[1024];
    double next = now_s();
    while (!atomic_load(&stop)) {
        int len = snprintf(request, sizeof request,
                           "GET /orders/%lu HTTP/1.1\r\nHost: shop\r\n"
                           "Accept: application/json\r\n\r\n",
                           c->answered);
        if (write(c->fd, request, (size_t)len) != len)
            die("write request");
        if (!read_message(c->fd, buf, sizeof buf, 2))
            die("read answer");
        c->answered++;
        if (pace_s > 0) {
            next += pace_s;
            double wait = next - now_s();
            if (wait > 0) {
                struct timespec ts = { (time_t)wait, (long)((wait - (time_t)wait) * 1e9) };
                nanosleep(&ts, NULL);
            }
        }
    }
}

static void *client(void *arg)
{
    ask(arg);
    return NULL;
}

static void *timer(void *arg)
{
    sleep_ms((long)(*(double *)arg * 1000));
    atomic_store(&stop, 1);
    return NULL;
}

/* Runs every client on its own thread until `stop`; returns the requests answered. */
static unsigned long run_clients(struct client *clients)
{
    pthread_t threads[CLIENTS];
    for (int i = 0; i < CLIENTS; i++)
        pthread_create(&threads[i], NULL, client, &clients[i]);
    unsigned long answered = 0;
    for (int i = 0; i < CLIENTS; i++) {
        pthread_join(threads[i], NULL);
        answered += clients[i].answered;
    }
    return answered;
}

/* The clients of HTTP_STORM_APART, in the child: connect, wait for the start byte,
 * ask for `seconds`, write the number answered to `result` and exit. */
static void clients_apart(struct sockaddr_in *addr, int start, int result, double seconds)
{
    struct client clients[CLIENTS];
    pthread_t clock;
    int one = 1;
    for (int i = 0; i < CLIENTS; i++) {
        clients[i] = (struct client){ .fd = socket(AF_INET, SOCK_STREAM, 0) };
        if (clients[i].fd < 0 ||
            connect(clients[i].fd, (struct sockaddr *)addr, sizeof *addr) != 0)
            die("connect");
        setsockopt(clients[i].fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    char go;
    if (read(start, &go, 1) != 1)
        exit(0); /* the server gave up */
    pthread_create(&clock, NULL, timer, &seconds);
    unsigned long answered = run_clients(clients);
    if (write(result, &answered, sizeof answered) != sizeof answered)
        die("write result");
    exit(0);
}

/* HTTP_STORM_APART: serve the child's clients; returns requests answered. */
static unsigned long serve_apart(int listener, int start, int result, double *elapsed)
{
    pthread_t servers[CLIENTS];
    int one = 1;
    for (int i = 0; i < CLIENTS; i++) {
        int peer = accept(listener, NULL, NULL);
        if (peer < 0)
            die("accept");
        setsockopt(peer, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        pthread_create(&servers[i], NULL, server, (void *)(long)peer);
    }
    double t0 = now_s();
    if (write(start, "g", 1) != 1)
        die("start the clients");
    unsigned long answered = 0;
    if (read(result, &answered, sizeof answered) != sizeof answered)
        die("read the clients' result");
    *elapsed = now_s() - t0;
    for (int i = 0; i < CLIENTS; i++)
        pthread_join(servers[i], NULL); /* the child's exit closes its connections */
    wait(NULL);
    return answered;
}

int main(int argc, char **argv)
{
    const char *rate = getenv("HTTP_STORM_RATE");
    if (rate && atof(rate) > 0)
        pace_s = CLIENTS / atof(rate);
    const char *apart = getenv("HTTP_STORM_APART");
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof addr;
    if (listener < 0 || bind(listener, (struct sockaddr *)&addr, sizeof addr) != 0 ||
        listen(listener, CLIENTS) != 0 ||
        getsockname(listener, (struct sockaddr *)&addr, &len) != 0)
        die("listen on 127.0.0.1");
    if (apart && atoi(apart) == 1) {
        int start[2], result[2];
        if (pipe(start) != 0 || pipe(result) != 0)
            die("pipe");
        double child_seconds = argc > 1 ? atof(argv[1]) : 0;
        pid_t pid = fork();
        if (pid < 0)
            die("fork");
        if (pid == 0) {
            close(listener);
            close(start[1]);
            close(result[0]);
            clients_apart(&addr, start[0], result[1], child_seconds);
        }
        close(start[0]);
        close(result[1]);
        storm_start(argc, argv);
        double elapsed;
        unsigned long answered = serve_apart(listener, start[1], result[0], &elapsed);
        close(listener);
        storm_finish(answered, elapsed);
        return 0;
    }
    double seconds = storm_start(argc, argv);
    struct client clients[CLIENTS];
    pthread_t servers[CLIENTS], clock;
    int one = 1;
    for (int i = 0; i < CLIENTS; i++) {
        clients[i] = (struct client){ .fd = socket(AF_INET, SOCK_STREAM, 0) };
        if (clients[i].fd < 0 ||
            connect(clients[i].fd, (struct sockaddr *)&addr, sizeof addr) != 0)
            die("connect");
        int peer = accept(listener, NULL, NULL);
        if (peer < 0)
            die("accept");
        setsockopt(clients[i].fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(peer, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        pthread_create(&servers[i], NULL, server, (void *)(long)peer);
    }
    pthread_create(&clock, NULL, timer, &seconds);
    double t0 = now_s();
    unsigned long answered = run_clients(clients);
    double elapsed = now_s() - t0;
    for (int i = 0; i < CLIENTS; i++)
        shutdown(clients[i].fd, SHUT_WR);
    for (int i = 0; i < CLIENTS; i++)
        pthread_join(servers[i], NULL);
    pthread_join(clock, NULL);
    close(listener);
    storm_finish(answered, elapsed);
    return 0;
}
