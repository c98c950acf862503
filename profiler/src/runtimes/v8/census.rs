//! A census of the async functions suspended in a Node process, read from V8's heap
//! from outside, without stopping it.
//!
//! Two passes over the heap's memory, read through a closure (`/proc/PID/mem` in
//! production, a recorded image in tests):
//! 1. the maps of `JSAsyncFunctionObject` and `JSAsyncGeneratorObject`: words whose
//!    instance-type field holds one of those types, kept once their map is a map;
//! 2. the objects: words equal to one of those maps.
//!
//! Then each object is read and checked ([`AsyncReader::suspended`]), named (function,
//! script, parked line), linked to the suspended call that awaits it, and counted.
//! The heap moves while it is read: whatever fails a check is counted, never named,
//! and the counts are approximate. A garbage collection during a scan (V8 compacts
//! its heap a few seconds after a process goes quiet, which is when a hang forms)
//! leaves promises where they no longer are, and the chains fall apart; so
//! [`take_settled`] scans again until a scan agrees with an earlier one. The scan is
//! bounded in bytes and time and says when it was cut.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;
use std::time::{Duration, Instant};

use super::async_objects::{AsyncKind, AsyncLayout, AsyncReader, Rejected, SuspendedCall};
use super::heap::{Heap, SfiKey};
use super::metadata::Layout;

/// Bytes read per call when scanning.
const CHUNK: usize = 1 << 20;
/// Maps of async objects kept; more is not a heap we understand.
const MAX_MAPS: usize = 64;
/// Candidate objects checked at most.
const MAX_CANDIDATES: usize = 1 << 20;
/// Longest await chain followed.
const MAX_CHAIN: usize = 64;
/// Scans of one census at most: it is kept once a scan agrees with an earlier one.
pub const MAX_SCANS: u32 = 3;

/// How much of the heap a census may read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanLimits {
    /// Heap bytes scanned at most (each pass reads them once).
    pub max_bytes: u64,
    pub max_time: Duration,
}

impl Default for ScanLimits {
    fn default() -> Self {
        Self {
            max_bytes: 1 << 30,
            max_time: Duration::from_secs(5),
        }
    }
}

/// One async function as the census names it.
#[derive(
    Clone,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct AsyncFrame {
    /// The function's name; `(anonymous)` for an anonymous one.
    pub function: String,
    /// Its script's name (a path or URL), when it has one.
    pub script: Option<String>,
    /// 1-based line where the call is parked (its `await`), else where the function
    /// starts (`parked` false).
    pub line: Option<u32>,
    pub parked: bool,
}

/// Suspended calls of one (function, line).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AsyncGroup {
    #[serde(flatten)]
    pub frame: AsyncFrame,
    pub kind: AsyncKind,
    pub count: u64,
}

/// Suspended calls that await one another, outermost first: each frame awaits the
/// next; the last awaits something that is not an async function (a pool, a timer,
/// a socket).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AsyncChain {
    pub frames: Vec<AsyncFrame>,
    pub count: u64,
}

/// What one census found, and what it cost.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AsyncCensus {
    /// Suspended calls counted (approximate: the heap moved while it was read).
    pub suspended: u64,
    /// Largest count first.
    pub groups: Vec<AsyncGroup>,
    /// Largest count first.
    pub chains: Vec<AsyncChain>,
    /// Words that looked like async objects and failed a check (moved, freed, or not
    /// objects at all): not counted.
    pub failed_checks: u64,
    /// Suspended calls whose function could not be named: counted in `suspended`,
    /// left out of groups and chains.
    pub unnamed: u64,
    /// Async objects that were running or finished (garbage not yet collected).
    pub not_suspended: u64,
    /// Of the named calls, those whose parked line was not known (shown at the
    /// function's first line).
    pub start_lines: u64,
    /// Maps of async objects found.
    pub maps: u64,
    /// Resident heap bytes to scan, and how many were scanned (per pass).
    pub heap_bytes: u64,
    pub scanned_bytes: u64,
    pub scan_ms: u64,
    /// Why the scan stopped early, if it did.
    pub cut: Option<String>,
    /// Scans taken ([`take_settled`]), and whether the last agreed with an earlier
    /// one: if not, the heap kept moving and the last scan is shown.
    #[serde(default)]
    pub scans: u32,
    #[serde(default)]
    pub settled: bool,
}

impl AsyncCensus {
    /// Whether two scans found the same suspended calls in the same chains.
    pub fn agrees_with(&self, other: &AsyncCensus) -> bool {
        self.suspended == other.suspended
            && self.groups == other.groups
            && self.chains == other.chains
    }
}

/// The reading budget shared by both passes.
struct Budget {
    started: Instant,
    limits: ScanLimits,
    scanned: u64,
    cut: Option<String>,
}

impl Budget {
    fn exhausted(&mut self, deadline: Duration) -> bool {
        if self.cut.is_some() {
            return true;
        }
        if self.started.elapsed() > deadline {
            self.cut = Some(format!(
                "time bound {:.1} s reached",
                self.limits.max_time.as_secs_f64()
            ));
        }
        self.cut.is_some()
    }
}

/// Feed the 8-byte words of `ranges` (objects start at 8-byte boundaries) to `visit`
/// in chunks that overlap by `overlap` words (so a field read at a fixed offset from a
/// word is never split), until `deadline` or the byte bound. Counts bytes scanned in
/// the first pass only (`count`).
fn scan_pass(
    ranges: &[Range<u64>],
    read: &mut dyn FnMut(u64, &mut [u8]) -> bool,
    budget: &mut Budget,
    deadline: Duration,
    count: bool,
    overlap: usize,
    visit: &mut dyn FnMut(u64, &[u64]),
) {
    let mut words = vec![0u64; CHUNK / 8];
    let mut left = budget.limits.max_bytes;
    'ranges: for r in ranges {
        let mut at = r.start.next_multiple_of(8);
        let end = r.end & !7;
        while at < end {
            if budget.exhausted(deadline) {
                break 'ranges;
            }
            let n = usize::try_from((end - at) / 8)
                .unwrap_or(words.len())
                .min(words.len());
            if (n as u64 * 8) > left {
                budget.cut = Some(format!(
                    "byte bound {} MiB reached",
                    budget.limits.max_bytes >> 20
                ));
                break 'ranges;
            }
            let chunk = &mut words[..n];
            // SAFETY: the bytes of `n` initialised u64s; every byte pattern is a valid u64.
            let bytes =
                unsafe { std::slice::from_raw_parts_mut(chunk.as_mut_ptr().cast::<u8>(), n * 8) };
            if read(at, bytes) {
                for w in chunk.iter_mut() {
                    *w = u64::from_le(*w);
                }
                visit(at, chunk);
            }
            let step = if at + n as u64 * 8 >= end {
                n
            } else {
                n.saturating_sub(overlap).max(1)
            };
            left -= step as u64 * 8;
            if count {
                budget.scanned += step as u64 * 8;
            }
            at += step as u64 * 8;
        }
    }
}

/// Take a census by `scan` (one scan within the limits it is given) until a scan
/// agrees with an earlier one, [`MAX_SCANS`] at most, and all within
/// `limits.max_time`: a scan is only started if one more as long as the average still
/// fits. `scan_ms` is the time of all scans. A scan cut by its bounds is not
/// repeated; if a later scan is cut, the last whole one is kept.
pub fn take_settled(
    limits: ScanLimits,
    mut scan: impl FnMut(ScanLimits) -> AsyncCensus,
) -> AsyncCensus {
    let started = Instant::now();
    let mut earlier: Vec<AsyncCensus> = Vec::new();
    for n in 1..=MAX_SCANS {
        let left = limits.max_time.saturating_sub(started.elapsed());
        let mut c = scan(ScanLimits {
            max_time: left,
            ..limits
        });
        c.scans = n;
        c.scan_ms = started.elapsed().as_millis() as u64;
        if c.cut.is_some() {
            return match earlier.pop() {
                Some(prev) => AsyncCensus {
                    scans: n,
                    scan_ms: c.scan_ms,
                    ..prev
                },
                None => c,
            };
        }
        if earlier.iter().any(|e| e.agrees_with(&c)) {
            c.settled = true;
            return c;
        }
        if started.elapsed() + started.elapsed() / n > limits.max_time {
            return c;
        }
        earlier.push(c);
    }
    earlier.pop().unwrap_or_default()
}

/// Take the census of the heap in `ranges` (readable memory of the process, resident
/// parts only where known), read through `read`.
pub fn take(
    layout: &Layout,
    async_layout: &AsyncLayout,
    ranges: &[Range<u64>],
    read: &mut dyn FnMut(u64, &mut [u8]) -> bool,
    limits: ScanLimits,
) -> AsyncCensus {
    let mut budget = Budget {
        started: Instant::now(),
        limits,
        scanned: 0,
        cut: None,
    };
    let mut census = AsyncCensus {
        heap_bytes: ranges.iter().map(|r| r.end - r.start).sum(),
        ..Default::default()
    };
    // A map's instance type is a u16 `type_word` words after its start, `type_shift`
    // bits into that word.
    let type_at = layout.map_instance_type as usize;
    let (type_word, type_shift) = (type_at / 8, (type_at % 8) * 8);
    let wanted = [
        Some(async_layout.async_function_type),
        async_layout.async_generator_type,
    ];
    let (want_a, want_b) = (
        async_layout.async_function_type,
        async_layout
            .async_generator_type
            .unwrap_or(async_layout.async_function_type),
    );
    // Pass 1: maps (the instance type at its offset, a tagged map word at the start).
    let mut candidate_maps = BTreeSet::new();
    if type_shift <= 48 {
        scan_pass(
            ranges,
            read,
            &mut budget,
            limits.max_time / 2,
            true,
            type_word + 1,
            &mut |base, words| {
                for k in type_word..words.len() {
                    let ty = (words[k] >> type_shift) as u16;
                    if ty != want_a && ty != want_b {
                        continue;
                    }
                    let start = k - type_word;
                    if layout.tagging.is_heap_object(words[start])
                        && candidate_maps.len() < MAX_CANDIDATES
                    {
                        candidate_maps.insert(base + 8 * start as u64);
                    }
                }
            },
        );
    }
    let maps = checked_maps(layout, read, candidate_maps, &wanted);
    census.maps = maps.len() as u64;
    // Pass 2: the objects (words equal to one of the maps).
    let mut candidates = BTreeSet::new();
    if let (Some(&lo), Some(&hi)) = (maps.iter().min(), maps.iter().max()) {
        scan_pass(
            ranges,
            read,
            &mut budget,
            limits.max_time,
            false,
            0,
            &mut |base, words| {
                for (i, &w) in words.iter().enumerate() {
                    if w >= lo && w <= hi && maps.contains(&w) && candidates.len() < MAX_CANDIDATES
                    {
                        candidates.insert(base + 8 * i as u64);
                    }
                }
            },
        );
    }
    let calls = check_candidates(layout, async_layout, read, &candidates, &mut census);
    name_and_link(layout, async_layout, read, &calls, &mut census);
    census.scanned_bytes = budget.scanned;
    census.cut = budget.cut;
    census.scan_ms = budget.started.elapsed().as_millis() as u64;
    census
}

/// The candidate maps that are maps (their own map has the map type) of a wanted
/// instance type, tagged.
fn checked_maps(
    layout: &Layout,
    read: &mut dyn FnMut(u64, &mut [u8]) -> bool,
    candidates: BTreeSet<u64>,
    wanted: &[Option<u16>],
) -> Vec<u64> {
    let mut heap = Heap::new(layout, |a: u64, b: &mut [u8]| read(a, b));
    let tag = layout.tagging.heap_object_tag;
    candidates
        .into_iter()
        .filter(|&m| {
            heap.object(m | tag)
                .is_ok_and(|(_, t)| t == layout.map_type)
                && heap
                    .u64_at(m + layout.map_instance_type)
                    .is_ok_and(|v| wanted.contains(&Some(v as u16)))
        })
        .map(|m| m | tag)
        .take(MAX_MAPS)
        .collect()
}

/// Read and check every candidate; the suspended calls, by address.
fn check_candidates(
    layout: &Layout,
    async_layout: &AsyncLayout,
    read: &mut dyn FnMut(u64, &mut [u8]) -> bool,
    candidates: &BTreeSet<u64>,
    census: &mut AsyncCensus,
) -> BTreeMap<u64, SuspendedCall> {
    let reader = AsyncReader {
        layout: async_layout,
    };
    let mut heap = Heap::new(layout, |a: u64, b: &mut [u8]| read(a, b));
    let mut calls = BTreeMap::new();
    for &addr in candidates {
        match reader.suspended(&mut heap, addr) {
            Ok(call) => {
                calls.insert(call.addr, call);
            }
            Err(Rejected::NotSuspended) => census.not_suspended += 1,
            Err(Rejected::Check(_)) => census.failed_checks += 1,
        }
    }
    census.suspended = calls.len() as u64;
    calls
}

/// Name every suspended call, find who awaits it, and fill groups and chains.
fn name_and_link(
    layout: &Layout,
    async_layout: &AsyncLayout,
    read: &mut dyn FnMut(u64, &mut [u8]) -> bool,
    calls: &BTreeMap<u64, SuspendedCall>,
    census: &mut AsyncCensus,
) {
    let reader = AsyncReader {
        layout: async_layout,
    };
    let mut heap = Heap::new(layout, |a: u64, b: &mut [u8]| read(a, b));
    let mut infos: HashMap<SfiKey, Option<super::heap::FunctionInfo>> = HashMap::new();
    let mut lines: HashMap<(SfiKey, Option<i64>), AsyncFrame> = HashMap::new();
    let mut frames: BTreeMap<u64, AsyncFrame> = BTreeMap::new();
    for call in calls.values() {
        let key = heap
            .function_shared(call.function)
            .and_then(|sfi| heap.sfi_key(sfi));
        let Ok(key) = key else {
            census.unnamed += 1;
            continue;
        };
        if let Some(frame) = lines.get(&(key, call.resume_at)) {
            frames.insert(call.addr, frame.clone());
            continue;
        }
        let info = infos
            .entry(key)
            .or_insert_with(|| heap.function_info(key).ok())
            .clone();
        let Some(info) = info else {
            census.unnamed += 1;
            continue;
        };
        let parked = reader
            .parked_position(&mut heap, call)
            .and_then(|pos| heap.line_in_script(key.script, pos));
        let frame = AsyncFrame {
            function: if info.name.is_empty() {
                "(anonymous)".into()
            } else {
                info.name.clone()
            },
            script: info.script.clone(),
            line: parked.or(info.line),
            parked: parked.is_some(),
        };
        lines.insert((key, call.resume_at), frame.clone());
        frames.insert(call.addr, frame);
    }
    census.start_lines = frames.values().filter(|f| !f.parked).count() as u64;

    let mut groups: BTreeMap<(AsyncFrame, AsyncKind), u64> = BTreeMap::new();
    for (addr, frame) in &frames {
        *groups.entry((frame.clone(), calls[addr].kind)).or_default() += 1;
    }
    census.groups = groups
        .into_iter()
        .map(|((frame, kind), count)| AsyncGroup { frame, kind, count })
        .collect();
    census
        .groups
        .sort_by(|a, b| b.count.cmp(&a.count).then(a.frame.cmp(&b.frame)));

    // Who awaits whom: the first named suspended call among a promise's awaiters.
    let known = |a: u64| frames.contains_key(&a);
    let mut awaited_by: BTreeMap<u64, u64> = BTreeMap::new();
    for (addr, call) in calls {
        let Some(promise) = call.promise.filter(|_| frames.contains_key(addr)) else {
            continue;
        };
        if let Some(&outer) = reader
            .awaiters(&mut heap, promise, &known)
            .iter()
            .find(|&&o| o != *addr)
        {
            awaited_by.insert(*addr, outer);
        }
    }
    census.chains = chains(&frames, &awaited_by);
}

/// Chains from each innermost call (one that no other awaits) out to the outermost,
/// grouped by their frames.
fn chains(frames: &BTreeMap<u64, AsyncFrame>, awaited_by: &BTreeMap<u64, u64>) -> Vec<AsyncChain> {
    let awaiting: BTreeSet<u64> = awaited_by.values().copied().collect();
    let mut counted: BTreeMap<Vec<AsyncFrame>, u64> = BTreeMap::new();
    for &leaf in frames.keys().filter(|a| !awaiting.contains(a)) {
        let mut path = vec![leaf];
        let mut at = leaf;
        while let Some(&outer) = awaited_by.get(&at) {
            if path.contains(&outer) || path.len() >= MAX_CHAIN {
                break;
            }
            path.push(outer);
            at = outer;
        }
        let chain: Vec<AsyncFrame> = path.iter().rev().map(|a| frames[a].clone()).collect();
        *counted.entry(chain).or_default() += 1;
    }
    let mut out: Vec<AsyncChain> = counted
        .into_iter()
        .map(|(frames, count)| AsyncChain { frames, count })
        .collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then(a.frames.cmp(&b.frames)));
    out
}
