//! Label and annotation keys vigil puts on the objects it creates.

/// The Run an object belongs to.
pub const RUN: &str = "vigil.dev/run";
/// The Playbook a Run or object comes from.
pub const PLAYBOOK: &str = "vigil.dev/playbook";
/// The step a Job or Approval runs.
pub const STEP: &str = "vigil.dev/step";
/// The forEach item index of a Job.
pub const ITEM: &str = "vigil.dev/item";
/// The attempt number of a Job, from 1.
pub const ATTEMPT: &str = "vigil.dev/attempt";
/// Marks every object made by vigil, for selectors.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY`].
pub const MANAGED_BY_VALUE: &str = "vigil";
/// Annotation on a Run: the gateway's dedupe key digest.
pub const DEDUPE_KEY: &str = "vigil.dev/dedupe-key";
/// Annotation carrying the W3C trace context of a Run.
pub const TRACEPARENT: &str = "vigil.dev/traceparent";
