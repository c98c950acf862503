//! The fake Pyroscope of the push tests: a loopback HTTP/1.1 server that records each
//! request and answers with scripted statuses, and the parsing of what was sent
//! (query, multipart parts, the profile types Pyroscope would file it under).
use std::{
    collections::{BTreeMap, VecDeque},
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub content_type: String,
    pub authorization: Option<String>,
    pub tenant: Option<String>,
    pub body: Vec<u8>,
    pub at: Instant,
}

/// A loopback HTTP/1.1 server answering each request with the next scripted status
/// (200 once the script is empty), one request per connection.
pub struct Server {
    pub port: u16,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    pub fn start(script: &[u16]) -> Self {
        Self::start_on(TcpListener::bind("127.0.0.1:0").unwrap(), script)
    }

    pub fn start_on(listener: TcpListener, script: &[u16]) -> Self {
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

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Read one request, record it, then answer: recorded first, so a client that has its
/// response always finds its request in `Server::requests`.
pub fn handle(mut stream: TcpStream, status: u16, seen: &Mutex<Vec<Seen>>) -> Option<()> {
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

pub fn percent_decode(s: &str) -> String {
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
pub fn multipart(content_type: &str, body: &[u8]) -> BTreeMap<String, (Option<String>, Vec<u8>)> {
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

/// The profile type IDs Grafana Pyroscope files a pushed pprof under, computed as its
/// `/ingest` handler does (pkg/og/convert/pprof `metricName`): `__name__` from the
/// first sample type whose display name (from `sample_type_config`, else its own name)
/// contains `cpu` (process_cpu), `alloc_`/`inuse_` (memory), `mutex_`, `block_`,
/// `goroutines`; else the last display name; then one ID per sample type,
/// `__name__:type:unit:period_type:period_unit`.
pub fn pyroscope_profile_types(req: &Seen) -> Vec<String> {
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
