//! The `kubectl-vigil` binary: the same program as `vigil`, found by kubectl as a plugin.

fn main() -> std::process::ExitCode {
    vigil_cli::main()
}
