//! Which address a request comes from when it passed through reverse proxies we trust.

use std::net::IpAddr;
use std::str::FromStr;

/// An IP network `addr/prefix` (a bare address is `/32` or `/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

/// Why a text is not an [`IpNet`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not an IP address or CIDR range (10.0.0.0/8, ::1)")]
pub struct InvalidIpNet(pub String);

impl IpNet {
    /// Whether `ip` lies in this network (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpNet {
    type Err = InvalidIpNet;

    fn from_str(s: &str) -> Result<Self, InvalidIpNet> {
        let bad = || InvalidIpNet(s.to_owned());
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.trim().parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
        };
        Ok(Self { addr, prefix })
    }
}

/// The client of a request from `peer` carrying `forwarded_for` (the `X-Forwarded-For` values,
/// comma-separated, nearest proxy last): `peer` itself unless it is one of `trusted`; then the
/// nearest address in the header that is not a trusted proxy (what a proxy we trust saw). A
/// header that is missing, or whose entry at that place is not an IP address, leaves `peer`.
pub fn client_addr(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpNet]) -> IpAddr {
    let trusted_ip = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !trusted_ip(peer) {
        return peer;
    }
    let Some(header) = forwarded_for else { return peer };
    for entry in header.rsplit(',').map(str::trim) {
        match entry.parse::<IpAddr>() {
            Ok(ip) if trusted_ip(ip) => continue,
            Ok(ip) => return ip,
            Err(_) => return peer,
        }
    }
    peer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn networks_contain_their_addresses() {
        let net: IpNet = "10.1.0.0/16".parse().expect("cidr");
        assert!(net.contains(ip("10.1.200.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(net.contains(ip("::ffff:10.1.0.9")));
        let one: IpNet = "127.0.0.1".parse().expect("ip");
        assert_eq!(one.prefix, 32);
        let all: IpNet = "::/0".parse().expect("cidr");
        assert!(all.contains(ip("2001:db8::1")));
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert!("proxy.local".parse::<IpNet>().is_err());
    }

    #[test]
    fn only_a_trusted_proxy_names_the_client() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("cidr")];
        let xff = Some("198.51.100.7, 10.0.0.3");
        assert_eq!(client_addr(ip("10.0.0.2"), xff, &trusted), ip("198.51.100.7"));
        assert_eq!(client_addr(ip("203.0.113.9"), xff, &trusted), ip("203.0.113.9"), "untrusted peer");
        // A client cannot pick its address by prepending to the header: the nearest untrusted wins.
        assert_eq!(client_addr(ip("10.0.0.2"), Some("1.2.3.4, 198.51.100.7"), &trusted), ip("198.51.100.7"));
        assert_eq!(client_addr(ip("10.0.0.2"), None, &trusted), ip("10.0.0.2"));
        assert_eq!(client_addr(ip("10.0.0.2"), Some("garbage"), &trusted), ip("10.0.0.2"));
        assert_eq!(client_addr(ip("10.0.0.2"), xff, &[]), ip("10.0.0.2"), "no proxies trusted");
    }
}
