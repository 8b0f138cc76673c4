//! Readers for the deployment file formats, as small as the files need: YAML
//! (yaml-rust2, turned into `serde_json::Value` for easy walking), `KEY=VALUE` env
//! files with their commented-out optional settings, systemd units, the Dockerfile's
//! stages, and HAProxy's configuration.

use serde_json::{Map, Number, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use yaml_rust2::{Yaml, YamlLoader};

/// The repository's `deploy/` folder.
pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every file under `dir`, recursively, sorted.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

// ---------------------------------------------------------------------------- YAML

fn to_json(y: &Yaml) -> Value {
    match y {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Integer(i) => Value::Number((*i).into()),
        Yaml::Real(r) => r
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map_or_else(|| Value::String(r.clone()), Value::Number),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Array(a) => Value::Array(a.iter().map(to_json).collect()),
        Yaml::Hash(h) => Value::Object(
            h.iter()
                .map(|(k, v)| (scalar_text(k), to_json(v)))
                .collect::<Map<_, _>>(),
        ),
        Yaml::Alias(_) | Yaml::BadValue => panic!("unresolved YAML node {y:?}"),
    }
}

fn scalar_text(y: &Yaml) -> String {
    match y {
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        Yaml::Null => "null".into(),
        other => panic!("unsupported mapping key {other:?}"),
    }
}

/// Every document of a YAML text (empty documents left out); `what` names it in errors.
pub fn yaml_docs(text: &str, what: &str) -> Vec<Value> {
    YamlLoader::load_from_str(text)
        .unwrap_or_else(|e| panic!("{what}: invalid YAML: {e}"))
        .iter()
        .map(to_json)
        .filter(|v| !v.is_null())
        .collect()
}

/// The single document of a YAML file.
pub fn yaml_file(path: &Path) -> Value {
    let mut docs = yaml_docs(&read(path), &path.display().to_string());
    assert_eq!(
        docs.len(),
        1,
        "{}: expected one YAML document",
        path.display()
    );
    docs.remove(0)
}

/// A string field, or a number written without quotes, as text.
pub fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

// ------------------------------------------------------------------------ env files

/// A `KEY=VALUE` file: its settings, and the settings written commented out
/// (`# KEY=VALUE`), which are optional ones an operator may switch on.
#[derive(Clone, Debug, Default)]
pub struct EnvFile {
    pub active: Vec<(String, String)>,
    pub optional: Vec<(String, String)>,
}

fn setting(line: &str) -> Option<(String, String)> {
    let (key, value) = line.split_once('=')?;
    let key = key.trim();
    let ok = key.starts_with(|c: char| c.is_ascii_uppercase())
        && key
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    ok.then(|| (key.to_owned(), value.trim().to_owned()))
}

impl EnvFile {
    pub fn parse(text: &str, what: &str) -> Self {
        let mut file = Self::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                if let Some(kv) = setting(comment.trim()) {
                    file.optional.push(kv);
                }
                continue;
            }
            let kv = setting(line)
                .unwrap_or_else(|| panic!("{what}:{}: not a KEY=VALUE line: {line}", n + 1));
            assert!(
                !kv.1.starts_with('"') && !kv.1.starts_with('\''),
                "{what}:{}: quoted values mean different things to compose, systemd and \
                 kustomize; write them bare",
                n + 1
            );
            assert!(
                !file.active.iter().any(|(k, _)| *k == kv.0),
                "{what}: {} set twice",
                kv.0
            );
            file.active.push(kv);
        }
        file
    }

    pub fn load(path: &Path) -> Self {
        Self::parse(&read(path), &path.display().to_string())
    }

    /// The settings as a map; with `optional`, the commented ones switched on too
    /// (a commented setting replaces an active one of the same name).
    pub fn settings(&self, optional: bool) -> BTreeMap<String, String> {
        let mut out: BTreeMap<String, String> = self.active.iter().cloned().collect();
        if optional {
            out.extend(self.optional.iter().cloned());
        }
        out
    }
}

/// The text of an env file with every commented setting switched on (replacing an
/// active line of the same name): what an operator gets who enables them all.
pub fn enable_optional(text: &str) -> String {
    let optional: Vec<String> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix('#').and_then(|c| setting(c.trim())))
        .map(|(k, _)| k)
        .collect();
    text.lines()
        .filter_map(|l| {
            let t = l.trim();
            match t.strip_prefix('#') {
                Some(c) => setting(c.trim()).map(|(k, v)| format!("{k}={v}")),
                None => match setting(t) {
                    Some((k, _)) if optional.contains(&k) => None,
                    _ => Some(l.to_owned()),
                },
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

// -------------------------------------------------------------------- systemd units

/// A systemd unit: `[Section]` → `(key, value)` in order (keys may repeat).
#[derive(Debug, Default)]
pub struct Unit {
    pub sections: BTreeMap<String, Vec<(String, String)>>,
}

impl Unit {
    pub fn parse(text: &str, what: &str) -> Self {
        let mut unit = Self::default();
        let mut section = None;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = Some(name.to_owned());
                unit.sections.entry(name.to_owned()).or_default();
                continue;
            }
            assert!(!line.ends_with('\\'), "{what}:{}: no continuations", n + 1);
            let (k, v) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("{what}:{}: not KEY=VALUE: {line}", n + 1));
            let s = section
                .clone()
                .unwrap_or_else(|| panic!("{what}:{}: setting outside a section", n + 1));
            unit.sections
                .entry(s)
                .or_default()
                .push((k.trim().to_owned(), v.trim().to_owned()));
        }
        unit
    }

    /// Every value of `key` in `section`.
    pub fn all(&self, section: &str, key: &str) -> Vec<&str> {
        self.sections
            .get(section)
            .into_iter()
            .flatten()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The last value of `key` in `section` (what systemd uses for single values).
    pub fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.all(section, key).last().copied()
    }
}

/// A systemd time span such as `45s`, `2min`, `1min 30s` or `90`, in seconds.
pub fn systemd_seconds(value: &str) -> u64 {
    value
        .split_whitespace()
        .map(|part| {
            let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
            let n: u64 = digits
                .parse()
                .unwrap_or_else(|_| panic!("time span {value}"));
            match &part[digits.len()..] {
                "" | "s" | "sec" => n,
                "min" | "m" => n * 60,
                "h" => n * 3600,
                other => panic!("unit {other} in {value}"),
            }
        })
        .sum()
}

// ----------------------------------------------------------------------- Dockerfile

/// One stage of a multi-stage Dockerfile, with what an image inherits from the stage
/// it is built `FROM` (environment, user, ports, health check, entry point) folded in.
#[derive(Clone, Debug, Default)]
pub struct Stage {
    pub name: String,
    pub from: String,
    pub env: BTreeMap<String, String>,
    pub user: Option<String>,
    pub expose: Vec<u16>,
    pub healthcheck: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
}

/// The stages of a Dockerfile, in order.
pub fn dockerfile(text: &str) -> Vec<Stage> {
    // Join continuation lines; drop comments (including the `# syntax=` directive).
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if current.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        if let Some(head) = t.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
        } else {
            current.push_str(t);
            lines.push(std::mem::take(&mut current));
        }
    }
    let mut stages: Vec<Stage> = Vec::new();
    for line in lines {
        let (op, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        let rest = rest.trim();
        if op.eq_ignore_ascii_case("FROM") {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let (from, name) = match words.as_slice() {
                [from, as_, name] if as_.eq_ignore_ascii_case("as") => (*from, *name),
                [from] => (*from, ""),
                _ => panic!("FROM {rest}"),
            };
            let mut stage = stages
                .iter()
                .find(|s| s.name == from)
                .cloned()
                .unwrap_or_default();
            stage.name = name.to_owned();
            stage.from = from.to_owned();
            stages.push(stage);
            continue;
        }
        if stages.is_empty() && op.eq_ignore_ascii_case("ARG") {
            continue; // a global build argument
        }
        let stage = stages.last_mut().expect("an instruction before FROM");
        match op.to_ascii_uppercase().as_str() {
            "ENV" => {
                assert!(!rest.contains('"'), "ENV {rest}: write values bare");
                for pair in rest.split_whitespace() {
                    let (k, v) = pair.split_once('=').expect("ENV KEY=VALUE pairs");
                    stage.env.insert(k.to_owned(), v.to_owned());
                }
            }
            "USER" => stage.user = Some(rest.to_owned()),
            "EXPOSE" => stage.expose.extend(
                rest.split_whitespace()
                    .map(|p| p.trim_end_matches("/tcp").parse::<u16>().unwrap()),
            ),
            "ENTRYPOINT" => stage.entrypoint = Some(exec_form(rest)),
            "HEALTHCHECK" => {
                let cmd = rest
                    .split_once("CMD ")
                    .map(|(_, c)| c)
                    .expect("HEALTHCHECK … CMD [...]");
                stage.healthcheck = Some(exec_form(cmd));
            }
            _ => {}
        }
    }
    stages
}

fn exec_form(json: &str) -> Vec<String> {
    serde_json::from_str(json.trim()).unwrap_or_else(|e| panic!("exec form {json}: {e}"))
}

// -------------------------------------------------------------------------- HAProxy

/// What the load balancer does with one backend server.
#[derive(Debug)]
pub struct LbServer {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub check: bool,
    /// The health check's port (`check port N`), if not the traffic port.
    pub check_port: Option<u16>,
    /// Seconds between checks, and failures before the server is taken out.
    pub inter_secs: f64,
    pub fall: u32,
}

/// A `backend` of an HAProxy configuration: its servers and its health check path.
#[derive(Debug)]
pub struct LbBackend {
    pub name: String,
    pub check_path: Option<String>,
    pub servers: Vec<LbServer>,
}

/// `frontend` bind ports and `backend`s (with `default-server` options folded in).
pub fn haproxy(text: &str) -> (Vec<u16>, Vec<LbBackend>) {
    let mut binds = Vec::new();
    let mut backends: Vec<LbBackend> = Vec::new();
    let mut section = String::new();
    let mut defaults: Vec<String> = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        let w: Vec<&str> = words.iter().map(String::as_str).collect();
        match w.as_slice() {
            ["global" | "defaults" | "resolvers" | "frontend" | "listen", ..] => {
                section = w[0].to_owned();
                continue;
            }
            ["backend", name] => {
                section = "backend".into();
                defaults.clear();
                backends.push(LbBackend {
                    name: (*name).to_owned(),
                    check_path: None,
                    servers: Vec::new(),
                });
                continue;
            }
            _ => {}
        }
        match (section.as_str(), w.as_slice()) {
            ("frontend", ["bind", addr, ..]) => {
                let port = addr.rsplit(':').next().unwrap_or(addr);
                binds.push(port.parse().unwrap());
            }
            ("backend", ["option", "httpchk", _method, path, ..]) => {
                backends.last_mut().unwrap().check_path = Some((*path).to_owned());
            }
            ("backend", ["http-check", "send", rest @ ..]) => {
                if let Some(i) = rest.iter().position(|x| *x == "uri") {
                    backends.last_mut().unwrap().check_path = Some(rest[i + 1].to_owned());
                }
            }
            ("backend", ["default-server", rest @ ..]) => {
                defaults = rest.iter().map(|s| (*s).to_owned()).collect();
            }
            ("backend", ["server", name, addr, rest @ ..]) => {
                let mut opts: Vec<String> = defaults.clone();
                opts.extend(rest.iter().map(|s| (*s).to_owned()));
                let (host, port) = addr.rsplit_once(':').expect("server host:port");
                let value = |key: &str| {
                    opts.iter()
                        .position(|o| o == key)
                        .map(|i| opts[i + 1].clone())
                };
                backends.last_mut().unwrap().servers.push(LbServer {
                    name: (*name).to_owned(),
                    host: host.to_owned(),
                    port: port.parse().unwrap(),
                    check: opts.iter().any(|o| o == "check"),
                    check_port: value("port").map(|p| p.parse().unwrap()),
                    inter_secs: value("inter").map_or(2.0, |v| haproxy_seconds(&v)),
                    fall: value("fall").map_or(3, |v| v.parse().unwrap()),
                });
            }
            _ => {}
        }
    }
    (binds, backends)
}

/// An HAProxy time (`2s`, `500ms`, `2000` meaning milliseconds) in seconds.
fn haproxy_seconds(v: &str) -> f64 {
    if let Some(ms) = v.strip_suffix("ms") {
        ms.parse::<f64>().unwrap() / 1000.0
    } else if let Some(s) = v.strip_suffix('s') {
        s.parse().unwrap()
    } else if let Some(m) = v.strip_suffix('m') {
        m.parse::<f64>().unwrap() * 60.0
    } else {
        v.parse::<f64>().unwrap() / 1000.0
    }
}

#[test]
fn format_readers_read_what_they_should() {
    let env = EnvFile::parse(
        "# comment line\nA=1\nB_2 = two\n# OPT=x\n# not a setting: a=b\n",
        "t",
    );
    assert_eq!(
        env.active,
        [("A".into(), "1".into()), ("B_2".into(), "two".into())]
    );
    assert_eq!(env.optional, [("OPT".to_owned(), "x".to_owned())]);
    assert_eq!(enable_optional("A=1\n# A=2\n# B=3\nC=4"), "A=2\nB=3\nC=4");
    let unit = Unit::parse("[Service]\nA=1\nA=2\n[Install]\nB=x\n", "u");
    assert_eq!(unit.all("Service", "A"), ["1", "2"]);
    assert_eq!(unit.get("Install", "B"), Some("x"));
    assert_eq!(systemd_seconds("1min 30s"), 90);
    let stages = dockerfile(
        "# syntax=x\nFROM a AS base\nUSER 1:1\nENV X=1 \\\n  Y=2\nFROM base AS t\nENV Y=3\nEXPOSE 80\n\
         HEALTHCHECK --interval=1s CMD [\"/bin/t\", \"--probe\"]\nENTRYPOINT [\"/bin/t\"]\n",
    );
    let t = &stages[1];
    assert_eq!(t.env["X"], "1");
    assert_eq!(t.env["Y"], "3");
    assert_eq!(t.user.as_deref(), Some("1:1"));
    assert_eq!(t.expose, [80]);
    assert_eq!(t.healthcheck.as_ref().unwrap(), &["/bin/t", "--probe"]);
    let (binds, backends) = haproxy(
        "frontend f\n    bind :80\nbackend b\n    option httpchk GET /r\n    \
         default-server check port 9 inter 500ms fall 4\n    server s h:8\n",
    );
    assert_eq!(binds, [80]);
    let s = &backends[0].servers[0];
    assert_eq!(
        (s.host.as_str(), s.port, s.check_port, s.fall),
        ("h", 8, Some(9), 4)
    );
    assert!((s.inter_secs - 0.5).abs() < 1e-9 && s.check);
    assert_eq!(backends[0].check_path.as_deref(), Some("/r"));
    let docs = yaml_docs("a: &x {b: 1}\nc: *x\n---\n---\nd: [1, 2.5, true]\n", "y");
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0]["c"]["b"], 1);
    assert_eq!(docs[1]["d"][1], 2.5);
}
