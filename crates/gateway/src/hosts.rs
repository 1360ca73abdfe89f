//! Which hosts a payment gateway may call (`--gateway-hosts`), and the DNS resolver that
//! enforces it when a connection is made.
//!
//! A gateway's `BaseUrl` is checked when the gateway is written and again before every
//! call ([`HostPolicy::check_url`]); the resolver of every provider HTTP client then
//! refuses a name that is not listed and drops every address that is not public unless it
//! is listed, so a second DNS answer (rebinding to 127.0.0.1 or a cloud metadata address)
//! cannot reach what the first answer was allowed to. The client ignores proxy variables,
//! so a proxy cannot route around the resolver.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// The providers' public API hosts: Stripe, Adyen's test Checkout host, and Adyen's live
/// hosts, which are per merchant (`{prefix}-checkout-live.adyenpayments.com`).
pub const DEFAULT_GATEWAY_HOSTS: &str =
    "api.stripe.com,checkout-test.adyen.com,*.adyenpayments.com";

/// One entry of the list.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Entry {
    /// A host name, exactly (lower case, no trailing dot).
    Name(String),
    /// `*.example.com`: any name ending in `.example.com` (not `example.com` itself).
    Suffix(String),
    /// An address or a network (`127.0.0.1`, `::1`, `10.0.0.0/8`): allowed as a literal
    /// host, and as what a listed name resolves to even when it is not public.
    Net(IpNet),
}

/// The hosts gateways may call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPolicy {
    entries: Vec<Entry>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HostError {
    #[error("the gateway host list is empty")]
    Empty,
    #[error("not a host name, *.suffix, address or network: {0:?}")]
    BadEntry(String),
    #[error("not an http:// or https:// URL with a host: {0}")]
    BadUrl(String),
    #[error("host {0} is not in the allowed gateway hosts (--gateway-hosts)")]
    NotAllowed(String),
}

impl Default for HostPolicy {
    fn default() -> HostPolicy {
        // The default list is a constant known to parse (a unit test holds it to that).
        HostPolicy::parse(DEFAULT_GATEWAY_HOSTS).unwrap_or(HostPolicy {
            entries: Vec::new(),
        })
    }
}

impl FromStr for HostPolicy {
    type Err = HostError;
    fn from_str(s: &str) -> Result<HostPolicy, HostError> {
        HostPolicy::parse(s)
    }
}

impl HostPolicy {
    /// Parses a comma-separated list: host names, `*.suffix` names, addresses, networks.
    pub fn parse(text: &str) -> Result<HostPolicy, HostError> {
        let mut entries = Vec::new();
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            entries.push(parse_entry(item)?);
        }
        if entries.is_empty() {
            return Err(HostError::Empty);
        }
        Ok(HostPolicy { entries })
    }

    /// The default list plus loopback by name and address (for tests and local demos).
    pub fn with_loopback() -> HostPolicy {
        let mut policy = HostPolicy::default();
        for item in ["localhost", "127.0.0.1", "::1"] {
            if let Ok(entry) = parse_entry(item) {
                policy.entries.push(entry);
            }
        }
        policy
    }

    /// Whether a host name is listed (exactly or by a suffix entry).
    pub fn name_allowed(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.entries.iter().any(|e| match e {
            Entry::Name(n) => *n == name,
            Entry::Suffix(s) => name.len() > s.len() && name.ends_with(s.as_str()),
            Entry::Net(_) => false,
        })
    }

    /// Whether an address is listed (by address or network).
    pub fn address_listed(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.entries
            .iter()
            .any(|e| matches!(e, Entry::Net(net) if net.contains(&ip)))
    }

    /// Whether a listed name may connect to this address: public addresses always,
    /// loopback, private, link-local and other special addresses only when listed.
    pub fn address_allowed(&self, ip: IpAddr) -> bool {
        is_public(canonical(ip)) || self.address_listed(ip)
    }

    /// Checks a gateway URL: http(s), and its host listed (a literal address must be
    /// listed as an address or network).
    pub fn check_url(&self, url: &str) -> Result<(), HostError> {
        let parsed = reqwest::Url::parse(url).map_err(|_| HostError::BadUrl(url.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(HostError::BadUrl(url.to_string()));
        }
        let allowed = match parsed.host() {
            Some(url::Host::Domain(name)) => self.name_allowed(name),
            Some(url::Host::Ipv4(ip)) => self.address_listed(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.address_listed(IpAddr::V6(ip)),
            None => return Err(HostError::BadUrl(url.to_string())),
        };
        if allowed {
            Ok(())
        } else {
            Err(HostError::NotAllowed(
                parsed.host_str().unwrap_or_default().to_string(),
            ))
        }
    }
}

fn parse_entry(item: &str) -> Result<Entry, HostError> {
    let bad = || HostError::BadEntry(item.to_string());
    let lower = item.to_ascii_lowercase();
    if let Ok(net) = IpNet::from_str(&lower) {
        return Ok(Entry::Net(net.trunc()));
    }
    if let Ok(ip) = IpAddr::from_str(lower.trim_start_matches('[').trim_end_matches(']')) {
        return Ok(Entry::Net(IpNet::from(canonical(ip))));
    }
    let (suffix, name) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower.as_str()),
    };
    let name = name.trim_end_matches('.');
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(bad());
    }
    Ok(if suffix {
        Entry::Suffix(format!(".{name}"))
    } else {
        Entry::Name(name.to_string())
    })
}

/// An IPv4-mapped IPv6 address is the IPv4 address it carries.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Globally reachable unicast: not loopback, private, link-local (cloud metadata),
/// shared (CGNAT), unspecified, broadcast, multicast, documentation, benchmarking or
/// reserved.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && ip.octets()[2] == 0)
        || (a == 198 && (18..20).contains(&b))
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link-local
        || (first == 0x2001 && ip.segments()[1] == 0x0db8) // documentation
        || ip.to_ipv4().is_some_and(|v4| !is_public_v4(v4)))
}

/// The resolver of the provider HTTP clients: resolves listed names only, and answers
/// only the addresses the policy allows.
#[derive(Clone, Debug)]
pub(crate) struct GuardedResolver {
    pub(crate) policy: Arc<HostPolicy>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            if !policy.name_allowed(&host) {
                return Err(Box::new(HostError::NotAllowed(host)) as _);
            }
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| policy.address_allowed(a.ip()))
                .collect();
            if found.is_empty() {
                return Err(Box::new(HostError::NotAllowed(format!(
                    "{host} (it resolves only to addresses that are not allowed)"
                ))) as _);
            }
            let addrs: Addrs = Box::new(found.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_default_list_parses_and_names_the_providers() {
        let policy = HostPolicy::parse(DEFAULT_GATEWAY_HOSTS).unwrap();
        assert_eq!(policy, HostPolicy::default());
        assert!(policy.check_url("https://api.stripe.com").is_ok());
        assert!(policy
            .check_url("https://checkout-test.adyen.com/v71")
            .is_ok());
        assert!(policy
            .check_url(
                "https://1797a841fbb37ca7-AdyenDemo-checkout-live.adyenpayments.com/checkout/v71"
            )
            .is_ok());
        for refused in [
            "https://adyenpayments.com",
            "https://api.stripe.com.evil.example",
            "https://evilapi.stripe.com",
            "http://127.0.0.1:8080",
            "http://localhost:8080",
            "http://[::1]:80",
            "http://169.254.169.254/latest/meta-data",
            "http://2130706433/",
        ] {
            assert!(
                matches!(policy.check_url(refused), Err(HostError::NotAllowed(_))),
                "{refused}"
            );
        }
        for bad in ["ftp://api.stripe.com", "api.stripe.com", "https://", ""] {
            assert!(
                matches!(policy.check_url(bad), Err(HostError::BadUrl(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn entries_parse_or_are_refused() {
        let policy =
            HostPolicy::parse(" Example.COM., *.pay.example, 10.0.0.0/8 , ::1, [fd00::1] ")
                .unwrap();
        assert!(policy.name_allowed("example.com"));
        assert!(policy.name_allowed("EXAMPLE.com."));
        assert!(!policy.name_allowed("www.example.com"));
        assert!(policy.name_allowed("a.b.pay.example"));
        assert!(!policy.name_allowed("pay.example"));
        assert!(policy.address_listed(ip("10.20.30.40")));
        assert!(policy.address_listed(ip("::1")));
        assert!(policy.address_listed(ip("fd00::1")));
        assert!(!policy.address_listed(ip("fd00::2")));
        for bad in [
            "*",
            "*.",
            "a..b",
            "-a.com",
            "a b",
            "http://x",
            "*.*.x",
            "ex_ample.com",
        ] {
            assert!(
                matches!(HostPolicy::parse(bad), Err(HostError::BadEntry(_))),
                "{bad}"
            );
        }
        assert_eq!(HostPolicy::parse(" , ,"), Err(HostError::Empty));
    }

    #[test]
    fn special_addresses_need_listing_public_ones_do_not() {
        let policy = HostPolicy::default();
        for special in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(!policy.address_allowed(ip(special)), "{special}");
        }
        for public in ["54.187.174.169", "2600:1f14::1", "::ffff:54.187.174.169"] {
            assert!(policy.address_allowed(ip(public)), "{public}");
        }
        let listed = HostPolicy::parse("localhost,127.0.0.1").unwrap();
        assert!(listed.address_allowed(ip("127.0.0.1")));
        assert!(listed.address_allowed(ip("::ffff:127.0.0.1")));
        assert!(!listed.address_allowed(ip("127.0.0.2")));
    }

    #[tokio::test]
    async fn the_resolver_refuses_unlisted_names_and_addresses() {
        let resolve = |policy: &str, name: &str| {
            let resolver = GuardedResolver {
                policy: Arc::new(HostPolicy::parse(policy).unwrap()),
            };
            resolver.resolve(Name::from_str(name).unwrap())
        };
        let err = resolve("api.stripe.com", "localhost").await.err().unwrap();
        assert!(err.to_string().contains("not in the allowed"), "{err}");
        // Listed by name, but it resolves to loopback, which is not listed.
        let err = resolve("localhost", "localhost").await.err().unwrap();
        assert!(
            err.to_string().contains("addresses that are not allowed"),
            "{err}"
        );
        let addrs: Vec<SocketAddr> = resolve("localhost,127.0.0.1", "localhost")
            .await
            .unwrap()
            .collect();
        assert!(!addrs.is_empty());
        assert!(addrs.iter().all(|a| a.ip() == ip("127.0.0.1")), "{addrs:?}");
    }
}
