/* A PostgreSQL client blocked on its server: run_report_query() sends
 * `SELECT pg_sleep(SECONDS)` with PQexec, and libpq waits for the result in poll() on
 * its one connection, so the thread is blocked on the server's socket for SECONDS.
 *
 * usage: PG_CONNINFO='host=127.0.0.1 port=… user=postgres' pg_client SECONDS BARRIER
 * (the connection string comes through the environment: start() takes exactly
 * SECONDS BARRIER). Connects first, then prints "ready <pid>", waits until BARRIER
 * exists ("-" = at once), runs the query, prints "query_done" and exits 0; exits 1 when
 * the connection or the query fails.
 *
 * Build: gcc -O1 -g -fno-omit-frame-pointer -fno-optimize-sibling-calls
 *        -I$(pg_config --includedir) -o pg_client testprogs/pg_client.c -lpq */
#include "common.h"

#include <libpq-fe.h>

/* Keeps the result of run_report_query() alive, so gcc cannot drop or fold the call. */
static volatile int sink;

/* The function a person looks for in the blocked stack: a report query that waits on
 * the database. */
__attribute__((noinline)) int run_report_query(PGconn *conn, double seconds)
{
    char sql[64];
    snprintf(sql, sizeof sql, "SELECT pg_sleep(%.3f)", seconds);
    PGresult *res = PQexec(conn, sql);
    int ok = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1;
    if (!ok)
        fprintf(stderr, "pg_client: %s failed: %s", sql, PQerrorMessage(conn));
    PQclear(res);
    sink = ok;
    return ok;
}

int main(int argc, char **argv)
{
    const char *conninfo = getenv("PG_CONNINFO");
    if (conninfo == NULL) {
        fprintf(stderr, "pg_client: set PG_CONNINFO to a libpq connection string\n");
        return 2;
    }
    PGconn *conn = PQconnectdb(conninfo);
    if (PQstatus(conn) != CONNECTION_OK) {
        fprintf(stderr, "pg_client: connecting with '%s': %s", conninfo, PQerrorMessage(conn));
        PQfinish(conn);
        return 1;
    }
    double seconds = start(argc, argv);
    int ok = run_report_query(conn, seconds);
    PQfinish(conn);
    if (!ok)
        return 1;
    printf("query_done\n");
    fflush(stdout);
    return sink ? 0 : 1;
}
