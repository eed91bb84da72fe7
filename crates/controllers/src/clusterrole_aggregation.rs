//! The ClusterRole aggregation controller: a ClusterRole with an
//! `aggregationRule` holds the rules of every ClusterRole its selectors
//! match (how `admin`, `edit` and `view` grow with the roles labelled
//! `aggregate-to-*`).

use std::sync::Arc;

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use kube::api::{Api, PostParams};
use kybern_apimachinery::labels::Selector;

use crate::informer::{Informer, next_change};
use crate::queue::{ReconcileResult, WorkQueue, run_workers};
use crate::{ControllerError, Informers, labels_match};

struct AggregationController {
    client: kube::Client,
    roles: Arc<Informer<ClusterRole>>,
    queue: Arc<WorkQueue<String>>,
}

/// Runs the controller until the process ends.
pub async fn run(client: kube::Client, informers: &Informers) {
    let ctl = Arc::new(AggregationController {
        client,
        roles: informers.cluster_roles.clone(),
        queue: Arc::default(),
    });
    let mut changes = ctl.roles.subscribe();
    ctl.roles.synced().await;
    ctl.resync();
    let events = {
        let ctl = ctl.clone();
        async move {
            // Any role may feed any aggregated one: each change re-checks them all.
            while next_change(&mut changes).await.is_some() {
                ctl.resync();
            }
        }
    };
    let sync = {
        let ctl = ctl.clone();
        run_workers(
            "clusterrole-aggregation",
            ctl.queue.clone(),
            1,
            move |name: String| {
                let ctl = ctl.clone();
                async move { ctl.sync(&name).await }
            },
        )
    };
    tokio::join!(events, sync);
}

/// The rules `role` should hold: those of every other role a selector
/// matches, in name order, each rule once.
pub fn aggregate(role: &ClusterRole, all: &[Arc<ClusterRole>]) -> Option<Vec<PolicyRule>> {
    let selectors: Vec<Selector> = role
        .aggregation_rule
        .as_ref()?
        .cluster_role_selectors
        .as_ref()?
        .iter()
        .filter_map(|s| serde_json::to_value(s).ok())
        .filter_map(|v| Selector::from_label_selector(&v).ok())
        .collect();
    let mut sources: Vec<&Arc<ClusterRole>> = all
        .iter()
        .filter(|r| r.metadata.name != role.metadata.name)
        .filter(|r| {
            selectors
                .iter()
                .any(|s| !s.is_empty() && labels_match(s, r.metadata.labels.as_ref()))
        })
        .collect();
    sources.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut rules: Vec<PolicyRule> = Vec::new();
    for source in sources {
        for rule in source.rules.iter().flatten() {
            if !rules.contains(rule) {
                rules.push(rule.clone());
            }
        }
    }
    Some(rules)
}

impl AggregationController {
    fn resync(&self) {
        for role in self.roles.state() {
            if role.aggregation_rule.is_some()
                && let Some(name) = &role.metadata.name
            {
                self.queue.add(name.clone());
            }
        }
    }

    async fn sync(&self, name: &str) -> ReconcileResult<ControllerError> {
        let Some(role) = self.roles.get(None, name) else {
            return Ok(None);
        };
        let Some(rules) = aggregate(&role, &self.roles.state()) else {
            return Ok(None);
        };
        if role.rules.as_deref().unwrap_or_default() == rules.as_slice() {
            return Ok(None);
        }
        let mut updated = (*role).clone();
        updated.rules = Some(rules);
        let api: Api<ClusterRole> = Api::all(self.client.clone());
        match api.replace(name, &PostParams::default(), &updated).await {
            Ok(_) => Ok(None),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::rbac::v1::AggregationRule;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
    use std::collections::BTreeMap;

    fn role(name: &str, label: Option<&str>, verbs: &[&str]) -> Arc<ClusterRole> {
        Arc::new(ClusterRole {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: label.map(|l| BTreeMap::from([(l.to_owned(), "true".to_owned())])),
                ..Default::default()
            },
            rules: Some(vec![PolicyRule {
                verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
                api_groups: Some(vec![String::new()]),
                resources: Some(vec!["pods".into()]),
                ..Default::default()
            }]),
            aggregation_rule: None,
        })
    }

    #[test]
    fn gathers_matching_roles_once_in_name_order() {
        let mut view = (*role("view", None, &[])).clone();
        view.rules = None;
        view.aggregation_rule = Some(AggregationRule {
            cluster_role_selectors: Some(vec![LabelSelector {
                match_labels: Some(BTreeMap::from([("to-view".into(), "true".into())])),
                ..Default::default()
            }]),
        });
        let all = vec![
            role("b", Some("to-view"), &["list"]),
            role("a", Some("to-view"), &["get"]),
            role("c", Some("to-view"), &["get"]),
            role("other", None, &["delete"]),
        ];
        let rules = aggregate(&view, &all).expect("aggregated");
        let verbs: Vec<&str> = rules.iter().map(|r| r.verbs[0].as_str()).collect();
        assert_eq!(verbs, vec!["get", "list"]);
        assert!(aggregate(&all[0], &all).is_none());
    }
}
