//! Many clinics on one regional server, each test on a stack of its own: the
//! worker's clinic pools share one connection budget; cold clinics are served by
//! closing the idle connections of the least recently used ones. Alone
//! (`support::alone`), as its clinics' timings count.

use crate::support::{
    alone, create_patient, metric_sum, metrics_at, patient_body, register, start,
};
use devstack::{Http, StackOptions};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A test's own stack of one region (see `support::options`).
fn options(name: &str, env: &[(&str, &str)]) -> StackOptions {
    crate::support::options(name, &["eu-west"], env)
}

/// Connections the clinic roles hold on the server right now.
async fn clinic_connections(db: &tokio_postgres::Client) -> i64 {
    db.query_one(
        "SELECT count(*) FROM pg_stat_activity WHERE usename LIKE 'medicalpro\\_clinic\\_%'",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clinics_beyond_the_connection_budget_are_all_served_within_it() {
    let _alone = alone();
    const BUDGET: i64 = 4;
    const CLINICS: usize = 12;
    let stack = start(options(
        "budget",
        &[("CLINIC_POOL_BUDGET", "4"), ("CLINIC_POOL_MIN_IDLE", "2")],
    ));
    let http = Http::new(&stack.gateway_url());
    let mut targets = Vec::new();
    for _ in 0..CLINICS {
        let clinic = register(&http, None).await;
        let patient = create_patient(&http, &clinic, patient_body("Budget", "Case")).await;
        targets.push((clinic.token, patient["id"].as_str().unwrap().to_owned()));
    }
    let server = &stack.region("eu-west").unwrap().server;
    let db = server.connect("postgres").await.unwrap();
    assert!(clinic_connections(&db).await <= BUDGET);

    // Sample the server while 16 clients hit every clinic in turn.
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (done, peak) = (done.clone(), peak.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                let n = clinic_connections(&db).await as usize;
                peak.fetch_max(n, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let targets = Arc::new(targets);
    let clients: Vec<_> = (0..16)
        .map(|c| {
            let (http, targets) = (http.clone(), targets.clone());
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for i in 0..24 {
                    let (token, patient) = &targets[(c * 7 + i) % targets.len()];
                    let r = http
                        .get(&format!("/api/v1/patients/{patient}"), Some(token))
                        .await
                        .unwrap();
                    statuses.push(r.status.as_u16());
                }
                statuses
            })
        })
        .collect();
    let mut failures = 0;
    let mut total = 0;
    for c in clients {
        for s in c.await.unwrap() {
            total += 1;
            if s != 200 {
                failures += 1;
            }
        }
    }
    done.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    assert_eq!(total, 16 * 24);
    assert_eq!(failures, 0, "every request is served");
    let peak = peak.load(Ordering::Relaxed) as i64;
    // The budget is checked before each new connection; concurrent checkouts that
    // find an idle connection gone may open one more before the next check.
    assert!(
        peak <= BUDGET + 1,
        "clinic connections peaked at {peak} for a budget of {BUDGET}"
    );
    let metrics = metrics_at(stack.region("eu-west").unwrap().worker.admin_addr).await;
    assert!(metric_sum(&metrics, "medicalpro_pool_evictions_total", "") >= 1.0);
    assert_eq!(
        metric_sum(&metrics, "medicalpro_pool_budget_connections", ""),
        4.0
    );
    drop(stack);
}
