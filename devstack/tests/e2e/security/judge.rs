//! [`Api`], the client that judges every reply: no 5xx, refusals as problem+json,
//! no other clinic's markers or ids, restricted fields hidden from staff; failures
//! are collected so one run reports every broken cell.

use super::*;

/// A request body.
pub(super) enum Body {
    Empty,
    Json(Value),
    /// JSON text as is: what a `Value` cannot hold (a lone surrogate escape).
    Raw(String),
}

/// The API as the tests see it. Every reply is judged: never a 5xx, every error
/// problem+json, never another clinic's data. Failures are collected.
pub(super) struct Api {
    pub(super) http: Http,
    /// Strings only other clinics' data contains: markers, ids, e-mail addresses.
    pub(super) foreign: Mutex<Vec<String>>,
    pub(super) failures: Mutex<Vec<String>>,
}

impl Api {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            http: http(),
            foreign: Mutex::new(Vec::new()),
            failures: Mutex::new(Vec::new()),
        })
    }

    pub(super) fn fail(&self, message: String) {
        self.failures.lock().unwrap().push(message);
    }

    pub(super) fn check(&self, ok: bool, message: impl FnOnce() -> String) {
        if !ok {
            self.fail(message());
        }
    }

    /// Panics with every failure collected so far.
    pub(super) fn finish(&self, test: &str) {
        let failures = self.failures.lock().unwrap();
        assert!(
            failures.is_empty(),
            "{test}: {} failure(s):\n{}",
            failures.len(),
            failures.join("\n")
        );
    }

    pub(super) fn forbid(&self, markers: impl IntoIterator<Item = String>) {
        self.foreign.lock().unwrap().extend(markers);
    }

    pub(super) async fn send(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Body,
    ) -> Reply {
        self.send_with(token, method, path, &[], body).await
    }

    /// [`Api::send`] with more request headers.
    pub(super) async fn send_with(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        extra: &[(&str, &str)],
        body: Body,
    ) -> Reply {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        headers.extend_from_slice(extra);
        let bytes = match body {
            Body::Empty => None,
            Body::Json(v) => Some(Bytes::from(serde_json::to_vec(&v).unwrap())),
            Body::Raw(s) => Some(Bytes::from(s)),
        };
        let what = format!("{method} {}", short(path));
        let reply = self
            .http
            .send(method, path, &headers, bytes)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e:#}"));
        self.judge(&what, &reply);
        reply
    }

    pub(super) async fn get(&self, token: Option<&str>, path: &str) -> Reply {
        self.send(token, Method::GET, path, Body::Empty).await
    }

    pub(super) async fn post(&self, token: Option<&str>, path: &str, body: Value) -> Reply {
        self.send(token, Method::POST, path, Body::Json(body)).await
    }

    /// What every reply must be.
    pub(super) fn judge(&self, what: &str, reply: &Reply) {
        let status = reply.status.as_u16();
        self.check(status < 500, || {
            format!("{what}: server error {status}: {}", snippet(reply))
        });
        if status >= 400 {
            let p = reply.json();
            self.check(
                reply.header("content-type") == Some(common::problem::CONTENT_TYPE)
                    && p["status"] == status
                    && p["type"].is_string()
                    && p["title"].is_string(),
                || {
                    format!(
                        "{what}: {status} is not problem+json ({:?}): {}",
                        reply.header("content-type"),
                        snippet(reply)
                    )
                },
            );
        }
        let text = reply.text();
        for marker in self.foreign.lock().unwrap().iter() {
            self.check(!text.contains(marker.as_str()), || {
                format!("{what}: LEAK, the reply holds another clinic's {marker}")
            });
        }
    }

    /// Checks the restricted fields of every row in a successful reply: absent when
    /// `caller` may not see them, present otherwise. Returns the ids of the rows.
    pub(super) fn check_rows(&self, what: &str, caller: Caller, reply: &Value) -> Vec<String> {
        let mut ids = Vec::new();
        walk_rows(reply, &mut |r, row| {
            ids.push(row["id"].as_str().unwrap_or_default().to_owned());
            for field in restricted_fields(r) {
                let present = row.contains_key(field);
                self.check(present == caller.sees_restricted(), || {
                    let how = if present { "SEES" } else { "does not get" };
                    format!("{what}: {caller:?} {how} restricted `{}.{field}`", r.name)
                });
            }
        });
        ids
    }

    /// Checks that a write's answer holds the values sent (e-mails normalised).
    pub(super) fn check_echo(&self, what: &str, r: &Resource, sent: &Value, got: &Value) {
        for (name, value) in sent.as_object().into_iter().flatten() {
            let Some(field) = r.field(name) else {
                continue; // child rows: their shapes are checked by the resource tests
            };
            let expected = match field.ty {
                FieldType::Timestamp => continue, // answered with microseconds
                FieldType::Email => json!(value.as_str().unwrap().trim().to_lowercase()),
                _ => value.clone(),
            };
            self.check(got.get(name) == Some(&expected), || {
                format!(
                    "{what}: `{name}` sent {expected}, answered {:?}",
                    got.get(name)
                )
            });
        }
    }
}

pub(super) fn snippet(reply: &Reply) -> String {
    reply.text().chars().take(300).collect()
}

pub(super) fn short(s: &str) -> String {
    if s.chars().count() > 120 {
        format!("{}…", s.chars().take(120).collect::<String>())
    } else {
        s.to_owned()
    }
}

/// The resource a JSON object of a reply is a row of: one whose non-restricted
/// fields, children and `id` are all there, and no key it does not know.
pub(super) fn recognise(obj: &Map<String, Value>) -> Option<&'static Resource> {
    RESOURCES.iter().copied().find(|r| {
        let restricted = restricted_fields(r);
        obj.contains_key("id")
            && obj.keys().all(|k| {
                r.field(k).is_some()
                    || r.child(k).is_some()
                    || resource::SERVER_FIELDS.contains(&k.as_str())
            })
            && r.fields
                .iter()
                .filter(|f| !restricted.contains(&f.name))
                .all(|f| obj.contains_key(f.name))
            && r.children.iter().all(|c| obj.contains_key(c.name))
    })
}

/// Calls `visit` on every resource row anywhere in `value`.
pub(super) fn walk_rows<'a>(
    value: &'a Value,
    visit: &mut dyn FnMut(&'static Resource, &'a Map<String, Value>),
) {
    match value {
        Value::Object(obj) => {
            if let Some(r) = recognise(obj) {
                visit(r, obj);
            }
            for v in obj.values() {
                walk_rows(v, visit);
            }
        }
        Value::Array(items) => {
            for v in items {
                walk_rows(v, visit);
            }
        }
        _ => {}
    }
}

pub(super) fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap_or_default().to_owned()
}
