//! What kind of memory a range is, from mmap flags or a `/proc/PID/maps` line.
//!
//! The report splits growth by kind because each kind has a different fix: a growing
//! brk heap or anonymous mmap is the allocator, a file mapping is page cache that the
//! kernel can reclaim, thread stacks point at thread count, shared memory at IPC.

use crate::events::linux::{
    MAP_ANONYMOUS, MAP_GROWSDOWN, MAP_SHARED, MAP_STACK, PROT_EXEC, PROT_NONE, PROT_READ,
    PROT_WRITE,
};
use crate::procfs::MapEntry;

/// The kind of memory a range holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum RegionKind {
    /// The program break area (`brk`/`sbrk`, `[heap]`).
    Heap,
    /// Private anonymous mmap (large malloc chunks, allocator arenas, JIT heaps).
    #[default]
    Anon,
    /// Private mapping of a file.
    File,
    /// Thread stacks (`MAP_STACK`/`MAP_GROWSDOWN`, and the main `[stack]`).
    ThreadStack,
    /// Shared mappings, anonymous or file-backed, including POSIX and SysV shm.
    Shared,
}

impl RegionKind {
    /// Human-readable name for reports.
    pub fn label(self) -> &'static str {
        match self {
            RegionKind::Heap => "brk heap",
            RegionKind::Anon => "anon mmap",
            RegionKind::File => "file mmap",
            RegionKind::ThreadStack => "thread stack",
            RegionKind::Shared => "shared memory",
        }
    }

    /// Every kind, in report order.
    pub fn all() -> [RegionKind; 5] {
        [
            RegionKind::Heap,
            RegionKind::Anon,
            RegionKind::File,
            RegionKind::ThreadStack,
            RegionKind::Shared,
        ]
    }

    /// Kind of a mapping created by a successful `mmap(…, flags, fd, …)`.
    ///
    /// Stack flags win over sharing because a shared stack is still a thread's stack;
    /// `MAP_SHARED_VALIDATE` (0x03) contains the `MAP_SHARED` bit and counts as shared.
    pub fn from_mmap(flags: u64, fd: i32) -> RegionKind {
        if flags & (MAP_STACK | MAP_GROWSDOWN) != 0 {
            RegionKind::ThreadStack
        } else if flags & MAP_SHARED != 0 {
            RegionKind::Shared
        } else if fd >= 0 && flags & MAP_ANONYMOUS == 0 {
            RegionKind::File
        } else {
            RegionKind::Anon
        }
    }

    /// Kind of an existing mapping, or `None` for kernel pseudo mappings (`[vdso]`,
    /// `[vvar]`, `[vsyscall]`, `[uprobes]`, …) that no program allocated.
    ///
    /// Named anonymous mappings (`[anon:NAME]`, `[anon_shmem:NAME]`, set with
    /// `PR_SET_VMA_ANON_NAME`) are ordinary memory and keep their kind. Other named
    /// objects that are not paths (`anon_inode:…`) are backed by a kernel object, not
    /// anonymous memory, so they count as file mappings.
    pub fn from_map_entry(entry: &MapEntry) -> Option<RegionKind> {
        let path = entry.path.as_str();
        if path == "[heap]" {
            return Some(RegionKind::Heap);
        }
        if path == "[stack]" || path.starts_with("[stack:") {
            return Some(RegionKind::ThreadStack);
        }
        if path.starts_with("[anon_shmem:") {
            return Some(RegionKind::Shared);
        }
        if path.starts_with('[') && !path.starts_with("[anon:") {
            return None;
        }
        if entry.shared || path.starts_with("/dev/shm/") || path.starts_with("/SYSV") {
            Some(RegionKind::Shared)
        } else if path.is_empty() || path.starts_with("[anon:") {
            Some(RegionKind::Anon)
        } else {
            Some(RegionKind::File)
        }
    }
}

/// Protection bits of a maps line, in mmap's `PROT_*` encoding.
pub(crate) fn prot_of(entry: &MapEntry) -> u32 {
    let mut prot = PROT_NONE;
    if entry.read {
        prot |= PROT_READ;
    }
    if entry.write {
        prot |= PROT_WRITE;
    }
    if entry.exec {
        prot |= PROT_EXEC;
    }
    prot
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::linux::{MAP_FIXED, MAP_PRIVATE};

    /// A one-page maps line with these permissions and path.
    fn entry(perms: &str, path: &str) -> MapEntry {
        crate::ledger::tests::map_entry(0x1000, 0x2000, perms, path)
    }

    /// Check that maps lines get the kind the report promises, and pseudo mappings none.
    #[test]
    fn classifies_map_entries() {
        let kind = |perms, path| RegionKind::from_map_entry(&entry(perms, path));
        assert_eq!(kind("rw-p", "[heap]"), Some(RegionKind::Heap));
        assert_eq!(kind("rw-p", "[stack]"), Some(RegionKind::ThreadStack));
        assert_eq!(kind("rw-p", "[stack:1234]"), Some(RegionKind::ThreadStack));
        assert_eq!(kind("rw-p", ""), Some(RegionKind::Anon));
        assert_eq!(kind("rw-p", "[anon:arena]"), Some(RegionKind::Anon));
        assert_eq!(kind("rw-s", "[anon_shmem:ring]"), Some(RegionKind::Shared));
        assert_eq!(kind("rw-s", ""), Some(RegionKind::Shared));
        assert_eq!(kind("rw-s", "/var/db/file"), Some(RegionKind::Shared));
        assert_eq!(kind("rw-p", "/dev/shm/seg"), Some(RegionKind::Shared));
        assert_eq!(
            kind("rw-s", "/SYSV00000000 (deleted)"),
            Some(RegionKind::Shared)
        );
        assert_eq!(kind("r-xp", "/usr/lib/libc.so.6"), Some(RegionKind::File));
        assert_eq!(kind("---p", ""), Some(RegionKind::Anon));
        for pseudo in [
            "[vdso]",
            "[vvar]",
            "[vvar_vclock]",
            "[vsyscall]",
            "[uprobes]",
        ] {
            assert_eq!(kind("r-xp", pseudo), None, "{pseudo}");
        }
    }

    /// Check that mmap flags and fd pick the kind, stack flags first.
    #[test]
    fn classifies_mmap_flags() {
        let anon = MAP_PRIVATE | MAP_ANONYMOUS;
        assert_eq!(RegionKind::from_mmap(anon, -1), RegionKind::Anon);
        assert_eq!(
            RegionKind::from_mmap(anon | MAP_FIXED, -1),
            RegionKind::Anon
        );
        assert_eq!(RegionKind::from_mmap(MAP_PRIVATE, 3), RegionKind::File);
        assert_eq!(RegionKind::from_mmap(MAP_SHARED, 3), RegionKind::Shared);
        assert_eq!(
            RegionKind::from_mmap(MAP_SHARED | MAP_ANONYMOUS, -1),
            RegionKind::Shared
        );
        assert_eq!(RegionKind::from_mmap(0x03, 3), RegionKind::Shared);
        assert_eq!(
            RegionKind::from_mmap(anon | MAP_STACK, -1),
            RegionKind::ThreadStack
        );
        assert_eq!(
            RegionKind::from_mmap(anon | MAP_GROWSDOWN, -1),
            RegionKind::ThreadStack
        );
        // Anonymous even when a stray fd is passed: MAP_ANONYMOUS ignores the fd.
        assert_eq!(RegionKind::from_mmap(anon, 3), RegionKind::Anon);
    }

    /// Check that labels are distinct and `all` lists every kind once, in order.
    #[test]
    fn labels_and_all() {
        let all = RegionKind::all();
        let mut sorted = all;
        sorted.sort();
        assert_eq!(all, sorted);
        let labels: std::collections::BTreeSet<_> = all.iter().map(|k| k.label()).collect();
        assert_eq!(labels.len(), 5);
        assert_eq!(RegionKind::Heap.label(), "brk heap");
        assert_eq!(RegionKind::Shared.label(), "shared memory");
    }

    /// Check that r/w/x map onto PROT bits and `---p` is PROT_NONE.
    #[test]
    fn prot_from_perms() {
        assert_eq!(prot_of(&entry("---p", "")), PROT_NONE);
        assert_eq!(prot_of(&entry("rw-p", "")), PROT_READ | PROT_WRITE);
        assert_eq!(prot_of(&entry("r-xp", "/bin/x")), PROT_READ | PROT_EXEC);
    }
}
