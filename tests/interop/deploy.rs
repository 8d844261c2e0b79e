//! The container image and the compose file (docs/operations.md,
//! "Deploying with containers"), read as a deployer relies on them. No
//! Docker engine runs here, so the Dockerfile is read as text and the
//! compose file through PyYAML (the parser docker-compose itself uses;
//! `scripts/test` also runs `docker-compose config`); what the image's
//! environment means is asked of the herald binary itself.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::harness::python;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The runtime stage: every line after the Dockerfile's last `FROM`.
fn runtime_stage() -> Vec<String> {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let lines: Vec<String> = text.lines().map(str::trim).map(String::from).collect();
    let last_from = lines.iter().rposition(|l| l.starts_with("FROM ")).unwrap();
    lines[last_from..].to_vec()
}

/// `KEY=VALUE` of each `ENV` line of the runtime stage.
fn runtime_env(stage: &[String]) -> Vec<(String, String)> {
    stage
        .iter()
        .filter_map(|l| l.strip_prefix("ENV "))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn the_image_listens_on_every_interface_and_checks_its_health() {
    let stage = runtime_stage();
    assert!(stage.contains(&"EXPOSE 8001".to_string()), "{stage:?}");
    let user = stage.iter().rev().find_map(|l| l.strip_prefix("USER "));
    assert!(
        matches!(user, Some(u) if u != "root" && u != "0"),
        "{user:?}"
    );
    let healthcheck = stage
        .iter()
        .position(|l| l.starts_with("HEALTHCHECK "))
        .expect("a HEALTHCHECK");
    assert_eq!(stage[healthcheck + 1], r#"CMD ["herald", "health"]"#);
    let env = runtime_env(&stage);
    assert!(
        env.contains(&("HERALD_SIDECAR__LISTEN".into(), "0.0.0.0:8001".into())),
        "{env:?}"
    );

    // What that environment means to herald: `herald health` in the image
    // probes the sidecar on 0.0.0.0:8001 as 127.0.0.1:8001 (nothing
    // answers there during the test), with no warning about unknown keys.
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("health")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("HERALD_DATA_DIR", dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("herald: nothing answers on 127.0.0.1:8001: "),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

/// deploy/compose.yaml as PyYAML reads it, merge keys (`<<`) resolved.
fn compose() -> Value {
    let script = "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))";
    let output = Command::new(python())
        .args(["-c", script])
        .arg(repo().join("deploy/compose.yaml"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn the_compose_file_runs_migrate_before_the_workers_and_the_sidecar() {
    let compose = compose();
    let services = &compose["services"];
    for store in ["postgres", "redis"] {
        assert!(
            services[store]["healthcheck"]["test"].is_array(),
            "{store} has a health check"
        );
    }
    assert_eq!(
        services["migrate"]["command"],
        serde_json::json!(["migrate"])
    );
    assert_eq!(services["migrate"]["restart"], "no");
    assert_eq!(
        services["migrate"]["depends_on"]["postgres"]["condition"],
        "service_healthy"
    );
    assert_eq!(services["worker"]["deploy"]["replicas"], 2);
    for (service, probe) in [("worker", "--worker"), ("sidecar", "health")] {
        let s = &services[service];
        assert_eq!(
            s["depends_on"]["migrate"]["condition"], "service_completed_successfully",
            "{service} waits for migrate"
        );
        assert_eq!(s["depends_on"]["redis"]["condition"], "service_healthy");
        let test = s["healthcheck"]["test"].as_array().unwrap();
        assert_eq!(test[1..3], [Value::from("herald"), Value::from("health")]);
        assert_eq!(test.last().unwrap(), probe, "{service}");
    }
    assert_eq!(
        services["sidecar"]["ports"],
        serde_json::json!(["8001:8001"])
    );
    assert_eq!(
        services["worker"]["environment"]["HERALD_WORKER__LISTEN"],
        "0.0.0.0:8002"
    );
    assert_eq!(
        services["rabbitmq"]["profiles"],
        serde_json::json!(["rabbitmq"])
    );
    for volume in ["postgres-data", "redis-data", "rabbitmq-data"] {
        assert!(compose["volumes"].get(volume).is_some(), "{volume}");
    }
    // Every secret comes from the env file, refused when missing: no value
    // is written in the file itself.
    for service in ["migrate", "worker", "sidecar"] {
        let env = &services[service]["environment"];
        for key in ["SECRET_KEY", "HERALD_API__KEY"] {
            let value = env[key].as_str().unwrap();
            assert!(
                value.starts_with("${") && value.contains(":?"),
                "{service} {key} = {value}"
            );
        }
    }
    let example = std::fs::read_to_string(repo().join("deploy/.env.example")).unwrap();
    for key in ["SECRET_KEY", "HERALD_API_KEY", "POSTGRES_PASSWORD"] {
        assert!(
            example.lines().any(|l| l == format!("{key}=")),
            "{key} is empty in the example"
        );
    }
}
