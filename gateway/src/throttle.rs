//! Login throttling: failures are counted per account and per client IP in fixed
//! windows; past the limit the caller gets `429` with `retry-after`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(15 * 60);
const MAX_PER_ACCOUNT: u32 = 5;
const MAX_PER_IP: u32 = 30;
const MAX_KEYS: usize = 200_000;

#[derive(Default)]
pub struct Throttle {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Throttle {
    fn keys(account: &str, ip: std::net::IpAddr) -> [(String, u32); 2] {
        [
            (format!("a:{}", account.to_lowercase()), MAX_PER_ACCOUNT),
            (format!("i:{ip}"), MAX_PER_IP),
        ]
    }

    /// `Some(seconds)` when either key is over its limit.
    pub fn blocked(&self, account: &str, ip: std::net::IpAddr) -> Option<u32> {
        let map = self.failures.lock().ok()?;
        Self::keys(account, ip)
            .iter()
            .filter_map(|(k, max)| {
                let (count, start) = map.get(k)?;
                let left = WINDOW.checked_sub(start.elapsed())?;
                (*count >= *max).then(|| left.as_secs().max(1) as u32)
            })
            .max()
    }

    pub fn failed(&self, account: &str, ip: std::net::IpAddr) {
        let Ok(mut map) = self.failures.lock() else {
            return;
        };
        if map.len() > MAX_KEYS {
            map.retain(|_, (_, start)| start.elapsed() < WINDOW);
        }
        for (k, _) in Self::keys(account, ip) {
            let entry = map.entry(k).or_insert((0, Instant::now()));
            if entry.1.elapsed() >= WINDOW {
                *entry = (0, Instant::now());
            }
            entry.0 += 1;
        }
    }

    pub fn succeeded(&self, account: &str) {
        if let Ok(mut map) = self.failures.lock() {
            map.remove(&format!("a:{}", account.to_lowercase()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit() {
        let t = Throttle::default();
        let ip = "127.0.0.1".parse().unwrap();
        for _ in 0..MAX_PER_ACCOUNT {
            assert!(t.blocked("A@x.org", ip).is_none());
            t.failed("a@x.org", ip);
        }
        assert!(t.blocked("a@X.org", ip).is_some_and(|s| s > 0));
        t.succeeded("a@x.org");
        assert!(t.blocked("a@x.org", ip).is_none());
    }
}
