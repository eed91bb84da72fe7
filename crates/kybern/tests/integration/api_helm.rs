//! helm 4 against the real server: install, upgrade, rollback and uninstall of
//! the chart `helm create` makes (no `--wait`: no pods run yet). Helm stores
//! releases as protobuf Secrets and applies with server-side apply.

use crate::common;
use crate::common::cli::Cli;

#[test]
fn helm_release_lifecycle() {
    let server = common::Server::start();
    let helm = Cli::helm(&server);
    let k = Cli::kubectl(&server);
    helm.ok(&["create", "demo"]);

    let installed = helm.ok(&["install", "rel", "./demo"]);
    assert!(installed.contains("STATUS: deployed"), "{installed}");
    assert_eq!(
        k.ok(&[
            "get",
            "deploy",
            "rel-demo",
            "-o",
            "jsonpath={.spec.replicas}"
        ]),
        "1"
    );
    assert!(
        k.ok(&["get", "svc", "rel-demo", "-o", "name"])
            .contains("service/rel-demo")
    );
    assert!(
        k.ok(&["get", "sa", "rel-demo", "-o", "name"])
            .contains("serviceaccount/rel-demo")
    );

    helm.ok(&["upgrade", "rel", "./demo", "--set", "replicaCount=3"]);
    assert_eq!(
        k.ok(&[
            "get",
            "deploy",
            "rel-demo",
            "-o",
            "jsonpath={.spec.replicas}"
        ]),
        "3"
    );
    helm.ok(&["rollback", "rel", "1"]);
    assert_eq!(
        k.ok(&[
            "get",
            "deploy",
            "rel-demo",
            "-o",
            "jsonpath={.spec.replicas}"
        ]),
        "1"
    );
    let history = helm.ok(&["history", "rel"]);
    assert_eq!(
        history.lines().count(),
        4,
        "header and three revisions: {history}"
    );
    let releases = k.ok(&["get", "secrets", "-l", "owner=helm,name=rel", "-o", "name"]);
    assert_eq!(releases.lines().count(), 3, "{releases}");
    let listed = helm.ok(&["list"]);
    assert!(
        listed.contains("rel") && listed.contains("deployed"),
        "{listed}"
    );

    helm.ok(&["uninstall", "rel"]);
    assert!(
        k.fails(&["get", "deploy", "rel-demo"])
            .contains("not found")
    );
    assert!(
        k.ok(&["get", "secrets", "-l", "owner=helm", "-o", "name"])
            .trim()
            .is_empty()
    );
}
