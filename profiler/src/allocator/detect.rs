//! Which allocator a process uses, and where its entry points are.
//!
//! The answer comes from the process's mappings: an allocator library that is linked or
//! preloaded (jemalloc, tcmalloc, mimalloc) wins, because its `malloc` interposes the C
//! library's; an executable that defines `malloc` itself (static binaries, statically
//! linked allocators) comes next; otherwise the C library (glibc or musl). A Rust
//! executable with a prefixed jemalloc (`_rjem_malloc`) is probed there *and* in the
//! C library, since C code in the same process still uses libc's `malloc`.
use std::path::{Path, PathBuf};

use crate::procfs::MapEntry;
use crate::safe_file::{self, FileKind, SafeFileError};

/// Allocator implementations the report names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllocatorFamily {
    Glibc,
    Musl,
    Jemalloc,
    Tcmalloc,
    Mimalloc,
    /// An allocator inside the executable (static binary or statically linked).
    Executable,
    /// Given with `--allocator`.
    Custom,
}

impl AllocatorFamily {
    pub fn label(self) -> &'static str {
        match self {
            Self::Glibc => "glibc malloc",
            Self::Musl => "musl malloc",
            Self::Jemalloc => "jemalloc",
            Self::Tcmalloc => "tcmalloc",
            Self::Mimalloc => "mimalloc",
            Self::Executable => "allocator in the executable",
            Self::Custom => "allocator given with --allocator",
        }
    }
}

/// One binary to probe, and the symbol prefix of its allocator entry points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllocatorChoice {
    pub family: AllocatorFamily,
    /// The binary as the process sees it (a path inside its mount namespace).
    pub path: PathBuf,
    /// `""` for the standard names, `"_rjem_"` / `"je_"` for prefixed jemalloc.
    pub prefix: &'static str,
}

/// Entry points probed, by base name (the prefix is prepended), and what they do.
pub const ENTRY_POINTS: &[(&str, EntryPoint)] = &[
    ("malloc", EntryPoint::Malloc),
    ("calloc", EntryPoint::Calloc),
    ("realloc", EntryPoint::Realloc),
    ("memalign", EntryPoint::Memalign),
    ("aligned_alloc", EntryPoint::Memalign),
    ("posix_memalign", EntryPoint::PosixMemalign),
    ("free", EntryPoint::Free),
    // jemalloc's non-standard API, which Rust's jemallocator uses.
    ("mallocx", EntryPoint::Malloc),
    ("rallocx", EntryPoint::Realloc),
    ("sdallocx", EntryPoint::Free),
    ("dallocx", EntryPoint::Free),
    // mimalloc's aligned API, which Rust's mimalloc crate uses.
    ("mi_malloc_aligned", EntryPoint::Malloc),
    ("mi_zalloc_aligned", EntryPoint::Malloc),
    ("mi_realloc_aligned", EntryPoint::Realloc),
    ("mi_free", EntryPoint::Free),
];

/// How an entry point's arguments are read (one eBPF program each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryPoint {
    /// `(size, …)`
    Malloc,
    /// `(n, size)`
    Calloc,
    /// `(ptr, size, …)`
    Realloc,
    /// `(align, size)`
    Memalign,
    /// `(&ptr, align, size)`
    PosixMemalign,
    /// `(ptr, …)`
    Free,
}

impl EntryPoint {
    /// The eBPF program for the entry, and whether the return is probed too.
    pub fn programs(self) -> (&'static str, bool) {
        match self {
            Self::Malloc => ("malloc_enter", true),
            Self::Calloc => ("calloc_enter", true),
            Self::Realloc => ("realloc_enter", true),
            Self::Memalign => ("memalign_enter", true),
            Self::PosixMemalign => ("posix_memalign_enter", true),
            Self::Free => ("free_enter", false),
        }
    }
}

/// Decide what to probe for a process from its mappings. `exe` is the executable's
/// path as mapped; `defines(path, symbol)` says whether a binary defines a symbol.
pub fn detect(
    maps: &[MapEntry],
    exe: Option<&Path>,
    defines: &mut dyn FnMut(&Path, &str) -> bool,
) -> Vec<AllocatorChoice> {
    let mut libs: Vec<&str> = Vec::new();
    for m in maps {
        if m.path.starts_with('/') && !libs.contains(&m.path.as_str()) {
            libs.push(&m.path);
        }
    }
    let named = |family: AllocatorFamily, path: &str| AllocatorChoice {
        family,
        path: PathBuf::from(path),
        prefix: "",
    };
    for lib in &libs {
        let file = file_name(lib);
        let family = if file.starts_with("libjemalloc") {
            AllocatorFamily::Jemalloc
        } else if file.starts_with("libtcmalloc") {
            AllocatorFamily::Tcmalloc
        } else if file.starts_with("libmimalloc") {
            AllocatorFamily::Mimalloc
        } else {
            continue;
        };
        return vec![named(family, lib)];
    }
    let libc = libs.iter().find_map(|lib| {
        let file = file_name(lib);
        // Debian's musl maps /usr/lib/x86_64-linux-musl/libc.so (ld-musl-*.so.1 is a
        // symlink to it); Alpine maps /lib/ld-musl-x86_64.so.1 itself.
        if file.starts_with("ld-musl-")
            || file.starts_with("libc.musl-")
            || (file.starts_with("libc.so") && lib.contains("musl"))
        {
            Some(named(AllocatorFamily::Musl, lib))
        } else if file == "libc.so.6" || (file.starts_with("libc-") && file.ends_with(".so")) {
            Some(named(AllocatorFamily::Glibc, lib))
        } else {
            None
        }
    });
    let mut out = Vec::new();
    if let Some(exe) = exe {
        if defines(exe, "malloc") || defines(exe, "mi_malloc_aligned") {
            out.push(AllocatorChoice {
                family: AllocatorFamily::Executable,
                path: exe.to_path_buf(),
                prefix: "",
            });
            return out; // it interposes libc's malloc for the whole process
        }
        for prefix in ["_rjem_", "je_"] {
            if defines(exe, &format!("{prefix}malloc")) {
                out.push(AllocatorChoice {
                    family: AllocatorFamily::Jemalloc,
                    path: exe.to_path_buf(),
                    prefix,
                });
                break;
            }
        }
    }
    out.extend(libc);
    out
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Whether the ELF file at `path` defines `symbol` (dynamic or static symbol table).
/// Unreadable or corrupt files define nothing.
pub fn elf_defines(path: &Path, symbol: &str) -> bool {
    with_elf(path, |elf| defines(elf, symbol)).unwrap_or(false)
}

/// Why an `--allocator` binary cannot be probed.
#[derive(Debug, thiserror::Error)]
pub enum AllocatorBinaryError {
    #[error(transparent)]
    Open(#[from] SafeFileError),
    #[error("{0} is not an ELF file")]
    NotElf(String),
    #[error("{0} defines none of malloc, mallocx, mi_malloc (nothing to probe)")]
    NoAllocator(String),
}

/// Check that `path` is a readable ELF file (a regular one, opened as untrusted input)
/// that defines an allocator entry point.
pub fn check_allocator_binary(path: &Path) -> Result<(), AllocatorBinaryError> {
    let shown = path.display().to_string();
    let entries = [
        "malloc",
        "mallocx",
        "mi_malloc",
        "_rjem_malloc",
        "je_malloc",
    ];
    match with_elf(path, |elf| {
        entries.iter().any(|symbol| defines(elf, symbol))
    }) {
        Ok(true) => Ok(()),
        Ok(false) => Err(AllocatorBinaryError::NoAllocator(shown)),
        Err(Some(e)) => Err(AllocatorBinaryError::Open(e)),
        Err(None) => Err(AllocatorBinaryError::NotElf(shown)),
    }
}

/// Run `f` on the parsed ELF at `path`, read lazily (only the headers and symbol tables
/// are touched). Err(Some) when it cannot be opened, Err(None) when it is not ELF.
fn with_elf<T>(
    path: &Path,
    f: impl for<'a> FnOnce(&object::File<'a, &'a object::ReadCache<std::fs::File>>) -> T,
) -> Result<T, Option<SafeFileError>> {
    let file = safe_file::open(path, FileKind::Elf).map_err(Some)?;
    let cache = object::ReadCache::new(file);
    let elf = object::File::parse(&cache).map_err(|_| None)?;
    Ok(f(&elf))
}

fn defines<'a>(elf: &object::File<'a, &'a object::ReadCache<std::fs::File>>, symbol: &str) -> bool {
    use object::{Object, ObjectSymbol};
    elf.dynamic_symbols()
        .chain(elf.symbols())
        .any(|s| s.is_definition() && s.name() == Ok(symbol))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn maps(paths: &[&str]) -> Vec<MapEntry> {
        paths
            .iter()
            .enumerate()
            .map(|(i, p)| MapEntry {
                start: 0x1000 * (i as u64 + 1),
                end: 0x1000 * (i as u64 + 2),
                read: true,
                write: false,
                exec: true,
                shared: false,
                offset: 0,
                inode: i as u64 + 1,
                path: p.to_string(),
            })
            .collect()
    }

    fn none(_: &Path, _: &str) -> bool {
        false
    }

    /// Check that glibc and musl are recognised by their file names.
    #[test]
    fn finds_the_c_library() {
        let glibc = detect(
            &maps(&["/usr/bin/app", "/usr/lib/x86_64-linux-gnu/libc.so.6"]),
            Some(Path::new("/usr/bin/app")),
            &mut none,
        );
        assert_eq!(glibc.len(), 1);
        assert_eq!(glibc[0].family, AllocatorFamily::Glibc);
        assert_eq!(
            glibc[0].path,
            Path::new("/usr/lib/x86_64-linux-gnu/libc.so.6")
        );
        let musl = detect(
            &maps(&["/app", "/lib/ld-musl-x86_64.so.1"]),
            Some(Path::new("/app")),
            &mut none,
        );
        assert_eq!(musl[0].family, AllocatorFamily::Musl);
        let debian_musl = detect(
            &maps(&["/app", "/usr/lib/x86_64-linux-musl/libc.so"]),
            Some(Path::new("/app")),
            &mut none,
        );
        assert_eq!(debian_musl[0].family, AllocatorFamily::Musl);
    }

    /// Check that a preloaded allocator library wins over libc.
    #[test]
    fn preloaded_allocator_wins() {
        let got = detect(
            &maps(&[
                "/usr/bin/app",
                "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
                "/usr/lib/x86_64-linux-gnu/libc.so.6",
            ]),
            Some(Path::new("/usr/bin/app")),
            &mut none,
        );
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].family, AllocatorFamily::Jemalloc);
    }

    /// Check that a static executable that defines malloc is probed alone, and a Rust
    /// binary with prefixed jemalloc is probed together with libc.
    #[test]
    fn executable_allocators() {
        let mut static_malloc = |p: &Path, s: &str| p == Path::new("/app") && s == "malloc";
        let got = detect(
            &maps(&["/app"]),
            Some(Path::new("/app")),
            &mut static_malloc,
        );
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].family, AllocatorFamily::Executable);

        let mut rjem = |p: &Path, s: &str| p == Path::new("/app") && s == "_rjem_malloc";
        let got = detect(
            &maps(&["/app", "/lib/libc.so.6"]),
            Some(Path::new("/app")),
            &mut rjem,
        );
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].family, got[0].prefix),
            (AllocatorFamily::Jemalloc, "_rjem_")
        );
        assert_eq!(got[1].family, AllocatorFamily::Glibc);
    }

    /// Check that ELF symbol lookup works on a real binary and fails soft on junk.
    #[test]
    fn reads_real_and_corrupt_elf() {
        let exe = std::env::current_exe().unwrap();
        assert!(elf_defines(&exe, "main"));
        assert!(!elf_defines(&exe, "no_such_symbol_here"));
        let junk = std::env::temp_dir().join(format!("junk-elf-{}", std::process::id()));
        std::fs::write(&junk, b"\x7fELFgarbage").unwrap();
        assert!(!elf_defines(&junk, "malloc"));
        let _ = std::fs::remove_file(junk);
    }
}
