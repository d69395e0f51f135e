//! What every fuzz target shares (included with `#[path]` by the fuzz tests of
//! common, master and worker; not a test of its own): case counts, byte mutations,
//! and an allocator that remembers the largest allocation.

#![allow(dead_code)]

use proptest::prelude::prop;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Cases per property: `PROPTEST_CASES` if set, else `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(default)
}

/// Applies `edits` to `bytes`: overwrite, remove or insert a byte, or flip its high bit
/// (a varint's continuation bit, or the high byte of a little-endian length).
pub fn mutate(bytes: &mut Vec<u8>, edits: &[(prop::sample::Index, u8, u8)]) {
    for (at, byte, how) in edits {
        if bytes.is_empty() {
            bytes.push(*byte);
            continue;
        }
        let i = at.index(bytes.len());
        match how % 4 {
            0 => bytes[i] = *byte,
            1 => {
                bytes.remove(i);
            }
            2 => bytes.insert(i, *byte),
            _ => bytes[i] ^= 0x80,
        }
    }
}

/// The system allocator, remembering the largest single allocation of each thread
/// (proptest runs a property's cases on one thread). A target installs it with
/// `#[global_allocator] static A: fuzz::Counting = fuzz::Counting;`.
pub struct Counting;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded to `System` unchanged; the thread-local is a
// const-initialised `Cell<usize>`, which neither allocates nor has a destructor.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

/// Runs `f` and returns its result with the largest allocation it made (with
/// [`Counting`] installed; 0 otherwise).
pub fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    let out = f();
    (out, LARGEST.with(Cell::get))
}
