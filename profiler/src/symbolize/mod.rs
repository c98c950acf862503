//! Symbolization: unwound lookup addresses → function names, with inlined frames.
//!
//! Addresses are first normalized with the process's [`AddressSpace`] (module + file
//! offset), then resolved by blazesym against the module's file. Going through file
//! offsets, rather than letting blazesym read `/proc/PID/maps` itself, means a
//! process that has exited since the capture still symbolizes, and every address
//! of one module is resolved in one batch.
//!
//! Addresses outside every module may be JIT code: [`Symbolizer::symbolize_process`]
//! names them from the runtime's perf map ([`perf_map`]), as the runtime wrote them.
pub mod perf_map;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use blazesym::symbolize::source::{Elf, Source};
use blazesym::symbolize::{CodeInfo, Input, Sym, Symbolized};

use crate::unwind::{AddressSpace, MappedModule};
use perf_map::PerfMapFile;

/// Module of frames named from a perf map.
pub const JIT_MODULE: &str = "[jit]";

/// One frame of a symbolized stack.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Frame {
    pub function: String,
    /// Basename of the module's path (empty for addresses outside every module).
    pub module: String,
    /// Source file and line of the instruction within `function`, when debug info
    /// has them.
    pub file: Option<String>,
    pub line: Option<u32>,
    /// `function` was inlined into the frame before it.
    pub inlined: bool,
}

/// Symbolizes the stacks of one capture.
pub struct Symbolizer {
    inner: blazesym::symbolize::Symbolizer,
    /// Frames per module file and file offset: each distinct address is resolved once.
    cache: HashMap<PathBuf, HashMap<u64, Vec<Frame>>>,
    /// Perf maps by pid, opened on the first address outside every module.
    perf_maps: HashMap<u32, PerfMapFile>,
    errors: Vec<String>,
    /// How many of `errors` [`Symbolizer::take_new_errors`] has looked at.
    errors_taken: usize,
    errors_told: std::collections::HashSet<String>,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

/// Where an address falls.
enum Place<'a> {
    InFile(&'a MappedModule, u64),
    /// Inside a module's range but in none of its file mappings (e.g. `.bss`).
    InModule(&'a MappedModule),
    Outside,
}

impl Symbolizer {
    pub fn new() -> Self {
        let inner = blazesym::symbolize::Symbolizer::builder()
            .enable_demangling(true)
            .enable_code_info(true)
            .enable_inlined_fns(true)
            .build();
        Symbolizer {
            inner,
            cache: HashMap::new(),
            perf_maps: HashMap::new(),
            errors: Vec::new(),
            errors_taken: 0,
            errors_told: Default::default(),
        }
    }

    /// Symbolize lookup addresses of one process. Each address yields one or more
    /// frames, root-most first: for an address in `f` with `g` inlined into it, `[f, g]`.
    /// Unknown addresses give `[unknown] <module>+0x<file offset>` (or `[unknown]
    /// 0x<addr>` outside any module); no address is ever dropped.
    pub fn symbolize(&mut self, space: &AddressSpace, addrs: &[u64]) -> Vec<Vec<Frame>> {
        self.symbolize_with(None, space, addrs)
    }

    /// [`Symbolizer::symbolize`] for process `pid`, naming addresses outside every
    /// module from its perf map ([`perf_map::path_of`]) when it has one: one frame
    /// with the name as the runtime wrote it and module [`JIT_MODULE`]. The map is
    /// re-read for addresses it lacks as the runtime appends to it.
    pub fn symbolize_process(
        &mut self,
        pid: u32,
        space: &AddressSpace,
        addrs: &[u64],
    ) -> Vec<Vec<Frame>> {
        self.symbolize_with(Some(pid), space, addrs)
    }

    fn symbolize_with(
        &mut self,
        pid: Option<u32>,
        space: &AddressSpace,
        addrs: &[u64],
    ) -> Vec<Vec<Frame>> {
        let places: Vec<Place> = addrs.iter().map(|&a| place(space, a)).collect();

        // Batch the offsets not seen before, per module file.
        let mut missing: HashMap<&PathBuf, (&MappedModule, Vec<u64>)> = HashMap::new();
        for p in &places {
            if let Place::InFile(m, off) = *p {
                if self.cached(m, off).is_none() {
                    let (_, offs) = missing.entry(&m.open_path).or_insert((m, Vec::new()));
                    offs.push(off);
                }
            }
        }
        for (module, mut offsets) in missing.into_values() {
            offsets.sort_unstable();
            offsets.dedup();
            self.resolve(module, &offsets);
        }

        let mut out = Vec::with_capacity(addrs.len());
        for (&addr, p) in addrs.iter().zip(&places) {
            out.push(match *p {
                Place::InFile(m, off) => self.cached(m, off).expect("resolved above").to_vec(),
                Place::InModule(m) => vec![unknown(
                    m.basename(),
                    format!("[unknown] {} 0x{addr:x}", m.basename()),
                )],
                Place::Outside => match pid.and_then(|pid| self.jit_name(pid, addr)) {
                    Some(function) => vec![Frame {
                        function,
                        module: JIT_MODULE.to_string(),
                        file: None,
                        line: None,
                        inlined: false,
                    }],
                    None => vec![unknown("", format!("[unknown] 0x{addr:x}"))],
                },
            });
        }
        out
    }

    /// The perf map's name of `addr` in process `pid`.
    fn jit_name(&mut self, pid: u32, addr: u64) -> Option<String> {
        let map = self
            .perf_maps
            .entry(pid)
            .or_insert_with(|| PerfMapFile::new(perf_map::path_of(pid)));
        let name = map.lookup(addr, Instant::now()).map(str::to_string);
        if let Some(e) = map.take_error() {
            self.errors.push(e);
        }
        name
    }

    /// Modules that could not be symbolized at all, and perf maps that could not be
    /// read, one line each.
    pub fn errors(&self) -> &[String] {
        &self.errors
    }

    /// The errors not taken yet, each distinct line once over the symbolizer's life, so
    /// the capture can tell the user (a corrupt ELF, a FIFO planted as a perf map)
    /// without repeating itself.
    pub fn take_new_errors(&mut self) -> Vec<String> {
        let new: Vec<String> = self.errors[self.errors_taken..]
            .iter()
            .filter(|e| self.errors_told.insert((*e).clone()))
            .cloned()
            .collect();
        self.errors_taken = self.errors.len();
        new
    }

    fn cached(&self, module: &MappedModule, offset: u64) -> Option<&[Frame]> {
        Some(self.cache.get(&module.open_path)?.get(&offset)?)
    }

    /// Resolve `offsets` of `module` with one blazesym call and cache the frames.
    fn resolve(&mut self, module: &MappedModule, offsets: &[u64]) {
        let name = module.basename();
        let src = Source::Elf(Elf::new(&module.open_path));
        let results = match self.inner.symbolize(&src, Input::FileOffset(offsets)) {
            Ok(results) => results,
            Err(e) => {
                self.errors
                    .push(format!("cannot symbolize {}: {e}", module.path));
                Vec::new()
            }
        };
        let file_cache = self.cache.entry(module.open_path.clone()).or_default();
        for (i, &off) in offsets.iter().enumerate() {
            let frames = match results.get(i) {
                Some(Symbolized::Sym(sym)) if !sym.name.is_empty() => frames_of(sym, name),
                _ => vec![unknown(name, format!("[unknown] {name}+0x{off:x}"))],
            };
            file_cache.insert(off, frames);
        }
    }
}

fn place(space: &AddressSpace, addr: u64) -> Place<'_> {
    match space.module_for(addr) {
        Some(m) => match m.file_offset(addr) {
            Some(off) => Place::InFile(m, off),
            None => Place::InModule(m),
        },
        None => Place::Outside,
    }
}

fn unknown(module: &str, function: String) -> Frame {
    Frame {
        function,
        module: module.to_string(),
        file: None,
        line: None,
        inlined: false,
    }
}

/// The function and its inlined callees, outermost first.
///
/// blazesym reports the outer function with the location of the (first) inlined call,
/// and each inlined function with the location inside it, so each frame's
/// `file` and `line` are where execution is within that frame's function.
fn frames_of(sym: &Sym<'_>, module: &str) -> Vec<Frame> {
    let outer = Frame {
        function: sym.name.to_string(),
        module: module.to_string(),
        file: sym.code_info.as_deref().map(code_file),
        line: sym.code_info.as_deref().and_then(|i| i.line),
        inlined: false,
    };
    std::iter::once(outer)
        .chain(sym.inlined.iter().map(|f| Frame {
            function: f.name.to_string(),
            module: module.to_string(),
            file: f.code_info.as_ref().map(code_file),
            line: f.code_info.as_ref().and_then(|i| i.line),
            inlined: true,
        }))
        .collect()
}

fn code_file(info: &CodeInfo<'_>) -> String {
    info.to_path().display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procfs;
    use crate::unwind::testutil::level_a;
    use crate::unwind::FileMapping;

    fn own_space() -> AddressSpace {
        let pid = std::process::id();
        AddressSpace::from_maps(pid, &procfs::read_maps(pid).unwrap())
    }

    /// Check that unknown addresses are named by module and file offset, or by address outside modules.
    #[test]
    fn formats_unknown_addresses() {
        let module = MappedModule {
            path: "/nonexistent/libfoo.so".into(),
            open_path: "/nonexistent/libfoo.so".into(),
            avma: 0x1000..0x4000,
            bias: 0x1000,
            build_id: None,
            mappings: vec![FileMapping {
                avma: 0x1000..0x2000,
                offset: 0x3000,
                exec: true,
            }],
        };
        let space = AddressSpace::from_modules(vec![module]);
        let mut s = Symbolizer::new();
        let out = s.symbolize(&space, &[0x1234, 0x9999, 0x3000]);
        let names: Vec<&str> = out.iter().map(|f| f[0].function.as_str()).collect();
        assert_eq!(
            names,
            [
                "[unknown] libfoo.so+0x3234",
                "[unknown] 0x9999",
                "[unknown] libfoo.so 0x3000"
            ]
        );
        assert_eq!(out[0][0].module, "libfoo.so");
        assert_eq!(out[1][0].module, "");
        assert_eq!(s.errors().len(), 1, "{:?}", s.errors());
    }

    /// Check that addresses outside every module are named from the process's perf map
    /// with module `[jit]`, by `symbolize_process` only, and missing ones stay unknown.
    #[test]
    fn names_jit_code_from_perf_map() {
        let pid = std::process::id();
        let path = std::path::PathBuf::from(format!("/tmp/perf-{pid}.map"));
        std::fs::write(
            &path,
            b"1000 100 JS:*rememberRequest /srv/leak.js:5\nnot a line\n",
        )
        .unwrap();
        let space = own_space();
        let mut s = Symbolizer::new();
        let jit = s.symbolize_process(pid, &space, &[0x1010, 0x2000]);
        let plain = s.symbolize(&space, &[0x1010]);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            jit[0],
            [Frame {
                function: "JS:*rememberRequest /srv/leak.js:5".into(),
                module: JIT_MODULE.into(),
                file: None,
                line: None,
                inlined: false,
            }]
        );
        assert_eq!(jit[1][0].function, "[unknown] 0x2000");
        assert_eq!(plain[0][0].function, "[unknown] 0x1010");
        assert!(s.errors().is_empty(), "{:?}", s.errors());
    }

    /// Check that a function of the test binary symbolizes to its demangled name with a source line.
    #[test]
    fn symbolizes_own_function() {
        let space = own_space();
        let addr = level_a as *const () as u64;
        let mut s = Symbolizer::new();
        let out = s.symbolize(&space, &[addr, addr]);
        assert_eq!(out[0], out[1]);
        let f = &out[0][0];
        assert!(f.function.ends_with("unwind::testutil::level_a"), "{f:?}");
        assert!(!f.inlined);
        let exe = std::env::current_exe().unwrap();
        assert_eq!(f.module, exe.file_name().unwrap().to_str().unwrap());
        if has_debug_info() {
            let file = f.file.as_deref().unwrap_or_default();
            assert!(file.ends_with("testutil.rs") && f.line.is_some(), "{f:?}");
        }
        assert!(s.errors().is_empty(), "{:?}", s.errors());
    }

    /// Whether the test binary carries DWARF (the release profile has none).
    fn has_debug_info() -> bool {
        use object::Object;
        let bytes = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        object::File::parse(&*bytes)
            .unwrap()
            .section_by_name(".debug_line")
            .is_some()
    }

    /// Check that an address in an inlined callee gives [caller, callee], the callee marked inlined.
    #[test]
    fn inlined_callee_comes_after_its_caller() {
        let ip = outer_with_inlined_callee();
        let out = Symbolizer::new().symbolize(&own_space(), &[ip]);
        let chain = &out[0];
        assert!(
            chain[0].function.ends_with("outer_with_inlined_callee"),
            "{chain:#?}"
        );
        assert!(!chain[0].inlined);
        if has_debug_info() {
            assert_eq!(chain.len(), 2, "{chain:#?}");
            assert!(chain[1].function.ends_with("inlined_callee"), "{chain:#?}");
            assert!(chain[1].inlined);
            assert!(chain.iter().all(|f| f
                .file
                .as_deref()
                .is_some_and(|p| p.ends_with("symbolize/mod.rs"))
                && f.line.is_some()));
        }
    }

    #[inline(never)]
    fn outer_with_inlined_callee() -> u64 {
        std::hint::black_box(inlined_callee())
    }

    #[inline(always)]
    fn inlined_callee() -> u64 {
        let ip: u64;
        // SAFETY: only reads rip into a register.
        unsafe {
            core::arch::asm!("lea {ip}, [rip]", ip = out(reg) ip, options(nomem, nostack, preserves_flags));
        }
        ip
    }

    /// Check that a libc function symbolizes by name through its file offset.
    #[test]
    fn symbolizes_libc_function() {
        let space = own_space();
        let addr = libc::getpid as *const () as u64;
        let out = Symbolizer::new().symbolize(&space, &[addr]);
        assert!(out[0][0].module.starts_with("libc"), "{:?}", out[0]);
        assert!(out[0][0].function.contains("getpid"), "{:?}", out[0]);
    }
}
