//! Walks V8 heap objects through a memory-reading closure: a JS function's name, its
//! script's name and the line it starts on.
//!
//! Nothing here trusts what it reads: every object's tag is checked and its map read,
//! and the map must itself be a map (its own map has `MAP_TYPE`) of the expected
//! instance type. A moved or freed object therefore fails the walk ([`WalkError`])
//! rather than naming a frame wrong.
use super::metadata::Layout;

/// Longest name read (function and script names); longer ones are cut.
const MAX_NAME: usize = 1024;
/// Longest script source scanned for line ends when V8 has not computed them.
const MAX_SOURCE: usize = 8 << 20;
/// ScopeInfo slots looked at for the function name and position.
const SCOPE_SLOTS: u64 = 24;

/// Why an object walk stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WalkError {
    #[error("memory at {0:#x} cannot be read")]
    Unreadable(u64),
    #[error("{0:#x} is not a heap object")]
    NotHeapObject(u64),
    #[error("object at {addr:#x} has type {found}, not {expected}")]
    WrongType {
        addr: u64,
        found: u16,
        expected: &'static str,
    },
    #[error("string at {0:#x} has an unsupported representation")]
    UnsupportedString(u64),
}

/// What one SharedFunctionInfo says about its function.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FunctionInfo {
    /// The function's name; empty for an anonymous function.
    pub name: String,
    /// The script's name (a path or URL), if it has one.
    pub script: Option<String>,
    /// 1-based line of the function's start in its script, when known.
    pub line: Option<u32>,
    /// The source position the line comes from.
    pub start: Option<u32>,
}

/// Object addresses that identify a function's naming inputs: if all three are the
/// same objects (same address and type), the names read from them are the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SfiKey {
    pub sfi: u64,
    pub name_or_scope_info: u64,
    pub script: u64,
}

/// One process's V8 heap, read through `read(addr, buf) -> bool`.
pub struct Heap<'a, R> {
    layout: &'a Layout,
    read: R,
}

impl<'a, R: FnMut(u64, &mut [u8]) -> bool> Heap<'a, R> {
    pub fn new(layout: &'a Layout, read: R) -> Self {
        Self { layout, read }
    }

    pub fn layout(&self) -> &'a Layout {
        self.layout
    }

    /// Read `buf.len()` bytes at `addr`; false when they cannot be read.
    pub fn read(&mut self, addr: u64, buf: &mut [u8]) -> bool {
        (self.read)(addr, buf)
    }

    /// The 1-based line of source position `pos` in the Script `script` (tagged), after
    /// checking its type.
    pub fn line_in_script(&mut self, script: u64, pos: u32) -> Option<u32> {
        let l = self.layout;
        let addr = self.typed(script, l.script_type, "Script").ok()?;
        self.line_of(addr, pos).ok().flatten()
    }

    fn bytes(&mut self, addr: u64, len: usize) -> Result<Vec<u8>, WalkError> {
        let mut buf = vec![0u8; len];
        if (self.read)(addr, &mut buf) {
            Ok(buf)
        } else {
            Err(WalkError::Unreadable(addr))
        }
    }

    pub fn u64_at(&mut self, addr: u64) -> Result<u64, WalkError> {
        let mut b = [0u8; 8];
        if (self.read)(addr, &mut b) {
            Ok(u64::from_le_bytes(b))
        } else {
            Err(WalkError::Unreadable(addr))
        }
    }

    fn u32_at(&mut self, addr: u64) -> Result<u32, WalkError> {
        let mut b = [0u8; 4];
        if (self.read)(addr, &mut b) {
            Ok(u32::from_le_bytes(b))
        } else {
            Err(WalkError::Unreadable(addr))
        }
    }

    fn u16_at(&mut self, addr: u64) -> Result<u16, WalkError> {
        let mut b = [0u8; 2];
        if (self.read)(addr, &mut b) {
            Ok(u16::from_le_bytes(b))
        } else {
            Err(WalkError::Unreadable(addr))
        }
    }

    /// The untagged address and instance type of the object `tagged` points to, after
    /// checking that its map is a map.
    pub fn object(&mut self, tagged: u64) -> Result<(u64, u16), WalkError> {
        let l = self.layout;
        if !l.tagging.is_heap_object(tagged) || tagged < 0x1000 {
            return Err(WalkError::NotHeapObject(tagged));
        }
        let mut addr = l.tagging.untag(tagged);
        let mut map = self.u64_at(addr + l.map)?;
        if map & l.tagging.heap_object_tag_mask == 0 && map >= 0x1000 {
            // A forwarding address: the garbage collector moved the object there and
            // has not freed the old copy yet. The new copy is checked like any object.
            addr = map;
            map = self.u64_at(addr + l.map)?;
        }
        if !l.tagging.is_heap_object(map) {
            return Err(WalkError::NotHeapObject(map));
        }
        let map_addr = l.tagging.untag(map);
        let meta = self.u64_at(map_addr + l.map)?;
        if !l.tagging.is_heap_object(meta) {
            return Err(WalkError::NotHeapObject(meta));
        }
        let meta_type = self.u16_at(l.tagging.untag(meta) + l.map_instance_type)?;
        if meta_type != l.map_type {
            return Err(WalkError::WrongType {
                addr: map_addr,
                found: meta_type,
                expected: "Map",
            });
        }
        Ok((addr, self.u16_at(map_addr + l.map_instance_type)?))
    }

    /// The object `tagged` points to, if it has instance type `want`.
    fn typed(&mut self, tagged: u64, want: u16, name: &'static str) -> Result<u64, WalkError> {
        let (addr, found) = self.object(tagged)?;
        if found == want {
            Ok(addr)
        } else {
            Err(WalkError::WrongType {
                addr,
                found,
                expected: name,
            })
        }
    }

    /// The SharedFunctionInfo (tagged) of the JSFunction `tagged` points to.
    pub fn function_shared(&mut self, tagged: u64) -> Result<u64, WalkError> {
        let l = self.layout;
        let (addr, found) = self.object(tagged)?;
        if !l.js_function_types.contains(&found) {
            return Err(WalkError::WrongType {
                addr,
                found,
                expected: "JSFunction",
            });
        }
        self.u64_at(addr + l.js_function_shared)
    }

    /// The objects a function's names come from, checked: the SharedFunctionInfo and
    /// the tagged values of its name-or-scope-info and script fields.
    pub fn sfi_key(&mut self, sfi: u64) -> Result<SfiKey, WalkError> {
        let l = self.layout;
        let addr = self.typed(sfi, l.sfi_type, "SharedFunctionInfo")?;
        Ok(SfiKey {
            sfi,
            name_or_scope_info: self.u64_at(addr + l.sfi_name_or_scope_info)?,
            script: self.u64_at(addr + l.sfi_script)?,
        })
    }

    /// Read the names behind `key` (see [`Heap::sfi_key`]).
    pub fn function_info(&mut self, key: SfiKey) -> Result<FunctionInfo, WalkError> {
        let l = self.layout;
        let mut info = FunctionInfo::default();
        let (nosi, ty) = self.object(key.name_or_scope_info)?;
        if ty == l.scope_info_type {
            let (name, start) = self.scope_info(nosi)?;
            info.name = name;
            info.start = start;
        } else if ty < l.strings.first_nonstring_type {
            info.name = self.string(key.name_or_scope_info)?;
        }
        // Builtins and API functions have no script (undefined or a non-Script object).
        if let Ok(script) = self.typed(key.script, l.script_type, "Script") {
            let name = self.u64_at(script + l.script_name)?;
            info.script = self.string(name).ok().filter(|s| !s.is_empty());
            if let Some(pos) = info.start {
                info.line = self.line_of(script, pos).ok().flatten();
            }
        }
        Ok(info)
    }

    /// The function name and start position in a ScopeInfo. Its layout changes with
    /// every V8 version and has no metadata beyond the first slots: after the context
    /// locals (a name and an info slot each) the first non-empty string is the
    /// function name (an anonymous function's own name slot holds the empty string;
    /// its inferred name, as in `obj.handler = function () {}`, follows, as V8's
    /// `DebugName` takes it), and the first pair of increasing small integers is its
    /// start and end position. The outer scope's ScopeInfo comes after both names, so
    /// the scan stops there: what follows is not this function's (in V8 13 the slots
    /// after it run past the object, into the next one's name).
    fn scope_info(&mut self, addr: u64) -> Result<(String, Option<u32>), WalkError> {
        let l = self.layout;
        let data = addr + l.map + 8;
        let slots = self.bytes(data, (SCOPE_SLOTS * 8) as usize)?;
        let slot = |i: u64| -> u64 {
            let i = i as usize * 8;
            u64::from_le_bytes(slots[i..i + 8].try_into().expect("8 bytes"))
        };
        let locals = l
            .tagging
            .smi(slot(l.scope_info_context_locals))
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0);
        let mut name = String::new();
        // V8 13 moved the position into the fixed slots, right before the variables:
        // flags, parameter count, context local count, start, end.
        let fixed_position = (l.scope_info_first_vars >= 5)
            .then(|| {
                let at = l.scope_info_first_vars - 2;
                let start = l.tagging.smi(slot(at))?;
                let end = l.tagging.smi(slot(at + 1))?;
                (0 <= start && start < end).then_some(start)
            })
            .flatten();
        let mut prev: Option<i64> = None;
        for i in (l.scope_info_first_vars + 2 * locals)..SCOPE_SLOTS {
            let v = slot(i);
            if name.is_empty() && l.tagging.is_heap_object(v) {
                match self.object(v) {
                    Ok((_, ty)) if ty == l.scope_info_type => break,
                    Ok((_, ty)) if ty < l.strings.first_nonstring_type => {
                        name = self.string(v).unwrap_or_default();
                    }
                    _ => {}
                }
            }
            let cur = l.tagging.smi(v);
            if l.scope_info_first_vars >= 5 {
                if !name.is_empty() {
                    return Ok((name, fixed_position.and_then(|p| u32::try_from(p).ok())));
                }
                continue;
            }
            if let (Some(start), Some(end)) = (prev, cur) {
                if 0 <= start && start < end {
                    return Ok((name, u32::try_from(start).ok()));
                }
            }
            prev = cur;
        }
        Ok((name, fixed_position.and_then(|p| u32::try_from(p).ok())))
    }

    /// The 1-based line of source position `pos` in `script`: from the script's line
    /// ends when V8 has computed them, else from its source.
    fn line_of(&mut self, script: u64, pos: u32) -> Result<Option<u32>, WalkError> {
        let l = self.layout;
        let ends = self.u64_at(script + l.script_line_ends)?;
        if let Ok(arr) = self.typed(ends, l.fixed_array_type, "FixedArray") {
            let len = self.smi_at(arr + l.fixed_array_length)?;
            if len > 0 && len < 1 << 22 {
                let raw = self.bytes(arr + l.fixed_array_data, len as usize * 8)?;
                let before = raw
                    .chunks_exact(8)
                    .filter_map(|c| l.tagging.smi(u64::from_le_bytes(c.try_into().ok()?)))
                    .take_while(|&end| end < i64::from(pos))
                    .count();
                return Ok(u32::try_from(before + 1).ok());
            }
        }
        let source = self.u64_at(script + l.script_source)?;
        let mut newlines = 0u32;
        let mut seen = 0usize;
        let mut done = false;
        self.string_chunks(source, MAX_SOURCE, &mut |chunk| {
            for &b in chunk {
                if seen >= pos as usize {
                    done = true;
                    return false;
                }
                seen += 1;
                newlines += u32::from(b == b'\n');
            }
            true
        })?;
        Ok(done.then_some(newlines + 1))
    }

    fn smi_at(&mut self, addr: u64) -> Result<i64, WalkError> {
        let v = self.u64_at(addr)?;
        self.layout
            .tagging
            .smi(v)
            .ok_or(WalkError::NotHeapObject(v))
    }

    /// A string object as UTF-8 (one-byte strings as Latin-1), at most [`MAX_NAME`] bytes.
    pub fn string(&mut self, tagged: u64) -> Result<String, WalkError> {
        let mut out = String::new();
        self.string_chunks(tagged, MAX_NAME, &mut |chunk| {
            out.extend(chunk.iter().map(|&b| char::from(b)));
            true
        })?;
        Ok(out)
    }

    /// Feed the characters of a string to `f` (which returns false to stop), through
    /// cons and thin strings, up to `max` characters. External strings are not read.
    fn string_chunks(
        &mut self,
        tagged: u64,
        max: usize,
        f: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<(), WalkError> {
        let mut budget = max;
        let mut todo = vec![tagged];
        while let Some(t) = todo.pop() {
            if budget == 0 || todo.len() > 64 {
                break;
            }
            let l = self.layout;
            let s = &l.strings;
            let (addr, ty) = self.object(t)?;
            if ty >= s.first_nonstring_type {
                return Err(WalkError::WrongType {
                    addr,
                    found: ty,
                    expected: "String",
                });
            }
            match ty & s.representation_mask {
                r if r == s.seq_tag => {
                    // Two-byte strings are fed one byte per UTF-16 unit (`?` beyond
                    // Latin-1), so that positions, which count units, stay right.
                    let width = if ty & s.encoding_mask == s.one_byte_tag {
                        1
                    } else {
                        2
                    };
                    let len = self.u32_at(addr + s.length)? as usize;
                    let mut off = 0usize;
                    while off < len.min(budget) {
                        let n = (len.min(budget) - off).min(64 << 10);
                        let at = addr + s.seq_chars + (off * width) as u64;
                        let raw = self.bytes(at, n * width)?;
                        let chunk = if width == 1 {
                            raw
                        } else {
                            raw.chunks_exact(2)
                                .map(|u| match u16::from_le_bytes([u[0], u[1]]) {
                                    c @ 0..=0xff => c as u8,
                                    _ => b'?',
                                })
                                .collect()
                        };
                        if !f(&chunk) {
                            return Ok(());
                        }
                        off += n;
                    }
                    budget -= len.min(budget);
                }
                r if r == s.cons_tag => {
                    let first = self.u64_at(addr + s.cons_first)?;
                    let second = self.u64_at(addr + s.cons_second)?;
                    todo.push(second);
                    todo.push(first);
                }
                r if r == s.thin_tag => todo.push(self.u64_at(addr + s.thin_actual)?),
                _ => return Err(WalkError::UnsupportedString(addr)),
            }
        }
        Ok(())
    }
}
