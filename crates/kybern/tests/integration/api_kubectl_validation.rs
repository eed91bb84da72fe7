//! Upstream's per-kind validation through the real kubectl: the server
//! answers an invalid object with a 422 whose causes carry upstream's field
//! paths and messages, and accepts the object once it is mended.

use crate::common;
use crate::common::cli::Cli;

fn setup() -> (common::Server, Cli) {
    let server = common::Server::start();
    let kubectl = Cli::kubectl(&server);
    (server, kubectl)
}

/// Applies each manifest and expects kubectl to print `is invalid` and the
/// cause line given with it.
fn rejected(k: &Cli, cases: &[(&str, &str)]) {
    for (manifest, expected) in cases {
        let out = k.run_with_stdin(&["apply", "-f", "-"], Some(manifest));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("is invalid") && err.contains(expected),
            "{expected} not in {err}"
        );
    }
}

/// Pod specs (and templates) are held to upstream's rules, with its field
/// paths and messages, and a malformed quantity fails at decoding.
#[test]
fn pod_specs_are_validated_as_upstream() {
    let (_server, k) = setup();
    let bad = "apiVersion: apps/v1
kind: Deployment
metadata: {name: bad}
spec:
  selector: {matchLabels: {app: bad}}
  template:
    metadata: {labels: {app: bad}}
    spec:
      volumes: [{name: data, emptyDir: {}}]
      containers:
      - name: c
        image: registry.local/x:1
        volumeMounts: [{name: nope, mountPath: /d}]
        resources: {requests: {cpu: '2'}, limits: {cpu: '1'}}
        livenessProbe: {periodSeconds: 5}
";
    let out = k.run_with_stdin(&["apply", "-f", "-"], Some(bad));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    for expected in [
        "The Deployment \"bad\" is invalid",
        "spec.template.spec.containers[0].volumeMounts[0].name: Not found: \"nope\"",
        "spec.template.spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1",
        "spec.template.spec.containers[0].livenessProbe: Required value: must specify a handler type",
    ] {
        assert!(err.contains(expected), "{expected} not in {err}");
    }
    assert!(k.fails(&["get", "deployment", "bad"]).contains("not found"));

    let fixed = bad
        .replace("name: nope", "name: data")
        .replace("cpu: '2'", "cpu: 500m")
        .replace(
            "{periodSeconds: 5}",
            "{periodSeconds: 5, tcpSocket: {port: 80}}",
        );
    k.ok_stdin(&["apply", "-f", "-"], &fixed);

    let malformed = "apiVersion: v1
kind: Pod
metadata: {name: greedy}
spec:
  containers:
  - {name: c, image: registry.local/x:1, resources: {requests: {memory: lots}}}
";
    let out = k.run_with_stdin(&["create", "-f", "-"], Some(malformed));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("BadRequest")
            && err.contains(
                "cannot be handled as a Pod: quantities must match the regular expression"
            ),
        "{err}"
    );
}

/// ConfigMap and Secret keys and types, claims and autoscalers are held to
/// upstream's rules too.
#[test]
fn data_and_storage_kinds_are_validated_as_upstream() {
    let (_server, k) = setup();
    let cases = [
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: spaced}\ndata: {'a b': x}\n",
            "data[a b]: Invalid value: \"a b\": a valid config key must consist of alphanumeric characters",
        ),
        (
            "apiVersion: v1\nkind: Secret\nmetadata: {name: half}\ntype: kubernetes.io/tls\nstringData: {tls.crt: x}\n",
            "data[tls.key]: Required value",
        ),
        (
            "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: sizeless}\nspec: {accessModes: [ReadWriteOnce]}\n",
            "spec.resources[storage]: Required value",
        ),
        (
            "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: upside}\nspec: {scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}, minReplicas: 5, maxReplicas: 2}\n",
            "spec.maxReplicas: Invalid value: 2: must be greater than or equal to `minReplicas`",
        ),
    ];
    rejected(&k, &cases);
    k.ok_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: fine}\ndata: {a.b_c-d: x}\n",
    );
}

/// Security contexts, network kinds, disruption budgets, endpoints and
/// RBAC objects are held to upstream's rules; their defaults fill what a
/// manifest leaves out.
#[test]
fn security_network_and_access_kinds_are_validated_as_upstream() {
    let (_server, k) = setup();
    rejected(
        &k,
        &[
            (
                "apiVersion: v1\nkind: Pod\nmetadata: {name: escalating}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    securityContext: {privileged: true, allowPrivilegeEscalation: false, runAsUser: -1}\n",
                "spec.containers[0].securityContext.runAsUser: Invalid value: -1: must be between 0 and 2147483647, inclusive",
            ),
            (
                "apiVersion: v1\nkind: Pod\nmetadata: {name: sysctl}\nspec:\n  hostNetwork: true\n  securityContext:\n    sysctls: [{name: net.core.somaxconn, value: '1024'}]\n  containers: [{name: c, image: busybox}]\n",
                "spec.securityContext.sysctls[0].name: Invalid value: \"net.core.somaxconn\": may not be specified when 'hostNetwork' is true",
            ),
            (
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: profiled}\nspec:\n  selector: {matchLabels: {app: p}}\n  template:\n    metadata: {labels: {app: p}}\n    spec:\n      securityContext: {seccompProfile: {type: Localhost}}\n      containers: [{name: c, image: busybox}]\n",
                "spec.template.spec.securityContext.seccompProfile.localhostProfile: Required value: must be set when seccomp type is Localhost",
            ),
            (
                "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: peerless}\nspec:\n  podSelector: {}\n  ingress: [{from: [{}], ports: [{port: 80, endPort: 70}]}]\n",
                "spec.ingress[0].from[0]: Required value: must specify a peer",
            ),
            (
                "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: pathless}\nspec:\n  rules:\n  - host: web.example.com\n    http:\n      paths: [{path: /, backend: {service: {name: web, port: {number: 80}}}}]\n",
                "spec.rules[0].http.paths[0].pathType: Required value: pathType must be specified",
            ),
            (
                "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: both}\nspec: {minAvailable: 1, maxUnavailable: '10%', selector: {matchLabels: {app: web}}}\n",
                "minAvailable and maxUnavailable cannot be both set",
            ),
            (
                "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: loopback}\naddressType: IPv4\nendpoints: [{addresses: [127.0.0.1]}]\nports: [{name: http, port: 80}]\n",
                "endpoints[0].addresses[0]: Invalid value: \"127.0.0.1\": may not be in the loopback range (127.0.0.0/8, ::1/128)",
            ),
            (
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: verbless}\nrules: [{apiGroups: [''], resources: [pods]}]\n",
                "rules[0].verbs: Required value: verbs must contain at least one value",
            ),
            (
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: to-role}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: r}\nsubjects: [{kind: User, name: alice}]\n",
                "roleRef.kind: Unsupported value: \"Role\": supported values: \"ClusterRole\"",
            ),
        ],
    );
    // Mended, each applies; defaults fill the subject's group and the
    // policy's types.
    k.ok_stdin(
        &["apply", "-f", "-"],
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: reader}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}\nsubjects: [{kind: User, name: alice}]\n",
    );
    assert_eq!(
        k.ok(&[
            "get",
            "rolebinding",
            "reader",
            "-o",
            "jsonpath={.subjects[0].apiGroup}"
        ]),
        "rbac.authorization.k8s.io"
    );
    k.ok_stdin(
        &["apply", "-f", "-"],
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: egress}\nspec:\n  podSelector: {}\n  egress: [{to: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}], ports: [{port: 53}]}]\n",
    );
    assert_eq!(
        k.ok(&[
            "get",
            "networkpolicy",
            "egress",
            "-o",
            "jsonpath={.spec.policyTypes} {.spec.egress[0].ports[0].protocol}"
        ]),
        "[\"Ingress\",\"Egress\"] TCP"
    );
    k.ok_stdin(
        &["apply", "-f", "-"],
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: web}\nspec:\n  rules:\n  - host: '*.example.com'\n    http:\n      paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {name: http}}}}]\n",
    );
    // A role reference is fixed once the binding is made.
    let out = k.run_with_stdin(
        &["apply", "-f", "-"],
        Some("apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: reader}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: edit}\nsubjects: [{kind: User, name: alice}]\n"),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("cannot change roleRef"),
        "{err}"
    );
}

/// Quotas, limit ranges, storage and runtime classes, leases, nodes and the
/// workload kinds' strategies are held to upstream's rules too, and a
/// StorageClass cannot change once made.
#[test]
fn policy_cluster_and_workload_kinds_are_validated_as_upstream() {
    let (_server, k) = setup();
    rejected(
        &k,
        &[
            (
                "apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: halves}\nspec: {hard: {pods: 1500m}}\n",
                "spec.hard[pods]: Invalid value: \"1500m\": must be an integer",
            ),
            (
                "apiVersion: v1\nkind: LimitRange\nmetadata: {name: upside}\nspec: {limits: [{type: Container, min: {cpu: '2'}, max: {cpu: '1'}}]}\n",
                "spec.limits[0].min[cpu]: Invalid value: \"2\": min value 2 is greater than max value 1",
            ),
            (
                "apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata: {name: odd}\nhandler: Odd_Handler\n",
                "handler: Invalid value: \"Odd_Handler\"",
            ),
            (
                "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {name: brief}\nspec: {leaseDurationSeconds: 0}\n",
                "spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0",
            ),
            (
                "apiVersion: v1\nkind: Node\nmetadata: {name: tainted}\nspec: {taints: [{key: gpu, effect: Sometimes}]}\n",
                "spec.taints[0].effect: Unsupported value: \"Sometimes\"",
            ),
            (
                "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: zoned}\nspec:\n  schedule: 'CRON_TZ=UTC 0 * * * *'\n  concurrencyPolicy: Sometimes\n  jobTemplate: {spec: {template: {spec: {restartPolicy: Never, containers: [{name: c, image: busybox}]}}}}\n",
                "spec.concurrencyPolicy: Unsupported value: \"Sometimes\"",
            ),
            (
                "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: random}\nspec:\n  podManagementPolicy: Random\n  serviceName: db\n  selector: {matchLabels: {app: db}}\n  template:\n    metadata: {labels: {app: db}}\n    spec: {containers: [{name: c, image: busybox}]}\n",
                "spec.podManagementPolicy: Invalid value: \"Random\": must be 'OrderedReady' or 'Parallel'",
            ),
        ],
    );
    let malformed = "apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: lots}\nspec: {hard: {requests.cpu: lots}}\n";
    let out = k.run_with_stdin(&["create", "-f", "-"], Some(malformed));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("cannot be handled as a ResourceQuota"),
        "{err}"
    );
    // Defaults fill a StorageClass's policies, which are fixed from then on.
    let class = "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: disks}\nprovisioner: example.com/disk\n";
    k.ok_stdin(&["apply", "-f", "-"], class);
    assert_eq!(
        k.ok(&[
            "get",
            "storageclass",
            "disks",
            "-o",
            "jsonpath={.reclaimPolicy} {.volumeBindingMode}"
        ]),
        "Delete Immediate"
    );
    let changed = format!("{class}reclaimPolicy: Retain\n");
    let out = k.run_with_stdin(&["apply", "-f", "-"], Some(&changed));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("reclaimPolicy: Forbidden: updates to reclaimPolicy are forbidden."),
        "{err}"
    );
}

/// Cron schedules and zones, pod-level resources and resource claims, CSI
/// objects, Events and finalizer names.
#[test]
fn schedules_claims_csi_events_and_finalizers_are_validated_as_upstream() {
    let (_server, k) = setup();
    let cron = |schedule: &str, zone: &str| {
        format!(
            "apiVersion: batch/v1\nkind: CronJob\nmetadata: {{name: cron}}\nspec:\n  schedule: '{schedule}'\n{zone}  jobTemplate: {{spec: {{template: {{spec: {{restartPolicy: Never, containers: [{{name: c, image: busybox}}]}}}}}}}}\n"
        )
    };
    let (bad_schedule, bad_zone) = (
        cron("0 25 * * *", ""),
        cron("0 0 * * *", "  timeZone: Mars/Base\n"),
    );
    rejected(
        &k,
        &[
            (
                bad_schedule.as_str(),
                "spec.schedule: Invalid value: \"0 25 * * *\": end of range (25) above maximum (23): 25",
            ),
            (
                bad_zone.as_str(),
                "spec.timeZone: Invalid value: \"Mars/Base\": unknown time zone Mars/Base",
            ),
            (
                "apiVersion: v1\nkind: Pod\nmetadata: {name: shared}\nspec:\n  resources: {requests: {cpu: 500m}, limits: {cpu: '2'}}\n  containers: [{name: c, image: busybox, resources: {requests: {cpu: '1'}}}]\n",
                "spec.resources.requests[cpu]: Invalid value: \"500m\": must be greater than or equal to aggregate container requests of 1",
            ),
            (
                "apiVersion: v1\nkind: Pod\nmetadata: {name: claims}\nspec:\n  resourceClaims: [{name: gpu, resourceClaimTemplateName: gpus}]\n  containers: [{name: c, image: busybox, resources: {claims: [{name: nic}]}}]\n",
                "spec.containers[0].resources.claims[0]: Not found: \"nic\": must be one of the names in pod.spec.resourceClaims: gpu",
            ),
            (
                "apiVersion: storage.k8s.io/v1\nkind: CSIDriver\nmetadata: {name: csi.example.com}\nspec: {fsGroupPolicy: Sometimes}\n",
                "spec.fsGroupPolicy: Unsupported value: \"Sometimes\"",
            ),
            (
                "apiVersion: storage.k8s.io/v1\nkind: CSINode\nmetadata: {name: node-1}\nspec: {drivers: [{name: csi.example.com, nodeID: ''}]}\n",
                "spec.drivers[0].nodeID: Required value",
            ),
            (
                "apiVersion: v1\nkind: Event\nmetadata: {name: stray, namespace: default}\ninvolvedObject: {kind: Pod, name: p, namespace: kube-system}\nreason: Started\n",
                "involvedObject.namespace: Invalid value: \"kube-system\": does not match event.namespace",
            ),
            (
                "apiVersion: events.k8s.io/v1\nkind: Event\nmetadata: {name: loose, namespace: default}\neventTime: '2026-12-06T10:00:00.000000Z'\nregarding: {kind: Pod, name: p, namespace: default}\nreportingController: example.com/ctl\nreportingInstance: ctl-1\naction: Scale\nreason: Scaled\ntype: Fine\n",
                "type: Invalid value: \"\": has invalid value: Fine",
            ),
            (
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: held, finalizers: [cleanup]}\n",
                "metadata.finalizers[0]: Invalid value: \"cleanup\": name is neither a standard finalizer name nor is it fully qualified",
            ),
            (
                "apiVersion: v1\nkind: Namespace\nmetadata: {name: held}\nspec: {finalizers: [mine]}\n",
                "spec.finalizers: Invalid value: \"mine\": name is neither a standard finalizer name nor is it fully qualified",
            ),
        ],
    );
    // Mended, they are accepted; a CSIDriver's defaults are filled in and
    // what attaching needs is fixed from then on.
    k.ok_stdin(
        &["apply", "-f", "-"],
        &cron("*/5 9-17 * * mon-fri", "  timeZone: Europe/Berlin\n"),
    );
    let driver = "apiVersion: storage.k8s.io/v1\nkind: CSIDriver\nmetadata: {name: csi.example.com}\nspec: {}\n";
    k.ok_stdin(&["apply", "-f", "-"], driver);
    assert_eq!(
        k.ok(&[
            "get",
            "csidriver",
            "csi.example.com",
            "-o",
            "jsonpath={.spec.attachRequired} {.spec.fsGroupPolicy} {.spec.volumeLifecycleModes}"
        ]),
        "true ReadWriteOnceWithFSType [\"Persistent\"]"
    );
    let out = k.run_with_stdin(
        &["apply", "-f", "-"],
        Some("apiVersion: storage.k8s.io/v1\nkind: CSIDriver\nmetadata: {name: csi.example.com}\nspec: {attachRequired: false}\n"),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("spec.attachedRequired: Invalid value: false: field is immutable"),
        "{err}"
    );
}
