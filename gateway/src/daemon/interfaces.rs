//! The configured interfaces as the controller knows them: each one's ifindex (and its
//! bridge's), what enforces there ([`IfaceMode`]) and which names are held closed.
//!
//! Pure: the kernel is asked through the lookup function each call is given (in the daemon,
//! `if_nametoindex`), and what must happen next — attach a dataplane again, configure a
//! bridge's ports, reload for a new ifindex — comes back as [`Change`]s for the controller
//! to carry out, which then reports the outcome ([`Interfaces::set_mode`]). So the rules for
//! an interface that disappears, comes back or fails to re-attach are unit-tested without
//! root or a kernel.

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    config::{self, Dataplane},
    dataplane::{Enforcer, IfaceMode},
};

/// The ifindex of a configured interface that does not exist (yet): no interface has it, so
/// devices bound to it fail their binding check (closed) until it appears.
pub const MISSING_IFINDEX: u32 = 0;

/// What the controller must do after [`Interfaces::check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A bridge that was missing appeared: its `ports` that exist need its ifindex in their
    /// configuration, and the devices bound to it a reload. It is no longer held.
    BridgeAppeared {
        bridge: String,
        ifindex: u32,
        ports: Vec<String>,
    },
    /// An enforcing interface disappeared: it is now [`IfaceMode::Held`] (its dataplane will
    /// not be on it when it returns, so it is held closed by name meanwhile).
    Lost { interface: String },
    /// An interface appeared, came back under a new ifindex, or exists without its
    /// dataplane (a re-attach failed): attach `enforcer` again, then report the outcome
    /// with [`Interfaces::set_mode`] (enforcing, or held to be retried at the next check).
    Returned {
        interface: String,
        ifindex: u32,
        enforcer: Enforcer,
    },
}

/// The configured interfaces' ifindexes, modes and holds.
#[derive(Debug)]
pub struct Interfaces {
    configured: Vec<config::Interface>,
    dataplane: Dataplane,
    ifindexes: BTreeMap<String, u32>,
    modes: BTreeMap<String, IfaceMode>,
    /// Names held closed because their dataplane is not on them: interfaces in
    /// [`IfaceMode::Held`] and bridges not present yet.
    held: BTreeSet<String>,
}

impl Interfaces {
    /// The configured interfaces and their bridges as `lookup` finds them now. One that
    /// does not exist yet (at boot lazaret starts before the network is configured) gets
    /// [`MISSING_IFINDEX`] and is held closed until it appears.
    pub fn new(
        configured: &[config::Interface],
        dataplane: Dataplane,
        lookup: impl Fn(&str) -> Option<u32>,
    ) -> Interfaces {
        let mut ifaces = Interfaces {
            configured: configured.to_vec(),
            dataplane,
            ifindexes: BTreeMap::new(),
            modes: BTreeMap::new(),
            held: BTreeSet::new(),
        };
        for iface in configured {
            let names = std::iter::once(&iface.name).chain(iface.bridge.as_ref());
            for name in names {
                let index = lookup(name).unwrap_or_else(|| {
                    tracing::warn!(interface = %name, "not present yet: held closed until it appears");
                    ifaces.held.insert(name.clone());
                    MISSING_IFINDEX
                });
                ifaces.ifindexes.insert(name.clone(), index);
            }
            if ifaces.ifindexes[&iface.name] == MISSING_IFINDEX {
                let meant = meant(iface, dataplane);
                ifaces
                    .modes
                    .insert(iface.name.clone(), IfaceMode::Held(meant));
            }
        }
        ifaces
    }

    pub fn configured(&self) -> &[config::Interface] {
        &self.configured
    }

    /// Every configured interface and bridge, with [`MISSING_IFINDEX`] for those not present.
    pub fn ifindexes(&self) -> &BTreeMap<String, u32> {
        &self.ifindexes
    }

    /// `name`'s ifindex, if it is configured and present.
    pub fn ifindex(&self, name: &str) -> Option<u32> {
        self.ifindexes
            .get(name)
            .copied()
            .filter(|i| *i != MISSING_IFINDEX)
    }

    pub fn mode(&self, name: &str) -> Option<IfaceMode> {
        self.modes.get(name).copied()
    }

    pub fn modes(&self) -> &BTreeMap<String, IfaceMode> {
        &self.modes
    }

    pub fn is_enforcing(&self, name: &str) -> bool {
        self.mode(name).is_some_and(IfaceMode::is_enforcing)
    }

    /// Names held closed because their dataplane is not on them (the controller adds the
    /// device side when there is no policy at all).
    pub fn held(&self) -> &BTreeSet<String> {
        &self.held
    }

    /// Records `mode` for `name`; a held mode holds the name closed, any other lifts its hold.
    pub fn set_mode(&mut self, name: &str, mode: IfaceMode) {
        self.modes.insert(name.to_string(), mode);
        match mode {
            IfaceMode::Held(_) => self.held.insert(name.to_string()),
            IfaceMode::Enforcing(_) | IfaceMode::Detached(_) => self.held.remove(name),
        };
    }

    /// `lazaret detach --force`: nothing enforces or holds anywhere. Returns the interfaces.
    pub fn stand_down(&mut self) -> Vec<String> {
        self.held.clear();
        let names: Vec<String> = self.configured.iter().map(|i| i.name.clone()).collect();
        for name in &names {
            if let Some(mode) = self.mode(name) {
                self.modes.insert(name.clone(), mode.detached());
            }
        }
        names
    }

    /// Compares the interfaces with what `lookup` finds now: bridges that appeared,
    /// enforcing interfaces that disappeared, interfaces that (re)appeared or still lack
    /// their dataplane. The new ifindexes and the lost interfaces' modes are recorded here;
    /// attaching is the controller's (see [`Change`]).
    pub fn check(&mut self, lookup: impl Fn(&str) -> Option<u32>) -> Vec<Change> {
        let mut changes = Vec::new();
        let bridges: BTreeSet<String> = self
            .configured
            .iter()
            .filter_map(|i| i.bridge.clone())
            .collect();
        for bridge in bridges {
            if self.ifindexes.get(&bridge) != Some(&MISSING_IFINDEX) {
                continue;
            }
            let Some(index) = lookup(&bridge) else {
                continue;
            };
            self.ifindexes.insert(bridge.clone(), index);
            self.held.remove(&bridge);
            let ports = self
                .configured
                .iter()
                .filter(|i| i.bridge.as_ref() == Some(&bridge) && self.ifindex(&i.name).is_some())
                .map(|i| i.name.clone())
                .collect();
            changes.push(Change::BridgeAppeared {
                bridge,
                ifindex: index,
                ports,
            });
        }
        for iface in self.configured.clone() {
            let known = self.ifindexes.get(&iface.name).copied();
            // Every configured interface has a mode once the controller attached; before
            // that, the one it is meant to have.
            let mode = self
                .mode(&iface.name)
                .unwrap_or(IfaceMode::Held(meant(&iface, self.dataplane)));
            match lookup(&iface.name) {
                None if mode.is_enforcing() => {
                    self.set_mode(&iface.name, mode.held());
                    changes.push(Change::Lost {
                        interface: iface.name,
                    });
                }
                None => {}
                Some(index) if Some(index) != known || !mode.is_enforcing() => {
                    self.ifindexes.insert(iface.name.clone(), index);
                    changes.push(Change::Returned {
                        interface: iface.name,
                        ifindex: index,
                        enforcer: mode.enforcer(),
                    });
                }
                Some(_) => {}
            }
        }
        changes
    }
}

/// The dataplane meant to enforce on `iface` before anything was attached: nftables when
/// the gateway runs only it, else XDP in the configured mode (`auto` falls back later, on a
/// failed attach).
pub fn meant(iface: &config::Interface, dataplane: Dataplane) -> Enforcer {
    match dataplane {
        Dataplane::Nftables => Enforcer::Nftables,
        Dataplane::Xdp | Dataplane::Auto => Enforcer::xdp(iface.xdp_mode),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::{config::Side, dataplane::xdp::AttachMode};

    fn iface(name: &str, bridge: Option<&str>) -> config::Interface {
        config::Interface {
            name: name.to_string(),
            side: Side::Devices,
            xdp_mode: AttachMode::Native,
            vlan: None,
            outer_vlan: None,
            bridge: bridge.map(str::to_string),
        }
    }

    /// The kernel's interfaces, as a test changes them.
    struct Kernel(RefCell<BTreeMap<String, u32>>);

    impl Kernel {
        fn new(present: &[(&str, u32)]) -> Kernel {
            Kernel(RefCell::new(
                present.iter().map(|(n, i)| (n.to_string(), *i)).collect(),
            ))
        }
        fn lookup(&self) -> impl Fn(&str) -> Option<u32> + '_ {
            |name| self.0.borrow().get(name).copied()
        }
        fn remove(&self, name: &str) {
            self.0.borrow_mut().remove(name);
        }
        fn add(&self, name: &str, index: u32) {
            self.0.borrow_mut().insert(name.to_string(), index);
        }
    }

    const NATIVE: IfaceMode = IfaceMode::Enforcing(Enforcer::XdpNative);

    #[test]
    fn an_interface_lost_is_held_and_regained_under_a_new_ifindex_is_attached_again() {
        let kernel = Kernel::new(&[("dev0", 4)]);
        let mut ifaces = Interfaces::new(&[iface("dev0", None)], Dataplane::Xdp, kernel.lookup());
        ifaces.set_mode("dev0", NATIVE);
        assert!(ifaces.check(kernel.lookup()).is_empty(), "nothing changed");

        kernel.remove("dev0");
        let lost = ifaces.check(kernel.lookup());
        assert_eq!(
            lost,
            [Change::Lost {
                interface: "dev0".into()
            }]
        );
        assert_eq!(
            ifaces.mode("dev0"),
            Some(IfaceMode::Held(Enforcer::XdpNative))
        );
        assert!(ifaces.held().contains("dev0"), "held closed while gone");
        assert!(
            ifaces.check(kernel.lookup()).is_empty(),
            "lost once, not at every check"
        );

        kernel.add("dev0", 9);
        let back = ifaces.check(kernel.lookup());
        assert_eq!(
            back,
            [Change::Returned {
                interface: "dev0".into(),
                ifindex: 9,
                enforcer: Enforcer::XdpNative
            }]
        );
        assert_eq!(
            ifaces.ifindex("dev0"),
            Some(9),
            "the new ifindex is recorded"
        );
        assert!(ifaces.held().contains("dev0"), "held until re-attached");
        ifaces.set_mode("dev0", NATIVE);
        assert!(ifaces.held().is_empty());
        assert!(ifaces.check(kernel.lookup()).is_empty());
    }

    #[test]
    fn a_failed_re_attach_stays_held_and_is_retried_at_every_check() {
        let kernel = Kernel::new(&[("dev0", 4)]);
        let mut ifaces = Interfaces::new(&[iface("dev0", None)], Dataplane::Xdp, kernel.lookup());
        ifaces.set_mode("dev0", IfaceMode::Enforcing(Enforcer::Nftables));
        kernel.remove("dev0");
        ifaces.check(kernel.lookup());
        kernel.add("dev0", 5);
        for _ in 0..3 {
            let retry = ifaces.check(kernel.lookup());
            assert_eq!(
                retry,
                [Change::Returned {
                    interface: "dev0".into(),
                    ifindex: 5,
                    enforcer: Enforcer::Nftables
                }],
                "the dataplane meant to enforce is kept"
            );
            ifaces.set_mode("dev0", IfaceMode::Held(Enforcer::Nftables));
            assert!(ifaces.held().contains("dev0"));
        }
    }

    #[test]
    fn an_interface_missing_at_start_is_held_until_it_appears() {
        let kernel = Kernel::new(&[("up0", 2)]);
        let configured = [iface("dev0", None), iface("up0", None)];
        let ifaces = Interfaces::new(&configured, Dataplane::Nftables, kernel.lookup());
        assert_eq!(ifaces.ifindexes()["dev0"], MISSING_IFINDEX);
        assert_eq!(ifaces.ifindex("dev0"), None);
        assert_eq!(
            ifaces.mode("dev0"),
            Some(IfaceMode::Held(Enforcer::Nftables))
        );
        assert_eq!(
            ifaces.mode("up0"),
            None,
            "attaching sets the mode of those present"
        );
        assert_eq!(ifaces.held().iter().collect::<Vec<_>>(), ["dev0"]);

        let mut ifaces = ifaces;
        ifaces.set_mode("up0", IfaceMode::Enforcing(Enforcer::Nftables));
        assert!(ifaces.check(kernel.lookup()).is_empty(), "still missing");
        kernel.add("dev0", 7);
        assert_eq!(
            ifaces.check(kernel.lookup()),
            [Change::Returned {
                interface: "dev0".into(),
                ifindex: 7,
                enforcer: Enforcer::Nftables
            }]
        );
    }

    #[test]
    fn a_bridge_that_appears_names_its_present_ports_and_is_no_longer_held() {
        let kernel = Kernel::new(&[("port0", 3)]);
        let configured = [iface("port0", Some("br0")), iface("port1", Some("br0"))];
        let mut ifaces = Interfaces::new(&configured, Dataplane::Xdp, kernel.lookup());
        ifaces.set_mode("port0", NATIVE);
        assert!(ifaces.held().contains("br0") && ifaces.held().contains("port1"));
        kernel.add("br0", 11);
        let changes = ifaces.check(kernel.lookup());
        assert_eq!(
            changes,
            [Change::BridgeAppeared {
                bridge: "br0".into(),
                ifindex: 11,
                ports: vec!["port0".into()],
            }]
        );
        assert!(!ifaces.held().contains("br0"));
        assert!(
            ifaces.held().contains("port1"),
            "the missing port stays held"
        );
        assert!(ifaces.check(kernel.lookup()).is_empty(), "appears once");
    }

    #[test]
    fn standing_down_detaches_everything_and_holds_nothing() {
        let kernel = Kernel::new(&[("dev0", 4)]);
        let configured = [iface("dev0", None), iface("gone0", None)];
        let mut ifaces = Interfaces::new(&configured, Dataplane::Xdp, kernel.lookup());
        ifaces.set_mode("dev0", NATIVE);
        assert_eq!(ifaces.stand_down(), ["dev0", "gone0"]);
        assert!(ifaces.held().is_empty());
        assert!(ifaces
            .modes()
            .values()
            .all(|m| matches!(m, IfaceMode::Detached(_))));
    }
}
