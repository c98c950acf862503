//! Pyroscope push against a real HTTP server on loopback. No Pyroscope server is
//! packaged for Debian, so the server is a minimal one in this test that records each
//! request and answers with scripted statuses; the test then parses what was sent
//! (query parameters, multipart parts, the pprof inside) the way Pyroscope does.
use std::{
    collections::{BTreeMap, VecDeque},
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use profiler::push::{Capture, PushOptions, PushWorker, Pusher};
use profiler::render::pprof::{
    to_gzip, CodeLocation, Label, ProfileModel, ProfileSample, ValueKind,
};

/// One request as the server saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    query: BTreeMap<String, String>,
    content_type: String,
    authorization: Option<String>,
    tenant: Option<String>,
    body: Vec<u8>,
    at: Instant,
}

/// A loopback HTTP/1.1 server answering each request with the next scripted status
/// (200 once the script is empty), one request per connection.
struct Server {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    fn start(script: &[u16]) -> Self {
        Self::start_on(TcpListener::bind("127.0.0.1:0").unwrap(), script)
    }

    fn start_on(listener: TcpListener, script: &[u16]) -> Self {
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(script.iter().copied().collect::<VecDeque<_>>()));
        let shared = Arc::clone(&seen);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let status = script.lock().unwrap().pop_front().unwrap_or(200);
                handle(stream, status, &shared);
            }
        });
        Self { port, seen }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Read one request, record it, then answer: recorded first, so a client that has its
/// response always finds its request in `Server::requests`.
fn handle(mut stream: TcpStream, status: u16, seen: &Mutex<Vec<Seen>>) -> Option<()> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut length = 0usize;
    let mut content_type = String::new();
    let mut authorization = None;
    let mut tenant = None;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        match k.to_ascii_lowercase().as_str() {
            "content-length" => length = v.trim().parse().ok()?,
            "content-type" => content_type = v.trim().to_string(),
            "authorization" => authorization = Some(v.trim().to_string()),
            "x-scope-orgid" => tenant = Some(v.trim().to_string()),
            "transfer-encoding" => panic!("chunked bodies are not expected: {v}"),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let query = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    let reason = if status == 200 {
        "OK"
    } else {
        "Service Unavailable"
    };
    seen.lock().unwrap().push(Seen {
        method,
        path: path.to_string(),
        query,
        content_type,
        authorization,
        tenant,
        body,
        at: Instant::now(),
    });
    let _ = write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    Some(())
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// The parts of a multipart/form-data body: name → (filename, bytes).
fn multipart(content_type: &str, body: &[u8]) -> BTreeMap<String, (Option<String>, Vec<u8>)> {
    let boundary = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .unwrap_or_else(|| panic!("no boundary in {content_type}"))
        .trim_matches('"');
    let delimiter = format!("--{boundary}");
    let mut parts = BTreeMap::new();
    let mut rest = body;
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    let start = find(rest, delimiter.as_bytes()).expect("first boundary");
    rest = &rest[start + delimiter.len()..];
    while !rest.starts_with(b"--") {
        rest = rest.strip_prefix(b"\r\n").expect("CRLF after boundary");
        let head_end = find(rest, b"\r\n\r\n").expect("part headers");
        let head = std::str::from_utf8(&rest[..head_end]).unwrap();
        let data_start = head_end + 4;
        let end = find(&rest[data_start..], format!("\r\n{delimiter}").as_bytes())
            .expect("closing boundary");
        let data = rest[data_start..data_start + end].to_vec();
        let disposition = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition"))
            .expect("content-disposition");
        let field = |key: &str| {
            disposition
                .split(';')
                .find_map(|p| p.trim().strip_prefix(&format!("{key}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
        };
        parts.insert(field("name").expect("part name"), (field("filename"), data));
        rest = &rest[data_start + end + 2 + delimiter.len()..];
    }
    parts
}

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

/// The profile type IDs Grafana Pyroscope files a pushed pprof under, computed as its
/// `/ingest` handler does (pkg/og/convert/pprof `metricName`): `__name__` from the
/// first sample type whose display name (from `sample_type_config`, else its own name)
/// contains `cpu` (process_cpu), `alloc_`/`inuse_` (memory), `mutex_`, `block_`,
/// `goroutines`; else the last display name; then one ID per sample type,
/// `__name__:type:unit:period_type:period_unit`.
fn pyroscope_profile_types(req: &Seen) -> Vec<String> {
    use prost::Message as _;
    let parts = multipart(&req.content_type, &req.body);
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(parts["profile"].1.as_slice())
        .read_to_end(&mut raw)
        .unwrap();
    let p = profiler::render::pprof::proto::Profile::decode(raw.as_slice()).unwrap();
    let config: serde_json::Value = serde_json::from_slice(&parts["sample_type_config"].1).unwrap();
    let s = |i: i64| p.string_table[i as usize].clone();
    let types: Vec<(String, String)> = p
        .sample_type
        .iter()
        .map(|t| (s(t.r#type), s(t.unit)))
        .collect();
    let mut name = String::new();
    for (ty, _) in &types {
        name = config[ty]["display-name"]
            .as_str()
            .map_or_else(|| ty.clone(), str::to_string);
        let known = [
            ("cpu", "process_cpu"),
            ("alloc_", "memory"),
            ("inuse_", "memory"),
            ("mutex_", "mutex"),
            ("block_", "block"),
            ("goroutines", "goroutines"),
        ]
        .into_iter()
        .find(|(k, _)| name.contains(k));
        if let Some((_, n)) = known {
            name = n.to_string();
            break;
        }
    }
    let period = p.period_type.as_ref().unwrap();
    types
        .iter()
        .map(|(ty, unit)| format!("{name}:{ty}:{unit}:{}:{}", s(period.r#type), s(period.unit)))
        .collect()
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
