//! Where the product's time goes: the services' own Prometheus metrics (gateway
//! proxied requests, worker reads, worker pool acquisition, pool evictions),
//! scraped before and after each measured product run so only measured requests
//! count; and single counters, gauges or histograms (placement cache hits, open
//! clinic pools, provisioning time) read the same way.

use crate::load::{self, LoadClient, Target};
use anyhow::Context;
use common::metric_names::{
    HTTP_REQUEST_DURATION as REQUEST_DURATION, POOL_ACQUIRE, POOL_EVICTIONS,
};
use http::StatusCode;
use std::net::SocketAddr;

/// Sum (seconds) and count of a histogram.
#[derive(Clone, Copy, Debug, Default)]
pub struct Histo {
    pub sum: f64,
    pub count: f64,
}

impl Histo {
    pub fn minus(self, earlier: Histo) -> Histo {
        Histo {
            sum: self.sum - earlier.sum,
            count: self.count - earlier.count,
        }
    }

    fn plus(self, other: Histo) -> Histo {
        Histo {
            sum: self.sum + other.sum,
            count: self.count + other.count,
        }
    }

    /// Mean in milliseconds, if anything was recorded.
    pub fn mean_ms(&self) -> Option<f64> {
        (self.count > 0.0).then(|| self.sum / self.count * 1000.0)
    }
}

/// The histograms of interest at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub struct Snapshot {
    pub gateway_proxy: Histo,
    pub worker_read: Histo,
    pub pool_acquire: Histo,
    /// Idle clinic connections the worker closed to make room for another clinic.
    pub evictions: f64,
}

impl Snapshot {
    pub fn minus(self, earlier: Snapshot) -> Snapshot {
        Snapshot {
            gateway_proxy: self.gateway_proxy.minus(earlier.gateway_proxy),
            worker_read: self.worker_read.minus(earlier.worker_read),
            pool_acquire: self.pool_acquire.minus(earlier.pool_acquire),
            evictions: self.evictions - earlier.evictions,
        }
    }

    pub fn plus(self, other: Snapshot) -> Snapshot {
        Snapshot {
            gateway_proxy: self.gateway_proxy.plus(other.gateway_proxy),
            worker_read: self.worker_read.plus(other.worker_read),
            pool_acquire: self.pool_acquire.plus(other.pool_acquire),
            evictions: self.evictions + other.evictions,
        }
    }
}

/// Where the services' metrics are served.
#[derive(Clone, Debug)]
pub struct Sources {
    pub gateway: Target,
    pub worker: Target,
    pub worker_admin: SocketAddr,
}

impl Sources {
    pub fn new(gateway_admin: SocketAddr, worker_admin: SocketAddr) -> anyhow::Result<Self> {
        Ok(Self {
            gateway: Target::new(&format!("http://{gateway_admin}/metrics"), &[])?,
            worker: Target::new(&format!("http://{worker_admin}/metrics"), &[])?,
            worker_admin,
        })
    }

    /// Scrapes both services; `None` when either cannot be read (the breakdown is
    /// informative only).
    pub async fn snapshot(&self, client: &LoadClient) -> Option<Snapshot> {
        let gateway = scrape(client, &self.gateway).await?;
        let worker = scrape(client, &self.worker).await?;
        Some(Snapshot {
            gateway_proxy: histogram(
                &gateway,
                REQUEST_DURATION,
                &[("component", "gateway"), ("route", "proxy")],
            ),
            worker_read: histogram(
                &worker,
                REQUEST_DURATION,
                &[("component", "worker"), ("route", "read")],
            ),
            pool_acquire: histogram(&worker, POOL_ACQUIRE, &[]),
            evictions: value(&worker, POOL_EVICTIONS, &[]),
        })
    }
}

/// The Prometheus text a service serves at `http://{admin}/metrics`.
pub async fn metrics_text(client: &LoadClient, admin: SocketAddr) -> anyhow::Result<String> {
    let target = Target::new(&format!("http://{admin}/metrics"), &[])?;
    scrape(client, &target)
        .await
        .with_context(|| format!("reading the metrics at {admin}"))
}

/// The sum of every sample of counter or gauge `name` whose labels include `want`.
pub fn value(text: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            if !(rest.starts_with('{') || rest.starts_with(' ')) {
                return None;
            }
            let (labels, v) = rest.rsplit_once(' ')?;
            let ok = want
                .iter()
                .all(|(k, val)| labels.contains(&format!("{k}=\"{val}\"")));
            ok.then(|| v.trim().parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// Every sample of counter `name` by its label set (`{a="x",b="y"}`, or empty).
pub fn series(text: &str, name: &str) -> std::collections::BTreeMap<String, f64> {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            if !(rest.starts_with('{') || rest.starts_with(' ')) {
                return None;
            }
            let (labels, v) = rest.rsplit_once(' ')?;
            Some((labels.trim().to_owned(), v.trim().parse::<f64>().ok()?))
        })
        .collect()
}

/// What grew in counter `name` between two scrapes, by label set, as
/// `labels +n` (empty when nothing did).
pub fn grown(before: &str, after: &str, name: &str) -> Vec<String> {
    let earlier = series(before, name);
    series(after, name)
        .into_iter()
        .filter_map(|(labels, v)| {
            let d = v - earlier.get(&labels).copied().unwrap_or(0.0);
            (d > 0.0).then(|| format!("{labels} +{d:.0}"))
        })
        .collect()
}

async fn scrape(client: &LoadClient, target: &Target) -> Option<String> {
    match load::fetch(client, target).await {
        Ok((StatusCode::OK, body)) => Some(String::from_utf8_lossy(&body).into_owned()),
        _ => None,
    }
}

/// Adds up `<name>_sum` and `<name>_count` over every series whose labels include `want`.
pub fn histogram(text: &str, name: &str, want: &[(&str, &str)]) -> Histo {
    let mut out = Histo::default();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (is_sum, rest) = if let Some(r) = rest.strip_prefix("_sum") {
            (true, r)
        } else if let Some(r) = rest.strip_prefix("_count") {
            (false, r)
        } else {
            continue;
        };
        let (labels, value) = match rest.rsplit_once(' ') {
            Some((labels, value)) => (labels.trim(), value),
            None => continue,
        };
        let matches = want
            .iter()
            .all(|(k, v)| labels.contains(&format!("{k}=\"{v}\"")));
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        if matches {
            if is_sum {
                out.sum += value;
            } else {
                out.count += value;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_matching_series() {
        let text = "\
# TYPE medicalpro_http_request_duration_seconds histogram
medicalpro_http_request_duration_seconds_bucket{component=\"gateway\",route=\"proxy\",status=\"2xx\",le=\"0.001\"} 3
medicalpro_http_request_duration_seconds_sum{component=\"gateway\",route=\"proxy\",status=\"2xx\"} 0.5
medicalpro_http_request_duration_seconds_count{component=\"gateway\",route=\"proxy\",status=\"2xx\"} 100
medicalpro_http_request_duration_seconds_sum{component=\"gateway\",route=\"proxy\",status=\"5xx\"} 0.25
medicalpro_http_request_duration_seconds_count{component=\"gateway\",route=\"proxy\",status=\"5xx\"} 1
medicalpro_http_request_duration_seconds_sum{component=\"gateway\",route=\"auth\",status=\"2xx\"} 9
medicalpro_http_request_duration_seconds_count{component=\"gateway\",route=\"auth\",status=\"2xx\"} 9
medicalpro_pool_acquire_seconds_sum{server=\"eu-west\"} 0.01
medicalpro_pool_acquire_seconds_count{server=\"eu-west\"} 10
";
        let h = histogram(
            text,
            REQUEST_DURATION,
            &[("component", "gateway"), ("route", "proxy")],
        );
        assert!((h.sum - 0.75).abs() < 1e-9);
        assert!((h.count - 101.0).abs() < 1e-9);
        let p = histogram(text, POOL_ACQUIRE, &[]);
        assert_eq!(p.mean_ms().map(|m| (m * 1000.0).round()), Some(1000.0));
    }

    #[test]
    fn reads_counters_and_gauges() {
        let text = "\
# TYPE medicalpro_placement_cache_total counter
medicalpro_placement_cache_total{result=\"hit\"} 41
medicalpro_placement_cache_total{result=\"miss\"} 3
medicalpro_placement_cache_entries 12
medicalpro_placement_cache_entries_other 99
";
        assert_eq!(
            value(
                text,
                "medicalpro_placement_cache_total",
                &[("result", "miss")]
            ),
            3.0
        );
        assert_eq!(value(text, "medicalpro_placement_cache_total", &[]), 44.0);
        assert_eq!(value(text, "medicalpro_placement_cache_entries", &[]), 12.0);
        let later = text.replace("{result=\"miss\"} 3", "{result=\"miss\"} 5");
        assert_eq!(
            grown(text, &later, "medicalpro_placement_cache_total"),
            vec!["{result=\"miss\"} +2".to_owned()]
        );
        assert!(grown(text, text, "medicalpro_placement_cache_total").is_empty());
    }
}
