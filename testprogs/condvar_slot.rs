//! condvar_slot: threads waiting for a pool slot that is never handed back.
//!
//! Built as release code without frame pointers:
//! `rustc -O -C debuginfo=1 -C force-frame-pointers=no --edition 2021 condvar_slot.rs`.
//! After the barrier, a worker thread (closure → `run_worker` → `wait_for_slot`) and the
//! main thread (`main` → `run_worker` → `wait_for_slot`) wait on a `std::sync::Condvar`
//! that nobody notifies. The wait is one `wait_timeout` until the deadline (repeated
//! only on spurious wake-ups), so the program exits by itself after DURATION_SECONDS.
//!
//! usage: condvar_slot DURATION_SECONDS BARRIER_FILE|-
//! Output: "ready <pid>", "started", "waiting 2", then "timed_out <N>" at the end.
use std::hint::black_box;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long to wait for the barrier file before giving up, as `common.h` does.
const BARRIER_TIMEOUT: Duration = Duration::from_secs(60);

/// A pool of `free` slots; `slot_free` would be notified when one is handed back.
struct Pool {
    free: Mutex<usize>,
    slot_free: Condvar,
}

/// Waits until a slot is free or `deadline` passes; true if it got a slot.
#[inline(never)]
fn wait_for_slot(pool: &Pool, deadline: Instant) -> bool {
    let mut free = pool.free.lock().unwrap();
    while *free == 0 {
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        free = pool.slot_free.wait_timeout(free, deadline - now).unwrap().0;
    }
    *free -= 1;
    true
}

/// One unit of work: needs a pooled slot first.
#[inline(never)]
fn run_worker(pool: &Pool, deadline: Instant) -> bool {
    let got = wait_for_slot(black_box(pool), deadline);
    black_box(got)
}

fn start() -> f64 {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: {} DURATION_SECONDS BARRIER_FILE|-", args[0]);
        std::process::exit(2);
    }
    let duration: f64 = match args[1].parse() {
        Ok(d) if d >= 0.0 => d,
        _ => {
            eprintln!("{}: bad duration '{}'", args[0], args[1]);
            std::process::exit(2);
        }
    };
    let mut out = std::io::stdout();
    writeln!(out, "ready {}", std::process::id()).unwrap();
    out.flush().unwrap();
    if args[2] != "-" {
        let deadline = Instant::now() + BARRIER_TIMEOUT;
        while !Path::new(&args[2]).exists() {
            if Instant::now() > deadline {
                eprintln!("{}: barrier file {} did not appear", args[0], args[2]);
                std::process::exit(2);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    writeln!(out, "started").unwrap();
    out.flush().unwrap();
    duration
}

fn main() {
    let duration = start();
    let deadline = Instant::now() + Duration::from_secs_f64(duration);
    // Every slot is taken and never handed back.
    let pool = Arc::new(Pool {
        free: Mutex::new(0),
        slot_free: Condvar::new(),
    });
    let worker = {
        let pool = Arc::clone(&pool);
        std::thread::spawn(move || run_worker(&pool, deadline))
    };
    println!("waiting 2");
    std::io::stdout().flush().unwrap();
    let mut timed_out = usize::from(!run_worker(&pool, deadline));
    timed_out += usize::from(!worker.join().unwrap());
    println!("timed_out {timed_out}");
}
