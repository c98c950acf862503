//! pprof profiles (`*.pb.gz`), the format `go tool pprof`, Grafana Pyroscope and Parca
//! read.
//!
//! Three small steps: a view turns a report into the generic [`ProfileModel`] (stacks
//! of code locations with values and labels, [`views`]); [`encode`] interns it into the
//! `profile.proto` messages ([`proto`], declared with prost's derive); [`to_gzip`]
//! gives the file's bytes. Other data (e.g. live allocations by stack with bytes and
//! object counts) becomes a profile by building a [`ProfileModel`] with its own sample
//! types (`inuse_space`/`bytes`, `inuse_objects`/`count`, …).
pub mod encode;
pub mod model;
pub mod proto;
pub mod views;

#[cfg(test)]
mod tests;

pub use crate::model::{build_id_hex, CodeLine, CodeLocation, ModuleMapping};
pub use encode::{encode, to_gzip};
pub use model::{Label, LabelValue, ProfileModel, ProfileSample, ValueKind};
pub use views::{allocations_profile, memory_profile, waits_profile, CaptureMeta};
