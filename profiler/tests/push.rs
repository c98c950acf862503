//! Pyroscope push against a real HTTP server on loopback. No Pyroscope server is
//! packaged for Debian, so the server is a minimal one in this test that records each
//! request and answers with scripted statuses; the test then parses what was sent
//! (query parameters, multipart parts, the pprof inside) the way Pyroscope does.
#[path = "push/ingest.rs"]
mod ingest;

use std::{
    collections::BTreeMap,
    net::TcpListener,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use ingest::{multipart, pyroscope_profile_types, Server};

use profiler::push::{Capture, PushOptions, PushWorker, Pusher};
use profiler::render::pprof::{
    to_gzip, CodeLocation, Label, ProfileModel, ProfileSample, ValueKind,
};

fn model(types: &[(&str, &str)], frames: &[&str], values: Vec<i64>) -> ProfileModel {
    ProfileModel {
        sample_types: types.iter().map(|(k, u)| ValueKind::new(k, u)).collect(),
        default_sample_type: None,
        period_type: ValueKind::new(types[0].0, types[0].1),
        period: 1,
        time_nanos: 1,
        duration_nanos: 1,
        comments: Vec::new(),
        samples: vec![ProfileSample {
            stack: frames.iter().map(|f| CodeLocation::named(*f)).collect(),
            values,
            labels: vec![Label::str("pid", "7")],
        }],
    }
}

/// A capture directory with memory.pb.gz and waits.pb.gz (and a folded file that must
/// not be pushed).
fn capture_dir(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let memory = model(
        &[("inuse_space", "bytes"), ("inuse_objects", "count")],
        &["main", "leak"],
        vec![4096, 1],
    );
    let waits = model(
        &[("blocked", "nanoseconds"), ("count", "count")],
        &["main", "lock"],
        vec![5_000, 2],
    );
    std::fs::write(dir.join("memory.pb.gz"), to_gzip(&memory).unwrap()).unwrap();
    std::fs::write(dir.join("waits.pb.gz"), to_gzip(&waits).unwrap()).unwrap();
    std::fs::write(dir.join("memory.folded"), "x 1\n").unwrap();
    dir
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn capture(dir: PathBuf, process: &str, from_secs: u64) -> Capture {
    let from = SystemTime::UNIX_EPOCH + Duration::from_secs(from_secs);
    Capture {
        dir,
        from,
        until: from + Duration::from_secs(60),
        labels: BTreeMap::from([
            ("container".to_string(), "4f2a9c".to_string()),
            ("process".to_string(), process.to_string()),
        ]),
    }
}

fn options(url: String) -> PushOptions {
    PushOptions {
        labels: BTreeMap::from([("host".to_string(), "node-1".to_string())]),
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(400),
        timeout: Duration::from_secs(5),
        ..PushOptions::new(url)
    }
}

/// Check that each profile of a capture is one POST /ingest with Pyroscope's query
/// parameters (name with host/container/process labels, from, until, format=pprof,
/// spyName) and a multipart body whose `profile` part is the file as written and whose
/// `sample_type_config` names its sample types; the folded file is not sent.
#[test]
fn push_sends_pyroscope_ingest_requests() {
    let root = scratch("push_requests");
    let dir = capture_dir(&root, "c1");
    let server = Server::start(&[]);
    let mut pusher = Pusher::new(options(server.url())).unwrap();
    pusher
        .enqueue(capture(dir.clone(), "svc", 1_700_000_000))
        .unwrap();
    let outcome = pusher.flush();
    assert_eq!(outcome.sent, 2, "{outcome:?}");
    assert_eq!(pusher.queued(), 0);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    for (req, (file, first_type)) in reqs
        .iter()
        .zip([("memory.pb.gz", "inuse_space"), ("waits.pb.gz", "blocked")])
    {
        assert_eq!(req.method, "POST");
        assert_eq!(req.path, "/ingest");
        assert_eq!(
            req.query["name"],
            "profiler{container=4f2a9c,host=node-1,process=svc}"
        );
        assert_eq!(req.query["from"], "1700000000");
        assert_eq!(req.query["until"], "1700000060");
        assert_eq!(req.query["format"], "pprof");
        assert_eq!(req.query["spyName"], "profiler");
        assert!(
            req.content_type.starts_with("multipart/form-data"),
            "{}",
            req.content_type
        );
        let parts = multipart(&req.content_type, &req.body);
        let (filename, profile) = &parts["profile"];
        assert_eq!(filename.as_deref(), Some("profile.pprof"));
        assert_eq!(profile, &std::fs::read(dir.join(file)).unwrap());
        let config: serde_json::Value =
            serde_json::from_slice(&parts["sample_type_config"].1).unwrap();
        assert!(config.get(first_type).is_some(), "{config}");
    }
    // Pushing deletes nothing.
    assert!(dir.join("memory.pb.gz").exists() && dir.join("waits.pb.gz").exists());
}

/// Check that 503 answers are retried with doubling back-off (50 ms, then 100 ms)
/// and the profile goes through on the third try.
#[test]
fn push_retries_503_with_backoff() {
    let root = scratch("push_backoff");
    let dir = root.join("c1");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        capture_dir(&root, "src").join("memory.pb.gz"),
        dir.join("memory.pb.gz"),
    )
    .unwrap();
    let server = Server::start(&[503, 503]);
    let mut pusher = Pusher::new(options(server.url())).unwrap();
    pusher.enqueue(capture(dir, "svc", 1_700_000_000)).unwrap();
    let outcome = pusher.flush();
    assert_eq!(
        (outcome.sent, outcome.failed_attempts),
        (1, 2),
        "{outcome:?}"
    );
    let reqs = server.requests();
    assert_eq!(reqs.len(), 3);
    let gap1 = reqs[1].at - reqs[0].at;
    let gap2 = reqs[2].at - reqs[1].at;
    eprintln!("retry gaps: {gap1:?}, {gap2:?}");
    assert!(gap1 >= Duration::from_millis(50), "{gap1:?}");
    assert!(gap2 >= Duration::from_millis(100), "{gap2:?}");
}

/// Check that while the server is down captures queue up to the bound (the oldest
/// leaves the queue, its files stay on disk), rounds wait out a growing back-off, and
/// once the server is up the queued captures go out oldest first.
#[test]
fn push_queue_is_bounded_while_server_is_down() {
    let root = scratch("push_down");
    // A port with nothing listening: bind, note it, close.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut opts = options(format!("http://127.0.0.1:{port}"));
    opts.max_queue = 2;
    opts.max_attempts = 2;
    let mut pusher = Pusher::new(opts).unwrap();
    let dirs: Vec<PathBuf> = (0..3)
        .map(|i| capture_dir(&root, &format!("c{i}")))
        .collect();
    let mut waits = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        pusher
            .enqueue(capture(
                dir.clone(),
                &format!("p{i}"),
                1_700_000_000 + i as u64,
            ))
            .unwrap();
        let outcome = pusher.flush();
        assert_eq!(outcome.sent, 0);
        assert_eq!(
            outcome.failed_attempts, 2,
            "two tries per round: {outcome:?}"
        );
        let not_before = pusher
            .not_before()
            .expect("a failed round schedules the next");
        waits.push(not_before.saturating_duration_since(Instant::now()));
        // A round before the back-off has passed does nothing.
        assert_eq!(pusher.flush().failed_attempts, 0);
        std::thread::sleep(not_before.saturating_duration_since(Instant::now()));
    }
    eprintln!("round back-offs: {waits:?}");
    assert!(waits[1] > waits[0] && waits[2] > waits[1], "{waits:?}");
    assert_eq!(pusher.queued(), 2);
    assert_eq!(pusher.dropped(), 1);
    assert!(
        dirs[0].join("memory.pb.gz").exists(),
        "never deleted from disk"
    );

    let server = Server::start_on(TcpListener::bind(("127.0.0.1", port)).unwrap(), &[]);
    let outcome = pusher.flush();
    assert_eq!(outcome.sent, 4, "{outcome:?}");
    assert_eq!(pusher.queued(), 0);
    let processes: Vec<String> = server
        .requests()
        .iter()
        .map(|r| r.query["name"].clone())
        .collect();
    assert!(processes[0].contains("process=p1") && processes[3].contains("process=p2"));
}

/// Check that the background worker pushes submitted captures and reports counters.
#[test]
fn push_worker_pushes_in_background() {
    let root = scratch("push_worker");
    let server = Server::start(&[]);
    let worker = PushWorker::spawn(options(server.url())).unwrap();
    worker.submit(capture(capture_dir(&root, "c1"), "svc", 1_700_000_000));
    worker.submit(capture(capture_dir(&root, "c2"), "svc", 1_700_000_060));
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.requests().len() < 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let stats = worker.shutdown(Duration::from_secs(1));
    assert_eq!(stats.sent, 4, "{stats:?}");
    assert_eq!(stats.queued, 0);
    assert!(Pusher::new(PushOptions::new("ftp://x")).is_err());
}

/// Check that credentials in the URL go out as basic auth and the tenant as
/// X-Scope-OrgID, as a multi-tenant Pyroscope behind an authenticating proxy wants.
#[test]
fn push_sends_basic_auth_and_tenant() {
    let root = scratch("push_auth");
    let server = Server::start(&[]);
    let url = format!("http://user:secret@127.0.0.1:{}", server.port);
    let mut opts = options(url);
    opts.tenant = Some("team-a".into());
    let mut pusher = Pusher::new(opts).unwrap();
    pusher
        .enqueue(capture(capture_dir(&root, "c1"), "svc", 1_700_000_000))
        .unwrap();
    assert_eq!(pusher.flush().sent, 2);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    for req in reqs {
        // base64("user:secret")
        assert_eq!(req.authorization.as_deref(), Some("Basic dXNlcjpzZWNyZXQ="));
        assert_eq!(req.tenant.as_deref(), Some("team-a"));
    }
}

/// Check that with a spool file the queue outlives the pusher: captures queued while
/// the server was down are sent by the next pusher (as after a restart), oldest first,
/// and the spool is empty once they are through.
#[test]
fn push_queue_survives_a_restart() {
    let root = scratch("push_spool");
    let spool = root.join(".push-queue.json");
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut opts = options(format!("http://127.0.0.1:{port}"));
    opts.max_attempts = 1;
    opts.spool = Some(spool.clone());
    {
        let mut pusher = Pusher::new(opts.clone()).unwrap();
        for i in 0..2 {
            pusher
                .enqueue(capture(
                    capture_dir(&root, &format!("c{i}")),
                    &format!("p{i}"),
                    1_700_000_000 + i,
                ))
                .unwrap();
        }
        assert_eq!(pusher.flush().sent, 0, "server down");
        assert_eq!(pusher.queued(), 2);
    }
    assert!(spool.exists());
    // A capture directory removed meanwhile (retention) is skipped on load.
    let gone = capture_dir(&root, "gone");
    {
        let mut pusher = Pusher::new(opts.clone()).unwrap();
        pusher
            .enqueue(capture(gone.clone(), "gone", 1_700_000_100))
            .unwrap();
    }
    std::fs::remove_dir_all(&gone).unwrap();

    let server = Server::start_on(TcpListener::bind(("127.0.0.1", port)).unwrap(), &[]);
    let mut pusher = Pusher::new(opts.clone()).unwrap();
    assert_eq!(
        pusher.queued(),
        2,
        "loaded from the spool, the removed capture skipped"
    );
    let outcome = pusher.flush();
    assert_eq!(outcome.sent, 4, "{outcome:?}");
    let names: Vec<String> = server
        .requests()
        .iter()
        .map(|r| r.query["name"].clone())
        .collect();
    assert!(
        names[0].contains("process=p0") && names[3].contains("process=p1"),
        "{names:?}"
    );
    assert_eq!(Pusher::new(opts).unwrap().queued(), 0, "spool emptied");
}

/// Check that memory.pb.gz (live mapped bytes) and allocations.pb.gz (live heap
/// blocks), which share their pprof sample types, reach Pyroscope as profile types of
/// their own (`mapped:…` and `memory:…`), waits as `blocked:…`, so a server never
/// merges two views into one series.
#[test]
fn push_keeps_each_view_its_own_profile_type() {
    let root = scratch("push_profile_types");
    let dir = capture_dir(&root, "c1");
    let allocations = model(
        &[("inuse_space", "bytes"), ("inuse_objects", "count")],
        &["main", "malloc"],
        vec![8192, 2],
    );
    std::fs::write(
        dir.join("allocations.pb.gz"),
        to_gzip(&allocations).unwrap(),
    )
    .unwrap();
    let server = Server::start(&[]);
    let mut pusher = Pusher::new(options(server.url())).unwrap();
    pusher
        .enqueue(capture(dir.clone(), "svc", 1_700_000_000))
        .unwrap();
    assert_eq!(pusher.flush().sent, 3);
    let by_file: BTreeMap<String, Vec<String>> = server
        .requests()
        .iter()
        .map(|req| {
            let parts = multipart(&req.content_type, &req.body);
            let file = ["allocations.pb.gz", "memory.pb.gz", "waits.pb.gz"]
                .into_iter()
                .find(|f| std::fs::read(dir.join(f)).unwrap() == parts["profile"].1)
                .expect("a profile of the capture");
            (file.to_string(), pyroscope_profile_types(req))
        })
        .collect();
    eprintln!("profile types: {by_file:#?}");
    assert_eq!(
        by_file["allocations.pb.gz"],
        [
            "memory:inuse_space:bytes:inuse_space:bytes",
            "memory:inuse_objects:count:inuse_space:bytes"
        ]
    );
    assert_eq!(
        by_file["memory.pb.gz"],
        [
            "mapped:inuse_space:bytes:inuse_space:bytes",
            "mapped:inuse_objects:count:inuse_space:bytes"
        ]
    );
    assert!(
        by_file["waits.pb.gz"][0].starts_with("blocked:blocked:nanoseconds:"),
        "{by_file:?}"
    );
    let all: Vec<&String> = by_file.values().flatten().collect();
    let mut unique = all.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        all.len(),
        "a profile type shared by two views"
    );
}
