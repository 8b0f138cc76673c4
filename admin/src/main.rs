//! `medicalpro-admin`: operator commands; see [`admin::cli`].

fn main() -> std::process::ExitCode {
    admin::cli::main_entry()
}
