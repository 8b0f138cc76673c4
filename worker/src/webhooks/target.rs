//! Where a webhook may be sent: an `https` URL (or `http` where the operator
//! allows private targets) without credentials in it, whose host is not an
//! internal address. Host names are checked again when a delivery connects
//! (`httpkit::Resolver` keeps public addresses only), so a name that later
//! resolves inside the network is refused too.

use http::Uri;
use std::net::IpAddr;

/// The longest URL accepted.
pub const MAX_URL: usize = 2000;

/// `raw` as a delivery target, or why it cannot be one.
pub fn check(raw: &str, allow_private: bool) -> Result<Uri, String> {
    if raw.is_empty() || raw.len() > MAX_URL {
        return Err(format!("`url` must be 1 to {MAX_URL} characters."));
    }
    let uri: Uri = raw.parse().map_err(|_| "`url` is not a URL.".to_owned())?;
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if allow_private => {}
        _ => return Err("`url` must be an https:// URL.".into()),
    }
    let authority = uri
        .authority()
        .ok_or_else(|| "`url` has no host.".to_owned())?;
    if authority.as_str().contains('@') {
        return Err(
            "`url` may not carry credentials; the signature authenticates deliveries.".into(),
        );
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.is_empty() {
        return Err("`url` has no host.".into());
    }
    if !allow_private {
        let local_name = host.eq_ignore_ascii_case("localhost")
            || host.to_ascii_lowercase().ends_with(".localhost");
        let internal_ip = host
            .parse::<IpAddr>()
            .is_ok_and(|ip| !httpkit::is_public(ip));
        if local_name || internal_ip {
            return Err(format!(
                "`url` points at an internal address ({host}); webhooks go to public addresses only."
            ));
        }
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn internal_and_credentialed_targets_are_refused() {
        for bad in [
            "http://example.org/hook",
            "https://127.0.0.1/hook",
            "https://[::1]/hook",
            "https://10.0.0.5:8443/hook",
            "https://169.254.169.254/latest/meta-data",
            "https://localhost/hook",
            "https://api.localhost/hook",
            "https://user:pw@example.org/hook",
            "ftp://example.org/",
            "not a url",
            "",
        ] {
            assert!(check(bad, false).is_err(), "{bad}");
        }
        assert!(check("https://hooks.example.org/medicalpro", false).is_ok());
        assert!(check("https://93.184.215.14:8443/in", false).is_ok());
        assert!(check("http://127.0.0.1:9000/in", true).is_ok());
        assert!(check("https://u@127.0.0.1/", true).is_err());
    }
}
