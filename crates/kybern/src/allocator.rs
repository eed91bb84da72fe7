//! The process's memory allocator: mimalloc, and how soon it hands freed
//! memory back to the kernel.
#![allow(unsafe_code)]

/// mimalloc instead of glibc's allocator: the API server allocates and frees
/// many small JSON values per request from several threads, where glibc's
/// arenas spent a quarter of the server's CPU (see docs/scheduler.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc v3's `mi_option_e` (the bindings
/// name no constant for it); `purge_delay_is_the_bundled_option` checks it.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Milliseconds mimalloc waits before returning freed pages to the kernel.
/// Its v3 default, one second, keeps what a burst of deletes freed resident
/// through the next burst: at 20,000 pods the control plane's steady RSS was
/// 520–540 MiB with it and ~503 MiB at 100 ms, with no measurable cost in
/// throughput (docs/controllers.md).
const PURGE_DELAY_MS: std::os::raw::c_long = 100;

/// Applies [`PURGE_DELAY_MS`], unless the operator set `MIMALLOC_PURGE_DELAY`
/// (mimalloc's own variable), which then stands.
pub fn tune() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: mi_option_set stores an integer in mimalloc's option table; it
    // takes no pointers, and mimalloc reads options atomically, so calling
    // it while other threads allocate is sound.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, PURGE_DELAY_MS) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_delay_is_the_bundled_option() {
        // mimalloc v3 defaults purge_delay to 1000 ms, and no neighbouring
        // option to that value: a renumbered enum fails here. The test
        // binary uses the same allocator and has not tuned it.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // SAFETY: reads an integer from mimalloc's option table.
        let before = unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) };
        assert_eq!(before, 1000);
        tune();
        // SAFETY: as above.
        let after = unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) };
        assert_eq!(after, PURGE_DELAY_MS);
    }
}
