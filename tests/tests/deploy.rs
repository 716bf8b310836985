//! The Kubernetes manifests in `deploy/`: valid against the Kubernetes API
//! schema of a current release (offline, with the `kubernetes-validate`
//! package `cargo xtask test` installs), and as little privilege as the
//! agent can run with, each added capability with a comment on why.

use std::{path::PathBuf, process::Command};

use cgtrace_tests::manifests::{
    added_capabilities, agent, daemonset, deploy_dir, docker_daemonset, host_mounts, resources,
};

/// The Kubernetes releases validated against: the newest the validator
/// bundles, and one a year older.
const KUBERNETES: [&str; 2] = ["1.37.0", "1.34.0"];

fn validator(test: &str) -> Option<PathBuf> {
    let path = std::env::var_os("CGTRACE_KUBERNETES_VALIDATE").map(PathBuf::from);
    if path.is_none() {
        eprintln!(
            "skipped {test}: $CGTRACE_KUBERNETES_VALIDATE is not set (`cargo xtask test` installs kubernetes-validate and sets it)"
        );
    }
    path
}

fn validate(validator: &PathBuf, files: &[PathBuf], version: &str) -> (bool, String) {
    let output = Command::new(validator)
        .args(["--strict", "--kubernetes-version", version])
        .args(files)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn the_manifests_validate_against_the_kubernetes_schema() {
    let test = "the_manifests_validate_against_the_kubernetes_schema";
    let (Some(dir), Some(validator)) = (deploy_dir(), validator(test)) else {
        return;
    };
    let scratch = tempfile::tempdir().unwrap();
    let mut files = resources(&dir);
    // The Docker variant, as kustomize renders it.
    let docker = scratch.path().join("docker-daemonset.yaml");
    std::fs::write(&docker, docker_daemonset(&dir).to_string()).unwrap();
    files.push(docker);
    for version in KUBERNETES {
        let (passed, said) = validate(&validator, &files, version);
        assert!(passed, "Kubernetes {version}: {said}");
        for file in &files {
            let name = file.file_name().unwrap().to_string_lossy();
            assert!(
                said.contains(&format!("{name} passed")),
                "{name} not validated against {version}: {said}"
            );
        }
    }
    // The validator rejects what the API server would: a misspelt field.
    let mut broken = daemonset(&dir);
    broken["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesytem"] =
        serde_json::json!(true);
    let broken_file = scratch.path().join("broken.yaml");
    std::fs::write(&broken_file, broken.to_string()).unwrap();
    let (passed, said) = validate(&validator, &[broken_file], KUBERNETES[0]);
    assert!(!passed, "a misspelt field passed: {said}");
}

#[test]
fn the_daemonset_asks_for_as_little_privilege_as_the_agent_needs() {
    let Some(dir) = deploy_dir() else {
        eprintln!("skipped: no deploy/ beside this build");
        return;
    };
    let daemonset = daemonset(&dir);
    let text = std::fs::read_to_string(dir.join("daemonset.yaml")).unwrap();
    assert!(!text.contains("privileged: true"));
    let pod = &daemonset["spec"]["template"]["spec"];
    for host_namespace in ["hostPID", "hostNetwork", "hostIPC"] {
        assert!(pod[host_namespace].is_null(), "{host_namespace} is set");
    }
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65534);
    let container = agent(&daemonset);
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(
        added_capabilities(container),
        ["BPF", "PERFMON", "SYSLOG"],
        "exactly the three the agent needs"
    );
    // Each added capability has a comment on the line above it.
    let lines: Vec<&str> = text.lines().collect();
    for cap in added_capabilities(container) {
        let at = lines
            .iter()
            .position(|l| l.trim() == format!("- {cap}"))
            .unwrap();
        assert!(
            lines[at - 1].trim_start().starts_with('#'),
            "{cap} has no comment saying why"
        );
    }
    // Host paths are read-only but the flight recorder's.
    let mounts = host_mounts(&daemonset, container);
    let mounted: Vec<&str> = mounts.iter().map(|m| m.0.as_str()).collect();
    for needed in [
        "/sys/kernel/btf",
        "/sys/fs/cgroup",
        "/var/log/pods",
        "/var/log/containers",
        "/dev/kmsg",
        "/var/lib/cgtrace",
    ] {
        assert!(mounted.contains(&needed), "{needed} is not mounted");
    }
    for (host, _, read_only, _) in &mounts {
        assert_eq!(
            *read_only,
            host != "/var/lib/cgtrace",
            "{host}: only the flight recorder's directory is writable"
        );
    }
    let resources = &container["resources"];
    for field in ["requests", "limits"] {
        assert!(resources[field]["memory"].is_string(), "no memory {field}");
        assert!(resources[field]["cpu"].is_string(), "no cpu {field}");
    }
    // The init container only gives the directory away.
    let init = &pod["initContainers"][0];
    assert_eq!(added_capabilities(init), ["CHOWN"]);
    assert_eq!(init["securityContext"]["allowPrivilegeEscalation"], false);
}

#[test]
fn the_docker_component_adds_only_what_docker_names_need() {
    let Some(dir) = deploy_dir() else {
        eprintln!("skipped: no deploy/ beside this build");
        return;
    };
    let base = daemonset(&dir);
    let docker = docker_daemonset(&dir);
    assert_eq!(
        added_capabilities(agent(&docker)),
        ["BPF", "PERFMON", "SYSLOG", "DAC_READ_SEARCH"]
    );
    let before = host_mounts(&base, agent(&base));
    let after = host_mounts(&docker, agent(&docker));
    assert_eq!(after.len(), before.len() + 1);
    let added = after.iter().find(|m| !before.contains(m)).unwrap();
    assert_eq!(added.0, "/var/lib/docker/containers");
    assert!(added.2, "read-only");
}
