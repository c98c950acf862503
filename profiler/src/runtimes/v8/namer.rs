//! The per-process V8 frame namer: for a JS frame of a stack we unwound, read the
//! function from the frame and name it `JS:<function> <script>:<line>`.
//!
//! JIT, baseline and interpreter frames keep frame pointers, and V8 stores the
//! JSFunction at a fixed offset from the frame pointer (`v8dbg_off_fp_function`). The
//! heap is read through a closure (in production `/proc/PID/mem`, in tests a recorded
//! image), promptly when the sample arrives, since V8 may move or free objects later.
//! Names are cached by the SharedFunctionInfo and the objects its names come from;
//! the function and its SharedFunctionInfo are re-read and type-checked for every frame.
use std::collections::HashMap;
use std::sync::Arc;

use super::binary::V8Binary;
use super::heap::{FunctionInfo, Heap, SfiKey, WalkError};

/// Names cached per process before the cache starts over.
const MAX_CACHED: usize = 1 << 16;

/// How frames fared, for the report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct V8Counts {
    /// JS frames named from the heap.
    pub named: u64,
    /// Frames in JS code whose function could not be read or failed a type check:
    /// shown as `[JS] 0x…`.
    pub unnamed: u64,
    /// Frames in JS code that are V8 stub frames (a frame-type marker, no function).
    pub stubs: u64,
    /// Of `named`: frames whose function had moved or been freed by the time it was
    /// read, named from an earlier frame of the same code (same code address and same
    /// bytecode) whose function was read and checked.
    pub recalled: u64,
}

/// What the namer makes of one frame.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum JsFrame {
    /// `JS:<function> <script>:<line>`.
    Named(Arc<str>),
    /// A JS frame whose function could not be read safely.
    Unnamed,
}

/// The V8 frame namer of one process (an `Instance`, in the OpenTelemetry profiler's
/// terms), over the binary's [`V8Binary`] (its `Data`).
pub struct V8Process {
    binary: Arc<V8Binary>,
    names: HashMap<SfiKey, Arc<str>>,
    /// Names by frame identity: (code address, the frame's bytecode-array slot).
    by_code: HashMap<(u64, u64), Arc<str>>,
    pub counts: V8Counts,
}

impl V8Process {
    /// The namer for a process that maps `binary`.
    pub fn new(binary: Arc<V8Binary>) -> Self {
        Self {
            binary,
            names: HashMap::new(),
            by_code: HashMap::new(),
            counts: V8Counts::default(),
        }
    }

    /// The node binary this process runs.
    pub fn binary(&self) -> &Arc<V8Binary> {
        &self.binary
    }

    /// Whether an offset in the node binary is in the embedded builtins (interpreter and
    /// baseline entry code).
    pub fn in_builtins(&self, file_offset: u64) -> bool {
        self.binary
            .builtins
            .as_ref()
            .is_some_and(|r| r.contains(&file_offset))
    }

    /// Name the frame at code address `pc` whose frame pointer is `fp`, for code that
    /// may be JS (JIT code or the embedded builtins). `stack` reads the sampled stack
    /// copy; `read` reads the process's memory. `None`: a stub frame, not a JS function's.
    pub fn name_frame(
        &mut self,
        pc: u64,
        fp: u64,
        stack: &mut dyn FnMut(u64) -> Option<u64>,
        read: &mut dyn FnMut(u64, &mut [u8]) -> bool,
    ) -> Option<JsFrame> {
        let layout = &self.binary.layout;
        let slot = |off: i64| fp.checked_add_signed(off);
        let mut word = |addr: u64| {
            stack(addr).or_else(|| {
                let mut b = [0u8; 8];
                read(addr, &mut b).then(|| u64::from_le_bytes(b))
            })
        };
        let marker = slot(layout.fp_context).and_then(&mut word);
        let function = slot(layout.fp_function).and_then(&mut word);
        let code_key = (
            pc,
            slot(layout.fp_bytecode_array)
                .and_then(&mut word)
                .unwrap_or(0),
        );
        // Typed frames (stubs, exits, entries) hold a small-integer frame type where JS
        // frames hold their context.
        if marker.is_some_and(|m| layout.tagging.smi(m).is_some()) {
            self.counts.stubs += 1;
            return None;
        }
        let Some(function) = function else {
            self.counts.unnamed += 1;
            return Some(JsFrame::Unnamed);
        };
        match self.name_function(function, read) {
            Ok(name) => {
                self.counts.named += 1;
                if self.by_code.len() >= MAX_CACHED {
                    self.by_code.clear();
                }
                self.by_code.insert(code_key, name.clone());
                Some(JsFrame::Named(name))
            }
            Err(_) if self.by_code.contains_key(&code_key) => {
                self.counts.named += 1;
                self.counts.recalled += 1;
                Some(JsFrame::Named(self.by_code[&code_key].clone()))
            }
            Err(_) => {
                self.counts.unnamed += 1;
                Some(JsFrame::Unnamed)
            }
        }
    }

    /// The name of the JSFunction `tagged` points to.
    pub fn name_function(
        &mut self,
        tagged: u64,
        read: &mut dyn FnMut(u64, &mut [u8]) -> bool,
    ) -> Result<Arc<str>, WalkError> {
        let mut heap = Heap::new(&self.binary.layout, |a: u64, b: &mut [u8]| read(a, b));
        let sfi = heap.function_shared(tagged)?;
        let key = heap.sfi_key(sfi)?;
        if let Some(name) = self.names.get(&key) {
            return Ok(name.clone());
        }
        let name: Arc<str> = format_frame(&heap.function_info(key)?).into();
        if self.names.len() >= MAX_CACHED {
            self.names.clear();
        }
        self.names.insert(key, name.clone());
        Ok(name)
    }
}

/// `JS:<function> <script>:<line>`, as node's perf map names a function (less its tier
/// mark and column).
pub fn format_frame(info: &FunctionInfo) -> String {
    let function = if info.name.is_empty() {
        "(anonymous)"
    } else {
        &info.name
    };
    match (&info.script, info.line) {
        (Some(script), Some(line)) => format!("JS:{function} {script}:{line}"),
        (Some(script), None) => format!("JS:{function} {script}"),
        (None, _) => format!("JS:{function}"),
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::super::image::MemoryImage;
    use super::super::metadata::{Layout, Symbols};
    use super::*;

    fn data_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/v8")
    }

    /// A namer over Node 20's committed metadata (the binary's builtins are not needed).
    fn node20() -> V8Process {
        let symbols = Symbols::parse_text(
            &std::fs::read_to_string(data_dir().join("node20.symbols")).unwrap(),
        );
        let layout = Layout::from_symbols(&symbols).unwrap();
        V8Process::new(Arc::new(V8Binary {
            symbols,
            layout,
            builtins: None,
        }))
    }

    fn image() -> MemoryImage {
        MemoryImage::parse(
            &std::fs::read_to_string(data_dir().join("node20-function.image")).unwrap(),
        )
    }

    /// Check the object walk over a recorded Node 20 heap: JSFunction →
    /// SharedFunctionInfo → ScopeInfo name, Script name and the line from its line ends.
    #[test]
    fn names_function_from_recorded_heap() {
        let img = image();
        let mut namer = node20();
        let name = namer
            .name_function(img.function, &mut |a, b| img.read(a, b))
            .unwrap();
        assert!(name.starts_with("JS:rememberRequest /"), "{name}");
        assert!(name.ends_with("/image.js:4"), "{name}");
        assert_eq!(&*name, img.expect);
        // A second frame of the same function comes from the cache, still checked.
        let again = namer
            .name_function(img.function, &mut |a, b| img.read(a, b))
            .unwrap();
        assert_eq!(again, name);
    }

    /// Check that a function whose SharedFunctionInfo was moved (its map now has
    /// another instance type) is not named at all, from the cache or otherwise.
    #[test]
    fn moved_object_is_never_named_wrong() {
        let mut img = image();
        let mut namer = node20();
        namer
            .name_function(img.function, &mut |a, b| img.read(a, b))
            .unwrap();
        let l = namer.binary.layout.clone();
        let mut heap = Heap::new(&l, |a: u64, b: &mut [u8]| img.read(a, b));
        let sfi = heap.function_shared(img.function).unwrap();
        let map = heap.u64_at(l.tagging.untag(sfi) + l.map).unwrap();
        let type_at = l.tagging.untag(map) + l.map_instance_type;
        img.patch(type_at, &l.fixed_array_type.to_le_bytes());
        let err = namer
            .name_function(img.function, &mut |a, b| img.read(a, b))
            .unwrap_err();
        assert!(matches!(err, WalkError::WrongType { .. }), "{err}");
        // And a frame whose function slot holds something else is unnamed, counted.
        let fp = 0x7000u64;
        let mut stack = |a: u64| match a {
            0x6ff8 => Some(0x1234_5679), // context: a heap pointer, not a frame marker
            0x6ff0 => Some(img.function),
            _ => None,
        };
        let frame = namer.name_frame(0x5000, fp, &mut stack, &mut |a, b| img.read(a, b));
        assert_eq!(frame, Some(JsFrame::Unnamed));
        assert_eq!(namer.counts.unnamed, 1);
    }

    /// Check that a frame whose function moved after the sample is named only from an
    /// earlier checked frame of the same code address and bytecode, never otherwise.
    #[test]
    fn moved_function_recalled_only_for_the_same_code() {
        let mut img = image();
        let mut namer = node20();
        let function = img.function;
        let frame = |namer: &mut V8Process, img: &MemoryImage, pc: u64, bytecode: u64| {
            let mut stack = |a: u64| match a {
                0x6ff8 => Some(0x1234_5679),
                0x6ff0 => Some(function),
                0x6fe0 => Some(bytecode),
                _ => None,
            };
            namer.name_frame(pc, 0x7000, &mut stack, &mut |a, b| img.read(a, b))
        };
        let first = frame(&mut namer, &img, 0x5000, 0xb0b1).unwrap();
        assert!(matches!(&first, JsFrame::Named(n) if n.starts_with("JS:rememberRequest ")));
        // The function object is gone (its map word reads 0).
        img.patch(img.function - 1, &[0; 8]);
        assert_eq!(frame(&mut namer, &img, 0x5000, 0xb0b1), Some(first));
        assert_eq!(namer.counts.recalled, 1);
        assert_eq!(
            frame(&mut namer, &img, 0x5000, 0xb0c1),
            Some(JsFrame::Unnamed)
        );
        assert_eq!(
            frame(&mut namer, &img, 0x5008, 0xb0b1),
            Some(JsFrame::Unnamed)
        );
    }

    /// Check that a function the garbage collector has just moved (its old map word is
    /// a forwarding address) is read at its new address, and still checked there.
    #[test]
    fn forwarded_function_is_followed_and_checked() {
        let mut img = image();
        let l = node20().binary.layout.clone();
        let old = l.tagging.untag(img.function);
        let mut word = [0u8; 8];
        assert!(img.read(old + l.map, &mut word));
        let map = u64::from_le_bytes(word);
        assert!(img.read(old + l.js_function_shared, &mut word));
        let shared = u64::from_le_bytes(word);
        let new = 0x7e57_0000_0000u64;
        let mut copy = vec![0u8; l.js_function_shared as usize + 8];
        copy[l.map as usize..l.map as usize + 8].copy_from_slice(&map.to_le_bytes());
        let at = l.js_function_shared as usize;
        copy[at..at + 8].copy_from_slice(&shared.to_le_bytes());
        img.insert(new, copy);
        img.patch(old + l.map, &new.to_le_bytes());
        let mut namer = node20();
        let name = namer
            .name_function(img.function, &mut |a, b| img.read(a, b))
            .unwrap();
        assert_eq!(&*name, img.expect);
        // A forwarding address to something that is not a function is refused.
        img.patch(new + l.map, &0x1234_5679u64.to_le_bytes());
        assert!(node20()
            .name_function(img.function, &mut |a, b| img.read(a, b))
            .is_err());
    }

    /// Check that a typed (stub) frame, whose context slot holds a frame-type marker,
    /// is not taken for a JS frame.
    #[test]
    fn stub_frames_are_not_js() {
        let img = image();
        let mut namer = node20();
        let mut stack = |a: u64| match a {
            0x6ff8 => Some(14 << 32), // a small integer: StackFrame::Type
            0x6ff0 => Some(img.function),
            _ => None,
        };
        assert_eq!(
            namer.name_frame(0x5000, 0x7000, &mut stack, &mut |a, b| img.read(a, b)),
            None
        );
        assert_eq!(namer.counts.stubs, 1);
    }

    /// Record `tests/data/v8/node20-function.image` from a live `/usr/bin/node` (run
    /// by hand: `BLESS=1 cargo test -p profiler --lib record_node20_image -- --ignored`).
    /// Finds the JSFunction `rememberRequest` by scanning node's anonymous memory,
    /// then keeps the bytes one walk reads.
    #[test]
    #[ignore = "records a fixture from a live node; run by hand with BLESS=1"]
    fn record_node20_image() {
        use std::io::BufRead;
        use std::os::unix::fs::FileExt;
        let dir = std::env::temp_dir().join(format!("v8-image-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("image.js");
        std::fs::write(
            &script,
            "'use strict';\nconst kept = [];\n\nfunction rememberRequest(i) {\n  kept[i % 1000] = { i };\n  return kept.length;\n}\n\
             setInterval(() => { for (let i = 0; i < 100; i++) rememberRequest(i); }, 10);\n\
             process.stdout.write('ready\\n');\n",
        )
        .unwrap();
        let mut child = std::process::Command::new("/usr/bin/node")
            .arg(&script)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(500));
        let pid = child.id();
        let mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
        let mut snapshot = MemoryImage::default();
        for m in crate::procfs::read_maps(pid).unwrap() {
            if m.read
                && !m.exec
                && (m.path.is_empty() || m.path.starts_with("[anon"))
                && m.end - m.start <= 256 << 20
            {
                let mut buf = vec![0u8; (m.end - m.start) as usize];
                if mem.read_exact_at(&mut buf, m.start).is_ok() {
                    snapshot.insert(m.start, buf);
                }
            }
        }
        let mut namer = node20();
        let l = namer.binary.layout.clone();
        let mut found = None;
        if std::env::var_os("V8_IMAGE_DEBUG").is_some() {
            let total: usize = snapshot.chunks.values().map(Vec::len).sum();
            eprintln!("{} chunks, {total} bytes", snapshot.chunks.len());
        }
        // Whether a map word is a JSFunction's map, worked out once per map.
        let mut function_map: HashMap<u64, bool> = HashMap::new();
        'scan: for (&start, bytes) in &snapshot.chunks {
            for (i, word) in bytes.chunks_exact(8).enumerate() {
                let map = u64::from_le_bytes(word.try_into().unwrap());
                if !l.tagging.is_heap_object(map) {
                    continue;
                }
                let is_function = *function_map.entry(map).or_insert_with(|| {
                    let mut heap = Heap::new(&l, |a: u64, b: &mut [u8]| snapshot.read(a, b));
                    heap.object(map).is_ok_and(|(_, t)| t == l.map_type)
                        && heap
                            .u64_at(l.tagging.untag(map) + l.map_instance_type)
                            .is_ok_and(|v| l.js_function_types.contains(&(v as u16)))
                });
                if !is_function {
                    continue;
                }
                if std::env::var_os("V8_IMAGE_DEBUG").is_some() {
                    eprintln!("function map {map:#x}");
                }
                let tagged = (start + i as u64 * 8) | 1;
                let named = namer.name_function(tagged, &mut |a, b| snapshot.read(a, b));
                if std::env::var_os("V8_IMAGE_DEBUG").is_some() {
                    eprintln!("{tagged:#x}: {named:?}");
                }
                if let Ok(name) = named {
                    if name.starts_with("JS:rememberRequest ") {
                        found = Some((tagged, name));
                        break 'scan;
                    }
                }
            }
        }
        let (function, name) = found.expect("rememberRequest not found in node's heap");
        let mut recorded = MemoryImage {
            function,
            expect: name.to_string(),
            ..Default::default()
        };
        let mut fresh = node20();
        let again = fresh
            .name_function(function, &mut |a, b| {
                let ok = mem.read_exact_at(b, a).is_ok();
                if ok {
                    recorded.insert(a, b.to_vec());
                }
                ok
            })
            .unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(again, name);
        if std::env::var_os("BLESS").is_some() {
            std::fs::write(data_dir().join("node20-function.image"), recorded.to_text()).unwrap();
        }
        eprintln!("{name}");
    }
}
