//! The gateway's own addresses, read from the kernel (`getifaddrs`) for the datapath's
//! `LZ_LOCAL` map and the nftables dataplane's `local4`/`local6` sets: a device never speaks
//! with them or claims them in ARP or NDP, and neighbor discovery may address them.
//!
//! Read again with every interface check, so an address added or removed on the gateway
//! reaches the dataplanes within that period.

use std::collections::BTreeSet;
use std::net::IpAddr;

/// Every address of every interface in the daemon's network namespace (loopback included:
/// a device has no business sending from 127.0.0.1 either).
pub fn own_addresses() -> std::io::Result<BTreeSet<IpAddr>> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(std::io::Error::from)?;
    Ok(addrs
        .filter_map(|a| a.address)
        .filter_map(|sa| {
            if let Some(v4) = sa.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                sa.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_loopback_address_is_among_the_gateways_own() {
        let own = super::own_addresses().expect("getifaddrs");
        assert!(
            own.contains(&std::net::IpAddr::from([127, 0, 0, 1])),
            "{own:?}"
        );
    }
}
