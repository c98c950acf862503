//! A flamegraph SVG is only useful if a browser draws it: load one in headless
//! Chromium (Debian's package, installed by `cargo xtask test`) and count painted pixels.
use std::process::Command;

use profiler::render::{folded, svg};

/// Check that headless Chromium paints the memory flamegraph: the image loads, has the
/// size inferno declares, and most of the flame area is coloured.
#[test]
#[ignore = "needs Debian's chromium: run with `cargo xtask test`"]
fn memory_svg_renders_in_chromium() {
    let chromium = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("chromium is not installed (cargo xtask test installs it)");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("svg_browser");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let lines: Vec<String> = [
        "svc (1);anon mmap;main;leak_sessions;map_region 900",
        "svc (1);anon mmap;main;scratch_work;map_region 100",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(folded::parse_line(&lines[0]).unwrap().1, 900);
    let mut out = Vec::new();
    svg::flamegraph(
        &lines,
        "Memory growth: svc (1)",
        "browser check",
        "bytes",
        svg::Flavor::Memory,
        &mut out,
    )
    .unwrap();
    std::fs::write(dir.join("memory.svg"), out).unwrap();
    // The page draws the SVG onto a canvas and reports what it saw in its title.
    std::fs::write(
        dir.join("page.html"),
        r#"<!doctype html><html><head><title>pending</title></head><body><script>
const img = new Image();
img.onerror = () => { document.title = "error"; };
img.onload = () => {
  const c = document.createElement("canvas");
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const g = c.getContext("2d");
  g.drawImage(img, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  let coloured = 0;
  for (let i = 0; i < d.length; i += 4) {
    const [r, gr, b, a] = [d[i], d[i + 1], d[i + 2], d[i + 3]];
    if (a > 0 && (Math.abs(r - gr) > 30 || Math.abs(r - b) > 30)) coloured++;
  }
  document.title = "size " + c.width + "x" + c.height + " coloured " + coloured;
};
img.src = "memory.svg";
</script></body></html>"#,
    )
    .unwrap();
    let user_data = dir.join("chromium-profile");
    let output = Command::new(chromium)
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
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", user_data.display()))
        .arg(format!("file://{}", dir.join("page.html").display()))
        .output()
        .expect("running chromium");
    let dom = String::from_utf8_lossy(&output.stdout);
    let title = dom
        .split("<title>")
        .nth(1)
        .and_then(|t| t.split("</title>").next())
        .unwrap_or_else(|| {
            panic!(
                "no title in chromium's DOM: {dom}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    eprintln!("chromium saw: {title}");
    let words: Vec<&str> = title.split_whitespace().collect();
    assert_eq!(
        words.first(),
        Some(&"size"),
        "the SVG did not load: {title}"
    );
    let (w, h) = words[1].split_once('x').unwrap();
    let (w, h): (u64, u64) = (w.parse().unwrap(), h.parse().unwrap());
    let coloured: u64 = words[3].parse().unwrap();
    assert_eq!(w, 1200, "inferno's default width");
    assert!(h > 100, "height {h}");
    // Three frames per stack across the whole width: well over 5 % of the image is colour.
    assert!(
        coloured * 20 > w * h,
        "only {coloured} coloured pixels of {}",
        w * h
    );
}
