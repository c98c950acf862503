//! JavaScript frames of a process's stacks, named from V8's heap (see `runtimes::v8`)
//! when the sample arrives.
//!
//! One interpreter trampoline address runs every interpreted function, so a JS frame is
//! not named by its address: the frame is replaced in the unwound stack by a token
//! (an address no user stack holds) that stands for the code address and the name read
//! for it. Symbolization maps tokens back: a perf map that names the code address still
//! wins, and then the two names are compared (a disagreement is counted, so a wrong V8
//! name cannot go unnoticed where both exist).
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::events::StackSample;
use crate::runtimes::v8::{
    census_live, looks_like_node, AsyncCensusReport, JsFrame, JsFrameReport, ScanLimits, V8Binary,
    V8Process,
};
use crate::symbolize::{Frame, JIT_MODULE};
use crate::unwind::{AddressSpace, UnwoundStack};

/// Tokens: above every user-space address, below the kernel's.
const TOKEN_BASE: u64 = 0xfff0_0000_0000_0000;
/// Distinct (code address, name) pairs kept per process before naming stops growing.
const MAX_TOKENS: usize = 1 << 18;

/// Node binaries read so far, by the path they were read from (shared by processes).
#[derive(Default)]
pub struct V8Binaries(HashMap<PathBuf, Result<Arc<V8Binary>, String>>);

impl V8Binaries {
    fn get(&mut self, path: &Path) -> Result<Arc<V8Binary>, String> {
        self.0
            .entry(path.to_path_buf())
            .or_insert_with(|| {
                V8Binary::load(path)
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .clone()
    }
}

/// One target's JS frame naming.
#[derive(Default)]
pub struct JsFrames {
    v8: Option<V8Process>,
    /// The node binary's file (its builtins may be mapped twice).
    node: PathBuf,
    mem: Option<File>,
    /// Token index → (code address, frame).
    tokens: Vec<(u64, JsFrame)>,
    by_frame: HashMap<(u64, JsFrame), u64>,
    report: JsFrameReport,
}

impl JsFrames {
    /// Look for a node binary with V8 metadata among `space`'s modules.
    pub fn attach(pid: u32, space: &AddressSpace, binaries: &mut V8Binaries) -> Self {
        let mut out = Self::default();
        let Some(module) = space.modules().iter().find(|m| looks_like_node(&m.path)) else {
            return out;
        };
        out.report.binary = Some(module.path.clone());
        match binaries.get(&module.open_path) {
            Ok(binary) => {
                out.v8 = Some(V8Process::new(binary));
                out.node = module.open_path.clone();
                out.mem = File::open(format!("/proc/{pid}/mem")).ok();
            }
            Err(e) => out.report.note = Some(format!("{}: {e}", module.path)),
        }
        out
    }

    /// The census of the process's suspended async functions; None when it is not node.
    pub fn async_census(&self, pid: u32, limits: ScanLimits) -> Option<AsyncCensusReport> {
        let binary = self.report.binary.clone()?;
        let mut report = AsyncCensusReport {
            binary,
            ..Default::default()
        };
        match &self.v8 {
            None => {
                report.note = Some(format!(
                    "no census of suspended async functions: {}",
                    self.report.note.as_deref().unwrap_or("no V8 metadata")
                ));
            }
            Some(v8) => match census_live::census_of(pid, v8.binary(), limits) {
                Ok(census) => report.census = Some(census),
                Err(e) => report.note = Some(e.to_string()),
            },
        }
        Some(report)
    }

    /// Whether this process runs V8 with usable metadata.
    pub fn active(&self) -> bool {
        self.v8.is_some()
    }

    /// Replace the JS frames of `stack` (JIT code outside every module, or V8's
    /// embedded builtins) by tokens, reading their functions now.
    pub fn name_stack(
        &mut self,
        space: &AddressSpace,
        stack: &mut UnwoundStack,
        sample: &StackSample,
    ) {
        let Some(v8) = self.v8.as_mut() else { return };
        let mem = self.mem.as_ref();
        let mut read =
            |addr: u64, buf: &mut [u8]| mem.is_some_and(|f| f.read_exact_at(buf, addr).is_ok());
        for i in 0..stack.frames.len() {
            let addr = stack.frames[i];
            let Some(&fp) = stack.frame_pointers.get(i) else {
                break;
            };
            let js_code = match space.module_for(addr) {
                None => true,
                Some(m) => {
                    m.open_path == self.node
                        && m.file_offset(addr).is_some_and(|o| v8.in_builtins(o))
                }
            };
            if !js_code || fp == 0 {
                continue;
            }
            let Some(frame) = v8.name_frame(addr, fp, &mut |a| sample.read_u64(a), &mut read)
            else {
                continue;
            };
            if self.tokens.len() >= MAX_TOKENS {
                continue;
            }
            let key = (addr, frame);
            let token = match self.by_frame.get(&key) {
                Some(&t) => t,
                None => {
                    let t = TOKEN_BASE | self.tokens.len() as u64;
                    self.tokens.push(key.clone());
                    self.by_frame.insert(key, t);
                    t
                }
            };
            stack.frames[i] = token;
        }
    }

    /// The code address a frame stands for (itself unless it is a token).
    pub fn original(&self, addr: u64) -> u64 {
        self.token(addr).map_or(addr, |(code, _)| *code)
    }

    fn token(&self, addr: u64) -> Option<&(u64, JsFrame)> {
        if addr & TOKEN_BASE != TOKEN_BASE {
            return None;
        }
        self.tokens.get(usize::try_from(addr & !TOKEN_BASE).ok()?)
    }

    /// Name the token frames of `addrs` in `per_addr` (symbolized from the original
    /// addresses): a perf map's name stays and is compared with ours.
    pub fn apply(&mut self, addrs: &[u64], per_addr: &mut [Vec<Frame>]) {
        for (&addr, frames) in addrs.iter().zip(per_addr.iter_mut()) {
            let Some((code, frame)) = self.token(addr).cloned() else {
                continue;
            };
            let perf_map = frames
                .first()
                .filter(|f| f.module == JIT_MODULE)
                .map(|f| f.function.clone());
            match (perf_map, &frame) {
                (Some(theirs), JsFrame::Named(ours)) => {
                    if same_function(&theirs, ours) {
                        self.report.perf_map_agree += 1;
                    } else {
                        self.report.perf_map_disagree += 1;
                        if self.report.disagreements.len() < 5 {
                            self.report
                                .disagreements
                                .push(format!("{ours} != {theirs}"));
                        }
                    }
                }
                (Some(_), JsFrame::Unnamed) => {}
                (None, frame) => {
                    let function = match frame {
                        JsFrame::Named(name) => name.to_string(),
                        JsFrame::Unnamed => format!("[JS] 0x{code:x}"),
                    };
                    *frames = vec![Frame {
                        function,
                        module: JIT_MODULE.to_string(),
                        file: None,
                        line: None,
                        inlined: false,
                    }];
                }
            }
        }
    }

    /// The report's view, with the namer's counts.
    pub fn report(&self) -> Option<JsFrameReport> {
        let v8 = self.v8.as_ref();
        if v8.is_none() && self.report.note.is_none() {
            return None;
        }
        let mut r = self.report.clone();
        r.counts = v8.map(|v| v.counts).unwrap_or_default();
        Some(r)
    }
}

/// Whether a perf-map name (`JS:*rememberRequest /app/leak.js:20:25`: tier mark and
/// column) and ours (`JS:rememberRequest /app/leak.js:20`) name the same function: the
/// same function and script, and the same line when we have one.
pub fn same_function(perf_map: &str, ours: &str) -> bool {
    let Some(theirs) = perf_map.strip_prefix("JS:") else {
        return false;
    };
    // Tier marks: `~` interpreted, `^` Sparkplug, `+` Maglev, `*` TurboFan; Node 24 adds
    // `'` after some (`JS:+'processTimers`).
    let theirs = theirs.trim_start_matches(['*', '~', '^', '+', '-', '\'']);
    let ours = ours.strip_prefix("JS:").unwrap_or(ours);
    let (their_fn, their_where) = theirs.split_once(' ').unwrap_or(("", theirs));
    let (our_fn, our_where) = ours.split_once(' ').unwrap_or((ours, ""));
    // V8 writes an anonymous function's name as "" (`JS:~ /app/x.js:3:10`).
    let our_fn = if our_fn == "(anonymous)" { "" } else { our_fn };
    let (their_script, their_line) = split_position(their_where);
    let (our_script, our_line) = split_position(our_where);
    their_fn == our_fn
        && their_script == our_script
        && our_line.is_none_or(|l| their_line == Some(l))
}

/// `path:line[:col]` → (path, line).
fn split_position(s: &str) -> (&str, Option<u32>) {
    let mut rest = s;
    let mut numbers = Vec::new();
    while let Some((head, tail)) = rest.rsplit_once(':') {
        match tail.parse::<u32>() {
            Ok(n) if numbers.len() < 2 => {
                numbers.push(n);
                rest = head;
            }
            _ => break,
        }
    }
    // With two numbers the first from the end is the column.
    (rest, numbers.last().copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(function: &str, module: &str) -> Frame {
        Frame {
            function: function.into(),
            module: module.into(),
            file: None,
            line: None,
            inlined: false,
        }
    }

    /// Check that token frames get the V8 name, `[JS] 0x…` when unnamed, and that a perf
    /// map's name wins and is compared with ours.
    #[test]
    fn tokens_are_named_and_checked_against_perf_map() {
        let mut js = JsFrames::default();
        let named = JsFrame::Named("JS:rememberRequest /app/leak.js:20".into());
        js.tokens = vec![
            (0x1000, named.clone()),
            (0x2000, JsFrame::Unnamed),
            (0x3000, named.clone()),
            (0x4000, JsFrame::Named("JS:tick /app/leak.js:54".into())),
        ];
        let addrs = [
            TOKEN_BASE,
            TOKEN_BASE | 1,
            TOKEN_BASE | 2,
            TOKEN_BASE | 3,
            0x5000,
        ];
        assert_eq!(js.original(TOKEN_BASE | 2), 0x3000);
        assert_eq!(js.original(0x5000), 0x5000);
        let mut per_addr = vec![
            vec![frame("Builtins_InterpreterEntryTrampoline", "node")],
            vec![frame("[unknown] 0x2000", "")],
            vec![frame("JS:*rememberRequest /app/leak.js:20:25", JIT_MODULE)],
            vec![frame("JS:^tock /app/leak.js:60:3", JIT_MODULE)],
            vec![frame("main", "node")],
        ];
        js.apply(&addrs, &mut per_addr);
        let names: Vec<&str> = per_addr.iter().map(|f| f[0].function.as_str()).collect();
        assert_eq!(
            names,
            [
                "JS:rememberRequest /app/leak.js:20",
                "[JS] 0x2000",
                "JS:*rememberRequest /app/leak.js:20:25",
                "JS:^tock /app/leak.js:60:3",
                "main"
            ]
        );
        assert_eq!(
            (js.report.perf_map_agree, js.report.perf_map_disagree),
            (1, 1)
        );
        assert_eq!(
            js.report.disagreements,
            ["JS:tick /app/leak.js:54 != JS:^tock /app/leak.js:60:3"]
        );
    }

    /// Check that perf-map names match ours without their tier mark and column.
    #[test]
    fn compares_with_perf_map_names() {
        assert!(same_function(
            "JS:*rememberRequest /app/leak.js:20:25",
            "JS:rememberRequest /app/leak.js:20"
        ));
        assert!(same_function(
            "JS:^alloc node:buffer:391:30",
            "JS:alloc node:buffer:391"
        ));
        assert!(same_function(
            "JS:~ /app/x.js:3:10",
            "JS:(anonymous) /app/x.js:3"
        ));
        assert!(!same_function(
            "JS:*rememberRequest /app/leak.js:20:25",
            "JS:forgetRequest /app/leak.js:20"
        ));
        assert!(!same_function(
            "JS:*rememberRequest /app/leak.js:20:25",
            "JS:rememberRequest /app/leak.js:21"
        ));
        assert!(!same_function("Builtin:CallFunction", "JS:CallFunction"));
        assert!(same_function(
            "JS:+'processTimers node:internal/timers:556:25",
            "JS:processTimers node:internal/timers:556"
        ));
        // Without line ends (Node's own modules) we name no line: function and script decide.
        assert!(same_function(
            "JS:^alloc node:buffer:391:30",
            "JS:alloc node:buffer"
        ));
    }
}
