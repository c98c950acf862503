//! `collect`: the only module that touches the kernel.
//!
//! It checks the host (root, BTF, tracefs), loads the eBPF object, fills the target and
//! configuration maps, attaches the tracepoints and turns ring-buffer records into plain
//! [`Record`]s. Everything downstream works on those.
mod allocator;
mod brk;
mod btf;
pub mod decode;
mod decode_sock;
mod features;
pub mod format;
mod host;
pub mod inflight;
mod sockets;

use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::TracePoint,
    Ebpf, EbpfLoader,
};
use std::collections::BTreeMap;

use profiler_common::{BrkState, Config, Counter, FutexKey, SockKey, WaitStart, MAX_STACK_PAGES};
use tokio::io::unix::AsyncFd;

pub use crate::model::Counters;
pub use crate::model::ResidentTrack;
pub use allocator::AttachedAllocator;
pub use decode::{decode, DecodeError, Record};
pub use features::RegsSource;
pub use host::{check_host, HostError};

/// What can go wrong while loading and attaching the probes.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("loading the eBPF programs failed: {0}")]
    Load(String),
    #[error("the kernel refused to load eBPF program {program}: {detail}")]
    Verifier { program: String, detail: String },
    #[error("this kernel has no tracepoint {category}:{name} ({detail})")]
    MissingTracepoint {
        category: String,
        name: String,
        detail: String,
    },
    #[error("eBPF map {map}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("eBPF map {0}: missing from the object")]
    MissingMap(&'static str),
    #[error("ring buffer: {0}")]
    Ring(std::io::Error),
    #[error("cannot probe the allocator in {binary}: {detail}")]
    Uprobe { binary: String, detail: String },
}

/// Tunables of the in-kernel side.
#[derive(Clone, Debug)]
pub struct CollectorConfig {
    /// Mean bytes between stack samples (1 = every event).
    pub sample_bytes: u64,
    /// Mean bytes between sampled allocations (allocator probes).
    pub alloc_sample_bytes: u64,
    /// Pages of user stack copied per sample.
    pub stack_pages: u32,
    /// Trace every process instead of the targets map.
    pub all_processes: bool,
    /// Waits shorter than this are counted in the kernel, not sent.
    pub wait_threshold_ns: u64,
    /// Every program returns at its entry (the bench's floor: the kernel's own price
    /// for the same attach points).
    pub empty_programs: bool,
}

/// The memory probes: (tracepoint category, tracepoint name) = program name. The
/// `sys_enter_*` ones are attached only where the exit programs cannot read the call's
/// arguments from the user registers (see `profiler-ebpf/src/memory.rs`).
const MEMORY_TRACEPOINTS: &[(&str, &str)] = &[
    ("syscalls", "sys_enter_mmap"),
    ("syscalls", "sys_exit_mmap"),
    ("syscalls", "sys_enter_munmap"),
    ("syscalls", "sys_exit_munmap"),
    ("syscalls", "sys_enter_mremap"),
    ("syscalls", "sys_exit_mremap"),
    ("syscalls", "sys_enter_brk"),
    ("syscalls", "sys_exit_brk"),
    ("syscalls", "sys_enter_mprotect"),
    ("syscalls", "sys_exit_mprotect"),
    ("sched", "sched_process_exec"),
    ("sched", "sched_process_exit"),
];

/// The wait probes (all `syscalls:` tracepoints): enter and exit of each wait syscall.
const WAIT_TRACEPOINTS: &[&str] = &[
    "sys_enter_futex",
    "sys_exit_futex",
    "sys_enter_futex_waitv",
    "sys_exit_futex_waitv",
    "sys_enter_read",
    "sys_exit_read",
    "sys_enter_readv",
    "sys_exit_readv",
    "sys_enter_recvfrom",
    "sys_exit_recvfrom",
    "sys_enter_recvmsg",
    "sys_exit_recvmsg",
    "sys_enter_accept",
    "sys_exit_accept",
    "sys_enter_accept4",
    "sys_exit_accept4",
    "sys_enter_connect",
    "sys_exit_connect",
    "sys_enter_poll",
    "sys_exit_poll",
    "sys_enter_ppoll",
    "sys_exit_ppoll",
    "sys_enter_select",
    "sys_exit_select",
    "sys_enter_pselect6",
    "sys_exit_pselect6",
    "sys_enter_epoll_wait",
    "sys_exit_epoll_wait",
    "sys_enter_epoll_pwait",
    "sys_exit_epoll_pwait",
    "sys_enter_epoll_pwait2",
    "sys_exit_epoll_pwait2",
];

/// The sleep probes (`syscalls:` tracepoints), attached with the wait probes: a thread
/// that sleeps holding a lock is what its waiters wait for.
const SLEEP_TRACEPOINTS: &[&str] = &[
    "sys_enter_nanosleep",
    "sys_exit_nanosleep",
    "sys_enter_clock_nanosleep",
    "sys_exit_clock_nanosleep",
];

/// Monotonic time in ns: the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Loaded and attached probes with their ring buffer.
pub struct Collector {
    ebpf: Ebpf,
    ring: AsyncFd<RingBuf<MapData>>,
    decode_errors: u64,
    /// Uprobe programs already loaded (each is attached many times).
    loaded_uprobes: std::collections::HashSet<String>,
    /// How the programs find user registers on this kernel.
    regs: RegsSource,
    /// Each attached program and how it was attached (`tracepoint sched:sched_process_fork`).
    attachments: Vec<(String, String)>,
    /// Offset of `child_pid` in the `sched_process_fork` record, from its format.
    fork_child_pid: Option<u32>,
    /// What this kernel could not give, one line each.
    unavailable: Vec<String>,
}

impl Collector {
    /// Check the host, load the eBPF object and write the configuration. Probes are not
    /// attached yet, so targets can be registered (and seeded) first.
    pub fn load(cfg: &CollectorConfig) -> Result<Self, CollectError> {
        host::check_host()?;
        host::raise_memlock_limit();
        // Read once: the stack bound's offsets need it on every kernel, the registers'
        // fallback on kernels without bpf_task_pt_regs.
        let btf = std::fs::read("/sys/kernel/btf/vmlinux").ok();
        let regs = RegsSource::probe(btf.as_deref());
        let (regs_helper, stack_offset, thread_size) = regs.globals();
        let (mm_offset, start_stack_offset) = features::start_stack_offsets(btf.as_deref());
        // The comm fields became `__data_loc` strings in newer kernels, moving child_pid.
        let fork_child_pid = format::read("sched", "sched_process_fork")
            .and_then(|f| format::field_offset(&f, "child_pid"));
        let cpus = aya::util::nr_cpus()
            .map_err(|(_, e)| CollectError::Load(format!("counting CPUs: {e}")))?
            as u32;
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("SCRATCH", cpus.max(1))
            .override_global("REGS_HELPER", &regs_helper, true)
            .override_global("TASK_STACK_OFFSET", &stack_offset, true)
            .override_global("KERNEL_THREAD_SIZE", &thread_size, true)
            .override_global("TASK_MM_OFFSET", &mm_offset, true)
            .override_global("MM_START_STACK_OFFSET", &start_stack_offset, true)
            .override_global("ARGS_FROM_REGS", &u32::from(regs.found()), true)
            .override_global("FORK_CHILD_PID_OFFSET", &fork_child_pid.unwrap_or(0), true)
            .override_global("EMPTY_PROGRAMS", &u32::from(cfg.empty_programs), true)
            .load(aya::include_bytes_aligned!(concat!(
                env!("OUT_DIR"),
                "/profiler"
            )))
            .map_err(|e| CollectError::Load(host::explain_load_error(&e)))?;
        let config = Config {
            sample_bytes: cfg.sample_bytes.max(1),
            wait_threshold_ns: cfg.wait_threshold_ns,
            stack_pages: cfg.stack_pages.clamp(1, MAX_STACK_PAGES as u32),
            all_processes: u32::from(cfg.all_processes),
            alloc_sample_bytes: cfg.alloc_sample_bytes.max(1),
            sockets_armed: 0,
            profiler_tgid: std::process::id(),
            main_target: 0,
            _pad: 0,
        };
        let mut array: Array<_, Config> =
            Array::try_from(map(&mut ebpf, "CONFIG")?).map_err(map_error("CONFIG"))?;
        array.set(0, config, 0).map_err(map_error("CONFIG"))?;
        let ring = RingBuf::try_from(
            ebpf.take_map("EVENTS")
                .ok_or(CollectError::MissingMap("EVENTS"))?,
        )
        .map_err(map_error("EVENTS"))?;
        // SAFETY: the ring buffer's fd is owned by `ring`, which the AsyncFd owns and
        // deregisters before dropping: the fd stays valid while registered.
        let ring = unsafe { AsyncFd::register(ring) }.map_err(|e| CollectError::Ring(e.into()))?;
        Ok(Self {
            ebpf,
            ring,
            decode_errors: 0,
            loaded_uprobes: Default::default(),
            regs,
            attachments: Vec::new(),
            fork_child_pid,
            unavailable: Vec::new(),
        })
    }

    /// What this kernel could not give (features found missing so far), one line each.
    pub fn unavailable(&self) -> &[String] {
        &self.unavailable
    }

    /// How the programs find user registers on this kernel (probed at load).
    pub fn regs_source(&self) -> &RegsSource {
        &self.regs
    }

    /// Each attached program with how it was attached, in attach order.
    pub fn attachments(&self) -> &[(String, String)] {
        &self.attachments
    }

    /// Note that `program` was attached as `how` (for `record -v`).
    pub(crate) fn note_attached(&mut self, program: &str, how: String) {
        self.attachments.push((program.to_string(), how));
    }

    /// Trace process `pid`. `brk` is its current program break, when known, so that the
    /// first heap growth in the window is measured from the right place.
    pub fn add_target(&mut self, pid: u32, brk: Option<u64>) -> Result<(), CollectError> {
        let mut targets: HashMap<_, u32, u32> =
            HashMap::try_from(map(&mut self.ebpf, "TARGETS")?).map_err(map_error("TARGETS"))?;
        targets.insert(pid, 1, 0).map_err(map_error("TARGETS"))?;
        // With every process traced the programs never look at it.
        self.update_config(|c| {
            if c.main_target == 0 && c.all_processes == 0 {
                c.main_target = pid;
            }
        })?;
        self.watch_sockets(pid)?;
        if let Some(brk) = brk {
            let mut last: HashMap<_, u32, BrkState> =
                HashMap::try_from(map(&mut self.ebpf, "BRK_LAST")?)
                    .map_err(map_error("BRK_LAST"))?;
            last.insert(pid, BrkState::at(brk), 0)
                .map_err(map_error("BRK_LAST"))?;
        }
        Ok(())
    }

    /// Change the programs' [`Config`] in place.
    pub(crate) fn update_config(
        &mut self,
        change: impl FnOnce(&mut Config),
    ) -> Result<(), CollectError> {
        let mut array: Array<_, Config> =
            Array::try_from(map(&mut self.ebpf, "CONFIG")?).map_err(map_error("CONFIG"))?;
        let mut config = array.get(&0, 0).map_err(map_error("CONFIG"))?;
        change(&mut config);
        array.set(0, config, 0).map_err(map_error("CONFIG"))
    }

    /// Stop tracing process `pid` (it exited: its id may be reused by another process).
    pub fn remove_target(&mut self, pid: u32) -> Result<(), CollectError> {
        let mut targets: HashMap<_, u32, u32> =
            HashMap::try_from(map(&mut self.ebpf, "TARGETS")?).map_err(map_error("TARGETS"))?;
        // Absent already (never added, or removed): nothing to do.
        let _ = targets.remove(&pid);
        self.update_config(|c| {
            if c.main_target == pid {
                c.main_target = 0;
            }
        })?;
        if let Ok(mut last) =
            HashMap::<_, u32, BrkState>::try_from(map(&mut self.ebpf, "BRK_LAST")?)
        {
            let _ = last.remove(&pid);
        }
        if let Ok(mut fds) = HashMap::<_, SockKey, u32>::try_from(map(&mut self.ebpf, "SOCK_FDS")?)
        {
            let keys: Vec<SockKey> = fds
                .keys()
                .filter_map(Result::ok)
                .filter(|k| k.tgid == pid)
                .collect();
            for key in keys {
                let _ = fds.remove(&key);
            }
        }
        if let Ok(mut layout) =
            HashMap::<_, u32, u32>::try_from(map(&mut self.ebpf, "HEAP_LAYOUT")?)
        {
            let _ = layout.remove(&pid);
        }
        if let Ok(mut flow) =
            aya::maps::PerCpuHashMap::<_, u32, profiler_common::FreeFlow>::try_from(map(
                &mut self.ebpf,
                "FREE_FLOW",
            )?)
        {
            let _ = flow.remove(&pid);
        }
        Ok(())
    }

    /// Stop tracing every target: the probes return at their first check from now on.
    /// Cheaper than detaching, which costs the kernel a grace period per tracepoint.
    pub fn forget_targets(&mut self) -> Result<(), CollectError> {
        let mut targets: HashMap<_, u32, u32> =
            HashMap::try_from(map(&mut self.ebpf, "TARGETS")?).map_err(map_error("TARGETS"))?;
        let pids: Vec<u32> = targets.keys().filter_map(Result::ok).collect();
        for pid in pids {
            targets.remove(&pid).map_err(map_error("TARGETS"))?;
        }
        Ok(())
    }

    /// Attach the fork follower: a target's new child process becomes a target in the
    /// kernel at once (`sched:sched_process_fork`). Not needed with `all_processes`.
    /// Without a `child_pid` field in the tracepoint's format nothing is attached and
    /// the gap is noted in [`Collector::unavailable`].
    pub fn attach_fork_follower(&mut self) -> Result<(), CollectError> {
        let Some(offset) = self.fork_child_pid else {
            self.unavailable.push(
                "children of targets are not followed from their fork: sched:sched_process_fork has no child_pid field in its format".into(),
            );
            return Ok(());
        };
        self.attach(("sched", "sched_process_fork"))?;
        if let Some(last) = self.attachments.last_mut() {
            last.1.push_str(&format!(" (child_pid at +{offset})"));
        }
        Ok(())
    }

    /// Load and attach every memory probe: the syscalls' exit programs, and their enter
    /// programs only where the registers cannot give the exit the call's arguments.
    pub fn attach_memory_probes(&mut self) -> Result<(), CollectError> {
        let args_from_regs = self.regs.found();
        for &probe in MEMORY_TRACEPOINTS {
            if args_from_regs && probe.1.starts_with("sys_enter_") {
                continue;
            }
            self.attach(probe)?;
        }
        Ok(())
    }

    /// Wait until records are available (or `timeout` passes), then drain them.
    pub async fn next_batch(
        &mut self,
        out: &mut Vec<Record>,
        timeout: std::time::Duration,
    ) -> Result<(), CollectError> {
        if let Ok(guard) = tokio::time::timeout(timeout, self.ring.readable_mut()).await {
            let mut guard = guard.map_err(CollectError::Ring)?;
            guard.clear_ready();
        }
        self.drain(out);
        Ok(())
    }

    /// Take every record that is in the ring buffer now.
    pub fn drain(&mut self, out: &mut Vec<Record>) {
        let ring = self.ring.get_mut();
        while let Some(item) = RingBuf::next(ring) {
            match decode(&item[..]) {
                Ok(record) => out.push(record),
                Err(_) => self.decode_errors += 1,
            }
        }
    }

    /// Current counter values, summed over CPUs.
    pub fn counters(&self) -> Counters {
        let mut c = Counters {
            decode_errors: self.decode_errors,
            ..Default::default()
        };
        let Some(m) = self.ebpf.map("COUNTERS") else {
            return c;
        };
        let Ok(array) = PerCpuArray::<_, u64>::try_from(m) else {
            return c;
        };
        let sum = |counter: Counter| -> u64 {
            array
                .get(&(counter as u32), 0)
                .map(|values| values.iter().sum())
                .unwrap_or(0)
        };
        c.seen = sum(Counter::Seen);
        c.sampled = sum(Counter::Sampled);
        c.lost = sum(Counter::Lost);
        c.stack_read_failed = sum(Counter::StackReadFailed);
        c.short_waits = sum(Counter::ShortWaits);
        c.futex_wakes = sum(Counter::FutexWakes);
        c.alloc_calls = sum(Counter::AllocCalls);
        c.alloc_table_full = sum(Counter::AllocTableFull);
        c.forks_followed = sum(Counter::ForksFollowed);
        c.sock_records = sum(Counter::SockRecords);
        c.sock_table_full = sum(Counter::SockTableFull);
        c.sock_copy_failed = sum(Counter::SockCopyFailed);
        c
    }

    /// Threads of `pid` inside a wait syscall that the probes saw start, by thread id.
    pub fn waiting_threads(&self, pid: u32) -> std::collections::HashMap<u32, WaitStart> {
        let Some(m) = self.ebpf.map("WAITING") else {
            return Default::default();
        };
        let Ok(map) = HashMap::<_, u64, WaitStart>::try_from(m) else {
            return Default::default();
        };
        map.iter()
            .filter_map(Result::ok)
            // start_ns 0: the thread's entry between two waits.
            .filter(|(id, start)| (id >> 32) as u32 == pid && start.start_ns != 0)
            .map(|(id, start)| (id as u32, start))
            .collect()
    }

    /// Futex waits started and wake calls made by `pid` in the window, by futex address.
    pub fn futex_counts(&self, pid: u32) -> (BTreeMap<u64, u64>, BTreeMap<u64, u64>) {
        let read = |name: &str| -> BTreeMap<u64, u64> {
            let Some(m) = self.ebpf.map(name) else {
                return BTreeMap::new();
            };
            let Ok(map) = HashMap::<_, FutexKey, u64>::try_from(m) else {
                return BTreeMap::new();
            };
            map.iter()
                .filter_map(Result::ok)
                .filter(|(k, _)| k.tgid == pid)
                .map(|(k, n)| (k.uaddr, n))
                .collect()
        };
        (read("FUTEX_WAITS"), read("FUTEX_WAKES"))
    }

    /// Load and attach every wait probe, sleeps included. A syscall tracepoint the
    /// kernel lacks (e.g. `futex_waitv` before 5.16) is skipped and returned, not fatal.
    /// With `sockets` (the connection ledger follows next), the exits the socket probes
    /// share get the program that does both ([`sockets::WAIT_SOCKET_EXITS`]); one the
    /// kernel refuses falls back to the wait exit alone, and the socket probes then
    /// attach their own there (and say so if the kernel refuses them too).
    pub fn attach_wait_probes(&mut self, sockets: bool) -> Result<Vec<String>, CollectError> {
        let mut skipped = Vec::new();
        for name in WAIT_TRACEPOINTS.iter().chain(SLEEP_TRACEPOINTS) {
            let both = sockets::WAIT_SOCKET_EXITS
                .iter()
                .find(|(tp, _)| tp == name)
                .filter(|_| sockets && self.regs.found());
            if let Some(&(_, both)) = both {
                match self.attach_program(both, ("syscalls", name)) {
                    Ok(()) => continue,
                    Err(CollectError::Verifier { .. }) => {}
                    Err(CollectError::MissingTracepoint { name, .. }) => {
                        skipped.push(name);
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            match self.attach(("syscalls", name)) {
                Ok(()) => {}
                Err(CollectError::MissingTracepoint { name, .. }) => skipped.push(name),
                Err(e) => return Err(e),
            }
        }
        Ok(skipped)
    }

    /// Attach the OOM-kill probe (`oom:mark_victim`). Returns false, not an error, when
    /// this kernel has no such tracepoint: OOM snapshots are then not taken.
    pub fn attach_oom_probe(&mut self) -> Result<bool, CollectError> {
        use profiler_common::oom_field;
        let format = format::read("oom", "mark_victim").unwrap_or_default();
        let mut fields: Array<_, u32> =
            Array::try_from(map(&mut self.ebpf, "OOM_FIELDS")?).map_err(map_error("OOM_FIELDS"))?;
        for (slot, name) in [
            (oom_field::TOTAL_VM, "total_vm"),
            (oom_field::ANON_RSS, "anon_rss"),
            (oom_field::FILE_RSS, "file_rss"),
            (oom_field::SHMEM_RSS, "shmem_rss"),
        ] {
            let offset = format::field_offset(&format, name).unwrap_or(0);
            fields
                .set(slot, offset, 0)
                .map_err(map_error("OOM_FIELDS"))?;
        }
        match self.attach(("oom", "mark_victim")) {
            Ok(()) => Ok(true),
            Err(CollectError::MissingTracepoint { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Forget the per-window futex wait/wake counts, so that the next window's stall
    /// verdict only counts wakes made in it.
    pub fn clear_futex_counts(&mut self) {
        for name in ["FUTEX_WAITS", "FUTEX_WAKES"] {
            let Some(m) = self.ebpf.map_mut(name) else {
                continue;
            };
            let Ok(mut counts) = HashMap::<_, FutexKey, u64>::try_from(m) else {
                continue;
            };
            let keys: Vec<FutexKey> = counts.keys().filter_map(Result::ok).collect();
            for key in keys {
                let _ = counts.remove(&key);
            }
        }
    }

    fn attach(&mut self, (category, name): (&str, &str)) -> Result<(), CollectError> {
        self.attach_program(name, (category, name))
    }

    /// Load program `name` and attach it to tracepoint `category:tracepoint`.
    fn attach_program(
        &mut self,
        name: &str,
        (category, tracepoint): (&str, &str),
    ) -> Result<(), CollectError> {
        let program: &mut TracePoint = self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| CollectError::Load(format!("program {name} missing from object")))?
            .try_into()
            .map_err(|e| CollectError::Load(format!("{name}: {e}")))?;
        program.load().map_err(|e| CollectError::Verifier {
            program: name.to_string(),
            detail: format!("{e:#}"),
        })?;
        program
            .attach(category, tracepoint)
            .map_err(|e| CollectError::MissingTracepoint {
                category: category.to_string(),
                name: tracepoint.to_string(),
                detail: e.to_string(),
            })?;
        self.note_attached(name, format!("tracepoint {category}:{tracepoint}"));
        Ok(())
    }
}

/// A map error that names the map and keeps the kernel's cause.
fn map_error(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> CollectError {
    move |source| CollectError::Map { map, source }
}

fn map<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut aya::maps::Map, CollectError> {
    ebpf.map_mut(name).ok_or(CollectError::MissingMap(name))
}
