//! Which addresses Tollgate's outbound calls (providers, alert webhooks) may reach.
//!
//! Some never: link-local addresses and the cloud metadata services behind them hand out
//! credentials to whoever asks from inside the instance, so a deployment `api_base` pointing
//! there would turn the gateway into a credential leak. Loopback and private networks are where
//! self-hosted models live, so they are a setting ([`Networks`]). The same rules apply when an
//! admin sets a URL (to IP literals and known metadata host names) and at connect time, after
//! DNS resolution (to every address), so a name that resolves elsewhere later gains nothing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Host names of cloud metadata services, refused whatever they resolve to.
pub const METADATA_HOSTS: &[&str] = &[
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "instance-data",
    "instance-data.ec2.internal",
    "metadata.azure.com",
    "metadata.tencentyun.com",
];

/// What kind of network an address is on, as far as outbound calls are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressClass {
    /// Never reachable: link-local and metadata addresses, unspecified, multicast, broadcast.
    Forbidden,
    Loopback,
    /// RFC 1918, carrier-grade NAT (100.64.0.0/10) and unique-local IPv6 (fc00::/7).
    Private,
    Public,
}

/// Classifies `ip` (an IPv4-mapped IPv6 address as its IPv4 address).
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => classify_v4(v4),
            None => classify_v6(v6),
        },
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, ..] = ip.octets();
    if ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0
        // Alibaba Cloud's metadata service.
        || ip == Ipv4Addr::new(100, 100, 100, 200)
    {
        AddressClass::Forbidden
    } else if ip.is_loopback() {
        AddressClass::Loopback
    } else if ip.is_private() || (a == 100 && (64..128).contains(&b)) {
        AddressClass::Private
    } else {
        AddressClass::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    let first = ip.segments()[0];
    let second = ip.segments()[1];
    // fd00:ec2::/32 is AWS's IPv6 metadata service, inside the unique-local range.
    let aws_metadata = first == 0xfd00 && second == 0x0ec2;
    if aws_metadata || ip.is_unspecified() || ip.is_multicast() || (first & 0xffc0) == 0xfe80 {
        AddressClass::Forbidden
    } else if ip.is_loopback() {
        AddressClass::Loopback
    } else if (first & 0xfe00) == 0xfc00 {
        AddressClass::Private
    } else {
        AddressClass::Public
    }
}

/// Which of the networks a setting may open are open: loopback and private networks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Networks {
    pub loopback: bool,
    pub private: bool,
}

impl Default for Networks {
    /// Both: self-hosted models (vLLM, Ollama, …) live on the machine or its private network.
    fn default() -> Self {
        Networks {
            loopback: true,
            private: true,
        }
    }
}

impl Networks {
    /// Parses a comma-separated list of `loopback`, `private`, or `none`.
    pub fn parse(value: &str) -> Result<Networks, String> {
        let mut networks = Networks {
            loopback: false,
            private: false,
        };
        for word in value.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word {
                "loopback" => networks.loopback = true,
                "private" => networks.private = true,
                "none" => {}
                other => {
                    return Err(format!(
                        "{other:?} is not a network (expected loopback, private or none)"
                    ));
                }
            }
        }
        Ok(networks)
    }

    /// Why an outbound call may not connect to `ip`, if it may not.
    pub fn refusal(&self, ip: IpAddr) -> Option<String> {
        match classify(ip) {
            AddressClass::Forbidden => Some(format!(
                "{ip} is a link-local, metadata or otherwise unroutable address"
            )),
            AddressClass::Loopback if !self.loopback => Some(format!(
                "{ip} is a loopback address, and loopback is not among the allowed networks"
            )),
            AddressClass::Private if !self.private => Some(format!(
                "{ip} is a private address, and private networks are not among the allowed networks"
            )),
            _ => None,
        }
    }
}

/// Why a URL's host may never be called, if it may not: a forbidden IP literal or a cloud
/// metadata host name. Loopback and private literals pass here; they are a setting of the
/// roles that connect.
pub fn forbidden_host(host: &str) -> Option<String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return (classify(ip) == AddressClass::Forbidden)
            .then(|| format!("{ip} is a link-local, metadata or otherwise unroutable address"));
    }
    let name = bare.trim_end_matches('.').to_ascii_lowercase();
    METADATA_HOSTS
        .contains(&name.as_str())
        .then(|| format!("{host} is a cloud metadata service"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(ip: &str) -> AddressClass {
        classify(ip.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)))
    }

    #[test]
    fn metadata_and_link_local_addresses_are_forbidden() {
        for ip in [
            "169.254.169.254",
            "169.254.170.2",
            "fe80::1",
            "fd00:ec2::254",
            "100.100.100.200",
            "0.0.0.0",
            "::",
            "::ffff:169.254.169.254",
            "224.0.0.1",
            "255.255.255.255",
        ] {
            assert_eq!(class(ip), AddressClass::Forbidden, "{ip}");
        }
        for (ip, expected) in [
            ("127.0.0.1", AddressClass::Loopback),
            ("::1", AddressClass::Loopback),
            ("::ffff:127.0.0.1", AddressClass::Loopback),
            ("10.1.2.3", AddressClass::Private),
            ("172.16.0.1", AddressClass::Private),
            ("192.168.1.1", AddressClass::Private),
            ("100.64.0.1", AddressClass::Private),
            ("fd12:3456::1", AddressClass::Private),
            ("8.8.8.8", AddressClass::Public),
            ("2606:4700::1111", AddressClass::Public),
        ] {
            assert_eq!(class(ip), expected, "{ip}");
        }
    }

    #[test]
    fn loopback_and_private_follow_the_setting() -> Result<(), String> {
        let closed = Networks::parse("none")?;
        let loopback: IpAddr = Ipv4Addr::LOCALHOST.into();
        let private: IpAddr = Ipv4Addr::new(10, 0, 0, 1).into();
        assert!(closed.refusal(loopback).is_some());
        assert!(closed.refusal(private).is_some());
        let open = Networks::default();
        assert!(open.refusal(loopback).is_none() && open.refusal(private).is_none());
        assert_eq!(Networks::parse("private,loopback")?, open);
        assert!(Networks::parse("everything").is_err());
        Ok(())
    }

    #[test]
    fn forbidden_hosts_are_literals_and_metadata_names() {
        for host in [
            "169.254.169.254",
            "[fe80::1]",
            "[fd00:ec2::254]",
            "metadata.google.internal",
            "METADATA.GOOGLE.INTERNAL.",
        ] {
            assert!(forbidden_host(host).is_some(), "{host}");
        }
        for host in ["127.0.0.1", "api.openai.com", "[::1]", "10.0.0.5"] {
            assert!(forbidden_host(host).is_none(), "{host}");
        }
    }
}
