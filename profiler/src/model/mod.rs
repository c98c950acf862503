//! `model`: the plain typed contracts between the stages. `collect` decodes into
//! [`crate::events`]; `stacks` interns stacks of [`CodeLocation`]s; `analyze` builds the
//! memory and wait models with their verdicts; `render` reads only these types.
//!
//! Nothing here computes: types, and the small accessors that read them.
pub mod capture;
pub mod counters;
pub mod forecast;
pub mod growth;
pub mod memory;
pub mod requests;
pub mod stack;
pub mod waits;

pub use capture::{
    BlockOp, CaptureRecord, Followed, FreeFlowRead, IdentityFacts, MemSampleRef, StackRef,
    WindowEnd,
};
pub use counters::Counters;
pub use memory::{
    AllocGrowth, AllocationView, AlsoGrew, MemoryReport, MemoryVerdict, MemoryVerdictKind,
    NamedStack, Numbers, ProbedAllocator, ProcessMemory, ResidentTrack, ResidentView,
    RetentionAdvice, StackGrowth,
};
pub use requests::{ConnEvent, ConnRole, ListenerRequests, PeerPool, RequestStall, TxOrigin};
pub use stack::{build_id_hex, CodeLine, CodeLocation, ModuleMapping};
pub use waits::{
    BlockedStack, CycleStep, DemandSignals, Evidence, InFlightWait, ListenerQueue, OwnerWait,
    ProcessWaits, StallVerdict, ThreadSnapshot, UnreadConnection, WaitGroup, WaitOn, WaitReport,
};
