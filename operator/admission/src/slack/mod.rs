//! Slack approvals: the signed interactivity callback that turns a button click into a decision,
//! and the Web API client that posts and updates the approval message.
//!
//! The callback maps the Slack user to a Kubernetes user ([`users`]), checks that user against
//! the Approval's approvers with the same rules the admission webhook applies, and appends the
//! decision as the operator (`via: slack`, `by: <mapped user>`).

pub mod api;
pub mod callback;
pub mod payload;
pub mod signature;
pub mod users;

pub use api::{Posted, SlackApi, SlackError};
pub use callback::{CallbackConfig, callback_router};
pub use signature::{SignatureError, Verifier};
pub use users::{SlackUser, SlackUsers};

/// Slack's signing secret: the file's content when a file is named, else the
/// `VIGIL_SLACK_SIGNING_SECRET` variable; `None` when neither is set (the callback then refuses
/// every request).
///
/// # Errors
///
/// When the named file cannot be read.
pub fn signing_secret(file: Option<&std::path::Path>) -> std::io::Result<Option<Vec<u8>>> {
    let raw = match file {
        Some(path) => std::fs::read(path)?,
        None => std::env::var("VIGIL_SLACK_SIGNING_SECRET").unwrap_or_default().into_bytes(),
    };
    Ok(Some(raw).filter(|r| !r.trim_ascii().is_empty()))
}
