//! A global allocator that counts allocations while counting is on, for the benchmark
//! and the zero-allocation test. A binary installs it with
//! `#[global_allocator] static GLOBAL: Counting = Counting;`.
//!
//! With [`attribute`] on it also walks the call stack of every allocation it counts and
//! charges it to the innermost frame of gameshard's code or of rdkafka's Rust wrapper,
//! so that a test over the real Kafka sink can tell the allocations of the code this
//! project owns from those of the crate it calls. Allocations that librdkafka's C code
//! makes go to `malloc` directly and are never seen by a Rust allocator.

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};

/// The system allocator, counting every allocation and reallocation while
/// [`count`] is on; otherwise a plain pass-through, so that a process that never turns
/// it on (the baseline) pays nothing for it.
pub struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static ATTRIBUTING: AtomicBool = AtomicBool::new(false);
static RDKAFKA: AtomicU64 = AtomicU64::new(0);

/// Whose code an allocation is charged to: the innermost frame of its call stack that
/// belongs to either.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Owner {
    /// A frame of a `gameshard_*` crate (the data plane, the engine, this harness).
    Gameshard,
    /// A frame of the `rdkafka` crate, gameshard's code further out.
    Rdkafka,
    /// Neither on the stack (a thread's start, the standard library alone).
    Other,
}

/// What the stacks walked so far resolved to: frame address to owner (`None`: a frame
/// of neither crate).
static FRAMES: Mutex<BTreeMap<usize, Option<Owner>>> = Mutex::new(BTreeMap::new());
/// Allocations per (period, owner, address of the frame that decided it).
static SITES: Mutex<BTreeMap<(u64, Owner, usize), u64>> = Mutex::new(BTreeMap::new());
/// The period allocations are recorded in now (see [`next_period`]).
static PERIOD: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Set while this thread walks a stack: the walk's own allocations are not counted.
    static WALKING: Cell<bool> = const { Cell::new(false) };
}

/// Turns counting on or off.
pub fn count(on: bool) {
    COUNTING.store(on, Relaxed);
}

/// Turns attribution on or off: while it is on, allocations charged to rdkafka are
/// counted by [`rdkafka_allocations`] instead of [`allocations`]. Slow (a stack walk per
/// allocation): for tests only.
pub fn attribute(on: bool) {
    ATTRIBUTING.store(on, Relaxed);
}

/// Allocations counted so far (while attributing, those not charged to rdkafka).
pub fn allocations() -> u64 {
    ALLOCATIONS.load(Relaxed)
}

/// Allocations charged to rdkafka's Rust code while attributing.
pub fn rdkafka_allocations() -> u64 {
    RDKAFKA.load(Relaxed)
}

/// Starts the next period of [`sites`] (the first is 0): a test marks where its steady
/// state begins.
pub fn next_period() {
    PERIOD.fetch_add(1, Relaxed);
}

/// The allocations counted while attributing in period `period`, per owner and the
/// function of the frame that decided it, most frequent first.
pub fn sites(period: u64) -> Vec<(Owner, String, u64)> {
    let sites = SITES.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let mut named: BTreeMap<(Owner, String), u64> = BTreeMap::new();
    for ((_, owner, ip), n) in sites.into_iter().filter(|((p, _, _), _)| *p == period) {
        *named.entry((owner, frame_name(ip))).or_default() += n;
    }
    let mut v: Vec<_> = named.into_iter().map(|((o, name), n)| (o, name, n)).collect();
    v.sort_by_key(|s| std::cmp::Reverse(s.2));
    v
}

fn counted() {
    if !COUNTING.load(Relaxed) {
        return;
    }
    if ATTRIBUTING.load(Relaxed) {
        // The walk's own allocations, and those of a thread being torn down, are not
        // the program's.
        if !WALKING.try_with(|w| !w.replace(true)).unwrap_or(false) {
            return;
        }
        let (owner, ip) = owner();
        let period = PERIOD.load(Relaxed);
        *SITES
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((period, owner, ip))
            .or_default() += 1;
        let _ = WALKING.try_with(|w| w.set(false));
        if owner == Owner::Rdkafka {
            RDKAFKA.fetch_add(1, Relaxed);
            return;
        }
    }
    ALLOCATIONS.fetch_add(1, Relaxed);
}

/// The owner of the allocation being made, and the frame that decided it (0: none).
fn owner() -> (Owner, usize) {
    const DEPTH: usize = 128;
    let mut ips = [0usize; DEPTH];
    let mut n = 0;
    backtrace::trace(|frame| {
        ips[n] = frame.ip() as usize;
        n += 1;
        n < DEPTH
    });
    let mut frames = FRAMES.lock().unwrap_or_else(PoisonError::into_inner);
    for &ip in &ips[..n] {
        let owner = *frames.entry(ip).or_insert_with(|| frame_owner(ip));
        if let Some(owner) = owner {
            return (owner, ip);
        }
    }
    (Owner::Other, 0)
}

/// The owner of the code at return address `ip`: its innermost inlined function that
/// belongs to gameshard or rdkafka, this allocator's own frames passed over.
fn frame_owner(ip: usize) -> Option<Owner> {
    let mut owner = None;
    // A return address points past its call: look up the call itself.
    backtrace::resolve(ip.saturating_sub(1) as *mut std::ffi::c_void, |symbol| {
        if owner.is_none() {
            owner = symbol_owner(symbol);
        }
    });
    owner
}

/// The workspace's root folder, with its trailing `/`: the parent of this crate's.
fn workspace() -> &'static str {
    let dir = env!("CARGO_MANIFEST_DIR");
    dir.rfind('/').map_or(dir, |i| &dir[..=i])
}

/// Whose code `symbol` is. The line tables name its source file: a path in the
/// workspace, or a relative path to a Rust file (Cargo builds workspace members from
/// the workspace root), is a workspace member's, a path into the
/// registry's `rdkafka-*` folder is rdkafka's. Without line tables (dependencies are
/// built without them), the symbol table's full path names the crate.
fn symbol_owner(symbol: &backtrace::Symbol) -> Option<Owner> {
    // The `__rust_alloc` shims the compiler puts at the `#[global_allocator]` line.
    let shim = symbol.name().and_then(|n| n.as_str()).is_some_and(|n| n.contains("__rust_"));
    if shim {
        return None;
    }
    if let Some(file) = symbol.filename() {
        let file = file.to_string_lossy();
        return if file.ends_with("e2e/src/alloc.rs") {
            None
        } else if file.starts_with(workspace()) {
            Some(Owner::Gameshard)
        } else if file.starts_with('/') {
            (file.contains("/rdkafka-") && !file.contains("/rdkafka-sys-"))
                .then_some(Owner::Rdkafka)
        } else {
            // The C library's sources are relative too, but not in Rust.
            file.ends_with(".rs").then_some(Owner::Gameshard)
        };
    }
    let name = format!("{:#}", symbol.name()?);
    let name = name.trim_start_matches('<');
    if name.starts_with("gameshard_e2e::alloc::") {
        None
    } else if name.starts_with("gameshard_") {
        Some(Owner::Gameshard)
    } else if name.starts_with("rdkafka::") {
        Some(Owner::Rdkafka)
    } else {
        None
    }
}

/// The innermost function at `ip` that decided its owner, with its source line when
/// known, for reports.
fn frame_name(ip: usize) -> String {
    if ip == 0 {
        return "(no gameshard or rdkafka frame)".to_owned();
    }
    let mut name = None;
    backtrace::resolve(ip.saturating_sub(1) as *mut std::ffi::c_void, |symbol| {
        if name.is_some() || symbol_owner(symbol).is_none() {
            return;
        }
        let function = symbol.name().map(|n| format!("{n:#}")).unwrap_or_default();
        name = Some(match (symbol.filename(), symbol.lineno()) {
            (Some(file), Some(line)) => {
                let file = file.to_string_lossy();
                let short = file.find("rdkafka-").map_or(&*file, |i| &file[i..]);
                format!("{function} ({short}:{line})")
            }
            _ => function,
        });
    });
    name.unwrap_or_else(|| format!("{ip:#x}"))
}

// SAFETY: every call is forwarded unchanged to the system allocator, which upholds the
// `GlobalAlloc` contract; the counter has no effect on memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        counted();
        // SAFETY: same layout contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        counted();
        // SAFETY: same layout contract as our caller's.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        counted();
        // SAFETY: `ptr` was allocated by `System` through this allocator with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` through this allocator with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}
