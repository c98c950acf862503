//! What a capture reports about one process's JavaScript frames.
use super::census::AsyncCensus;
use super::namer::V8Counts;

/// The census of a node process's suspended async functions (see [`super::census`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AsyncCensusReport {
    /// The node binary whose V8 metadata the census used.
    pub binary: String,
    /// Why there is no census (no metadata, memory not readable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub census: Option<AsyncCensus>,
}

/// What the report says about one process's JS frames.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JsFrameReport {
    /// The node binary whose V8 metadata names frames, if any.
    pub binary: Option<String>,
    /// Why JS frames are not named from V8's heap (no metadata, unreadable binary).
    pub note: Option<String>,
    #[serde(flatten)]
    pub counts: V8Counts,
    /// JIT frames the perf map also named: the names agreed, or did not.
    pub perf_map_agree: u64,
    pub perf_map_disagree: u64,
    /// A few disagreements, `ours != perf map's`.
    pub disagreements: Vec<String>,
}

impl JsFrameReport {
    /// One line for the text report.
    pub fn summary(&self) -> String {
        let binary = self.binary.as_deref().unwrap_or("node");
        if let Some(note) = &self.note {
            return format!("JS frames: not named from V8's heap: {note}");
        }
        let c = &self.counts;
        let mut line = format!(
            "JS frames: {} named from V8's heap ({binary}; {} after their function moved, from the same code), {} unnamed ([JS] 0x…)",
            c.named, c.recalled, c.unnamed
        );
        if self.perf_map_agree + self.perf_map_disagree > 0 {
            line.push_str(&format!(
                "; perf map agrees on {} of {}",
                self.perf_map_agree,
                self.perf_map_agree + self.perf_map_disagree
            ));
        }
        line
    }
}
