//! Tests of the census over a recorded heap image of a live Debian Node 20 process
//! (`tests/data/v8/node20-async.image`): known suspended calls, then the same image
//! with objects moved, freed or corrupted.
use std::path::{Path, PathBuf};

use super::async_objects::AsyncLayout;
use super::census::{take, take_settled, AsyncCensus, ScanLimits, MAX_SCANS};
use super::image::MemoryImage;
use super::metadata::{Layout, Symbols};

/// The script the image was recorded from: three orders each waiting for a second
/// pool slot that never comes, and two health checks waiting on a long timer.
const SCRIPT: &str = "'use strict';
const never = new Promise(() => {});
async function acquireSecond(i) {
  const slot = await never;
  return slot + i;
}
async function handleOrder(i) {
  const first = i;
  return first + (await acquireSecond(i));
}
async function healthCheck() {
  await new Promise((resolve) => setTimeout(resolve, 1e9));
}
for (let i = 0; i < 3; i++) handleOrder(i);
healthCheck();
healthCheck();
process.stdout.write('ready\\n');
";

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/v8")
}

fn node20() -> (Layout, AsyncLayout) {
    let symbols =
        Symbols::parse_text(&std::fs::read_to_string(data_dir().join("node20.symbols")).unwrap());
    let layout = Layout::from_symbols(&symbols).unwrap();
    let async_layout = AsyncLayout::from_symbols(&symbols, &layout).unwrap();
    (layout, async_layout)
}

fn image() -> MemoryImage {
    MemoryImage::parse(&std::fs::read_to_string(data_dir().join("node20-async.image")).unwrap())
}

/// The census of an image, scanning every recorded chunk.
fn census_of(img: &MemoryImage) -> AsyncCensus {
    let (layout, async_layout) = node20();
    let ranges: Vec<_> = img
        .chunks
        .iter()
        .map(|(&a, b)| a..a + b.len() as u64)
        .collect();
    take(
        &layout,
        &async_layout,
        &ranges,
        &mut |a, b| img.read(a, b),
        ScanLimits::default(),
    )
}

/// `function@line × count` of each group, for compact assertions.
fn groups(c: &AsyncCensus) -> Vec<String> {
    c.groups
        .iter()
        .map(|g| {
            format!(
                "{}@{} × {}",
                g.frame.function,
                g.frame.line.unwrap_or(0),
                g.count
            )
        })
        .collect()
}

/// Check the census of the recorded heap: 3 × handleOrder parked on line 9, 3 ×
/// acquireSecond on line 4, 2 × healthCheck on line 12, each named with its script,
/// and the chain handleOrder → acquireSecond three times.
#[test]
fn census_names_known_suspended_calls() {
    let c = census_of(&image());
    assert_eq!(
        groups(&c),
        vec![
            "acquireSecond@4 × 3",
            "handleOrder@9 × 3",
            "healthCheck@12 × 2"
        ],
        "{c:#?}"
    );
    assert!(c.groups.iter().all(|g| g.frame.parked
        && g.frame
            .script
            .as_deref()
            .is_some_and(|s| s.ends_with("/census.js"))));
    assert_eq!((c.suspended, c.unnamed), (8, 0));
    // One word of the recorded heap looked like an async object and is not one.
    assert_eq!(c.failed_checks, 1);
    let chains: Vec<(Vec<&str>, u64)> = c
        .chains
        .iter()
        .map(|ch| {
            (
                ch.frames.iter().map(|f| f.function.as_str()).collect(),
                ch.count,
            )
        })
        .collect();
    assert_eq!(
        chains,
        vec![
            (vec!["handleOrder", "acquireSecond"], 3),
            (vec!["healthCheck"], 2)
        ]
    );
    assert!(c.cut.is_none());
}

/// Find the recorded suspended calls of `function` (untagged addresses).
fn objects_of(img: &MemoryImage, function: &str) -> Vec<u64> {
    let (layout, async_layout) = node20();
    let reader = super::async_objects::AsyncReader {
        layout: &async_layout,
    };
    let mut read = |a: u64, b: &mut [u8]| img.read(a, b);
    let mut heap = super::heap::Heap::new(&layout, &mut read);
    let mut out = Vec::new();
    for (&start, bytes) in &img.chunks {
        for i in (0..bytes.len().saturating_sub(8)).step_by(8) {
            let Ok(call) = reader.suspended(&mut heap, start + i as u64) else {
                continue;
            };
            let key = heap
                .function_shared(call.function)
                .and_then(|s| heap.sfi_key(s));
            if key
                .and_then(|k| heap.function_info(k))
                .is_ok_and(|info| info.name == function)
            {
                out.push(call.addr);
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Check that an object whose function field no longer holds a function (moved or
/// overwritten) fails its check and is counted as such, never named.
#[test]
fn corrupt_function_field_is_counted_not_named() {
    let mut img = image();
    let before = census_of(&img).failed_checks;
    let (_, a) = node20();
    let victims = objects_of(&img, "acquireSecond");
    assert_eq!(victims.len(), 3);
    // Its own promise where the function was: a real object, of the wrong type.
    let mut promise = [0u8; 8];
    assert!(img.read(victims[0] + a.promise, &mut promise));
    img.patch(victims[0] + a.function, &promise);
    let c = census_of(&img);
    assert_eq!(
        groups(&c),
        vec![
            "handleOrder@9 × 3",
            "acquireSecond@4 × 2",
            "healthCheck@12 × 2"
        ]
    );
    assert_eq!(c.failed_checks, before + 1);
    // Its awaiter now awaits nothing the census knows: a chain of its own.
    assert!(c
        .chains
        .iter()
        .any(|ch| ch.count == 1 && ch.frames.len() == 1 && ch.frames[0].function == "handleOrder"));
}

/// Check that a SharedFunctionInfo that moved (its map now has another type) leaves
/// its calls unnamed, counted, and out of the groups: never under another name.
#[test]
fn moved_shared_function_info_is_never_named_wrong() {
    let mut img = image();
    let (l, _) = node20();
    let victim = objects_of(&img, "handleOrder")[0];
    let mut word = [0u8; 8];
    assert!(img.read(victim + 24, &mut word));
    let function = u64::from_le_bytes(word);
    assert!(img.read(l.tagging.untag(function) + l.js_function_shared, &mut word));
    let sfi = u64::from_le_bytes(word);
    assert!(img.read(l.tagging.untag(sfi) + l.map, &mut word));
    let map = l.tagging.untag(u64::from_le_bytes(word));
    img.patch(map + l.map_instance_type, &l.fixed_array_type.to_le_bytes());
    let c = census_of(&img);
    // Every SharedFunctionInfo shares that map: nothing is named, nothing misnamed.
    assert!(c.groups.is_empty(), "{c:#?}");
    assert!(
        c.suspended >= 8 && c.unnamed + c.failed_checks >= 8,
        "{c:#?}"
    );
}

/// Check that a call that finished (continuation -1, garbage not yet collected) and
/// an object whose map word was overwritten (a freed or forwarded object) are not
/// counted as suspended.
#[test]
fn finished_and_overwritten_objects_are_not_counted() {
    let mut img = image();
    let (l, a) = node20();
    let checks = objects_of(&img, "healthCheck");
    assert_eq!(checks.len(), 2);
    img.patch(
        checks[0] + a.continuation,
        &((-1i64 as u64) << 32).to_le_bytes(),
    );
    img.patch(checks[1] + l.map, &0x1234_5678u64.to_le_bytes());
    let c = census_of(&img);
    assert_eq!(groups(&c), vec!["acquireSecond@4 × 3", "handleOrder@9 × 3"]);
    assert_eq!(c.not_suspended, 1);
}

/// Check that a byte bound cuts the scan and says so.
#[test]
fn byte_bound_cuts_the_scan() {
    let img = image();
    let (layout, async_layout) = node20();
    let ranges: Vec<_> = img
        .chunks
        .iter()
        .map(|(&a, b)| a..a + b.len() as u64)
        .collect();
    let c = take(
        &layout,
        &async_layout,
        &ranges,
        &mut |a, b| img.read(a, b),
        ScanLimits {
            max_bytes: 64,
            max_time: std::time::Duration::from_secs(5),
        },
    );
    assert!(
        c.cut
            .as_deref()
            .is_some_and(|w| w.starts_with("byte bound")),
        "{c:?}"
    );
    assert!(c.suspended < 8);
}

/// The image with one `acquireSecond` call's function field overwritten, as a scan
/// that ran while the collector moved it sees it.
fn moved_image() -> MemoryImage {
    let mut img = image();
    let (_, a) = node20();
    let victim = objects_of(&img, "acquireSecond")[0];
    let mut promise = [0u8; 8];
    assert!(img.read(victim + a.promise, &mut promise));
    img.patch(victim + a.function, &promise);
    img
}

/// Take a settled census whose scans see `images` in turn.
fn settled_over(images: &[&MemoryImage]) -> AsyncCensus {
    let mut next = images.iter();
    take_settled(ScanLimits::default(), |_| {
        census_of(next.next().expect("more scans than images"))
    })
}

/// Check that a scan that ran during a collection is not the one kept: the census
/// scans again until a scan agrees with an earlier one, and a quiet heap takes two.
#[test]
fn census_scans_until_two_scans_agree() {
    let (still, moved) = (image(), moved_image());
    let quiet = settled_over(&[&still, &still]);
    assert_eq!((quiet.scans, quiet.settled), (2, true));
    let c = settled_over(&[&moved, &still, &still]);
    assert_eq!((c.scans, c.settled), (3, true));
    // A scan during a collection between two that agree.
    let between = settled_over(&[&still, &moved, &still]);
    assert_eq!((between.scans, between.settled), (3, true));
    assert_eq!(between.chains, quiet.chains);
    // The still heap's census (census_names_known_suspended_calls checks it).
    assert_eq!(groups(&c), groups(&census_of(&still)));
    assert_eq!(c.chains, quiet.chains);
}

/// Check that a heap that moves under every scan gives up after [`MAX_SCANS`],
/// shows the last scan and says none agreed; and that a cut scan is not repeated.
#[test]
fn census_of_a_heap_that_keeps_moving_says_so() {
    let (still, moved) = (image(), moved_image());
    let mut other = moved_image();
    let victim = objects_of(&other, "acquireSecond")[1];
    let (_, a) = node20();
    let mut promise = [0u8; 8];
    assert!(other.read(victim + a.promise, &mut promise));
    other.patch(victim + a.function, &promise);
    let c = settled_over(&[&moved, &other, &still]);
    assert_eq!(MAX_SCANS, 3);
    assert_eq!((c.scans, c.settled), (3, false));
    assert_eq!(groups(&c)[0], "acquireSecond@4 × 3");
    let cut = take_settled(ScanLimits::default(), |_| AsyncCensus {
        cut: Some("byte bound 1 MiB reached".into()),
        ..census_of(&still)
    });
    assert_eq!((cut.scans, cut.settled), (1, false));
}

/// Record `tests/data/v8/node20-async.image` from a live `/usr/bin/node` running
/// [`SCRIPT`] (by hand: `BLESS=1 cargo test -p profiler --lib record_node20_async_image
/// -- --ignored`): the census is taken live, and every small read it makes (object
/// checks and names; the scan's own megabyte reads are left out) is kept.
#[test]
#[ignore = "records a fixture from a live node; run by hand with BLESS=1"]
fn record_node20_async_image() {
    use std::io::BufRead;
    use std::os::unix::fs::FileExt;
    let dir = std::env::temp_dir().join(format!("v8-async-image-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("census.js");
    std::fs::write(&script, SCRIPT).unwrap();
    let mut child = std::process::Command::new("/usr/bin/node")
        .arg(&script)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pid = child.id();
    let maps = crate::procfs::read_maps(pid).unwrap();
    let mappings = super::census_live::heap_mappings(&maps);
    let ranges = crate::procfs::touched_ranges(pid, &mappings).unwrap();
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let (layout, async_layout) = node20();
    let mut reads: Vec<(u64, Vec<u8>)> = Vec::new();
    let live = take(
        &layout,
        &async_layout,
        &ranges,
        &mut |a, b| {
            let ok = mem.read_exact_at(b, a).is_ok();
            if ok && b.len() <= 4096 {
                // Whole aligned 32-byte windows, so that fields read apart (a map's
                // first word and its instance type) end up in one chunk.
                let start = a & !31;
                let end = (a + b.len() as u64 + 31) & !31;
                let mut window = vec![0u8; (end - start) as usize];
                if mem.read_exact_at(&mut window, start).is_ok() {
                    reads.push((start, window));
                }
            }
            ok
        },
        ScanLimits::default(),
    );
    let _ = child.kill();
    let _ = child.wait();
    eprintln!("{live:#?}");
    let image = MemoryImage::from_reads(reads);
    assert_eq!(census_of(&image).groups, live.groups);
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(data_dir().join("node20-async.image"), image.to_text()).unwrap();
    }
}
