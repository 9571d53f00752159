use super::*;
use kube::CustomResourceExt;
use serde_json::{Value, json};

fn full() -> Value {
    json!({
        "apiVersion": "hatchway.dev/v1alpha1",
        "kind": "Container",
        "metadata": {"name": "web-1", "namespace": "lab", "uid": "7c1e9a52-5b7e-4f0e-9d3a-2b8f6c4d1e90", "generation": 1},
        "spec": {
            "image": "busybox:1.36",
            "command": ["sh", "-c"],
            "args": ["httpd -f -p 8080"],
            "env": [{"name": "GREETING", "value": "hello"}],
            "workingDir": "/srv",
            "resources": {"limits": {"memory": "256Mi"}, "requests": {"cpu": "100m"}},
            "restartPolicy": "OnFailure",
            "pod": {
                "serviceAccountName": "runner",
                "automountServiceAccountToken": true,
                "nodeSelector": {"disk": "ssd"},
                "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
                "securityContext": {"runAsUser": 1000, "runAsNonRoot": true}
            },
            "publishedPorts": [
                {"port": 8080, "access": "public", "label": "Site", "initialPath": "/index.html"},
                {"port": 8888, "access": "private"}
            ],
            "shell": false,
            "ttlSecondsAfterFinished": 3600
        },
        "status": {
            "phase": "Running",
            "podName": "web-1-hatchway",
            "gateway": {
                "address": "10.244.0.7:7443",
                "certificateSha256": "ab".repeat(32),
                "hostKeyFingerprint": "SHA256:abc",
                "hostKey": "ssh-ed25519 AAAAC3Nza"
            },
            "listeningPorts": [{"port": 8080, "protocol": "TCP"}],
            "publishedPorts": [{"port": 8080, "access": "public", "label": "Site", "url": "https://x-8080.apps.example/index.html"}],
            "interactiveSessionStarted": true,
            "startedAt": "2026-11-23T13:00:00Z",
            "finishedAt": "2026-11-23T14:00:00Z",
            "exitCode": 0,
            "conditions": [{"type": "GatewayReady", "status": "True", "reason": "SidecarReady", "message": "gateway is up", "lastTransitionTime": "2026-11-23T13:00:01Z", "observedGeneration": 1}],
            "observedGeneration": 1
        }
    })
}

#[test]
fn a_full_object_round_trips() {
    let value = full();
    let container: Container = serde_json::from_value(value.clone()).unwrap();
    assert_eq!(container.spec.restart_policy, RestartPolicy::OnFailure);
    assert_eq!(container.spec.published_ports[0].access, PortAccess::Public);
    assert_eq!(container.status.as_ref().unwrap().phase, Some(Phase::Running));
    assert_eq!(serde_json::to_value(&container).unwrap(), value);
}

#[test]
fn a_minimal_object_round_trips_with_defaults() {
    let value = json!({
        "apiVersion": "hatchway.dev/v1alpha1",
        "kind": "Container",
        "metadata": {"name": "min"},
        "spec": {"image": "busybox", "command": ["true"]}
    });
    let container: Container = serde_json::from_value(value).unwrap();
    assert!(container.spec.shell, "shell is on by default");
    assert_eq!(container.spec.restart_policy, RestartPolicy::Never);
    assert!(container.spec.published_ports.is_empty());
    assert!(container.status.is_none());
    let again: Container = serde_json::from_value(serde_json::to_value(&container).unwrap()).unwrap();
    assert_eq!(again, container);
    assert_eq!(
        serde_json::to_value(&again.spec).unwrap(),
        json!({"image": "busybox", "command": ["true"], "restartPolicy": "Never", "shell": true})
    );
}

#[test]
fn unknown_phases_and_accesses_are_refused() {
    let mut value = full();
    value["spec"]["publishedPorts"][0]["access"] = json!("everyone");
    assert!(serde_json::from_value::<Container>(value).is_err());
    let mut value = full();
    value["status"]["phase"] = json!("Sleeping");
    assert!(serde_json::from_value::<Container>(value).is_err());
}

fn crd_json() -> Value {
    serde_json::to_value(Container::crd()).unwrap()
}

fn spec_schema(crd: &Value) -> &Value {
    &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
}

#[test]
fn the_crd_names_group_version_scope_and_short_name() {
    let crd = crd_json();
    assert_eq!(crd["metadata"]["name"], "containers.hatchway.dev");
    assert_eq!(crd["spec"]["group"], GROUP);
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["spec"]["names"]["shortNames"], json!(["hctr"]));
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], VERSION);
    assert_eq!(version["subresources"]["status"], json!({}));
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["jsonPath"].as_str().unwrap())
        .collect();
    for path in [
        ".status.phase",
        ".status.gateway.address",
        ".metadata.creationTimestamp",
    ] {
        assert!(
            columns.contains(&path),
            "printer column {path} missing from {columns:?}"
        );
    }
}

#[test]
fn the_crd_validates_what_the_apiserver_must_refuse() {
    let crd = crd_json();
    let spec = spec_schema(&crd);
    assert_eq!(
        spec["x-kubernetes-validations"][0]["rule"], "self == oldSelf",
        "spec must be immutable: {spec}"
    );
    let required: Vec<&str> = spec["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        required.contains(&"image") && required.contains(&"command"),
        "{required:?}"
    );
    assert_eq!(spec["properties"]["command"]["minItems"], 1);
    let port = &spec["properties"]["publishedPorts"]["items"]["properties"]["port"];
    assert_eq!(
        (port["minimum"].as_f64(), port["maximum"].as_f64()),
        (Some(1.0), Some(65535.0))
    );
    let access = &spec["properties"]["publishedPorts"]["items"]["properties"]["access"];
    assert_eq!(access["enum"], json!(["private", "public"]));
    assert_eq!(
        spec["properties"]["publishedPorts"]["x-kubernetes-list-type"],
        "map"
    );
    assert_eq!(spec["properties"]["image"]["maxLength"], 1024);
}

/// Every property of our own types carries a description, so
/// `kubectl explain` says what each field is for.
#[test]
fn every_spec_and_status_field_has_a_description() {
    fn walk(path: &str, schema: &Value, missing: &mut Vec<String>) {
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (name, prop) in props {
                let here = format!("{path}.{name}");
                if prop
                    .get("description")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    missing.push(here.clone());
                }
                walk(&here, prop, missing);
            }
        }
        if let Some(items) = schema.get("items") {
            walk(&format!("{path}[]"), items, missing);
        }
    }
    let crd = crd_json();
    let root = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"];
    let mut missing = Vec::new();
    for top in ["spec", "status"] {
        walk(top, &root[top], &mut missing);
    }
    assert!(missing.is_empty(), "fields without a description: {missing:?}");
}
