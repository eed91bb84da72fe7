//! A pod's `status` from what the node observed of its containers: phase,
//! conditions and per-container states, as the kubelet reports them.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{Value, json};

use super::qos::QosClass;
use super::state::{History, Run};

/// What the worker knows of the pod on this node.
#[derive(Debug, Default)]
pub struct Observed {
    /// Histories of the init containers, in spec order.
    pub init: Vec<History>,
    /// Histories of the app containers, in spec order.
    pub app: Vec<History>,
    /// Histories of the ephemeral containers, in spec order.
    pub ephemeral: Vec<History>,
    /// Why a container is not running: `(reason, message)` by name.
    pub waiting: HashMap<String, (String, String)>,
    /// Container names whose image is present, with the image ID.
    pub image_ids: HashMap<String, String>,
    /// The pod's IP, once its sandbox is up.
    pub pod_ip: Option<String>,
    /// The node's IP.
    pub host_ip: String,
    /// When the agent first took the pod on.
    pub start_time: Option<DateTime<Utc>>,
    /// Container IDs by name of the latest runs.
    pub container_ids: HashMap<String, String>,
    /// Probe verdicts of running containers that have probes, by name.
    pub probes: HashMap<String, super::probes::Verdict>,
    /// Why the agent evicted the pod, if it did.
    pub evicted: Option<String>,
}

/// Whether a container that exited with `code` starts again under `policy`.
pub fn restarts(policy: &str, code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => code != 0,
        _ => true,
    }
}

/// Whether init container `c` is a sidecar (`restartPolicy: Always`).
pub fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn terminated(run: &Run, id: Option<&String>) -> Option<Value> {
    let Run::Exited {
        started_at,
        exit,
        message,
    } = run
    else {
        return None;
    };
    let reason = match exit.exit_code {
        _ if exit.oom_killed => "OOMKilled",
        0 => "Completed",
        _ => "Error",
    };
    let mut t = json!({"exitCode": exit.exit_code, "reason": reason,
        "startedAt": ts(started_at), "finishedAt": ts(&exit.finished_at)});
    if let Some(m) = message {
        t["message"] = json!(m);
    }
    if let Some(id) = id {
        t["containerID"] = json!(format!("runc://{id}"));
    }
    Some(json!({"terminated": t}))
}

fn container_status(
    c: &Container,
    h: &History,
    obs: &Observed,
    policy: &str,
    default_waiting: &str,
) -> Value {
    let id = obs.container_ids.get(&c.name);
    let mut s = json!({"name": c.name, "image": c.image.clone().unwrap_or_default(),
        "imageID": obs.image_ids.get(&c.name).cloned().unwrap_or_default(),
        "restartCount": h.latest.as_ref().map_or(0, |l| l.0),
        "ready": false, "started": false});
    if let Some(id) = id {
        s["containerID"] = json!(format!("runc://{id}"));
    }
    let waiting = |reason: &str, message: &str| {
        let mut w = json!({"reason": reason});
        if !message.is_empty() {
            w["message"] = json!(message);
        }
        json!({"waiting": w})
    };
    let (state, last) = match &h.latest {
        None => {
            let (reason, message) = obs
                .waiting
                .get(&c.name)
                .cloned()
                .unwrap_or((default_waiting.to_owned(), String::new()));
            (waiting(&reason, &message), h.previous.as_ref())
        }
        Some((_, Run::Running { started_at })) => {
            // Without probes a running container is started and ready.
            let probe = obs.probes.get(&c.name);
            s["ready"] = json!(probe.is_none_or(|p| p.ready));
            s["started"] = json!(probe.is_none_or(|p| p.started));
            (
                json!({"running": {"startedAt": ts(started_at)}}),
                h.previous.as_ref(),
            )
        }
        Some((_, run @ Run::Exited { exit, .. })) => {
            if restarts(policy, exit.exit_code) {
                let (reason, message) = obs.waiting.get(&c.name).cloned().unwrap_or((
                    "CrashLoopBackOff".to_owned(),
                    format!("back-off restarting failed container {}", c.name),
                ));
                (waiting(&reason, &message), Some(run))
            } else {
                (
                    terminated(run, id).unwrap_or(Value::Null),
                    h.previous.as_ref(),
                )
            }
        }
    };
    s["state"] = state;
    s["lastState"] = last
        .and_then(|r| terminated(r, None))
        .unwrap_or_else(|| json!({}));
    s
}

fn exited_with(h: &History) -> Option<i32> {
    match &h.latest {
        Some((_, Run::Exited { exit, .. })) => Some(exit.exit_code),
        _ => None,
    }
}

/// The phase upstream's `getPhase` would give.
pub fn phase(pod: &Pod, obs: &Observed) -> &'static str {
    let spec = pod.spec.as_ref();
    let policy = spec
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always");
    let inits = spec.and_then(|s| s.init_containers.as_ref());
    for (c, h) in inits.into_iter().flatten().zip(&obs.init) {
        if is_sidecar(c) {
            continue;
        }
        match exited_with(h) {
            Some(0) => {}
            Some(_) if policy == "Never" => return "Failed",
            _ => return "Pending",
        }
    }
    let (mut running, mut never_started, mut succeeded, mut failed) = (0, 0, 0, 0);
    for h in &obs.app {
        match (&h.latest, exited_with(h)) {
            (None, _) => never_started += 1,
            (Some((_, Run::Running { .. })), _) => running += 1,
            (_, Some(0)) => succeeded += 1,
            (_, _) => failed += 1,
        }
    }
    if never_started > 0 {
        return if running + succeeded + failed > 0 {
            "Running"
        } else {
            "Pending"
        };
    }
    if running > 0 {
        return "Running";
    }
    match policy {
        "Always" => "Running",
        "OnFailure" if failed > 0 => "Running",
        _ if failed > 0 => "Failed",
        _ => "Succeeded",
    }
}

/// The pod's whole status. Conditions keep their transition times from
/// `pod`'s current status while their value holds.
pub fn pod_status(pod: &Pod, obs: &Observed) -> Value {
    let spec = pod.spec.as_ref();
    let policy = spec
        .and_then(|s| s.restart_policy.clone())
        .filter(|_| obs.evicted.is_none())
        // An evicted pod's containers are not started again.
        .unwrap_or_else(|| {
            if obs.evicted.is_some() {
                "Never"
            } else {
                "Always"
            }
            .into()
        });
    let phase = if obs.evicted.is_some() {
        "Failed"
    } else {
        phase(pod, obs)
    };
    let inits: Vec<&Container> = spec
        .into_iter()
        .flat_map(|s| s.init_containers.iter().flatten())
        .collect();
    let apps: Vec<&Container> = spec.into_iter().flat_map(|s| s.containers.iter()).collect();
    let initialized = inits.iter().zip(&obs.init).all(|(c, h)| {
        if is_sidecar(c) {
            matches!(h.latest, Some((_, Run::Running { .. })))
        } else {
            exited_with(h) == Some(0)
        }
    });
    let init_statuses: Vec<Value> = inits
        .iter()
        .zip(&obs.init)
        .map(|(c, h)| {
            let p = if is_sidecar(c) {
                "Always"
            } else if policy == "Never" {
                "Never"
            } else {
                "OnFailure"
            };
            container_status(c, h, obs, p, "PodInitializing")
        })
        .collect();
    let default_waiting = if initialized {
        "ContainerCreating"
    } else {
        "PodInitializing"
    };
    let app_statuses: Vec<Value> = apps
        .iter()
        .zip(&obs.app)
        .map(|(c, h)| container_status(c, h, obs, &policy, default_waiting))
        .collect();
    let all_ready = !app_statuses.is_empty() && app_statuses.iter().all(|s| s["ready"] == true);
    let terminal = matches!(phase, "Succeeded" | "Failed");
    let existing = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    let now = ts(&Utc::now());
    let condition = |type_: &str, ok: bool, reason: Option<&str>| {
        let status = if ok { "True" } else { "False" };
        let since = existing
            .into_iter()
            .flatten()
            .find(|c| c.type_ == type_ && c.status == status)
            .and_then(|c| c.last_transition_time.as_ref())
            .map(|t| t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_else(|| now.clone());
        let mut c = json!({"type": type_, "status": status, "lastTransitionTime": since,
            "lastProbeTime": null});
        if let (false, Some(r)) = (ok, reason) {
            c["reason"] = json!(r);
        }
        c
    };
    let mut conditions = vec![
        condition(
            "PodReadyToStartContainers",
            obs.pod_ip.is_some() && !terminal,
            None,
        ),
        condition("Initialized", initialized, Some("ContainersNotInitialized")),
        condition(
            "Ready",
            all_ready && !terminal,
            Some(if terminal {
                "PodCompleted"
            } else {
                "ContainersNotReady"
            }),
        ),
        condition(
            "ContainersReady",
            all_ready && !terminal,
            Some(if terminal {
                "PodCompleted"
            } else {
                "ContainersNotReady"
            }),
        ),
        condition("PodScheduled", true, None),
    ];
    if let Some(message) = &obs.evicted {
        // As the kubelet marks a pod it ends (PodDisruptionConditions).
        let mut c = condition("DisruptionTarget", true, None);
        c["reason"] = json!("TerminationByKubelet");
        c["message"] = json!(message);
        conditions.push(c);
    }
    let mut status = json!({"phase": phase, "conditions": conditions,
        "hostIP": obs.host_ip, "hostIPs": [{"ip": obs.host_ip}],
        "qosClass": QosClass::of(pod).as_str(),
        "initContainerStatuses": init_statuses, "containerStatuses": app_statuses});
    if let Some(ip) = &obs.pod_ip {
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{"ip": ip}]);
    }
    if let Some(t) = &obs.start_time {
        status["startTime"] = json!(ts(t));
    }
    if inits.is_empty() {
        status["initContainerStatuses"] = Value::Null;
    }
    let ephemeral = super::ephemeral::containers(pod);
    if !ephemeral.is_empty() {
        // Never restarted, never part of the pod's readiness.
        let statuses: Vec<Value> = ephemeral
            .iter()
            .zip(&obs.ephemeral)
            .map(|(c, h)| {
                let mut s = container_status(c, h, obs, "Never", "ContainerCreating");
                s["ready"] = json!(false);
                s
            })
            .collect();
        status["ephemeralContainerStatuses"] = json!(statuses);
    }
    if let Some(message) = &obs.evicted {
        status["reason"] = json!("Evicted");
        status["message"] = json!(message);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::monitor::ExitRecord;

    fn pod(policy: &str, inits: usize) -> Pod {
        let init: Vec<Value> = (0..inits)
            .map(|i| json!({"name": format!("init{i}"), "image": "busybox"}))
            .collect();
        serde_json::from_value(json!({"metadata": {"name": "p", "uid": "u"},
            "spec": {"restartPolicy": policy, "initContainers": init,
                "containers": [{"name": "app", "image": "busybox"}]}}))
        .expect("test setup")
    }

    fn exited(code: i32) -> History {
        History {
            latest: Some((
                0,
                Run::Exited {
                    started_at: Utc::now(),
                    exit: ExitRecord {
                        exit_code: code,
                        finished_at: Utc::now(),
                        oom_killed: false,
                    },
                    message: None,
                },
            )),
            previous: None,
        }
    }

    fn running() -> History {
        History {
            latest: Some((
                0,
                Run::Running {
                    started_at: Utc::now(),
                },
            )),
            previous: None,
        }
    }

    #[test]
    fn phases_follow_the_restart_policy() {
        let obs = |app: History| Observed {
            app: vec![app],
            ..Default::default()
        };
        assert_eq!(
            phase(&pod("Always", 0), &obs(History::default())),
            "Pending"
        );
        assert_eq!(phase(&pod("Always", 0), &obs(running())), "Running");
        assert_eq!(phase(&pod("Always", 0), &obs(exited(0))), "Running");
        assert_eq!(phase(&pod("Never", 0), &obs(exited(0))), "Succeeded");
        assert_eq!(phase(&pod("Never", 0), &obs(exited(1))), "Failed");
        assert_eq!(phase(&pod("OnFailure", 0), &obs(exited(1))), "Running");
        assert_eq!(phase(&pod("OnFailure", 0), &obs(exited(0))), "Succeeded");
        let mut o = obs(History::default());
        o.init = vec![exited(1)];
        assert_eq!(phase(&pod("Never", 1), &o), "Failed");
        assert_eq!(phase(&pod("Always", 1), &o), "Pending");
    }

    #[test]
    fn status_reports_states_conditions_and_ip() {
        let p = pod("Always", 1);
        let obs = Observed {
            init: vec![exited(0)],
            app: vec![running()],
            pod_ip: Some("10.88.0.2".into()),
            host_ip: "192.0.2.1".into(),
            ..Default::default()
        };
        let s = pod_status(&p, &obs);
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["podIP"], "10.88.0.2");
        assert_eq!(s["qosClass"], "BestEffort");
        assert_eq!(
            s["initContainerStatuses"][0]["state"]["terminated"]["reason"],
            "Completed"
        );
        assert!(s["containerStatuses"][0]["state"]["running"]["startedAt"].is_string());
        let ready = s["conditions"]
            .as_array()
            .expect("test setup")
            .iter()
            .find(|c| c["type"] == "Ready");
        assert_eq!(ready.expect("test setup")["status"], "True");

        let crashed = Observed {
            app: vec![exited(2)],
            ..Default::default()
        };
        let s = pod_status(&pod("Always", 0), &crashed);
        assert_eq!(
            s["containerStatuses"][0]["state"]["waiting"]["reason"],
            "CrashLoopBackOff"
        );
        assert_eq!(
            s["containerStatuses"][0]["lastState"]["terminated"]["exitCode"],
            2
        );
    }

    #[test]
    fn an_evicted_pod_failed_with_the_reason_and_a_disruption_condition() {
        let evicted = Observed {
            app: vec![exited(137)],
            evicted: Some("Usage of EmptyDir volume \"v\" exceeds the limit \"1Mi\". ".into()),
            ..Default::default()
        };
        // Even where the restart policy would start the container again.
        let s = pod_status(&pod("Always", 0), &evicted);
        assert_eq!(s["phase"], "Failed");
        assert_eq!(s["reason"], "Evicted");
        assert_eq!(
            s["containerStatuses"][0]["state"]["terminated"]["exitCode"],
            137
        );
        assert!(
            s["message"]
                .as_str()
                .expect("message")
                .starts_with("Usage of EmptyDir")
        );
        let disruption = s["conditions"]
            .as_array()
            .expect("test setup")
            .iter()
            .find(|c| c["type"] == "DisruptionTarget")
            .expect("a DisruptionTarget condition");
        assert_eq!(disruption["status"], "True");
        assert_eq!(disruption["reason"], "TerminationByKubelet");
        let s = pod_status(&pod("Always", 0), &Observed::default());
        assert!(s.get("reason").is_none());
    }
}
