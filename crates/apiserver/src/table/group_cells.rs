//! The row cells of the service, storage, policy, RBAC and scheduling kinds,
//! after upstream's printers.

use serde_json::{Value, json};

use super::cells::{created, name, s};
use crate::object::{self, Object};

/// Upstream shows at most this many entries of a list in one cell.
const MAX_SHOWN: usize = 3;

/// The first [`MAX_SHOWN`] of `items` joined by commas, then `+ N more...`;
/// `<unset>` when there are none.
fn list_with_more(items: &[String]) -> String {
    if items.is_empty() {
        return "<unset>".into();
    }
    let shown = items[..items.len().min(MAX_SHOWN)].join(",");
    if items.len() > MAX_SHOWN {
        format!("{shown} + {} more...", items.len() - MAX_SHOWN)
    } else {
        shown
    }
}

fn array<'a>(o: &'a Value, ptr: &str) -> impl Iterator<Item = &'a Value> + 'a {
    o.pointer(ptr)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// `ip:port` with brackets around an IPv6 address, as Go's `JoinHostPort`.
fn host_port(ip: &str, port: i64) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// An Endpoints row: every address on every port (the bare addresses of a
/// subset without ports), three at most; `<none>` without subsets.
pub(super) fn endpoints_cells(o: &Object) -> Vec<Value> {
    let subsets: Vec<&Value> = array(o, "/subsets").collect();
    let cell = if subsets.is_empty() {
        "<none>".to_owned()
    } else {
        let mut all = Vec::new();
        for ss in subsets {
            let ips: Vec<&str> = array(ss, "/addresses").map(|a| str_of(a, "ip")).collect();
            let ports: Vec<i64> = array(ss, "/ports")
                .filter_map(|p| p.get("port").and_then(Value::as_i64))
                .collect();
            if ports.is_empty() {
                all.extend(ips.iter().map(|ip| (*ip).to_owned()));
            }
            for port in ports {
                all.extend(ips.iter().map(|ip| host_port(ip, port)));
            }
        }
        if all.is_empty() {
            String::new()
        } else {
            list_with_more(&all)
        }
    };
    vec![name(o), json!(cell), created(o)]
}

/// An EndpointSlice row: address type, ports (by name when unnumbered, `*`
/// for all) and addresses.
pub(super) fn endpointslice_cells(o: &Object) -> Vec<Value> {
    let ports: Vec<String> = array(o, "/ports")
        .map(|p| match p.get("port").and_then(Value::as_i64) {
            Some(n) => n.to_string(),
            None => p
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("*")
                .to_owned(),
        })
        .collect();
    let addresses: Vec<String> = array(o, "/endpoints")
        .flat_map(|e| array(e, "/addresses"))
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    vec![
        name(o),
        json!(s(o, "/addressType")),
        json!(list_with_more(&ports)),
        json!(list_with_more(&addresses)),
        created(o),
    ]
}

/// A RoleBinding or ClusterRoleBinding row: `Kind/name` of the role, and
/// (wide) its users, groups and `namespace/name` service accounts.
pub(super) fn binding_cells(o: &Object) -> Vec<Value> {
    let (mut users, mut groups, mut accounts) = (Vec::new(), Vec::new(), Vec::new());
    for subject in array(o, "/subjects") {
        let subject_name = str_of(subject, "name").to_owned();
        match str_of(subject, "kind") {
            "User" => users.push(subject_name),
            "Group" => groups.push(subject_name),
            "ServiceAccount" => accounts.push(match str_of(subject, "namespace") {
                "" => subject_name,
                ns => format!("{ns}/{subject_name}"),
            }),
            _ => {}
        }
    }
    vec![
        name(o),
        json!(format!(
            "{}/{}",
            s(o, "/roleRef/kind"),
            s(o, "/roleRef/name")
        )),
        created(o),
        json!(users.join(", ")),
        json!(groups.join(", ")),
        json!(accounts.join(", ")),
    ]
}

pub(super) fn priorityclass_cells(o: &Object) -> Vec<Value> {
    let policy = match s(o, "/preemptionPolicy") {
        "" => "<unset>",
        p => p,
    };
    vec![
        name(o),
        json!(o.get("value").and_then(Value::as_i64).unwrap_or(0)),
        json!(
            o.get("globalDefault")
                .and_then(Value::as_bool)
                .unwrap_or(false)
        ),
        created(o),
        json!(policy),
    ]
}

/// An int-or-string field as printed, `N/A` when unset.
fn int_or_string(o: &Object, ptr: &str) -> String {
    match o.pointer(ptr) {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(v)) => v.clone(),
        _ => "N/A".into(),
    }
}

pub(super) fn pdb_cells(o: &Object) -> Vec<Value> {
    vec![
        name(o),
        json!(int_or_string(o, "/spec/minAvailable")),
        json!(int_or_string(o, "/spec/maxUnavailable")),
        json!(
            o.pointer("/status/disruptionsAllowed")
                .and_then(Value::as_i64)
                .unwrap_or(0)
        ),
        created(o),
    ]
}

/// Whether an annotation marks the object as its kind's default.
fn default_annotated(o: &Object, annotations: &[&str]) -> bool {
    annotations.iter().any(|a| {
        o.pointer("/metadata/annotations")
            .and_then(|m| m.get(*a))
            .and_then(Value::as_str)
            == Some("true")
    })
}

pub(super) fn storageclass_cells(o: &Object) -> Vec<Value> {
    let mut shown = object::name(o).to_owned();
    if default_annotated(
        o,
        &[
            "storageclass.kubernetes.io/is-default-class",
            "storageclass.beta.kubernetes.io/is-default-class",
        ],
    ) {
        shown.push_str(" (default)");
    }
    let or = |ptr: &str, default: &'static str| match s(o, ptr) {
        "" => default.to_owned(),
        v => v.to_owned(),
    };
    vec![
        json!(shown),
        json!(s(o, "/provisioner")),
        json!(or("/reclaimPolicy", "Delete")),
        json!(or("/volumeBindingMode", "Immediate")),
        json!(
            o.get("allowVolumeExpansion")
                .and_then(Value::as_bool)
                .unwrap_or(false)
                .to_string()
        ),
        created(o),
    ]
}

pub(super) fn networkpolicy_cells(o: &Object) -> Vec<Value> {
    let selector = o
        .pointer("/spec/podSelector")
        .and_then(|sel| kybern_apimachinery::labels::Selector::from_label_selector(sel).ok())
        .map(|sel| sel.to_string())
        .unwrap_or_default();
    vec![
        name(o),
        json!(if selector.is_empty() {
            "<none>".to_owned()
        } else {
            selector
        }),
        created(o),
    ]
}

pub(super) fn ingressclass_cells(o: &Object) -> Vec<Value> {
    let parameters = match o.pointer("/spec/parameters") {
        Some(p) if p.is_object() => {
            let mut kind = str_of(p, "kind").to_owned();
            if let Some(group) = p.get("apiGroup").and_then(Value::as_str) {
                kind = format!("{kind}.{group}");
            }
            format!("{kind}/{}", str_of(p, "name"))
        }
        _ => "<none>".into(),
    };
    vec![
        name(o),
        json!(s(o, "/spec/controller")),
        json!(parameters),
        created(o),
    ]
}

/// An Ingress row: class, hosts (`*` for none, four at most), the load
/// balancer's addresses, and `80` or `80, 443` with TLS.
pub(super) fn ingress_cells(o: &Object) -> Vec<Value> {
    let hosts: Vec<&str> = array(o, "/spec/rules")
        .map(|r| str_of(r, "host"))
        .filter(|h| !h.is_empty())
        .collect();
    let hosts = match hosts.len() {
        0 => "*".to_owned(),
        n if n > 4 => format!("{} + {} more...", hosts[..4].join(","), n - 4),
        _ => hosts.join(","),
    };
    let address: Vec<&str> = array(o, "/status/loadBalancer/ingress")
        .filter_map(|i| {
            i.get("ip")
                .or_else(|| i.get("hostname"))
                .and_then(Value::as_str)
        })
        .collect();
    let tls = array(o, "/spec/tls").next().is_some();
    vec![
        name(o),
        json!(match s(o, "/spec/ingressClassName") {
            "" => "<none>",
            class => class,
        }),
        json!(hosts),
        json!(address.join(",")),
        json!(if tls { "80, 443" } else { "80" }),
        created(o),
    ]
}

/// A ControllerRevision row: `kind.group/name` of its controller, lower case.
pub(super) fn controllerrevision_cells(o: &Object) -> Vec<Value> {
    let controller = array(o, "/metadata/ownerReferences")
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        .map_or_else(
            || "<none>".to_owned(),
            |r| {
                let group = str_of(r, "apiVersion")
                    .rsplit_once('/')
                    .map_or("", |(g, _)| g);
                let kind = if group.is_empty() {
                    str_of(r, "kind").to_owned()
                } else {
                    format!("{}.{group}", str_of(r, "kind"))
                };
                format!("{}/{}", kind.to_lowercase(), str_of(r, "name"))
            },
        );
    vec![
        name(o),
        json!(controller),
        json!(o.get("revision").and_then(Value::as_i64).unwrap_or(0)),
        created(o),
    ]
}

/// Access modes abbreviated in upstream's fixed order.
fn access_modes(o: &Object, ptr: &str) -> String {
    let modes: Vec<&str> = array(o, ptr).filter_map(Value::as_str).collect();
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(full, _)| modes.contains(full))
    .map(|(_, short)| *short)
    .collect::<Vec<_>>()
    .join(",")
}

/// The phase, or `Terminating` once deletion has begun.
fn phase(o: &Object) -> &str {
    if object::meta_str(o, "deletionTimestamp").is_empty() {
        s(o, "/status/phase")
    } else {
        "Terminating"
    }
}

/// The class from the beta annotation, else `spec.storageClassName`.
fn storage_class(o: &Object) -> &str {
    o.pointer("/metadata/annotations/volume.beta.kubernetes.io~1storage-class")
        .and_then(Value::as_str)
        .unwrap_or_else(|| s(o, "/spec/storageClassName"))
}

fn unset_or(o: &Object, ptr: &str) -> Value {
    json!(match s(o, ptr) {
        "" => "<unset>",
        v => v,
    })
}

pub(super) fn pv_cells(o: &Object) -> Vec<Value> {
    let claim = if s(o, "/spec/claimRef/name").is_empty() {
        String::new()
    } else {
        format!(
            "{}/{}",
            s(o, "/spec/claimRef/namespace"),
            s(o, "/spec/claimRef/name")
        )
    };
    vec![
        name(o),
        json!(s(o, "/spec/capacity/storage")),
        json!(access_modes(o, "/spec/accessModes")),
        json!(s(o, "/spec/persistentVolumeReclaimPolicy")),
        json!(phase(o)),
        json!(claim),
        json!(storage_class(o)),
        unset_or(o, "/spec/volumeAttributesClassName"),
        json!(s(o, "/status/reason")),
        created(o),
        unset_or(o, "/spec/volumeMode"),
    ]
}

/// A PersistentVolumeClaim row: capacity and access modes once bound.
pub(super) fn pvc_cells(o: &Object) -> Vec<Value> {
    let bound = !s(o, "/spec/volumeName").is_empty();
    let (capacity, modes) = if bound {
        (
            s(o, "/status/capacity/storage").to_owned(),
            access_modes(o, "/status/accessModes"),
        )
    } else {
        (String::new(), String::new())
    };
    vec![
        name(o),
        json!(phase(o)),
        json!(s(o, "/spec/volumeName")),
        json!(capacity),
        json!(modes),
        json!(storage_class(o)),
        unset_or(o, "/spec/volumeAttributesClassName"),
        created(o),
        unset_or(o, "/spec/volumeMode"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_show_three_then_a_count() {
        let o = json!({"metadata": {"name": "web"}, "subsets": [
            {"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "fd00::3"}],
             "ports": [{"port": 80}, {"port": 443}]}]});
        assert_eq!(
            endpoints_cells(&o)[1],
            "10.0.0.1:80,10.0.0.2:80,[fd00::3]:80 + 3 more..."
        );
        let none = json!({"metadata": {"name": "web"}});
        assert_eq!(endpoints_cells(&none)[1], "<none>");
    }

    #[test]
    fn slices_list_ports_and_addresses() {
        let o = json!({"metadata": {"name": "web-x"}, "addressType": "IPv4",
            "ports": [{"port": 80}, {"name": "metrics"}],
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}]});
        let cells = endpointslice_cells(&o);
        assert_eq!(cells[1], "IPv4");
        assert_eq!(cells[2], "80,metrics");
        assert_eq!(cells[3], "10.0.0.1,10.0.0.2");
        let empty = json!({"metadata": {"name": "web-y"}, "addressType": "IPv4"});
        assert_eq!(endpointslice_cells(&empty)[3], "<unset>");
    }

    #[test]
    fn bindings_name_role_and_subjects() {
        let o = json!({"metadata": {"name": "b"}, "roleRef": {"kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "name": "ann"}, {"kind": "Group", "name": "devs"},
                {"kind": "ServiceAccount", "name": "bot", "namespace": "ci"},
                {"kind": "User", "name": "bob"}]});
        let cells = binding_cells(&o);
        assert_eq!(cells[1], "ClusterRole/view");
        assert_eq!(cells[3], "ann, bob");
        assert_eq!(cells[4], "devs");
        assert_eq!(cells[5], "ci/bot");
    }

    #[test]
    fn claims_show_capacity_once_bound() {
        let pending = json!({"metadata": {"name": "c"}, "spec": {"storageClassName": "local"},
            "status": {"phase": "Pending"}});
        let cells = pvc_cells(&pending);
        assert_eq!(cells[1], "Pending");
        assert_eq!(cells[3], "");
        assert_eq!(cells[5], "local");
        assert_eq!(cells[6], "<unset>");
        let bound = json!({"metadata": {"name": "c"},
            "spec": {"volumeName": "pv1", "volumeMode": "Filesystem"},
            "status": {"phase": "Bound", "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteMany", "ReadWriteOnce"]}});
        let cells = pvc_cells(&bound);
        assert_eq!(cells[3], "1Gi");
        assert_eq!(cells[4], "RWO,RWX");
        assert_eq!(cells[8], "Filesystem");
    }

    #[test]
    fn revisions_name_their_controller() {
        let o = json!({"metadata": {"name": "web-1", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "controller": true}]},
            "revision": 2});
        let cells = controllerrevision_cells(&o);
        assert_eq!(cells[1], "statefulset.apps/web");
        assert_eq!(cells[2], 2);
    }

    #[test]
    fn default_storage_class_is_marked() {
        let o = json!({"metadata": {"name": "local", "annotations":
            {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "kubernetes.io/no-provisioner", "volumeBindingMode": "WaitForFirstConsumer"});
        let cells = storageclass_cells(&o);
        assert_eq!(cells[0], "local (default)");
        assert_eq!(cells[2], "Delete");
        assert_eq!(cells[3], "WaitForFirstConsumer");
        assert_eq!(cells[4], "false");
    }
}
