//! Monitoring, end to end: the Prometheus configurations, rules and rule unit tests
//! go through `promtool`; the Grafana dashboard's queries, the rules and the metrics
//! table in `deploy/README.md` are checked against `common/src/metric_names.rs`; a
//! real Prometheus scrapes a stack with the rules loaded; the worker's pool and
//! backup gauges follow what happens; and the JSON request logs carry request,
//! clinic and user ids but never a token, a password or a patient's data.
//!
//! `promtool` and `prometheus` come from Debian's `prometheus` package (`.ci/run`
//! installs it): without them the two tests that run them say so in one line and
//! pass, except under `CI=true`, where they fail (`support::tool`).
//!
//! Its stack runs with JSON logs and every statement counted as slow ([`SETUP`]).

use crate::support::*;
use devstack::{Http, Stack};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The stack of this binary: JSON logs, every statement reported as slow, backup
/// gauges refreshed every second with a one-hour allowance.
/// JSON logs, every data statement counted as slow, backup gauges read every
/// second.
static SETUP: Setup = Setup {
    name: "monitoring",
    env: &[
        ("LOG_FORMAT", "json"),
        ("SLOW_QUERY_MS", "0"),
        ("BACKUP_CHECK_SECS", "1"),
        ("BACKUP_MAX_AGE_SECS", "3600"),
    ],
    server_conf: &[],
};

fn stack() -> Arc<Stack> {
    stack_of(&SETUP)
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .to_path_buf()
}

fn prometheus_dir() -> PathBuf {
    repo().join("deploy/prometheus")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The files of `dir` ending in `.yml`, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .yml file in {}", dir.display());
    files
}

fn run_promtool(promtool: &Path, args: &[&str], files: &[PathBuf]) {
    let out = Command::new(promtool)
        .args(args)
        .args(files)
        .current_dir(prometheus_dir())
        .output()
        .expect("running promtool");
    assert!(
        out.status.success(),
        "promtool {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_accepts_the_configurations_and_rules_and_their_unit_tests_pass() {
    let Some(promtool) = tool(
        "promtool",
        "promtool's checks of the Prometheus configurations and rules",
        "apt-get install prometheus",
    ) else {
        return;
    };
    let dir = prometheus_dir();
    run_promtool(
        &promtool,
        &["check", "config"],
        &[
            dir.join("prometheus.yml"),
            dir.join("prometheus-kubernetes.yml"),
        ],
    );
    run_promtool(
        &promtool,
        &["check", "rules"],
        &yaml_files(&dir.join("rules")),
    );
    run_promtool(
        &promtool,
        &["test", "rules"],
        &yaml_files(&dir.join("tests")),
    );
}

/// Every metric name declared in `common/src/metric_names.rs`.
fn known_metrics() -> BTreeSet<String> {
    let source = read(&repo().join("common/src/metric_names.rs"));
    let names: BTreeSet<String> = source
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| s.starts_with("medicalpro_"))
        .map(str::to_owned)
        .collect();
    assert!(names.len() > 10, "metric names not found: {names:?}");
    names
}

/// The recording rules defined in `deploy/prometheus/rules/`.
fn recording_rules() -> BTreeSet<String> {
    yaml_files(&prometheus_dir().join("rules"))
        .iter()
        .flat_map(|f| {
            read(f)
                .lines()
                .filter_map(|l| {
                    l.trim()
                        .strip_prefix("- record:")
                        .map(|r| r.trim().to_owned())
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The words of `text` that name a MedicalPro series (`medicalpro_…` metrics,
/// `medicalpro:…` recording rules). With `skip_strings`, quoted text (PromQL label
/// values) is skipped.
fn series_names(text: &str, skip_strings: bool) -> Vec<String> {
    let mut names = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut flush = |word: &mut String| {
        // A colon ending a word is prose ("…_seconds: they"), not part of a name.
        let name = word.trim_end_matches(':');
        if name.starts_with("medicalpro_") || name.starts_with("medicalpro:") {
            names.push(name.to_owned());
        }
        word.clear();
    };
    for c in text.chars() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
            continue;
        }
        flush(&mut word);
        if skip_strings && matches!(c, '"' | '\'' | '`') {
            quote = Some(c);
        }
    }
    flush(&mut word);
    names
}

/// Why `name` is not a series the code exports or the rules record, if it is not.
fn unknown(name: &str, metrics: &BTreeSet<String>, rules: &BTreeSet<String>) -> Option<String> {
    if rules.contains(name) || metrics.contains(name) {
        return None;
    }
    let histogram_series = ["_bucket", "_sum", "_count"]
        .iter()
        .filter_map(|suffix| name.strip_suffix(suffix))
        .any(|base| metrics.contains(base));
    (!histogram_series).then(|| name.to_owned())
}

fn dashboard() -> Value {
    let path = repo().join("deploy/grafana/dashboards/medicalpro.json");
    serde_json::from_str(&read(&path)).expect("the dashboard is JSON")
}

/// Every panel of a dashboard, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<Value> {
    fn walk(list: &Value, out: &mut Vec<Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p.clone());
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// Every PromQL query of the dashboard, with its panel's title.
fn dashboard_queries() -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for panel in panels(&dashboard()) {
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().unwrap_or("?").to_owned();
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or_default().trim().to_owned();
            assert!(!expr.is_empty(), "panel {title:?} has an empty query");
            queries.push((title.clone(), expr));
        }
    }
    queries
}

#[test]
fn dashboard_and_rules_name_only_existing_metrics_and_show_every_metric() {
    let metrics = known_metrics();
    let rules = recording_rules();
    assert!(rules.len() >= 5, "recording rules not found: {rules:?}");
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "medicalpro-overview");

    let mut ids = BTreeSet::new();
    for panel in panels(&dashboard) {
        assert!(
            ids.insert(panel["id"].to_string()),
            "duplicate panel id {}",
            panel["id"]
        );
        if panel["type"] != "row" {
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "panel {} must use the dashboard's datasource variable",
                panel["title"]
            );
        }
    }

    let mut shown = BTreeSet::new();
    for (title, expr) in dashboard_queries() {
        let names = series_names(&expr, true);
        assert!(
            !names.is_empty() || expr.starts_with("up"),
            "panel {title:?}: {expr} names no MedicalPro series"
        );
        for name in names {
            if let Some(bad) = unknown(&name, &metrics, &rules) {
                panic!("panel {title:?} queries `{bad}`, which is neither in common/src/metric_names.rs nor a recording rule: {expr}");
            }
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|b| metrics.contains(*b)))
                .unwrap_or(&name)
                .to_owned();
            shown.insert(base);
        }
    }
    let missing: Vec<&String> = metrics.difference(&shown).collect();
    assert!(
        missing.is_empty(),
        "metrics on no dashboard panel: {missing:?}"
    );

    // The rules, their unit tests and both configurations (expressions, series and
    // annotations alike) name only real series too.
    let dir = prometheus_dir();
    let mut files = yaml_files(&dir.join("rules"));
    files.extend(yaml_files(&dir.join("tests")));
    files.extend(yaml_files(&dir));
    for file in files {
        for name in series_names(&read(&file), false) {
            if let Some(bad) = unknown(&name, &metrics, &rules) {
                panic!("{} names `{bad}`, which does not exist", file.display());
            }
        }
    }
}

#[test]
fn the_metrics_table_describes_exactly_the_declared_metrics() {
    let readme = read(&repo().join("deploy/README.md"));
    let mut table = BTreeSet::new();
    for line in readme.lines().filter(|l| l.starts_with("| `medicalpro_")) {
        let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
        assert_eq!(
            cells.len(),
            4,
            "a metrics row has name, type, labels, meaning: {line}"
        );
        assert!(
            matches!(cells[1], "counter" | "gauge" | "histogram"),
            "unknown metric type in: {line}"
        );
        let name = cells[0].trim_matches('`').to_owned();
        assert!(table.insert(name.clone()), "{name} is in the table twice");
    }
    assert_eq!(
        table,
        known_metrics(),
        "deploy/README.md's metrics table and common/src/metric_names.rs disagree"
    );
}

/// The value of the first sample of `name` in a Prometheus text exposition whose
/// labels contain every one of `labels` (`key="value"`).
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A Prometheus server of the test; stopped when dropped.
struct Prometheus {
    child: std::process::Child,
    api: Http,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        devstack::process::stop(&mut self.child, libc::SIGTERM, Duration::from_secs(10));
    }
}

impl Prometheus {
    /// Starts `prometheus` scraping the stack's gateway and workers every second,
    /// with the repository's rules loaded.
    fn start(stack: &Stack, prometheus: &Path) -> Self {
        let dir = stack.options.data_dir.join("prometheus");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("prometheus dir");
        let rules: Vec<String> = yaml_files(&prometheus_dir().join("rules"))
            .iter()
            .map(|p| format!("{:?}", p.display().to_string()))
            .collect();
        let workers: Vec<String> = stack
            .regions
            .iter()
            .map(|r| format!("{:?}", r.worker.admin_addr.to_string()))
            .collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files: [{}]\n\
             scrape_configs:\n\
             \x20 - job_name: medicalpro-gateway\n    static_configs:\n      - targets: [{:?}]\n\
             \x20 - job_name: medicalpro-worker\n    static_configs:\n      - targets: [{}]\n",
            rules.join(", "),
            stack.gateway.admin_addr.to_string(),
            workers.join(", ")
        );
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config).expect("writing the config");
        let port = devstack::pg::free_port().expect("free port");
        let mut cmd = Command::new(prometheus);
        cmd.arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).expect("log file"));
        let child = devstack::process::spawn(cmd, libc::SIGKILL).expect("starting prometheus");
        Self {
            child,
            api: Http::new(&format!("http://127.0.0.1:{port}")),
        }
    }

    /// An instant query: `Ok(result vector)`, or `Err(the error)` when Prometheus
    /// refused the query; `None` while Prometheus does not answer yet.
    async fn query(&self, promql: &str) -> Option<Result<Vec<Value>, String>> {
        let reply = self
            .api
            .get(&format!("/api/v1/query?query={}", url_encode(promql)), None)
            .await
            .ok()?;
        let body: Value = serde_json::from_slice(&reply.body).ok()?;
        Some(match body["status"].as_str() {
            Some("success") => Ok(body["data"]["result"]
                .as_array()
                .cloned()
                .unwrap_or_default()),
            _ => Err(format!("{}: {}", body["errorType"], body["error"])),
        })
    }

    /// The value of a query that returns one sample.
    async fn scalar(&self, promql: &str) -> Option<f64> {
        let result = self.query(promql).await?.ok()?;
        result.first()?["value"][1].as_str()?.parse().ok()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_stack_and_answers_the_gateway_request_rate() {
    let Some(prometheus) = tool(
        "prometheus",
        "a real Prometheus scraping the stack",
        "apt-get install prometheus",
    ) else {
        return;
    };
    let _stack = hold(&SETUP);
    let stack = stack();
    let prometheus = &Prometheus::start(&stack, &prometheus);
    let http = &stack.http();
    let clinic = &crate::support::register(http, None).await;

    let targets = 1 + stack.regions.len();
    eventually(
        "every target up",
        Duration::from_secs(60),
        move || async move {
            let up = prometheus
                .scalar(r#"sum(up{job=~"medicalpro-.*"})"#)
                .await?;
            (up as usize == targets).then_some(())
        },
    )
    .await;

    // Requests keep coming while Prometheus scrapes, until it sees their rate.
    let rate = eventually("a gateway request rate", Duration::from_secs(90), move || async move {
        let r = http.get("/api/v1/patients", Some(&clinic.token)).await.ok()?;
        assert_eq!(r.status, 200, "{}", r.text());
        let rate = prometheus
            .scalar(r#"sum(rate(medicalpro_http_request_duration_seconds_count{component="gateway"}[30s]))"#)
            .await?;
        (rate > 0.0).then_some(rate)
    })
    .await;
    assert!(rate > 0.0);
    // The recording rules work on the real metrics.
    eventually("the recorded gateway request rate", Duration::from_secs(60), move || async move {
        let _ = http.get("/api/v1/patients", Some(&clinic.token)).await;
        let rate = prometheus
            .scalar(r#"sum(medicalpro:http_requests:rate5m{component="gateway", route="proxy", status="2xx"})"#)
            .await?;
        (rate > 0.0).then_some(())
    })
    .await;

    // Every rule evaluates without error once evaluated.
    let rules = eventually(
        "every rule evaluated",
        Duration::from_secs(60),
        move || async move {
            let reply = prometheus.api.get("/api/v1/rules", None).await.ok()?;
            let body: Value = serde_json::from_slice(&reply.body).ok()?;
            let rules: Vec<Value> = body["data"]["groups"]
                .as_array()?
                .iter()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .collect();
            (!rules.is_empty() && rules.iter().all(|r| r["health"] != "unknown")).then_some(rules)
        },
    )
    .await;
    for rule in &rules {
        assert_eq!(
            rule["health"], "ok",
            "rule {} fails: {}",
            rule["name"], rule["lastError"]
        );
    }
    // No alert fires on a healthy stack (the backup-age test may make one pend
    // meanwhile; pending is not firing).
    let firing = prometheus.query(r#"ALERTS{alertstate="firing"}"#).await;
    assert_eq!(firing, Some(Ok(vec![])), "alerts fire on a healthy stack");

    // Every dashboard query is valid PromQL for this Prometheus.
    for (title, expr) in dashboard_queries() {
        let promql = expr
            .replace("$__rate_interval", "1m")
            .replace("$__range", "1h");
        match prometheus.query(&promql).await {
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("panel {title:?}: Prometheus refuses {promql}: {e}"),
            None => panic!("Prometheus did not answer {promql}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_busiest_clinic_gauges_name_a_clinic_and_zero_it_once_its_pool_closes() {
    let _stack = hold(&SETUP);
    let stack = stack();
    let http = stack.http();
    let clinic = crate::support::register(&http, None).await;
    let worker = stack
        .region(&clinic.region)
        .expect("region")
        .worker
        .admin_addr;
    let label = &format!("clinic=\"{}\"", clinic.id);

    let r = http
        .get("/api/v1/patients", Some(&clinic.token))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    eventually(
        "the clinic among the busiest pools",
        Duration::from_secs(10),
        move || async move {
            let text = metrics_at(worker).await;
            let idle = sample(
                &text,
                "medicalpro_clinic_pool_connections",
                &[label, "state=\"idle\""],
            )?;
            (idle > 0.0).then_some(())
        },
    )
    .await;
    let text = metrics_at(worker).await;
    let series = text
        .lines()
        .filter(|l| {
            l.starts_with("medicalpro_clinic_pool_connections{") && l.contains("state=\"in_use\"")
        })
        .count();
    assert!(
        series <= common::metric_names::TOP_CLINICS * 2,
        "too many clinic series:\n{text}"
    );

    // CLINIC_POOL_INACTIVE_SECS is 4 in the test stack: the pool closes, the clinic
    // leaves the top and its series is zeroed.
    eventually(
        "the clinic's series zeroed",
        Duration::from_secs(30),
        move || async move {
            let text = metrics_at(worker).await;
            let in_use = sample(
                &text,
                "medicalpro_clinic_pool_connections",
                &[label, "state=\"in_use\""],
            )?;
            let idle = sample(
                &text,
                "medicalpro_clinic_pool_connections",
                &[label, "state=\"idle\""],
            )?;
            (in_use == 0.0 && idle == 0.0).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_gauges_follow_the_clinic_backups_table() {
    let _stack = hold(&SETUP);
    let stack = stack();
    let http = stack.http();
    let clinic = crate::support::register(&http, None).await;
    let worker = stack
        .region(&clinic.region)
        .expect("region")
        .worker
        .admin_addr;
    let region = &format!("region=\"{}\"", clinic.region);
    let central = stack.central_db().await;
    let id: uuid::Uuid = clinic.id.parse().unwrap();

    // A clinic created two hours ago and never backed up is overdue (the allowance
    // is an hour in this stack).
    central
        .execute(
            "UPDATE companies SET created_at = now() - interval '2 hours' WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    eventually(
        "the clinic counted overdue",
        Duration::from_secs(20),
        move || async move {
            let text = metrics_at(worker).await;
            let overdue = sample(&text, "medicalpro_clinics_backup_overdue", &[region])?;
            let oldest = sample(
                &text,
                "medicalpro_backup_oldest_success_age_seconds",
                &[region],
            )?;
            (overdue >= 1.0 && oldest >= 7200.0).then_some(())
        },
    )
    .await;

    // A failed backup changes nothing; a successful one makes it current.
    central
        .execute(
            "INSERT INTO clinic_backups (clinic_id, region, finished_at, status, error) \
             VALUES ($1, $2, now(), 'failed', 'disk full')",
            &[&id, &clinic.region],
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let text = metrics_at(worker).await;
    assert!(sample(&text, "medicalpro_clinics_backup_overdue", &[region]).unwrap() >= 1.0);
    central
        .execute(
            "INSERT INTO clinic_backups (clinic_id, region, finished_at, status, location, size_bytes) \
             VALUES ($1, $2, now(), 'success', 'test://backup', 1)",
            &[&id, &clinic.region],
        )
        .await
        .unwrap();
    eventually(
        "no clinic overdue",
        Duration::from_secs(20),
        move || async move {
            let text = metrics_at(worker).await;
            let overdue = sample(&text, "medicalpro_clinics_backup_overdue", &[region])?;
            let oldest = sample(
                &text,
                "medicalpro_backup_oldest_success_age_seconds",
                &[region],
            )?;
            (overdue == 0.0 && oldest < 3600.0).then_some(())
        },
    )
    .await;
}

/// Every line of the stack's service logs, each parsed as JSON.
fn log_lines(stack: &Stack) -> Vec<(String, Value)> {
    let mut files = vec![stack.gateway.log_path().to_path_buf()];
    files.extend(
        stack
            .regions
            .iter()
            .map(|r| r.worker.log_path().to_path_buf()),
    );
    let mut lines = Vec::new();
    for file in files {
        for line in read(&file).lines().filter(|l| !l.trim().is_empty()) {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}: not a JSON line ({e}): {line}", file.display()));
            lines.push((line.to_owned(), value));
        }
    }
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_logs_are_json_with_request_clinic_and_user_and_no_secret_or_patient_data() {
    let _stack = hold(&SETUP);
    let stack = stack();
    let http = stack.http();
    let clinic = crate::support::register(&http, None).await;
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let first = format!("Zephyrine{}", &unique[..8]);
    let last = format!("Quillfeather{}", &unique[8..16]);
    let ssn = "2 91 07 13 055 123 45";
    let phone = "+33 6 12 98 76 54";
    let email = format!("{unique}@patient.example");
    let patient = crate::support::create_patient(
        &http,
        &clinic,
        json!({"first_name": first, "last_name": last, "email": email, "phone": phone,
               "birth_date": "1991-07-13", "ssn": ssn, }),
    )
    .await;
    let patient_id = patient["id"].as_str().unwrap().to_owned();

    // Requests with an id of our choosing, the patient's name and ssn in the query
    // string, and a wrong password and a bad token on the way.
    let request_id = format!("logtest-{unique}");
    let auth = format!("Bearer {}", clinic.token);
    let search = format!("/api/v1/patients?q={first}&ssn={}", ssn.replace(' ', "%20"));
    for path in [search.as_str(), &format!("/api/v1/patients/{patient_id}")] {
        let r = http
            .send(
                http::Method::GET,
                path,
                &[("authorization", &auth), ("x-request-id", &request_id)],
                None,
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let wrong_password = format!("not-the-password-{unique}");
    let r = http
        .post(
            "/api/v1/auth/login",
            None,
            &json!({"email": clinic.email, "password": wrong_password}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 401);
    let bad_token = format!("{}x", clinic.token);
    let r = http
        .get("/api/v1/patients", Some(&bad_token))
        .await
        .unwrap();
    assert_eq!(r.status, 401);
    let r = http
        .post(
            "/api/v1/auth/refresh",
            None,
            &json!({"refresh_token": clinic.refresh_token}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);

    let lines = log_lines(&stack);
    // The request lines of our id, in the gateway and in the worker: each names the
    // verified clinic and user.
    let ours: Vec<&Value> = lines
        .iter()
        .map(|(_, v)| v)
        .filter(|v| v["span"]["request_id"] == request_id.as_str())
        .collect();
    let gateway_lines = ours
        .iter()
        .filter(|v| {
            v["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("gateway"))
        })
        .count();
    let worker_lines = ours
        .iter()
        .filter(|v| {
            v["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("worker"))
        })
        .count();
    assert!(
        gateway_lines >= 2 && worker_lines >= 2,
        "request lines of {request_id}: {ours:?}"
    );
    for v in &ours {
        assert_eq!(v["span"]["clinic"], clinic.id.as_str(), "{v}");
        assert_eq!(v["span"]["user"], clinic.user_id.as_str(), "{v}");
        assert!(
            v["span"]["route"].is_string() && v["span"]["method"] == "GET",
            "{v}"
        );
    }
    let finished: Vec<&&Value> = ours
        .iter()
        .filter(|v| v["fields"]["message"] == "request")
        .collect();
    assert!(
        finished.len() >= 4,
        "one `request` line per request and process: {ours:?}"
    );
    for v in finished {
        assert_eq!(v["fields"]["status"], 200, "{v}");
        assert!(v["fields"]["duration_ms"].is_number(), "{v}");
    }
    // SLOW_QUERY_MS=0: every statement is reported, named but never shown.
    let slow: Vec<&&Value> = ours
        .iter()
        .filter(|v| v["fields"]["message"] == "slow query")
        .collect();
    assert!(!slow.is_empty(), "no slow query line: {ours:?}");
    for v in &slow {
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["fields"]["resource"], "patients", "{v}");
        assert!(
            matches!(v["fields"]["action"].as_str(), Some("list" | "read")),
            "{v}"
        );
        assert_eq!(v["fields"]["clinic"], clinic.id.as_str(), "{v}");
        assert_eq!(v["fields"]["request_id"], request_id.as_str(), "{v}");
        assert!(
            v["fields"]["duration_ms"]
                .as_f64()
                .is_some_and(|d| d >= 0.0),
            "{v}"
        );
    }
    let worker = stack
        .region(&clinic.region)
        .expect("region")
        .worker
        .admin_addr;
    let text = metrics_at(worker).await;
    assert!(
        sample(
            &text,
            "medicalpro_slow_queries_total",
            &["resource=\"patients\""]
        )
        .is_some_and(|n| n >= 1.0),
        "slow queries are counted:\n{text}"
    );

    // Logins, refreshes and other clinics' requests carry a request id too.
    let request_lines = lines
        .iter()
        .filter(|(_, v)| v["fields"]["message"] == "request");
    for (line, v) in request_lines {
        assert!(
            v["span"]["request_id"].is_string(),
            "request line without request id: {line}"
        );
    }

    // Nothing secret or about the patient, anywhere in the logs.
    let secrets = [
        ("access token", clinic.token.clone()),
        ("forged token", bad_token),
        ("refresh token", clinic.refresh_token.clone()),
        ("password", clinic.password.clone()),
        ("wrong password", wrong_password),
        ("first name", first),
        ("last name", last),
        ("ssn", ssn.to_owned()),
        ("ssn, url-encoded", ssn.replace(' ', "%20")),
        ("ssn digits", ssn.replace(' ', "")),
        ("phone", phone.to_owned()),
        ("patient e-mail", email),
        (
            "token signing key",
            std::fs::read_to_string(&stack.secrets.jwt_key)
                .unwrap()
                .lines()
                .nth(1)
                .unwrap()
                .to_owned(),
        ),
        ("audit key", stack.secrets.audit_key.clone()),
        ("internal secret", stack.secrets.internal_secret.clone()),
        ("master key", stack.secrets.master_key.clone()),
    ];
    for (line, _) in &lines {
        for (what, secret) in &secrets {
            assert!(
                !line.contains(secret.as_str()),
                "the {what} is in a log line: {line}"
            );
        }
    }
}
