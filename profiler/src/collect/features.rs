//! Kernel features probed at start-up, before the eBPF object is loaded, so that each
//! program takes the best path this kernel verifies instead of being refused.
//!
//! Today that is how the programs find the user registers (stacks and the fork
//! follower's system call): the `bpf_task_pt_regs` helper from 5.15, else the top of
//! the task's kernel stack found through BTF (5.10 and later), else nothing: stacks are
//! then unavailable and everything else still runs.
use super::btf::Btf;

/// x86_64's THREAD_SIZE: 4 pages, 8 with KASAN (`THREAD_SIZE_ORDER = 2 + KASAN_STACK_ORDER`).
const THREAD_SIZE: u32 = 16 << 10;
const THREAD_SIZE_KASAN: u32 = 32 << 10;

/// How the eBPF programs find the current task's user registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegsSource {
    /// `bpf_task_pt_regs(bpf_get_current_task_btf())` (5.15+).
    Helper,
    /// `task->stack + THREAD_SIZE - sizeof(struct pt_regs)` through `bpf_get_current_task`.
    TaskStack { stack_offset: u32, thread_size: u32 },
    /// No way found; the reason says what is missing.
    Unavailable(String),
}

impl RegsSource {
    /// Choose from what was probed: whether both helpers load in a tracepoint program,
    /// and the kernel's BTF (raw bytes, if readable).
    pub fn choose(helpers: bool, btf: Option<&[u8]>) -> Self {
        if helpers {
            return Self::Helper;
        }
        let Some(data) = btf else {
            return Self::Unavailable(
                "no bpf_task_pt_regs helper (5.15) and no readable /sys/kernel/btf/vmlinux".into(),
            );
        };
        let btf = match Btf::parse(data) {
            Ok(btf) => btf,
            Err(e) => {
                return Self::Unavailable(format!(
                    "no bpf_task_pt_regs helper (5.15) and the kernel's BTF is unreadable: {e}"
                ))
            }
        };
        match btf.member_offset("task_struct", "stack") {
            Some(stack_offset) if stack_offset > 0 => Self::TaskStack {
                stack_offset,
                thread_size: if btf.has_function("kasan_report") {
                    THREAD_SIZE_KASAN
                } else {
                    THREAD_SIZE
                },
            },
            _ => Self::Unavailable(
                "no bpf_task_pt_regs helper (5.15) and no task_struct.stack in the kernel's BTF"
                    .into(),
            ),
        }
    }

    /// Probe this kernel, whose BTF (raw bytes) the caller read.
    pub fn probe(btf: Option<&[u8]>) -> Self {
        use aya::{programs::ProgramType, sys::is_helper_supported, sys::BpfHelper};
        let has = |helper| is_helper_supported(ProgramType::TracePoint, helper).unwrap_or(false);
        let helpers =
            has(BpfHelper::BPF_FUNC_task_pt_regs) && has(BpfHelper::BPF_FUNC_get_current_task_btf);
        Self::choose(helpers, btf)
    }

    /// One line for `-v`: where the registers come from.
    pub fn describe(&self) -> String {
        match self {
            Self::Helper => "user registers: bpf_task_pt_regs (5.15+)".into(),
            Self::TaskStack {
                stack_offset,
                thread_size,
            } => format!(
                "user registers: top of the task's kernel stack (task_struct.stack at +{stack_offset}, THREAD_SIZE {} KiB; kernel without bpf_task_pt_regs)",
                thread_size >> 10
            ),
            Self::Unavailable(why) => format!("user registers: unavailable ({why})"),
        }
    }

    /// Whether the programs find the registers at all. Then a syscall's exit program
    /// reads the call's arguments from them, and its enter program is not attached.
    pub fn found(&self) -> bool {
        !matches!(self, Self::Unavailable(_))
    }

    /// The values of the eBPF globals `REGS_HELPER`, `TASK_STACK_OFFSET` and
    /// `KERNEL_THREAD_SIZE` (see `profiler-ebpf/src/regs.rs`).
    pub fn globals(&self) -> (u32, u32, u32) {
        match *self {
            Self::Helper => (1, 0, THREAD_SIZE),
            Self::TaskStack {
                stack_offset,
                thread_size,
            } => (0, stack_offset, thread_size),
            Self::Unavailable(_) => (0, 0, THREAD_SIZE),
        }
    }
}

/// The values of the eBPF globals `TASK_MM_OFFSET` and `MM_START_STACK_OFFSET` (see
/// `profiler-ebpf/src/stack.rs`): where `task->mm->start_stack` is, which bounds a
/// main thread's stack copy. (0, 0) when the kernel's BTF does not say; stacks are then
/// copied up to the page count, as before.
pub fn start_stack_offsets(btf: Option<&[u8]>) -> (u32, u32) {
    let Some(btf) = btf.and_then(|data| Btf::parse(data).ok()) else {
        return (0, 0);
    };
    match (
        btf.member_offset("task_struct", "mm"),
        btf.member_offset("mm_struct", "start_stack"),
    ) {
        (Some(mm), Some(start)) if mm > 0 && start > 0 => (mm, start),
        _ => (0, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::btf::tests::task_struct_blob;

    /// Check that the helper path wins whenever the helpers load, BTF or not.
    #[test]
    fn helpers_win() {
        assert_eq!(RegsSource::choose(true, None), RegsSource::Helper);
        assert_eq!(RegsSource::Helper.globals(), (1, 0, 16384));
        assert!(RegsSource::Helper.found());
    }

    /// Check that without the helpers the stack offset comes from BTF, and KASAN
    /// doubles THREAD_SIZE.
    #[test]
    fn task_stack_from_btf() {
        let plain = task_struct_blob(false);
        let source = RegsSource::choose(false, Some(&plain));
        assert_eq!(
            source,
            RegsSource::TaskStack {
                stack_offset: 24,
                thread_size: 16384
            }
        );
        assert_eq!(source.globals(), (0, 24, 16384));
        assert!(source.found());
        let kasan = task_struct_blob(true);
        assert_eq!(
            RegsSource::choose(false, Some(&kasan)).globals(),
            (0, 24, 32768)
        );
    }

    /// Check that the start-stack offsets come from BTF, and that without them (or
    /// without BTF) the bound is off.
    #[test]
    fn start_stack_offsets_from_btf() {
        assert_eq!(start_stack_offsets(None), (0, 0));
        assert_eq!(start_stack_offsets(Some(b"garbage")), (0, 0));
        // The miniature task_struct has no `mm`.
        assert_eq!(start_stack_offsets(Some(&task_struct_blob(false))), (0, 0));
        let mm = crate::collect::btf::tests::mm_blob();
        assert_eq!(start_stack_offsets(Some(&mm)), (8, 40));
        if let Ok(data) = std::fs::read("/sys/kernel/btf/vmlinux") {
            let (mm, start) = start_stack_offsets(Some(&data));
            assert!(mm > 0 && start > 0, "{mm} {start}");
        }
    }

    /// Check that neither helpers nor usable BTF is "unavailable" with a reason, and
    /// turns the fallback off (offset 0).
    #[test]
    fn nothing_is_unavailable() {
        for source in [
            RegsSource::choose(false, None),
            RegsSource::choose(false, Some(b"garbage")),
        ] {
            assert!(matches!(source, RegsSource::Unavailable(_)), "{source:?}");
            assert_eq!(source.globals().1, 0);
            assert!(!source.found());
            assert!(source.describe().contains("unavailable"));
        }
    }
}
