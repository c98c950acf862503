//! The input of the pprof encoder: stacks of code locations with values and labels.
//!
//! Deliberately generic (no memory or wait notions): the memory, wait and allocation
//! views each turn their report into a [`ProfileModel`], and the encoder does the
//! interning pprof needs (strings, functions, locations, mappings).
use std::sync::Arc;

/// A pprof value type: what a number counts and in which unit (`inuse_space`, `bytes`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValueKind {
    pub kind: String,
    pub unit: String,
}

impl ValueKind {
    pub fn new(kind: &str, unit: &str) -> Self {
        Self {
            kind: kind.into(),
            unit: unit.into(),
        }
    }
}

/// One profile: every sample has one value per entry of `sample_types`.
#[derive(Clone, Debug, PartialEq)]
pub struct ProfileModel {
    pub sample_types: Vec<ValueKind>,
    /// The sample type a viewer shows first (`None`: the first one).
    pub default_sample_type: Option<String>,
    /// What one sampling event stands for (e.g. `space`/`bytes` with the byte sampler's
    /// average period).
    pub period_type: ValueKind,
    pub period: i64,
    /// Start of the window, ns since the Unix epoch.
    pub time_nanos: i64,
    pub duration_nanos: i64,
    /// Free-form notes for readers (`go tool pprof -comments`).
    pub comments: Vec<String>,
    pub samples: Vec<ProfileSample>,
}

/// A stack with its values and labels.
#[derive(Clone, Debug, PartialEq)]
pub struct ProfileSample {
    /// Root (outermost caller) first, as the folded files are written.
    pub stack: Vec<CodeLocation>,
    /// One per [`ProfileModel::sample_types`] entry.
    pub values: Vec<i64>,
    pub labels: Vec<Label>,
}

/// A label on a sample: `pid=1234`, `region=anon mmap`, or a number with a unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Label {
    pub key: String,
    pub value: LabelValue,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LabelValue {
    Str(String),
    Num { value: i64, unit: Option<String> },
}

impl Label {
    pub fn str(key: &str, value: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: LabelValue::Str(value.into()),
        }
    }
}

/// One frame of a stack: a code address and what is known about it. Functions inlined
/// at the address are extra `lines`, so pprof shows them as frames of their own.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct CodeLocation {
    /// The lookup address in the process (0 when only a name is known).
    pub address: u64,
    /// The mapped object file the address falls in, when known.
    pub module: Option<Arc<ModuleMapping>>,
    /// The function at the address first, then the functions inlined into it, in call
    /// order (so the last line is the innermost callee).
    pub lines: Vec<CodeLine>,
}

impl CodeLocation {
    /// A location known only by its function name (e.g. a frame of a stack that was
    /// reported without addresses).
    pub fn named(function: impl Into<String>) -> Self {
        Self {
            address: 0,
            module: None,
            lines: vec![CodeLine {
                function: function.into(),
                file: None,
                line: None,
            }],
        }
    }
}

/// A function and, when debug info says so, its source position.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CodeLine {
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
}

/// A file mapping of a process, as pprof's `Mapping` wants it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ModuleMapping {
    pub start: u64,
    pub limit: u64,
    /// File offset mapped at `start`.
    pub offset: u64,
    pub path: String,
    /// GNU build ID as lowercase hex (pprof's convention), when the file has one.
    pub build_id: Option<String>,
}

/// Lowercase hex of a build ID.
pub fn build_id_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
