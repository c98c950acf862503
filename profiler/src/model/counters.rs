//! What the kernel side counted during a capture.
/// Event counters summed over CPUs, plus userspace-side decode failures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    /// Events of target processes seen in the kernel.
    pub seen: u64,
    /// Of those, events that carried a stack sample.
    pub sampled: u64,
    /// Records dropped because the ring buffer was full.
    pub lost: u64,
    /// Stack samples where no user memory could be read.
    pub stack_read_failed: u64,
    /// Records userspace could not decode.
    pub decode_errors: u64,
    /// Waits shorter than the threshold: counted only.
    pub short_waits: u64,
    /// Futex wake calls by targets.
    pub futex_wakes: u64,
    /// Allocator calls (malloc, free, …) by targets.
    pub alloc_calls: u64,
    /// Sampled allocations not tracked because the kernel's table was full.
    pub alloc_table_full: u64,
    /// Child processes of targets that became targets at their fork.
    pub forks_followed: u64,
    /// Socket records sent by the connection ledger's probes (lost ones are in `lost`).
    #[serde(default)]
    pub sock_records: u64,
    /// Sockets not followed because the kernel's table was full.
    #[serde(default)]
    pub sock_table_full: u64,
    /// Transfers whose bytes could not be read (their length still counts).
    #[serde(default)]
    pub sock_copy_failed: u64,
}
