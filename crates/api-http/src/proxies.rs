//! Trusted proxies (`TRUSTED_PROXIES`), and the client address a request carries through them.
//!
//! Behind a proxy every request arrives from the proxy's address, so limits kept per address
//! would count all clients together. A request whose TCP peer is a trusted proxy is taken to come
//! from the address its `X-Forwarded-For` names: the header is read from the right (the hop
//! nearest this server) past every trusted address, and the first address that is not trusted is
//! the client's. From any other peer the header is ignored, since a client can write anything in
//! it; a client behind a trusted proxy can still prepend addresses, but never past the hop its
//! proxy appended.

use std::net::IpAddr;

/// Most `X-Forwarded-For` entries read, from the right: a longer chain of trusted hops is not a
/// deployment, and the rest is the client's to write.
const MOST_HOPS: usize = 16;

/// The networks whose addresses are trusted proxies. Empty: no peer is, and `X-Forwarded-For` is
/// never read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Network>);

/// An address and the number of leading bits that name its network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Network {
    address: IpAddr,
    prefix: u8,
}

impl Network {
    fn parse(text: &str) -> Result<Self, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: IpAddr = address
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or a network like 10.0.0.0/8"))?;
        let address = canonical(address);
        let most = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => most,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= most)
                .ok_or_else(|| format!("{text:?} has a prefix length outside 0..={most}"))?,
        };
        Ok(Self { address, prefix })
    }

    fn contains(&self, address: IpAddr) -> bool {
        match (self.address, canonical(address)) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// An IPv4 address written as IPv6 (`::ffff:10.0.0.1`, as a dual-stack socket reports it) as the
/// IPv4 address it is.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

impl TrustedProxies {
    /// Addresses and networks separated by commas: `10.0.0.0/8, 192.168.1.7, fd00::/8`.
    pub fn parse(text: &str) -> Result<Self, String> {
        text.split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(Network::parse)
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn trusts(&self, address: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(address))
    }

    /// The address a request came from: its TCP `peer`, or, when that is a trusted proxy, the
    /// first address of `forwarded_for` (the `X-Forwarded-For` values, in order, as bytes) that
    /// is not trusted, read from the right. When every address read is trusted, the leftmost of
    /// them; an entry that is not an address ends the reading at the hop that passed it on. At
    /// most [`MOST_HOPS`] entries are looked at, however long the header.
    pub fn client<'a>(
        &self,
        peer: Option<IpAddr>,
        forwarded_for: impl DoubleEndedIterator<Item = &'a [u8]>,
    ) -> Option<IpAddr> {
        let peer = peer.map(canonical);
        let mut client = peer?;
        if !self.trusts(client) {
            return Some(client);
        }
        let hops = forwarded_for
            .rev()
            .flat_map(|line| line.rsplit(|b| *b == b','))
            .take(MOST_HOPS);
        for hop in hops {
            let Some(address) = entry(hop) else {
                break;
            };
            client = canonical(address);
            if !self.trusts(client) {
                break;
            }
        }
        Some(client)
    }
}

/// One `X-Forwarded-For` entry as an address: `10.0.0.1`, `2001:db8::1`, and the forms some
/// proxies write, `10.0.0.1:5678` and `[2001:db8::1]:5678`. `None` for anything else.
fn entry(bytes: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(bytes).ok()?.trim();
    if let Ok(address) = text.parse() {
        return Some(address);
    }
    if let Some(rest) = text.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    let (host, port) = text.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn addresses_and_networks_parse_and_bad_ones_are_named() {
        let proxies = TrustedProxies::parse(" 10.0.0.0/8, 192.168.1.7 ,fd00::/8,").unwrap();
        assert_eq!(proxies.0.len(), 3);
        assert!(TrustedProxies::parse("").unwrap().is_empty());
        for bad in [
            "10.0.0.0/33",
            "fd00::/129",
            "proxy.local",
            "10.0.0.0/x",
            "1.2.3/8",
        ] {
            let error = TrustedProxies::parse(bad).unwrap_err();
            assert!(error.contains(bad), "{error}");
        }
    }

    #[test]
    fn networks_hold_exactly_their_addresses() {
        let proxies =
            TrustedProxies::parse("10.1.0.0/16, 192.168.1.7, fd00::/8, 0.0.0.0/0").unwrap();
        let only = |i: usize, a: &str| proxies.0[i].contains(a.parse().unwrap());
        assert!(only(0, "10.1.255.3") && !only(0, "10.2.0.1"));
        assert!(only(1, "192.168.1.7") && !only(1, "192.168.1.8"));
        assert!(
            only(1, "::ffff:192.168.1.7"),
            "an IPv4 address written as IPv6"
        );
        assert!(only(2, "fd12::1") && !only(2, "fe80::1") && !only(2, "10.1.0.1"));
        assert!(only(3, "8.8.8.8") && !only(3, "::1"));
    }

    #[test]
    fn the_client_is_the_first_untrusted_hop_from_the_right() {
        let proxies = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let client = |peer: &str, header: &[&str]| {
            proxies.client(ip(peer), header.iter().map(|h| h.as_bytes()))
        };
        // Not through a trusted proxy: the header is the client's own word, and ignored.
        assert_eq!(client("203.0.113.9", &["198.51.100.1"]), ip("203.0.113.9"));
        // Through one proxy.
        assert_eq!(client("10.0.0.2", &["198.51.100.1"]), ip("198.51.100.1"));
        // What the client wrote before its proxy appended is passed over.
        assert_eq!(
            client("10.0.0.2", &["1.1.1.1, 198.51.100.1"]),
            ip("198.51.100.1")
        );
        // Two trusted hops, the header split over two lines.
        assert_eq!(
            client("10.0.0.2", &["6.6.6.6, 198.51.100.1", "10.0.0.9"]),
            ip("198.51.100.1")
        );
        // Every hop trusted: the leftmost. No header: the proxy itself.
        assert_eq!(client("10.0.0.2", &["10.0.0.7, 10.0.0.9"]), ip("10.0.0.7"));
        assert_eq!(client("10.0.0.2", &[]), ip("10.0.0.2"));
        // The forms with a port, and a line that is not text, which does not hide the address
        // the proxy appended after it.
        assert_eq!(
            client("10.0.0.2", &["198.51.100.1:5678"]),
            ip("198.51.100.1")
        );
        assert_eq!(
            client("10.0.0.2", &["[2001:db8::1]:443"]),
            ip("2001:db8::1")
        );
        assert_eq!(
            proxies.client(
                ip("10.0.0.2"),
                [b"\x80\xff, 198.51.100.7".as_slice()].into_iter()
            ),
            ip("198.51.100.7")
        );
        // Garbage ends the reading at the hop that passed it on.
        assert_eq!(
            client("10.0.0.2", &["198.51.100.1, unknown"]),
            ip("10.0.0.2")
        );
        assert_eq!(client("10.0.0.2", &["nonsense, 10.0.0.5"]), ip("10.0.0.5"));
        // No proxy trusted: the peer, whatever the header says.
        let none = TrustedProxies::default();
        assert_eq!(
            none.client(ip("10.0.0.2"), [b"198.51.100.1".as_slice()].into_iter()),
            ip("10.0.0.2")
        );
        assert_eq!(
            none.client(None, [b"198.51.100.1".as_slice()].into_iter()),
            None
        );
    }

    #[test]
    fn a_long_chain_is_read_only_so_far() {
        let proxies = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let mut hops = vec!["198.51.100.1".to_owned()];
        hops.extend((0..40).map(|n| format!("10.0.0.{n}")));
        let header = hops.join(", ");
        let client = proxies.client(ip("10.0.0.2"), [header.as_bytes()].into_iter());
        assert_eq!(
            client,
            ip(&format!("10.0.0.{}", 40 - MOST_HOPS)),
            "past the hops read, the leftmost read stands"
        );
    }
}
