//! Opening files that a target process (or anyone on the host) can influence.
//!
//! The profiler runs as root and reads files that untrusted containers control: perf maps
//! in a world-writable `/tmp`, executables and libraries under `/proc/PID/root`, folded
//! files handed to `diff`, the `--allocator` binary. Each of them can be a trap:
//!
//! - a FIFO, socket or device (a FIFO at `/tmp/perf-PID.map` blocks `open()` forever;
//!   `/dev/zero` never ends), so every file is opened with `O_NONBLOCK` and refused with
//!   one line unless `fstat` says it is a regular file;
//! - a huge file, so each kind of file has a size cap;
//! - an absolute symlink inside a container (`/tmp/perf-1.map -> /etc/shadow`), which a
//!   plain `open("/proc/PID/root/tmp/perf-1.map")` resolves against the *host's* root. Paths
//!   under `/proc/PID/root/` are therefore resolved inside that root, with `openat2` and
//!   `RESOLVE_IN_ROOT`, or, where the kernel (or a seccomp filter) refuses `openat2`, by
//!   walking the path one component at a time and re-rooting every symlink by hand.
use std::collections::VecDeque;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::FileTypeExt;
use std::path::{Component, Path, PathBuf};

/// What a file is read for; each kind has its own size cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// `/tmp/perf-PID.map`, written by a JIT.
    PerfMap,
    /// An executable or shared library (symbols, CFI, build ID).
    Elf,
    /// A folded-stack file given to `profiler diff`.
    Folded,
    /// A capture's `report.json`, read by `profiler diff` for its sampling rates.
    Report,
}

impl FileKind {
    /// The largest file of this kind that is read at all.
    pub const fn max_bytes(self) -> u64 {
        match self {
            // A busy JIT writes ~100 bytes per compiled function; 1 GiB is millions of them.
            FileKind::PerfMap => 1 << 30,
            // Chromium's unstripped binary is ~2 GiB; nothing real is larger.
            FileKind::Elf => 4 << 30,
            // Our own folded files are a few MiB; a hand-made one of 256 MiB is still fine.
            FileKind::Folded => 256 << 20,
            // Our reports are a few hundred KiB even for `--all`.
            FileKind::Report => 64 << 20,
        }
    }

    fn name(self) -> &'static str {
        match self {
            FileKind::PerfMap => "perf map",
            FileKind::Elf => "ELF file",
            FileKind::Folded => "folded file",
            FileKind::Report => "report",
        }
    }
}

/// Why an untrusted file was not opened or read.
#[derive(Debug, thiserror::Error)]
pub enum SafeFileError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is a {what}, not a regular file: refusing to read it")]
    NotRegular { path: PathBuf, what: &'static str },
    #[error(
        "{path} is {size} bytes, more than the {cap} bytes a {kind} may be: refusing to read it"
    )]
    TooLarge {
        path: PathBuf,
        size: u64,
        cap: u64,
        kind: &'static str,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl SafeFileError {
    /// Whether the file (or the process whose root it is under) does not exist.
    pub fn is_not_found(&self) -> bool {
        match self {
            SafeFileError::Open { source, .. } => {
                source.kind() == io::ErrorKind::NotFound
                    || source.raw_os_error() == Some(libc::ESRCH)
            }
            _ => false,
        }
    }
}

/// Open `path` for reading as a file of `kind`: non-blocking, a regular file within the
/// kind's size cap, resolved inside the container root when it lies under `/proc/PID/root/`.
pub fn open(path: &Path, kind: FileKind) -> Result<File, SafeFileError> {
    let open_error = |source| SafeFileError::Open {
        path: path.to_path_buf(),
        source,
    };
    let file = match split_container_root(path) {
        Some((root, inside)) => open_in_root(&root, &inside).map_err(open_error)?,
        None => open_plain(path).map_err(open_error)?,
    };
    check(path, &file, kind)?;
    Ok(file)
}

/// Read all of `path` (see [`open`]).
pub fn read(path: &Path, kind: FileKind) -> Result<Vec<u8>, SafeFileError> {
    let file = open(path, kind)?;
    let mut bytes = Vec::new();
    // The cap again: a file may grow between fstat and the read.
    file.take(kind.max_bytes())
        .read_to_end(&mut bytes)
        .map_err(|source| SafeFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(bytes)
}

/// Refuse anything but a regular file within the cap.
fn check(path: &Path, file: &File, kind: FileKind) -> Result<(), SafeFileError> {
    let meta = file.metadata().map_err(|source| SafeFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let ty = meta.file_type();
    if !ty.is_file() {
        let what = if ty.is_fifo() {
            "FIFO"
        } else if ty.is_socket() {
            "socket"
        } else if ty.is_char_device() {
            "character device"
        } else if ty.is_block_device() {
            "block device"
        } else if ty.is_dir() {
            "directory"
        } else {
            "special file"
        };
        return Err(SafeFileError::NotRegular {
            path: path.to_path_buf(),
            what,
        });
    }
    if meta.len() > kind.max_bytes() {
        return Err(SafeFileError::TooLarge {
            path: path.to_path_buf(),
            size: meta.len(),
            cap: kind.max_bytes(),
            kind: kind.name(),
        });
    }
    Ok(())
}

/// `/proc/PID/root/a/b` → (`/proc/PID/root`, `a/b`); None for any other path.
fn split_container_root(path: &Path) -> Option<(PathBuf, PathBuf)> {
    let mut parts = path.components();
    if parts.next() != Some(Component::RootDir) || parts.next()?.as_os_str() != "proc" {
        return None;
    }
    let pid = parts.next()?.as_os_str();
    let is_pid = pid.as_bytes().iter().all(u8::is_ascii_digit) || pid == "self";
    if !is_pid || parts.next()?.as_os_str() != "root" {
        return None;
    }
    let root = Path::new("/proc").join(pid).join("root");
    Some((root, parts.as_path().to_path_buf()))
}

const READ_FLAGS: libc::c_int =
    libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY;

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// `openat` returning an owned descriptor.
fn openat(dir: libc::c_int, name: &OsStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    let name = cstring(name.as_bytes())?;
    // SAFETY: `name` is a NUL-terminated string that outlives the call; the result is
    // checked before it is wrapped.
    let fd = unsafe { libc::openat(dir, name.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by openat and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn open_plain(path: &Path) -> io::Result<File> {
    Ok(File::from(openat(
        libc::AT_FDCWD,
        path.as_os_str(),
        READ_FLAGS,
    )?))
}

/// Open `inside` relative to the directory `root`, resolving every symlink (absolute or
/// with `..`) as if `root` were `/`.
fn open_in_root(root: &Path, inside: &Path) -> io::Result<File> {
    let root_fd = openat(
        libc::AT_FDCWD,
        root.as_os_str(),
        libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
    )?;
    match openat2_in_root(&root_fd, inside) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
            walk_in_root(&root_fd, inside)
        }
        other => other,
    }
}

fn openat2_in_root(root: &OwnedFd, inside: &Path) -> io::Result<File> {
    let name = cstring(inside.as_os_str().as_bytes())?;
    // SAFETY: open_how is plain data; all-zero is its documented default.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = READ_FLAGS as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: `name` and `how` outlive the call and the size passed is `how`'s own.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            name.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = libc::c_int::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: `fd` was just returned by openat2 and is owned by nobody else.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Symlinks followed before giving up, as the kernel's own limit.
const MAX_SYMLINKS: usize = 40;

/// The `openat2`-less path: one component at a time with `O_NOFOLLOW`, every symlink read
/// and spliced into the remaining path, absolute ones restarting at `root`, `..` never
/// climbing above it.
fn walk_in_root(root: &OwnedFd, inside: &Path) -> io::Result<File> {
    let mut queue: VecDeque<OsString> = components(inside).into();
    let mut dirs: Vec<OwnedFd> = Vec::new();
    let mut links = 0;
    while let Some(name) = queue.pop_front() {
        let cwd = dirs.last().unwrap_or(root).as_raw_fd();
        if name == ".." {
            dirs.pop();
            continue;
        }
        let last = queue.is_empty();
        // O_PATH|O_NOFOLLOW on a symlink yields the link itself; on the final component
        // O_NOFOLLOW makes a symlink fail with ELOOP instead.
        let flags = if last {
            READ_FLAGS | libc::O_NOFOLLOW
        } else {
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC
        };
        let link = match openat(cwd, &name, flags) {
            Ok(fd) if last => return Ok(File::from(fd)),
            Ok(fd) => match read_link_at(fd.as_raw_fd(), OsStr::new("")) {
                Ok(target) => target,
                Err(_) => {
                    dirs.push(fd);
                    continue;
                }
            },
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => read_link_at(cwd, &name)?,
            Err(e) => return Err(e),
        };
        links += 1;
        if links > MAX_SYMLINKS {
            return Err(io::Error::from_raw_os_error(libc::ELOOP));
        }
        if link.is_absolute() {
            dirs.clear();
        }
        for part in components(&link).into_iter().rev() {
            queue.push_front(part);
        }
    }
    // The path named the root itself (or a directory): not a file to read.
    Err(io::Error::from_raw_os_error(libc::EISDIR))
}

/// The normal components of `path` (and `..`), without the root or `.`.
fn components(path: &Path) -> Vec<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

/// `readlinkat(dir, name)`; with an empty name, the link `dir` itself is (an O_PATH fd).
fn read_link_at(dir: libc::c_int, name: &OsStr) -> io::Result<PathBuf> {
    let name = cstring(name.as_bytes())?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: `buf` is writable for its whole length and `name` is NUL-terminated.
    let n = unsafe { libc::readlinkat(dir, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(usize::try_from(n).unwrap_or(0));
    Ok(PathBuf::from(OsString::from_vec(buf)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("safe-file-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Check that a FIFO is refused at once instead of blocking the open.
    #[test]
    fn fifo_is_refused_without_blocking() {
        let dir = scratch("fifo");
        let fifo = dir.join("perf-1.map");
        let c = CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: `c` is a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = open(&fifo, FileKind::PerfMap).unwrap_err();
        assert!(
            err.to_string().contains("is a FIFO, not a regular file"),
            "{err}"
        );
    }

    /// Check that a character device such as /dev/zero is refused, not read forever.
    #[test]
    fn device_is_refused() {
        let err = read(Path::new("/dev/zero"), FileKind::Folded).unwrap_err();
        assert!(err.to_string().contains("character device"), "{err}");
    }

    /// Check that an absolute symlink inside a fake root resolves inside that root, with
    /// `openat2` and with the component walk alike.
    #[test]
    fn absolute_symlink_stays_inside_the_root() {
        let dir = scratch("root");
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("tmp")).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/secret"), "inside").unwrap();
        // A file with the same name on the "host" side: must never be what we read.
        std::fs::write(dir.join("secret"), "host").unwrap();
        let target = dir.join("secret");
        symlink(&target, root.join("tmp/abs.map")).unwrap();
        symlink("/etc/secret", root.join("tmp/inroot.map")).unwrap();
        symlink("../../../../etc/secret", root.join("tmp/dotdot.map")).unwrap();
        let root_fd = openat(
            libc::AT_FDCWD,
            root.as_os_str(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
        .unwrap();
        let read_all = |mut f: File| {
            let mut s = String::new();
            f.read_to_string(&mut s).unwrap();
            s
        };
        for opener in [openat2_in_root, walk_in_root] {
            // The host path does not exist inside the root.
            assert!(opener(&root_fd, Path::new("tmp/abs.map")).is_err());
            let inside = opener(&root_fd, Path::new("tmp/inroot.map")).unwrap();
            assert_eq!(read_all(inside), "inside");
            let dotdot = opener(&root_fd, Path::new("tmp/dotdot.map")).unwrap();
            assert_eq!(read_all(dotdot), "inside");
        }
    }

    /// Check that only `/proc/PID/root/…` paths are resolved in a root.
    #[test]
    fn splits_container_roots() {
        assert_eq!(
            split_container_root(Path::new("/proc/42/root/tmp/perf-1.map")),
            Some((
                PathBuf::from("/proc/42/root"),
                PathBuf::from("tmp/perf-1.map")
            ))
        );
        assert_eq!(split_container_root(Path::new("/proc/42/maps")), None);
        assert_eq!(split_container_root(Path::new("/tmp/x")), None);
        assert_eq!(split_container_root(Path::new("/proc/x1/root/a")), None);
    }

    /// Check that a regular file reads whole and a file over its cap is refused.
    #[test]
    fn regular_files_read_and_caps_hold() {
        let dir = scratch("cap");
        let small = dir.join("small");
        std::fs::write(&small, "a;b 1\n").unwrap();
        assert_eq!(read(&small, FileKind::Folded).unwrap(), b"a;b 1\n");
        let big = dir.join("big");
        let f = File::create(&big).unwrap();
        f.set_len(FileKind::Folded.max_bytes() + 1).unwrap();
        let err = read(&big, FileKind::Folded).unwrap_err();
        assert!(err.to_string().contains("refusing to read it"), "{err}");
    }
}
