/* A server whose connection pool deadlocks: a fixed-size pool guarded by a mutex +
 * condition variable, and 4 workers that each take a request from a loopback listener,
 * hold one pooled slot (a transaction) and then ask the same pool for a second one inside
 * acquire_nested(): with 4 workers and 4 slots every worker waits forever (the
 * pool-exhaustion deadlock of a transaction that asks for a second connection).
 *
 * Requests keep arriving, as they do at a real server: the main thread is the clients
 * (6 connections to the listener, one request each), so 2 requests are still in the
 * listener's accept queue when the workers are stuck: the unmet demand a real deadlocked
 * server shows.
 *
 * usage: pool_deadlock SECONDS BARRIER   (4 workers, 4 slots, 6 requests)
 * Prints "ready <pid>", waits until BARRIER exists ("-" = start at once), deadlocks,
 * prints "deadlocked <workers>" and exits by itself after SECONDS. */
#include "common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>

#define WORKERS 4
#define REQUESTS 6

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t slot_free = PTHREAD_COND_INITIALIZER;
static int free_slots;
static int listener;
static volatile int sink;

__attribute__((noinline)) static void pool_acquire(void) {
    pthread_mutex_lock(&pool_lock);
    while (free_slots == 0)
        pthread_cond_wait(&slot_free, &pool_lock);
    free_slots--;
    pthread_mutex_unlock(&pool_lock);
}

__attribute__((noinline)) static void pool_release(void) {
    pthread_mutex_lock(&pool_lock);
    free_slots++;
    pthread_cond_signal(&slot_free);
    pthread_mutex_unlock(&pool_lock);
}

/* The bug: a second connection while still holding the first. */
__attribute__((noinline)) void acquire_nested(void) {
    pool_acquire();
    sink++;
    pool_release();
}

/* A request: a transaction holds one pooled connection, then asks for another. */
__attribute__((noinline)) void handle_request(void) {
    pool_acquire();
    usleep(100000); /* every worker now holds its first slot */
    acquire_nested();
    pool_release();
}

static void *worker(void *arg) {
    (void)arg;
    for (;;) {
        int conn = accept(listener, NULL, NULL);
        if (conn < 0)
            return NULL;
        char request[128];
        if (read(conn, request, sizeof request) > 0)
            handle_request();
        if (write(conn, "ok\n", 3) < 0)
            sink++;
        close(conn);
    }
}

int main(int argc, char **argv) {
    double seconds = start(argc, argv);
    free_slots = WORKERS;
    listener = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    if (listener < 0 || bind(listener, (struct sockaddr *)&addr, sizeof addr) != 0 ||
        listen(listener, 16) != 0 || getsockname(listener, (struct sockaddr *)&addr, &len) != 0) {
        perror("listener");
        return 1;
    }
    pthread_t t;
    for (int i = 0; i < WORKERS; i++)
        pthread_create(&t, NULL, worker, NULL);
    int clients[REQUESTS];
    for (int i = 0; i < REQUESTS; i++) {
        clients[i] = socket(AF_INET, SOCK_STREAM, 0);
        const char request[] = "POST /orders HTTP/1.1\r\nHost: pool\r\nContent-Length: 0\r\n\r\n";
        if (clients[i] < 0 || connect(clients[i], (struct sockaddr *)&addr, sizeof addr) != 0 ||
            write(clients[i], request, sizeof request - 1) < 0) {
            perror("client");
            return 1;
        }
    }
    printf("deadlocked %d\n", WORKERS);
    fflush(stdout);
    usleep((useconds_t)(seconds * 1e6));
    return 0;
}
