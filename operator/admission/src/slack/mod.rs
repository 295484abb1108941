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
