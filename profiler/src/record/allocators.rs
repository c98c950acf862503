//! Choosing and probing each target's allocator.
use std::path::{Path, PathBuf};

use crate::{
    allocator::{self, detect::elf_defines, AllocatorChoice, AllocatorFamily, HeapLayout},
    collect::Collector,
    model::{CaptureRecord, ProbedAllocator},
    procfs,
};

use super::{RecordOptions, Session};

/// A new target's allocator: probed with `--allocations`, else only noted as its
/// mappings show it ([`note_seen`]).
pub fn join(collector: &mut Collector, session: &mut Session, pid: u32, opts: &RecordOptions) {
    if opts.allocations {
        attach(collector, session, pid, opts.allocator.as_deref());
    } else {
        note_seen(session, pid);
    }
}

/// Probe the allocator of target `pid` (detected from its mappings, or `forced`).
/// Failures are recorded on the target, not fatal: the mapping view still works.
pub fn attach(collector: &mut Collector, session: &mut Session, pid: u32, forced: Option<&Path>) {
    let (choices, root) = match forced {
        Some(path) => (
            vec![AllocatorChoice {
                family: AllocatorFamily::Custom,
                path: path.to_path_buf(),
                prefix: "",
            }],
            PathBuf::from("/"),
        ),
        None => match detect(pid) {
            Ok(found) => found,
            Err(e) => {
                note(session, pid, format!("allocator not probed: {e}"));
                return;
            }
        },
    };
    if choices.is_empty() {
        note(
            session,
            pid,
            "allocator not probed: no C library or allocator found in its mappings".into(),
        );
        return;
    }
    // Told before the probes attach, so that the first frees are sized too.
    let layouts: Vec<HeapLayout> = choices.iter().map(|c| heap_layout(c, &root)).collect();
    let layout = allocator::layout::common_layout(&layouts);
    match collector.set_heap_layout(pid, layout) {
        Ok(()) => session.apply(CaptureRecord::HeapLayout { pid, layout }),
        Err(e) => eprintln!("profiler: warning: process {pid}: frees not sized: {e}"),
    }
    for choice in choices {
        match collector.attach_allocator(&choice, &root, Some(pid)) {
            Ok(attached) => session.apply(CaptureRecord::Allocator {
                pid,
                probed: ProbedAllocator {
                    family: choice.family,
                    path: choice.path.clone(),
                    entry_points: attached.functions.len(),
                },
            }),
            Err(e) => note(session, pid, format!("allocator not probed: {e}")),
        }
    }
}

/// How the kernel side can size the blocks of the allocator in `choice`.
fn heap_layout(choice: &AllocatorChoice, root: &Path) -> HeapLayout {
    let path = root.join(choice.path.strip_prefix("/").unwrap_or(&choice.path));
    let image = match choice.family {
        // Only these look inside the binary.
        AllocatorFamily::Musl | AllocatorFamily::Executable | AllocatorFamily::Custom => {
            std::fs::read(&path).unwrap_or_default()
        }
        _ => Vec::new(),
    };
    allocator::layout::layout_of(choice.family, &image, &mut |symbol| {
        elf_defines(&path, symbol)
    })
}

/// With the allocator probes off, record which allocator target `pid`'s mappings show
/// (its libraries only: the executable's symbols are not read, which takes seconds for
/// node's), so that the verdict can say when its frames may be missing from stacks.
fn note_seen(session: &mut Session, pid: u32) {
    let Ok(maps) = procfs::read_maps(pid) else {
        return;
    };
    let choices = allocator::detect(&maps, None, &mut |_, _| false);
    if let Some(choice) = choices.first() {
        session.apply(CaptureRecord::AllocatorSeen {
            pid,
            family: choice.family,
        });
    }
}

fn note(session: &mut Session, pid: u32, text: String) {
    eprintln!("profiler: note: process {pid}: {text}");
    session.apply(CaptureRecord::AllocatorNote { pid, note: text });
}

/// What to probe in process `pid`, and the root its paths are relative to.
fn detect(pid: u32) -> Result<(Vec<AllocatorChoice>, PathBuf), procfs::ProcError> {
    let maps = procfs::read_maps(pid)?;
    let root = procfs::proc_path(pid, "root");
    let exe = std::fs::read_link(procfs::proc_path(pid, "exe"))
        .ok()
        .filter(|exe| maps.iter().any(|m| Path::new(&m.path) == exe))
        .or_else(|| {
            maps.iter()
                .find(|m| m.path.starts_with('/'))
                .map(|m| PathBuf::from(&m.path))
        });
    let in_root = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
    let choices = allocator::detect(&maps, exe.as_deref(), &mut |path, symbol| {
        elf_defines(&in_root(path), symbol)
    });
    Ok((choices, root))
}
