//! The input of the pprof encoder: stacks of code locations with values and labels.
//!
//! Deliberately generic (no memory or wait notions): the memory, wait and allocation
//! views each turn their report into a [`ProfileModel`], and the encoder does the
//! interning pprof needs (strings, functions, locations, mappings).
use crate::model::CodeLocation;

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
