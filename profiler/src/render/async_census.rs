//! The census of suspended async functions in words and as a flamegraph: the
//! `waiting in async code:` line of the stall report and `waiting.folded`, whose
//! widths are counts of suspended calls.
use super::folded::{process_root, sanitize};
use crate::model::WaitReport;
use crate::runtimes::v8::{AsyncCensus, AsyncCensusReport, AsyncChain, AsyncFrame};

/// Chains named in the one-line summary; the rest are counted.
const CHAINS_IN_LINE: usize = 3;

/// `handleOrder (server.js:52)`: the function and where it is parked, with the
/// script's file name only.
pub fn frame_label(f: &AsyncFrame) -> String {
    let script = f
        .script
        .as_deref()
        .map(|s| s.rsplit('/').next().unwrap_or(s));
    match (script, f.line) {
        (Some(s), Some(line)) => format!("{} ({s}:{line})", f.function),
        (Some(s), None) => format!("{} ({s})", f.function),
        (None, _) => f.function.clone(),
    }
}

/// Whether a frame is the application's own code rather than a dependency's or
/// node's (`node_modules/`, `node:`).
fn is_app(f: &AsyncFrame) -> bool {
    f.script
        .as_deref()
        .is_some_and(|s| !s.contains("/node_modules/") && !s.starts_with("node:"))
}

/// A chain in a few frames: the outermost call, the innermost call of the
/// application's own code, and the innermost call of all (what waits on something
/// that is not an async function), with `…` for what is left out.
pub fn chain_summary(frames: &[AsyncFrame]) -> String {
    let Some(last) = frames.len().checked_sub(1) else {
        return String::new();
    };
    let app = (1..last).rev().find(|&i| is_app(&frames[i]));
    let keep: Vec<usize> = [Some(0), app, Some(last)].into_iter().flatten().collect();
    let mut out = String::new();
    let mut prev: Option<usize> = None;
    for i in keep {
        if prev == Some(i) {
            continue;
        }
        if let Some(p) = prev {
            out.push_str(if i == p + 1 { " → " } else { " → … → " });
        }
        out.push_str(&frame_label(&frames[i]));
        prev = Some(i);
    }
    out
}

/// Chains with the same summary, merged, largest first.
fn summarized(chains: &[AsyncChain]) -> Vec<(String, u64)> {
    let mut merged: Vec<(String, u64)> = Vec::new();
    for c in chains {
        let s = chain_summary(&c.frames);
        match merged.iter_mut().find(|(k, _)| *k == s) {
            Some((_, n)) => *n += c.count,
            None => merged.push((s, c.count)),
        }
    }
    merged.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    merged
}

/// The census in one line: `waiting in async code: 190 × handleOrder (http_server.js:19)
/// → … → query (PostgresQueryRunner.js:171) · 10 × …`, then what it cost and how sure
/// it is.
pub fn census_line(r: &AsyncCensusReport) -> String {
    let Some(c) = &r.census else {
        return r
            .note
            .clone()
            .unwrap_or_else(|| "no census of suspended async functions".into());
    };
    let chains = summarized(&c.chains);
    let mut line = if chains.is_empty() && c.cut.is_some() {
        "waiting in async code: none found in the part of the heap scanned".to_string()
    } else if chains.is_empty() {
        "waiting in async code: no suspended async functions".to_string()
    } else {
        let mut parts: Vec<String> = chains
            .iter()
            .take(CHAINS_IN_LINE)
            .map(|(s, n)| format!("{n} × {s}"))
            .collect();
        let rest: u64 = chains.iter().skip(CHAINS_IN_LINE).map(|(_, n)| n).sum();
        if rest > 0 {
            parts.push(format!("{rest} more"));
        }
        format!("waiting in async code: {}", parts.join(" · "))
    };
    line.push_str(&format!(" ({})", cost(c)));
    line
}

/// `212 suspended calls, approximate; heap 48.0 MiB scanned in 0.4 s, 2 scans agreed`,
/// and what was left out.
fn cost(c: &AsyncCensus) -> String {
    let mut s = format!(
        "{} suspended calls, approximate; heap {:.1} MiB scanned in {:.1} s",
        c.suspended,
        c.scanned_bytes as f64 / (1 << 20) as f64,
        c.scan_ms as f64 / 1000.0
    );
    match (c.scans, c.settled) {
        (2, true) => s.push_str(", 2 scans agreed"),
        (n, true) => s.push_str(&format!(", 2 of {n} scans agreed")),
        (n, false) if n > 1 && c.cut.is_none() => s.push_str(&format!(
            "; the heap kept moving: {n} scans disagreed, the last is shown"
        )),
        _ => {}
    }
    if c.unnamed > 0 {
        s.push_str(&format!("; {} unnamed", c.unnamed));
    }
    if c.failed_checks > 0 {
        s.push_str(&format!("; {} objects failed a check", c.failed_checks));
    }
    if let Some(cut) = &c.cut {
        s.push_str(&format!(
            "; cut: {cut} after {:.1} of {:.1} MiB",
            c.scanned_bytes as f64 / (1 << 20) as f64,
            c.heap_bytes as f64 / (1 << 20) as f64
        ));
    }
    s
}

/// `comm (pid);outermost;…;innermost COUNT` for every census chain.
pub fn folded_lines(report: &WaitReport) -> Vec<String> {
    let mut out = Vec::new();
    for p in &report.processes {
        let Some(c) = p.async_census.as_ref().and_then(|r| r.census.as_ref()) else {
            continue;
        };
        for chain in &c.chains {
            let mut key = process_root(&p.comm, p.pid, &p.identity);
            for f in &chain.frames {
                key.push(';');
                key.push_str(&sanitize(&frame_label(f)));
            }
            out.push(format!("{key} {}", chain.count));
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(function: &str, script: &str, line: u32) -> AsyncFrame {
        AsyncFrame {
            function: function.into(),
            script: Some(script.into()),
            line: Some(line),
            parked: true,
        }
    }

    fn hung() -> AsyncCensusReport {
        let handler = frame("handleOrder", "/srv/app/http_server.js", 19);
        let lib = "/srv/app/node_modules/typeorm/driver/postgres/PostgresQueryRunner.js";
        let chains = vec![
            AsyncChain {
                frames: vec![
                    handler.clone(),
                    frame(
                        "transaction",
                        "/srv/app/node_modules/typeorm/entity-manager/EntityManager.js",
                        69,
                    ),
                    frame("startTransaction", lib, 118),
                    frame("query", lib, 171),
                ],
                count: 190,
            },
            AsyncChain {
                frames: vec![
                    handler,
                    frame(
                        "transaction",
                        "/srv/app/node_modules/typeorm/entity-manager/EntityManager.js",
                        75,
                    ),
                    frame("insertOrder", "/srv/app/orders.js", 70),
                    frame("loadUserWithAudit", "/srv/app/orders.js", 59),
                    frame(
                        "query",
                        "/srv/app/node_modules/typeorm/data-source/DataSource.js",
                        340,
                    ),
                    frame("query", lib, 171),
                ],
                count: 10,
            },
        ];
        AsyncCensusReport {
            binary: "/usr/bin/node".into(),
            note: None,
            census: Some(AsyncCensus {
                suspended: 810,
                chains,
                scanned_bytes: 16 << 20,
                heap_bytes: 16 << 20,
                scan_ms: 420,
                failed_checks: 1,
                ..Default::default()
            }),
        }
    }

    /// Check the one-line census: the handler, the application's innermost waiting
    /// function and the innermost wait, largest chain first, with its cost.
    #[test]
    fn census_line_names_handler_and_nested_wait() {
        assert_eq!(
            census_line(&hung()),
            "waiting in async code: 190 × handleOrder (http_server.js:19) → … → query (PostgresQueryRunner.js:171) \
             · 10 × handleOrder (http_server.js:19) → … → loadUserWithAudit (orders.js:59) → … → query (PostgresQueryRunner.js:171) \
             (810 suspended calls, approximate; heap 16.0 MiB scanned in 0.4 s; 1 objects failed a check)"
        );
    }

    /// Check the line without a census (no metadata) and with nothing suspended, and
    /// that a cut scan says so.
    #[test]
    fn census_line_without_census_or_calls() {
        let none = AsyncCensusReport {
            binary: "/opt/node".into(),
            note: Some("no census of suspended async functions: no V8 metadata".into()),
            census: None,
        };
        assert_eq!(
            census_line(&none),
            "no census of suspended async functions: no V8 metadata"
        );
        let mut idle = hung();
        let c = idle.census.as_mut().unwrap();
        c.chains.clear();
        c.suspended = 0;
        c.failed_checks = 0;
        c.cut = Some("time bound 5.0 s reached".into());
        c.heap_bytes = 64 << 20;
        assert_eq!(
            census_line(&idle),
            "waiting in async code: none found in the part of the heap scanned (0 suspended calls, \
             approximate; heap 16.0 MiB scanned in 0.4 s; cut: time bound 5.0 s reached after 16.0 of 64.0 MiB)"
        );
        idle.census.as_mut().unwrap().cut = None;
        assert_eq!(
            census_line(&idle),
            "waiting in async code: no suspended async functions (0 suspended calls, approximate; \
             heap 16.0 MiB scanned in 0.4 s)"
        );
    }

    /// Check that the line says how many scans agreed, or that none did.
    #[test]
    fn census_line_says_whether_scans_agreed() {
        let mut r = hung();
        let c = r.census.as_mut().unwrap();
        c.chains.truncate(1);
        (c.scans, c.settled) = (2, true);
        let line = census_line(&r);
        assert!(
            line.ends_with("scanned in 0.4 s, 2 scans agreed; 1 objects failed a check)"),
            "{line}"
        );
        r.census.as_mut().unwrap().scans = 3;
        let line = census_line(&r);
        assert!(line.contains("0.4 s, 2 of 3 scans agreed;"), "{line}");
        r.census.as_mut().unwrap().settled = false;
        let line = census_line(&r);
        assert!(
            line.ends_with(
                "0.4 s; the heap kept moving: 3 scans disagreed, the last is shown; \
                 1 objects failed a check)"
            ),
            "{line}"
        );
    }

    /// Check the summary of short chains: adjacent frames are joined without `…`.
    #[test]
    fn short_chain_summaries() {
        let a = frame("handleOrder", "/app/census.js", 9);
        let b = frame("acquireSecond", "/app/census.js", 4);
        assert_eq!(
            chain_summary(std::slice::from_ref(&a)),
            "handleOrder (census.js:9)"
        );
        assert_eq!(
            chain_summary(&[a.clone(), b.clone()]),
            "handleOrder (census.js:9) → acquireSecond (census.js:4)"
        );
        assert_eq!(
            chain_summary(&[a, b.clone(), b]),
            "handleOrder (census.js:9) → acquireSecond (census.js:4) → acquireSecond (census.js:4)"
        );
    }
}
