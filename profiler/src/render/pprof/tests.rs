//! Encoder tests: every profile is decoded back with prost and read like a pprof
//! reader would (ids resolved through the tables).
use std::{io::Read as _, sync::Arc};

use prost::Message as _;

use super::*;
use crate::{
    model::{BlockedStack, MemoryReport, ProcessMemory, ProcessWaits, StackGrowth, WaitReport},
    render::folded,
};

/// Gunzip and decode a `.pb.gz`.
fn decode(gz: &[u8]) -> proto::Profile {
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut raw)
        .expect("gzip");
    proto::Profile::decode(raw.as_slice()).expect("profile.proto")
}

fn string(p: &proto::Profile, i: i64) -> &str {
    &p.string_table[usize::try_from(i).unwrap()]
}

/// Function names of a sample's stack, leaf first, inlined lines expanded.
fn stack_names(p: &proto::Profile, s: &proto::Sample) -> Vec<String> {
    s.location_id
        .iter()
        .flat_map(|id| {
            let loc = p.location.iter().find(|l| l.id == *id).expect("location");
            loc.line.iter().map(|line| {
                let f = p
                    .function
                    .iter()
                    .find(|f| f.id == line.function_id)
                    .expect("function");
                string(p, f.name).to_owned()
            })
        })
        .collect()
}

fn label(p: &proto::Profile, s: &proto::Sample, key: &str) -> Option<String> {
    s.label
        .iter()
        .find(|l| string(p, l.key) == key)
        .map(|l| string(p, l.str).to_owned())
}

fn app_module() -> Arc<ModuleMapping> {
    Arc::new(ModuleMapping {
        start: 0x40_0000,
        limit: 0x50_0000,
        offset: 0x1000,
        path: "/usr/bin/app".into(),
        build_id: Some("deadbeef".into()),
    })
}

fn located(addr: u64, names: &[(&str, u32)]) -> CodeLocation {
    CodeLocation {
        address: addr,
        module: Some(app_module()),
        lines: names
            .iter()
            .map(|(n, line)| CodeLine {
                function: (*n).into(),
                file: Some("/src/app.c".into()),
                line: Some(*line),
            })
            .collect(),
    }
}

/// Check that a model survives encode → gzip → decode: header fields, string table
/// starting with "", stacks leaf first with inlined functions innermost first,
/// mappings with build ID, locations and functions interned once, labels.
#[test]
fn round_trips_through_prost() {
    let main = located(0x40_1000, &[("main", 20)]);
    let inl = located(0x40_2000, &[("handle", 30), ("parse", 7)]);
    let model = ProfileModel {
        sample_types: vec![
            ValueKind::new("inuse_space", "bytes"),
            ValueKind::new("inuse_objects", "count"),
        ],
        default_sample_type: Some("inuse_space".into()),
        period_type: ValueKind::new("space", "bytes"),
        period: 262_144,
        time_nanos: 1_700_000_000_000_000_000,
        duration_nanos: 30_000_000_000,
        comments: vec!["hello".into()],
        samples: vec![
            ProfileSample {
                stack: vec![main.clone(), inl.clone()],
                values: vec![4096, 1],
                labels: vec![
                    Label::str("pid", "42"),
                    Label {
                        key: "size".into(),
                        value: LabelValue::Num {
                            value: 4096,
                            unit: Some("bytes".into()),
                        },
                    },
                ],
            },
            ProfileSample {
                stack: vec![main, CodeLocation::named("[unknown] 0x7")],
                values: vec![8192, 2],
                labels: vec![Label::str("pid", "43")],
            },
        ],
    };
    let p = decode(&to_gzip(&model).unwrap());
    assert_eq!(p.string_table[0], "");
    let types: Vec<(&str, &str)> = p
        .sample_type
        .iter()
        .map(|v| (string(&p, v.r#type), string(&p, v.unit)))
        .collect();
    assert_eq!(
        types,
        [("inuse_space", "bytes"), ("inuse_objects", "count")]
    );
    assert_eq!(string(&p, p.default_sample_type), "inuse_space");
    let period_type = p.period_type.unwrap();
    assert_eq!(string(&p, period_type.r#type), "space");
    assert_eq!(p.period, 262_144);
    assert_eq!(p.time_nanos, 1_700_000_000_000_000_000);
    assert_eq!(p.duration_nanos, 30_000_000_000);
    assert_eq!(string(&p, p.comment[0]), "hello");

    assert_eq!(p.sample.len(), 2);
    assert_eq!(stack_names(&p, &p.sample[0]), ["parse", "handle", "main"]);
    assert_eq!(stack_names(&p, &p.sample[1]), ["[unknown] 0x7", "main"]);
    assert_eq!(p.sample[0].value, [4096, 1]);
    assert_eq!(label(&p, &p.sample[0], "pid").as_deref(), Some("42"));
    let size = p.sample[0].label.iter().find(|l| l.num != 0).unwrap();
    assert_eq!((size.num, string(&p, size.num_unit)), (4096, "bytes"));
    // `main` is one location shared by both samples; 3 locations, 4 functions.
    assert_eq!(
        p.sample[0].location_id.last(),
        p.sample[1].location_id.last()
    );
    assert_eq!(p.location.len(), 3);
    assert_eq!(p.function.len(), 4);

    assert_eq!(p.mapping.len(), 1, "one mapping, interned");
    let m = &p.mapping[0];
    assert_eq!(
        (m.id, m.memory_start, m.memory_limit, m.file_offset),
        (1, 0x40_0000, 0x50_0000, 0x1000)
    );
    assert_eq!(string(&p, m.filename), "/usr/bin/app");
    assert_eq!(string(&p, m.build_id), "deadbeef");
    assert!(m.has_functions && m.has_filenames && m.has_line_numbers && m.has_inline_frames);
    let inlined = p.location.iter().find(|l| l.address == 0x40_2000).unwrap();
    assert_eq!(inlined.mapping_id, 1);
    assert_eq!(
        inlined.line.iter().map(|l| l.line).collect::<Vec<_>>(),
        [7, 30]
    );
    let unknown = p.location.iter().find(|l| l.address == 0).unwrap();
    assert_eq!(unknown.mapping_id, 0, "no mapping for a name-only frame");
    let f = p
        .function
        .iter()
        .find(|f| string(&p, f.name) == "parse")
        .unwrap();
    assert_eq!(string(&p, f.filename), "/src/app.c");
    // Every id is non-zero and unique, as pprof requires.
    let mut ids: Vec<u64> = p.location.iter().map(|l| l.id).collect();
    ids.dedup();
    assert_eq!(ids, [1, 2, 3]);
}

fn growth(
    kind: crate::ledger::RegionKind,
    frames: &[&str],
    bytes: f64,
    objects: f64,
) -> StackGrowth {
    StackGrowth {
        kind,
        frames: frames.iter().map(|f| (*f).to_string()).collect(),
        bytes,
        objects,
        locations: Vec::new(),
    }
}

fn folded_total(lines: &[String]) -> u64 {
    lines
        .iter()
        .filter_map(|l| folded::parse_line(l))
        .map(|(_, n)| n)
        .sum()
}

/// Check that the memory profile has the folded totals, per line and overall, even
/// when one folded line merges fractional estimates of several stacks, and that the
/// folded root frames became labels.
#[test]
fn memory_profile_totals_equal_folded() {
    let report = MemoryReport {
        target: "pid 7".into(),
        sample_bytes: 1000,
        processes: vec![ProcessMemory {
            pid: 7,
            comm: "svc".into(),
            growth: vec![
                growth(
                    crate::ledger::RegionKind::Anon,
                    &["main", "leak"],
                    1000.4,
                    1.2,
                ),
                growth(
                    crate::ledger::RegionKind::Anon,
                    &["main", "leak"],
                    1000.4,
                    1.2,
                ),
                growth(
                    crate::ledger::RegionKind::Anon,
                    &["main", "leak"],
                    1000.4,
                    1.2,
                ),
                growth(crate::ledger::RegionKind::Heap, &["main"], 0.3, 0.1),
                growth(
                    crate::ledger::RegionKind::Heap,
                    &["main", "grow"],
                    5000.0,
                    2.0,
                ),
            ],
            ..Default::default()
        }],
        ..Default::default()
    };
    let lines = folded::memory_lines(&report);
    let p = decode(&to_gzip(&memory_profile(&report, &CaptureMeta::default())).unwrap());
    let total: i64 = p.sample.iter().map(|s| s.value[0]).sum();
    assert_eq!(total as u64, folded_total(&lines));
    assert_eq!(total, 3001 + 5000);
    let objects: i64 = p.sample.iter().map(|s| s.value[1]).sum();
    assert_eq!(objects, 4 + 2);
    assert!(p.sample.iter().all(|s| s.value[0] > 0 || s.value[1] > 0));
    let grow = p
        .sample
        .iter()
        .find(|s| stack_names(&p, s) == ["grow", "main"])
        .unwrap();
    assert_eq!(label(&p, grow, "region").as_deref(), Some("brk heap"));
    assert_eq!(label(&p, grow, "comm").as_deref(), Some("svc"));
    assert_eq!(label(&p, grow, "pid").as_deref(), Some("7"));
}

/// Check that the wait profile carries blocked ns and counts of completed and
/// in-progress waits, their kind and state as labels, and that its total matches
/// waits.folded's microseconds.
#[test]
fn waits_profile_matches_folded() {
    use crate::model::{StallVerdict, WaitGroup};
    let report = WaitReport {
        threshold_ns: 1_000_000,
        processes: vec![ProcessWaits {
            pid: 9,
            comm: "pool".into(),
            identity: Default::default(),
            threads: 3,
            verdict: StallVerdict::Exited,
            completed: vec![
                BlockedStack {
                    kind: "socket 127.0.0.1:5432".into(),
                    on: "recvfrom on socket 127.0.0.1:5432".into(),
                    frames: vec!["main".into(), "query".into()],
                    ns: 2_500_300,
                    count: 2,
                    ..Default::default()
                },
                BlockedStack {
                    kind: "futex".into(),
                    on: "futex 0x20".into(),
                    ns: 7_000,
                    count: 1,
                    ..Default::default()
                },
            ],
            in_flight: vec![WaitGroup {
                on: "futex 0x10".into(),
                kind: "futex".into(),
                tids: vec![10, 11],
                blocked_at_least_ns: 9_000_000_000,
                wakes: Some(0),
                stuck: true,
                frame_below_lock: None,
                stack: vec!["main".into(), "lock".into()],
                locations: Vec::new(),
            }],
            futexes: Vec::new(),
            observed_ns: 5_000_000_000,
            async_census: None,
            requests: Vec::new(),
            peers: Vec::new(),
        }],
        ..Default::default()
    };
    let p = decode(&to_gzip(&waits_profile(&report, &CaptureMeta::default())).unwrap());
    let ns: i64 = p.sample.iter().map(|s| s.value[0]).sum();
    assert_eq!(ns, 2_500_300 + 7_000 + 2 * 5_000_000_000);
    let us = folded_total(&super::super::waits::folded_lines(&report));
    assert_eq!(ns as u64 / 1000, us);
    let counts: i64 = p.sample.iter().map(|s| s.value[1]).sum();
    assert_eq!(counts, 2 + 1 + 2);
    assert!(
        p.sample
            .iter()
            .any(|s| stack_names(&p, s) == [views::NO_STACK]),
        "a wait without a stack keeps its time under a placeholder frame"
    );
    let stuck = p
        .sample
        .iter()
        .find(|s| label(&p, s, "state").as_deref() == Some("in progress"))
        .unwrap();
    assert_eq!(stack_names(&p, stuck), ["lock", "main"]);
    assert_eq!(label(&p, stuck, "wait").as_deref(), Some("futex"));
    let socket = p
        .sample
        .iter()
        .find(|s| label(&p, s, "state").as_deref() == Some("completed"))
        .unwrap();
    assert_eq!(stack_names(&p, socket), ["query", "main"]);
    assert_eq!(string(&p, p.sample_type[0].unit), "nanoseconds");
}

/// Check that the allocations profile has allocations.folded's totals (bytes) and the
/// estimated block counts, merged stacks rounded per folded line.
#[test]
fn allocations_profile_totals_equal_folded() {
    use crate::model::{AllocGrowth, AllocationView};
    let row = |frames: &[&str], bytes: f64, objects: f64| AllocGrowth {
        frames: frames.iter().map(|f| (*f).to_string()).collect(),
        bytes,
        objects,
        ..Default::default()
    };
    let report = MemoryReport {
        sample_bytes: 512,
        processes: vec![ProcessMemory {
            pid: 5,
            comm: "cache".into(),
            allocations: Some(AllocationView {
                growth: vec![
                    row(&["main", "insert"], 1000.5, 10.4),
                    row(&["main", "insert"], 1000.5, 10.4),
                    row(&["main", "other"], 300.2, 0.6),
                ],
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let lines = folded::allocation_lines(&report, folded::Half::Whole);
    let p = decode(&to_gzip(&allocations_profile(&report, &CaptureMeta::default())).unwrap());
    let total: i64 = p.sample.iter().map(|s| s.value[0]).sum();
    assert_eq!(total as u64, folded_total(&lines));
    assert_eq!(total, 2001 + 300);
    let objects: i64 = p.sample.iter().map(|s| s.value[1]).sum();
    assert_eq!(objects, 21 + 1);
    let insert = p
        .sample
        .iter()
        .find(|s| stack_names(&p, s) == ["insert", "main"])
        .unwrap();
    assert_eq!(label(&p, insert, "comm").as_deref(), Some("cache"));
    assert_eq!(string(&p, p.sample_type[1].r#type), "inuse_objects");
}

/// Check that the executable's mapping comes first (pprof's main binary) even when
/// the first location reached is in a shared library.
#[test]
fn executable_mapping_comes_first() {
    let module = |path: &str, start: u64| {
        Arc::new(ModuleMapping {
            start,
            limit: start + 0x1000,
            offset: 0,
            path: path.into(),
            build_id: None,
        })
    };
    let at = |m: &Arc<ModuleMapping>, name: &str| CodeLocation {
        address: m.start + 1,
        module: Some(Arc::clone(m)),
        lines: vec![CodeLine {
            function: name.into(),
            file: None,
            line: None,
        }],
    };
    let libc = module("/usr/lib/x86_64-linux-gnu/libc.so.6", 0x7f00_0000);
    let app = module("/usr/bin/app", 0x40_0000);
    let model = ProfileModel {
        sample_types: vec![ValueKind::new("blocked", "nanoseconds")],
        default_sample_type: None,
        period_type: ValueKind::new("blocked", "nanoseconds"),
        period: 1,
        time_nanos: 0,
        duration_nanos: 0,
        comments: Vec::new(),
        samples: vec![ProfileSample {
            stack: vec![at(&libc, "clone3"), at(&app, "worker"), at(&libc, "wait")],
            values: vec![1],
            labels: Vec::new(),
        }],
    };
    let p = encode(&model);
    assert_eq!(string(&p, p.mapping[0].filename), "/usr/bin/app");
    assert_eq!(p.mapping[0].id, 1);
    assert_eq!(string(&p, p.mapping[1].filename), libc.path);
}
