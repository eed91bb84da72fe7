//! kubectl 1.35's tables for the service, storage, policy, RBAC and
//! scheduling kinds, and the `default/kubernetes` Endpoints and
//! EndpointSlice the API server publishes about itself.

use std::time::{Duration, Instant};

use crate::common;
use crate::common::cli::Cli;

/// The whitespace-separated cells of the table row that starts with `name`.
fn row(table: &str, name: &str) -> Vec<String> {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row {name} in:\n{table}"))
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

fn header(table: &str) -> Vec<String> {
    table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_kubernetes_service_has_this_servers_endpoints() {
    let server = common::Server::start_with(&["--advertise-address", "10.11.12.13"]);
    let k = Cli::kubectl(&server);
    let want = format!("10.11.12.13:{}", server.port);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = k.run(&[
            "get",
            "endpoints",
            "kubernetes",
            "-o",
            "jsonpath={.subsets[0].addresses[0].ip}:{.subsets[0].ports[0].port}",
        ]);
        if String::from_utf8_lossy(&out.stdout) == want {
            break;
        }
        assert!(Instant::now() < deadline, "no endpoints {want}: {out:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let table = k.ok(&["get", "endpoints", "kubernetes"]);
    assert_eq!(row(&table, "kubernetes")[1], want);
    // The slice beside it, under the Service's name label.
    let table = k.ok(&[
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=kubernetes",
    ]);
    assert_eq!(
        header(&table),
        ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]
    );
    let port = server.port.to_string();
    assert_eq!(
        row(&table, "kubernetes")[1..4],
        ["IPv4", port.as_str(), "10.11.12.13"]
    );
    let name = k.ok(&[
        "get",
        "endpoints",
        "kubernetes",
        "-o",
        "jsonpath={.subsets[0].ports[0].name}",
    ]);
    assert_eq!(name, "https");
}

const MANIFEST: &str = r#"
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: high}
value: 1000
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: readers}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}
subjects:
- {kind: User, name: ann, apiGroup: rbac.authorization.k8s.io}
- {kind: Group, name: devs, apiGroup: rbac.authorization.k8s.io}
- {kind: ServiceAccount, name: bot, namespace: ci}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web, namespace: default}
spec:
  minAvailable: 2
  selector: {matchLabels: {app: web}}
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
---
apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata: {name: sandboxed}
handler: runsc
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-only, namespace: default}
spec:
  podSelector: {matchLabels: {app: web}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: site, namespace: default}
spec:
  ingressClassName: nginx
  tls: [{hosts: [a.example.com], secretName: tls}]
  rules:
  - host: a.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: disk}
spec:
  capacity: {storage: 5Gi}
  accessModes: [ReadWriteMany, ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: local
  hostPath: {path: /tmp/disk}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data, namespace: default}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: local
  resources: {requests: {storage: 1Gi}}
"#;

#[test]
fn tables_have_upstreams_columns() {
    let server = common::Server::start();
    let k = Cli::kubectl(&server);
    k.ok_stdin(&["apply", "-f", "-"], MANIFEST);

    let pc = k.ok(&["get", "priorityclasses"]);
    assert_eq!(
        header(&pc),
        ["NAME", "VALUE", "GLOBAL-DEFAULT", "AGE", "PREEMPTIONPOLICY"]
    );
    let high = row(&pc, "high");
    assert_eq!((&high[1], &high[2]), (&"1000".into(), &"false".into()));
    assert_eq!(high[4], "PreemptLowerPriority");

    let crb = k.ok(&["get", "clusterrolebinding", "readers", "-o", "wide"]);
    assert_eq!(
        header(&crb),
        ["NAME", "ROLE", "AGE", "USERS", "GROUPS", "SERVICEACCOUNTS"]
    );
    let readers = row(&crb, "readers");
    assert_eq!(readers[1], "ClusterRole/view");
    assert_eq!(readers[3..], ["ann", "devs", "ci/bot"]);

    let pdb = k.ok(&["get", "pdb", "web"]);
    assert_eq!(
        header(&pdb),
        [
            "NAME",
            "MIN",
            "AVAILABLE",
            "MAX",
            "UNAVAILABLE",
            "ALLOWED",
            "DISRUPTIONS",
            "AGE"
        ]
    );
    assert_eq!(row(&pdb, "web")[1..4], ["2", "N/A", "0"]);

    let sc = k.ok(&["get", "storageclass"]);
    assert_eq!(
        row(&sc, "local")[1..6],
        [
            "(default)",
            "kubernetes.io/no-provisioner",
            "Delete",
            "WaitForFirstConsumer",
            "false"
        ]
    );
    assert_eq!(
        row(&k.ok(&["get", "runtimeclass"]), "sandboxed")[1],
        "runsc"
    );
    assert_eq!(row(&k.ok(&["get", "netpol"]), "web-only")[1], "app=web");
    let ing = k.ok(&["get", "ingress", "site"]);
    assert_eq!(
        header(&ing),
        ["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"]
    );
    // No load balancer address yet: the cell is empty.
    assert_eq!(
        row(&ing, "site")[1..5],
        ["nginx", "a.example.com", "80,", "443"]
    );

    let pv = k.ok(&["get", "pv", "disk"]);
    assert_eq!(
        header(&pv)[..5],
        ["NAME", "CAPACITY", "ACCESS", "MODES", "RECLAIM"]
    );
    assert_eq!(
        row(&pv, "disk")[1..5],
        ["5Gi", "RWO,RWX", "Retain", "Pending"]
    );
    let pvc = k.ok(&["get", "pvc", "data", "-o", "wide"]);
    assert!(
        header(&pvc).ends_with(&["AGE".to_owned(), "VOLUMEMODE".to_owned()]),
        "{pvc}"
    );
    // Unbound: no volume, capacity or modes, then the class.
    assert_eq!(row(&pvc, "data")[1..4], ["Pending", "local", "<unset>"]);
}
