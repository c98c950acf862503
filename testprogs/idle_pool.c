/* A healthy worker pool with nothing to do: 8 workers wait in worker_wait_for_job()
 * (pthread_cond_wait on the job queue's condition variable) for jobs that never come.
 * With IDLE_POOL_HEALTH=1 a health-check thread also answers "ok" to every connection on
 * a loopback listener, as a load balancer's probe expects.
 *
 * usage: [IDLE_POOL_HEALTH=1] idle_pool SECONDS BARRIER
 * Prints "ready <pid>", waits until BARRIER exists ("-" = start at once), prints
 * "started", "workers 8" and (with the health check) "health_port <port>"; after SECONDS
 * it stops the workers and prints "jobs_done <N>" and "health_answered <N>". */
#include "common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>

#define WORKERS 8

static pthread_mutex_t queue_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t job_ready = PTHREAD_COND_INITIALIZER;
static int jobs_queued;
static int jobs_done;
static int stopping;
static int health_listener = -1;
static int health_answered;

/* Blocks until a job is queued or the pool stops; returns 0 when stopping. */
__attribute__((noinline)) int worker_wait_for_job(void) {
    pthread_mutex_lock(&queue_lock);
    while (jobs_queued == 0 && !stopping)
        pthread_cond_wait(&job_ready, &queue_lock);
    int got = jobs_queued > 0;
    if (got)
        jobs_queued--;
    pthread_mutex_unlock(&queue_lock);
    return got;
}

static void *worker(void *arg) {
    (void)arg;
    while (worker_wait_for_job()) {
        pthread_mutex_lock(&queue_lock);
        jobs_done++;
        pthread_mutex_unlock(&queue_lock);
    }
    return NULL;
}

/* Answers each connection with "ok\n" until the listener is shut down. */
__attribute__((noinline)) void *health_check(void *arg) {
    (void)arg;
    for (;;) {
        int conn = accept(health_listener, NULL, NULL);
        if (conn < 0)
            return NULL;
        char request[256];
        if (read(conn, request, sizeof request) >= 0 && write(conn, "ok\n", 3) == 3)
            __atomic_add_fetch(&health_answered, 1, __ATOMIC_SEQ_CST);
        close(conn);
    }
}

int main(int argc, char **argv) {
    double seconds = start(argc, argv);
    const char *health = getenv("IDLE_POOL_HEALTH");
    pthread_t workers[WORKERS], checker;
    for (int i = 0; i < WORKERS; i++)
        pthread_create(&workers[i], NULL, worker, NULL);
    printf("workers %d\n", WORKERS);
    if (health && strcmp(health, "1") == 0) {
        health_listener = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof addr;
        if (health_listener < 0 || bind(health_listener, (struct sockaddr *)&addr, sizeof addr) != 0 ||
            listen(health_listener, 16) != 0 ||
            getsockname(health_listener, (struct sockaddr *)&addr, &len) != 0) {
            perror("health listener");
            return 1;
        }
        pthread_create(&checker, NULL, health_check, NULL);
        printf("health_port %d\n", ntohs(addr.sin_port));
    }
    fflush(stdout);
    sleep_ms((long)(seconds * 1000));
    pthread_mutex_lock(&queue_lock);
    stopping = 1;
    pthread_cond_broadcast(&job_ready);
    pthread_mutex_unlock(&queue_lock);
    for (int i = 0; i < WORKERS; i++)
        pthread_join(workers[i], NULL);
    if (health_listener >= 0) {
        shutdown(health_listener, SHUT_RDWR);
        pthread_join(checker, NULL);
    }
    printf("jobs_done %d\nhealth_answered %d\n", jobs_done, health_answered);
    return 0;
}
