//! Which addresses the `http` kind may connect to: public addresses always, the host's own,
//! private and special-purpose ranges only when taskd was started to allow them.
//!
//! Pure logic: the executor applies it to every address it connects to (resolved names,
//! IP-literal URLs and redirect targets).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// IPv4 ranges refused by default, each with what it is (for the error message).
const REFUSED_V4: [(Ipv4Net, &str); 15] = [
    (v4(0, 0, 0, 0, 8), "unspecified (\"this network\")"),
    (v4(10, 0, 0, 0, 8), "private"),
    (v4(100, 64, 0, 0, 10), "shared (CGNAT)"),
    (v4(127, 0, 0, 0, 8), "loopback"),
    (v4(169, 254, 0, 0, 16), "link-local (cloud metadata)"),
    (v4(172, 16, 0, 0, 12), "private"),
    (v4(192, 0, 0, 0, 24), "IETF protocol assignment"),
    (v4(192, 0, 2, 0, 24), "documentation"),
    (v4(192, 88, 99, 0, 24), "6to4 relay anycast"),
    (v4(192, 168, 0, 0, 16), "private"),
    (v4(198, 18, 0, 0, 15), "benchmarking"),
    (v4(198, 51, 100, 0, 24), "documentation"),
    (v4(203, 0, 113, 0, 24), "documentation"),
    (v4(224, 0, 0, 0, 4), "multicast"),
    // 240.0.0.0/4 is reserved, and holds the broadcast address 255.255.255.255.
    (v4(240, 0, 0, 0, 4), "reserved or broadcast"),
];

/// IPv6 ranges refused by default. Forms that embed an IPv4 address are checked by that
/// address instead (see [`embedded_v4`]).
const REFUSED_V6: [(Ipv6Net, &str); 10] = [
    (v6([0, 0, 0, 0, 0, 0, 0, 0], 128), "unspecified"),
    (v6([0, 0, 0, 0, 0, 0, 0, 1], 128), "loopback"),
    (v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48), "local-use NAT64"),
    (v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64), "discard-only"),
    (v6([0x2001, 0x2, 0, 0, 0, 0, 0, 0], 48), "benchmarking"),
    (v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), "documentation"),
    (
        v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
        "unique local (private)",
    ),
    (
        v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),
        "link-local (cloud metadata)",
    ),
    (v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10), "site-local"),
    (v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), "multicast"),
];

const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), prefix)
}

const fn v6(s: [u16; 8], prefix: u8) -> Ipv6Net {
    Ipv6Net::new_assert(
        Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]),
        prefix,
    )
}

/// The IPv4 address an IPv6 address stands for: IPv4-mapped (`::ffff:a.b.c.d`),
/// IPv4-compatible (`::a.b.c.d`, deprecated but still routed by some stacks) and the NAT64
/// well-known prefix (`64:ff9b::a.b.c.d`, which a NAT64 gateway turns into a.b.c.d).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s[..6] {
        [0, 0, 0, 0, 0, 0xffff] | [0x64, 0xff9b, 0, 0, 0, 0] => Some(tail),
        // `::` and `::1` are themselves, not IPv4 addresses.
        [0, 0, 0, 0, 0, 0] if ip.to_bits() > 1 => Some(tail),
        _ => None,
    }
}

/// What kind of special address `ip` is, or `None` for an ordinary public one.
pub fn classify(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(ip) => REFUSED_V4
            .iter()
            .find(|(net, _)| net.contains(&ip))
            .map(|(_, what)| *what),
        IpAddr::V6(ip) => match embedded_v4(ip) {
            Some(v4) => classify(IpAddr::V4(v4)),
            None => REFUSED_V6
                .iter()
                .find(|(net, _)| net.contains(&ip))
                .map(|(_, what)| *what),
        },
    }
}

/// The addresses the `http` kind may reach beyond public ones (taskd's
/// `--http-allow-private` and `--http-allow-cidr`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    /// Everything is allowed.
    pub allow_private: bool,
    /// These ranges are allowed even where they are special.
    pub allowed: Vec<IpNet>,
}

/// An address the policy refused. The message names the address and the flags that would
/// allow it; it becomes the task's `last_error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Refused {
    /// The host name that resolved to `addr`, when there was one.
    pub host: Option<String>,
    pub addr: IpAddr,
    pub what: &'static str,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Refused { host, addr, what } = self;
        match host {
            Some(host) => write!(f, "{host} resolves to {addr}, a {what} address")?,
            None => write!(f, "{addr} is a {what} address")?,
        }
        write!(
            f,
            ", which the http kind refuses by default; start taskd with --http-allow-cidr {} \
             (or --http-allow-private) to allow it",
            IpNet::from(*addr)
        )
    }
}

impl AddressPolicy {
    /// Whether the kind may connect to `ip`.
    pub fn check(&self, ip: IpAddr) -> Result<(), Refused> {
        let Some(what) = classify(ip) else {
            return Ok(());
        };
        if self.allow_private {
            return Ok(());
        }
        // An allow-list entry matches an address in either of its spellings, so
        // `127.0.0.1/32` also allows `::ffff:127.0.0.1`.
        let v4 = match ip {
            IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        let listed = self
            .allowed
            .iter()
            .any(|net| net.contains(&ip) || v4.is_some_and(|v4| net.contains(&v4)));
        if listed {
            Ok(())
        } else {
            Err(Refused {
                host: None,
                addr: ip,
                what,
            })
        }
    }
}

/// Parses one `--http-allow-cidr` entry: a range (`10.0.0.0/8`, `fd00::/8`) or a single
/// address (`10.1.2.3`, taken as /32 or /128).
pub fn parse_cidr(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .map(|net| net.trunc())
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("'{text}' is not an address range; try 10.0.0.0/8 or fd00::/8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn special_addresses_are_refused_by_default() {
        let policy = AddressPolicy::default();
        for (addr, what) in [
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("0.0.0.0", "unspecified"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("100.64.0.1", "CGNAT"),
            ("100.127.255.255", "CGNAT"),
            ("169.254.169.254", "link-local"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("192.0.2.7", "documentation"),
            ("198.18.0.1", "benchmarking"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fe80::1", "link-local"),
            ("fd00:ec2::254", "unique local"),
            ("fc00::1", "unique local"),
            ("ff02::1", "multicast"),
            ("2001:db8::1", "documentation"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local"),
            ("::ffff:10.0.0.1", "private"),
            ("::127.0.0.1", "loopback"),
            ("::10.0.0.1", "private"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("64:ff9b:1::1", "NAT64"),
        ] {
            let err = policy.check(ip(addr)).expect_err(addr);
            assert!(err.what.contains(what), "{addr}: {}", err.what);
        }
        for addr in [
            "1.1.1.1",
            "93.184.215.14",
            "172.32.0.1",
            "100.128.0.1",
            "169.255.0.1",
            "2606:4700:4700::1111",
            "::ffff:1.1.1.1",
            "64:ff9b::101:101",
        ] {
            assert_eq!(policy.check(ip(addr)), Ok(()), "{addr}");
        }
    }

    #[test]
    fn allow_lists_open_exactly_their_ranges() {
        let policy = AddressPolicy {
            allow_private: false,
            allowed: vec![
                parse_cidr("127.0.0.2").expect("cidr"),
                parse_cidr("10.0.0.0/8").expect("cidr"),
                parse_cidr("fd00::/8").expect("cidr"),
            ],
        };
        for (addr, allowed) in [
            ("127.0.0.2", true),
            ("::ffff:127.0.0.2", true),
            ("127.0.0.1", false),
            ("10.200.0.1", true),
            ("::ffff:10.200.0.1", true),
            ("192.168.0.1", false),
            ("fd00:ec2::254", true),
            ("fc00::1", false),
            ("169.254.169.254", false),
            ("8.8.8.8", true),
        ] {
            assert_eq!(policy.check(ip(addr)).is_ok(), allowed, "{addr}");
        }
        let everything = AddressPolicy {
            allow_private: true,
            allowed: Vec::new(),
        };
        for addr in ["127.0.0.1", "::1", "169.254.169.254", "fd00:ec2::254"] {
            assert_eq!(everything.check(ip(addr)), Ok(()), "{addr}");
        }
    }

    #[test]
    fn the_refusal_names_the_address_and_the_flags() {
        let mut err = AddressPolicy::default()
            .check(ip("169.254.169.254"))
            .expect_err("metadata");
        assert_eq!(
            err.to_string(),
            "169.254.169.254 is a link-local (cloud metadata) address, which the http kind \
             refuses by default; start taskd with --http-allow-cidr 169.254.169.254/32 (or \
             --http-allow-private) to allow it"
        );
        err.host = Some("metadata.internal".into());
        assert!(
            err.to_string()
                .starts_with("metadata.internal resolves to 169.254.169.254, a link-local"),
            "{err}"
        );
    }

    #[test]
    fn cidrs_parse() {
        assert_eq!(
            parse_cidr("10.1.2.3/8").map(|n| n.to_string()),
            Ok("10.0.0.0/8".into())
        );
        assert_eq!(
            parse_cidr(" ::1 ").map(|n| n.to_string()),
            Ok("::1/128".into())
        );
        assert!(parse_cidr("10.0.0.0/33").is_err() && parse_cidr("intranet").is_err());
    }
}
