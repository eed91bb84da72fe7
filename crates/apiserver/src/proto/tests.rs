//! Round trips of built-in objects through the protobuf form.

use serde_json::json;

use super::*;

fn round_trip(obj: Value) {
    let bytes = encode_body(&obj).expect("encode");
    assert!(bytes.starts_with(b"k8s\0"));
    assert_eq!(decode_body(&bytes).expect("decode"), obj);
}

#[test]
fn configmap_and_secret_round_trip() {
    round_trip(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "a", "namespace": "default", "labels": {"x": "y"},
                     "creationTimestamp": "2026-11-22T10:00:00Z"},
        "data": {"k": "v", "empty": ""}, "immutable": true
    }));
    round_trip(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "s"}, "type": "Opaque",
        "data": {"k": "aGVsbG8="}
    }));
}

#[test]
fn deployment_with_special_types_round_trips() {
    round_trip(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "d", "generation": 3},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "d"}},
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": {"app": "d"}},
                "spec": {"containers": [{
                    "name": "c", "image": "busybox",
                    "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}},
                    "livenessProbe": {"httpGet": {"path": "/", "port": 8080},
                                      "periodSeconds": 10},
                    "env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}}]
                }]}
            }
        }
    }));
}

#[test]
fn crd_schema_unions_round_trip() {
    round_trip(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
                 "names": {"plural": "widgets", "kind": "Widget"},
                 "versions": [{"name": "v1", "served": true, "storage": true,
                     "schema": {"openAPIV3Schema": {"type": "object",
                         "properties": {"spec": {"type": "object",
                             "x-kubernetes-preserve-unknown-fields": true,
                             "additionalProperties": {"type": "string"},
                             "properties": {"size": {"type": "integer", "default": 3,
                                                     "enum": [1, 3]}}}}}}}]}
    }));
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    assert_eq!(decode_body(b"{}"), Err(ProtoError::NoEnvelope));
    assert!(decode_body(b"k8s\0\x0a\xff").is_err());
    let mut unknown_kind = b"k8s\0".to_vec();
    unknown_kind.extend_from_slice(&[0x0a, 0x0b, 0x0a, 0x02, b'v', b'1', 0x12, 0x05]);
    unknown_kind.extend_from_slice(b"Bogus");
    assert!(matches!(
        decode_body(&unknown_kind),
        Err(ProtoError::UnknownKind { .. })
    ));
    // Every prefix of a valid body fails cleanly or decodes.
    let body = encode_body(&json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}))
    .expect("encode");
    for n in 0..body.len() {
        let _ = decode_body(&body[..n]);
    }
}

/// An independent encoder (k8s-pb's prost messages, as client-go's marshallers
/// produce them) must decode to the JSON upstream would show.
#[test]
fn prost_encoded_bodies_decode_like_upstream_json() {
    use k8s_pb::api::apps::v1 as apps;
    use k8s_pb::api::core::v1 as core;
    use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
    use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
    use prost::Message as _;

    let deployment = apps::Deployment {
        metadata: Some(meta::ObjectMeta {
            name: Some("web".into()),
            namespace: Some(String::new()),
            creation_timestamp: Some(meta::Time {
                seconds: Some(0),
                nanos: Some(0),
            }),
            ..Default::default()
        }),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(2),
            selector: Some(meta::LabelSelector {
                match_labels: [("app".to_string(), "web".to_string())].into(),
                ..Default::default()
            }),
            strategy: Some(apps::DeploymentStrategy {
                r#type: Some("RollingUpdate".into()),
                rolling_update: Some(apps::RollingUpdateDeployment {
                    max_surge: Some(IntOrString {
                        r#type: Some(1),
                        int_val: Some(0),
                        str_val: Some("25%".into()),
                    }),
                    max_unavailable: None,
                }),
            }),
            template: Some(core::PodTemplateSpec {
                metadata: Some(meta::ObjectMeta {
                    labels: [("app".to_string(), "web".to_string())].into(),
                    ..Default::default()
                }),
                spec: Some(core::PodSpec {
                    containers: vec![core::Container {
                        name: Some("nginx".into()),
                        image: Some("nginx".into()),
                        env_from: vec![core::EnvFromSource {
                            config_map_ref: Some(core::ConfigMapEnvSource {
                                local_object_reference: Some(core::LocalObjectReference {
                                    name: Some("cm".into()),
                                }),
                                optional: Some(false),
                            }),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
        status: Some(apps::DeploymentStatus::default()),
    };
    let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown {
        type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta {
            api_version: Some("apps/v1".into()),
            kind: Some("Deployment".into()),
        }),
        raw: Some(deployment.encode_to_vec()),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut body = b"k8s\0".to_vec();
    body.extend(unknown.encode_to_vec());
    let got = decode_body(&body).expect("decode");
    assert_eq!(
        got,
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{
                        "name": "nginx", "image": "nginx",
                        "envFrom": [{"configMapRef": {"name": "cm", "optional": false}}]
                    }]}
                }
            },
            "status": {}
        })
    );
}
