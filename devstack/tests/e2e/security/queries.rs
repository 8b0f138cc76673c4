//! Hostile list query parameters, path ids and undocumented methods.

use super::*;

/// A query-string value: as sent (already encoded) and as the server decodes it.
pub(super) struct QueryProbe {
    pub(super) label: &'static str,
    pub(super) encoded: String,
    pub(super) decoded: String,
}

pub(super) fn query_probes() -> Vec<QueryProbe> {
    let plain = |label, s: &str| QueryProbe {
        label,
        encoded: url_encode(s),
        decoded: s.to_owned(),
    };
    let raw = |label, encoded: &str, decoded: &str| QueryProbe {
        label,
        encoded: encoded.to_owned(),
        decoded: decoded.to_owned(),
    };
    vec![
        plain("quote tautology", "' OR '1'='1"),
        plain("SQL injection", "1; DROP TABLE patients;--"),
        plain("LIKE metacharacters", "%_\\"),
        plain("bidi and zero-width", "\u{202E}\u{200B}x"),
        plain("at the limit", &"x".repeat(200)),
        plain("over the limit", &"x".repeat(201)),
        plain("very long", &"x".repeat(10_000)),
        raw("NUL", "%00", "\0"),
        raw("NUL inside", "a%00b", "a\0b"),
        raw("invalid UTF-8", "%FF%FE", "\u{FFFD}\u{FFFD}"),
        raw(
            "UTF-8 of a lone surrogate",
            "%ED%A0%80",
            "\u{FFFD}\u{FFFD}\u{FFFD}",
        ),
        raw("malformed escapes", "%zz%", "%zz%"),
        raw("plus", "a+b", "a b"),
    ]
}

/// The query probes that matter for values that are parsed rather than searched.
pub(super) const TELLING: &[&str] = &[
    "quote tautology",
    "NUL",
    "invalid UTF-8",
    "malformed escapes",
    "over the limit",
    "very long",
];

/// A row's searchable values, lower-cased.
pub(super) fn searchable_text(r: &Resource, row: &Value) -> Vec<String> {
    r.fields
        .iter()
        .filter(|f| f.searchable)
        .filter_map(|f| row[f.name].as_str().map(str::to_lowercase))
        .collect()
}

/// Whether a listed row matches the probe sent as parameter `key`.
pub(super) fn row_matches(r: &Resource, key: &str, probe: &QueryProbe, row: &Value) -> bool {
    let needle = probe.decoded.to_lowercase();
    if key == "q" {
        // Case folding beyond ASCII is the database's; blank searches match all.
        return !probe.decoded.is_ascii()
            || needle.trim().is_empty()
            || !r.fields.iter().any(|f| f.searchable)
            || searchable_text(r, row).iter().any(|s| s.contains(&needle));
    }
    match r.field(key) {
        Some(f) if matches!(f.ty, FieldType::Text { .. }) => row[key] == probe.decoded.as_str(),
        _ => true,
    }
}

/// Every list query parameter of `r` with every probe; every path id with every
/// method; methods the document does not list for a path.
pub(super) async fn probe_queries(
    api: Arc<Api>,
    site: Arc<Site>,
    deps: Arc<Deps>,
    foreign: Arc<Deps>,
    r: &'static Resource,
) {
    let token = site.owner();
    let collection = format!("/api/v1/{}", r.name);
    let probes = query_probes();
    let plantable = |p: &QueryProbe| p.decoded.len() < 50 && !p.decoded.contains('\0');
    // Rows whose searchable text holds each probe: a search must find them, and
    // only rows that match.
    let searchable = r.fields.iter().find(|f| f.searchable);
    if let Some(f) = searchable {
        for p in probes.iter().filter(|p| plantable(p)) {
            let mut body = sample_body(r, &deps, true);
            body[f.name] = json!(format!("needle {}", p.decoded));
            let made = api.post(token, &collection, body).await;
            assert_eq!(made.status, 201, "{}", made.text());
        }
    }
    let mut keys = vec![
        "q".to_owned(),
        "limit".into(),
        "cursor".into(),
        "company_id".into(),
    ];
    for f in r.fields {
        if f.filterable {
            keys.push(f.name.into());
        }
        if f.range {
            keys.push(format!("{}_from", f.name));
            keys.push(format!("{}_to", f.name));
        }
    }
    for key in &keys {
        // Every probe for what takes free text (a search, a text filter); the
        // telling ones for what is parsed (limits, cursors, ids, enums, instants).
        let free_text = key == "q"
            || r.field(key)
                .is_some_and(|f| matches!(f.ty, FieldType::Text { .. }));
        for p in probes
            .iter()
            .filter(|p| free_text || TELLING.contains(&p.label))
        {
            let limit = if key == "limit" { "" } else { "&limit=100" };
            let path = format!("{collection}?{key}={}{limit}", p.encoded);
            let what = format!("GET {}?{key}= ← {}", r.name, p.label);
            let reply = api.get(token, &path).await;
            let status = reply.status.as_u16();
            let refused = p.decoded.contains('\0') || p.decoded.len() > 200;
            // A search or an ignored parameter takes any legal string.
            let allowed: &[u16] = match (refused, key == "q" || key == "company_id") {
                (true, _) => &[400],
                (false, true) => &[200],
                (false, false) => &[200, 400],
            };
            if !allowed.contains(&status) {
                api.fail(format!(
                    "{what}: expected {allowed:?}, got {status}: {}",
                    snippet(&reply)
                ));
                continue;
            }
            if status != 200 {
                continue;
            }
            let rows = reply.json()["data"].as_array().cloned().unwrap_or_default();
            for row in &rows {
                api.check(row_matches(r, key, p, row), || {
                    format!(
                        "{what}: listed a row that does not match: {}",
                        short(&row.to_string())
                    )
                });
            }
            if key == "q" && searchable.is_some() && plantable(p) {
                let needle = format!("needle {}", p.decoded.to_lowercase());
                let found = rows
                    .iter()
                    .any(|row| searchable_text(r, row).iter().any(|s| s.contains(&needle)));
                api.check(found, || format!("{what}: the row holding it is not found"));
            }
        }
    }
    // Any string as a parameter name is ignored; a query string over 4 KiB, or a
    // parameter given twice, is refused.
    for p in probes.iter().filter(|p| TELLING.contains(&p.label)) {
        let reply = api
            .get(token, &format!("{collection}?{}=1", p.encoded))
            .await;
        let expected = if p.encoded.len() > common::query::MAX_QUERY_BYTES {
            400
        } else {
            200
        };
        api.check(reply.status == expected, || {
            format!("GET {}?<{}>=1: {}", r.name, p.label, reply.status)
        });
    }
    for twice in [
        "limit=5&limit=6",
        "q=a&q=b",
        "cursor=x&cursor=y",
        "q=a&%71=b",
    ] {
        let reply = api.get(token, &format!("{collection}?{twice}")).await;
        api.check(reply.status == 400, || {
            format!(
                "GET {}?{twice}: {} (a repeated parameter)",
                r.name, reply.status
            )
        });
    }

    // Path ids: refused (400) or not found (404), never served; another clinic's
    // row is 404 exactly like a missing one.
    let theirs = foreign[r.table].clone();
    let mut ids: Vec<(&str, String, bool)> = vec![
        ("another clinic's row", theirs.clone(), true),
        ("missing", Uuid::now_v7().to_string(), true),
        ("RTL before an id", format!("%E2%80%AE{theirs}"), false),
    ];
    let for_ids = ["quote tautology", "NUL", "invalid UTF-8"];
    ids.extend(
        probes
            .iter()
            .filter(|p| for_ids.contains(&p.label))
            .map(|p| (p.label, p.encoded.clone(), false)),
    );
    let mut calls: Vec<(Method, String)> = vec![
        (Method::GET, String::new()),
        (Method::PUT, String::new()),
        (Method::PATCH, String::new()),
        (Method::DELETE, String::new()),
        (Method::POST, "/restore".into()),
        (Method::GET, "/export".into()),
    ];
    calls.extend(
        r.actions
            .iter()
            .map(|a| (Method::POST, format!("/{}", a.name))),
    );
    for (label, id, exact) in &ids {
        for (method, suffix) in &calls {
            let body = match *method {
                Method::PUT => Body::Json(sample_body(r, &deps, true)),
                Method::PATCH => Body::Json(json!({})),
                _ => Body::Empty,
            };
            let path = format!("{collection}/{id}{suffix}");
            let reply = api.send(token, method.clone(), &path, body).await;
            let status = reply.status.as_u16();
            api.check(status == 404 || (!exact && status == 400), || {
                format!(
                    "{method} {}/<{label}>{suffix}: {status}: {}",
                    r.name,
                    snippet(&reply)
                )
            });
        }
    }

    // Methods the document does not list for a path: 405 problem+json.
    let item = format!("{collection}/{}", Uuid::now_v7());
    for (method, path) in [
        (Method::PUT, collection.clone()),
        (Method::DELETE, collection.clone()),
        (Method::PATCH, collection.clone()),
        (Method::POST, item.clone()),
        (Method::DELETE, format!("{item}/restore")),
        (Method::PUT, format!("{item}/restore")),
    ] {
        let reply = api.send(token, method.clone(), &path, Body::Empty).await;
        api.check(reply.status == 405, || {
            format!(
                "{method} {}: expected 405, got {}",
                short(&path),
                reply.status
            )
        });
    }
}

/// Every stored row of a foreign clinic, for checking nothing touched them.
pub(super) async fn foreign_state(clinic: &Clinic, deps: &Deps) -> Vec<String> {
    let db = clinic_db(clinic).await;
    let mut out = Vec::new();
    for r in RESOURCES {
        out.push(snapshot(&db, r, &deps[r.table]).await);
    }
    out
}

#[tokio::test]
pub(super) async fn hostile_query_parameters_path_ids_and_methods() {
    let _turn = turn();
    let api = Api::new();
    let (other, theirs) = plant_foreign(&api, "eu-west").await;
    let before = foreign_state(&other, &theirs).await;
    let clinic = register(&api.http, Some("eu-west")).await;
    let site = Arc::new(Site {
        db: clinic_db(&clinic).await,
        clinic,
        users: HashMap::new(),
    });
    let deps = Arc::new(seed(&api, &site.clinic.token, &|_, s| s.to_owned()).await);
    let theirs = Arc::new(theirs);
    let mut tasks = JoinSet::new();
    for r in RESOURCES {
        tasks.spawn(probe_queries(
            api.clone(),
            site.clone(),
            deps.clone(),
            theirs.clone(),
            r,
        ));
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    assert_eq!(
        foreign_state(&other, &theirs).await,
        before,
        "another clinic's rows changed"
    );
    api.finish("hostile query parameters, ids and methods");
}
