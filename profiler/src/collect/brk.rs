//! The program break as the brk probe keeps it per process (map `BRK_LAST`): seeded
//! by userspace where the probe has not seen one, and read at a window's end for the
//! moves the probe folded instead of sending ([`profiler_common::BrkState`]).
use aya::maps::HashMap;
use profiler_common::BrkState;

use super::{map, map_error, CollectError, Collector};

impl Collector {
    /// Tell the kernel side the program break of a process it traces without having
    /// been told (`all_processes`, forked children), unless it has learnt one since.
    pub fn seed_brk(&mut self, pid: u32, brk: u64) -> Result<(), CollectError> {
        /// `BPF_NOEXIST`: only insert, never overwrite a break the probes recorded.
        const NOEXIST: u64 = 1;
        let mut last: HashMap<_, u32, BrkState> =
            HashMap::try_from(map(&mut self.ebpf, "BRK_LAST")?).map_err(map_error("BRK_LAST"))?;
        match last.insert(pid, BrkState::at(brk), NOEXIST) {
            Ok(()) => Ok(()),
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::EEXIST) =>
            {
                Ok(())
            }
            Err(e) => Err(map_error("BRK_LAST")(e)),
        }
    }

    /// The program break of traced process `pid` as the brk probe last saw it, with the
    /// lowest break since the last brk record it sent; None when it knows none.
    pub fn brk_state(&self, pid: u32) -> Option<BrkState> {
        let map = self.ebpf.map("BRK_LAST")?;
        let states = HashMap::<_, u32, BrkState>::try_from(map).ok()?;
        states.get(&pid, 0).ok().filter(|s| s.last != 0)
    }
}
