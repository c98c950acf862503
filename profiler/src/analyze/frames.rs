//! Frame-name heuristics shared by the verdicts: which frames are allocator internals,
//! language-runtime plumbing or wait machinery, and which frame a verdict names (the
//! culprit of a growing stack, the code below a lock).
//!
//! Names only: every rule here reads frame names, root first, as the stacks stage
//! gives them.

/// Whether a frame belongs to an allocator's internals or entry points.
pub fn is_allocator_frame(name: &str) -> bool {
    const NAMES: &[&str] = &[
        "malloc",
        "calloc",
        "realloc",
        "reallocarray",
        "free",
        "memalign",
        "aligned_alloc",
        "posix_memalign",
        "valloc",
        "pvalloc",
        "sysmalloc",
        "sysmalloc_mmap",
        "new_heap",
        "alloc_new_heap",
        "grow_heap",
        "arena_get2",
        "tcache_init",
        "alloc_meta",
        "alloc_group",
        "alloc_slot",
        "expand_heap",
        "operator new",
        "operator new[]",
    ];
    let base = name.split('(').next().unwrap_or(name).trim();
    // glibc's internal aliases: __GI___libc_malloc is __libc_malloc.
    let base = base.strip_prefix("__GI_").unwrap_or(base);
    let stripped = base.trim_start_matches('_');
    NAMES.contains(&base)
        || NAMES.contains(&stripped)
        || base.starts_with("__libc_")
            && (base.contains("alloc") || base.contains("memalign") || base.ends_with("free"))
        || base.starts_with("_int_")
        || base.ends_with("morecore")
        || base.starts_with("__malloc_")
        || base.starts_with("je_")
        || base.starts_with("_rjem_")
        || base.starts_with("tcmalloc::")
        || base.starts_with("tc_")
        || base.starts_with("mi_")
        || base.starts_with("_mi_")
}

/// The frame a headline names: the innermost frame of the application's own code, or,
/// when the stack has none (all runtime), the innermost that is not allocator or libc
/// plumbing.
pub fn culprit(frames: &[String]) -> &str {
    culprit_index(frames)
        .map(|i| frames[i].as_str())
        .unwrap_or("[unknown]")
}

/// Where [`culprit`] is in `frames`; None only for an empty stack.
fn culprit_index(frames: &[String]) -> Option<usize> {
    // Between a JS function and the allocator lie V8 stubs and labels whose names
    // follow no pattern (`construct_stub_create_deopt_addr`): when the application's
    // JavaScript is on the stack, its innermost frame is the answer.
    frames
        .iter()
        .rposition(|f| is_application_js(f))
        .or_else(|| {
            frames
                .iter()
                .rposition(|f| !is_plumbing(f) && !is_runtime_frame(f))
        })
        .or_else(|| frames.iter().rposition(|f| !is_plumbing(f)))
        .or(frames.len().checked_sub(1))
}

/// Allocator internals, system-call wrappers and unknown frames.
fn is_plumbing(frame: &str) -> bool {
    is_allocator_frame(frame)
        || frame.starts_with('[')
        || frame.contains("mmap")
        || frame.contains("brk")
}

/// Code of a language runtime or of process start-up rather than of the application:
/// V8 and Node internals (including Node's own JavaScript, `node:` modules, and its
/// HTTP parser llhttp), libuv, Rust's standard library, thread and process entry
/// points. A leak in a Node service shows as `AllocateUninitialized` under
/// `Buffer.alloc`; what the engineer needs named is the JavaScript function that
/// called it.
fn is_runtime_frame(frame: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "v8::",
        "node::",
        "Builtins_",
        "Builtin:",
        "Bytecode",
        "uv_",
        "uv__",
        // Node's HTTP parser, which calls the request handler.
        "llhttp_",
        "std::",
        "core::",
        "alloc::",
        "<alloc::",
        "<core::",
        "<std::",
        "__rust_",
        "__rdl_",
        "_start",
        "__libc_start",
        "start_thread",
        "clone",
    ];
    if is_js(frame) {
        return !is_application_js(frame);
    }
    PREFIXES.iter().any(|p| frame.starts_with(p))
}

/// A JavaScript frame, as V8 names it in its perf map.
fn is_js(frame: &str) -> bool {
    ["JS:", "Script:", "Eval:"]
        .iter()
        .any(|p| frame.starts_with(p))
}

/// A JavaScript frame from a perf map (`JS:*handle /app/server.js:40:3`) that is not
/// one of Node's own modules.
fn is_application_js(frame: &str) -> bool {
    is_js(frame) && frame.contains(' ') && !frame.contains(" node:")
}

/// The code that began a database transaction, from the stack that wrote its `BEGIN`.
///
/// - JavaScript: the innermost frame of the application outside `node_modules`. An
///   `await` before the write (TypeORM awaits twice before it sends `START
///   TRANSACTION`) leaves only the microtask that resumed the library on the stack:
///   then the outermost `node_modules` frame, the library's entry point from the event
///   loop. A stack with Node's frames only names nothing.
/// - Native code: the innermost frame that is neither runtime, libpq (`PQ*`, `pq*`),
///   a system-call wrapper nor a compiler thunk.
pub fn transaction_owner(frames: &[String]) -> Option<&str> {
    const CLIENT_PLUMBING: &[&str] =
        &["_", "[", "{", "void ", "PQ", "pq", "write", "send", "libc_"];
    if frames.iter().any(|f| is_js(f)) {
        return frames
            .iter()
            .rev()
            .find(|f| is_application_js(f) && !f.contains("/node_modules/"))
            .or_else(|| frames.iter().find(|f| f.contains("/node_modules/")))
            .map(String::as_str);
    }
    frames
        .iter()
        .rev()
        .find(|f| {
            !is_runtime_frame(f)
                && !is_process_root(f)
                && !CLIENT_PLUMBING.iter().any(|p| f.starts_with(p))
        })
        .map(String::as_str)
}

/// The culprit with its caller, e.g. `map_region (from leak_sessions)`: the innermost
/// frame of user code is often a shared helper that the growing and the churning paths
/// both go through, and its caller is what tells them apart. Runtime frames between
/// the two are skipped.
pub fn culprit_with_caller(frames: &[String]) -> String {
    let Some(at) = culprit_index(frames) else {
        return "[unknown]".to_string();
    };
    let name = &frames[at];
    let caller = frames[..at]
        .iter()
        .rev()
        .find(|f| !is_runtime_frame(f) && !f.starts_with('['))
        .filter(|f| !is_process_root(f));
    match caller {
        Some(caller) => format!("{name} (from {caller})"),
        None => name.to_string(),
    }
}

/// A flamegraph root such as `node (4242)`, not a function.
fn is_process_root(frame: &str) -> bool {
    frame
        .strip_suffix(')')
        .and_then(|f| f.rsplit_once(" ("))
        .is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
}

/// Frames that implement waiting rather than being the code that waits.
fn is_wait_machinery(name: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "_",
        "pthread_",
        "futex",
        "syscall",
        "sem_",
        "lll_",
        "std::sys",
        "std::sync",
        "std::thread::park",
        "core::",
        "parking_lot",
        "tokio::runtime::park",
        "[unknown]",
        "epoll_",
        "poll",
        "select",
        "recv",
        "read",
        "accept",
        "connect",
        "libc_",
        "sleep",
        "nanosleep",
        "clock_nanosleep",
        "usleep",
        "<std::sync",
        "<std::sys",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The leaf-most frame that is not wait machinery: the code that asked to wait. When
/// the application's JavaScript is on the stack, its innermost frame, as for the memory
/// verdict: V8 and Node frames between it and the wait name no application code.
pub fn frame_below_lock(stack_root_first: &[String]) -> Option<String> {
    if let Some(js) = stack_root_first.iter().rev().find(|f| is_application_js(f)) {
        return Some(js.clone());
    }
    stack_root_first
        .iter()
        .rev()
        .find(|f| !is_wait_machinery(f))
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    /// Check that a wait under application JavaScript names its innermost JS frame,
    /// whether named from V8's heap or from a perf map, and never a builtin's.
    #[test]
    fn wait_under_javascript_names_the_js_frame() {
        let stack = frames(&[
            "node (7)",
            "uv_run",
            "JS:processTimers node:internal/timers",
            "JS:waitForSlot /app/pool.js:12",
            "JS:wait",
            "Builtins_AtomicsWait",
            "v8::internal::FutexEmulation::Wait(v8::internal::Isolate*)",
            "v8::base::ConditionVariable::WaitFor(v8::base::Mutex*, v8::base::TimeDelta const&)",
            "pthread_cond_timedwait",
        ]);
        assert_eq!(
            frame_below_lock(&stack).as_deref(),
            Some("JS:waitForSlot /app/pool.js:12")
        );
        let native = frames(&["main", "acquire_nested", "pthread_mutex_lock"]);
        assert_eq!(frame_below_lock(&native).as_deref(), Some("acquire_nested"));
    }

    /// Check that a transaction's owner is the application's own JavaScript above the
    /// driver and the ORM in node_modules, and the innermost application frame in a
    /// native program.
    #[test]
    fn transaction_owner_skips_drivers_and_node_internals() {
        let stack = frames(&[
            "node (7)",
            "JS:processTicksAndRejections node:internal/process/task_queues",
            "JS:insertOrder /srv/app/orders.js:63",
            "JS:transaction /srv/app/node_modules/typeorm/entity-manager/EntityManager.js:60",
            "JS:query /srv/app/node_modules/pg/lib/client.js:520",
            "JS:Socket._writeGeneric node:net",
            "node::StreamBase::WriteString",
            "uv_try_write",
            "write",
        ]);
        assert_eq!(
            transaction_owner(&stack),
            Some("JS:insertOrder /srv/app/orders.js:63")
        );
        // Resumed by a microtask after an await: the library's entry point.
        let resumed = frames(&[
            "uv_run",
            "JS:processTicksAndRejections node:internal/process/task_queues",
            "Builtins_RunMicrotasks",
            "JS:(anonymous)",
            "JS:query /srv/app/node_modules/typeorm/driver/postgres/PostgresQueryRunner.js:185",
            "JS:query /srv/app/node_modules/pg/lib/client.js:668",
            "JS:Socket._writeGeneric node:net",
            "{virtual override thunk({offset(-88)}, node::LibuvStreamWrap::DoTryWrite(uv_buf_t**, unsigned long*))}",
            "__GI___libc_write",
        ]);
        assert_eq!(
            transaction_owner(&resumed),
            Some(
                "JS:query /srv/app/node_modules/typeorm/driver/postgres/PostgresQueryRunner.js:185"
            )
        );
        assert_eq!(
            transaction_owner(&resumed[6..]),
            None,
            "Node's own frames only"
        );
        let native = frames(&[
            "main",
            "place_order",
            "PQexec",
            "pqSendQuery",
            "__libc_send",
        ]);
        assert_eq!(transaction_owner(&native), Some("place_order"));
    }

    /// Check that the caller is named only when there is one worth naming.
    #[test]
    fn culprit_caller_is_skipped_at_the_root_and_for_unknown_frames() {
        assert_eq!(
            culprit_with_caller(&frames(&["main", "grow", "malloc"])),
            "grow (from main)"
        );
        assert_eq!(culprit_with_caller(&frames(&["grow", "malloc"])), "grow");
        assert_eq!(culprit_with_caller(&frames(&["[unknown]", "grow"])), "grow");
        assert_eq!(culprit_with_caller(&frames(&["node (7)", "grow"])), "grow");
        assert_eq!(culprit_with_caller(&[]), "[unknown]");
        // Node: the application's JavaScript is named, not V8's allocator or Node's
        // own modules.
        let node = frames(&[
            "node (15017)",
            "_start",
            "node::Start(int, char**)",
            "uv_run",
            "Builtins_JSEntry",
            "JS:^processTimers node:internal/timers:504:25",
            "JS:*handleRequest /app/server.js:40:3",
            "JS:^cacheSession /app/cache.js:12:9",
            "JS:^alloc node:buffer:391:30",
            "Builtins_CEntry_Return1_ArgvOnStack_BuiltinExit",
            "v8::internal::BackingStore::Allocate(v8::internal::Isolate*, unsigned long)",
            "node::NodeArrayBufferAllocator::AllocateUninitialized(unsigned long)",
            "malloc",
        ]);
        assert_eq!(
            culprit_with_caller(&node),
            "JS:^cacheSession /app/cache.js:12:9 (from JS:*handleRequest /app/server.js:40:3)"
        );
        // V8 stubs without a recognisable name between the JS function and malloc.
        let stub = frames(&[
            "JS:^rememberRequest /app/leak.js:20:25",
            "Builtins_InterpreterEntryTrampoline",
            "construct_stub_create_deopt_addr",
            "JS:^FastBuffer node:internal/buffer:960:14",
            "node::NodeArrayBufferAllocator::Allocate(unsigned long)",
        ]);
        assert_eq!(culprit(&stub), "JS:^rememberRequest /app/leak.js:20:25");
        // An anonymous request handler: its caller is Node's HTTP parser, not worth
        // naming.
        let handler = frames(&[
            "uv__read",
            "llhttp__internal__run",
            "llhttp_execute",
            "JS:parserOnIncoming node:_http_server",
            "JS:emit node:events",
            "JS:(anonymous) /srv/leak.js:8",
            "JS:createUnsafeBuffer node:internal/buffer",
            "node::NodeArrayBufferAllocator::AllocateUninitialized(unsigned long)",
            "mmap",
        ]);
        assert_eq!(
            culprit_with_caller(&handler),
            "JS:(anonymous) /srv/leak.js:8"
        );
        // All runtime: the innermost non-allocator frame.
        assert_eq!(
            culprit(&frames(&[
                "_start",
                "node::Start()",
                "v8::Heap::Grow()",
                "mmap64"
            ])),
            "v8::Heap::Grow()"
        );
        // Rust: the application's function, not RawVec's growth.
        assert_eq!(
            culprit(&frames(&[
                "main",
                "app::cache::insert",
                "alloc::raw_vec::RawVec<T,A>::grow_one",
                "__rust_alloc",
                "malloc"
            ])),
            "app::cache::insert"
        );
        assert_eq!(
            culprit_with_caller(&frames(&[
                "alloc_with(std::function<void* (unsigned long)>)",
                "grow"
            ])),
            "grow (from alloc_with(std::function<void* (unsigned long)>))"
        );
    }

    /// Check which frames count as allocator frames.
    #[test]
    fn allocator_frames() {
        for f in [
            "malloc",
            "__libc_malloc",
            "_int_malloc",
            "sysmalloc",
            "je_malloc",
            "__malloc_alloc_meta",
            "mi_malloc_aligned",
            "operator new(unsigned long)",
        ] {
            assert!(is_allocator_frame(f), "{f}");
        }
        for f in [
            "main",
            "cache_insert_session",
            "__mmap64",
            "leak_sessions",
            "malloc_wrapper_in_app",
        ] {
            assert!(!is_allocator_frame(f), "{f}");
        }
    }

    /// Check that the frame below the lock skips libc, pthread and Rust std machinery.
    #[test]
    fn finds_frame_below_lock() {
        let rust: Vec<String> = [
            "main",
            "pool::wait_for_slot",
            "std::sync::poison::condvar::Condvar::wait",
            "std::sys::pal::unix::futex::futex_wait",
            "syscall",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            frame_below_lock(&rust).as_deref(),
            Some("pool::wait_for_slot")
        );
        assert_eq!(frame_below_lock(&[]), None);
    }
}
