//! The client address that rate limits count against.
//!
//! `X-Forwarded-For` is written by whoever sent the request, so only the
//! hops appended by proxies we run can be believed: the header is read
//! right to left, skipping our own proxies, and the first address that is
//! not one of them is the client. Without trusted proxies (the default) or
//! when the peer is not one of them, the peer address is the client.

use std::net::IpAddr;

use ipnet::IpNet;

fn trusted(ip: IpAddr, proxies: &[IpNet]) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    proxies.iter().any(|net| net.contains(&ip))
}

/// One `X-Forwarded-For` entry: an address, possibly with a port or brackets.
fn parse_hop(raw: &str) -> Option<IpAddr> {
    let raw = raw.trim();
    if let Ok(ip) = raw.parse::<IpAddr>() {
        return Some(ip);
    }
    raw.parse::<std::net::SocketAddr>()
        .ok()
        .map(|s| s.ip())
        .or_else(|| {
            raw.strip_prefix('[')
                .and_then(|r| r.split(']').next())
                .and_then(|r| r.parse().ok())
        })
}

/// The client address, from the peer address and the `X-Forwarded-For`
/// values (in the order the headers came).
pub fn client_ip<'a>(
    peer: Option<IpAddr>,
    forwarded_for: impl IntoIterator<Item = &'a str>,
    proxies: &[IpNet],
) -> Option<IpAddr> {
    let peer = peer?;
    if !trusted(peer, proxies) {
        return Some(peer);
    }
    let hops: Vec<&str> = forwarded_for
        .into_iter()
        .flat_map(|h| h.split(','))
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        // An unreadable hop was not written by our proxies: stop at the last good one.
        let Some(ip) = parse_hop(hop) else {
            break;
        };
        client = ip;
        if !trusted(ip, proxies) {
            break;
        }
    }
    Some(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().filter_map(|s| s.parse().ok()).collect()
    }

    fn ip(s: &str) -> Option<IpAddr> {
        s.parse().ok()
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client() {
        assert_eq!(
            client_ip(ip("203.0.113.9"), ["1.2.3.4"], &[]),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn an_untrusted_peer_cannot_forward_for_anyone() {
        let proxies = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(ip("203.0.113.9"), ["1.2.3.4"], &proxies),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn the_right_most_untrusted_hop_is_the_client() {
        let proxies = nets(&["10.0.0.0/8", "192.168.1.1/32"]);
        // The client forged "6.6.6.6"; our proxies appended the real address.
        assert_eq!(
            client_ip(
                ip("10.0.0.2"),
                ["6.6.6.6, 198.51.100.7", "192.168.1.1"],
                &proxies
            ),
            ip("198.51.100.7")
        );
        // Only our proxies in the chain: the left-most of them.
        assert_eq!(
            client_ip(ip("10.0.0.2"), ["10.1.1.1"], &proxies),
            ip("10.1.1.1")
        );
        // No header at all: the proxy itself.
        assert_eq!(client_ip(ip("10.0.0.2"), [], &proxies), ip("10.0.0.2"));
        // Garbage stops the walk at the last address our proxies vouched for.
        assert_eq!(
            client_ip(ip("10.0.0.2"), ["1.1.1.1, nonsense"], &proxies),
            ip("10.0.0.2")
        );
        // Ports, brackets and IPv4-mapped peers.
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.2"), ["[2001:db8::1]:443"], &proxies),
            ip("2001:db8::1")
        );
    }
}
