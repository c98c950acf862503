//! Test helpers: stacks of this very process in a known state, captured without root.
use std::fs::File;
use std::hint::black_box;
use std::os::fd::RawFd;
use std::os::unix::fs::FileExt;
use std::sync::{mpsc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::events::StackSample;

/// Bytes of stack copied above sp, like the eBPF side's window.
const STACK_COPY: usize = 32 * 1024;

fn own_mem() -> &'static File {
    static MEM: OnceLock<File> = OnceLock::new();
    MEM.get_or_init(|| File::open("/proc/self/mem").expect("open /proc/self/mem"))
}

/// Read a u64 of this process's memory; `None` where nothing is mapped. Goes through
/// /proc/self/mem, as the daemon does for other processes, so a bad address is an
/// error rather than a crash.
pub(crate) fn read_own_memory(addr: u64) -> Option<u64> {
    let mut buf = [0u8; 8];
    own_mem().read_exact_at(&mut buf, addr).ok()?;
    Some(u64::from_le_bytes(buf))
}

/// Copy up to [`STACK_COPY`] bytes from `sp` up, stopping where the mapping ends.
fn copy_stack(ip: u64, sp: u64, bp: u64) -> StackSample {
    let mut bytes = vec![0u8; STACK_COPY];
    let mut len = 0;
    while len < STACK_COPY {
        // Chunks end on page boundaries so a partial last page is still copied.
        let addr = sp + len as u64;
        let chunk = (4096 - (addr % 4096) as usize).min(STACK_COPY - len);
        match own_mem().read_at(&mut bytes[len..len + chunk], addr) {
            Ok(n) if n > 0 => len += n,
            _ => break,
        }
    }
    bytes.truncate(len);
    StackSample {
        ip,
        sp,
        bp,
        base: sp,
        bytes,
        ret_fix: None,
        ip_is_return: false,
    }
}

/// Capture registers and stack inside `level_c`, called as test → level_a → level_b → level_c.
pub(crate) fn capture_stack_in_known_chain() -> StackSample {
    level_a()
}

// Each level uses the result after the call, so the call cannot become a tail jump
// that would drop the frame in release builds.
#[inline(never)]
pub(crate) fn level_a() -> StackSample {
    let s = level_b();
    black_box(&s);
    s
}

#[inline(never)]
pub(crate) fn level_b() -> StackSample {
    let s = level_c();
    black_box(&s);
    s
}

#[inline(never)]
pub(crate) fn level_c() -> StackSample {
    let (ip, sp, bp): (u64, u64, u64);
    // SAFETY: only reads rip, rsp and rbp into registers; touches no memory or flags.
    unsafe {
        core::arch::asm!(
            "lea {ip}, [rip]",
            "mov {sp}, rsp",
            "mov {bp}, rbp",
            ip = out(reg) ip,
            sp = out(reg) sp,
            bp = out(reg) bp,
            options(nomem, nostack, preserves_flags),
        );
    }
    let s = copy_stack(ip, sp, bp);
    black_box(&s);
    s
}

/// A thread of this process blocked in glibc's `read()` on a pipe, with the sp and pc
/// the kernel reports for it in /proc/self/task/TID/syscall. Dropping it wakes and
/// joins the thread.
pub(crate) struct BlockedThread {
    pub sp: u64,
    pub pc: u64,
    write_fd: RawFd,
    read_fd: RawFd,
    handle: Option<JoinHandle<()>>,
}

impl BlockedThread {
    /// `None` if the kernel does not show the thread's syscall state to us.
    pub(crate) fn start() -> Option<Self> {
        let mut fds = [0; 2];
        // SAFETY: `fds` is a valid two-int array for pipe(2) to fill.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let (read_fd, write_fd) = (fds[0], fds[1]);
        let (tx, rx) = mpsc::channel();
        let handle = std::thread::spawn(move || blocked_thread_body(read_fd, &tx));
        let tid = rx.recv().expect("thread reports its tid");
        let mut thread = BlockedThread {
            sp: 0,
            pc: 0,
            write_fd,
            read_fd,
            handle: Some(handle),
        };
        let path = format!("/proc/self/task/{tid}/syscall");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let text = std::fs::read_to_string(&path).ok()?;
            // "nr arg0 .. arg5 sp pc", or "running" while not in a syscall yet.
            let fields: Vec<&str> = text.split_whitespace().collect();
            if fields.len() == 9 && fields[0] == "0" {
                let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
                thread.sp = hex(fields[7])?;
                thread.pc = hex(fields[8])?;
                return Some(thread);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }
}

impl Drop for BlockedThread {
    fn drop(&mut self) {
        // SAFETY: writes one byte from a valid buffer to our own pipe, then closes
        // descriptors this struct owns.
        unsafe {
            libc::write(self.write_fd, b"x".as_ptr().cast(), 1);
        }
        if let Some(h) = self.handle.take() {
            h.join().ok();
        }
        // SAFETY: both descriptors are owned by this struct and closed once.
        unsafe {
            libc::close(self.write_fd);
            libc::close(self.read_fd);
        }
    }
}

#[inline(never)]
fn blocked_thread_body(fd: RawFd, tx: &mpsc::Sender<libc::pid_t>) {
    // SAFETY: gettid has no preconditions.
    tx.send(unsafe { libc::gettid() }).ok();
    blocked_in_read(fd);
    black_box(fd);
}

#[inline(never)]
fn blocked_in_read(fd: RawFd) {
    let mut byte = [0u8; 1];
    // SAFETY: reads at most one byte into a one-byte buffer.
    unsafe {
        libc::read(fd, byte.as_mut_ptr().cast(), 1);
    }
    black_box(&byte);
}
