//! `DIR/index.html`: one plain page, so that a person opens one file in a browser: per
//! process a timeline of its memory and stall state across the intervals (an inline
//! SVG, [`super::timeline_svg`]) with its time-to-OOM line, then the captures, newest
//! first, with their verdict words, links to their flamegraphs and reports, and their
//! summary lines. No scripts, no external resources.
use std::{fmt::Write as _, path::Path};

use super::{
    layout::{self, CaptureKind, Found},
    timeline, timeline_svg,
};
use crate::layout::CaptureFile;

/// A capture the daemon could not write (a full disk): nothing of it is left on disk,
/// so the index is where it is told.
#[derive(Clone, Debug, PartialEq)]
pub struct FailedCapture {
    pub kind: CaptureKind,
    pub time: time::OffsetDateTime,
    pub error: String,
}

/// Render the index of `captures` and `failed` (any order; shown newest first).
pub fn render(title: &str, captures: &[Found], failed: &[FailedCapture]) -> String {
    let mut sorted: Vec<&Found> = captures.iter().collect();
    sorted.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.rel.cmp(&a.rel)));
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{t}</title>\n\
         <style>body{{font-family:sans-serif;margin:1.5em}}table{{border-collapse:collapse}}\
         td,th{{border-bottom:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}}\
         .oom td{{background:#fde2e2}}.stall td{{background:#fff3cd}}.rss td{{background:#e2ecfd}}.failed td{{color:#a00}}\
         ul{{margin:0;padding-left:1em}}.verdict{{font-weight:bold;white-space:nowrap}}\
         .oom-forecast{{color:#a00;font-weight:bold}}</style></head><body>\n<h1>{t}</h1>\n",
        t = escape(title),
    );
    timelines(&mut html, captures);
    let _ = write!(
        html,
        "<h2>Captures</h2>\n<p>{n} captures, newest first. <a href=\"{latest}/\">latest</a></p>\n\
         <table>\n<tr><th>time (UTC)</th><th>kind</th><th>verdict</th><th>files</th><th>summary</th></tr>\n",
        n = sorted.len(),
        latest = layout::LATEST,
    );
    for c in sorted {
        let kind = kind_name(c.kind);
        let _ = write!(
            html,
            "<tr class=\"{kind}\"><td><a href=\"{rel}/\">{time}</a></td><td>{kind}</td><td class=\"verdict\">{words}</td><td>",
            rel = escape(&c.rel),
            time = escape(&layout::rfc3339(c.time)[..19].replace('T', " ")),
            words = c.meta.as_ref().map(row_words).unwrap_or_default(),
        );
        match &c.meta {
            Some(meta) => {
                let links: Vec<String> = CaptureFile::LINKED
                    .iter()
                    .map(|f| f.name())
                    .filter(|f| meta.files.iter().any(|m| m == f))
                    .map(|f| format!("<a href=\"{}/{f}\">{f}</a>", escape(&c.rel)))
                    .collect();
                html.push_str(&links.join(" "));
                html.push_str("</td><td><ul>");
                for line in &meta.summary {
                    let _ = write!(html, "<li>{}</li>", escape(line));
                }
                html.push_str("</ul></td></tr>\n");
            }
            None => html.push_str("</td><td>(being written)</td></tr>\n"),
        }
    }
    let mut failed: Vec<&FailedCapture> = failed.iter().collect();
    failed.sort_by_key(|f| std::cmp::Reverse(f.time));
    for f in failed {
        let _ = writeln!(
            html,
            "<tr class=\"failed\"><td>{time}</td><td>{kind}</td><td></td><td></td><td>failed, nothing kept: {error}</td></tr>",
            time = escape(&layout::rfc3339(f.time)[..19].replace('T', " ")),
            kind = kind_name(f.kind),
            error = escape(&f.error),
        );
    }
    html.push_str("</table>\n</body></html>\n");
    html
}

/// Per process: its name, its time-to-OOM line when the newest interval has one, and
/// its timeline.
fn timelines(html: &mut String, captures: &[Found]) {
    let series = timeline::series(captures);
    if series.is_empty() {
        return;
    }
    html.push_str("<h2>Timeline</h2>\n");
    for s in &series {
        let name = escape(&format!("{} ({})", s.comm, s.pid));
        let _ = writeln!(html, "<h3>{name}</h3>");
        if let Some(f) = s.latest_forecast() {
            let _ = writeln!(
                html,
                "<p class=\"oom-forecast\">time to OOM: {name} {}</p>",
                escape(&crate::render::oom::line(f))
            );
        }
        let _ = writeln!(html, "<div>{}</div>", timeline_svg::svg(s));
    }
}

/// The verdict words of a capture, one group per process: `LEAK`, or with several
/// processes `leaky (12): LEAK · STALLED`.
fn row_words(meta: &layout::CaptureMeta) -> String {
    let groups: Vec<String> = meta
        .processes
        .iter()
        .filter_map(|p| {
            let words = timeline::verdict_words(p);
            (!words.is_empty()).then(|| {
                let words = words.join(" · ");
                if meta.processes.len() > 1 {
                    escape(&format!("{} ({}): {words}", p.comm, p.pid))
                } else {
                    words
                }
            })
        })
        .collect();
    groups.join("<br>")
}

fn kind_name(kind: CaptureKind) -> &'static str {
    match kind {
        CaptureKind::Interval => "interval",
        CaptureKind::Oom => "oom",
        CaptureKind::Stall => "stall",
        CaptureKind::Rss => "rss",
    }
}

/// Rewrite `DIR/index.html` from the captures on disk and those that failed.
pub fn write(out: &Path, title: &str, failed: &[FailedCapture]) -> std::io::Result<()> {
    let html = render(title, &layout::list_captures(out), failed);
    layout::write_atomic(&out.join(layout::INDEX), html.as_bytes())
}

/// Text made safe inside HTML and SVG elements and attributes.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::layout::CaptureMeta;
    use time::macros::datetime;

    fn found(rel: &str, kind: CaptureKind, minute: i64, summary: &str) -> Found {
        Found {
            kind,
            path: rel.into(),
            rel: rel.into(),
            time: datetime!(2026-11-24 14:00 UTC) + time::Duration::minutes(minute),
            meta: Some(CaptureMeta {
                summary: vec![summary.into()],
                files: vec!["waits.svg".into(), "memory.svg".into(), "report.txt".into()],
                ..Default::default()
            }),
        }
    }

    /// Check that captures are listed newest first with links to their files and
    /// their summary lines escaped.
    #[test]
    fn lists_newest_first_with_links() {
        let html = render(
            "profiler daemon: pid 1",
            &[
                found("2026-11-24T14-00-00Z", CaptureKind::Interval, 0, "a <b>"),
                found("oom/2026-11-24T14-01-00Z-x-5", CaptureKind::Oom, 1, "OOM"),
                found("2026-11-24T14-02-00Z", CaptureKind::Interval, 2, "c"),
            ],
            &[],
        );
        let newest = html.find("2026-11-24T14-02-00Z/memory.svg").unwrap();
        let oom = html
            .find("oom/2026-11-24T14-01-00Z-x-5/memory.svg")
            .unwrap();
        let oldest = html.find("2026-11-24T14-00-00Z/memory.svg").unwrap();
        assert!(newest < oom && oom < oldest);
        assert!(html.contains("<li>a &lt;b&gt;</li>"));
        assert!(html.contains("<tr class=\"oom\">"));
        // memory.svg is linked before waits.svg whatever order the files were listed in.
        let row = &html[newest..];
        assert!(row.find("memory.svg") < row.find("waits.svg"));
        assert!(html.contains("3 captures"));
    }

    /// Check that a capture that could not be written is listed as failed, with its error.
    #[test]
    fn lists_failed_captures() {
        let html = render(
            "profiler daemon: pid 1",
            &[],
            &[FailedCapture {
                kind: CaptureKind::Interval,
                time: datetime!(2026-11-24 14:03 UTC),
                error: "cannot write x/memory.svg: No space left on device".into(),
            }],
        );
        assert!(html.contains("<tr class=\"failed\"><td>2026-11-24 14:03:00</td><td>interval</td>"));
        assert!(html
            .contains("failed, nothing kept: cannot write x/memory.svg: No space left on device"));
    }

    /// Check that interval captures with process points give a timeline per process,
    /// the newest interval's time-to-OOM line, and a verdict word per row from the
    /// typed verdicts; a capture whose newest point has no forecast says nothing.
    #[test]
    fn timeline_verdict_words_and_time_to_oom() {
        use crate::{
            daemon::timeline::{ProcessPoint, StallState},
            model::{
                forecast::{OomForecast, Outlook},
                MemoryVerdictKind,
            },
            targets::memory_limit::{LimitSource, MemoryLimit},
        };
        let forecast = OomForecast {
            limit: MemoryLimit {
                limit_bytes: 512 << 20,
                used_bytes: 300 << 20,
                source: LimitSource::CgroupV2 {
                    cgroup: "/t".into(),
                },
            },
            rate: 1e5,
            rate_se: 1e3,
            span_secs: 30.0,
            points: 10,
            outlook: Outlook::Reaches {
                secs: 2223.0,
                earliest_secs: 2180.0,
                latest_secs: 2268.0,
            },
        };
        let with = |minute, kind, stall, oom: Option<OomForecast>| {
            let mut c = found(
                &format!("2026-11-24T14-0{minute}-00Z"),
                CaptureKind::Interval,
                minute,
                "s",
            );
            c.meta.as_mut().unwrap().processes = vec![ProcessPoint {
                pid: 7,
                comm: "leaky".into(),
                rss_bytes: Some(100 << 20),
                memory_verdict: Some(kind),
                stall: Some(stall),
                oom,
                ..Default::default()
            }];
            c
        };
        let captures = [
            with(0, MemoryVerdictKind::Growing, StallState::NotStalled, None),
            with(
                1,
                MemoryVerdictKind::Leak,
                StallState::Stalled,
                Some(forecast.clone()),
            ),
        ];
        let html = render("profiler daemon: pid 7", &captures, &[]);
        assert_eq!(html.matches("<svg").count(), 1);
        assert!(html.contains("<h3>leaky (7)</h3>"));
        assert!(html.contains(&format!(
            "time to OOM: leaky (7) {}",
            crate::render::oom::line(&forecast)
        )));
        assert!(html.contains("<td class=\"verdict\">LEAK · STALLED</td>"));
        assert!(html.contains("<td class=\"verdict\">GROWING</td>"));
        // The newest interval decides: no forecast there, no line.
        let later = with(2, MemoryVerdictKind::Leak, StallState::NotStalled, None);
        let html = render("profiler daemon: pid 7", &[captures[1].clone(), later], &[]);
        assert!(!html.contains("time to OOM"));
    }
}
