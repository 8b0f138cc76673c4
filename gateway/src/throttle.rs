//! Throttling of sign-in and sign-up attempts, counted in the central database so
//! the limits hold across every gateway. An attempt is counted before its password
//! is checked (one atomic upsert per key), so a burst gets no more guesses than the
//! limit however many requests arrive at once; past a limit the caller gets `429`
//! with `retry-after` (the seconds until that key's window ends). Client addresses
//! are keyed whole for IPv4 and by /64 for IPv6 (one subscriber's block).

use crate::error::GatewayError;
use deadpool_postgres::GenericClient;
use std::net::IpAddr;
use std::time::Duration;

/// One counter to hit: its key, window and limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub key: String,
    pub window: Duration,
    pub limit: u32,
}

impl Check {
    pub fn new(key: String, window: Duration, limit: u32) -> Self {
        Self { key, window, limit }
    }
}

/// A client address as counted: IPv4 (and IPv4-mapped IPv6) whole, IPv6 by /64.
pub fn address_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// The checks of a sign-in attempt (or a registration naming an existing account),
/// in the order they are counted: first those bound to this address, then the
/// account's own. A flood from one address stops at its first group, so it never
/// uses up the account's allowance: its owner still signs in from elsewhere.
pub fn sign_in_checks(
    limits: &crate::config::Limits,
    account: &str,
    ip: IpAddr,
) -> [Vec<Check>; 2] {
    let address = address_key(ip);
    let window = limits.login_window;
    [
        vec![
            Check::new(
                format!("login:acct-addr:{account}|{address}"),
                window,
                limits.login_per_account_address,
            ),
            Check::new(
                format!("login:addr:{address}"),
                window,
                limits.login_per_address,
            ),
        ],
        vec![Check::new(
            format!("login:acct:{account}"),
            window,
            limits.login_per_account,
        )],
    ]
}

/// The checks of an open sign-up: per address and fleet-wide, per hour.
pub fn sign_up_checks(limits: &crate::config::Limits, ip: IpAddr) -> Vec<Check> {
    const HOUR: Duration = Duration::from_secs(3600);
    vec![
        Check::new(
            format!("signup:addr:{}", address_key(ip)),
            HOUR,
            limits.signups_per_address,
        ),
        Check::new("signup:all".into(), HOUR, limits.signups_fleet),
    ]
}

/// Counts one attempt against each check (one statement, keys in a fixed order so
/// concurrent attempts never deadlock); `Throttled` when any is over its limit.
pub async fn hit(client: &impl GenericClient, checks: &[Check]) -> Result<(), GatewayError> {
    let mut sorted: Vec<&Check> = checks.iter().collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    let keys: Vec<&str> = sorted.iter().map(|c| c.key.as_str()).collect();
    let windows: Vec<f64> = sorted.iter().map(|c| c.window.as_secs_f64()).collect();
    let rows = client
        .query(
            "INSERT INTO auth_throttle AS t (key, window_end, hits) \
             SELECT k, now() + make_interval(secs => w), 1 \
             FROM unnest($1::text[], $2::float8[]) AS u(k, w) ORDER BY k \
             ON CONFLICT (key) DO UPDATE SET \
                 hits = CASE WHEN t.window_end <= now() THEN 1 ELSE t.hits + 1 END, \
                 window_end = CASE WHEN t.window_end <= now() THEN EXCLUDED.window_end ELSE t.window_end END \
             RETURNING key, hits, ceil(extract(epoch FROM window_end - now()))::float8",
            &[&keys, &windows],
        )
        .await
        .map_err(GatewayError::from_db)?;
    let mut wait: Option<u32> = None;
    for row in &rows {
        let key: &str = row.get(0);
        let hits: i32 = row.get(1);
        let left: f64 = row.get(2);
        let over = checks
            .iter()
            .find(|c| c.key == key)
            .is_some_and(|c| hits.unsigned_abs() > c.limit);
        if over {
            let secs = left.clamp(1.0, 86_400.0) as u32;
            wait = Some(wait.map_or(secs, |w| w.max(secs)));
        }
    }
    match wait {
        Some(secs) => Err(GatewayError::Throttled(secs)),
        None => Ok(()),
    }
}

/// Takes back one attempt from each key (a sign-in that succeeded).
pub async fn refund(client: &impl GenericClient, checks: &[Check]) -> Result<(), GatewayError> {
    let keys: Vec<&str> = checks.iter().map(|c| c.key.as_str()).collect();
    client
        .execute(
            "UPDATE auth_throttle SET hits = greatest(hits - 1, 0) WHERE key = ANY($1) AND window_end > now()",
            &[&keys],
        )
        .await
        .map_err(GatewayError::from_db)?;
    Ok(())
}

/// Deletes counters whose window is over (run now and then by every gateway).
pub async fn prune(client: &impl GenericClient) -> Result<u64, GatewayError> {
    client
        .execute(
            "DELETE FROM auth_throttle WHERE window_end < now() - interval '1 minute'",
            &[],
        )
        .await
        .map_err(GatewayError::from_db)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_keyed_by_v4_and_v6_64() {
        let key = |s: &str| address_key(s.parse().unwrap());
        assert_eq!(key("203.0.113.9"), "203.0.113.9");
        assert_eq!(key("::ffff:203.0.113.9"), "203.0.113.9");
        assert_eq!(
            key("2001:db8:1:2:aaaa::1"),
            key("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_eq!(key("2001:db8:1:2::1"), "2001:db8:1:2::/64");
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
    }

    #[test]
    fn a_flood_from_one_address_is_stopped_before_the_account_wide_count() {
        let limits = crate::config::Limits {
            signups_per_address: 3,
            signups_fleet: 100,
            provisioning_max: 10,
            login_per_account_address: 5,
            login_per_account: 50,
            login_per_address: 30,
            login_window: Duration::from_secs(900),
            hash_queue: 16,
        };
        let [first, second] = sign_in_checks(&limits, "a@x.org", "198.51.100.1".parse().unwrap());
        assert!(first.iter().all(|c| c.key.contains("198.51.100.1")));
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].key, "login:acct:a@x.org");
        assert_eq!(
            sign_up_checks(&limits, "2001:db8::1".parse().unwrap())[0].key,
            "signup:addr:2001:db8:0:0::/64"
        );
    }
}
