//! Slack users to Kubernetes users: the `vigil-slack-users` ConfigMap.
//!
//! In the operator's namespace, each Slack user id maps to a Kubernetes user name, and
//! optionally to groups:
//!
//! ```yaml
//! data:
//!   U0123ABCD: alice
//!   U0123ABCD.groups: soc-leads,ir-team
//! ```
//!
//! A Slack user that is not listed cannot decide. The mapped name and groups are matched
//! against the Approval's approvers exactly as an authenticated Kubernetes user would be.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use std::collections::BTreeMap;

/// The default name of the mapping ConfigMap.
pub const CONFIG_MAP: &str = "vigil-slack-users";

/// A Kubernetes identity a Slack user decides as.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlackUser {
    pub name: String,
    pub groups: Vec<String>,
}

/// The mapping from Slack user ids.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlackUsers(BTreeMap<String, SlackUser>);

impl SlackUsers {
    /// Reads the ConfigMap's data: `<id>: <user>` and `<id>.groups: <g1>,<g2>`. Blank names and
    /// groups without a name are ignored.
    pub fn from_data(data: &BTreeMap<String, String>) -> Self {
        let mut users = BTreeMap::new();
        for (key, value) in data {
            if key.ends_with(".groups") || value.trim().is_empty() {
                continue;
            }
            let groups = data
                .get(&format!("{key}.groups"))
                .map(|g| g.split(',').map(str::trim).filter(|g| !g.is_empty()).map(String::from).collect())
                .unwrap_or_default();
            users.insert(key.trim().to_string(), SlackUser { name: value.trim().to_string(), groups });
        }
        Self(users)
    }

    pub fn get(&self, slack_id: &str) -> Option<&SlackUser> {
        self.0.get(slack_id)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Reads the mapping from the ConfigMap `name` in `namespace`; an absent ConfigMap maps
    /// nobody.
    ///
    /// # Errors
    ///
    /// When the API server cannot be read.
    pub async fn load(client: &kube::Client, namespace: &str, name: &str) -> Result<Self, kube::Error> {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        let cm = api.get_opt(name).await?;
        Ok(cm.and_then(|cm| cm.data).map(|d| Self::from_data(&d)).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn maps_a_slack_id_to_a_user_and_groups() {
        let users = SlackUsers::from_data(&data(&[
            ("U123", "alice"),
            ("U123.groups", " soc-leads, ir-team ,,"),
            ("U456", "bob"),
        ]));
        assert_eq!(
            users.get("U123"),
            Some(&SlackUser { name: "alice".into(), groups: vec!["soc-leads".into(), "ir-team".into()] })
        );
        assert_eq!(users.get("U456"), Some(&SlackUser { name: "bob".into(), groups: vec![] }));
        assert_eq!(users.len(), 2);
    }

    #[test]
    fn unknown_ids_blank_names_and_orphan_groups_map_nobody() {
        let users = SlackUsers::from_data(&data(&[("U1", "  "), ("U2.groups", "soc-leads")]));
        assert!(users.is_empty());
        assert_eq!(users.get("U2"), None);
        assert_eq!(users.get("U999"), None);
    }
}
