//! Suspended async functions in V8's heap: where their objects' fields are, reading one
//! checked object, where it is parked, and who awaits it.
//!
//! An `async function` call lives in the heap as a `JSAsyncFunctionObject` (a
//! `JSGeneratorObject` plus its outer promise) for as long as it is suspended at an
//! `await`. V8's post-mortem metadata gives the instance types but not these fields,
//! so their offsets come from the layout every supported version shares (V8 11 to 13:
//! Node 20 to 24): the JSObject header, then `function`, `context`, `receiver`,
//! `input_or_debug_pos`, `resume_mode`, `continuation`, `parameters_and_registers`,
//! and for async functions `promise`. Every value read is checked (tag, map, instance
//! type) before it is trusted, as in [`super::heap`].
use std::ops::RangeInclusive;

use super::heap::{Heap, WalkError};
use super::metadata::{Layout, MetadataError, Symbols};
use super::positions::position_at;

/// Reactions followed per promise, and promises followed from one suspended call.
const MAX_REACTIONS: usize = 32;
const MAX_PROMISE_STEPS: usize = 64;
/// Context slots looked at for the awaiting generator or the promise to resolve.
const MAX_CONTEXT_SLOTS: u64 = 6;
/// Tagged fields of a Code, InterpreterData or BytecodeWrapper searched for the
/// BytecodeArray they refer to.
const MAX_HOLDER_FIELDS: u64 = 8;
/// Longest source position table decoded.
const MAX_POSITION_TABLE: usize = 1 << 20;

/// Instance types V8 gave `JSAsyncFunctionObject` where the metadata lacks the
/// constant, by the version's `JSFunction`, `JSPromise` and `BytecodeArray` types
/// (V8 11.3, 12.4, 13.6: Node 20, 22, 24).
const ASYNC_FUNCTION_TYPES: &[((u16, u16, u16), u16)] = &[
    ((2066, 2063, 191), 2106),
    ((2066, 2063, 205), 2108),
    ((2065, 2115, 186), 2110),
];

/// Which kind of suspended call.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum AsyncKind {
    AsyncFunction,
    AsyncGenerator,
}

/// Where the fields of the async objects are, from one binary's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AsyncLayout {
    pub async_function_type: u16,
    pub async_generator_type: Option<u16>,
    /// Whether the async function type came from the per-version table.
    pub type_from_fallback: bool,
    pub promise_type: u16,
    pub promise_reaction_type: u16,
    pub context_types: RangeInclusive<u16>,
    pub bytecode_array_type: u16,
    /// ByteArray and TrustedByteArray: what a source position table is.
    pub byte_array_types: Vec<u16>,
    pub function: u64,
    pub context: u64,
    pub input_or_debug_pos: u64,
    pub continuation: u64,
    pub promise: u64,
    pub js_function_context: u64,
    pub promise_reactions: u64,
    pub reaction_next: u64,
    pub reaction_fulfill_handler: u64,
    pub reaction_promise: u64,
    /// Where a Context's (or FixedArray's) first slot is.
    pub context_slots: u64,
    pub context_length: u64,
    pub bytecode_length: u64,
    pub bytecode_positions: u64,
    /// The first bytecode's offset from the BytecodeArray's start.
    pub bytecode_data: u64,
    pub byte_array_length: u64,
    pub byte_array_data: u64,
}

impl AsyncLayout {
    pub fn from_symbols(s: &Symbols, layout: &Layout) -> Result<Self, MetadataError> {
        let missing = |what: &str| MetadataError::Missing(what.to_string());
        let ty = |class: &str| {
            s.instance_type(class)
                .ok_or_else(|| missing(&format!("type_{class}")))
        };
        let field = |class: &str, f: &str| {
            s.field(class, f)
                .and_then(|v| u64::try_from(v).ok())
                .ok_or_else(|| missing(&format!("{class}::{f}")))
        };
        let promise_type = ty("JSPromise")?;
        let bytecode_array_type = ty("BytecodeArray")?;
        let generator = s.instance_type("JSAsyncGeneratorObject");
        let (async_function_type, type_from_fallback) =
            match s.instance_type("JSAsyncFunctionObject") {
                Some(t) => (t, false),
                None => {
                    let key = (
                        *layout.js_function_types.start(),
                        promise_type,
                        bytecode_array_type,
                    );
                    let from_generator = generator.map(|g| g - 1);
                    let from_table = ASYNC_FUNCTION_TYPES
                        .iter()
                        .filter(|(k, _)| *k == key)
                        .map(|&(_, t)| t)
                        .find(|t| from_generator.is_none_or(|g| g == *t));
                    (
                        from_table
                            .or(from_generator)
                            .ok_or_else(|| missing("type_JSAsyncFunctionObject"))?,
                        true,
                    )
                }
            };
        let first_context = s
            .get("FirstContextType")
            .ok_or_else(|| missing("FirstContextType"))?;
        let last_context = s
            .get("LastContextType")
            .ok_or_else(|| missing("LastContextType"))?;
        let small = |v: i64, what: &str| u16::try_from(v).map_err(|_| missing(what));
        // The JSObject header (map, properties, elements), then the generator's fields.
        let header = field("JSObject", "elements")? + 8;
        // V8 12 put the BytecodeArray's wrapper before its source position table.
        let bytecode_positions = match s.field("BytecodeArray", "wrapper") {
            Some(wrapper) => {
                u64::try_from(wrapper).map_err(|_| missing("BytecodeArray::wrapper"))? + 8
            }
            None => 32,
        };
        let byte_array_types = ["ByteArray", "TrustedByteArray"]
            .iter()
            .filter_map(|c| s.instance_type(c))
            .collect();
        Ok(Self {
            async_function_type,
            async_generator_type: generator,
            type_from_fallback,
            promise_type,
            promise_reaction_type: ty("PromiseReaction")?,
            context_types: small(first_context, "FirstContextType")?
                ..=small(last_context, "LastContextType")?,
            bytecode_array_type,
            byte_array_types,
            function: header,
            context: header + 8,
            input_or_debug_pos: header + 24,
            continuation: header + 40,
            promise: header + 56,
            js_function_context: field("JSFunction", "context")?,
            promise_reactions: header,
            reaction_next: 8,
            reaction_fulfill_handler: 24,
            reaction_promise: 32,
            context_slots: layout.fixed_array_data,
            context_length: layout.fixed_array_length,
            bytecode_length: layout.fixed_array_length,
            bytecode_positions,
            bytecode_data: field("BytecodeArray", "data")?,
            byte_array_length: layout.fixed_array_length,
            byte_array_data: layout.fixed_array_data,
        })
    }

    /// The kind of suspended call an instance type stands for.
    pub fn kind_of(&self, instance_type: u16) -> Option<AsyncKind> {
        if instance_type == self.async_function_type {
            Some(AsyncKind::AsyncFunction)
        } else if Some(instance_type) == self.async_generator_type {
            Some(AsyncKind::AsyncGenerator)
        } else {
            None
        }
    }
}

/// One suspended call, read and checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SuspendedCall {
    /// The object's untagged address.
    pub addr: u64,
    pub kind: AsyncKind,
    /// The JSFunction (tagged).
    pub function: u64,
    /// The bytecode offset of the resume point, as V8 stores it.
    pub resume_at: Option<i64>,
    /// The outer promise (tagged), for async functions.
    pub promise: Option<u64>,
}

/// Why a candidate object is not counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejected {
    /// Not a suspended call: it runs now or has finished.
    NotSuspended,
    /// A check failed: moved, freed or not an object at all.
    Check(WalkError),
}

impl From<WalkError> for Rejected {
    fn from(e: WalkError) -> Self {
        Rejected::Check(e)
    }
}

/// Reads async objects through a [`Heap`].
pub struct AsyncReader<'a> {
    pub layout: &'a AsyncLayout,
}

impl AsyncReader<'_> {
    /// Read the object at untagged `addr`, checking its type and every field it uses.
    pub fn suspended<R: FnMut(u64, &mut [u8]) -> bool>(
        &self,
        heap: &mut Heap<'_, R>,
        addr: u64,
    ) -> Result<SuspendedCall, Rejected> {
        let a = self.layout;
        let tag = heap.layout().tagging.heap_object_tag;
        let (at, ty) = heap.object(addr | tag)?;
        let kind = a.kind_of(ty).ok_or(WalkError::WrongType {
            addr: at,
            found: ty,
            expected: "JSAsyncFunctionObject",
        })?;
        let function = heap.u64_at(at + a.function)?;
        heap.function_shared(function)?;
        let context = heap.u64_at(at + a.context)?;
        let (ctx, ctx_type) = heap.object(context)?;
        if !a.context_types.contains(&ctx_type) {
            return Err(WalkError::WrongType {
                addr: ctx,
                found: ctx_type,
                expected: "Context",
            }
            .into());
        }
        let continuation = heap.u64_at(at + a.continuation)?;
        let continuation = heap
            .layout()
            .tagging
            .smi(continuation)
            .ok_or(WalkError::NotHeapObject(continuation))?;
        // -1: closed, -2: executing; a suspended call stores its resume point's id.
        if continuation < 0 {
            return Err(Rejected::NotSuspended);
        }
        let pos = heap.u64_at(at + a.input_or_debug_pos)?;
        let resume_at = heap.layout().tagging.smi(pos);
        let promise = match kind {
            AsyncKind::AsyncFunction => {
                let p = heap.u64_at(at + a.promise)?;
                let (paddr, ptype) = heap.object(p)?;
                if ptype != a.promise_type {
                    return Err(WalkError::WrongType {
                        addr: paddr,
                        found: ptype,
                        expected: "JSPromise",
                    }
                    .into());
                }
                Some(p)
            }
            AsyncKind::AsyncGenerator => None,
        };
        Ok(SuspendedCall {
            addr: at,
            kind,
            function,
            resume_at,
            promise,
        })
    }

    /// The source position (script offset) where `call` is parked: its resume point's
    /// bytecode offset looked up in the function's source position table. None when
    /// V8 has not built the table (lazy source positions) or a check fails.
    pub fn parked_position<R: FnMut(u64, &mut [u8]) -> bool>(
        &self,
        heap: &mut Heap<'_, R>,
        call: &SuspendedCall,
    ) -> Option<u32> {
        let a = self.layout;
        let resume_at = call.resume_at?;
        let bytecode = self.bytecode_array(heap, call.function)?;
        let length = heap
            .layout()
            .tagging
            .smi(heap.u64_at(bytecode + a.bytecode_length).ok()?)?;
        // V8 stores the offset from the tagged BytecodeArray pointer.
        let tag = heap.layout().tagging.heap_object_tag as i64;
        let offset = resume_at - (a.bytecode_data as i64 - tag);
        if !(0..length).contains(&offset) {
            return None;
        }
        let table = heap.u64_at(bytecode + a.bytecode_positions).ok()?;
        let (table_addr, table_type) = heap.object(table).ok()?;
        if !a.byte_array_types.contains(&table_type) {
            return None;
        }
        let len = heap
            .layout()
            .tagging
            .smi(heap.u64_at(table_addr + a.byte_array_length).ok()?)?;
        let len = usize::try_from(len)
            .ok()
            .filter(|&n| n <= MAX_POSITION_TABLE)?;
        let mut bytes = vec![0u8; len];
        if !heap.read(table_addr + a.byte_array_data, &mut bytes) {
            return None;
        }
        position_at(&bytes, offset)
    }

    /// The BytecodeArray (untagged) of JSFunction `function`: its SharedFunctionInfo's
    /// function data, directly or through the baseline Code, InterpreterData or
    /// BytecodeWrapper that holds it.
    fn bytecode_array<R: FnMut(u64, &mut [u8]) -> bool>(
        &self,
        heap: &mut Heap<'_, R>,
        function: u64,
    ) -> Option<u64> {
        let l = heap.layout();
        let sfi = heap.function_shared(function).ok()?;
        let (sfi_addr, _) = heap.object(sfi).ok()?;
        // The function data fields come before the name or scope info.
        let mut holders = Vec::new();
        for off in (8..l.sfi_name_or_scope_info).step_by(8) {
            let v = heap.u64_at(sfi_addr + off).ok()?;
            match heap.object(v) {
                Ok((at, t)) if t == self.layout.bytecode_array_type => return Some(at),
                Ok((at, _)) => holders.push(at),
                Err(_) => {}
            }
        }
        for holder in holders {
            for i in 1..MAX_HOLDER_FIELDS {
                let Ok(v) = heap.u64_at(holder + 8 * i) else {
                    break;
                };
                if let Ok((at, t)) = heap.object(v) {
                    if t == self.layout.bytecode_array_type {
                        return Some(at);
                    }
                }
            }
        }
        None
    }

    /// The suspended calls (untagged addresses, by `known`) that await `promise`: the
    /// await closures among its reactions hold their generator in their context; a
    /// promise-resolving function (`return promise` in an async function, or a
    /// `then` chain) leads on to the promise it resolves.
    pub fn awaiters<R: FnMut(u64, &mut [u8]) -> bool>(
        &self,
        heap: &mut Heap<'_, R>,
        promise: u64,
        known: &dyn Fn(u64) -> bool,
    ) -> Vec<u64> {
        let a = self.layout;
        let mut out = Vec::new();
        let mut todo = vec![promise];
        let mut steps = 0;
        while let Some(p) = todo.pop() {
            steps += 1;
            if steps > MAX_PROMISE_STEPS {
                break;
            }
            let Ok((paddr, ptype)) = heap.object(p) else {
                continue;
            };
            if ptype != a.promise_type {
                continue;
            }
            let Ok(mut reaction) = heap.u64_at(paddr + a.promise_reactions) else {
                continue;
            };
            for _ in 0..MAX_REACTIONS {
                let Ok((raddr, rtype)) = heap.object(reaction) else {
                    break;
                };
                if rtype != a.promise_reaction_type {
                    break;
                }
                // V8 13 moved `continuation_preserved_embedder_data` from the end of a
                // reaction to its start: the fields are one word later where the
                // second field is not a `next` (Smi zero or another reaction).
                let shift = if self.is_next(heap, raddr + a.reaction_next + 8) {
                    8
                } else {
                    0
                };
                if let Ok(handler) = heap.u64_at(raddr + a.reaction_fulfill_handler + shift) {
                    self.handler_targets(heap, handler, known, &mut out, &mut todo);
                }
                if let Ok(derived) = heap.u64_at(raddr + a.reaction_promise + shift) {
                    if heap.object(derived).is_ok_and(|(_, t)| t == a.promise_type) {
                        todo.push(derived);
                    }
                }
                let Ok(next) = heap.u64_at(raddr + a.reaction_next + shift) else {
                    break;
                };
                reaction = next;
            }
        }
        out
    }

    /// Whether the word at `addr` can be a reaction's `next`: Smi zero (the end of
    /// the list) or a PromiseReaction.
    fn is_next<R: FnMut(u64, &mut [u8]) -> bool>(&self, heap: &mut Heap<'_, R>, addr: u64) -> bool {
        let Ok(v) = heap.u64_at(addr) else {
            return false;
        };
        heap.layout().tagging.smi(v) == Some(0)
            || heap
                .object(v)
                .is_ok_and(|(_, t)| t == self.layout.promise_reaction_type)
    }

    /// What a reaction handler's context leads to: a known suspended call (pushed to
    /// `out`) or a promise to follow (pushed to `todo`).
    fn handler_targets<R: FnMut(u64, &mut [u8]) -> bool>(
        &self,
        heap: &mut Heap<'_, R>,
        handler: u64,
        known: &dyn Fn(u64) -> bool,
        out: &mut Vec<u64>,
        todo: &mut Vec<u64>,
    ) {
        let a = self.layout;
        if heap.function_shared(handler).is_err() {
            return;
        }
        let Ok((faddr, _)) = heap.object(handler) else {
            return;
        };
        let Ok(context) = heap.u64_at(faddr + a.js_function_context) else {
            return;
        };
        let Ok((ctx, ctx_type)) = heap.object(context) else {
            return;
        };
        if !a.context_types.contains(&ctx_type) {
            return;
        }
        let Some(len) = heap
            .u64_at(ctx + a.context_length)
            .ok()
            .and_then(|v| heap.layout().tagging.smi(v))
        else {
            return;
        };
        let slots = u64::try_from(len).unwrap_or(0).min(MAX_CONTEXT_SLOTS);
        // Slots 0 and 1 are the scope info and the previous context.
        for i in 2..slots {
            let Ok(v) = heap.u64_at(ctx + a.context_slots + 8 * i) else {
                return;
            };
            let Ok((at, t)) = heap.object(v) else {
                continue;
            };
            if a.kind_of(t).is_some() && known(at) {
                out.push(at);
            } else if t == a.promise_type {
                todo.push(v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> (Symbols, Layout) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/v8")
            .join(name);
        let s = Symbols::parse_text(&std::fs::read_to_string(path).unwrap());
        let l = Layout::from_symbols(&s).unwrap();
        (s, l)
    }

    /// Check the async layout of Node 20, 22 and 24: the instance types from the
    /// metadata, the generator fields after the JSObject header, and where the
    /// BytecodeArray keeps its source positions.
    #[test]
    fn layouts_of_node_20_22_24() {
        let (s, l) = fixture("node20.symbols");
        let a = AsyncLayout::from_symbols(&s, &l).unwrap();
        assert_eq!(
            (a.async_function_type, a.async_generator_type),
            (2106, Some(2107))
        );
        assert_eq!(
            (a.function, a.input_or_debug_pos, a.continuation, a.promise),
            (24, 48, 64, 80)
        );
        assert_eq!((a.bytecode_positions, a.bytecode_data), (32, 54));
        assert_eq!(a.context_types, 205..=214);
        let (s, l) = fixture("node22.symbols");
        let a = AsyncLayout::from_symbols(&s, &l).unwrap();
        assert_eq!(
            (
                a.async_function_type,
                a.bytecode_positions,
                a.js_function_context
            ),
            (2108, 24, 40)
        );
        let (s, l) = fixture("node24.symbols");
        let a = AsyncLayout::from_symbols(&s, &l).unwrap();
        assert_eq!(
            (
                a.async_function_type,
                a.promise_type,
                a.promise_reaction_type
            ),
            (2110, 2115, 162)
        );
        assert!(!a.type_from_fallback);
    }

    /// Check the per-version fallback for a build whose metadata lacks the
    /// JSAsyncFunctionObject type: Node 20's value, from the table (and agreeing with
    /// the async generator type next to it).
    #[test]
    fn async_function_type_fallback() {
        let (s, l) = fixture("node20.symbols");
        let text: String = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/v8/node20.symbols"),
        )
        .unwrap()
        .lines()
        .filter(|line| !line.contains("JSAsyncFunctionObject"))
        .map(|line| format!("{line}\n"))
        .collect();
        let without = Symbols::parse_text(&text);
        assert_eq!(without.len() + 1, s.len());
        let a = AsyncLayout::from_symbols(&without, &l).unwrap();
        assert_eq!(a.async_function_type, 2106);
        assert!(a.type_from_fallback);
        let no_generator: String = text
            .lines()
            .filter(|line| !line.contains("JSAsyncGeneratorObject"))
            .map(|line| format!("{line}\n"))
            .collect();
        let a = AsyncLayout::from_symbols(&Symbols::parse_text(&no_generator), &l).unwrap();
        assert_eq!(a.async_function_type, 2106);
    }
}
