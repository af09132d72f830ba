//! The host's role in an active/standby pair (`docs/ha.md`), read from the addresses
//! keepalived moves: the member that holds every `[ha] virtual_addresses` is active, any
//! other is standby. Read again with the gateway's own addresses on every interface check,
//! so a restart of either daemon, or a reboot, ends with the role the addresses say — there
//! is no transition to miss.
//!
//! A standby carries out no automatic quarantine: it sees no device traffic worth acting on
//! (see `intake`).

use std::{collections::BTreeSet, net::IpAddr};

/// This host's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// No `[ha]` in the configuration: a single gateway.
    Standalone,
    Active,
    Standby,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Standalone => "standalone",
            Role::Active => "active",
            Role::Standby => "standby",
        }
    }

    /// Whether this host decides quarantines on its own.
    pub fn decides(self) -> bool {
        self != Role::Standby
    }
}

/// The role `own` (the host's addresses) gives, and how many of `virtual` it holds.
pub fn role(virtual_addresses: Option<&[IpAddr]>, own: &BTreeSet<IpAddr>) -> (Role, usize) {
    let Some(vips) = virtual_addresses else {
        return (Role::Standalone, 0);
    };
    let held = vips.iter().filter(|a| own.contains(a)).count();
    let role = if !vips.is_empty() && held == vips.len() {
        Role::Active
    } else {
        Role::Standby
    };
    (role, held)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|a| a.parse().expect("address")).collect()
    }

    #[test]
    fn every_virtual_address_makes_a_member_active_and_fewer_keep_it_standby() {
        let vips = addrs(&["10.20.0.1", "10.10.0.1"]);
        let own = |l: &[&str]| addrs(l).into_iter().collect::<BTreeSet<_>>();
        let base = ["127.0.0.1", "10.20.0.2"];
        assert_eq!(role(Some(&vips), &own(&base)), (Role::Standby, 0));
        let half = [&base[..], &["10.20.0.1"]].concat();
        assert_eq!(role(Some(&vips), &own(&half)), (Role::Standby, 1));
        let all = [&half[..], &["10.10.0.1"]].concat();
        assert_eq!(role(Some(&vips), &own(&all)), (Role::Active, 2));
        assert_eq!(role(None, &own(&all)), (Role::Standalone, 0));
        assert!(Role::Active.decides() && Role::Standalone.decides());
        assert!(!Role::Standby.decides());
    }
}
