//! Which executable files a process has mapped, where, and with which load bias.
//!
//! Built from `/proc/PID/maps` plus the ELF program headers of each file; this is the
//! "normalize" half of address handling (absolute address → file + file offset) that
//! both the unwinder and the symbolizer start from.
use std::fs;
use std::ops::Range;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::elf::{self, ElfHeaders};
use crate::procfs::{self, MapEntry};
use crate::safe_file::{self, FileKind};

/// One mapping of a module's file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileMapping {
    pub avma: Range<u64>,
    /// File offset mapped at `avma.start`.
    pub offset: u64,
    pub exec: bool,
}

/// One executable file mapped into a process (all mappings of one file, merged).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappedModule {
    /// Path as shown in /proc/PID/maps.
    pub path: String,
    /// Where to read the file: `/proc/PID/root/<path>` if that is still the mapped file,
    /// else `/proc/PID/map_files/<start>-<end>`, else `path`.
    pub open_path: PathBuf,
    /// Lowest start .. highest end of its mappings.
    pub avma: Range<u64>,
    /// Load bias: avma = svma + bias.
    pub bias: u64,
    pub build_id: Option<Vec<u8>>,
    /// The mappings, by address; they give file offsets exactly as the kernel mapped them.
    pub mappings: Vec<FileMapping>,
}

impl MappedModule {
    /// File offset of an address (for symbolization with blazesym's `FileOffset`
    /// input); `None` if the address is outside every mapping of the file.
    pub fn file_offset(&self, addr: u64) -> Option<u64> {
        let m = self.mappings.iter().find(|m| m.avma.contains(&addr))?;
        Some(addr - m.avma.start + m.offset)
    }

    /// File name without directories, as frames show it.
    pub fn basename(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }
}

/// Snapshot of a process's mapped executable files.
#[derive(Clone, Debug, Default)]
pub struct AddressSpace {
    /// Sorted by `avma.start`, non-overlapping.
    modules: Vec<MappedModule>,
    /// Every executable range, file-backed or not (JIT code, `[vdso]`), sorted.
    code: Vec<Range<u64>>,
    errors: Vec<String>,
}

impl AddressSpace {
    /// Modules of process `pid` from its maps. Keeps file mappings (`MapEntry::is_file`)
    /// of files with at least one executable mapping; a file that cannot be read or
    /// parsed is kept (without unwind info, bias guessed) and its error recorded.
    pub fn from_maps(pid: u32, maps: &[MapEntry]) -> Self {
        let mut sorted: Vec<&MapEntry> = maps.iter().collect();
        sorted.sort_by_key(|m| m.start);
        let mut space = AddressSpace {
            code: sorted
                .iter()
                .filter(|m| m.exec)
                .map(|m| m.start..m.end)
                .collect(),
            ..Default::default()
        };
        for run in file_runs(&sorted) {
            let Some(exec) = run.iter().find(|m| m.exec) else {
                continue;
            };
            let open_path = open_path(pid, exec);
            let headers = elf::read_headers(&exec.path, &open_path);
            let (module, error) = module_from_run(&run, open_path, headers);
            space.errors.extend(error);
            space.modules.push(module);
        }
        space.modules.sort_by_key(|m| m.avma.start);
        space
    }

    /// An address space of known modules, e.g. replayed from a recording. Their
    /// executable mappings (or whole ranges, if they list none) count as code.
    pub fn from_modules(mut modules: Vec<MappedModule>) -> Self {
        modules.sort_by_key(|m| m.avma.start);
        let mut code: Vec<Range<u64>> = modules
            .iter()
            .flat_map(|m| {
                let exec: Vec<_> = m
                    .mappings
                    .iter()
                    .filter(|x| x.exec)
                    .map(|x| x.avma.clone())
                    .collect();
                if exec.is_empty() {
                    vec![m.avma.clone()]
                } else {
                    exec
                }
            })
            .collect();
        code.sort_by_key(|r| r.start);
        AddressSpace {
            modules,
            code,
            errors: Vec::new(),
        }
    }

    pub fn module_for(&self, addr: u64) -> Option<&MappedModule> {
        let i = self.modules.partition_point(|m| m.avma.start <= addr);
        let m = self.modules.get(i.checked_sub(1)?)?;
        m.avma.contains(&addr).then_some(m)
    }

    pub fn modules(&self) -> &[MappedModule] {
        &self.modules
    }

    /// Problems met while reading the modules, one line each.
    pub fn errors(&self) -> &[String] {
        &self.errors
    }

    /// Whether `addr` lies in executable memory: a return address that does not is
    /// garbage from a bad unwind step.
    pub fn is_code(&self, addr: u64) -> bool {
        let i = self.code.partition_point(|r| r.start <= addr);
        i > 0 && self.code[i - 1].contains(&addr)
    }

    pub(crate) fn code_ranges(&self) -> &[Range<u64>] {
        &self.code
    }
}

/// Group file mappings into runs, one per loaded copy of a file: consecutive mappings
/// of the same path and inode with non-decreasing offsets. A file mapped again
/// elsewhere (a program `mmap`ing its own binary to read it) starts a new run rather
/// than stretching the module over everything in between. Anonymous mappings between
/// (`.bss`) do not break a run.
fn file_runs<'a>(sorted: &[&'a MapEntry]) -> Vec<Vec<&'a MapEntry>> {
    let mut runs: Vec<Vec<&MapEntry>> = Vec::new();
    for &m in sorted.iter().filter(|m| m.is_file()) {
        let continues = runs.last().and_then(|r| r.last()).is_some_and(|prev| {
            prev.path == m.path && prev.inode == m.inode && prev.offset <= m.offset
        });
        if continues {
            runs.last_mut().expect("checked above").push(m);
        } else {
            runs.push(vec![m]);
        }
    }
    runs
}

/// Build a module from a run of mappings and what reading its headers gave.
fn module_from_run(
    run: &[&MapEntry],
    open_path: PathBuf,
    headers: Result<ElfHeaders, elf::ElfError>,
) -> (MappedModule, Option<String>) {
    let first = run[0];
    let path = first.path.clone();
    // Without program headers, assume the lowest mapping shows file offset == vaddr,
    // which holds for the first segment of PIEs and shared libraries.
    let guessed_bias = first.start.wrapping_sub(first.offset);
    let (bias, build_id, error) = match headers {
        Ok(h) => {
            let bias = run
                .iter()
                .filter(|m| m.exec)
                .chain(run.iter())
                .find_map(|m| elf::load_bias(&h.loads, m.start, m.offset, m.exec));
            match bias {
                Some(bias) => (bias, h.build_id, None),
                None => (
                    guessed_bias,
                    h.build_id,
                    Some(format!("no PT_LOAD segment matches the mappings of {path}")),
                ),
            }
        }
        Err(e) => (guessed_bias, None, Some(e.to_string())),
    };
    let module = MappedModule {
        avma: first.start..run.iter().map(|m| m.end).max().unwrap_or(first.end),
        open_path,
        bias,
        build_id,
        mappings: run
            .iter()
            .map(|m| FileMapping {
                avma: m.start..m.end,
                offset: m.offset,
                exec: m.exec,
            })
            .collect(),
        path,
    };
    (module, error)
}

/// Where to read the file behind mapping `m` of process `pid`.
///
/// `/proc/PID/root/<path>` sees the process's mount namespace (containers). It is used
/// only when resolving it inside that root (no symlink can lead out of a container)
/// reaches the mapped inode, and a plain open of the same path (as blazesym does) reaches
/// the same file. Otherwise the `map_files` link reaches the mapped contents themselves
/// (it needs CAP_SYS_ADMIN or ptrace rights over the process): a file replaced by an
/// upgrade, deleted, or shadowed by a planted symlink.
fn open_path(pid: u32, m: &MapEntry) -> PathBuf {
    let chosen = choose_path(pid, m);
    held_open(&chosen).unwrap_or(chosen)
}

/// Most files held open at once (each distinct file once, whatever the processes).
const MAX_HELD: usize = 4096;

/// Every mapped file read so far, held open by (device, inode), so that a process that
/// exits before its stacks are symbolized (an OOM victim, a short-lived child) still has
/// its files readable: `/proc/PID/root` and `map_files` vanish with the process.
static HELD: std::sync::Mutex<Option<std::collections::HashMap<(u64, u64), fs::File>>> =
    std::sync::Mutex::new(None);

/// `/proc/self/fd/N` of `path` held open (opened as untrusted input), or None when it
/// cannot be opened or too many files are held already.
fn held_open(path: &Path) -> Option<PathBuf> {
    use std::os::fd::AsRawFd;
    let file = safe_file::open(path, FileKind::Elf).ok()?;
    let meta = file.metadata().ok()?;
    let mut held = HELD.lock().ok()?;
    let held = held.get_or_insert_with(Default::default);
    let len = held.len();
    let kept = match held.entry((meta.dev(), meta.ino())) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::hash_map::Entry::Vacant(_) if len >= MAX_HELD => return None,
        std::collections::hash_map::Entry::Vacant(e) => e.insert(file),
    };
    Some(PathBuf::from(format!("/proc/self/fd/{}", kept.as_raw_fd())))
}

/// The path that reaches the mapped file: see [`open_path`].
fn choose_path(pid: u32, m: &MapEntry) -> PathBuf {
    let in_root = procfs::proc_path(pid, "root").join(m.path.trim_start_matches('/'));
    let file_id = |meta: fs::Metadata| (meta.dev(), meta.ino());
    let safe = safe_file::open(&in_root, FileKind::Elf)
        .ok()
        .and_then(|f| f.metadata().ok())
        .map(file_id);
    let plain = fs::metadata(&in_root).ok().map(file_id);
    let same_file = safe.is_some() && safe == plain;
    if same_file && safe.is_some_and(|(_, ino)| ino == m.inode) {
        return in_root;
    }
    let map_file = procfs::proc_path(pid, &format!("map_files/{:x}-{:x}", m.start, m.end));
    if fs::metadata(&map_file).is_ok() {
        return map_file;
    }
    if same_file {
        return in_root;
    }
    Path::new(&m.path).to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(start: u64, end: u64, exec: bool, offset: u64, inode: u64, path: &str) -> MapEntry {
        MapEntry {
            start,
            end,
            read: true,
            write: false,
            exec,
            shared: false,
            offset,
            inode,
            path: path.to_string(),
        }
    }

    /// Check that a file's consecutive mappings merge and a second copy of it starts a new run.
    #[test]
    fn groups_mappings_into_runs() {
        let maps = [
            entry(0x1000, 0x2000, false, 0, 7, "/bin/a"),
            entry(0x2000, 0x4000, true, 0x1000, 7, "/bin/a"),
            entry(0x4000, 0x5000, false, 0, 0, ""),
            entry(0x5000, 0x6000, false, 0x3000, 7, "/bin/a"),
            entry(0x9000, 0xa000, false, 0, 7, "/bin/a"),
            entry(0xb000, 0xc000, true, 0, 8, "/lib/b.so"),
        ];
        let sorted: Vec<&MapEntry> = maps.iter().collect();
        let runs = file_runs(&sorted);
        let lens: Vec<usize> = runs.iter().map(Vec::len).collect();
        assert_eq!(lens, [3, 1, 1]);
        assert_eq!(runs[2][0].path, "/lib/b.so");
    }

    /// Check that a module's file offsets come from its mappings and stop at their ends.
    #[test]
    fn file_offset_uses_mappings() {
        let run = [
            entry(0x10000, 0x11000, false, 0, 1, "/lib/x.so"),
            entry(0x11000, 0x13000, true, 0x1000, 1, "/lib/x.so"),
        ];
        let refs: Vec<&MapEntry> = run.iter().collect();
        let headers = Ok(ElfHeaders {
            loads: vec![
                elf::LoadSegment {
                    vaddr: 0,
                    offset: 0,
                    filesz: 0x800,
                    exec: false,
                },
                elf::LoadSegment {
                    vaddr: 0x1000,
                    offset: 0x1000,
                    filesz: 0x2000,
                    exec: true,
                },
            ],
            build_id: Some(vec![1, 2]),
        });
        let (m, err) = module_from_run(&refs, PathBuf::from("/lib/x.so"), headers);
        assert_eq!(err, None);
        assert_eq!(m.bias, 0x10000);
        assert_eq!(m.avma, 0x10000..0x13000);
        assert_eq!(m.file_offset(0x11234), Some(0x1234));
        assert_eq!(m.file_offset(0x13000), None);
        assert_eq!(m.basename(), "x.so");
        let space = AddressSpace::from_modules(vec![m]);
        assert!(space.module_for(0x12fff).is_some());
        assert!(space.module_for(0x13000).is_none() && space.module_for(0xffff).is_none());
        assert!(space.is_code(0x11000) && !space.is_code(0x10fff));
    }

    /// Check that on the test binary itself, bias + symbol svma is the function's address.
    #[test]
    fn bias_and_file_offset_of_own_executable() {
        use object::{Object, ObjectSegment, ObjectSymbol};

        let maps = procfs::read_maps(std::process::id()).unwrap();
        let space = AddressSpace::from_maps(std::process::id(), &maps);
        let exe = std::env::current_exe().unwrap();
        let exe_str = exe.to_str().unwrap();
        let module = space
            .modules()
            .iter()
            .find(|m| m.path == exe_str)
            .expect("own exe mapped");
        assert!(module.open_path.exists());
        assert!(module.build_id.is_some(), "rustc links with a build ID");

        let bytes = fs::read(&exe).unwrap();
        let file = object::File::parse(&*bytes).unwrap();
        let sym = file
            .symbols()
            .find(|s| s.name().is_ok_and(|n| n.contains("bias_probe_function")))
            .expect("probe symbol in symtab");
        let addr = bias_probe_function as *const () as u64;
        assert_eq!(sym.address().wrapping_add(module.bias), addr);
        assert!(std::ptr::eq(space.module_for(addr).unwrap(), module));

        let seg = file
            .segments()
            .find(|s| (s.address()..s.address() + s.size()).contains(&sym.address()))
            .unwrap();
        let want = sym.address() - seg.address() + seg.file_range().0;
        assert_eq!(module.file_offset(addr), Some(want));
    }

    #[inline(never)]
    fn bias_probe_function() -> u32 {
        std::hint::black_box(7)
    }
}
