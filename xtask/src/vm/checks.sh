# End-to-end smoke checks of the profiler on the running kernel, for `cargo xtask
# vm-test`. Runs under busybox sh, inside a QEMU guest or on the host.
#
# Environment: PROFILER (the release binary), PROGS (static test programs), WORK (an
# empty scratch directory). Prints one line per check:
#   VMTEST <check> PASS|FAIL|UNAVAILABLE <detail>
# plus VMTEST-NOTE lines (what -v said about the kernel) for the log.
# and, after a FAIL, the profiler's own output indented under it. Every step is
# bounded in time: the whole script ends by itself.

log() { echo "  | $*"; }

result() {
    echo "VMTEST $1 $2 $3"
}

# fail CHECK DETAIL [FILE...]: a FAIL line, then the named files (profiler output).
fail() {
    check=$1
    detail=$2
    shift 2
    result "$check" FAIL "$detail"
    # The head says what failed; a verifier's reason is at the end of its log.
    for f in "$@"; do
        [ -f "$f" ] || continue
        sed -n '1,40s/^/  | /p' "$f"
        n=$(wc -l <"$f")
        [ "$n" -gt 40 ] && echo "  | ..." && tail -n $((n - 40 < 25 ? n - 40 : 25)) "$f" | sed 's/^/  | /'
    done
}

# wait_for FILE PATTERN SECONDS: until FILE has a line matching PATTERN.
wait_for() {
    n=0
    while ! grep -q "$2" "$1" 2>/dev/null; do
        n=$((n + 1))
        [ "$n" -gt $(($3 * 10)) ] && return 1
        sleep 0.1
    done
}

# start_prog NAME SECONDS: start test program NAME behind its barrier; sets PID.
start_prog() {
    rm -f "$WORK/$1.go"
    "$PROGS/$1" "$2" "$WORK/$1.go" >"$WORK/$1.out" 2>&1 &
    PID=$!
    wait_for "$WORK/$1.out" '^ready' 20
}

release() {
    touch "$WORK/$1.go"
}

# start_profiler LOG READY_PATTERN ARGS...: run the profiler in the background until
# it says it is attached; sets PROF.
start_profiler() {
    plog=$1
    ready=$2
    shift 2
    "$PROFILER" "$@" >"$plog" 2>&1 &
    PROF=$!
    wait_for "$plog" "$ready" 90
}

# share FOLDED KIND FRAME: "<bytes under FRAME> <bytes>" of the folded lines whose
# second field (region kind, or what a wait is on) starts with KIND ("" for all).
share() {
    awk -v kind="$2" -v frame=";$3;" '
        {
            split($0, f, ";")
            if (kind != "" && index(f[2], kind) != 1) next
            line = $0
            sub(/ [0-9]+$/, ";", line)
            t += $NF
            if (index(line, frame)) u += $NF
        }
        END { printf "%d %d\n", u, t }' "$1" 2>/dev/null
}

# percent PART WHOLE
percent() {
    awk -v p="$1" -v w="$2" 'BEGIN { if (w > 0) printf "%d", 100 * p / w; else print 0 }'
}

mib() {
    awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'
}

# Where memory cgroups are made: v2 when the unified hierarchy has the memory
# controller, else the v1 memory hierarchy.
if grep -qw memory /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
    CGROUP_MODE=v2
    CGROUP_ROOT=/sys/fs/cgroup
    echo +memory >$CGROUP_ROOT/cgroup.subtree_control 2>/dev/null
    LIMIT_FILE=memory.max
elif [ -d /sys/fs/cgroup/memory ]; then
    CGROUP_MODE=v1
    CGROUP_ROOT=/sys/fs/cgroup/memory
    LIMIT_FILE=memory.limit_in_bytes
else
    CGROUP_MODE=none
fi
echo "VMTEST-INFO kernel $(uname -r) cgroup $CGROUP_MODE"

# make_cgroup NAME [LIMIT]: a fresh memory cgroup; sets CG.
make_cgroup() {
    CG=$CGROUP_ROOT/$1
    rmdir "$CG" 2>/dev/null
    mkdir "$CG" || return 1
    if [ -n "$2" ]; then
        echo "$2" >"$CG/$LIMIT_FILE" || return 1
        # Without a swap limit the process would swap instead of being killed.
        { echo 0 >"$CG/memory.swap.max"; } 2>/dev/null
        { echo "$2" >"$CG/memory.memsw.limit_in_bytes"; } 2>/dev/null
    fi
    return 0
}

drop_cgroup() {
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        rmdir "$1" 2>/dev/null && return
        for p in $(cat "$1/cgroup.procs" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
        sleep 0.2
    done
}

# check_leak CHECK OUT_DIR PROG_OUT [MAX_ERROR_PERCENT]: leak_sessions holds >= 90 %
# of the anon mmap growth, which is within MAX_ERROR_PERCENT (default 5) of what
# mmap_leak says it leaked.
check_leak() {
    max_err=${4:-5}
    set -- "$1" "$2" "$3" $(share "$2/memory.folded" "anon mmap" leak_sessions)
    leaked=$(awk '/^leaked_bytes/ { print $2 }' "$3")
    under=$4
    total=$5
    pct=$(percent "$under" "$total")
    err=$(awk -v t="$total" -v l="${leaked:-0}" 'BEGIN { d = t - l; if (d < 0) d = -d; if (l > 0) printf "%d", 100 * d / l; else print 100 }')
    detail="leak_sessions ${pct}% of $(mib "$total"), program leaked $(mib "${leaked:-0}")"
    if [ "$total" -gt 0 ] && [ "$pct" -ge 90 ] && [ "$err" -le "$max_err" ]; then
        result "$1" PASS "$detail"
    else
        fail "$1" "$detail" "$WORK/$1.log" "$2/report.txt"
    fi
}

check_memory_growth() {
    c=memory_growth
    start_prog mmap_leak 3 || { fail $c "mmap_leak did not start"; return; }
    start_profiler "$WORK/$c.log" 'profiler: recording' record --pid "$PID" --memory \
        --duration 60s --out "$WORK/$c" -v ||
        { fail $c "the profiler did not attach" "$WORK/$c.log"; kill -9 "$PID"; return; }
    release mmap_leak
    wait "$PROF"
    wait "$PID"
    # What -v said about this kernel, for the log.
    sed -n -e 's/^profiler: \(user registers: .*\)/VMTEST-NOTE \1/p' \
        -e 's/^profiler: \(probe sched_process_fork: .*\)/VMTEST-NOTE \1/p' "$WORK/$c.log"
    check_leak $c "$WORK/$c" "$WORK/mmap_leak.out"
}

check_allocations() {
    c=allocations
    start_prog session_cache 3 || { fail $c "session_cache did not start"; return; }
    start_profiler "$WORK/$c.log" 'profiler: recording' record --pid "$PID" --allocations \
        --duration 60s --out "$WORK/$c" ||
        { fail $c "the profiler did not attach" "$WORK/$c.log"; kill -9 "$PID"; return; }
    release session_cache
    wait "$PROF"
    wait "$PID"
    set -- $(share "$WORK/$c/allocations.folded" "" cache_insert_session)
    pct=$(percent "${1:-0}" "${2:-0}")
    verdict=$(grep -o 'verdict: [A-Z][A-Z /]*' "$WORK/$c/report.txt" | head -n 1)
    detail="${verdict:-no verdict}, cache_insert_session ${pct}% of live $(mib "${2:-0}")"
    if [ "$verdict" = "verdict: LEAK" ] && [ "$pct" -ge 80 ]; then
        result $c PASS "$detail"
    else
        fail $c "$detail" "$WORK/$c.log" "$WORK/$c/report.txt"
    fi
}

check_futex_stall() {
    c=futex_stall
    "$PROGS/pool_deadlock" 30 - >"$WORK/pool_deadlock.out" 2>&1 &
    PID=$!
    sleep 1
    timeout 120 "$PROFILER" stalls --pid "$PID" >"$WORK/$c.txt" 2>"$WORK/$c.log"
    kill -9 "$PID"
    wait "$PID" 2>/dev/null
    line=$(grep -o 'STALLED: [0-9]* of [0-9]* threads' "$WORK/$c.txt" | head -n 1)
    if [ "$line" = "STALLED: 4 of 5 threads" ] && grep -q acquire_nested "$WORK/$c.txt"; then
        result $c PASS "$line on one futex, in acquire_nested"
    else
        fail $c "${line:-no STALLED verdict}" "$WORK/$c.log" "$WORK/$c.txt"
    fi
}

# A mutex held across sleeps: the sleep probes load and record the holder's naps under
# hold_lock, and the verdict names the sleeping holder of the lock 5 threads wait on.
check_sleep_holder() {
    c=sleep_holder
    start_prog lock_sleep 60 || { fail $c "lock_sleep did not start"; return; }
    release lock_sleep
    wait_for "$WORK/lock_sleep.out" '^waiters' 20
    start_profiler "$WORK/$c.log" 'profiler: recording' record --pid "$PID" --waits \
        --duration 4s --stall-threshold 2s --out "$WORK/$c" ||
        { fail $c "the profiler did not attach" "$WORK/$c.log"; kill -9 "$PID"; return; }
    wait "$PROF"
    kill -9 "$PID"
    wait "$PID" 2>/dev/null
    set -- $(share "$WORK/$c/waits.folded" sleep hold_lock)
    line=$(grep -o 'STALLED: [0-9]* of [0-9]* threads' "$WORK/$c/report.txt" | head -n 1)
    detail="${line:-no STALLED verdict}, $((${1:-0} / 1000)) ms of sleep under hold_lock"
    if [ "${1:-0}" -gt 0 ] && [ "$line" = "STALLED: 7 of 7 threads" ] &&
        grep -q 'in hold_lock, which is itself sleeping' "$WORK/$c/report.txt"; then
        result $c PASS "$detail, holder named sleeping"
    else
        fail $c "$detail" "$WORK/$c.log" "$WORK/$c/report.txt"
    fi
}

check_socket_wait() {
    c=socket_wait
    start_prog socket_wait 30 || { fail $c "socket_wait did not start"; return; }
    start_profiler "$WORK/$c.log" 'profiler: recording' record --pid "$PID" --waits \
        --duration 4s --out "$WORK/$c" ||
        { fail $c "the profiler did not attach" "$WORK/$c.log"; kill -9 "$PID"; return; }
    release socket_wait
    wait "$PROF"
    kill -9 "$PID"
    wait "$PID" 2>/dev/null
    peer=$(awk '/^peer/ { print $2 }' "$WORK/socket_wait.out")
    set -- $(share "$WORK/$c/waits.folded" "socket $peer" wait_for_reply)
    # The connection ledger's probes load on every kernel of the matrix.
    if grep -q 'requests and connections are not followed' "$WORK/$c.log"; then
        fail $c "the connection ledger's probes were refused" "$WORK/$c.log"
    elif [ -n "$peer" ] && [ "${1:-0}" -gt 0 ]; then
        result $c PASS "recvfrom on socket $peer, in wait_for_reply; connection ledger attached"
    else
        fail $c "no wait on socket ${peer:-?} under wait_for_reply" "$WORK/$c.log" "$WORK/$c/report.txt"
    fi
}

check_oom_snapshot() {
    c=oom_snapshot
    [ "$CGROUP_MODE" = none ] && { result $c UNAVAILABLE "no memory cgroup controller"; return; }
    make_cgroup "vmtest-oom-$$" 67108864 || { fail $c "cannot make a 64 MiB memory cgroup"; return; }
    start_prog oom_grow 30 || { fail $c "oom_grow did not start"; drop_cgroup "$CG"; return; }
    echo "$PID" >"$CG/cgroup.procs"
    start_profiler "$WORK/$c.log" 'daemon started' daemon --pid "$PID" --interval 60s \
        --sample-bytes 64KiB --out "$WORK/$c" ||
        { fail $c "the daemon did not start" "$WORK/$c.log"; kill -9 "$PID"; drop_cgroup "$CG"; return; }
    release oom_grow
    wait "$PID"
    status=$?
    if grep -q 'no tracepoint oom:mark_victim' "$WORK/$c.log"; then
        result $c UNAVAILABLE "this kernel has no tracepoint oom:mark_victim"
    else
        n=0
        until [ -n "$(ls "$WORK/$c"/oom/*/oom.txt 2>/dev/null)" ] || [ $n -ge 300 ]; do
            n=$((n + 1))
            sleep 0.1
        done
        txt=$(ls "$WORK/$c"/oom/*/oom.txt 2>/dev/null | head -n 1)
        set -- $(share "$(dirname "${txt:-/nonexistent}")/memory.folded" "" grow_until_killed)
        grown=${1:-0}
        if [ "$status" -eq 137 ] && [ -n "$txt" ] && grep -q "oom_grow (pid $PID)" "$txt" &&
            [ "$grown" -ge 33554432 ]; then
            result $c PASS "killed at 64 MiB ($CGROUP_MODE), snapshot names oom_grow, $(mib "$grown") under grow_until_killed"
        else
            fail $c "exit status $status, snapshot ${txt:-missing}, $(mib "$grown") under grow_until_killed" "$WORK/$c.log" "$txt"
        fi
    fi
    kill "$PROF"
    wait "$PROF"
    drop_cgroup "$CG"
}

check_cgroup_target() {
    c=cgroup_target
    [ "$CGROUP_MODE" = none ] && { result $c UNAVAILABLE "no memory cgroup controller"; return; }
    make_cgroup "vmtest-target-$$" || { fail $c "cannot make a cgroup"; return; }
    start_prog mmap_leak 60 || { fail $c "mmap_leak did not start"; drop_cgroup "$CG"; return; }
    echo "$PID" >"$CG/cgroup.procs"
    # The window ends while the target runs: a cgroup may gain processes, so the window
    # does not end when this one exits.
    start_profiler "$WORK/$c.log" 'profiler: recording' record --cgroup "$CG" --memory \
        --duration 4s --out "$WORK/$c" ||
        { fail $c "the profiler did not attach" "$WORK/$c.log"; kill -9 "$PID"; drop_cgroup "$CG"; return; }
    release mmap_leak
    wait "$PROF"
    kill -9 "$PID"
    wait "$PID" 2>/dev/null
    set -- $(share "$WORK/$c/memory.folded" "anon mmap" leak_sessions)
    pct=$(percent "${1:-0}" "${2:-0}")
    detail="found in $CG, leak_sessions ${pct}% of $(mib "${2:-0}") in 4 s"
    if [ "${2:-0}" -ge 4194304 ] && [ "$pct" -ge 90 ]; then
        result $c PASS "$detail"
    else
        fail $c "$detail" "$WORK/$c.log" "$WORK/$c/report.txt"
    fi
    drop_cgroup "$CG"
}

# A target shell forks two programs: both become targets at their fork (their growth
# is recorded), while the 4 threads one of them starts are not followed as processes.
check_fork_follow() {
    c=fork_follow
    rm -f "$WORK/fork.fifo"
    mkfifo "$WORK/fork.fifo"
    # `read` and `true` are shell builtins: the shell forks exactly twice.
    sh -c 'read go; "$0" 2 -; "$1" 1 -; true' "$PROGS/mmap_leak" "$PROGS/pool_deadlock" \
        <"$WORK/fork.fifo" >"$WORK/$c.out" 2>&1 &
    PID=$!
    exec 3>"$WORK/fork.fifo"
    start_profiler "$WORK/$c.log" 'profiler: recording' record --pid "$PID" --memory \
        --duration 60s --out "$WORK/$c" ||
        { fail $c "the profiler did not attach" "$WORK/$c.log"; exec 3>&-; kill -9 "$PID"; return; }
    echo go >&3
    exec 3>&-
    wait "$PID"
    wait "$PROF"
    followed=$(sed -n 's/.*followed from their fork: \([0-9]*\).*/\1/p' "$WORK/$c/report.txt")
    set -- $(share "$WORK/$c/memory.folded" "anon mmap" leak_sessions)
    detail="${followed:-no} forks followed (2 processes; 4 threads not), $(mib "${1:-0}") under the child's leak_sessions"
    if [ "${followed:-0}" -eq 2 ] && [ "${1:-0}" -gt 0 ]; then
        result $c PASS "$detail"
    else
        fail $c "$detail" "$WORK/$c.log" "$WORK/$c/report.txt"
    fi
}

check_daemon_interval() {
    c=daemon_interval
    start_prog mmap_leak 20 || { fail $c "mmap_leak did not start"; return; }
    start_profiler "$WORK/$c.log" 'daemon started' daemon --pid "$PID" --interval 3s \
        --out "$WORK/$c" ||
        { fail $c "the daemon did not start" "$WORK/$c.log"; kill -9 "$PID"; return; }
    release mmap_leak
    wait_for "$WORK/$c/latest/report.txt" 'leak_sessions' 60
    found=$?
    kill "$PROF"
    wait "$PROF"
    kill -9 "$PID"
    wait "$PID" 2>/dev/null
    if [ "$found" -eq 0 ]; then
        result $c PASS "first 3 s interval written to latest/, growth under leak_sessions"
    else
        fail $c "no interval naming leak_sessions in latest/ after 60 s" "$WORK/$c.log" "$WORK/$c/latest/report.txt"
    fi
}

for check in ${CHECKS:-memory_growth allocations futex_stall sleep_holder socket_wait oom_snapshot cgroup_target fork_follow daemon_interval}; do
    rm -rf "${WORK:?}/$check"
    "check_$check"
done
echo "VMTEST-DONE"
