//! The errors a command can end with, and the exit code each maps to.

use std::{error::Error as _, path::PathBuf};

/// The run or lint found what it was asked to find (a failed Run, lint issues).
pub const EXIT_FAILED: u8 = 1;
/// The command line or its files were unusable.
pub const EXIT_USAGE: u8 = 2;
/// The Run was cancelled.
pub const EXIT_CANCELLED: u8 = 3;

/// Why a command stopped before doing its job.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line or an input file is wrong; exit code 2.
    #[error("{0}")]
    Usage(String),

    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot load the kubeconfig")]
    Kubeconfig(#[source] kube::config::KubeconfigError),

    #[error("cannot connect to the cluster")]
    Connect(#[source] kube::Error),

    /// A Kubernetes API call failed; `what` says which.
    #[error("{what}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },

    /// The API server refused a change, usually the admission webhook deciding who may approve.
    #[error("the server refused {what}: {message}")]
    Refused { what: String, message: String },

    #[error("{0}")]
    Local(String),

    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    pub fn usage(message: impl Into<String>) -> Self {
        Self::Usage(message.into())
    }

    pub fn api(what: impl Into<String>, source: kube::Error) -> Self {
        Self::Api {
            what: what.into(),
            source,
        }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) | Self::Read { .. } => EXIT_USAGE,
            _ => EXIT_FAILED,
        }
    }

    /// `error: <message>: <cause>: <cause>`, the chain on one line as kubectl prints it.
    pub fn report(&self) -> String {
        let mut text = format!("error: {self}");
        let mut source = self.source();
        while let Some(cause) = source {
            let cause_text = cause.to_string();
            if !text.ends_with(&cause_text) {
                text.push_str(": ");
                text.push_str(&cause_text);
            }
            source = cause.source();
        }
        text
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
