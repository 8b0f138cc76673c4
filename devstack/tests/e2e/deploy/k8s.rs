//! The Kubernetes manifests (`deploy/k8s`), rendered by the real kustomize
//! (`kubectl kustomize`): each container of ours gets the environment Kubernetes
//! would give it (the image's, its ConfigMaps', its Secret references'), and the
//! binary's configuration must accept it and read every name. Its ports, probes,
//! Services, HPA, PDB, network policy, shutdown timing and WORKER_URL must agree with
//! where that configuration listens; the example Secrets must cover every reference
//! and be refused as they stand. The same again with every commented-out optional
//! setting of the env files switched on (mutual TLS). Files named by settings come
//! from Secrets mounted into the pod; workers never mount the gateways' signing
//! key. The central migration Job (`k8s/migrate`) runs the admin tool as the
//! database's owner, and makes the login role every gateway and worker uses, with
//! the same password Secret. Without `kubectl`, only the checks that need no
//! rendering run.

use super::config::{
    configure, configure_admin, job_script, literals, refused, Binary, Env, Loaded, Val,
};
use super::formats::{
    deploy_dir, enable_optional, read, text, walk, yaml_docs, yaml_file, EnvFile,
};
use super::image::{image_env, image_uid, stage, stage_named, ADMIN_JOB};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn k8s_dir() -> PathBuf {
    deploy_dir().join("k8s")
}

/// The objects `kubectl kustomize dir` renders.
fn render(kubectl: &Path, dir: &Path) -> Vec<Value> {
    let out = Command::new(kubectl)
        .arg("kustomize")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    yaml_docs(
        &String::from_utf8(out.stdout).unwrap(),
        &dir.display().to_string(),
    )
}

/// Every folder holding a kustomization.
fn kustomizations(root: &Path) -> Vec<PathBuf> {
    walk(root)
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "kustomization.yaml"))
        .map(|p| p.parent().unwrap().to_path_buf())
        .collect()
}

/// The example Secrets: name → key → value.
fn example_secrets() -> BTreeMap<String, BTreeMap<String, String>> {
    let path = k8s_dir().join("secrets.example.yaml");
    yaml_docs(&read(&path), "secrets.example.yaml")
        .into_iter()
        .map(|doc| {
            assert_eq!(
                doc["kind"], "Secret",
                "secrets.example.yaml holds Secrets only"
            );
            assert_eq!(doc["metadata"]["namespace"], "medicalpro");
            let name = doc["metadata"]["name"].as_str().unwrap().to_owned();
            let data = doc["stringData"]
                .as_object()
                .unwrap_or_else(|| panic!("{name}: stringData"))
                .iter()
                .map(|(k, v)| (k.clone(), text(v).unwrap()))
                .collect();
            (name, data)
        })
        .collect()
}

/// Whether a `matchLabels`-style selector (non-empty) selects these labels.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| labels[k] == *v))
}

/// A port given by number or by the name of one of the container's ports.
fn resolve_port(container: &Value, port: &Value) -> Option<u16> {
    match port {
        Value::Number(n) => n.as_u64().map(|n| n as u16),
        Value::String(name) => container["ports"]
            .as_array()?
            .iter()
            .find(|p| p["name"] == *name)
            .and_then(|p| p["containerPort"].as_u64())
            .map(|n| n as u16),
        _ => None,
    }
}

/// One container of ours in a workload, configured.
struct Pod<'a> {
    workload: String,
    namespace: String,
    workload_doc: &'a Value,
    labels: &'a Value,
    container: &'a Value,
    loaded: Loaded,
    env: Env,
}

struct Fleet {
    objects: Vec<Value>,
    secrets: BTreeMap<String, BTreeMap<String, String>>,
}

impl Fleet {
    fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects.iter().filter(move |o| o["kind"] == kind)
    }

    fn get(&self, kind: &str, name: &str) -> Option<&Value> {
        self.objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
    }

    /// A container's environment as Kubernetes builds it: the image's (`image`),
    /// then `envFrom` in order, then `env`. Records the Secret keys it refers to.
    fn env(&self, image: Env, c: &Value, what: &str, refs: &mut BTreeSet<(String, String)>) -> Env {
        let mut env = image;
        for from in c["envFrom"].as_array().into_iter().flatten() {
            if let Some(name) = from["configMapRef"]["name"].as_str() {
                let cm = self
                    .get("ConfigMap", name)
                    .unwrap_or_else(|| panic!("{what}: no ConfigMap {name}"));
                for (k, v) in cm["data"].as_object().into_iter().flatten() {
                    env.insert(k.clone(), Val::Literal(text(v).unwrap()));
                }
            } else if let Some(name) = from["secretRef"]["name"].as_str() {
                let keys = self
                    .secrets
                    .get(name)
                    .unwrap_or_else(|| panic!("{what}: Secret {name} not in secrets.example.yaml"));
                for k in keys.keys() {
                    refs.insert((name.to_owned(), k.clone()));
                    env.insert(k.clone(), Val::Secret(format!("{name}/{k}")));
                }
            } else {
                panic!("{what}: envFrom {from}");
            }
        }
        for e in c["env"].as_array().into_iter().flatten() {
            let name = e["name"].as_str().unwrap().to_owned();
            let val = if let Some(v) = text(&e["value"]) {
                Val::Literal(v)
            } else if let Some(r) = e["valueFrom"]["secretKeyRef"].as_object() {
                let (s, k) = (r["name"].as_str().unwrap(), r["key"].as_str().unwrap());
                assert!(
                    self.secrets.get(s).is_some_and(|keys| keys.contains_key(k)),
                    "{what}: {name} refers to Secret {s} key {k}, not in secrets.example.yaml"
                );
                refs.insert((s.to_owned(), k.to_owned()));
                Val::Secret(format!("{s}/{k}"))
            } else if let Some(r) = e["valueFrom"]["configMapKeyRef"].as_object() {
                let (m, k) = (r["name"].as_str().unwrap(), r["key"].as_str().unwrap());
                let cm = self
                    .get("ConfigMap", m)
                    .unwrap_or_else(|| panic!("{what}: no ConfigMap {m}"));
                Val::Literal(
                    text(&cm["data"][k]).unwrap_or_else(|| panic!("{what}: {m} has no {k}")),
                )
            } else {
                panic!("{what}: {name}: unsupported env source {e}");
            };
            env.insert(name, val);
        }
        env
    }

    /// Every container of ours, configured through the real code.
    fn pods(&self, what: &str, refs: &mut BTreeSet<(String, String)>) -> Vec<Pod<'_>> {
        let mut pods = Vec::new();
        for w in self
            .objects
            .iter()
            .filter(|o| o["kind"] == "Deployment" || o["kind"] == "StatefulSet")
        {
            let workload = w["metadata"]["name"].as_str().unwrap().to_owned();
            let spec = &w["spec"]["template"]["spec"];
            for c in spec["containers"].as_array().unwrap() {
                let image = c["image"].as_str().unwrap();
                let binary = Binary::named(image)
                    .unwrap_or_else(|| panic!("{what}: {workload} runs {image}, not ours"));
                let w_what = format!("{what}: {workload}/{}", c["name"].as_str().unwrap());
                let env = self.env(image_env(binary), c, &w_what, refs);
                let loaded = configure(binary, &env, &w_what);
                pods.push(Pod {
                    workload: workload.clone(),
                    namespace: w["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or("default")
                        .to_owned(),
                    workload_doc: w,
                    labels: &w["spec"]["template"]["metadata"]["labels"],
                    container: c,
                    loaded,
                    env,
                });
            }
        }
        pods
    }
}

/// Files named by settings are on volumes mounted into the container, from Secrets
/// (in secrets.example.yaml) that have them, and every Secret the pod mounts is in
/// secrets.example.yaml. Returns each setting with the Secret its file comes from.
fn check_files(
    fleet: &Fleet,
    spec: &Value,
    container: &Value,
    files: &[(String, String)],
    refs: &mut BTreeSet<(String, String)>,
    w: &str,
) -> Vec<(String, String)> {
    let mut from = Vec::new();
    for (setting, path) in files {
        let mount = container["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| {
                // Whole path components: /etc/medicalpro/jwt is not under /etc/medicalpro/j.
                m["mountPath"]
                    .as_str()
                    .is_some_and(|mp| Path::new(path).starts_with(mp))
            })
            .unwrap_or_else(|| panic!("{w}: {setting}={path} is on no mounted volume"));
        let volume = spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap();
        let secret = volume["secret"]["secretName"]
            .as_str()
            .unwrap_or_else(|| panic!("{w}: {setting}={path}: the volume is no Secret"));
        let key = path
            .strip_prefix(mount["mountPath"].as_str().unwrap())
            .unwrap()
            .trim_start_matches('/');
        assert!(
            fleet
                .secrets
                .get(secret)
                .is_some_and(|k| k.contains_key(key)),
            "{w}: {setting} reads {key} of Secret {secret}, not in secrets.example.yaml"
        );
        refs.insert((secret.to_owned(), key.to_owned()));
        from.push((setting.clone(), secret.to_owned()));
    }
    for s in secret_volumes(spec) {
        assert!(
            fleet.secrets.contains_key(&s),
            "{w}: volume of Secret {s}, not in secrets.example.yaml"
        );
    }
    from
}

/// The Secrets a pod template mounts as volumes.
fn secret_volumes(spec: &Value) -> BTreeSet<String> {
    spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["secret"]["secretName"].as_str().map(str::to_owned))
        .collect()
}

/// Unprivileged, as the image's user, read-only, without capabilities.
fn check_unprivileged(spec: &Value, container: &Value, image: &super::formats::Stage, w: &str) {
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true, "{w}");
    assert_eq!(
        spec["securityContext"]["runAsUser"],
        image_uid(image),
        "{w}: runAsUser is the image's user"
    );
    let sc = &container["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{w}");
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{w}");
    assert!(
        sc["capabilities"]["drop"]
            .as_array()
            .is_some_and(|d| d.contains(&"ALL".into())),
        "{w}: drop all capabilities"
    );
}

fn check_probe(pod: &Pod<'_>, probe: &str, path: &str, what: &str) {
    let p = &pod.container[probe]["httpGet"];
    assert_eq!(p["path"], path, "{what}: {probe} must ask {path}");
    assert_eq!(
        resolve_port(pod.container, &p["port"]),
        Some(pod.loaded.admin.port()),
        "{what}: {probe} must hit the admin listener"
    );
}

/// Everything checked on a rendered fleet; returns the Secret keys referred to.
fn check_fleet(objects: Vec<Value>, mutual_tls: bool) -> BTreeSet<(String, String)> {
    let what = if mutual_tls {
        "k8s fleet (optional settings on)"
    } else {
        "k8s fleet"
    };
    let fleet = Fleet {
        objects,
        secrets: example_secrets(),
    };
    let mut refs = BTreeSet::new();
    let pods = fleet.pods(what, &mut refs);
    // The Secrets gateways read their signing key from, and those workers mount.
    let mut signing: BTreeSet<String> = BTreeSet::new();
    let mut worker_volumes: BTreeSet<String> = BTreeSet::new();
    let regions: BTreeSet<String> = pods
        .iter()
        .filter_map(|p| p.loaded.region.clone())
        .collect();
    let workers = pods
        .iter()
        .filter(|p| p.loaded.binary == Binary::Worker)
        .count();
    assert_eq!(
        regions.len(),
        workers,
        "{what}: one worker Deployment per region"
    );
    assert!(regions.len() >= 2, "{what}: two regions");
    assert!(
        pods.iter().any(|p| p.loaded.binary == Binary::Gateway),
        "{what}: a gateway"
    );

    for pod in &pods {
        let w = format!("{what}: {}", pod.workload);
        let l = &pod.loaded;
        assert_eq!(pod.namespace, "medicalpro", "{w}: namespace");
        assert_eq!(l.mutual_tls, mutual_tls, "{w}: mutual TLS");
        assert!(
            l.listen.ip().is_unspecified() && l.admin.ip().is_unspecified(),
            "{w}: listeners must bind every address"
        );
        // Ports: exactly the two listeners.
        let mut ports: Vec<u16> = pod.container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["containerPort"].as_u64().unwrap() as u16)
            .collect();
        ports.sort_unstable();
        let mut listening = vec![l.listen.port(), l.admin.port()];
        listening.sort_unstable();
        assert_eq!(ports, listening, "{w}: containerPorts vs listeners");
        assert_eq!(
            resolve_port(pod.container, &"admin".into()),
            Some(l.admin.port())
        );
        assert_eq!(
            resolve_port(pod.container, &"http".into()),
            Some(l.listen.port())
        );
        check_probe(pod, "readinessProbe", "/readyz", &w);
        check_probe(pod, "livenessProbe", "/healthz", &w);
        if !pod.container["startupProbe"].is_null() {
            check_probe(pod, "startupProbe", "/healthz", &w);
        }
        // Unprivileged, as the image's user.
        let spec = &pod.workload_doc["spec"]["template"]["spec"];
        check_unprivileged(spec, pod.container, &stage(l.binary), &w);
        // The central database over TLS, as a login role that owns nothing.
        assert!(
            l.central.tls.is_enabled(),
            "{w}: connect to the central database over TLS (DB_SSLROOTCERT, not DB_SSLMODE=disable)"
        );
        if let Some(regional) = &l.regional {
            assert!(
                regional.tls.is_enabled(),
                "{w}: connect to the regional server over TLS (REGION_DB_SSLROOTCERT)"
            );
        }
        let from = check_files(&fleet, spec, pod.container, &l.files, &mut refs, &w);
        match l.binary {
            Binary::Gateway => signing.extend(
                from.into_iter()
                    .filter(|(k, _)| k == "JWT_SIGNING_KEY_FILE")
                    .map(|(_, s)| s),
            ),
            Binary::Worker => worker_volumes.extend(secret_volumes(spec)),
        }
        // A PodDisruptionBudget.
        assert!(
            fleet
                .of_kind("PodDisruptionBudget")
                .any(|p| selects(&p["spec"]["selector"]["matchLabels"], pod.labels)),
            "{w}: no PodDisruptionBudget"
        );

        match l.binary {
            Binary::Gateway => {
                let default = l.default_region.clone().unwrap_or_default();
                assert!(
                    regions.contains(&default),
                    "{w}: DEFAULT_REGION {default} has no worker"
                );
                // Drain timing: out of the endpoints before it stops accepting, and
                // killed only after the drain.
                let needed = (l.shutdown_delay + l.shutdown_grace).as_secs();
                let grace = spec["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
                assert!(
                    grace > needed,
                    "{w}: terminationGracePeriodSeconds {grace} must exceed \
                     SHUTDOWN_DELAY_SECS + SHUTDOWN_GRACE_SECS ({needed})"
                );
                let r = &pod.container["readinessProbe"];
                let out_after = r["periodSeconds"].as_u64().unwrap_or(10)
                    * r["failureThreshold"].as_u64().unwrap_or(3);
                assert!(
                    out_after < l.shutdown_delay.as_secs(),
                    "{w}: readiness fails after {out_after}s, but the gateway stops accepting \
                     after SHUTDOWN_DELAY_SECS ({:?})",
                    l.shutdown_delay
                );
                let hpa = fleet
                    .of_kind("HorizontalPodAutoscaler")
                    .find(|h| h["spec"]["scaleTargetRef"]["name"] == pod.workload.as_str())
                    .unwrap_or_else(|| panic!("{w}: no HorizontalPodAutoscaler"));
                assert_eq!(hpa["spec"]["scaleTargetRef"]["kind"], "Deployment");
                assert!(
                    hpa["spec"]["minReplicas"].as_u64().unwrap_or(1) >= 2,
                    "{w}: HPA min 2"
                );
                assert!(
                    pod.container["resources"]["requests"]["cpu"].is_string(),
                    "{w}: the HPA scales on CPU, so request some"
                );
            }
            Binary::Worker => {
                let url = l.worker_url.clone().unwrap();
                let scheme = if mutual_tls { "https://" } else { "http://" };
                let rest = url
                    .strip_prefix(scheme)
                    .unwrap_or_else(|| panic!("{w}: WORKER_URL {url} is not {scheme}"));
                let (host, port) = rest
                    .split_once(':')
                    .unwrap_or_else(|| panic!("{w}: port in {url}"));
                let port: u16 = port.trim_end_matches('/').parse().unwrap();
                let mut parts = host.split('.');
                let svc_name = parts.next().unwrap();
                let ns = parts.next().unwrap_or(&pod.namespace);
                assert_eq!(ns, pod.namespace, "{w}: WORKER_URL names another namespace");
                let svc = fleet
                    .get("Service", svc_name)
                    .unwrap_or_else(|| panic!("{w}: WORKER_URL host {svc_name} is no Service"));
                let selected: Vec<&Pod<'_>> = pods
                    .iter()
                    .filter(|p| selects(&svc["spec"]["selector"], p.labels))
                    .collect();
                assert!(
                    selected.len() == 1 && selected[0].workload == pod.workload,
                    "{w}: Service {svc_name} must select this region's workers only"
                );
                let sp = svc["spec"]["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|p| p["port"].as_u64() == Some(u64::from(port)))
                    .unwrap_or_else(|| panic!("{w}: Service {svc_name} has no port {port}"));
                assert_eq!(
                    resolve_port(pod.container, &sp["targetPort"]),
                    Some(l.listen.port()),
                    "{w}: WORKER_URL must reach the public listener"
                );
            }
        }
    }

    // Services, network policies and admin discovery select our pods and reach real ports.
    for svc in fleet.of_kind("Service") {
        let name = svc["metadata"]["name"].as_str().unwrap();
        let selected: Vec<&Pod<'_>> = pods
            .iter()
            .filter(|p| selects(&svc["spec"]["selector"], p.labels))
            .collect();
        assert!(
            !selected.is_empty(),
            "{what}: Service {name} selects no pod"
        );
        for port in svc["spec"]["ports"].as_array().unwrap() {
            let target = if port["targetPort"].is_null() {
                &port["port"]
            } else {
                &port["targetPort"]
            };
            for p in &selected {
                let resolved = resolve_port(p.container, target);
                assert!(
                    resolved == Some(p.loaded.listen.port())
                        || resolved == Some(p.loaded.admin.port()),
                    "{what}: Service {name} port {target} reaches no listener of {}",
                    p.workload
                );
                if port["name"] == "admin" {
                    assert_eq!(
                        resolved,
                        Some(p.loaded.admin.port()),
                        "{what}: Service {name}"
                    );
                }
                if svc["spec"]["clusterIP"] == "None" {
                    // Headless: clients reach pod addresses directly, at this port.
                    assert_eq!(
                        port["port"].as_u64().map(|n| n as u16),
                        resolved,
                        "{what}: headless Service {name} must name the pods' own port"
                    );
                }
            }
        }
    }
    for np in fleet.of_kind("NetworkPolicy") {
        let name = np["metadata"]["name"].as_str().unwrap();
        let selected: Vec<&Pod<'_>> = pods
            .iter()
            .filter(|p| selects(&np["spec"]["podSelector"]["matchLabels"], p.labels))
            .collect();
        assert!(
            !selected.is_empty(),
            "{what}: NetworkPolicy {name} selects no pod"
        );
        for rule in np["spec"]["ingress"].as_array().into_iter().flatten() {
            for from in rule["from"].as_array().into_iter().flatten() {
                let sel = &from["podSelector"]["matchLabels"];
                assert!(
                    sel.is_null() || pods.iter().any(|p| selects(sel, p.labels)),
                    "{what}: NetworkPolicy {name} admits pods that do not exist"
                );
            }
            for port in rule["ports"].as_array().into_iter().flatten() {
                for p in &selected {
                    assert!(
                        resolve_port(p.container, &port["port"]).is_some(),
                        "{what}: NetworkPolicy {name} port {} is not one of {}'s",
                        port["port"],
                        p.workload
                    );
                }
            }
        }
    }
    assert!(
        !signing.is_empty(),
        "{what}: gateways read JWT_SIGNING_KEY_FILE from a Secret volume"
    );
    assert!(
        signing.is_disjoint(&worker_volumes),
        "{what}: workers mount {:?}, which holds the gateways' signing key",
        signing.intersection(&worker_volumes).collect::<Vec<_>>()
    );
    check_prometheus_discovery(&fleet, &pods, what);
    refs
}

/// The central migration Job (`k8s/migrate`): the admin job image runs a script
/// that migrates the central database as its owner (over TLS, from Secrets that
/// exist) and then makes the login role of every gateway and worker of the fleet,
/// with the Secret each reads its DB_PASSWORD from. Returns the Secret keys it
/// refers to.
fn check_migration_job(
    objects: Vec<Value>,
    fleet_pods: &[Pod<'_>],
    secrets: BTreeMap<String, BTreeMap<String, String>>,
) -> BTreeSet<(String, String)> {
    let what = "k8s migrate";
    let job_fleet = Fleet { objects, secrets };
    let jobs: Vec<&Value> = job_fleet.of_kind("Job").collect();
    assert_eq!(jobs.len(), 1, "{what}: one Job");
    let job = jobs[0];
    assert_eq!(
        job["metadata"]["namespace"], "medicalpro",
        "{what}: namespace"
    );
    let spec = &job["spec"]["template"]["spec"];
    let containers = spec["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1, "{what}: one container");
    let c = &containers[0];
    let w = format!("{what}: {}", job["metadata"]["name"].as_str().unwrap());
    let image = c["image"].as_str().unwrap();
    assert!(
        image.starts_with(&format!("medicalpro/{ADMIN_JOB}:")),
        "{w}: runs {image}, not the {ADMIN_JOB} image"
    );
    assert!(
        ["Never", "OnFailure"].contains(&spec["restartPolicy"].as_str().unwrap_or("Always")),
        "{w}: restartPolicy"
    );
    let stage = stage_named(ADMIN_JOB);
    check_unprivileged(spec, c, &stage, &w);
    let argv: Vec<String> = [&c["command"], &c["args"]]
        .into_iter()
        .flat_map(|v| v.as_array().cloned().unwrap_or_default())
        .filter_map(|v| text(&v))
        .collect();
    assert!(
        argv.len() == 3 && argv[0].ends_with("/sh") && argv[1] == "-c",
        "{w}: run a script with the image's shell: command [/busybox/sh, -c], args [script]; \
         got {argv:?}"
    );
    let script = job_script(&argv[2], &w);
    assert!(
        script.migrates,
        "{w}: must run medicalpro-admin migrate-central"
    );
    let mut refs = BTreeSet::new();
    let env = job_fleet.env(literals(&stage.env), c, &w, &mut refs);
    let own: Vec<String> = script
        .roles
        .iter()
        .map(|r| r.password_var.clone())
        .collect();
    let (settings, files) = configure_admin(&env, &own, &w);
    check_files(&job_fleet, spec, c, &files, &mut refs, &w);
    assert!(
        settings.central.tls.is_enabled(),
        "{w}: connect to the central database over TLS"
    );
    assert!(
        matches!(env.get("DB_PASSWORD"), Some(Val::Secret(_))),
        "{w}: the owner's DB_PASSWORD comes from a Secret"
    );
    for pod in fleet_pods {
        let db = &pod.loaded.central;
        let pw = format!("{w}: {}", pod.workload);
        assert_eq!(
            (
                &settings.central.host,
                settings.central.port,
                &settings.central.dbname
            ),
            (&db.host, db.port, &db.dbname),
            "{pw}: the Job migrates another database"
        );
        assert_ne!(
            settings.central.user, db.user,
            "{pw}: DB_USER is the database's owner; log in as a service role"
        );
        let role = script
            .roles
            .iter()
            .find(|r| r.name == db.user)
            .unwrap_or_else(|| {
                panic!(
                    "{pw}: DB_USER {} is made by no create-service-role",
                    db.user
                )
            });
        assert_eq!(
            role.kind,
            pod.loaded.binary.name(),
            "{pw}: role {} kind",
            role.name
        );
        let given = env.get(&role.password_var);
        assert!(
            matches!(given, Some(Val::Secret(_))),
            "{pw}: ${} must come from a Secret",
            role.password_var
        );
        assert_eq!(
            given,
            pod.env.get("DB_PASSWORD"),
            "{pw}: role {} gets another password than its DB_PASSWORD",
            role.name
        );
    }
    refs
}

/// deploy/prometheus/prometheus-kubernetes.yml finds pods through DNS names of
/// headless Services: they exist and select our pods, at their admin port.
fn check_prometheus_discovery(fleet: &Fleet, pods: &[Pod<'_>], what: &str) {
    let file = deploy_dir().join("prometheus/prometheus-kubernetes.yml");
    if !file.exists() {
        eprintln!(
            "{} absent: Kubernetes scrape discovery not checked",
            file.display()
        );
        return;
    }
    let config = yaml_file(&file);
    let mut covered: BTreeSet<&str> = BTreeSet::new();
    for job in config["scrape_configs"].as_array().into_iter().flatten() {
        for sd in job["dns_sd_configs"].as_array().into_iter().flatten() {
            let port = sd["port"].as_u64().map(|p| p as u16);
            for name in sd["names"].as_array().into_iter().flatten() {
                let name = name.as_str().unwrap();
                let mut parts = name.split('.');
                let (svc_name, ns) = (parts.next().unwrap(), parts.next().unwrap_or_default());
                let svc = fleet.get("Service", svc_name).unwrap_or_else(|| {
                    panic!("{what}: Prometheus looks up {name}: no Service {svc_name}")
                });
                assert_eq!(
                    svc["metadata"]["namespace"], ns,
                    "{what}: {name}: namespace"
                );
                assert_eq!(
                    svc["spec"]["clusterIP"], "None",
                    "{what}: {name} must be headless (one address per pod)"
                );
                for p in pods
                    .iter()
                    .filter(|p| selects(&svc["spec"]["selector"], p.labels))
                {
                    assert_eq!(
                        port,
                        Some(p.loaded.admin.port()),
                        "{what}: {name} scraped off {}'s admin port",
                        p.workload
                    );
                    covered.insert(&p.workload);
                }
            }
        }
    }
    for p in pods {
        assert!(
            covered.contains(p.workload.as_str()),
            "{what}: Prometheus never scrapes {}",
            p.workload
        );
    }
}

/// A copy of deploy/k8s with every commented-out setting of its env files switched on.
fn with_optional_settings() -> PathBuf {
    let root = super::config::scratch("deploy-k8s-optional");
    let _ = std::fs::remove_dir_all(&root);
    for file in walk(&k8s_dir()) {
        let rel = file.strip_prefix(k8s_dir()).unwrap();
        let dest = root.join(rel);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        let text = read(&file);
        let text = if file.extension().is_some_and(|e| e == "env") {
            enable_optional(&text)
        } else {
            text
        };
        std::fs::write(dest, text).unwrap();
    }
    root
}

#[test]
fn kubernetes_fleet_matches_the_configuration() {
    let Some(kubectl) = crate::support::tool(
        "kubectl",
        "the rendered Kubernetes checks (kubectl kustomize)",
        "apt-get install kubectl (or kubernetes-client)",
    ) else {
        return;
    };
    for dir in kustomizations(&k8s_dir()) {
        render(&kubectl, &dir);
    }
    let plain = render(&kubectl, &k8s_dir().join("fleet"));
    let mut refs = check_fleet(plain.clone(), false);
    let optional = with_optional_settings();
    refs.extend(check_fleet(render(&kubectl, &optional.join("fleet")), true));
    let _ = std::fs::remove_dir_all(&optional);

    let fleet = Fleet {
        objects: plain,
        secrets: example_secrets(),
    };
    let pods = fleet.pods("k8s fleet", &mut BTreeSet::new());
    refs.extend(check_migration_job(
        render(&kubectl, &k8s_dir().join("migrate")),
        &pods,
        example_secrets(),
    ));

    // Every example Secret and key is referred to, and the examples are refused.
    for (name, keys) in &fleet.secrets {
        for key in keys.keys() {
            assert!(
                refs.contains(&(name.clone(), key.clone())),
                "secrets.example.yaml: {name}/{key} is never used"
            );
        }
    }
    for pod in &pods {
        let with_examples: BTreeMap<String, String> = pod
            .env
            .iter()
            .map(|(k, v)| {
                let value = match v {
                    Val::Literal(s) => s.clone(),
                    Val::Secret(r) => {
                        let (s, key) = r.split_once('/').unwrap();
                        fleet.secrets[s][key].clone()
                    }
                };
                (k.clone(), value)
            })
            .collect();
        assert!(
            refused(pod.loaded.binary, &with_examples).is_some(),
            "{}: starts with the example Secrets' placeholders; they must be refused",
            pod.workload
        );
    }
}

#[test]
fn kubernetes_files_parse_and_every_one_is_used() {
    let root = k8s_dir();
    let mut used: BTreeSet<PathBuf> = BTreeSet::new();
    for dir in kustomizations(&root) {
        let k = yaml_file(&dir.join("kustomization.yaml"));
        used.insert(dir.join("kustomization.yaml"));
        for key in k.as_object().unwrap().keys() {
            assert!(
                [
                    "apiVersion", "kind", "namespace", "nameSuffix", "labels", "resources",
                    "configMapGenerator", "patches", "images",
                ]
                .contains(&key.as_str()),
                "{}: {key} is new to these manifests; check that tests/deploy still sees through it",
                dir.display()
            );
        }
        let mut files: Vec<String> = Vec::new();
        files.extend(
            k["resources"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| r.as_str().unwrap().to_owned()),
        );
        files.extend(
            k["patches"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["path"].as_str().map(str::to_owned)),
        );
        for g in k["configMapGenerator"].as_array().into_iter().flatten() {
            files.extend(
                g["envs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| e.as_str().unwrap().to_owned()),
            );
            assert!(
                g["files"].is_null(),
                "{}: configMapGenerator files: are not read as settings",
                dir.display()
            );
        }
        for f in files {
            let path = dir.join(&f);
            assert!(path.exists(), "{}: {f} does not exist", dir.display());
            if path.is_file() {
                used.insert(path.canonicalize().unwrap());
            }
        }
    }
    for file in walk(&root) {
        let name = file.file_name().unwrap().to_str().unwrap();
        let what = file.display().to_string();
        if name.ends_with(".yaml") || name.ends_with(".yml") {
            yaml_docs(&read(&file), &what);
        } else if name.ends_with(".env") {
            EnvFile::load(&file);
        } else {
            panic!("{what}: an unexpected kind of file under deploy/k8s");
        }
        let canonical = file.canonicalize().unwrap();
        assert!(
            used.contains(&canonical) || used.contains(&file) || name == "secrets.example.yaml",
            "{what} is in no kustomization"
        );
    }
    // Example Secrets are placeholders, plainly marked.
    for (name, keys) in example_secrets() {
        for (key, value) in keys {
            assert_eq!(
                value, "REPLACE-ME",
                "secrets.example.yaml: {name}/{key} must be a placeholder"
            );
        }
    }
}
