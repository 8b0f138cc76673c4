//! The role × endpoint matrix: every operation as admin, practitioner, staff and
//! anonymously against the table; a disabled user locked out.

use super::*;

/// One caller's pass through every operation.
pub(super) struct Pass {
    pub(super) api: Arc<Api>,
    pub(super) site: Arc<Site>,
    pub(super) deps: Arc<Deps>,
    pub(super) caller: Caller,
}

/// What a pass carries from one global operation to the next.
pub(super) struct Session {
    pub(super) refresh: Option<String>,
    pub(super) central: tokio_postgres::Client,
    /// A series the owner booked for this pass: the one it reads, changes and
    /// cancels.
    pub(super) series: String,
}

impl Pass {
    pub(super) fn token(&self) -> Option<&str> {
        self.site.token(self.caller)
    }

    pub(super) fn label(&self, op: &Op, variant: &str) -> String {
        format!("{:?} {} {} [{variant}]", self.caller, op.method, op.path)
    }

    /// Sends a request and checks its status against `rule`; the JSON body when
    /// served.
    pub(super) async fn attempt(
        &self,
        op: &Op,
        variant: &str,
        rule: Rule,
        method: Method,
        path: &str,
        body: Body,
    ) -> Option<Value> {
        self.attempt_reply(op, variant, rule, method, path, body)
            .await
            .map(|reply| reply.json())
    }

    /// [`Pass::attempt`], answering the whole reply.
    pub(super) async fn attempt_reply(
        &self,
        op: &Op,
        variant: &str,
        rule: Rule,
        method: Method,
        path: &str,
        body: Body,
    ) -> Option<Reply> {
        let reply = self.api.send(self.token(), method, path, body).await;
        self.verdict(op, variant, rule, reply)
    }

    /// Checks a reply's status against `rule`; the reply when served.
    pub(super) fn verdict(
        &self,
        op: &Op,
        variant: &str,
        rule: Rule,
        reply: Reply,
    ) -> Option<Reply> {
        let want = match rule {
            Rule::Allow => success_status(op.kind, op.resource),
            Rule::Deny => 403,
            Rule::Unauth => 401,
        };
        let got = reply.status.as_u16();
        if got != want {
            self.api.fail(format!(
                "{}: expected {want}, got {got}: {}",
                self.label(op, variant),
                snippet(&reply)
            ));
            return None;
        }
        (rule == Rule::Allow).then_some(reply)
    }

    /// The row as its clinic's owner sees it (restricted fields included).
    pub(super) async fn owner_view(&self, r: &Resource, id: &str) -> Value {
        let path = format!("/api/v1/{}/{id}", r.name);
        self.api.get(self.site.owner(), &path).await.json()
    }

    /// Books a weekly series of three (with restricted fields when `restricted`)
    /// for a practitioner of its own, so that no other booking is in the way.
    pub(super) async fn book_series(&self, token: Option<&str>, restricted: bool) -> Reply {
        let practitioners = resource::find("practitioners").unwrap();
        let appointments = resource::find("appointments").unwrap();
        let made = self
            .api
            .post(
                self.site.owner(),
                "/api/v1/practitioners",
                sample_body(practitioners, &self.deps, true),
            )
            .await;
        assert_eq!(made.status, 201, "{}", made.text());
        let mut body = sample_body(appointments, &self.deps, restricted);
        body["practitioner_id"] = json!(id_of(&made.json()));
        body["recurrence"] = json!({"frequency": "weekly", "every": 1, "count": 3});
        self.api
            .send(
                token,
                Method::POST,
                "/api/v1/appointments/series",
                Body::Json(body),
            )
            .await
    }

    pub(super) async fn run(self, ops: Arc<Vec<Op>>) {
        for r in RESOURCES {
            let mut mine: Vec<&Op> = ops
                .iter()
                .filter(|o| o.resource.is_some_and(|x| x.name == r.name))
                .collect();
            mine.sort_by_key(|o| rank(o));
            // The row the per-row operations work on: the owner's, restricted fields
            // filled, so that hiding them is observable.
            let reply = self
                .api
                .post(
                    self.site.owner(),
                    &format!("/api/v1/{}", r.name),
                    sample_body(r, &self.deps, true),
                )
                .await;
            assert_eq!(reply.status, 201, "{}: {}", r.name, reply.text());
            let target = reply.json();
            for op in mine {
                match op.kind {
                    // Credit notes are made from an issued invoice: a fresh one.
                    Kind::Action(name) if ON_ISSUED_INVOICE.contains(&name) => {
                        let token = &self.site.clinic.token;
                        let invoice =
                            issued_invoice(&self.api, token, &self.deps, &|_, s| s.to_owned())
                                .await;
                        self.resource_op(op, r, &invoice).await;
                    }
                    _ => self.resource_op(op, r, &target).await,
                }
            }
        }
        let mut global: Vec<&Op> = ops.iter().filter(|o| o.resource.is_none()).collect();
        global.sort_by_key(|o| rank(o));
        let victim = new_user(&self.api, &self.site.clinic.token, Role::Staff).await;
        let booked = self.book_series(self.site.owner(), true).await;
        assert_eq!(booked.status, 201, "series: {}", booked.text());
        let mut session = Session {
            refresh: None,
            central: central_db().await,
            series: id_of(&booked.json()),
        };
        for op in global {
            self.global_op(op, &victim, &mut session).await;
        }
    }

    /// The list requests of the matrix: all rows, a search, and each filter with the
    /// target's own value (a restricted filter is refused to callers who may not
    /// see the field).
    pub(super) fn list_variants(
        &self,
        r: &Resource,
        target: &Value,
        rule: Rule,
    ) -> Vec<(String, String, Rule)> {
        let mut out = vec![("all".to_owned(), "limit=100".to_owned(), rule)];
        if let Some(f) = r.fields.iter().find(|f| f.searchable) {
            let q = target[f.name].as_str().unwrap();
            out.push((
                "search".into(),
                format!("q={}&limit=100", url_encode(q)),
                rule,
            ));
        }
        let hidden = restricted_fields(r);
        for f in r.fields.iter().filter(|f| f.filterable || f.range) {
            let value = match &target[f.name] {
                Value::String(s) => s.clone(),
                Value::Bool(b) => b.to_string(),
                _ => continue,
            };
            let key = if f.range {
                format!("{}_from", f.name)
            } else {
                f.name.to_owned()
            };
            let rule = if hidden.contains(&f.name) && rule == A && !self.caller.sees_restricted() {
                D
            } else {
                rule
            };
            out.push((
                format!("filter {key}"),
                format!("{key}={}&limit=100", url_encode(&value)),
                rule,
            ));
        }
        out
    }

    pub(super) async fn resource_op(&self, op: &Op, r: &'static Resource, target: &Value) {
        let rule = rule(op.kind, Some(r), self.caller).unwrap();
        let id = id_of(target);
        let item = format!("/api/v1/{}/{id}", r.name);
        let collection = format!("/api/v1/{}", r.name);
        let sees = self.caller.sees_restricted();
        let hidden = restricted_fields(r);
        let db = &self.site.db;
        // Whatever is refused changes nothing.
        let before = if rule == A {
            None
        } else {
            Some(snapshot(db, r, &id).await)
        };
        // A refused row action makes no row from the target either.
        let derived = match op.kind {
            Kind::Action(_) if rule != A => Some(derived_rows(db, r, &id).await),
            _ => None,
        };
        match op.kind {
            Kind::List => {
                for (variant, query, rule) in self.list_variants(r, target, rule) {
                    let path = format!("{collection}?{query}");
                    let label = self.label(op, &variant);
                    let served = self
                        .attempt(op, &variant, rule, Method::GET, &path, Body::Empty)
                        .await;
                    if let Some(v) = served {
                        let ids = self.api.check_rows(&label, self.caller, &v);
                        self.api.check(ids.contains(&id), || {
                            format!("{label}: the target row is not listed")
                        });
                    }
                }
            }
            Kind::Create => {
                let body = sample_body(r, &self.deps, sees);
                let label = self.label(op, "create");
                let served = self
                    .attempt(
                        op,
                        "create",
                        rule,
                        Method::POST,
                        &collection,
                        Body::Json(body.clone()),
                    )
                    .await;
                match served {
                    Some(v) => {
                        self.api.check_rows(&label, self.caller, &v);
                        self.api.check_echo(&label, r, &body, &v);
                    }
                    // Other passes create rows meanwhile: look for this body's own
                    // (distinct) values.
                    None => {
                        let stored = stored_count(db, r, &body).await;
                        self.api.check(stored.unwrap_or(0) == 0, || {
                            format!("{label}: refused, yet a row was stored")
                        });
                    }
                }
                if !hidden.is_empty() && self.caller.role().is_some() && !sees {
                    let with = sample_body(r, &self.deps, true);
                    self.attempt(
                        op,
                        "with restricted fields",
                        D,
                        Method::POST,
                        &collection,
                        Body::Json(with.clone()),
                    )
                    .await;
                    // Other passes create rows meanwhile: look for this body's own
                    // (distinct) text.
                    self.api.check(stored_like(db, r, &with).await == 0, || {
                        format!("{label}: a refused create stored a row")
                    });
                }
            }
            Kind::Get | Kind::Restore | Kind::Export | Kind::Action(_) => {
                let (method, path) = match op.kind {
                    Kind::Get => (Method::GET, item.clone()),
                    Kind::Export => (Method::GET, format!("{item}/export")),
                    Kind::Restore => (Method::POST, format!("{item}/restore")),
                    Kind::Action(name) => (Method::POST, format!("{item}/{name}")),
                    _ => unreachable!(),
                };
                let label = self.label(op, "target row");
                if let Some(v) = self
                    .attempt(op, "target row", rule, method, &path, Body::Empty)
                    .await
                {
                    let ids = self.api.check_rows(&label, self.caller, &v);
                    let creates = success_status(op.kind, Some(r)) == 201;
                    self.api
                        .check(ids.contains(&id) || (creates && !ids.is_empty()), || {
                            format!("{label}: the answer holds no row")
                        });
                }
                if op.kind == Kind::Get && r.name == "documents" {
                    // The same document printed: the same rule.
                    let reply = self
                        .api
                        .send_with(
                            self.token(),
                            Method::GET,
                            &path,
                            &[("accept", "application/pdf")],
                            Body::Empty,
                        )
                        .await;
                    if let Some(reply) = self.verdict(op, "as PDF", rule, reply) {
                        self.api.check(
                            reply.header("content-type") == Some("application/pdf")
                                && reply.body.starts_with(b"%PDF-"),
                            || {
                                format!(
                                    "{}: not a PDF ({:?})",
                                    self.label(op, "as PDF"),
                                    reply.header("content-type")
                                )
                            },
                        );
                    }
                }
                if op.kind == Kind::Export {
                    // The same export as a FHIR bundle: the same rule.
                    let path = format!("{path}?format=fhir");
                    let served = self
                        .attempt_reply(op, "FHIR", rule, Method::GET, &path, Body::Empty)
                        .await;
                    if let Some(reply) = served {
                        self.api.check(reply.text().contains(&id), || {
                            format!("{}: the bundle lacks the row", self.label(op, "FHIR"))
                        });
                    }
                }
            }
            Kind::Put | Kind::Patch => self.write(op, r, rule, &id).await,
            Kind::Delete => {
                let served = self
                    .attempt(op, "target row", rule, Method::DELETE, &item, Body::Empty)
                    .await;
                if served.is_some() {
                    let gone = self.api.get(self.site.owner(), &item).await;
                    self.api.check(gone.status == 404, || {
                        format!("{}: still readable", self.label(op, "delete"))
                    });
                }
            }
            _ => unreachable!("{op:?} is not a resource operation"),
        }
        if let Some(before) = before {
            self.api.check(snapshot(db, r, &id).await == before, || {
                format!(
                    "{}: refused, yet the row changed",
                    self.label(op, "target row")
                )
            });
        }
        if let Some(derived) = derived {
            self.api
                .check(derived_rows(db, r, &id).await == derived, || {
                    format!(
                        "{}: refused, yet a row was made from it",
                        self.label(op, "target row")
                    )
                });
        }
    }

    /// PUT or PATCH: a caller's own fields are written; restricted fields are written
    /// by those who see them, refused to the others and never cleared by them.
    pub(super) async fn write(&self, op: &Op, r: &'static Resource, rule: Rule, id: &str) {
        let method = Method::from_bytes(op.method.as_bytes()).unwrap();
        let item = format!("/api/v1/{}/{id}", r.name);
        let sees = self.caller.sees_restricted();
        let hidden = restricted_fields(r);
        let guarded = !hidden.is_empty() && self.caller.role().is_some() && !sees;
        let label = self.label(op, "own fields");
        let owner_before = self.owner_view(r, id).await;
        // A frozen row takes a write that changes nothing (and only that).
        let body = if frozen(r) {
            own_values(r, &owner_before)
        } else {
            sample_body(r, &self.deps, sees)
        };
        if frozen(r) && rule == A {
            let before = snapshot(&self.site.db, r, id).await;
            let change = sample_body(r, &self.deps, sees);
            let variant = "changing a frozen row";
            let reply = self
                .api
                .send(self.token(), method.clone(), &item, Body::Json(change))
                .await;
            self.api.check(reply.status == 409, || {
                format!("{}: {}", self.label(op, variant), snippet(&reply))
            });
            self.api
                .check(snapshot(&self.site.db, r, id).await == before, || {
                    format!("{}: the row changed", self.label(op, variant))
                });
        }
        let served = self
            .attempt(
                op,
                "own fields",
                rule,
                method.clone(),
                &item,
                Body::Json(body.clone()),
            )
            .await;
        if let Some(v) = served {
            self.api.check_rows(&label, self.caller, &v);
            self.api.check_echo(&label, r, &body, &v);
        }
        if !guarded {
            return;
        }
        let unchanged = |after: &Value, what: &str| {
            for f in &hidden {
                self.api.check(after[*f] == owner_before[*f], || {
                    format!(
                        "{}: {:?} changed `{}.{f}`",
                        self.label(op, what),
                        self.caller,
                        r.name
                    )
                });
            }
        };
        unchanged(&self.owner_view(r, id).await, "own fields");
        for f in &hidden {
            // Setting it: refused, nothing changes.
            let before = snapshot(&self.site.db, r, id).await;
            let mut with = if method == Method::PATCH {
                json!({})
            } else {
                sample_body(r, &self.deps, false)
            };
            with[*f] = json!(format!("set by staff {}", next_seq()));
            let variant = format!("setting `{f}`");
            self.attempt(
                op,
                &variant,
                D,
                method.clone(),
                &item,
                Body::Json(with.clone()),
            )
            .await;
            self.api
                .check(snapshot(&self.site.db, r, id).await == before, || {
                    format!("{}: refused, yet the row changed", self.label(op, &variant))
                });
            // Clearing it: refused or ignored, never applied.
            with[*f] = Value::Null;
            let variant = format!("clearing `{f}`");
            let reply = self
                .api
                .send(self.token(), method.clone(), &item, Body::Json(with))
                .await;
            self.api
                .check(matches!(reply.status.as_u16(), 200 | 403), || {
                    format!("{}: {}", self.label(op, &variant), snippet(&reply))
                });
            if reply.status == 200 {
                self.api.check_rows(&variant, self.caller, &reply.json());
            }
            unchanged(&self.owner_view(r, id).await, &variant);
        }
    }

    pub(super) async fn global_op(&self, op: &Op, victim: &Account, session: &mut Session) {
        let rule = rule(op.kind, None, self.caller).unwrap();
        let api = &self.api;
        let central = &session.central;
        let victim_disabled = || async {
            let id: Uuid = victim.id.parse().unwrap();
            central
                .query_one(
                    "SELECT disabled_at IS NOT NULL FROM users WHERE id = $1",
                    &[&id],
                )
                .await
                .unwrap()
                .get::<_, bool>(0)
        };
        // The anonymous column logs in with the owner's account.
        let (email, password) = match self.site.users.get(&self.caller) {
            Some(u) => (u.email.clone(), u.password.clone()),
            None => (
                self.site.clinic.email.clone(),
                self.site.clinic.password.clone(),
            ),
        };
        let label = self.label(op, "");
        match op.kind {
            Kind::ListUsers => {
                if let Some(v) = self
                    .attempt(op, "", rule, Method::GET, "/api/v1/users", Body::Empty)
                    .await
                {
                    let users = v["data"].as_array().cloned().unwrap_or_default();
                    for u in self.site.users.values() {
                        api.check(users.iter().any(|x| x["id"] == u.id.as_str()), || {
                            format!("{label}: {} not listed", u.email)
                        });
                    }
                    let allowed = ["id", "email", "role", "disabled", "created_at"];
                    api.check(
                        users.iter().all(|u| {
                            u.as_object()
                                .is_some_and(|o| o.keys().all(|k| allowed.contains(&k.as_str())))
                        }),
                        || format!("{label}: unexpected user fields: {v}"),
                    );
                }
            }
            Kind::CreateUser => {
                let email = format!("{}@clinic.example", unique("new"));
                let body = json!({"email": email, "password": PASSWORD, "role": "staff"});
                let served = self
                    .attempt(
                        op,
                        "",
                        rule,
                        Method::POST,
                        "/api/v1/users",
                        Body::Json(body),
                    )
                    .await;
                if let Some(v) = &served {
                    api.check(v["email"] == email.as_str() && v["role"] == "staff", || {
                        format!("{label}: {v}")
                    });
                }
                let stored: i64 = central
                    .query_one("SELECT count(*) FROM users WHERE email = $1", &[&email])
                    .await
                    .unwrap()
                    .get(0);
                api.check(stored == i64::from(served.is_some()), || {
                    format!("{label}: {stored} users stored")
                });
            }
            Kind::DisableUser | Kind::EnableUser => {
                let disable = op.kind == Kind::DisableUser;
                if !disable {
                    let path = format!("/api/v1/users/{}/disable", victim.id);
                    let r = api.post(self.site.owner(), &path, json!({})).await;
                    assert_eq!(r.status, 200, "{}", r.text());
                }
                let action = if disable { "disable" } else { "enable" };
                let path = format!("/api/v1/users/{}/{action}", victim.id);
                let served = self
                    .attempt(op, "", rule, Method::POST, &path, Body::Empty)
                    .await;
                if let Some(v) = &served {
                    api.check(v["disabled"] == disable, || format!("{label}: {v}"));
                }
                // Served: the state the caller asked for; refused: as it was.
                let expected = if served.is_some() { disable } else { !disable };
                api.check(victim_disabled().await == expected, || {
                    format!("{label}: the user's state is wrong afterwards")
                });
                if !disable {
                    let path = format!("/api/v1/users/{}/enable", victim.id);
                    api.post(self.site.owner(), &path, json!({})).await;
                }
            }
            Kind::ExportClinic => {
                let served = self
                    .attempt_reply(op, "", rule, Method::GET, "/api/v1/export", Body::Empty)
                    .await;
                if let Some(reply) = served {
                    let mut rows = 0;
                    for line in reply.text().lines().filter(|l| !l.trim().is_empty()) {
                        let record: Value = serde_json::from_str(line).unwrap_or_default();
                        rows += api.check_rows(&label, self.caller, &record["data"]).len();
                    }
                    api.check(rows > 0, || format!("{label}: no rows exported"));
                }
            }
            Kind::ImportPatients => {
                let external = unique("matrix-import");
                let csv =
                    format!("external_id,first_name,last_name\n{external},Imported,Patient\n");
                let reply = api
                    .send_with(
                        self.token(),
                        Method::POST,
                        "/api/v1/patients/import",
                        &[("content-type", "text/csv")],
                        Body::Raw(csv),
                    )
                    .await;
                let served = self.verdict(op, "", rule, reply).map(|r| r.json());
                if let Some(v) = &served {
                    api.check(v["imported"] == 1, || format!("{label}: {v}"));
                }
                let path = format!("/api/v1/patients?external_id={external}");
                let listed = api.get(self.site.owner(), &path).await.json();
                let stored = listed["data"].as_array().map_or(0, Vec::len);
                api.check(stored == usize::from(served.is_some()), || {
                    format!("{label}: {stored} patients stored")
                });
            }
            Kind::UploadAttachment => {
                let patient = &self.deps["patients"];
                let marker = unique("matrix file");
                let reply = upload_pdf(api, self.token(), patient, &marker).await;
                let served = self.verdict(op, "", rule, reply).map(|r| r.json());
                if let Some(v) = &served {
                    api.check(
                        v["content_type"] == "application/pdf"
                            && v["patient_id"] == patient.as_str()
                            && v["filename"] == "signed.pdf",
                        || format!("{label}: {v}"),
                    );
                }
                let stored: i64 = self
                    .site
                    .db
                    .query_one(
                        "SELECT count(*) FROM attachments WHERE sha256 = encode(sha256(convert_to($1, 'UTF8')), 'hex')",
                        &[&sample_pdf(&marker)],
                    )
                    .await
                    .unwrap()
                    .get(0);
                api.check(stored == i64::from(served.is_some()), || {
                    format!("{label}: {stored} files stored")
                });
            }
            Kind::ListAttachments => {
                let path = format!("/api/v1/patients/{}/attachments", self.deps["patients"]);
                if let Some(v) = self
                    .attempt(op, "", rule, Method::GET, &path, Body::Empty)
                    .await
                {
                    let listed = v["data"].as_array().cloned().unwrap_or_default();
                    api.check(
                        listed
                            .iter()
                            .any(|a| a["id"] == self.deps["attachments"].as_str()),
                        || format!("{label}: the seeded file is not listed: {v}"),
                    );
                }
            }
            Kind::DownloadAttachment => {
                let path = format!("/api/v1/attachments/{}", self.deps["attachments"]);
                if let Some(reply) = self
                    .attempt_reply(op, "", rule, Method::GET, &path, Body::Empty)
                    .await
                {
                    api.check(
                        reply.body.starts_with(b"%PDF-")
                            && reply.header("content-type") == Some("application/pdf")
                            && reply.header("x-content-type-options") == Some("nosniff"),
                        || format!("{label}: not the file: {}", snippet(&reply)),
                    );
                }
            }
            Kind::DeleteAttachment => {
                let patient = &self.deps["patients"];
                let made = upload_pdf(api, self.site.owner(), patient, &unique("doomed")).await;
                assert_eq!(made.status, 201, "{}", made.text());
                let path = format!("/api/v1/attachments/{}", id_of(&made.json()));
                let served = self
                    .attempt_reply(op, "", rule, Method::DELETE, &path, Body::Empty)
                    .await;
                let after = api.get(self.site.owner(), &path).await.status.as_u16();
                let expected = if served.is_some() { 404 } else { 200 };
                api.check(after == expected, || {
                    format!("{label}: the file answers {after} afterwards")
                });
            }
            Kind::ListApiClients => {
                if let Some(v) = self
                    .attempt(
                        op,
                        "",
                        rule,
                        Method::GET,
                        "/api/v1/api-clients",
                        Body::Empty,
                    )
                    .await
                {
                    api.check(
                        v["data"]
                            .as_array()
                            .is_some_and(|d| d.iter().all(|c| c.get("client_secret").is_none())),
                        || format!("{label}: {v}"),
                    );
                }
            }
            Kind::ListWebhooks | Kind::WebhookEvents => {
                let path = if op.kind == Kind::ListWebhooks {
                    "/api/v1/webhook-subscriptions"
                } else {
                    "/api/v1/webhook-events"
                };
                if let Some(v) = self
                    .attempt(op, "", rule, Method::GET, path, Body::Empty)
                    .await
                {
                    api.check(
                        v["data"]
                            .as_array()
                            .is_some_and(|d| d.iter().all(|h| h.get("secret").is_none())),
                        || format!("{label}: {v}"),
                    );
                }
            }
            Kind::CreateWebhook => {
                let description = unique("matrix hook");
                let body = json!({"url": "https://hooks.example.org/matrix", "event_types": ["invoice.paid"], "description": description});
                let path = "/api/v1/webhook-subscriptions";
                let served = self
                    .attempt(op, "", rule, Method::POST, path, Body::Json(body))
                    .await;
                if let Some(v) = &served {
                    api.check(v["secret"].is_string(), || format!("{label}: {v}"));
                }
                let listed = api.get(self.site.owner(), path).await.json();
                let stored = listed["data"].as_array().map_or(0, |d| {
                    d.iter()
                        .filter(|h| h["description"] == description.as_str())
                        .count()
                });
                api.check(stored == usize::from(served.is_some()), || {
                    format!("{label}: {stored} subscriptions stored")
                });
            }
            Kind::GetWebhook
            | Kind::ChangeWebhook
            | Kind::DeleteWebhook
            | Kind::ReplayWebhook
            | Kind::WebhookDeliveries => {
                // A subscription of the owner's, to an event the pass never causes.
                let body = json!({"url": "https://hooks.example.org/matrix", "event_types": ["invoice.paid"]});
                let made = api
                    .post(self.site.owner(), "/api/v1/webhook-subscriptions", body)
                    .await;
                assert_eq!(made.status, 201, "{label}: {}", made.text());
                let id = made.json()["id"].as_str().unwrap_or_default().to_owned();
                let one = format!("/api/v1/webhook-subscriptions/{id}");
                let (method, path, body) = match op.kind {
                    Kind::GetWebhook => (Method::GET, one.clone(), Body::Empty),
                    Kind::ChangeWebhook => (
                        Method::PATCH,
                        one.clone(),
                        Body::Json(json!({"description": "changed by the matrix"})),
                    ),
                    Kind::DeleteWebhook => (Method::DELETE, one.clone(), Body::Empty),
                    Kind::ReplayWebhook => (
                        Method::POST,
                        format!("{one}/replay"),
                        Body::Json(json!({"after": 0})),
                    ),
                    _ => (Method::GET, format!("{one}/deliveries"), Body::Empty),
                };
                let served = self
                    .attempt_reply(op, "", rule, method, &path, body)
                    .await
                    .is_some();
                let after = api.get(self.site.owner(), &one).await;
                match op.kind {
                    Kind::ChangeWebhook => {
                        let changed = after.json()["description"] == "changed by the matrix";
                        api.check(changed == served, || format!("{label}: changed {changed}"));
                    }
                    Kind::DeleteWebhook => {
                        let gone = after.status == 404;
                        api.check(gone == served, || format!("{label}: deleted {gone}"));
                    }
                    _ => {}
                }
                if after.status == 200 {
                    api.send(self.site.owner(), Method::DELETE, &one, Body::Empty)
                        .await;
                }
            }
            Kind::CreateApiClient => {
                let name = unique("matrix client");
                let body = json!({"name": name, "role": "staff"});
                let path = "/api/v1/api-clients";
                let served = self
                    .attempt(op, "", rule, Method::POST, path, Body::Json(body))
                    .await;
                if let Some(v) = &served {
                    api.check(v["client_secret"].is_string(), || format!("{label}: {v}"));
                }
                let stored: i64 = central
                    .query_one("SELECT count(*) FROM api_clients WHERE name = $1", &[&name])
                    .await
                    .unwrap()
                    .get(0);
                api.check(stored == i64::from(served.is_some()), || {
                    format!("{label}: {stored} API clients stored")
                });
            }
            Kind::RevokeApiClient => {
                let body = json!({"name": unique("matrix client"), "role": "staff"});
                let made = api
                    .post(self.site.owner(), "/api/v1/api-clients", body)
                    .await;
                assert_eq!(made.status, 201, "{label}: {}", made.text());
                let id = made.json()["id"].as_str().unwrap_or_default().to_owned();
                let path = format!("/api/v1/api-clients/{id}/revoke");
                let served = self
                    .attempt(op, "", rule, Method::POST, &path, Body::Empty)
                    .await;
                let uuid: Uuid = id.parse().unwrap();
                let revoked: bool = central
                    .query_one(
                        "SELECT revoked_at IS NOT NULL FROM api_clients WHERE id = $1",
                        &[&uuid],
                    )
                    .await
                    .unwrap()
                    .get(0);
                api.check(revoked == served.is_some(), || {
                    format!("{label}: revoked {revoked} afterwards")
                });
            }
            Kind::ClientToken => {
                // The client's own credentials authenticate it, whoever else asks.
                let body = json!({"name": unique("matrix client"), "role": "staff"});
                let made = api
                    .post(self.site.owner(), "/api/v1/api-clients", body)
                    .await;
                assert_eq!(made.status, 201, "{label}: {}", made.text());
                let made = made.json();
                let form = format!(
                    "grant_type=client_credentials&client_id={}&client_secret={}",
                    made["client_id"].as_str().unwrap_or_default(),
                    made["client_secret"].as_str().unwrap_or_default()
                );
                let reply = api
                    .send_with(
                        self.token(),
                        Method::POST,
                        "/api/v1/oauth/token",
                        &[("content-type", "application/x-www-form-urlencoded")],
                        Body::Raw(form),
                    )
                    .await;
                if let Some(v) = self.verdict(op, "", rule, reply).map(|r| r.json()) {
                    api.check(v["access_token"].is_string(), || format!("{label}: {v}"));
                }
            }
            Kind::AuditLogs => {
                let path = "/api/v1/audit-logs?limit=5";
                if let Some(v) = self
                    .attempt(op, "", rule, Method::GET, path, Body::Empty)
                    .await
                {
                    api.check(v["data"].is_array(), || format!("{label}: {v}"));
                }
            }
            Kind::Login => {
                let body = json!({"email": email, "password": password});
                if let Some(v) = self
                    .attempt(
                        op,
                        "",
                        rule,
                        Method::POST,
                        "/api/v1/auth/login",
                        Body::Json(body),
                    )
                    .await
                {
                    session.refresh = v["refresh_token"].as_str().map(str::to_owned);
                }
            }
            Kind::Refresh => {
                let body = json!({"refresh_token": session.refresh.clone().unwrap_or_default()});
                if let Some(v) = self
                    .attempt(
                        op,
                        "",
                        rule,
                        Method::POST,
                        "/api/v1/auth/refresh",
                        Body::Json(body),
                    )
                    .await
                {
                    session.refresh = v["refresh_token"].as_str().map(str::to_owned);
                }
            }
            Kind::Logout => {
                let token = session.refresh.clone().unwrap_or_default();
                let body = json!({"refresh_token": token});
                let served = self
                    .attempt(
                        op,
                        "",
                        rule,
                        Method::POST,
                        "/api/v1/auth/logout",
                        Body::Json(body.clone()),
                    )
                    .await;
                if served.is_some() {
                    let again = api.post(None, "/api/v1/auth/refresh", body).await;
                    api.check(again.status == 401, || {
                        format!("{label}: refresh after logout: {}", again.status)
                    });
                }
            }
            Kind::Register => {
                let body = json!({
                    "clinic_name": unique("Matrix clinic"),
                    "email": format!("{}@clinic.example", unique("owner")),
                    "password": PASSWORD,
                });
                self.attempt(
                    op,
                    "",
                    rule,
                    Method::POST,
                    "/api/v1/auth/register",
                    Body::Json(body),
                )
                .await;
            }
            Kind::OpenApi => {
                if let Some(v) = self
                    .attempt(
                        op,
                        "",
                        rule,
                        Method::GET,
                        "/api/v1/openapi.json",
                        Body::Empty,
                    )
                    .await
                {
                    api.check(v["openapi"].is_string(), || format!("{label}: no document"));
                }
            }
            Kind::Jwks => {
                if let Some(v) = self
                    .attempt(
                        op,
                        "",
                        rule,
                        Method::GET,
                        "/.well-known/jwks.json",
                        Body::Empty,
                    )
                    .await
                {
                    api.check(v["keys"].as_array().is_some_and(|k| !k.is_empty()), || {
                        format!("{label}: no keys")
                    });
                }
            }
            Kind::ChangeUserRole | Kind::SignOutUser => {
                let id: Uuid = victim.id.parse().unwrap();
                let state = || async {
                    let row = central
                        .query_one(
                            "SELECT role, token_version FROM users WHERE id = $1",
                            &[&id],
                        )
                        .await
                        .unwrap();
                    (row.get::<_, String>(0), row.get::<_, i64>(1))
                };
                let before = state().await;
                let (method, path, body) = if op.kind == Kind::ChangeUserRole {
                    (
                        Method::PATCH,
                        format!("/api/v1/users/{}", victim.id),
                        Body::Json(json!({"role": "practitioner"})),
                    )
                } else {
                    (
                        Method::POST,
                        format!("/api/v1/users/{}/sign-out", victim.id),
                        Body::Empty,
                    )
                };
                let served = self.attempt(op, "", rule, method, &path, body).await;
                let after = state().await;
                match served {
                    Some(v) => {
                        api.check(after.1 > before.1, || {
                            format!("{label}: the user's tokens were not revoked")
                        });
                        if op.kind == Kind::ChangeUserRole {
                            api.check(
                                v["role"] == "practitioner" && after.0 == "practitioner",
                                || format!("{label}: {v}"),
                            );
                            let back = format!("/api/v1/users/{}", victim.id);
                            let r = api
                                .send(
                                    self.site.owner(),
                                    Method::PATCH,
                                    &back,
                                    Body::Json(json!({"role": "staff"})),
                                )
                                .await;
                            assert_eq!(r.status, 200, "{}", r.text());
                        }
                    }
                    None => api.check(after == before, || {
                        format!("{label}: refused, yet the user changed: {before:?} → {after:?}")
                    }),
                }
            }
            Kind::Settings => {
                let path = "/api/v1/clinic";
                if let Some(v) = self
                    .attempt(op, "", rule, Method::GET, path, Body::Empty)
                    .await
                {
                    api.check(v["name"].is_string() && v["time_zone"].is_string(), || {
                        format!("{label}: {v}")
                    });
                }
            }
            Kind::ChangeSettings => {
                let name = unique("Matrix settings");
                // The clock and money the other passes' documents rely on stay.
                let body = json!({"name": name, "address": "1 Matrix Way", "time_zone": "UTC", "currency": "EUR"});
                let path = "/api/v1/clinic";
                let served = self
                    .attempt(op, "", rule, Method::PUT, path, Body::Json(body))
                    .await;
                let stored: String = self
                    .site
                    .db
                    .query_one("SELECT name FROM clinic_settings", &[])
                    .await
                    .unwrap()
                    .get(0);
                match served {
                    Some(v) => api.check(v["name"] == name.as_str() && stored == name, || {
                        format!("{label}: {v}, stored {stored:?}")
                    }),
                    None => api.check(stored != name, || {
                        format!("{label}: refused, yet the settings changed")
                    }),
                }
            }
            Kind::Availability => {
                // A week holds a Monday, the day of the seeded working hours.
                let path = format!(
                    "/api/v1/availability?practitioner_id={}&appointment_type_id={}&from=2045-01-02&to=2045-01-09",
                    self.deps["practitioners"], self.deps["appointment_types"]
                );
                if let Some(v) = self
                    .attempt(op, "", rule, Method::GET, &path, Body::Empty)
                    .await
                {
                    api.check(
                        v["data"].as_array().is_some_and(|d| !d.is_empty())
                            && v["time_zone"].is_string(),
                        || format!("{label}: no free slots: {}", short(&v.to_string())),
                    );
                }
            }
            Kind::BookSeries => {
                let reply = self
                    .book_series(self.token(), self.caller.sees_restricted())
                    .await;
                if let Some(reply) = self.verdict(op, "", rule, reply) {
                    let v = reply.json();
                    let ids = api.check_rows(&label, self.caller, &v);
                    api.check(ids.len() == 3, || {
                        format!("{label}: {} occurrences booked", ids.len())
                    });
                }
            }
            Kind::GetSeries | Kind::ChangeSeries | Kind::CancelSeries => {
                let item = format!("/api/v1/appointment-series/{}", session.series);
                let (method, path, body) = match op.kind {
                    Kind::GetSeries => (Method::GET, item, Body::Empty),
                    Kind::ChangeSeries => (
                        Method::PATCH,
                        item,
                        Body::Json(json!({"from_index": 1, "shift_minutes": 15})),
                    ),
                    _ => (
                        Method::POST,
                        format!("{item}/cancel"),
                        Body::Json(json!({"from_index": 2})),
                    ),
                };
                let before = series_snapshot(&self.site.db, &session.series).await;
                let served = self.attempt(op, "", rule, method, &path, body).await;
                let after = series_snapshot(&self.site.db, &session.series).await;
                match served {
                    Some(v) => {
                        // Its occurrences, as rows or in short: restricted fields
                        // only for those who see them.
                        api.check_rows(&label, self.caller, &v);
                        let occurrences = v["appointments"].as_array().cloned().unwrap_or_default();
                        api.check(
                            v["id"] == session.series.as_str() && occurrences.len() == 3,
                            || format!("{label}: {}", short(&v.to_string())),
                        );
                        for field in restricted_fields(resource::find("appointments").unwrap()) {
                            api.check(
                                self.caller.sees_restricted()
                                    || occurrences.iter().all(|o| o.get(field).is_none()),
                                || format!("{label}: {:?} SEES restricted `{field}`", self.caller),
                            );
                        }
                        let changed = op.kind != Kind::GetSeries;
                        api.check((after != before) == changed, || {
                            format!("{label}: changed {}, expected {changed}", after != before)
                        });
                        if op.kind == Kind::CancelSeries {
                            let statuses: Vec<&str> = v["appointments"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(|o| o["status"].as_str())
                                .collect();
                            api.check(statuses.get(2) == Some(&"cancelled"), || {
                                format!("{label}: {statuses:?}")
                            });
                        }
                    }
                    None => api.check(after == before, || {
                        format!("{label}: refused, yet the series changed")
                    }),
                }
            }
            Kind::InvoicePayments => {
                let path = format!(
                    "/api/v1/documents/{}/payments?limit=100",
                    self.deps[ISSUED_INVOICE]
                );
                if let Some(v) = self
                    .attempt(op, "", rule, Method::GET, &path, Body::Empty)
                    .await
                {
                    let ids = api.check_rows(&label, self.caller, &v);
                    api.check(ids.contains(&self.deps["payments"]), || {
                        format!("{label}: the seeded payment is not listed")
                    });
                }
            }
            Kind::RecordPayment => {
                let payments = resource::find("payments").unwrap();
                let invoice = &self.deps[ISSUED_INVOICE];
                let path = format!("/api/v1/documents/{invoice}/payments");
                let body = json!({"amount_cents": 1, "method": "card", "paid_on": "2040-01-01",
                    "reference": unique("matrix payment")});
                let served = self
                    .attempt(op, "", rule, Method::POST, &path, Body::Json(body.clone()))
                    .await;
                match served {
                    Some(v) => {
                        api.check_rows(&label, self.caller, &v);
                        api.check_echo(&label, payments, &body, &v);
                        api.check(v["document_id"] == invoice.as_str(), || {
                            format!("{label}: {v}")
                        });
                    }
                    None => api.check(
                        stored_like(&self.site.db, payments, &body).await == 0,
                        || format!("{label}: refused, yet a payment was stored"),
                    ),
                }
            }
            Kind::ClinicSecurity | Kind::ChangeClinicSecurity => {
                // The policy stays off: the other passes sign in with passwords.
                let (method, body) = if op.kind == Kind::ClinicSecurity {
                    (Method::GET, Body::Empty)
                } else {
                    (Method::PATCH, Body::Json(json!({"mfa_required": false})))
                };
                let path = "/api/v1/clinic-security";
                if let Some(v) = self.attempt(op, "", rule, method, path, body).await {
                    api.check(v == json!({"mfa_required": false}), || {
                        format!("{label}: {v}")
                    });
                }
            }
            Kind::EnrollMfa => {
                let path = "/api/v1/auth/mfa/enroll";
                if let Some(v) = self
                    .attempt(op, "", rule, Method::POST, path, Body::Empty)
                    .await
                {
                    api.check(
                        v["secret"].is_string() && v["otpauth_uri"].is_string(),
                        || format!("{label}: {v}"),
                    );
                }
            }
            Kind::ConfirmMfa => {
                // Enrolled with the caller's own token, confirmed with a real code,
                // then switched off again with the next one.
                let mut code = "000000".to_owned();
                let mut secret = None;
                if let Some(token) = self.token() {
                    let r = api
                        .send(
                            Some(token),
                            Method::POST,
                            "/api/v1/auth/mfa/enroll",
                            Body::Empty,
                        )
                        .await;
                    assert_eq!(r.status, 200, "{label}: enrol: {}", r.text());
                    let s = r.json()["secret"].as_str().unwrap().to_owned();
                    code = totp_code(&s, 0);
                    secret = Some(s);
                }
                let path = "/api/v1/auth/mfa/confirm";
                let body = Body::Json(json!({"code": code}));
                if let Some(v) = self.attempt(op, "", rule, Method::POST, path, body).await {
                    api.check(
                        v["recovery_codes"]
                            .as_array()
                            .is_some_and(|c| c.len() == 10),
                        || format!("{label}: {v}"),
                    );
                }
                if let (Some(token), Some(secret)) = (self.token(), secret) {
                    let off = json!({"code": totp_code(&secret, 1)});
                    let r = api
                        .send(
                            Some(token),
                            Method::POST,
                            "/api/v1/auth/mfa/disable",
                            Body::Json(off),
                        )
                        .await;
                    assert!(
                        r.status == 204 || rule != Rule::Allow,
                        "{label}: switch off: {}",
                        r.text()
                    );
                }
            }
            Kind::VerifyMfa => {
                let body = json!({"mfa_token": "from-nowhere", "code": "000000"});
                let path = "/api/v1/auth/mfa/verify";
                self.attempt(op, "", rule, Method::POST, path, Body::Json(body))
                    .await;
            }
            Kind::DisableMfa => {
                // Switched on with the caller's own token first, then off with a
                // fresh code.
                let mut code = "000000".to_owned();
                if let Some(token) = self.token() {
                    let r = api
                        .send(
                            Some(token),
                            Method::POST,
                            "/api/v1/auth/mfa/enroll",
                            Body::Empty,
                        )
                        .await;
                    assert_eq!(r.status, 200, "{label}: enrol: {}", r.text());
                    let secret = r.json()["secret"].as_str().unwrap().to_owned();
                    let on = json!({"code": totp_code(&secret, 0)});
                    let r = api
                        .send(
                            Some(token),
                            Method::POST,
                            "/api/v1/auth/mfa/confirm",
                            Body::Json(on),
                        )
                        .await;
                    assert_eq!(r.status, 200, "{label}: confirm: {}", r.text());
                    code = totp_code(&secret, 1);
                }
                let body = Body::Json(json!({"code": code}));
                let path = "/api/v1/auth/mfa/disable";
                self.attempt_reply(op, "", rule, Method::POST, path, body)
                    .await;
            }
            Kind::ResetUserMfa => {
                let path = format!("/api/v1/users/{}/mfa/reset", victim.id);
                self.attempt_reply(op, "", rule, Method::POST, &path, Body::Empty)
                    .await;
            }
            Kind::RequestPasswordReset => {
                let body = json!({"email": email});
                let path = "/api/v1/auth/password-reset";
                if let Some(v) = self
                    .attempt(op, "", rule, Method::POST, path, Body::Json(body))
                    .await
                {
                    api.check(v["status"] == "accepted", || format!("{label}: {v}"));
                }
            }
            Kind::ConfirmPasswordReset => {
                // A link's token planted for a user of its own (confirming ends
                // every session of the account it names).
                let owner = new_user(api, &self.site.clinic.token, Role::Staff).await;
                let token = unique("reset-token");
                let id: Uuid = owner.id.parse().unwrap();
                central
                    .execute(
                        "INSERT INTO password_resets (token_hash, user_id, expires_at) \
                         VALUES (sha256(convert_to($1, 'UTF8')), $2, now() + interval '30 minutes')",
                        &[&token, &id],
                    )
                    .await
                    .unwrap();
                let body = json!({"token": token, "new_password": PASSWORD});
                let path = "/api/v1/auth/password-reset/confirm";
                self.attempt_reply(op, "", rule, Method::POST, path, Body::Json(body))
                    .await;
            }
            Kind::ChangePassword => {
                // The same password again: the pass's last operation, since every
                // session of the caller ends with it.
                let body = json!({"current_password": password, "new_password": password});
                let path = "/api/v1/auth/password";
                if let Some(v) = self
                    .attempt(op, "", rule, Method::POST, path, Body::Json(body))
                    .await
                {
                    api.check(v["access_token"].is_string(), || format!("{label}: {v}"));
                }
            }
            _ => unreachable!("{op:?} is a resource operation"),
        }
    }
}

#[tokio::test]
pub(super) async fn every_role_on_every_endpoint() {
    let _turn = turn();
    let api = Api::new();
    plant_foreign(&api, "eu-central").await;
    let site = Arc::new(Site::open(&api, Some("eu-west")).await);
    let doc = api.get(None, "/api/v1/openapi.json").await.json();
    let ops = Arc::new(operations(&doc));
    let deps = Arc::new(seed(&api, &site.clinic.token, &|_, s| s.to_owned()).await);
    let mut passes = JoinSet::new();
    for caller in CALLERS {
        let pass = Pass {
            api: api.clone(),
            site: site.clone(),
            deps: deps.clone(),
            caller,
        };
        passes.spawn(pass.run(ops.clone()));
    }
    while let Some(done) = passes.join_next().await {
        done.unwrap();
    }
    api.finish("role × endpoint matrix");
}

/// A disabled user can no longer log in or refresh, its refresh tokens are revoked
/// at once, and every access token it holds stops working within a second, on the
/// gateway and on the worker (a stale or forged twin of it too).
#[tokio::test]
pub(super) async fn a_disabled_user_is_locked_out() {
    let _turn = turn();
    let api = Api::new();
    let owner = register(&api.http, None).await;
    let user = new_user(&api, &owner.token, Role::Staff).await;
    let tokens = login(&api, &user.email, &user.password).await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].clone();
    let ok = api.get(Some(&access), "/api/v1/patients").await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    // The token carries the lifetime the login announced, at most JWT_EXPIRE (the
    // stack runs with the default, 900 s).
    let payload = access.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert_eq!(json!(lifetime), tokens["expires_in"]);
    assert!((1..=900).contains(&lifetime), "lifetime {lifetime}");

    let path = format!("/api/v1/users/{}/disable", user.id);
    let disabled = api.post(Some(&owner.token), &path, json!({})).await;
    assert_eq!(disabled.status, 200, "{}", disabled.text());
    assert_eq!(disabled.json()["disabled"], true);
    let at = std::time::Instant::now();

    // Within a second the token in hand is refused.
    loop {
        let r = api.get(Some(&access), "/api/v1/patients").await;
        if r.status == 401 {
            break;
        }
        assert!(
            at.elapsed() < std::time::Duration::from_secs(1),
            "the disabled user's token still answers {} after {:?}",
            r.status,
            at.elapsed()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // No login, no refresh, every refresh token revoked.
    let again = json!({"email": user.email, "password": user.password});
    let refused = api.post(None, "/api/v1/auth/login", again).await;
    assert_eq!(refused.status, 401, "{}", refused.text());
    let refused = api
        .post(
            None,
            "/api/v1/auth/refresh",
            json!({"refresh_token": refresh}),
        )
        .await;
    assert_eq!(refused.status, 401, "{}", refused.text());
    let user_id: Uuid = user.id.parse().unwrap();
    let live: i64 = central_db()
        .await
        .query_one(
            "SELECT count(*) FROM refresh_tokens WHERE user_id = $1 AND revoked_at IS NULL",
            &[&user_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(live, 0, "refresh tokens left unrevoked");

    // A fresh twin of the token (same user and version, signed by a gateway's own
    // key) is refused as well, and so is the token sent to the worker directly
    // with a valid gateway signature: workers revoke on their own.
    let signer = stack().tokens().unwrap();
    let now = common::token::now_secs();
    let mut twin: common::token::Claims = serde_json::from_value(claims.clone()).unwrap();
    twin.iat = now;
    twin.exp = now + 60;
    let twin = signer.sign(&twin).unwrap();
    assert_eq!(api.get(Some(&twin), "/api/v1/patients").await.status, 401);
    let worker = signed_worker_get(&owner, &access, "/api/v1/patients").await;
    assert_eq!(worker.status, 401, "{}", worker.text());
    // The refusals are on the clinic's trail.
    wait_audit_for(&owner.id, "action = 'access' AND outcome = 'revoked'").await;

    // Enabled again, the user logs in; the admin was never affected.
    let path = format!("/api/v1/users/{}/enable", user.id);
    let enabled = api.post(Some(&owner.token), &path, json!({})).await;
    assert_eq!(enabled.json()["disabled"], false, "{}", enabled.text());
    login(&api, &user.email, &user.password).await;
    let ok = api.get(Some(&owner.token), "/api/v1/users").await;
    assert_eq!(ok.status, 200);
    api.finish("disabled user");
}

/// The TOTP code of `secret` (base32) `steps` time steps from now, as an
/// authenticator app shows it.
fn totp_code(secret: &str, steps: u64) -> String {
    let bytes = totp_rs::Secret::Encoded(secret.to_owned())
        .to_bytes()
        .unwrap();
    let totp = totp_rs::TOTP::new(totp_rs::Algorithm::SHA1, 6, 1, 30, bytes).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    totp.generate(now + steps * 30)
}
