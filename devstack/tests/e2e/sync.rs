//! End-to-end tests of sync and concurrency: lists of changes (`updated_since`,
//! walked in change order by the cursor, soft-deleted rows as tombstones), the
//! `ETag` of every single-object answer, and `If-Match` on changes and deletes
//! (a stale version is `412` with nothing changed, also under a race).

use crate::support::*;
use devstack::{Http, Reply};
use http::Method;
use serde_json::{json, Value};

/// `method path` as the clinic's admin, with `If-Match: tag` when given.
async fn send_if(
    http: &Http,
    c: &Clinic,
    method: Method,
    path: &str,
    body: Option<Value>,
    tag: Option<&str>,
) -> Reply {
    let auth = format!("Bearer {}", c.token);
    let mut headers = vec![("authorization", auth.as_str())];
    if let Some(tag) = tag {
        headers.push(("if-match", tag));
    }
    let body = body.map(|b| serde_json::to_vec(&b).unwrap().into());
    http.send(method, path, &headers, body).await.unwrap()
}

/// A reply's `ETag`, which must be there.
fn etag(r: &Reply) -> String {
    r.header("etag")
        .unwrap_or_else(|| panic!("no ETag on {} {}", r.status, r.text()))
        .to_owned()
}

/// Every page of `GET /api/v1/practitioners?{query}`, `limit` at a time; between
/// pages `between` runs once after the first page.
async fn walk(http: &Http, c: &Clinic, query: &str, limit: u32) -> Vec<Value> {
    let mut rows = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/api/v1/practitioners?{query}&limit={limit}");
        if let Some(next) = &cursor {
            path.push_str(&format!("&cursor={}", url_encode(next)));
        }
        let page = status(&http.get(&path, Some(&c.token)).await.unwrap(), 200);
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= limit as usize);
        rows.extend(data.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return rows,
        }
    }
}

fn ids(rows: &[Value]) -> Vec<String> {
    rows.iter().map(id).collect()
}

async fn practitioner(http: &Http, c: &Clinic, name: &str) -> Value {
    create(
        http,
        c,
        "practitioners",
        json!({"first_name": name, "last_name": "Sync"}),
    )
    .await
}

#[tokio::test]
async fn a_sync_walks_changes_in_order_and_sees_deletions_as_tombstones() {
    let _turn = turn();
    let http = http();
    let c = register(&http, None).await;
    let mut made = Vec::new();
    for name in ["Ada", "Bea", "Cy", "Dee", "Eve"] {
        made.push(practitioner(&http, &c, name).await);
    }
    let p: Vec<String> = ids(&made);
    let since = url_encode(made[0]["updated_at"].as_str().unwrap());

    // The first page, then changes made while the client pages: one row already
    // seen changes, one not yet seen is deleted.
    let first = status(
        &http
            .get(
                &format!("/api/v1/practitioners?updated_since={since}&limit=2"),
                Some(&c.token),
            )
            .await
            .unwrap(),
        200,
    );
    assert_eq!(ids(first["data"].as_array().unwrap()), p[..2].to_vec());
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    status(
        &send(
            &http,
            &c,
            Method::PATCH,
            &format!("/api/v1/practitioners/{}", p[0]),
            Some(json!({"specialty": "sync"})),
        )
        .await,
        200,
    );
    assert_eq!(
        send(
            &http,
            &c,
            Method::DELETE,
            &format!("/api/v1/practitioners/{}", p[3]),
            None
        )
        .await
        .status,
        204
    );
    // The rest of the walk: the unseen rows in order, then the changed one again;
    // the deleted one is gone.
    let mut rest = Vec::new();
    let mut next = Some(cursor);
    while let Some(cursor) = next {
        let page = status(
            &http
                .get(
                    &format!(
                        "/api/v1/practitioners?updated_since={since}&limit=2&cursor={}",
                        url_encode(&cursor)
                    ),
                    Some(&c.token),
                )
                .await
                .unwrap(),
            200,
        );
        rest.extend(page["data"].as_array().unwrap().iter().cloned());
        next = page["next_cursor"].as_str().map(str::to_owned);
    }
    assert_eq!(ids(&rest), vec![p[2].clone(), p[4].clone(), p[0].clone()]);
    assert_eq!(rest[2]["specialty"], "sync");

    // With tombstones: every change since, in change order, the deletion last.
    let all = walk(
        &http,
        &c,
        &format!("updated_since={since}&include_deleted=true"),
        2,
    )
    .await;
    assert_eq!(
        ids(&all),
        vec![
            p[1].clone(),
            p[2].clone(),
            p[4].clone(),
            p[0].clone(),
            p[3].clone()
        ]
    );
    let tomb = &all[4];
    assert_eq!(tomb["deleted"], true);
    assert!(tomb["deleted_at"].is_string() && tomb["updated_at"].is_string());
    assert!(tomb.get("first_name").is_none() && tomb.get("created_at").is_none());
    let mut times: Vec<&str> = all
        .iter()
        .map(|r| r["updated_at"].as_str().unwrap())
        .collect();
    let in_order = times.clone();
    times.sort();
    assert_eq!(times, in_order);

    // `updated_since` is inclusive: the last change's own time finds it.
    let last = url_encode(tomb["updated_at"].as_str().unwrap());
    let only = walk(
        &http,
        &c,
        &format!("updated_since={last}&include_deleted=true"),
        5,
    )
    .await;
    assert_eq!(ids(&only), vec![p[3].clone()]);
    // A restore is a change too: the row comes back live.
    let restored = post(
        &http,
        &c,
        &format!("/api/v1/practitioners/{}/restore", p[3]),
        json!({}),
    )
    .await;
    assert_eq!(restored.status, 200, "{}", restored.text());
    let back = walk(
        &http,
        &c,
        &format!("updated_since={last}&include_deleted=true"),
        5,
    )
    .await;
    assert_eq!(ids(&back), vec![p[3].clone()]);
    assert_eq!(back[0]["first_name"], "Dee");
    assert!(back[0].get("deleted").is_none());

    // Refusals: tombstones only as changes, no search of changes, cursors of one
    // kind of list only, a malformed time.
    for query in [
        "include_deleted=true".to_owned(),
        format!("updated_since={since}&q=Ada"),
        "updated_since=yesterday".to_owned(),
        format!("updated_since={since}&include_deleted=maybe"),
    ] {
        problem(
            &http
                .get(&format!("/api/v1/practitioners?{query}"), Some(&c.token))
                .await
                .unwrap(),
            400,
        );
    }
    let plain = status(
        &http
            .get("/api/v1/practitioners?limit=1", Some(&c.token))
            .await
            .unwrap(),
        200,
    );
    let plain_cursor = url_encode(plain["next_cursor"].as_str().unwrap());
    problem(
        &http
            .get(
                &format!("/api/v1/practitioners?updated_since={since}&cursor={plain_cursor}"),
                Some(&c.token),
            )
            .await
            .unwrap(),
        400,
    );
    let sync_cursor = url_encode(first["next_cursor"].as_str().unwrap());
    problem(
        &http
            .get(
                &format!("/api/v1/practitioners?cursor={sync_cursor}"),
                Some(&c.token),
            )
            .await
            .unwrap(),
        400,
    );
}

#[tokio::test]
async fn every_write_changes_the_etag_and_a_stale_if_match_changes_nothing() {
    let _turn = turn();
    let http = http();
    let c = register(&http, None).await;
    let created = post(&http, &c, "/api/v1/patients", patient_body("Tag", "Ged")).await;
    assert_eq!(created.status, 201, "{}", created.text());
    let v1 = etag(&created);
    assert!(v1.starts_with('"') && v1.ends_with('"'), "{v1}");
    let pid = id(&created.json());
    let path = format!("/api/v1/patients/{pid}");
    let got = http.get(&path, Some(&c.token)).await.unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(etag(&got), v1);

    // A patch under the current version wins and moves the version.
    let patched = send_if(
        &http,
        &c,
        Method::PATCH,
        &path,
        Some(json!({"phone": "+33 9 99 99 99 99"})),
        Some(&v1),
    )
    .await;
    assert_eq!(patched.status, 200, "{}", patched.text());
    let v2 = etag(&patched);
    assert_ne!(v2, v1);
    let now = http.get(&path, Some(&c.token)).await.unwrap();
    assert_eq!(etag(&now), v2);
    let before = now.json();

    // Stale, weak or unknown versions: 412, nothing changed.
    for (method, body, tag) in [
        (Method::PUT, Some(patient_body("Stale", "Put")), v1.clone()),
        (
            Method::PATCH,
            Some(json!({"first_name": "Stale"})),
            v1.clone(),
        ),
        (
            Method::PATCH,
            Some(json!({"first_name": "Weak"})),
            format!("W/{v2}"),
        ),
        (
            Method::PATCH,
            Some(json!({"first_name": "Junk"})),
            "\"junk\"".into(),
        ),
        (Method::DELETE, None, v1.clone()),
    ] {
        let refused = send_if(&http, &c, method.clone(), &path, body, Some(&tag)).await;
        problem(&refused, 412);
        let again = http.get(&path, Some(&c.token)).await.unwrap();
        assert_eq!(again.status, 200, "{method} {tag} deleted the row");
        assert_eq!(again.json(), before, "{method} {tag} changed the row");
        assert_eq!(etag(&again), v2);
    }
    let refusals = wait_audit(
        &c,
        &format!("action = 'update' AND resource_id = '{pid}' AND outcome = 'precondition_failed'"),
    )
    .await;
    assert!(!refusals.is_empty());
    wait_audit(
        &c,
        &format!("action = 'delete' AND resource_id = '{pid}' AND outcome = 'precondition_failed'"),
    )
    .await;

    // A list of versions matches when one is current; `*` matches any version;
    // no If-Match writes as before. Each write moves the version.
    let put = send_if(
        &http,
        &c,
        Method::PUT,
        &path,
        Some(patient_body("Tag", "Put")),
        Some(&format!("{v1}, {v2}")),
    )
    .await;
    assert_eq!(put.status, 200, "{}", put.text());
    let v3 = etag(&put);
    let star = send_if(
        &http,
        &c,
        Method::PATCH,
        &path,
        Some(json!({"first_name": "Star"})),
        Some("*"),
    )
    .await;
    assert_eq!(star.status, 200, "{}", star.text());
    let v4 = etag(&star);
    let bare = send_if(
        &http,
        &c,
        Method::PATCH,
        &path,
        Some(json!({"first_name": "Bare"})),
        None,
    )
    .await;
    assert_eq!(bare.status, 200);
    let v5 = etag(&bare);
    let versions = [&v1, &v2, &v3, &v4, &v5];
    for (i, a) in versions.iter().enumerate() {
        for b in &versions[i + 1..] {
            assert_ne!(a, b);
        }
    }

    // Delete under the current version, then restore: the restore answers a new
    // version, and a version of before the delete is stale again.
    let deleted = send_if(&http, &c, Method::DELETE, &path, None, Some(&v5)).await;
    assert_eq!(deleted.status, 204, "{}", deleted.text());
    let gone = send_if(&http, &c, Method::PATCH, &path, Some(json!({})), Some("*")).await;
    problem(&gone, 404);
    let restored = post(&http, &c, &format!("{path}/restore"), json!({})).await;
    assert_eq!(restored.status, 200, "{}", restored.text());
    let v6 = etag(&restored);
    assert!(!versions.contains(&&v6));
    problem(
        &send_if(&http, &c, Method::DELETE, &path, None, Some(&v5)).await,
        412,
    );
    // A row action answers the version of the row it returns.
    let doc = post(
        &http,
        &c,
        "/api/v1/documents",
        json!({"kind": "invoice", "patient_id": pid, "lines": [{"description": "Visit", "quantity": 1, "unit_price_cents": 2500, "vat_rate_bp": 0}]}),
    )
    .await;
    assert_eq!(doc.status, 201, "{}", doc.text());
    let issued = post(
        &http,
        &c,
        &format!("/api/v1/documents/{}/issue", id(&doc.json())),
        json!({}),
    )
    .await;
    assert_eq!(issued.status, 200, "{}", issued.text());
    assert_ne!(etag(&issued), etag(&doc));
}

#[tokio::test]
async fn of_two_patches_with_the_same_if_match_exactly_one_wins() {
    let _turn = turn();
    let http = http();
    let c = register(&http, None).await;
    let created = post(
        &http,
        &c,
        "/api/v1/practitioners",
        json!({"first_name": "Race", "last_name": "Condition"}),
    )
    .await;
    let path = format!("/api/v1/practitioners/{}", id(&created.json()));
    let mut tag = etag(&created);
    for round in 0..8 {
        let a = send_if(
            &http,
            &c,
            Method::PATCH,
            &path,
            Some(json!({"specialty": format!("a{round}")})),
            Some(&tag),
        );
        let b = send_if(
            &http,
            &c,
            Method::PATCH,
            &path,
            Some(json!({"specialty": format!("b{round}")})),
            Some(&tag),
        );
        let (a, b) = tokio::join!(a, b);
        let mut statuses = [a.status.as_u16(), b.status.as_u16()];
        statuses.sort();
        assert_eq!(
            statuses,
            [200, 412],
            "round {round}: {} / {}",
            a.text(),
            b.text()
        );
        let winner = if a.status == 200 { &a } else { &b };
        let now = http.get(&path, Some(&c.token)).await.unwrap();
        assert_eq!(now.json()["specialty"], winner.json()["specialty"]);
        assert_eq!(etag(&now), etag(winner));
        tag = etag(winner);
    }
}

#[tokio::test]
async fn if_match_on_a_row_of_another_clinic_is_404() {
    let _turn = turn();
    let http = http();
    let a = register(&http, None).await;
    let b = register(&http, None).await;
    let created = post(
        &http,
        &a,
        "/api/v1/patients",
        patient_body("Other", "Clinic"),
    )
    .await;
    assert_eq!(created.status, 201);
    let tag = etag(&created);
    let path = format!("/api/v1/patients/{}", id(&created.json()));
    for t in [tag.as_str(), "*"] {
        problem(
            &send_if(
                &http,
                &b,
                Method::PATCH,
                &path,
                Some(json!({"first_name": "X"})),
                Some(t),
            )
            .await,
            404,
        );
        problem(
            &send_if(
                &http,
                &b,
                Method::PUT,
                &path,
                Some(patient_body("X", "Y")),
                Some(t),
            )
            .await,
            404,
        );
        problem(
            &send_if(&http, &b, Method::DELETE, &path, None, Some(t)).await,
            404,
        );
    }
    let still = http.get(&path, Some(&a.token)).await.unwrap();
    assert_eq!(still.status, 200);
    assert_eq!(etag(&still), tag);
    assert_eq!(still.json(), created.json());
}

/// The clinic's settings carry an `ETag` too: of two admins saving the settings
/// they both loaded, the second is told (`412`) and changes nothing.
#[tokio::test]
async fn the_clinics_settings_are_saved_only_from_their_current_version() {
    let _turn = turn();
    let http = http();
    let c = register(&http, None).await;
    let loaded = http.get("/api/v1/clinic", Some(&c.token)).await.unwrap();
    let tag = etag(&loaded);
    let mut first = loaded.json();
    first["name"] = "Cabinet Premier".into();
    first.as_object_mut().unwrap().remove("updated_at");
    let mut second = first.clone();
    second["name"] = "Cabinet Second".into();
    let saved = send_if(
        &http,
        &c,
        Method::PUT,
        "/api/v1/clinic",
        Some(first),
        Some(&tag),
    )
    .await;
    assert_eq!(saved.status, 200, "{}", saved.text());
    assert_ne!(etag(&saved), tag);
    let stale = send_if(
        &http,
        &c,
        Method::PUT,
        "/api/v1/clinic",
        Some(second.clone()),
        Some(&tag),
    )
    .await;
    problem(&stale, 412);
    let now = http.get("/api/v1/clinic", Some(&c.token)).await.unwrap();
    assert_eq!(now.json()["name"], "Cabinet Premier");
    assert_eq!(etag(&now), etag(&saved));
    // With the current version it goes through; without `If-Match`, as before.
    let fresh = send_if(
        &http,
        &c,
        Method::PUT,
        "/api/v1/clinic",
        Some(second),
        Some(&etag(&now)),
    )
    .await;
    assert_eq!(fresh.status, 200, "{}", fresh.text());
    wait_audit(
        &c,
        "resource = 'clinic' AND outcome = 'precondition_failed'",
    )
    .await;
}
