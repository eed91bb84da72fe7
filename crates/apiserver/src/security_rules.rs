//! Upstream's validation of a pod's security settings: the pod's and each
//! container's security context, sysctls, seccomp and AppArmor profiles,
//! user namespaces (`hostUsers`), ports on the host network; what each OS
//! allows is in `os_rules` (`pkg/apis/core/validation`, paths and messages
//! as upstream's).

use kybern_apimachinery::Cause;
use serde_json::{Value, json};

use crate::field_rules::{items, local_descending_path, one_of, text};

/// Upstream's `IsValidUserID` / `IsValidGroupID` message.
const ID_RANGE: &str = "must be between 0 and 2147483647, inclusive";
/// A namespace shared with the host while the pod has its own users.
const HOST_USERS: &str = "when `pod.Spec.HostUsers` is false";
/// The longest sysctl name.
const SYSCTL_MAX: usize = 253;

/// The context at `key` of `v`, when one is given.
pub(crate) fn context<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|c| c.is_object())
}

/// A user or group id field: within `[0, MaxInt32]`.
fn id(v: &Value, key: &str, at: &str, causes: &mut Vec<Cause>) {
    if let Some(n) = v.get(key).and_then(Value::as_i64)
        && !(0..=i64::from(i32::MAX)).contains(&n)
    {
        causes.push(Cause::invalid(format!("{at}.{key}"), &json!(n), ID_RANGE));
    }
}

/// The pod's and its containers' security settings in the pod spec `spec`
/// at `path`.
pub(crate) fn pod_security(spec: &Value, path: &str, causes: &mut Vec<Cause>) {
    let flag = |k: &str| spec.get(k).and_then(Value::as_bool) == Some(true);
    let sc_path = format!("{path}.securityContext");
    let sc = context(spec, "securityContext");
    if let Some(sc) = sc {
        pod_context(sc, spec, &sc_path, causes);
    }
    let host_users = spec
        .get("hostUsers")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    if !host_users {
        for (key, field) in [
            ("hostNetwork", "hostNetwork"),
            ("hostPID", "HostPID"),
            ("hostIPC", "HostIPC"),
        ] {
            if flag(key) {
                causes.push(Cause::forbidden(format!("{path}.{field}"), HOST_USERS));
            }
        }
    }
    for (list, (i, c)) in containers(spec) {
        let at = format!("{path}.{list}[{i}]");
        if let Some(csc) = context(c, "securityContext") {
            container_context(csc, &format!("{at}.securityContext"), host_users, causes);
        }
        if flag("hostNetwork") {
            host_network_ports(c, &at, causes);
        }
    }
    crate::os_rules::pod_os(spec, path, causes);
}

/// Every container of a pod spec with its list and index.
pub(crate) fn containers(spec: &Value) -> impl Iterator<Item = (&'static str, (usize, &Value))> {
    ["initContainers", "containers", "ephemeralContainers"]
        .into_iter()
        .flat_map(move |list| items(Some(spec), list).enumerate().map(move |c| (list, c)))
}

fn pod_context(sc: &Value, spec: &Value, at: &str, causes: &mut Vec<Cause>) {
    for key in ["fsGroup", "runAsUser", "runAsGroup"] {
        id(sc, key, at, causes);
    }
    for (g, gid) in items(Some(sc), "supplementalGroups").enumerate() {
        if let Some(n) = gid.as_i64()
            && !(0..=i64::from(i32::MAX)).contains(&n)
        {
            causes.push(Cause::invalid(
                format!("{at}.supplementalGroups[{g}]"),
                &json!(n),
                ID_RANGE,
            ));
        }
    }
    let host_pid = spec.get("hostPID").and_then(Value::as_bool) == Some(true);
    if host_pid && spec.get("shareProcessNamespace").and_then(Value::as_bool) == Some(true) {
        causes.push(Cause::invalid(
            format!("{at}.shareProcessNamespace"),
            &json!(true),
            "ShareProcessNamespace and HostPID cannot both be enabled",
        ));
    }
    sysctls(sc, spec, &format!("{at}.sysctls"), causes);
    one_of(
        sc,
        "fsGroupChangePolicy",
        at,
        &["Always", "OnRootMismatch"],
        causes,
    );
    one_of(
        sc,
        "supplementalGroupsPolicy",
        at,
        &["Merge", "Strict"],
        causes,
    );
    one_of(
        sc,
        "seLinuxChangePolicy",
        at,
        &["MountOption", "Recursive"],
        causes,
    );
    seccomp(sc, at, causes);
    crate::os_rules::windows_options(sc, at, causes);
    app_armor(sc, at, causes);
}

fn container_context(sc: &Value, at: &str, host_users: bool, causes: &mut Vec<Cause>) {
    id(sc, "runAsUser", at, causes);
    id(sc, "runAsGroup", at, causes);
    if let Some(mount) = text(sc, "procMount") {
        one_of(sc, "procMount", at, &["Default", "Unmasked"], causes);
        if host_users && mount == "Unmasked" {
            causes.push(Cause::invalid(
                format!("{at}.procMount"),
                &json!(mount),
                "`hostUsers` must be false to use `Unmasked`",
            ));
        }
    }
    seccomp(sc, at, causes);
    if sc.get("allowPrivilegeEscalation").and_then(Value::as_bool) == Some(false) {
        if sc.get("privileged").and_then(Value::as_bool) == Some(true) {
            causes.push(Cause::invalid(
                at,
                sc,
                "cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
            ));
        }
        if items(sc.get("capabilities"), "add").any(|c| c == "CAP_SYS_ADMIN") {
            causes.push(Cause::invalid(
                at,
                sc,
                "cannot set `allowPrivilegeEscalation` to false and `capabilities.Add` CAP_SYS_ADMIN",
            ));
        }
    }
    crate::os_rules::windows_options(sc, at, causes);
    app_armor(sc, at, causes);
}

/// Upstream's `IsValidSysctlName`: dot- or slash-separated segments of
/// lowercase letters, digits, `-` and `_`, each starting and ending with a
/// letter or digit.
fn sysctl_name_valid(name: &str) -> bool {
    name.len() <= SYSCTL_MAX
        && name.split(['.', '/']).all(|seg| {
            let b = seg.as_bytes();
            let edge = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
            !b.is_empty()
                && b.first().is_some_and(edge)
                && b.last().is_some_and(edge)
                && b.iter().all(|c| edge(c) || *c == b'-' || *c == b'_')
        })
}

/// The namespace a sysctl belongs to, as the kubelet sorts them.
fn sysctl_namespace(name: &str) -> Option<&'static str> {
    let name = name.replace('/', ".");
    if name.starts_with("net.") {
        Some("net")
    } else if name.starts_with("fs.mqueue.")
        || name.starts_with("kernel.shm")
        || name.starts_with("kernel.msg")
        || name == "kernel.sem"
    {
        Some("ipc")
    } else {
        None
    }
}

fn sysctls(sc: &Value, spec: &Value, at: &str, causes: &mut Vec<Cause>) {
    let mut seen: Vec<&str> = Vec::new();
    for (i, s) in items(Some(sc), "sysctls").enumerate() {
        let field = format!("{at}[{i}].name");
        let name = text(s, "name").unwrap_or("");
        if name.is_empty() {
            causes.push(Cause::required(&field, ""));
        } else if !sysctl_name_valid(name) {
            causes.push(Cause::invalid(
                &field,
                &json!(name),
                format!(
                    "must have at most {SYSCTL_MAX} characters and match regex ^([a-z0-9]([-_a-z0-9]*[a-z0-9])?[\\./])*[a-z0-9]([-_a-z0-9]*[a-z0-9])?$"
                ),
            ));
        } else if seen.contains(&name) {
            causes.push(Cause::duplicate(&field, &json!(name)));
        }
        let host = |k: &str| spec.get(k).and_then(Value::as_bool) == Some(true);
        match sysctl_namespace(name) {
            Some("net") if host("hostNetwork") => causes.push(Cause::invalid(
                &field,
                &json!(name),
                "may not be specified when 'hostNetwork' is true",
            )),
            Some("ipc") if host("hostIPC") => causes.push(Cause::invalid(
                &field,
                &json!(name),
                "may not be specified when 'hostIPC' is true",
            )),
            _ => {}
        }
        seen.push(name);
    }
}

fn seccomp(sc: &Value, at: &str, causes: &mut Vec<Cause>) {
    let Some(p) = context(sc, "seccompProfile") else {
        return;
    };
    let at = format!("{at}.seccompProfile");
    let ty = text(p, "type").unwrap_or("");
    match ty {
        "" => causes.push(Cause::required(
            format!("{at}.type"),
            "type is required when seccompProfile is set",
        )),
        "Localhost" | "RuntimeDefault" | "Unconfined" => {}
        other => causes.push(Cause::not_supported(
            format!("{at}.type"),
            &json!(other),
            &["Localhost", "RuntimeDefault", "Unconfined"],
        )),
    }
    let local = text(p, "localhostProfile");
    match (ty, local) {
        ("Localhost", None) => causes.push(Cause::required(
            format!("{at}.localhostProfile"),
            "must be set when seccomp type is Localhost",
        )),
        ("Localhost", Some(l)) => {
            local_descending_path(l, &format!("{at}.localhostProfile"), causes);
        }
        (_, Some(_)) => causes.push(Cause::invalid(
            format!("{at}.localhostProfile"),
            p,
            "can only be set when seccomp type is Localhost",
        )),
        (_, None) => {}
    }
}

fn app_armor(sc: &Value, at: &str, causes: &mut Vec<Cause>) {
    let Some(p) = context(sc, "appArmorProfile") else {
        return;
    };
    let at = format!("{at}.appArmorProfile");
    let local = text(p, "localhostProfile");
    match text(p, "type").unwrap_or("") {
        "Localhost" => match local {
            None => causes.push(Cause::required(
                format!("{at}.localhostProfile"),
                "must be set when AppArmor type is Localhost",
            )),
            Some(l) if l.trim() != l => causes.push(Cause::invalid(
                format!("{at}.localhostProfile"),
                &json!(l),
                "must not be padded with whitespace",
            )),
            Some("") => causes.push(Cause::required(
                format!("{at}.localhostProfile"),
                "must be set when AppArmor type is Localhost",
            )),
            Some(l) if l.len() > 4095 => {
                causes.push(Cause::too_long(format!("{at}.localhostProfile"), 4095));
            }
            Some(_) => {}
        },
        "RuntimeDefault" | "Unconfined" => {
            if let Some(l) = local {
                causes.push(Cause::invalid(
                    format!("{at}.localhostProfile"),
                    &json!(l),
                    "can only be set when AppArmor type is Localhost",
                ));
            }
        }
        "" => causes.push(Cause::required(
            format!("{at}.type"),
            "type is required when appArmorProfile is set",
        )),
        other => causes.push(Cause::not_supported(
            format!("{at}.type"),
            &json!(other),
            &["Localhost", "RuntimeDefault", "Unconfined"],
        )),
    }
}

/// On the host network a container's port is the host's port.
fn host_network_ports(c: &Value, at: &str, causes: &mut Vec<Cause>) {
    for (i, p) in items(Some(c), "ports").enumerate() {
        let host = p.get("hostPort").and_then(Value::as_i64).unwrap_or(0);
        let port = p.get("containerPort").and_then(Value::as_i64).unwrap_or(0);
        if host != 0 && host != port {
            causes.push(Cause::invalid(
                format!("{at}.ports[{i}].containerPort"),
                &json!(port),
                "must match `hostPort` when `hostNetwork` is true",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(spec: Value) -> Vec<String> {
        let mut causes = Vec::new();
        pod_security(&spec, "spec", &mut causes);
        crate::field_rules::cause_lines(&causes)
    }

    #[test]
    fn ids_stay_in_range_and_escalation_agrees_with_privilege() {
        let got = check(json!({
            "securityContext": {"runAsUser": -1, "supplementalGroups": [5, 2147483648_i64]},
            "containers": [{"name": "c", "securityContext": {
                "runAsGroup": -2, "privileged": true, "allowPrivilegeEscalation": false,
                "capabilities": {"add": ["CAP_SYS_ADMIN"]}}}]
        }));
        assert_eq!(got.len(), 5, "{got:?}");
        assert!(got[0].starts_with(
            "spec.securityContext.runAsUser: Invalid value: -1: must be between 0 and 2147483647"
        ));
        assert!(
            got[1].starts_with(
                "spec.securityContext.supplementalGroups[1]: Invalid value: 2147483648"
            )
        );
        assert!(got[2].starts_with("spec.containers[0].securityContext.runAsGroup"));
        assert!(
            got[3].ends_with(
                "cannot set `allowPrivilegeEscalation` to false and `privileged` to true"
            )
        );
        assert!(got[4].ends_with("`capabilities.Add` CAP_SYS_ADMIN"));
    }

    #[test]
    fn profiles_need_their_type_and_a_localhost_path_only_for_localhost() {
        let got = check(json!({
            "securityContext": {"seccompProfile": {"type": "Localhost"},
                "appArmorProfile": {"type": "RuntimeDefault", "localhostProfile": "p"}},
            "containers": [{"name": "c", "securityContext": {
                "seccompProfile": {"type": "Odd"}, "appArmorProfile": {}}}]
        }));
        assert_eq!(
            got,
            vec![
                "spec.securityContext.seccompProfile.localhostProfile: Required value: must be set when seccomp type is Localhost",
                "spec.securityContext.appArmorProfile.localhostProfile: Invalid value: \"p\": can only be set when AppArmor type is Localhost",
                "spec.containers[0].securityContext.seccompProfile.type: Unsupported value: \"Odd\": supported values: \"Localhost\", \"RuntimeDefault\", \"Unconfined\"",
                "spec.containers[0].securityContext.appArmorProfile.type: Required value: type is required when appArmorProfile is set",
            ]
        );
    }

    #[test]
    fn sysctls_are_named_once_and_not_on_shared_host_namespaces() {
        assert!(sysctl_name_valid("net.core.somaxconn"));
        assert!(sysctl_name_valid("net/ipv4/conf/eth0.100/rp_filter"));
        assert!(!sysctl_name_valid("Net.core"));
        assert!(!sysctl_name_valid("net..core"));
        let got = check(json!({
            "hostNetwork": true,
            "securityContext": {"sysctls": [
                {"name": "kernel.shm_rmid_forced", "value": "1"},
                {"name": "kernel.shm_rmid_forced", "value": "1"},
                {"name": "net.core.somaxconn", "value": "1"},
                {"name": "", "value": "1"}]},
            "containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 81}]}]
        }));
        assert_eq!(
            got,
            vec![
                "spec.securityContext.sysctls[1].name: Duplicate value: \"kernel.shm_rmid_forced\"",
                "spec.securityContext.sysctls[2].name: Invalid value: \"net.core.somaxconn\": may not be specified when 'hostNetwork' is true",
                "spec.securityContext.sysctls[3].name: Required value",
                "spec.containers[0].ports[0].containerPort: Invalid value: 80: must match `hostPort` when `hostNetwork` is true",
            ]
        );
    }

    #[test]
    fn user_namespaces_keep_to_their_own_namespaces() {
        let got = check(json!({
            "hostUsers": false, "hostNetwork": true, "hostPID": true,
            "containers": [{"name": "c", "securityContext": {"procMount": "Unmasked"}}]
        }));
        assert_eq!(
            got,
            vec![
                "spec.hostNetwork: Forbidden: when `pod.Spec.HostUsers` is false",
                "spec.HostPID: Forbidden: when `pod.Spec.HostUsers` is false",
            ]
        );
        let got = check(json!({
            "containers": [{"name": "c", "securityContext": {"procMount": "Unmasked"}}]
        }));
        assert_eq!(
            got,
            vec![
                "spec.containers[0].securityContext.procMount: Invalid value: \"Unmasked\": `hostUsers` must be false to use `Unmasked`"
            ]
        );
    }
}
