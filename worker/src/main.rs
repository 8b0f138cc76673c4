//! The worker binary: read the configuration, bind the listeners, run until SIGTERM.

fn main() {
    worker::main_entry();
}
