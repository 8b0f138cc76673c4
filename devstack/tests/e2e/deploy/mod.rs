//! The deployment files under `deploy/` checked against the code they deploy.
//!
//! Every manifest is parsed (YAML with yaml-rust2; env files, systemd units, the
//! Dockerfile and HAProxy's configuration with the small readers in `formats`).
//! For each gateway or worker a manifest runs, the environment it would get is
//! given to that binary's real configuration code (`Config::from_source` over a
//! recording `common::config::Source`), with placeholders of a valid shape standing
//! in for secret references: it must be accepted (every required setting is there)
//! and every name must have been read (`Source::unread`: no misspelt, obsolete or
//! misplaced setting). The addresses it then listens on must be the ones the
//! manifests use: exposed and container ports, probes (`/readyz` and `/healthz` on
//! the admin port), Service target ports, load balancer backends and health checks,
//! Prometheus targets, WORKER_URLs; shutdown timeouts must cover the gateway's drain.
//!
//! - `image`: the Dockerfile's targets;
//! - `compose`: the compose topology, its load balancer, its Prometheus;
//! - `k8s`: the kustomizations, rendered by `kubectl kustomize` when installed;
//! - `systemd`: the units and their environment file examples;
//! - here: every file parses, and the generic environment example's names are read.

mod compose;
mod config;
mod formats;
mod image;
mod k8s;
mod systemd;

use config::{Binary, Env, Val};
use formats::{deploy_dir, dockerfile, haproxy, read, walk, yaml_docs, EnvFile, Unit};

#[test]
fn every_deploy_file_parses() {
    for file in walk(&deploy_dir()) {
        let name = file.file_name().unwrap().to_str().unwrap();
        let what = file.display().to_string();
        let text = read(&file);
        if name.ends_with(".yaml") || name.ends_with(".yml") {
            yaml_docs(&text, &what);
        } else if name.ends_with(".env") || name.ends_with(".env.example") {
            EnvFile::parse(&text, &what);
        } else if name.ends_with(".service") {
            let unit = Unit::parse(&text, &what);
            assert!(unit.sections.contains_key("Service"), "{what}: [Service]");
        } else if name == "Dockerfile" {
            assert!(!dockerfile(&text).is_empty(), "{what}: no stage");
        } else if name.ends_with(".cfg") {
            let (binds, backends) = haproxy(&text);
            assert!(
                !binds.is_empty() && !backends.is_empty(),
                "{what}: no frontend or backend"
            );
        }
    }
}

/// `deploy/medicalpro.env.example` describes a gateway's and a worker's settings
/// at once: every name in it, set or commented out, is one that one of them reads.
#[test]
fn the_generic_environment_example_names_only_settings_that_are_read() {
    let path = deploy_dir().join("medicalpro.env.example");
    let example = EnvFile::load(&path);
    // Complete environments to add each setting to: the systemd examples', plain
    // and with their optional settings on.
    let systemd = deploy_dir().join("systemd");
    let mut bases: Vec<(Binary, Env)> = Vec::new();
    for (binary, files) in [
        (
            Binary::Gateway,
            vec![
                "gateway.env.example",
                "secrets.env.example",
                "gateway.secrets.env.example",
            ],
        ),
        (
            Binary::Worker,
            vec![
                "worker-eu-west.env.example",
                "secrets.env.example",
                "worker-eu-west.secrets.env.example",
            ],
        ),
    ] {
        for optional in [false, true] {
            let mut env = Env::new();
            for f in &files {
                for (k, v) in EnvFile::load(&systemd.join(f)).settings(optional) {
                    let val = if f.contains("secrets") {
                        Val::Secret(k.clone())
                    } else {
                        Val::Literal(v)
                    };
                    env.insert(k, val);
                }
            }
            bases.push((binary, env));
        }
    }
    for (name, value) in example.active.iter().chain(&example.optional) {
        let value = if value.is_empty() {
            config::placeholder(name)
        } else {
            value.clone()
        };
        assert!(
            common::config::PROCESS_ENV.contains(&name.as_str())
                || config::read_by_some(name, &value, &bases),
            "{}: {name}={value} is read by neither binary",
            path.display()
        );
    }
}
