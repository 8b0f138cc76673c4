//! The webhook figure: what a subscription adds to a write, and how soon its
//! delivery arrives. Two clinics of the same stack; one has a subscription to
//! `patient.created` delivered to a receiver in the bench (a hyper server on
//! loopback answering `204` at once), the other has none. `POST /api/v1/patients`
//! one at a time, in turn in each clinic (so both see the same machine); p50 and
//! p99 of each, the ratio of the p50s, and the time from each write's answer to
//! its delivery's arrival (p50, p99).

use crate::load::Stats;
use crate::report::{self, Line};
use crate::settings::{Figure, Settings};
use crate::setup;
use anyhow::{bail, Context};
use bytes::Bytes;
use devstack::{Http, Stack};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Unmeasured writes of each kind first.
const WARMUP: usize = 5;

pub struct Outcome {
    pub lines: Vec<Line>,
    pub notes: Vec<String>,
}

/// When each delivery arrived, by the patient id it carries.
type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

/// A receiver answering `204` at once; records each delivery's arrival.
async fn receiver() -> anyhow::Result<(String, Arrivals, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hooks", listener.local_addr()?);
    let arrivals: Arrivals = Arc::default();
    let seen = arrivals.clone();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let seen = seen.clone();
                        async move {
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let at = Instant::now();
                            if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                                if let Some(id) = v["data"]["id"].as_str() {
                                    if let Ok(mut seen) = seen.lock() {
                                        seen.insert(id.to_owned(), at);
                                    }
                                }
                            }
                            let mut answer = hyper::Response::new(Full::new(Bytes::new()));
                            *answer.status_mut() = http::StatusCode::NO_CONTENT;
                            Ok::<_, std::convert::Infallible>(answer)
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((url, arrivals, task))
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.2}"))
}

fn record(stats: &mut Stats, took: Duration, ok: bool) {
    stats.elapsed += took;
    if ok {
        stats.ok += 1;
        stats
            .latencies_us
            .push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
    } else {
        stats.errors += 1;
    }
}

pub async fn measure(settings: &Settings, stack: &Stack) -> anyhow::Result<Outcome> {
    let http = Http::new(&stack.gateway_url());
    let plain = setup::register(&http, "Bench Clinic Without Webhooks").await?;
    let hooked = setup::register(&http, "Bench Clinic With Webhooks").await?;
    let (url, arrivals, task) = receiver().await?;
    let subscribed = http
        .post(
            "/api/v1/webhook-subscriptions",
            Some(&hooked.token),
            &json!({"url": url, "event_types": ["patient.created"], "role": "staff"}),
        )
        .await
        .context("webhooks: subscribing")?;
    if subscribed.status != http::StatusCode::CREATED {
        bail!("webhooks: subscribing answered {}", subscribed.text());
    }
    let writes = settings.search_requests;
    eprintln!("bench: webhooks: {writes} patient writes in each clinic, in turn…");
    let mut without = Stats::default();
    let mut with = Stats::default();
    let mut answered: Vec<(String, Instant)> = Vec::with_capacity(writes);
    for i in 0..WARMUP + writes {
        for (token, stats, watched) in [
            (&plain.token, &mut without, false),
            (&hooked.token, &mut with, true),
        ] {
            let body = json!({"first_name": format!("Hook{i}"), "last_name": "Bench"});
            let started = Instant::now();
            let reply = http.post("/api/v1/patients", Some(token), &body).await;
            let took = started.elapsed();
            let done = Instant::now();
            let created = reply
                .ok()
                .filter(|r| r.status == http::StatusCode::CREATED)
                .and_then(|r| r.json()["id"].as_str().map(str::to_owned));
            if i < WARMUP {
                continue;
            }
            if watched {
                if let Some(id) = &created {
                    answered.push((id.clone(), done));
                }
            }
            record(stats, took, created.is_some());
        }
    }
    // Every delivery, then the lag from each write's answer to its arrival.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let arrived = arrivals.lock().map(|a| a.len()).unwrap_or(0);
        if arrived >= answered.len() + WARMUP || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    task.abort();
    let mut lag = Stats::default();
    if let Ok(seen) = arrivals.lock() {
        for (id, done) in &answered {
            match seen.get(id) {
                Some(at) => record(&mut lag, at.saturating_duration_since(*done), true),
                None => lag.errors += 1,
            }
        }
    }
    let p50_without = without.percentile_ms(50.0);
    let p50_with = with.percentile_ms(50.0);
    let ratio = match (p50_with, p50_without) {
        (Some(w), Some(wo)) => report::ratio(w, wo),
        _ => None,
    };
    let lines = vec![
        Line::new(
            Figure::Webhooks,
            "POST /patients in a clinic with a webhook subscription".to_owned(),
            format!(
                "p50 {} ms, p99 {} ms, {} errors",
                ms(p50_with),
                ms(with.percentile_ms(99.0)),
                with.errors
            ),
            format!(
                "without: p50 {} ms, p99 {} ms",
                ms(p50_without),
                ms(without.percentile_ms(99.0))
            ),
            ratio,
        ),
        Line::new(
            Figure::Webhooks,
            "a write's answer to its delivery's arrival (signed, at a local receiver)".to_owned(),
            format!(
                "p50 {} ms, p99 {} ms, {} of {} delivered",
                ms(lag.percentile_ms(50.0)),
                ms(lag.percentile_ms(99.0)),
                lag.ok,
                answered.len()
            ),
            "-".to_owned(),
            None,
        ),
    ];
    let notes = vec![format!(
        "webhooks: {writes} writes in each of two clinics, in turn, after {WARMUP} unmeasured; one subscription to patient.created in the second, delivered to a receiver on loopback answering 204 at once"
    )];
    Ok(Outcome { lines, notes })
}
