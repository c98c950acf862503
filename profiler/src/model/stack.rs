//! Stacks as every stage after `stacks` sees them: frames root first, each a code
//! location (address, mapping with build ID, the function and the functions inlined
//! at it, with file and line when debug info says so).
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// One frame of a stack: a code address and what is known about it. Functions inlined
/// at the address are extra `lines`, so pprof shows them as frames of their own.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CodeLine {
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
}

/// A file mapping of a process, as pprof's `Mapping` wants it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
