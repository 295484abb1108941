//! `vigil`, the command-line tool: lints playbooks, runs them on a laptop with the operator's own
//! planner, and drives Runs and Approvals on a cluster.
//!
//! Layout: [`cli`] declares the commands; [`lint`], [`local`] and [`cluster`] carry them out;
//! [`render`] turns objects into text and does no I/O, so its output is tested against golden
//! files.

pub mod alert;
pub mod cli;
pub mod cluster;
pub mod error;
pub mod lint;
pub mod local;
pub mod manifest;
pub mod render;

use clap::Parser;
use std::process::ExitCode;

pub use error::Error;

/// Parses the command line, runs the command and turns its outcome into an exit code.
pub fn main() -> ExitCode {
    let mut command = <cli::Cli as clap::CommandFactory>::command();
    if invoked_as_kubectl_plugin() {
        command = command.bin_name("kubectl vigil");
    }
    let matches = match command.try_get_matches() {
        Ok(m) => m,
        Err(err) => {
            let _ = err.print();
            return ExitCode::from(if err.use_stderr() {
                error::EXIT_USAGE
            } else {
                0
            });
        }
    };
    let args = match <cli::Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(args) => args,
        Err(err) => {
            let _ = err.print();
            return ExitCode::from(error::EXIT_USAGE);
        }
    };

    match cli::dispatch(args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("{}", err.report());
            ExitCode::from(err.exit_code())
        }
    }
}

fn invoked_as_kubectl_plugin() -> bool {
    std::env::args_os()
        .next()
        .and_then(|arg0| {
            std::path::Path::new(&arg0)
                .file_name()
                .map(|n| n.to_string_lossy().starts_with("kubectl-"))
        })
        .unwrap_or(false)
}

/// Keeps `Parser` in scope for `cli::Cli::parse_from` in tests.
#[doc(hidden)]
pub fn parse_args<I, T>(args: I) -> Result<cli::Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    cli::Cli::try_parse_from(args)
}
