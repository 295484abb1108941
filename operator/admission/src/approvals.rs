//! Who may decide an Approval, and how a decision is recorded: the rules behind
//! `/validate/approvals` and `/mutate/approvals`, shared with the Slack callback. Pure.
//!
//! A decision is one entry appended to `spec.decisions`. The requester is the user the API
//! server authenticated, never what the body claims: the mutating path writes `by` and `at`
//! from the request, and the validating path refuses an entry whose `by` is anyone else, so a
//! forged `by` is refused even where the mutating webhook is not installed.

use chrono::{DateTime, SecondsFormat, Utc};
use kube::ResourceExt;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use vigil_api::{
    Approval, ApprovalSpec,
    approval::DecisionEntry,
    playbook::Approvers,
};

/// `via` of a decision recorded by the operator for a Slack button.
pub const VIA_SLACK: &str = "slack";
/// `via` (and `by`) of the default decision applied at the deadline.
pub const VIA_TIMEOUT: &str = "timeout";
/// `via` written when the client named none.
pub const VIA_DEFAULT: &str = "kubectl";

/// The authenticated user of an admission request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requester {
    pub username: String,
    pub groups: Vec<String>,
}

impl Requester {
    pub fn new(username: impl Into<String>, groups: &[&str]) -> Self {
        Self { username: username.into(), groups: groups.iter().map(|g| g.to_string()).collect() }
    }
}

/// Who a decision is recorded for. `groups` is `None` when the decision comes in through a
/// trusted user (the operator, for Slack), which has checked the approver's groups itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor<'a> {
    pub name: &'a str,
    pub groups: Option<&'a [String]>,
}

/// Why a change to an Approval is refused. The text goes back to the user through the API
/// server, so it says what was wrong and what is allowed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("approval {approval}: user {user:?} is not an approver (approvers: users [{users}] groups [{groups}])")]
    NotApprover { approval: String, user: String, users: String, groups: String },
    #[error("approval {approval}: decision `by` is {by:?} but the request comes from {user:?}; who decided is taken from the authenticated request")]
    ForgedBy { approval: String, by: String, user: String },
    #[error("approval {approval}: {user:?} triggered the Run and this approval forbids self-approval")]
    SelfApproval { approval: String, user: String },
    #[error("approval {approval} is already decided ({decision} by {by}); it cannot change")]
    AlreadyDecided { approval: String, decision: String, by: String },
    #[error("approval {approval}: {user:?} has already decided ({decision})")]
    Duplicate { approval: String, user: String, decision: String },
    #[error("approval {approval}: add one decision per request ({count} were added)")]
    SeveralDecisions { approval: String, count: usize },
    #[error("approval {approval}: recorded decisions cannot be changed, removed or reordered")]
    Rewritten { approval: String },
    #[error("approval {approval}: only decisions can be added; spec.{field} cannot change")]
    SpecChanged { approval: String, field: &'static str },
    #[error("approval {approval}: decisions via {via:?} are recorded by the operator only")]
    ReservedVia { approval: String, via: String },
    #[error("approval {approval}: a decision via slack must name the mapped Kubernetes user in `by`")]
    MissingBy { approval: String },
    #[error("approval {approval}: only the operator writes the status of an Approval")]
    StatusChanged { approval: String },
    #[error("approval {approval}: {detail}")]
    Malformed { approval: String, detail: String },
}

/// The users that may record decisions on behalf of others and write an Approval's status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trusted(BTreeSet<String>);

impl Trusted {
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(users: I) -> Self {
        Self(users.into_iter().map(Into::into).filter(|u: &String| !u.is_empty()).collect())
    }

    pub fn contains(&self, user: &str) -> bool {
        self.0.contains(user)
    }
}

/// Whether `actor` is listed in `approvers`, by name or (when known) by a group.
pub fn is_approver(approvers: &Approvers, actor: &Actor<'_>) -> bool {
    approvers.users.iter().any(|u| u == actor.name)
        || actor.groups.is_some_and(|gs| gs.iter().any(|g| approvers.groups.contains(g)))
}

/// Whether `actor` may add a decision to `approval` as it is now: not decided yet, an approver,
/// not the requester when self-approval is forbidden, and not someone who already decided.
///
/// # Errors
///
/// The first rule broken, as a [`Refusal`].
pub fn may_decide(approval: &Approval, actor: &Actor<'_>) -> Result<(), Refusal> {
    let name = approval.name_any();
    let spec = &approval.spec;
    if let Some(status) = approval.status.as_ref()
        && let Some(decision) = status.decision
    {
        return Err(Refusal::AlreadyDecided {
            approval: name,
            decision: decision.as_str().into(),
            by: status.decided_by.clone().unwrap_or_default(),
        });
    }
    if actor.groups.is_some() && !is_approver(&spec.approvers, actor) {
        return Err(Refusal::NotApprover {
            approval: name,
            user: actor.name.into(),
            users: spec.approvers.users.join(", "),
            groups: spec.approvers.groups.join(", "),
        });
    }
    if spec.forbid_self_approval && spec.requester.as_deref() == Some(actor.name) {
        return Err(Refusal::SelfApproval { approval: name, user: actor.name.into() });
    }
    if let Some(earlier) = spec.decisions.iter().find(|d| d.by == actor.name) {
        return Err(Refusal::Duplicate {
            approval: name,
            user: actor.name.into(),
            decision: earlier.decision.as_str().into(),
        });
    }
    Ok(())
}

/// Checks a create or update of an Approval by `requester`. `old` is `None` on create.
///
/// # Errors
///
/// The first rule broken, as a [`Refusal`].
pub fn validate(
    trusted: &Trusted,
    old: Option<&Approval>,
    new: &Approval,
    requester: &Requester,
) -> Result<(), Refusal> {
    let name = new.name_any();
    if let Some(old) = old
        && let Some(field) = changed_field(&old.spec, &new.spec)
    {
        return Err(Refusal::SpecChanged { approval: name, field });
    }
    let added = added_decisions(old, new)?;
    let Some(entry) = added.first() else { return Ok(()) };
    if added.len() > 1 {
        return Err(Refusal::SeveralDecisions { approval: name, count: added.len() });
    }

    let actor = actor(trusted, requester, entry, &name)?;
    // Decided-ness and earlier votes come from the stored object: on create there is none.
    let before = match old {
        Some(old) => old.clone(),
        None => Approval { spec: ApprovalSpec { decisions: Vec::new(), ..new.spec.clone() }, ..new.clone() },
    };
    may_decide(&before, &actor)
}

/// Checks a write of the status subresource: only trusted users may change it.
///
/// # Errors
///
/// [`Refusal::StatusChanged`] when someone else changes the status.
pub fn validate_status(
    trusted: &Trusted,
    old: Option<&Approval>,
    new: &Approval,
    requester: &Requester,
) -> Result<(), Refusal> {
    let changed = old.is_none_or(|old| old.status != new.status);
    if changed && !trusted.contains(&requester.username) {
        return Err(Refusal::StatusChanged { approval: new.name_any() });
    }
    Ok(())
}

/// The JSON patch that records who decided and when on the entries this request adds: `by`
/// from the authenticated user (kept for a trusted user's Slack decision), `at` now, `via`
/// `kubectl` unless the client named one. Empty when nothing is added or the list was rewritten
/// (the validating path refuses that).
pub fn mutation(
    trusted: &Trusted,
    old: Option<&Approval>,
    new: &Approval,
    requester: &Requester,
    now: DateTime<Utc>,
) -> Vec<Value> {
    let Ok(added) = added_decisions(old, new) else { return Vec::new() };
    let first = new.spec.decisions.len() - added.len();
    let at = now.to_rfc3339_opts(SecondsFormat::Secs, true);
    let mut ops = Vec::new();
    for (i, entry) in added.iter().enumerate() {
        let path = format!("/spec/decisions/{}", first + i);
        let on_behalf = trusted.contains(&requester.username) && entry.via.as_deref() == Some(VIA_SLACK);
        if !on_behalf {
            ops.push(json!({"op": "add", "path": format!("{path}/by"), "value": requester.username}));
        }
        ops.push(json!({"op": "add", "path": format!("{path}/at"), "value": at}));
        if entry.via.as_deref().is_none_or(str::is_empty) {
            ops.push(json!({"op": "add", "path": format!("{path}/via"), "value": VIA_DEFAULT}));
        }
    }
    ops
}

/// Who the single added `entry` is recorded for, given who sent it.
fn actor<'a>(
    trusted: &Trusted,
    requester: &'a Requester,
    entry: &'a DecisionEntry,
    approval: &str,
) -> Result<Actor<'a>, Refusal> {
    let via = entry.via.as_deref().unwrap_or_default();
    if trusted.contains(&requester.username) && via == VIA_SLACK {
        if entry.by.is_empty() || entry.by == requester.username {
            return Err(Refusal::MissingBy { approval: approval.into() });
        }
        return Ok(Actor { name: &entry.by, groups: None });
    }
    if via == VIA_SLACK || via == VIA_TIMEOUT {
        return Err(Refusal::ReservedVia { approval: approval.into(), via: via.into() });
    }
    if entry.by != requester.username {
        return Err(Refusal::ForgedBy {
            approval: approval.into(),
            by: entry.by.clone(),
            user: requester.username.clone(),
        });
    }
    Ok(Actor { name: &requester.username, groups: Some(&requester.groups) })
}

/// The entries `new` appends to `old`'s decisions (all of them on create).
fn added_decisions<'a>(old: Option<&Approval>, new: &'a Approval) -> Result<&'a [DecisionEntry], Refusal> {
    let before: &[DecisionEntry] = old.map_or(&[], |o| &o.spec.decisions);
    let after = &new.spec.decisions;
    if after.len() < before.len() || after[..before.len()] != *before {
        return Err(Refusal::Rewritten { approval: new.name_any() });
    }
    Ok(&after[before.len()..])
}

/// The first spec field other than `decisions` that differs.
fn changed_field(old: &ApprovalSpec, new: &ApprovalSpec) -> Option<&'static str> {
    let fields: [(&'static str, bool); 10] = [
        ("runRef", old.run_ref == new.run_ref),
        ("step", old.step == new.step),
        ("message", old.message == new.message),
        ("context", old.context == new.context),
        ("approvers", old.approvers == new.approvers),
        ("quorum", old.quorum == new.quorum),
        ("onTimeout", old.on_timeout == new.on_timeout),
        ("requester", old.requester == new.requester),
        ("forbidSelfApproval", old.forbid_self_approval == new.forbid_self_approval),
        ("notify", old.notify == new.notify),
    ];
    fields.into_iter().find(|(_, same)| !same).map(|(field, _)| field)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;
    use vigil_api::{Decision, approval::{ApprovalStatus, RunRef}};

    const OPERATOR: &str = "system:serviceaccount:vigil-system:vigil-operator";

    fn trusted() -> Trusted {
        Trusted::new([OPERATOR])
    }

    fn approval() -> Approval {
        Approval {
            metadata: ObjectMeta { name: Some("quarantine-x1".into()), namespace: Some("soc".into()), ..Default::default() },
            spec: ApprovalSpec {
                run_ref: RunRef { name: "ir-x1".into() },
                step: "approve".into(),
                message: "Quarantine?".into(),
                approvers: Approvers { users: vec!["carol".into()], groups: vec!["soc-leads".into()] },
                quorum: 1,
                requester: Some("mallory".into()),
                forbid_self_approval: true,
                ..Default::default()
            },
            status: None,
        }
    }

    fn entry(decision: Decision, by: &str, via: Option<&str>) -> DecisionEntry {
        DecisionEntry { decision, by: by.into(), reason: None, at: None, via: via.map(Into::into) }
    }

    fn with(base: &Approval, entries: &[DecisionEntry]) -> Approval {
        let mut next = base.clone();
        next.spec.decisions.extend_from_slice(entries);
        next
    }

    fn alice() -> Requester {
        Requester::new("alice", &["soc-leads", "system:authenticated"])
    }

    #[test]
    fn accepts_allowed_user() {
        let old = approval();
        let new = with(&old, &[entry(Decision::Approved, "alice", Some("kubectl"))]);
        assert_eq!(validate(&trusted(), Some(&old), &new, &alice()), Ok(()));
        let carol = Requester::new("carol", &[]);
        let new = with(&old, &[entry(Decision::Denied, "carol", None)]);
        assert_eq!(validate(&trusted(), Some(&old), &new, &carol), Ok(()));
    }

    #[test]
    fn rejects_non_approver_with_the_approver_list() {
        let old = approval();
        let bob = Requester::new("bob", &["system:authenticated"]);
        let new = with(&old, &[entry(Decision::Approved, "bob", None)]);
        let err = validate(&trusted(), Some(&old), &new, &bob).unwrap_err();
        assert_eq!(
            err.to_string(),
            "approval quarantine-x1: user \"bob\" is not an approver (approvers: users [carol] groups [soc-leads])"
        );
    }

    #[test]
    fn rejects_forged_by() {
        let old = approval();
        let bob = Requester::new("bob", &[]);
        let new = with(&old, &[entry(Decision::Approved, "alice", None)]);
        assert!(matches!(
            validate(&trusted(), Some(&old), &new, &bob),
            Err(Refusal::ForgedBy { .. })
        ));
        // An empty `by` (no mutating webhook) is not the requester either.
        let new = with(&old, &[entry(Decision::Approved, "", None)]);
        assert!(matches!(
            validate(&trusted(), Some(&old), &new, &alice()),
            Err(Refusal::ForgedBy { .. })
        ));
    }

    #[test]
    fn rejects_self_approval() {
        let old = approval();
        let mallory = Requester::new("mallory", &["soc-leads"]);
        let new = with(&old, &[entry(Decision::Approved, "mallory", None)]);
        assert!(matches!(
            validate(&trusted(), Some(&old), &new, &mallory),
            Err(Refusal::SelfApproval { .. })
        ));
        let mut allowed = old.clone();
        allowed.spec.forbid_self_approval = false;
        let new = with(&allowed, &[entry(Decision::Approved, "mallory", None)]);
        assert_eq!(validate(&trusted(), Some(&allowed), &new, &mallory), Ok(()));
    }

    #[test]
    fn rejects_change_after_decision() {
        let mut old = approval();
        old.status = Some(ApprovalStatus {
            decision: Some(Decision::Denied),
            decided_by: Some("timeout".into()),
            ..Default::default()
        });
        let new = with(&old, &[entry(Decision::Approved, "alice", None)]);
        let err = validate(&trusted(), Some(&old), &new, &alice()).unwrap_err();
        assert_eq!(err.to_string(), "approval quarantine-x1 is already decided (denied by timeout); it cannot change");
    }

    #[test]
    fn rejects_duplicate_vote() {
        let mut old = approval();
        old.spec.quorum = 2;
        let old = with(&old, &[entry(Decision::Approved, "alice", Some("kubectl"))]);
        let new = with(&old, &[entry(Decision::Approved, "alice", Some("kubectl"))]);
        assert!(matches!(
            validate(&trusted(), Some(&old), &new, &alice()),
            Err(Refusal::Duplicate { .. })
        ));
    }

    #[test]
    fn rejects_two_decisions_in_one_request() {
        let old = approval();
        let carol = entry(Decision::Approved, "alice", None);
        let new = with(&old, &[carol.clone(), carol]);
        assert!(matches!(
            validate(&trusted(), Some(&old), &new, &alice()),
            Err(Refusal::SeveralDecisions { count: 2, .. })
        ));
    }

    #[test]
    fn rejects_rewritten_or_removed_decisions() {
        let old = with(&approval(), &[entry(Decision::Approved, "carol", Some("kubectl"))]);
        let mut new = old.clone();
        new.spec.decisions[0].decision = Decision::Denied;
        assert!(matches!(validate(&trusted(), Some(&old), &new, &alice()), Err(Refusal::Rewritten { .. })));
        let mut new = old.clone();
        new.spec.decisions.clear();
        assert!(matches!(validate(&trusted(), Some(&old), &new, &alice()), Err(Refusal::Rewritten { .. })));
    }

    #[test]
    fn rejects_spec_changes_other_than_decisions() {
        let old = approval();
        let mut new = old.clone();
        new.spec.quorum = 0;
        assert_eq!(
            validate(&trusted(), Some(&old), &new, &alice()),
            Err(Refusal::SpecChanged { approval: "quarantine-x1".into(), field: "quorum" })
        );
        let mut new = old.clone();
        new.spec.forbid_self_approval = false;
        assert!(matches!(validate(&trusted(), Some(&old), &new, &alice()), Err(Refusal::SpecChanged { .. })));
    }

    #[test]
    fn accepts_updates_that_add_no_decision() {
        let old = approval();
        let mut new = old.clone();
        new.metadata.labels = Some([("team".to_string(), "soc".to_string())].into());
        let bob = Requester::new("bob", &[]);
        assert_eq!(validate(&trusted(), Some(&old), &new, &bob), Ok(()));
    }

    #[test]
    fn create_with_a_decision_follows_the_same_rules() {
        let new = with(&approval(), &[entry(Decision::Approved, "bob", None)]);
        let bob = Requester::new("bob", &[]);
        assert!(matches!(validate(&trusted(), None, &new, &bob), Err(Refusal::NotApprover { .. })));
        assert_eq!(validate(&trusted(), None, &approval(), &bob), Ok(()));
    }

    #[test]
    fn operator_records_slack_decisions_for_the_mapped_user() {
        let old = approval();
        let operator = Requester::new(OPERATOR, &["system:serviceaccounts"]);
        let new = with(&old, &[entry(Decision::Approved, "alice", Some("slack"))]);
        assert_eq!(validate(&trusted(), Some(&old), &new, &operator), Ok(()));

        let on_own_behalf = with(&old, &[entry(Decision::Approved, OPERATOR, Some("slack"))]);
        assert!(matches!(
            validate(&trusted(), Some(&old), &on_own_behalf, &operator),
            Err(Refusal::MissingBy { .. })
        ));
        // The mapped user is still held to self-approval and single votes.
        let mallory = with(&old, &[entry(Decision::Approved, "mallory", Some("slack"))]);
        assert!(matches!(
            validate(&trusted(), Some(&old), &mallory, &operator),
            Err(Refusal::SelfApproval { .. })
        ));
    }

    #[test]
    fn rejects_slack_or_timeout_decisions_from_anyone_else() {
        let old = approval();
        for via in ["slack", "timeout"] {
            let new = with(&old, &[entry(Decision::Approved, "alice", Some(via))]);
            assert!(matches!(
                validate(&trusted(), Some(&old), &new, &alice()),
                Err(Refusal::ReservedVia { .. })
            ));
        }
    }

    #[test]
    fn only_trusted_users_write_status() {
        let old = approval();
        let mut new = old.clone();
        new.status = Some(ApprovalStatus { decision: Some(Decision::Approved), ..Default::default() });
        assert!(validate_status(&trusted(), Some(&old), &new, &alice()).is_err());
        let operator = Requester::new(OPERATOR, &[]);
        assert_eq!(validate_status(&trusted(), Some(&old), &new, &operator), Ok(()));
        assert_eq!(validate_status(&trusted(), Some(&old), &old, &alice()), Ok(()));
    }

    #[test]
    fn mutation_overwrites_by_and_at_from_the_request() {
        let old = with(&approval(), &[entry(Decision::Approved, "carol", Some("ui"))]);
        let new = with(&old, &[entry(Decision::Approved, "mallory", None)]);
        let now = DateTime::parse_from_rfc3339("2024-01-15T14:31:00Z").unwrap().with_timezone(&Utc);
        let ops = mutation(&trusted(), Some(&old), &new, &alice(), now);
        assert_eq!(
            ops,
            vec![
                json!({"op": "add", "path": "/spec/decisions/1/by", "value": "alice"}),
                json!({"op": "add", "path": "/spec/decisions/1/at", "value": "2024-01-15T14:31:00Z"}),
                json!({"op": "add", "path": "/spec/decisions/1/via", "value": "kubectl"}),
            ]
        );
        let mut patched = serde_json::to_value(&new).unwrap();
        let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops)).unwrap();
        json_patch::patch(&mut patched, &patch).unwrap();
        let patched: Approval = serde_json::from_value(patched).unwrap();
        assert_eq!(validate(&trusted(), Some(&old), &patched, &alice()), Ok(()));
    }

    #[test]
    fn mutation_keeps_the_mapped_user_of_a_slack_decision() {
        let old = approval();
        let new = with(&old, &[entry(Decision::Denied, "alice", Some("slack"))]);
        let operator = Requester::new(OPERATOR, &[]);
        let ops = mutation(&trusted(), Some(&old), &new, &operator, Utc::now());
        assert_eq!(ops.len(), 1);
        assert_eq!(ops[0]["path"], "/spec/decisions/0/at");
        assert!(mutation(&trusted(), Some(&old), &old, &alice(), Utc::now()).is_empty());
    }
}
