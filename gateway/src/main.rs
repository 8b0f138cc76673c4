//! The gateway binary: read the configuration, bind the listeners, run until SIGTERM.

fn main() {
    gateway::main_entry();
}
