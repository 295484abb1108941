//! The `vigil.dev/v1alpha1` custom resources: [`Playbook`], [`Run`] and [`Approval`].
//!
//! These types are the contract users see. Their doc comments become `kubectl explain` text and
//! `make crds` renders them into `crds/`. This crate imports nothing else of vigil's.

pub mod approval;
pub mod condition;
pub mod duration;
pub mod labels;
pub mod playbook;
pub mod run;

pub use approval::{Approval, ApprovalSpec, ApprovalStatus, Decision};
pub use condition::Condition;
pub use duration::Duration;
pub use playbook::{Playbook, PlaybookSpec, Step};
pub use run::{Run, RunPhase, RunSpec, RunStatus, StepPhase, StepStatus};

/// The API group of every vigil kind.
pub const GROUP: &str = "vigil.dev";
/// The served and stored version.
pub const VERSION: &str = "v1alpha1";

/// Every CRD vigil serves, in the order `make crds` writes them.
pub fn crds() -> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    use kube::CustomResourceExt;
    vec![Playbook::crd(), Run::crd(), Approval::crd()]
}
