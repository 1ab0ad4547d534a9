//! The host of a server URL (`imap://`, `smtp://`, ...), as a connection needs it.

use std::net::IpAddr;

/// The host of `url` to connect to (an IPv6 address without its brackets) and whether it is
/// this machine: `localhost`, 127.0.0.0/8 or ::1 (also written ::ffff:127.x.y.z). `None` when
/// the URL has no host.
///
/// For schemes the URL standard does not know (all of ours), an IPv4 address is an opaque host;
/// it is recognised here all the same.
pub fn url_host(url: &url::Url) -> Option<(String, bool)> {
    let host = match url.host()? {
        url::Host::Domain("") => return None,
        url::Host::Domain(name) => name.to_owned(),
        url::Host::Ipv4(ip) => ip.to_string(),
        url::Host::Ipv6(ip) => ip.to_string(),
    };
    Some((host.clone(), is_loopback(&host)))
}

/// `localhost` or a loopback address (IPv4-mapped IPv6 included).
pub fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.to_canonical().is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_loopback_of_server_urls() {
        let host = |u: &str| url_host(&url::Url::parse(u).expect("URL"));
        assert_eq!(host("imap://[::1]:143"), Some(("::1".into(), true)));
        assert_eq!(host("imap://127.0.0.1"), Some(("127.0.0.1".into(), true)));
        assert_eq!(host("smtp://LOCALHOST:25"), Some(("LOCALHOST".into(), true)));
        assert_eq!(host("imaps://imap.example.org"), Some(("imap.example.org".into(), false)));
        assert_eq!(host("smtp://[2001:db8::25]"), Some(("2001:db8::25".into(), false)));
        assert_eq!(host("smtp://"), None);
        assert!(is_loopback("::ffff:127.0.0.1") && !is_loopback("localhost.example.org"));
    }
}
