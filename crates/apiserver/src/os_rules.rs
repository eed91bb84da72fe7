//! Upstream's validation of what a pod's operating system allows: `spec.os`,
//! the Linux-only settings a Windows pod may not carry and the Windows
//! options a Linux pod may not, Windows user names and host-process
//! containers (`pkg/apis/core/validation`, paths and messages as upstream's).

use kybern_apimachinery::{Cause, names};
use serde_json::{Value, json};

use crate::field_rules::{items, set, text};
use crate::security_rules::{containers, context};

/// What a Windows pod may not set.
const NOT_FOR_WINDOWS: &str = "cannot be set for a windows pod";
/// What a Linux pod may not set.
const NOT_FOR_LINUX: &str = "windows options cannot be set for a linux pod";

/// The OS rules of the pod spec `spec` at `path`.
pub(crate) fn pod_os(spec: &Value, path: &str, causes: &mut Vec<Cause>) {
    windows_host_process(spec, path, causes);
    os(spec, path, causes);
}

/// A Windows user name: `[DOMAIN\]USER` within upstream's limits.
fn windows_user_name(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("runAsUserName cannot be an empty string");
    }
    if name.chars().any(char::is_control) {
        return Some("runAsUserName cannot contain control characters");
    }
    let parts: Vec<&str> = name.split('\\').collect();
    let (domain, user) = match parts.as_slice() {
        [user] => (None, *user),
        [domain, user] => (Some(*domain), *user),
        _ => return Some("runAsUserName cannot contain more than one backslash"),
    };
    if let Some(domain) = domain {
        if domain.len() >= 256 {
            return Some("runAsUserName's Domain length must be under 256 characters");
        }
        let netbios = (1..=15).contains(&domain.len())
            && !domain.starts_with('.')
            && !domain.contains(['\\', '/', ':', '*', '?', '"', '<', '>', '|']);
        if !netbios && !names::dns1123_subdomain(&domain.to_ascii_lowercase()).is_empty() {
            return Some("runAsUserName's Domain doesn't match the NetBios nor the DNS format");
        }
    }
    if user.is_empty() {
        return Some("runAsUserName's User cannot be empty");
    }
    if user.len() > 104 {
        return Some("runAsUserName's User length must not be longer than 104 characters");
    }
    if user.chars().all(|c| c == '.' || c == ' ') {
        return Some("runAsUserName's User cannot contain only periods or spaces");
    }
    if user.contains([
        '"', '/', '\\', ':', ';', '|', '=', ',', '+', '*', '?', '<', '>', '@', '[', ']',
    ]) {
        return Some(
            "runAsUserName's User cannot contain the following characters: \"/\\:;|=,+*?<>@[]",
        );
    }
    None
}

pub(crate) fn windows_options(sc: &Value, at: &str, causes: &mut Vec<Cause>) {
    let Some(w) = context(sc, "windowsOptions") else {
        return;
    };
    let at = format!("{at}.windowsOptions");
    if let Some(name) = text(w, "gmsaCredentialSpecName") {
        for msg in names::dns1123_subdomain(name) {
            causes.push(Cause::invalid(
                format!("{at}.gmsaCredentialSpecName"),
                &json!(name),
                msg,
            ));
        }
    }
    if let Some(cred) = text(w, "gmsaCredentialSpec") {
        let why = if cred.is_empty() {
            Some("gmsaCredentialSpec cannot be an empty string")
        } else if cred.len() > 64 * 1024 {
            Some("gmsaCredentialSpec size must be under 64 KiB")
        } else {
            None
        };
        if let Some(why) = why {
            causes.push(Cause::invalid(
                format!("{at}.gmsaCredentialSpec"),
                &json!(cred),
                why,
            ));
        }
    }
    if let Some(name) = text(w, "runAsUserName")
        && let Some(why) = windows_user_name(name)
    {
        causes.push(Cause::invalid(
            format!("{at}.runAsUserName"),
            &json!(name),
            why,
        ));
    }
}

/// Windows host-process containers: all or none, on the host network.
fn windows_host_process(spec: &Value, path: &str, causes: &mut Vec<Cause>) {
    let host_process = |sc: Option<&Value>| {
        sc.and_then(|sc| sc.pointer("/windowsOptions/hostProcess"))
            .and_then(Value::as_bool)
    };
    let pod = host_process(context(spec, "securityContext"));
    let (mut all, mut hosted) = (0, 0);
    for (list, (i, c)) in containers(spec) {
        all += 1;
        let own = host_process(context(c, "securityContext"));
        if let (Some(p), Some(o)) = (pod, own)
            && p != o
        {
            causes.push(Cause::invalid(
                format!("{path}.{list}[{i}].securityContext.windowsOptions.hostProcess"),
                &json!(o),
                format!("pod hostProcess value must be identical if both are specified, was {p}"),
            ));
        }
        if own.or(pod) == Some(true) {
            hosted += 1;
        }
    }
    if hosted == 0 {
        return;
    }
    if hosted != all {
        causes.push(Cause::invalid(
            path,
            &json!(""),
            "If pod contains any hostProcess containers then all containers must be HostProcess containers",
        ));
    }
    if spec.get("hostNetwork").and_then(Value::as_bool) != Some(true) {
        causes.push(Cause::invalid(
            format!("{path}.hostNetwork"),
            &json!(false),
            "hostNetwork must be true if pod contains any hostProcess containers",
        ));
    }
}

/// `spec.os`: a supported name, and none of the other OS's settings.
fn os(spec: &Value, path: &str, causes: &mut Vec<Cause>) {
    let Some(os) = context(spec, "os") else {
        return;
    };
    let name = text(os, "name").unwrap_or("");
    let at = format!("{path}.os");
    match name {
        "" => causes.push(Cause::required(format!("{at}.name"), "cannot be empty")),
        "linux" => {
            let forbid = |sc: Option<&Value>, at: String, causes: &mut Vec<Cause>| {
                if sc.is_some_and(|sc| set(sc, "windowsOptions")) {
                    causes.push(Cause::forbidden(
                        format!("{at}.securityContext.windowsOptions"),
                        NOT_FOR_LINUX,
                    ));
                }
            };
            forbid(context(spec, "securityContext"), path.to_owned(), causes);
            for (list, (i, c)) in containers(spec) {
                forbid(
                    context(c, "securityContext"),
                    format!("{path}.{list}[{i}]"),
                    causes,
                );
            }
        }
        "windows" => windows(spec, path, causes),
        other => causes.push(Cause::not_supported(
            at,
            &json!(other),
            &["linux", "windows"],
        )),
    }
}

/// Each of `keys` set in `sc` is forbidden on Windows.
fn forbid_set(sc: &Value, keys: &[&str], at: &str, causes: &mut Vec<Cause>) {
    for key in keys {
        if set(sc, key) {
            causes.push(Cause::forbidden(format!("{at}.{key}"), NOT_FOR_WINDOWS));
        }
    }
}

/// What a Windows pod may not set.
fn windows(spec: &Value, path: &str, causes: &mut Vec<Cause>) {
    for key in ["hostUsers", "hostPID", "hostIPC", "shareProcessNamespace"] {
        let on = match key {
            "hostPID" | "hostIPC" => spec.get(key).and_then(Value::as_bool) == Some(true),
            _ => set(spec, key),
        };
        if on {
            causes.push(Cause::forbidden(format!("{path}.{key}"), NOT_FOR_WINDOWS));
        }
    }
    if let Some(sc) = context(spec, "securityContext") {
        let keys = &[
            "appArmorProfile",
            "seLinuxOptions",
            "seccompProfile",
            "fsGroup",
            "fsGroupChangePolicy",
            "runAsUser",
            "runAsGroup",
            "supplementalGroups",
            "supplementalGroupsPolicy",
            "seLinuxChangePolicy",
        ];
        forbid_set(sc, keys, &format!("{path}.securityContext"), causes);
        if items(Some(sc), "sysctls").next().is_some() {
            causes.push(Cause::forbidden(
                format!("{path}.securityContext.sysctls"),
                NOT_FOR_WINDOWS,
            ));
        }
    }
    for (list, (i, c)) in containers(spec) {
        let Some(sc) = context(c, "securityContext") else {
            continue;
        };
        let keys = &[
            "appArmorProfile",
            "seLinuxOptions",
            "seccompProfile",
            "capabilities",
            "readOnlyRootFilesystem",
            "privileged",
            "allowPrivilegeEscalation",
            "procMount",
            "runAsUser",
            "runAsGroup",
        ];
        let at = format!("{path}.{list}[{i}].securityContext");
        forbid_set(sc, keys, &at, causes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(spec: Value) -> Vec<String> {
        let mut causes = Vec::new();
        crate::security_rules::pod_security(&spec, "spec", &mut causes);
        crate::field_rules::cause_lines(&causes)
    }

    #[test]
    fn each_os_forbids_the_others_settings() {
        let got = check(json!({
            "os": {"name": "windows"}, "hostPID": true,
            "securityContext": {"runAsUser": 5},
            "containers": [{"name": "c", "securityContext": {"privileged": false}}]
        }));
        assert_eq!(
            got,
            vec![
                "spec.hostPID: Forbidden: cannot be set for a windows pod",
                "spec.securityContext.runAsUser: Forbidden: cannot be set for a windows pod",
                "spec.containers[0].securityContext.privileged: Forbidden: cannot be set for a windows pod",
            ]
        );
        let got = check(json!({
            "os": {"name": "linux"},
            "containers": [{"name": "c", "securityContext": {"windowsOptions": {"runAsUserName": "a\\b\\c"}}}]
        }));
        assert_eq!(
            got,
            vec![
                "spec.containers[0].securityContext.windowsOptions.runAsUserName: Invalid value: \"a\\\\b\\\\c\": runAsUserName cannot contain more than one backslash",
                "spec.containers[0].securityContext.windowsOptions: Forbidden: windows options cannot be set for a linux pod",
            ]
        );
        assert_eq!(
            check(json!({"os": {"name": "plan9"}, "containers": []})),
            vec!["spec.os: Unsupported value: \"plan9\": supported values: \"linux\", \"windows\""]
        );
    }

    #[test]
    fn host_process_containers_are_all_or_none_on_the_host_network() {
        let got = check(json!({
            "securityContext": {"windowsOptions": {"hostProcess": true}},
            "containers": [{"name": "a"},
                {"name": "b", "securityContext": {"windowsOptions": {"hostProcess": false}}}]
        }));
        assert_eq!(
            got,
            vec![
                "spec.containers[1].securityContext.windowsOptions.hostProcess: Invalid value: false: pod hostProcess value must be identical if both are specified, was true",
                "spec: Invalid value: \"\": If pod contains any hostProcess containers then all containers must be HostProcess containers",
                "spec.hostNetwork: Invalid value: false: hostNetwork must be true if pod contains any hostProcess containers",
            ]
        );
    }
}
