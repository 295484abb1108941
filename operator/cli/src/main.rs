//! The `vigil` binary: everything lives in the library so `kubectl-vigil` can share it.

fn main() -> std::process::ExitCode {
    vigil_cli::main()
}
