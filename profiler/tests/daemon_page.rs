//! Root test of the daemon's page: a slow leak in a memory-limited cgroup the test
//! creates (v2, or v1 where the host's memory controller is on v1), watched for ten short intervals; the page must show the process's timeline
//! (drawn by headless Chromium), the verdict word of each interval and the time-to-OOM
//! line, and each interval's report must carry the same forecast.
mod common;

use std::{path::Path, process::Command, time::Duration};

use common::{
    build_c,
    daemon::{captures, wait_for, Daemon, MemCgroup},
    require_root, scratch_dir, Workload, FP_FLAGS,
};

/// Intervals the test watches.
const INTERVALS: usize = 10;
/// The cgroup's limit: far above what the leak reaches in the test (~30 MiB).
const LIMIT: u64 = 256 << 20;

fn chromium() -> &'static str {
    ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("chromium is not installed (cargo xtask test installs it)")
}

/// Run headless Chromium on `url` with `args` (bounded by its virtual time budget).
fn run_chromium(dir: &Path, args: &[String], url: &str) -> std::process::Output {
    Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--allow-file-access-from-files",
            "--hide-scrollbars",
            "--virtual-time-budget=5000",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.join("chromium-profile").display()
        ))
        .args(args)
        .arg(url)
        .output()
        .expect("running chromium")
}

/// Draw the page's first timeline SVG onto a canvas in Chromium and count the pixels
/// of each series colour: (RSS blue, live-allocation green, stall-band light green).
fn painted(dir: &Path, index: &str) -> (u64, u64, u64) {
    let start = index.find("<svg").expect("an inline SVG in index.html");
    let end = start + index[start..].find("</svg>").expect("a closed SVG") + 6;
    std::fs::write(dir.join("timeline.svg"), &index[start..end]).unwrap();
    std::fs::write(
        dir.join("paint.html"),
        r#"<!doctype html><html><head><title>pending</title></head><body><script>
const img = new Image();
img.onerror = () => { document.title = "error"; };
img.onload = () => {
  const c = document.createElement("canvas");
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const g = c.getContext("2d");
  g.drawImage(img, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  const near = (i, r, gr, b) => Math.abs(d[i] - r) + Math.abs(d[i + 1] - gr) + Math.abs(d[i + 2] - b) < 40;
  let blue = 0, green = 0, band = 0;
  for (let i = 0; i < d.length; i += 4) {
    if (near(i, 0x1f, 0x77, 0xb4)) blue++;
    if (near(i, 0x2c, 0xa0, 0x2c)) green++;
    if (near(i, 0x98, 0xdf, 0x8a)) band++;
  }
  document.title = "painted " + blue + " " + green + " " + band;
};
img.src = "timeline.svg";
</script></body></html>"#,
    )
    .unwrap();
    let output = run_chromium(
        dir,
        &["--dump-dom".to_string()],
        &format!("file://{}", dir.join("paint.html").display()),
    );
    let dom = String::from_utf8_lossy(&output.stdout);
    let title = dom
        .split("<title>")
        .nth(1)
        .and_then(|t| t.split("</title>").next())
        .unwrap_or_default();
    eprintln!("chromium painted: {title}");
    let n: Vec<u64> = title
        .strip_prefix("painted ")
        .unwrap_or_else(|| {
            panic!(
                "the timeline did not load: {title}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        })
        .split(' ')
        .map(|v| v.parse().unwrap())
        .collect();
    (n[0], n[1], n[2])
}

/// Check that after ten 2 s intervals of a ~1 MiB/s leak in a 256 MiB cgroup, the
/// daemon's index.html shows the process's timeline (RSS, mapped, live allocations,
/// stall band) as an SVG that Chromium paints, a verdict word on every interval row
/// with LEAK among them, and a time-to-OOM line that matches the leak's rate; and that
/// the newest interval's report.txt and report.json carry the same forecast.
#[test]
#[ignore = "needs root and chromium: run with `cargo xtask test`"]
fn daemon_page_shows_timeline_verdicts_and_time_to_oom() {
    require_root();
    chromium();
    let dir = scratch_dir("daemon_page");
    let program = build_c("slow_leak.c", "dmn_slow_leak", "gcc", FP_FLAGS);
    let cgroup_name = format!("profiler-test-page-{}", std::process::id());
    let cgroup = MemCgroup::create(&cgroup_name, LIMIT);
    let v2 = cgroup.v2;
    let workload = Workload::start(&program, 90.0, &dir);
    let pid = workload.pid;
    cgroup.add(pid);
    let out = dir.join("out");
    let daemon = Daemon::start(
        &[
            "--pid",
            &pid.to_string(),
            "--allocations",
            "--interval",
            "2s",
            "--stall-threshold",
            "30s",
        ],
        &out,
    );
    workload.release();
    // Ten intervals take 20 s; a loaded machine gets three times that.
    wait_for(Duration::from_secs(60), "ten interval captures", || {
        (captures(&out, "").len() >= INTERVALS).then_some(())
    });
    let out = daemon.stop();
    drop(workload);
    drop(cgroup);

    let all = captures(&out, "");
    assert!(
        all.len() > INTERVALS,
        "ten full intervals and the one SIGTERM cut"
    );
    // A full interval says its own length, and that live memory counts from the attach.
    let full = &all[all.len() - 2];
    let text = std::fs::read_to_string(full.path.join("report.txt")).unwrap();
    let header = text.lines().next().unwrap();
    let interval: f64 = header
        .split(", interval ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no interval length in {header}"));
    assert!(
        header.starts_with("profiler daemon: ")
            && (1.0..3.5).contains(&interval)
            && header.contains("live memory counted since the probes attached"),
        "{header}"
    );
    let newest = all.last().unwrap();
    let report = std::fs::read_to_string(newest.path.join("report.txt")).unwrap();
    eprintln!("{report}");
    let line = report
        .lines()
        .find_map(|l| l.trim().strip_prefix("time to OOM: "))
        .unwrap_or_else(|| panic!("no time-to-OOM line in {}", newest.rel));
    eprintln!("time to OOM: {line}");
    assert!(
        line.starts_with("reaches its 256.0 MiB limit in ~"),
        "{line}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(newest.path.join("report.json")).unwrap())
            .unwrap();
    let process = &json["memory"]["processes"][0];
    let forecast = &process["time_to_oom"]["forecast"];
    assert_eq!(process["time_to_oom"]["line"], line);
    assert_eq!(forecast["limit_bytes"], LIMIT);
    // The host's memory controller decides: v2 memory.max, or v1 memory.limit_in_bytes
    // on a host (like the CI machines) whose memory controller is still on v1.
    let source = if v2 { "cgroup_v2" } else { "cgroup_v1" };
    assert_eq!(forecast["source"], source, "{forecast}");
    assert!(
        forecast["cgroup"].as_str().unwrap().ends_with(&cgroup_name),
        "{forecast}"
    );
    // The leak keeps 48 KiB every 50 ms: ~0.94 MiB/s.
    let rate = forecast["rate"].as_f64().unwrap() / 1048576.0;
    assert!((0.6..1.4).contains(&rate), "rate {rate} MiB/s");
    let eta = forecast["secs"].as_f64().unwrap();
    let used = forecast["used_bytes"].as_f64().unwrap();
    let expected = (LIMIT as f64 - used) / forecast["rate"].as_f64().unwrap();
    assert!((eta - expected).abs() < 1.0, "{eta} vs {expected}");
    assert!((120.0..600.0).contains(&eta), "{eta} s");
    assert!(
        forecast["earliest_secs"].as_f64().unwrap() < eta
            && eta < forecast["latest_secs"].as_f64().unwrap()
    );
    assert_eq!(
        json["memory"]["window_secs"].as_f64().map(|w| w < 4.0),
        Some(true)
    );

    let index = std::fs::read_to_string(out.join("index.html")).unwrap();
    let page_line = format!("time to OOM: dmn_slow_leak ({pid}) {line}");
    assert!(index.contains(&page_line), "no `{page_line}` in index.html");
    assert_eq!(
        index.matches("<svg").count(),
        1,
        "one process, one timeline"
    );
    assert!(!index.contains("<script"));
    // ~30 MiB of data under a 256 MiB limit: the limit is named, not drawn.
    assert!(index.contains("limit 256.0 MiB (above the scale)"));
    // A verdict word on every interval row, from the memory verdict; LEAK once the
    // trend has enough intervals.
    let rows: Vec<&str> = index.split("<tr class=\"interval\">").skip(1).collect();
    assert_eq!(rows.len(), all.len());
    for row in &rows {
        let words = row
            .split("<td class=\"verdict\">")
            .nth(1)
            .and_then(|r| r.split("</td>").next())
            .unwrap();
        assert!(!words.is_empty(), "a row without a verdict word: {row}");
    }
    assert!(
        rows[0].contains("<td class=\"verdict\">LEAK</td>"),
        "the newest interval is not a LEAK: {}",
        rows[0]
    );

    // Chromium paints the timeline: the RSS and live-allocation lines and the stall
    // band (not stalled, light green) all have pixels.
    let (blue, green, band) = painted(&dir, &index);
    assert!(
        blue > 200 && green > 200,
        "lines: {blue} blue, {green} green"
    );
    assert!(band > 2000, "stall band: {band}");
    // A screenshot of the whole page, to look at.
    let shot = dir.join("daemon-page.png");
    let output = run_chromium(
        &dir,
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1100,900".to_string(),
        ],
        &format!("file://{}", out.join("index.html").display()),
    );
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "no screenshot ({size} bytes): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("screenshot: {}", shot.display());
}
