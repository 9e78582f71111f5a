//! The one way to make an outbound HTTP call whose destination a tenant can
//! steer (channel provider APIs, AI providers and embeddings, any future
//! webhook-out): [`Egress`] owns the HTTP clients and refuses to reach the
//! platform's own network.
//!
//! - Every address a host name resolves to is checked by our DNS resolver,
//!   which hands the connector only the allowed ones: the address checked is
//!   the address connected to, so DNS rebinding between a check and the
//!   connect cannot happen.
//! - IP literals skip DNS (hyper connects to them directly), so the URL's
//!   host is checked before every request. The URL parser has already turned
//!   `127.1`, `2130706433`, `0x7f.0.0.1` and `017700000001` into `127.0.0.1`.
//! - Loopback, private, link-local, shared (CGNAT), multicast, unspecified,
//!   broadcast, documentation, benchmarking and reserved ranges are refused,
//!   IPv4 and IPv6 alike; IPv6 forms that embed an IPv4 address (mapped,
//!   compatible, NAT64, 6to4) are judged by that address. Cloud metadata
//!   endpoints are refused even when private networks are allowed.
//! - Redirects are never followed (a 3xx is an error), proxies from the
//!   environment are not used, connect and total time are bounded and
//!   bodies are read with a size cap.
//!
//! `OUTBOUND_ALLOW_PRIVATE_NETWORKS=true` lets a test, staging or
//! single-company deployment reach loopback and private networks (fake
//! providers on 127.0.0.1, Ollama on localhost).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Who may be reached (`OUTBOUND_ALLOW_PRIVATE_NETWORKS`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    /// Loopback, private, link-local, CGNAT and unique-local addresses are
    /// allowed (never cloud metadata, multicast or reserved ranges).
    pub allow_private_networks: bool,
}

/// Longest body read from a channel provider's answer.
pub const CHANNEL_MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// Longest body read from an AI provider's successful answer: a batch of
/// 64 embeddings of 3,072 dimensions is about 2.5 MB of JSON; this leaves
/// room for larger batches and dimensions.
pub const LLM_MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// Longest error body read from any provider (only a short message is kept).
pub const ERROR_MAX_RESPONSE_BYTES: usize = 64 * 1024;

const CHANNEL_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const CHANNEL_TOTAL_TIMEOUT: Duration = Duration::from_secs(20);
const LLM_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocked {
    Loopback,
    Private,
    LinkLocal,
    SharedCgnat,
    UniqueLocal,
    Unspecified,
    Multicast,
    Broadcast,
    Documentation,
    Benchmarking,
    Reserved,
    CloudMetadata,
}

impl Blocked {
    /// Whether `OUTBOUND_ALLOW_PRIVATE_NETWORKS` lifts this refusal.
    pub fn is_private_network(self) -> bool {
        matches!(
            self,
            Blocked::Loopback
                | Blocked::Private
                | Blocked::LinkLocal
                | Blocked::SharedCgnat
                | Blocked::UniqueLocal
        )
    }
}

/// Whether the refused address is the URL's host itself or what its name
/// resolved to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    Is,
    ResolvesTo,
}

impl std::fmt::Display for How {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            How::Is => "is",
            How::ResolvesTo => "resolves to",
        })
    }
}

impl std::fmt::Display for Blocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Blocked::Loopback => "a loopback address",
            Blocked::Private => "a private network address",
            Blocked::LinkLocal => "a link-local address",
            Blocked::SharedCgnat => "a shared (carrier-grade NAT) address",
            Blocked::UniqueLocal => "a unique local (private) IPv6 address",
            Blocked::Unspecified => "an unspecified address",
            Blocked::Multicast => "a multicast address",
            Blocked::Broadcast => "a broadcast address",
            Blocked::Documentation => "a documentation address",
            Blocked::Benchmarking => "a benchmarking address",
            Blocked::Reserved => "a reserved address",
            Blocked::CloudMetadata => "a cloud metadata address",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    /// The destination is inside a range outbound calls may not reach.
    #[error("address not allowed: {host} {how} {reason}")]
    NotAllowed {
        host: String,
        how: How,
        reason: Blocked,
    },
    #[error("address not allowed: only http and https URLs with a host can be called")]
    BadUrl,
    #[error("the server answered with a redirect (HTTP {0}); redirects are not followed")]
    Redirect(u16),
    #[error("the response is larger than {0} bytes")]
    TooLarge(usize),
}

impl EgressError {
    /// Finds an egress refusal in an error's chain of sources (our DNS
    /// resolver's error arrives wrapped by reqwest and hyper).
    pub fn find<'a>(mut e: &'a (dyn std::error::Error + 'static)) -> Option<&'a EgressError> {
        loop {
            if let Some(found) = e.downcast_ref::<EgressError>() {
                return Some(found);
            }
            e = e.source()?;
        }
    }
}

const fn v4_in(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    (ip.to_bits() & mask) == (u32::from_be_bytes(net) & mask)
}

const fn v6_in(ip: Ipv6Addr, net: [u16; 8], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix)
    };
    let n = Ipv6Addr::new(
        net[0], net[1], net[2], net[3], net[4], net[5], net[6], net[7],
    );
    (ip.to_bits() & mask) == (n.to_bits() & mask)
}

/// Why an IPv4 address may not be reached, or `None` for a public one.
pub fn classify_v4(ip: Ipv4Addr) -> Option<Blocked> {
    const METADATA: &[([u8; 4], u32)] = &[
        // AWS, GCP, Azure IMDS, OpenStack, Oracle (and AWS's DNS/NTP there).
        ([169, 254, 169, 0], 24),
        // AWS ECS task metadata.
        ([169, 254, 170, 0], 24),
        // Azure WireServer.
        ([168, 63, 129, 16], 32),
        // Alibaba Cloud.
        ([100, 100, 100, 200], 32),
    ];
    if METADATA.iter().any(|(net, p)| v4_in(ip, *net, *p)) {
        return Some(Blocked::CloudMetadata);
    }
    let ranges: &[([u8; 4], u32, Blocked)] = &[
        ([0, 0, 0, 0], 8, Blocked::Unspecified),
        ([127, 0, 0, 0], 8, Blocked::Loopback),
        ([10, 0, 0, 0], 8, Blocked::Private),
        ([172, 16, 0, 0], 12, Blocked::Private),
        ([192, 168, 0, 0], 16, Blocked::Private),
        ([100, 64, 0, 0], 10, Blocked::SharedCgnat),
        ([169, 254, 0, 0], 16, Blocked::LinkLocal),
        ([192, 0, 0, 0], 24, Blocked::Reserved),
        ([192, 0, 2, 0], 24, Blocked::Documentation),
        ([198, 51, 100, 0], 24, Blocked::Documentation),
        ([203, 0, 113, 0], 24, Blocked::Documentation),
        ([198, 18, 0, 0], 15, Blocked::Benchmarking),
        ([192, 88, 99, 0], 24, Blocked::Reserved),
        ([224, 0, 0, 0], 4, Blocked::Multicast),
        ([255, 255, 255, 255], 32, Blocked::Broadcast),
        ([240, 0, 0, 0], 4, Blocked::Reserved),
    ];
    ranges
        .iter()
        .find(|(net, p, _)| v4_in(ip, *net, *p))
        .map(|(_, _, why)| *why)
}

/// Why an IPv6 address may not be reached, or `None` for a public one.
/// Forms embedding an IPv4 address are judged by it.
pub fn classify_v6(ip: Ipv6Addr) -> Option<Blocked> {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some(Blocked::Unspecified);
    }
    if ip.is_loopback() {
        return Some(Blocked::Loopback);
    }
    let embedded = |hi: u16, lo: u16| {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    // ::ffff:a.b.c.d (mapped) and ::ffff:0:a.b.c.d (translated).
    if v6_in(ip, [0, 0, 0, 0, 0, 0xffff, 0, 0], 96) || v6_in(ip, [0, 0, 0, 0, 0xffff, 0, 0, 0], 96)
    {
        return classify_v4(embedded(s[6], s[7]));
    }
    // ::a.b.c.d (compatible, deprecated): nothing legitimate lives there.
    if v6_in(ip, [0; 8], 96) {
        return Some(classify_v4(embedded(s[6], s[7])).unwrap_or(Blocked::Reserved));
    }
    // NAT64 well-known prefix.
    if v6_in(ip, [0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96) {
        return classify_v4(embedded(s[6], s[7]));
    }
    // 6to4: the IPv4 address follows the prefix.
    if v6_in(ip, [0x2002, 0, 0, 0, 0, 0, 0, 0], 16) {
        return classify_v4(embedded(s[1], s[2]));
    }
    // AWS IMDS over IPv6 (inside fc00::/7, but never allowed).
    if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        return Some(Blocked::CloudMetadata);
    }
    let ranges: &[([u16; 8], u32, Blocked)] = &[
        // Local-use NAT64.
        ([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48, Blocked::Private),
        ([0x100, 0, 0, 0, 0, 0, 0, 0], 64, Blocked::Reserved),
        // IETF protocol assignments, Teredo (which hides an IPv4 address), ORCHID.
        ([0x2001, 0, 0, 0, 0, 0, 0, 0], 23, Blocked::Reserved),
        (
            [0x2001, 0xdb8, 0, 0, 0, 0, 0, 0],
            32,
            Blocked::Documentation,
        ),
        ([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, Blocked::Documentation),
        ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, Blocked::UniqueLocal),
        ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, Blocked::LinkLocal),
        // Site-local (deprecated, still routed inside some networks).
        ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, Blocked::Private),
        ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, Blocked::Multicast),
    ];
    if let Some((_, _, why)) = ranges.iter().find(|(net, p, _)| v6_in(ip, *net, *p)) {
        return Some(*why);
    }
    // Only global unicast (2000::/3) is assigned on the internet.
    if !v6_in(ip, [0x2000, 0, 0, 0, 0, 0, 0, 0], 3) {
        return Some(Blocked::Reserved);
    }
    None
}

pub fn classify(ip: IpAddr) -> Option<Blocked> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

impl EgressPolicy {
    /// `Err` with the reason when `ip` may not be reached under this policy.
    pub fn check_ip(self, ip: IpAddr) -> Result<(), Blocked> {
        match classify(ip) {
            None => Ok(()),
            Some(why) if self.allow_private_networks && why.is_private_network() => Ok(()),
            Some(why) => Err(why),
        }
    }

    /// Checks a URL before it is requested: http(s) only, and an IP literal
    /// host must be allowed (names are checked when they are resolved).
    pub fn check_url(self, url: &reqwest::Url) -> Result<(), EgressError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(EgressError::BadUrl);
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or(EgressError::BadUrl)?;
        // The parser already normalised every IPv4 spelling to dotted
        // decimal and brackets IPv6; anything else is a name.
        let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        else {
            return Ok(());
        };
        self.check_ip(ip).map_err(|reason| EgressError::NotAllowed {
            host: ip.to_string(),
            how: How::Is,
            reason,
        })
    }

    /// Resolves `host` and keeps the addresses this policy allows; an error
    /// when none is left.
    pub async fn resolve(
        self,
        host: &str,
    ) -> Result<Vec<SocketAddr>, Box<dyn std::error::Error + Send + Sync>> {
        let found: Vec<SocketAddr> = tokio::net::lookup_host((host, 0)).await?.collect();
        let mut refused = None;
        let allowed: Vec<SocketAddr> = found
            .into_iter()
            .filter(|a| match self.check_ip(a.ip()) {
                Ok(()) => true,
                Err(why) => {
                    refused.get_or_insert(why);
                    false
                }
            })
            .collect();
        match (allowed.is_empty(), refused) {
            (true, Some(reason)) => Err(Box::new(EgressError::NotAllowed {
                host: host.to_owned(),
                how: How::ResolvesTo,
                reason,
            })),
            (true, None) => Err(format!("{host} has no address").into()),
            (false, _) => Ok(allowed),
        }
    }
}

/// reqwest's DNS hook: every connection goes to an address checked here.
#[derive(Debug, Clone, Copy)]
struct GuardedResolver(EgressPolicy);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = policy.resolve(&host).await?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

impl reqwest_oai::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest_oai::dns::Name) -> reqwest_oai::dns::Resolving {
        let policy = self.0;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = policy.resolve(&host).await?;
            Ok(Box::new(addrs.into_iter()) as reqwest_oai::dns::Addrs)
        })
    }
}

/// A failed outbound call.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Refused by the guard (address, redirect, size): retrying the same
    /// call cannot help.
    #[error(transparent)]
    Refused(#[from] EgressError),
    #[error("the request timed out")]
    Timeout,
    /// Network failure, without the URL (a Telegram URL holds the bot token).
    #[error("{0}")]
    Network(String),
}

impl SendError {
    fn from_reqwest(e: reqwest::Error) -> Self {
        if let Some(refused) = EgressError::find(&e) {
            return SendError::Refused(refused.clone());
        }
        if e.is_timeout() {
            return SendError::Timeout;
        }
        let e = e.without_url();
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        SendError::Network(text)
    }
}

/// An answer read whole (up to its cap).
#[derive(Debug, Clone)]
pub struct Fetched {
    pub status: reqwest::StatusCode,
    pub body: Vec<u8>,
}

/// The outbound HTTP clients of one process, built for one policy. Cheap
/// to clone (the connection pools are shared).
#[derive(Debug, Clone)]
pub struct Egress {
    policy: EgressPolicy,
    /// reqwest 0.12: channel providers.
    channels: reqwest::Client,
    /// reqwest 0.13: the transport under async-openai.
    llm: reqwest_oai::Client,
}

impl Egress {
    pub fn new(policy: EgressPolicy) -> Result<Self, String> {
        let resolver = Arc::new(GuardedResolver(policy));
        let channels = reqwest::Client::builder()
            .dns_resolver(resolver.clone())
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(CHANNEL_CONNECT_TIMEOUT)
            .timeout(CHANNEL_TOTAL_TIMEOUT)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        crate::llm::ensure_crypto_provider();
        let llm = reqwest_oai::Client::builder()
            .dns_resolver(resolver)
            .redirect(reqwest_oai::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(LLM_CONNECT_TIMEOUT)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Self {
            policy,
            channels,
            llm,
        })
    }

    pub fn policy(&self) -> EgressPolicy {
        self.policy
    }

    /// A request to a channel provider; send it with [`Egress::send`]
    /// (never `.send()` directly, which skips the IP literal check and the
    /// size cap).
    pub fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        self.channels.request(method, url)
    }

    /// Sends a request built with [`Egress::request`]: the URL is checked,
    /// a redirect is an error, the body is read up to `max_bytes`.
    pub async fn send(
        &self,
        request: reqwest::RequestBuilder,
        max_bytes: usize,
    ) -> Result<Fetched, SendError> {
        let request = request.build().map_err(SendError::from_reqwest)?;
        self.policy.check_url(request.url())?;
        let mut response = self
            .channels
            .execute(request)
            .await
            .map_err(SendError::from_reqwest)?;
        let status = response.status();
        if status.is_redirection() {
            return Err(EgressError::Redirect(status.as_u16()).into());
        }
        let cap = if status.is_success() {
            max_bytes
        } else {
            max_bytes.min(ERROR_MAX_RESPONSE_BYTES)
        };
        if response.content_length().is_some_and(|n| n > cap as u64) {
            return Err(EgressError::TooLarge(cap).into());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(SendError::from_reqwest)? {
            if body.len() + chunk.len() > cap {
                return Err(EgressError::TooLarge(cap).into());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Fetched { status, body })
    }

    /// The AI providers' transport (used by `llm::SingleShot`, which checks
    /// each URL and caps each body).
    pub(crate) fn llm_http(&self) -> &reqwest_oai::Client {
        &self.llm
    }
}

/// Reads an AI provider's body up to `cap` bytes.
pub(crate) async fn read_capped_oai(
    response: &mut reqwest_oai::Response,
    cap: usize,
) -> Result<Vec<u8>, ReadError> {
    if response.content_length().is_some_and(|n| n > cap as u64) {
        return Err(ReadError::TooLarge(EgressError::TooLarge(cap)));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(ReadError::Http)? {
        if body.len() + chunk.len() > cap {
            return Err(ReadError::TooLarge(EgressError::TooLarge(cap)));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[derive(Debug)]
pub(crate) enum ReadError {
    TooLarge(EgressError),
    Http(reqwest_oai::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict() -> EgressPolicy {
        EgressPolicy::default()
    }

    fn open() -> EgressPolicy {
        EgressPolicy {
            allow_private_networks: true,
        }
    }

    fn url_check(policy: EgressPolicy, url: &str) -> Result<(), EgressError> {
        let url = reqwest::Url::parse(url).map_err(|_| EgressError::BadUrl)?;
        policy.check_url(&url)
    }

    #[test]
    fn internal_ipv4_ranges_are_refused() {
        let cases: &[(&str, Blocked)] = &[
            ("127.0.0.1", Blocked::Loopback),
            ("127.255.255.254", Blocked::Loopback),
            ("10.0.0.1", Blocked::Private),
            ("172.16.0.1", Blocked::Private),
            ("172.31.255.255", Blocked::Private),
            ("192.168.1.1", Blocked::Private),
            ("100.64.0.1", Blocked::SharedCgnat),
            ("169.254.1.1", Blocked::LinkLocal),
            ("169.254.169.254", Blocked::CloudMetadata),
            ("169.254.170.2", Blocked::CloudMetadata),
            ("168.63.129.16", Blocked::CloudMetadata),
            ("100.100.100.200", Blocked::CloudMetadata),
            ("0.0.0.0", Blocked::Unspecified),
            ("0.1.2.3", Blocked::Unspecified),
            ("224.0.0.1", Blocked::Multicast),
            ("255.255.255.255", Blocked::Broadcast),
            ("240.0.0.1", Blocked::Reserved),
            ("192.0.0.8", Blocked::Reserved),
            ("192.0.2.1", Blocked::Documentation),
            ("198.51.100.7", Blocked::Documentation),
            ("203.0.113.9", Blocked::Documentation),
            ("198.18.0.1", Blocked::Benchmarking),
            ("198.19.255.255", Blocked::Benchmarking),
        ];
        for (ip, why) in cases {
            let ip: IpAddr = ip.parse().expect("test address");
            assert_eq!(classify(ip), Some(*why), "{ip}");
        }
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "198.20.0.1",
        ] {
            let ip: IpAddr = public.parse().expect("test address");
            assert_eq!(classify(ip), None, "{public}");
        }
    }

    #[test]
    fn internal_ipv6_ranges_and_embedded_ipv4_are_refused() {
        let cases: &[(&str, Blocked)] = &[
            ("::1", Blocked::Loopback),
            ("::", Blocked::Unspecified),
            ("::ffff:127.0.0.1", Blocked::Loopback),
            ("::ffff:10.0.0.1", Blocked::Private),
            ("::ffff:169.254.169.254", Blocked::CloudMetadata),
            ("::ffff:0:127.0.0.1", Blocked::Loopback),
            ("::127.0.0.1", Blocked::Loopback),
            ("::8.8.8.8", Blocked::Reserved),
            ("64:ff9b::7f00:1", Blocked::Loopback),
            ("64:ff9b::a9fe:a9fe", Blocked::CloudMetadata),
            ("64:ff9b:1::1", Blocked::Private),
            ("2002:7f00:1::", Blocked::Loopback),
            ("2002:c0a8:101::1", Blocked::Private),
            ("2001::1", Blocked::Reserved),
            ("2001:db8::1", Blocked::Documentation),
            ("3fff::1", Blocked::Documentation),
            ("fc00::1", Blocked::UniqueLocal),
            ("fd12:3456::1", Blocked::UniqueLocal),
            ("fd00:ec2::254", Blocked::CloudMetadata),
            ("fe80::1", Blocked::LinkLocal),
            ("fec0::1", Blocked::Private),
            ("ff02::1", Blocked::Multicast),
            ("100::1", Blocked::Reserved),
            ("4000::1", Blocked::Reserved),
        ];
        for (ip, why) in cases {
            let ip: IpAddr = ip.parse().expect("test address");
            assert_eq!(classify(ip), Some(*why), "{ip}");
        }
        for public in [
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            let ip: IpAddr = public.parse().expect("test address");
            assert_eq!(classify(ip), None, "{public}");
        }
    }

    #[test]
    fn odd_textual_forms_of_loopback_are_refused() {
        for url in [
            "http://127.0.0.1/",
            "http://127.1/",
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0x7f.0.0.1/",
            "http://017700000001/",
            "http://0177.0.0.1/",
            "http://127.0.0.1.:8080/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[0:0:0:0:0:ffff:127.0.0.1]/",
            "https://169.254.169.254/latest/meta-data/",
            "http://10.0.0.1/",
            "http://0/",
        ] {
            let refused = url_check(strict(), url);
            assert!(
                matches!(refused, Err(EgressError::NotAllowed { .. })),
                "{url}: {refused:?}"
            );
        }
        assert_eq!(
            url_check(strict(), "https://graph.facebook.com/v21.0/x"),
            Ok(())
        );
        assert_eq!(url_check(strict(), "https://8.8.8.8/"), Ok(()));
        assert_eq!(
            url_check(strict(), "ftp://example.com/"),
            Err(EgressError::BadUrl)
        );
    }

    #[test]
    fn allowing_private_networks_never_opens_metadata_or_reserved_ranges() {
        for ok in [
            "http://127.0.0.1:9/",
            "http://10.0.0.1/",
            "http://[::1]/",
            "http://[fd12::1]/",
        ] {
            assert_eq!(url_check(open(), ok), Ok(()), "{ok}");
        }
        for refused in [
            "http://169.254.169.254/",
            "http://[fd00:ec2::254]/",
            "http://224.0.0.1/",
            "http://0.0.0.0/",
        ] {
            assert!(url_check(open(), refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn refusals_name_the_host_and_the_reason() {
        let e = url_check(strict(), "http://127.1/").expect_err("refused");
        assert_eq!(
            e.to_string(),
            "address not allowed: 127.0.0.1 is a loopback address"
        );
        let named = EgressError::NotAllowed {
            host: "localhost".into(),
            how: How::ResolvesTo,
            reason: Blocked::Loopback,
        };
        assert_eq!(
            named.to_string(),
            "address not allowed: localhost resolves to a loopback address"
        );
    }

    #[tokio::test]
    async fn names_resolving_to_loopback_are_refused_at_resolution() {
        let refused = strict().resolve("localhost").await.expect_err("refused");
        let found = EgressError::find(refused.as_ref()).cloned();
        assert!(
            matches!(
                found,
                Some(EgressError::NotAllowed {
                    how: How::ResolvesTo,
                    reason: Blocked::Loopback,
                    ..
                })
            ),
            "{refused}"
        );
        let allowed = open().resolve("localhost").await.expect("allowed");
        assert!(allowed.iter().all(|a| a.ip().is_loopback()));
    }

    #[tokio::test]
    async fn a_refused_connection_is_reported_as_such_and_never_made() {
        let canary = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = canary.local_addr().expect("addr").port();
        let egress = Egress::new(strict()).expect("client");
        for url in [
            format!("http://127.0.0.1:{port}/"),
            format!("http://localhost:{port}/"),
            format!("http://2130706433:{port}/"),
        ] {
            let err = egress
                .send(egress.request(reqwest::Method::GET, &url), 1024)
                .await
                .expect_err("refused");
            assert!(
                matches!(err, SendError::Refused(EgressError::NotAllowed { .. })),
                "{url}: {err}"
            );
        }
        let accepted = tokio::time::timeout(Duration::from_millis(200), canary.accept()).await;
        assert!(accepted.is_err(), "the canary was contacted");
    }
}
