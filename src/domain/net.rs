//! The host of a server URL (`imap://`, `smtp://`, ...), as a connection needs it, and URLs
//! made safe to show.

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

/// `url` safe to show: without user name, password, query and fragment (where credentials and
/// `?api_key=` live); text that is not a URL is shown as `(not a URL)`.
pub fn redacted_url(url: &str) -> String {
    let Ok(mut url) = url::Url::parse(url) else { return "(not a URL)".to_owned() };
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    url.to_string()
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
    fn urls_are_shown_without_credentials_or_query() {
        assert_eq!(
            redacted_url("https://user:s3cret@llm.example.org:8443/v1?api_key=k#x"),
            "https://llm.example.org:8443/v1"
        );
        assert_eq!(redacted_url("http://127.0.0.1:9/v1"), "http://127.0.0.1:9/v1");
        assert_eq!(redacted_url("not a url with s3cret"), "(not a URL)");
    }

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
