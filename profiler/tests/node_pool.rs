//! Root tests of the Node pool servers themselves (no profiler): the incident's
//! double acquire hangs both the HTTP and the gRPC server for good while the health
//! check answers, and their healthy twins answer every request. The census and the
//! request-ledger tests rely on both facts.
mod common;

use std::time::{Duration, Instant};

use common::{
    node_pool::{LoadGenerator, PoolMode, PoolServer, Service},
    postgres::PgServer,
    *,
};

const NODE: &str = "/usr/bin/node";
/// How long a server may live; every test ends well before (and kills it).
const SERVER_SECONDS: u64 = 300;

/// Start a hung server and hang it with bursts of `requests` orders.
fn hang(service: Service, pg: &PgServer, requests: u32) -> (PoolServer, Vec<LoadGenerator>) {
    let server = PoolServer::start(
        NODE.as_ref(),
        service,
        PoolMode::DoubleAcquire,
        pg,
        SERVER_SECONDS,
    );
    let (loads, counts) = server.hang(NODE.as_ref(), requests, 10, SERVER_SECONDS);
    // A few orders may get both connections before the pool fills up and finish.
    assert!(counts.inflight >= u64::from(requests) - 10, "{counts:?}");
    (server, loads)
}

/// Check that both servers hang under 50 concurrent orders with the double acquire (a
/// full pool, every order in flight waiting for a client, unchanged 2 s later, the
/// health check answering), and that their
/// healthy twins answer 300 orders sent 50 at a time.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn double_acquire_hangs_and_healthy_twin_answers() {
    require_root();
    PgServer::stop_leftover("node_pool");
    let dir = scratch_dir("node_pool");
    let pg = PgServer::start(&dir);
    for service in [Service::Http, Service::Grpc] {
        let began = Instant::now();
        let (server, _load) = hang(service, &pg, 50);
        let hung = server.counts();
        // Still hung, unchanged, 2 s later.
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(server.counts(), hung, "{service:?}");
        assert!(
            server.healthy(),
            "{service:?}: the health check does not answer"
        );
        drop(server);

        let server = PoolServer::start(
            NODE.as_ref(),
            service,
            PoolMode::Healthy,
            &pg,
            SERVER_SECONDS,
        );
        let load = LoadGenerator::start(NODE.as_ref(), &server, 50, 300, 120);
        let result = load.finish();
        assert_eq!(
            (result.answered, result.failed),
            (300, 0),
            "{service:?}: {result:?}"
        );
        let counts = server.counts();
        assert_eq!((counts.inflight, counts.answered), (0, 300), "{service:?}");
        eprintln!(
            "{service:?}: hung and healthy twin checked in {:.1} s",
            began.elapsed().as_secs_f64()
        );
    }
}
