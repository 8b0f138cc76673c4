//! The worker binary: read the configuration, bind the listeners, run until SIGTERM.

/// mimalloc: the services allocate and free many small objects per request, which
/// glibc's allocator spent a tenth of the worker's CPU on (see `bench/README.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    worker::main_entry();
}
