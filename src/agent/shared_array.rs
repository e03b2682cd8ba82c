//! A BPF array created with BPF_F_MMAPABLE, mapped read-only into the agent:
//! the row and hot-key tables are read in place each interval, with no syscall per
//! batch and no copy of the whole table.

use anyhow::{anyhow, Result};
use plain::Plain;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd};

pub struct SharedArray<T> {
    ptr: *const u8,
    /// Bytes mapped.
    mapped: usize,
    entries: usize,
    _t: PhantomData<T>,
}

/// The kernel lays array values out 8-aligned.
const fn stride<T>() -> usize {
    std::mem::size_of::<T>().next_multiple_of(8)
}

impl<T: Plain + Copy> SharedArray<T> {
    /// Maps `entries` values of the array behind `fd` (whose value type is `T`).
    pub fn map(fd: impl AsFd, entries: u32) -> Result<SharedArray<T>> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let len = (entries as usize * stride::<T>())
            .next_multiple_of(page)
            .max(page);
        // SAFETY: a fresh read-only shared mapping of a BPF map fd; the kernel
        // checks the length against the map and the flag it was created with.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd.as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(anyhow!(
                "mapping a BPF table into the agent: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(SharedArray {
            ptr: ptr.cast(),
            mapped: len,
            entries: entries as usize,
            _t: PhantomData,
        })
    }

    pub fn len(&self) -> usize {
        self.entries
    }

    /// A copy of value `i` as it is now. BPF programs write concurrently, so
    /// a value may be torn; callers check what they rely on (the tags).
    pub fn get(&self, i: usize) -> Option<T> {
        if i >= self.entries {
            return None;
        }
        // SAFETY: i < entries, so the value lies inside the mapping, at an
        // 8-aligned offset of a page-aligned one; T is Plain, so any bytes
        // are a valid T.
        Some(unsafe { std::ptr::read_volatile(self.ptr.add(i * stride::<T>()).cast::<T>()) })
    }
}

impl<T> Drop for SharedArray<T> {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        unsafe {
            libc::munmap(self.ptr as *mut libc::c_void, self.mapped);
        }
    }
}
