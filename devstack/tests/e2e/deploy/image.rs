//! The container images (`deploy/Dockerfile`): a target per role whose exposed
//! ports are where its configuration listens, a numeric non-root user, and a
//! HEALTHCHECK that asks the process's own admin listener for `/healthz`.

use super::config::{configure_filling_required, literals, Binary, Env};
use super::formats::{deploy_dir, dockerfile, read, Stage};

/// The Dockerfile's stages.
pub fn stages() -> Vec<Stage> {
    dockerfile(&read(&deploy_dir().join("Dockerfile")))
}

/// The stage (build target) of a binary's image.
pub fn stage(binary: Binary) -> Stage {
    stage_named(binary.name())
}

/// The stage (build target) named `name`.
pub fn stage_named(name: &str) -> Stage {
    stages()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("deploy/Dockerfile has no target {name}"))
}

/// The target of the image that runs one-shot `medicalpro-admin` jobs from a shell
/// script (migrating the central database, making the services' roles).
pub const ADMIN_JOB: &str = "admin-job";

/// The environment a binary's image sets (what a container starts with).
pub fn image_env(binary: Binary) -> Env {
    literals(&stage(binary).env)
}

/// The numeric user an image runs as.
pub fn image_uid(stage: &Stage) -> u32 {
    let user = stage
        .user
        .as_deref()
        .unwrap_or_else(|| panic!("target {} sets no USER (it would run as root)", stage.name));
    user.split(':')
        .next()
        .and_then(|u| u.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "target {}: USER {user} must be numeric, so Kubernetes' runAsNonRoot can check it",
                stage.name
            )
        })
}

#[test]
fn images_listen_where_their_configuration_says() {
    for binary in [Binary::Gateway, Binary::Worker] {
        let stage = stage(binary);
        let what = format!("deploy/Dockerfile target {}", stage.name);
        let loaded = configure_filling_required(binary, &literals(&stage.env), &what);
        let mut exposed = stage.expose.clone();
        exposed.sort_unstable();
        let mut listening = vec![loaded.listen.port(), loaded.admin.port()];
        listening.sort_unstable();
        assert_eq!(exposed, listening, "{what}: EXPOSE is not where it listens");
        assert!(
            loaded.listen.ip().is_unspecified() && loaded.admin.ip().is_unspecified(),
            "{what}: listeners must bind every address in a container (probes, Prometheus): {} {}",
            loaded.listen,
            loaded.admin
        );
        let entry = stage
            .entrypoint
            .clone()
            .unwrap_or_else(|| panic!("{what}: no ENTRYPOINT"));
        assert_eq!(
            Binary::named(&entry[0]),
            Some(binary),
            "{what}: ENTRYPOINT {entry:?}"
        );
        let health = stage
            .healthcheck
            .clone()
            .unwrap_or_else(|| panic!("{what}: no HEALTHCHECK"));
        assert_eq!(
            health,
            [entry[0].as_str(), "--probe", "/healthz"],
            "{what}: the HEALTHCHECK must probe the admin listener's /healthz"
        );
        assert_ne!(image_uid(&stage), 0, "{what}: runs as root");
    }
}

#[test]
fn every_runtime_image_runs_unprivileged() {
    let stages = stages();
    let build: Vec<&Stage> = stages.iter().filter(|s| s.name == "build").collect();
    assert_eq!(build.len(), 1, "one build stage");
    let admin = stages
        .iter()
        .find(|s| s.name == "admin")
        .expect("an admin target");
    let entry = admin.entrypoint.clone().expect("admin ENTRYPOINT");
    assert!(entry[0].ends_with("/medicalpro-admin"), "{entry:?}");
    // The job image: the same tool, with a shell to hand it secrets on stdin.
    let job = stage_named(ADMIN_JOB);
    let entry = job.entrypoint.clone().expect("admin-job ENTRYPOINT");
    assert!(entry[0].ends_with("/medicalpro-admin"), "{entry:?}");
    for s in stages.iter().filter(|s| s.name != "build") {
        assert_ne!(image_uid(s), 0, "target {} runs as root", s.name);
    }
    // The image's default target (the last stage) is a service, not the build.
    assert_eq!(stages.last().map(|s| s.name.as_str()), Some("gateway"));
    let ignore = read(&deploy_dir().join("Dockerfile.dockerignore"));
    for must in ["target", ".git"] {
        assert!(
            ignore.lines().any(|l| l.trim() == must),
            "Dockerfile.dockerignore must leave out {must}"
        );
    }
}
