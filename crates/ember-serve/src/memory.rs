//! Handing freed memory back to the operating system.
//!
//! The binary allocates with jemalloc, which keeps the pages it frees for reuse and returns them
//! only after a decay of several seconds. Loading a model frees about as much as it keeps (each
//! weight is decoded whole, then transcoded into its fast form), so without a purge a freshly
//! started server sits on hundreds of megabytes it no longer uses: Gemma 3 270M alone held 774
//! MiB resident where its weights take 385 MiB. The server purges after loading and whenever a
//! model goes idle, so its resident set is what the models hold.

/// Asks jemalloc to return every page it holds free, in all arenas, now. Harmless where another
/// allocator is in use (jemalloc's own arenas are then empty).
pub fn release_freed_pages() {
    #[cfg(not(target_env = "msvc"))]
    {
        // `MALLCTL_ARENAS_ALL` (4096): every arena.
        let name = c"arena.4096.purge";
        // SAFETY: `arena.<i>.purge` reads and writes nothing (all pointers null, length 0); the
        // name is a NUL-terminated string that outlives the call.
        let _ = unsafe {
            tikv_jemalloc_sys::mallctl(
                name.as_ptr(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            )
        };
    }
}
