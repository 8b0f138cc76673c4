//! The gateway's placement cache against a real stack with two gateways: warm
//! requests never ask the central database, and a change of a clinic's placement
//! (here its status) reaches every gateway within a second through LISTEN/NOTIFY.
//!
//! On the shared stack (to which it adds a second gateway), alone: the second it
//! asserts must not be taken by another test's load.

use crate::support::*;
use devstack::Http;
use std::time::{Duration, Instant};

/// Polls `path` on every gateway until each answers `status`; the time it took.
async fn until_status(gateways: &[&Http], path: &str, token: &str, status: u16) -> Duration {
    let started = Instant::now();
    for g in gateways {
        loop {
            let r = g.get(path, Some(token)).await.unwrap();
            if r.status == status {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "still {} instead of {status} after 5 s",
                r.status
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    started.elapsed()
}

async fn set_status(clinic: &Clinic, status: &str) {
    let id: uuid::Uuid = clinic.id.parse().unwrap();
    central_db()
        .await
        .execute(
            "UPDATE companies SET status = $2, updated_at = now() WHERE id = $1",
            &[&id, &status],
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_requests_skip_central_and_changes_reach_every_gateway_within_a_second() {
    let _alone = alone();
    let second = stack().add_gateway("gateway-2").unwrap();
    let (one, two) = (http(), Http::new(&second.url()));
    let clinic = register(&one, None).await;
    let patient = create_patient(&one, &clinic, patient_body("Cache", "Case")).await;
    let path = format!("/api/v1/patients/{}", patient["id"].as_str().unwrap());
    // Both gateways learn the placement.
    for g in [&one, &two] {
        assert_eq!(g.get(&path, Some(&clinic.token)).await.unwrap().status, 200);
    }

    // Warm: 100 requests on the second gateway are all cache hits, no miss.
    let before = metrics_at(second.admin_addr).await;
    for _ in 0..100 {
        assert_eq!(
            two.get(&path, Some(&clinic.token)).await.unwrap().status,
            200
        );
    }
    let after = metrics_at(second.admin_addr).await;
    let cache = "medicalpro_placement_cache_total";
    assert_eq!(
        metric_sum(&after, cache, "result=\"miss\"")
            - metric_sum(&before, cache, "result=\"miss\""),
        0.0
    );
    assert!(
        metric_sum(&after, cache, "result=\"hit\"") - metric_sum(&before, cache, "result=\"hit\"")
            >= 100.0
    );

    // Suspension reaches both gateways within a second, then so does the resumption.
    set_status(&clinic, "suspended").await;
    let took = until_status(&[&one, &two], &path, &clinic.token, 403).await;
    assert!(took < Duration::from_secs(1), "suspension took {took:?}");
    let refused = one.get(&path, Some(&clinic.token)).await.unwrap();
    assert_eq!(
        refused.json()["type"],
        "urn:medicalpro:problem:clinic-unavailable"
    );
    set_status(&clinic, "active").await;
    let took = until_status(&[&one, &two], &path, &clinic.token, 200).await;
    assert!(took < Duration::from_secs(1), "resumption took {took:?}");

    // A region's worker address changing reaches every gateway too (the whole cache
    // is dropped): an unreachable address is answered 502/503 at once, and the
    // right one serves again within a second.
    let central = central_db().await;
    let url: String = central
        .query_one(
            "SELECT worker_url FROM regions WHERE name = $1",
            &[&clinic.region],
        )
        .await
        .unwrap()
        .get(0);
    let set_url = |u: String| {
        let central = &central;
        let region = clinic.region.clone();
        async move {
            central
                .execute(
                    "UPDATE regions SET worker_url = $2 WHERE name = $1",
                    &[&region, &u],
                )
                .await
                .unwrap();
        }
    };
    set_url("http://127.0.0.1:9".into()).await;
    let started = Instant::now();
    for g in [&one, &two] {
        loop {
            let status = g.get(&path, Some(&clinic.token)).await.unwrap().status;
            if status == 502 || status == 503 {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(3), "still {status}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    set_url(url).await;
    let took = until_status(&[&one, &two], &path, &clinic.token, 200).await;
    assert!(
        took < Duration::from_secs(1),
        "new worker address took {took:?}"
    );
    drop(second);
}
