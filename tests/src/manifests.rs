//! The Kubernetes manifests in `deploy/`, read as JSON values: the base
//! DaemonSet, and the Docker component's patch applied to it as kustomize
//! applies a strategic merge patch (maps merge, lists of objects with a
//! `name` merge by name, other lists are replaced).

use std::path::{Path, PathBuf};

use serde_json::Value;

/// `deploy/` in the source tree, if this build's tree is here (a kernel
/// guest has the test binaries only).
#[must_use]
pub fn deploy_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    dir.join("kustomization.yaml").is_file().then_some(dir)
}

/// Every YAML document in `file`, as JSON.
#[must_use]
pub fn documents(file: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|document| {
            serde::Deserialize::deserialize(document)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        })
        .collect()
}

/// The files a kustomization lists as its resources.
#[must_use]
pub fn resources(dir: &Path) -> Vec<PathBuf> {
    let kustomization = &documents(&dir.join("kustomization.yaml"))[0];
    kustomization["resources"]
        .as_array()
        .expect("a resources list")
        .iter()
        .map(|r| dir.join(r.as_str().expect("a file name")))
        .collect()
}

/// The base DaemonSet.
#[must_use]
pub fn daemonset(dir: &Path) -> Value {
    documents(&dir.join("daemonset.yaml")).remove(0)
}

/// The DaemonSet with the Docker component's patches applied.
#[must_use]
pub fn docker_daemonset(dir: &Path) -> Value {
    let component_dir = dir.join("docker");
    let component = &documents(&component_dir.join("kustomization.yaml"))[0];
    assert_eq!(component["kind"], "Component");
    let mut daemonset = daemonset(dir);
    for patch in component["patches"].as_array().expect("patches") {
        let file = component_dir.join(patch["path"].as_str().expect("a patch file"));
        strategic_merge(&mut daemonset, &documents(&file)[0]);
    }
    daemonset
}

/// Applies `patch` to `base` as a strategic merge patch does for the
/// fields a DaemonSet's patch uses.
pub fn strategic_merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(base), Value::Object(patch)) => {
            for (key, value) in patch {
                match base.get_mut(key) {
                    Some(existing) => strategic_merge(existing, value),
                    None => {
                        base.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (Value::Array(base), Value::Array(patch))
            if patch.iter().all(|item| item.get("name").is_some()) && !patch.is_empty() =>
        {
            for item in patch {
                match base.iter_mut().find(|b| b.get("name") == item.get("name")) {
                    Some(existing) => strategic_merge(existing, item),
                    None => base.push(item.clone()),
                }
            }
        }
        (base, patch) => *base = patch.clone(),
    }
}

/// The agent's container in a DaemonSet.
#[must_use]
pub fn agent(daemonset: &Value) -> &Value {
    daemonset["spec"]["template"]["spec"]["containers"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "cgtrace"))
        .expect("a container named cgtrace")
}

/// The host paths a container mounts: (host path, path inside, read-only,
/// hostPath type), from its volume mounts and the pod's volumes.
#[must_use]
pub fn host_mounts(daemonset: &Value, container: &Value) -> Vec<(String, String, bool, String)> {
    let volumes = daemonset["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .expect("volumes");
    container["volumeMounts"]
        .as_array()
        .expect("volume mounts")
        .iter()
        .map(|mount| {
            let volume = volumes
                .iter()
                .find(|v| v["name"] == mount["name"])
                .unwrap_or_else(|| panic!("no volume for {mount}"));
            let host = &volume["hostPath"];
            (
                host["path"].as_str().expect("a hostPath").to_owned(),
                mount["mountPath"].as_str().expect("a mountPath").to_owned(),
                mount["readOnly"].as_bool().unwrap_or(false),
                host["type"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// The capabilities a container adds.
#[must_use]
pub fn added_capabilities(container: &Value) -> Vec<String> {
    container["securityContext"]["capabilities"]["add"]
        .as_array()
        .map(|caps| {
            caps.iter()
                .filter_map(|c| c.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}
