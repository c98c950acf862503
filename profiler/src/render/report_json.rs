//! `report.json`: the memory and wait reports with what a machine reading them needs to
//! know first: which schema and profiler wrote it, and when the window was (absolute
//! RFC 3339 times, to line a capture up with logs and dashboards).
//!
//! The verdicts carry the same words as `report.txt` (`headline`), and no number is
//! written as `-0`, which some JSON readers keep as a distinct value.
use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;

use crate::model::{Counters, MemoryReport, WaitReport};

/// Version of the document's shape. Bump it when a field is removed, renamed or changes
/// meaning; adding a field keeps it.
pub const SCHEMA_VERSION: u32 = 1;

/// What one capture's report.json is made of.
pub struct Parts<'a> {
    pub memory: Option<&'a MemoryReport>,
    pub waits: Option<&'a WaitReport>,
    pub counters: &'a Counters,
    pub window_secs: f64,
    /// Wall-clock end of the window, ns since the Unix epoch; None when unknown (a
    /// replay of an old recording): `start` and `end` are then `null`.
    pub ended_unix_ns: Option<i64>,
}

/// The whole document.
pub fn document(parts: &Parts) -> Value {
    let mut doc = Map::new();
    doc.insert("schema_version".into(), SCHEMA_VERSION.into());
    doc.insert(
        "profiler_version".into(),
        env!("CARGO_PKG_VERSION").to_string().into(),
    );
    let end = parts.ended_unix_ns;
    let start = end.map(|e| e.saturating_sub((parts.window_secs.max(0.0) * 1e9) as i64));
    doc.insert("start".into(), start.and_then(rfc3339).into());
    doc.insert("end".into(), end.and_then(rfc3339).into());
    doc.insert("window_secs".into(), parts.window_secs.into());
    if let Some(report) = parts.memory {
        doc.insert("memory".into(), super::report::json(report));
    } else {
        doc.insert("events_lost".into(), parts.counters.lost.into());
    }
    if let Some(w) = parts.waits {
        doc.insert("waits".into(), waits_json(w));
    }
    doc.insert("counters".into(), counters_json(parts.counters));
    let mut doc = Value::Object(doc);
    no_negative_zero(&mut doc);
    doc
}

/// `2026-12-03T13:00:00.123Z`: UTC, to the millisecond.
pub fn rfc3339(unix_ns: i64) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ns)).ok()?;
    let t = t.replace_millisecond(t.millisecond()).ok()?;
    t.format(&Rfc3339).ok()
}

/// The wait report, each process's verdict with its sentence from report.txt.
fn waits_json(report: &WaitReport) -> Value {
    let mut value = serde_json::to_value(report).unwrap_or(Value::Null);
    let processes = value.get_mut("processes").and_then(Value::as_array_mut);
    for (json, p) in processes.into_iter().flatten().zip(&report.processes) {
        if let Some(Value::Object(verdict)) = json.get_mut("verdict") {
            verdict.insert(
                "headline".into(),
                super::verdict::stall_line(&p.verdict).into(),
            );
        }
    }
    value
}

/// The kernel-side counters of the whole capture, whatever was recorded: what
/// `cargo xtask bench` reads to report events seen, sampled and lost.
fn counters_json(c: &Counters) -> Value {
    serde_json::json!({
        "seen": c.seen,
        "sampled": c.sampled,
        "lost": c.lost,
        "stack_read_failed": c.stack_read_failed,
        "decode_errors": c.decode_errors,
        "short_waits": c.short_waits,
        "futex_wakes": c.futex_wakes,
    })
}

/// Replace every `-0.0` (a rounding of a tiny negative, or `0.0 * -1`) with `0`.
fn no_negative_zero(v: &mut Value) {
    match v {
        Value::Number(n) if n.as_f64().is_some_and(|f| f == 0.0 && f.is_sign_negative()) => {
            *v = Value::from(0.0);
        }
        Value::Array(items) => items.iter_mut().for_each(no_negative_zero),
        Value::Object(fields) => fields.values_mut().for_each(no_negative_zero),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ProcessWaits, StallVerdict};

    fn parts<'a>(waits: Option<&'a WaitReport>, counters: &'a Counters) -> Parts<'a> {
        Parts {
            memory: None,
            waits,
            counters,
            window_secs: 2.5,
            ended_unix_ns: Some(1_764_766_800_123_456_789),
        }
    }

    /// Check the document's head: schema and profiler versions, and absolute start and
    /// end that are the window apart, in RFC 3339.
    #[test]
    fn head_has_versions_and_absolute_times() {
        let counters = Counters::default();
        let doc = document(&parts(None, &counters));
        assert_eq!(doc["schema_version"], SCHEMA_VERSION);
        assert_eq!(doc["profiler_version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(doc["start"], "2025-12-03T12:59:57.623Z");
        assert_eq!(doc["end"], "2025-12-03T13:00:00.123Z");
        let unknown = document(&Parts {
            ended_unix_ns: None,
            ..parts(None, &counters)
        });
        assert!(unknown["start"].is_null() && unknown["end"].is_null());
    }

    /// Check that a verdict in JSON says what report.txt says: `not stalled` is
    /// `not_stalled` with the report's sentence, never `progressing`.
    #[test]
    fn stall_verdict_has_the_report_words() {
        let counters = Counters::default();
        let report = WaitReport {
            processes: vec![ProcessWaits {
                pid: 7,
                comm: "api".into(),
                identity: Default::default(),
                threads: 9,
                verdict: StallVerdict::Progressing {
                    stuck: 2,
                    threads: 9,
                },
                completed: vec![],
                in_flight: vec![],
                futexes: vec![],
                observed_ns: 1,
                async_census: None,
                requests: Vec::new(),
                peers: Vec::new(),
            }],
            ..Default::default()
        };
        let doc = document(&parts(Some(&report), &counters));
        let verdict = &doc["waits"]["processes"][0]["verdict"];
        assert_eq!(verdict["verdict"], "not_stalled");
        let headline = verdict["headline"].as_str().unwrap();
        assert!(
            headline.starts_with("not stalled: 2 of 9 threads"),
            "{headline}"
        );
        assert!(!doc.to_string().contains("progressing"), "{doc}");
    }

    /// Check that negative zeros anywhere in the document are written as 0.
    #[test]
    fn negative_zero_becomes_zero() {
        let mut v = serde_json::json!({"a": -0.0, "b": [1.5, -0.0, {"c": -0.0}], "d": -2.0});
        no_negative_zero(&mut v);
        let text = v.to_string();
        assert!(!text.contains("-0"), "{text}");
        assert_eq!(v["d"], -2.0);
    }
}
