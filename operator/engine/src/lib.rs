//! The pure core of vigil: checks and compiles playbooks, evaluates CEL, and plans what a Run
//! does next. No I/O happens here; the operator and `vigil run --local` share it.

pub mod compile;
pub mod expr;
pub mod inputs;
pub mod names;
pub mod plan;

pub use compile::{CompiledPlaybook, Issue, compile};
pub use expr::{Expr, ExprError, Template};
pub use plan::{Action, ApprovalOutcome, JobRequest, JobState, Observed, Plan, plan};
