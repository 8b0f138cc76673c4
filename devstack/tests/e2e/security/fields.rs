//! Hostile strings in every field of every resource: create, PUT and PATCH, child
//! rows and reference lists.

use super::*;

/// One resource's probing: its clinic, and the row PUT and PATCH change.
pub(super) struct Prober {
    pub(super) api: Arc<Api>,
    pub(super) site: Arc<Site>,
    pub(super) deps: Arc<Deps>,
    pub(super) r: &'static Resource,
    pub(super) target: String,
}

impl Prober {
    /// Every probe in every slot, by create, PUT and PATCH (bulky values by create
    /// only: the size checks do not depend on the method).
    pub(super) async fn run(self) {
        for slot in Slot::all(self.r) {
            for probe in slot.probes(self.r, &self.deps) {
                let bulky = probe.decoded().is_some_and(|s| s.len() > 50_000);
                for method in [Method::POST, Method::PUT, Method::PATCH] {
                    if method == Method::POST || !bulky {
                        self.once(slot, &probe, method).await;
                    }
                }
            }
        }
    }

    pub(super) async fn once(&self, slot: Slot, probe: &Probe, method: Method) {
        let (api, db, r) = (&self.api, &self.site.db, self.r);
        let token = self.site.owner();
        let expected = verdict(slot.field(), probe);
        let what = format!(
            "{method} {}.{} ← {} ({})",
            r.name,
            slot.name(),
            probe.label(),
            short(&format!("{expected:?}"))
        );
        let creates = method == Method::POST;
        let collection = format!("/api/v1/{}", r.name);
        let path = if creates {
            collection.clone()
        } else {
            format!("{collection}/{}", self.target)
        };
        let body = with_probe(&slot.fill(r, &self.deps, method == Method::PATCH), probe);
        // What a refusal must leave as it was: the row counts for a create, the
        // row for a PUT or PATCH.
        let state = || async {
            if creates {
                counts(db, r).await
            } else {
                snapshot(db, r, &self.target).await
            }
        };
        // A frozen row takes no change, whatever the value (a refusal for the
        // value itself comes first).
        let unchangeable = !creates && frozen(r);
        // (An accepted value is read back instead.)
        let before = match expected {
            Verdict::Accept(_) if !unchangeable => None,
            _ => Some(state().await),
        };
        let reply = api.send(token, method.clone(), &path, body).await;
        let status = reply.status.as_u16();
        if unchangeable && matches!(expected, Verdict::Accept(_)) {
            api.check(status == 409, || {
                format!(
                    "{what}: a frozen row, expected 409, got {status}: {}",
                    snippet(&reply)
                )
            });
            api.check(Some(state().await) == before, || {
                format!("{what}: a frozen row changed")
            });
            return;
        }
        let stored = match (&expected, before) {
            (Verdict::Accept(s), _) => s,
            (Verdict::Either(s), _) if reply.status.is_success() => s,
            (_, before) => {
                api.check(matches!(status, 400 | 413), || {
                    format!(
                        "{what}: expected a refusal, got {status}: {}",
                        snippet(&reply)
                    )
                });
                api.check(Some(state().await) == before, || {
                    format!("{what}: refused, yet the database changed")
                });
                return;
            }
        };
        let ok = if creates { 201 } else { 200 };
        if status != ok {
            api.fail(format!(
                "{what}: expected {ok}, got {status}: {}",
                snippet(&reply)
            ));
            return;
        }
        // Read back exactly: in the answer, through GET, in the database.
        let answer = reply.json();
        let id = id_of(&answer);
        let row_path = format!("{collection}/{id}");
        let mut reads = vec![("answer", slot.read(&answer))];
        if creates {
            // (A PUT or PATCH answers with the row read again already.)
            reads.push(("GET", slot.read(&api.get(token, &row_path).await.json())));
        }
        for (source, v) in reads {
            api.check(v == json!(stored), || {
                format!("{what}: the {source} reads back {}", short(&v.to_string()))
            });
        }
        let Slot::Field(f) = slot else {
            return;
        };
        if !f.encrypted && matches!(f.ty, FieldType::Text { .. } | FieldType::Email) {
            let sql = format!("SELECT {}::text FROM {} WHERE id = $1", f.name, r.table);
            let uuid: Uuid = id.parse().unwrap();
            let in_db: Option<String> = db.query_one(sql.as_str(), &[&uuid]).await.unwrap().get(0);
            api.check(in_db.as_deref() == Some(stored.as_str()), || {
                format!("{what}: the database holds {:?}", in_db.map(|s| short(&s)))
            });
        }
        if f.encrypted && stored.len() >= 4 {
            // Sealed: the database holds ciphertext, never the text sent.
            let sql = format!("SELECT {}_enc FROM {} WHERE id = $1", f.name, r.table);
            let uuid: Uuid = id.parse().unwrap();
            let sealed: Option<Vec<u8>> =
                db.query_one(sql.as_str(), &[&uuid]).await.unwrap().get(0);
            let plain = stored.as_bytes();
            api.check(
                sealed
                    .as_ref()
                    .is_some_and(|s| !s.windows(plain.len()).any(|w| w == plain)),
                || format!("{what}: not stored sealed"),
            );
        }
        if creates && free_text(f) && !frozen(r) {
            // Out of the way of names that must be unique (categories, and a
            // consent template's name and version).
            let fresh = json!({f.name: format!("{} {}", f.name, next_seq())});
            let moved = api
                .send(token, Method::PATCH, &row_path, Body::Json(fresh))
                .await;
            assert_eq!(moved.status, 200, "{}", moved.text());
        }
    }
}

#[tokio::test]
pub(super) async fn hostile_strings_in_every_field_of_every_resource() {
    let _turn = turn();
    let api = Api::new();
    plant_foreign(&api, "eu-central").await;
    plant_foreign(&api, "eu-west").await;
    let clinic = register(&api.http, Some("eu-west")).await;
    let site = Arc::new(Site {
        db: clinic_db(&clinic).await,
        clinic,
        users: HashMap::new(),
    });
    let deps = Arc::new(seed(&api, &site.clinic.token, &|_, s| s.to_owned()).await);
    let mut tasks = JoinSet::new();
    for r in RESOURCES {
        let collection = format!("/api/v1/{}", r.name);
        let target = api
            .post(site.owner(), &collection, sample_body(r, &deps, true))
            .await;
        assert_eq!(target.status, 201, "{}", target.text());
        let prober = Prober {
            api: api.clone(),
            site: site.clone(),
            deps: deps.clone(),
            r,
            target: id_of(&target.json()),
        };
        tasks.spawn(prober.run());
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    api.finish("hostile strings in fields");
}
