//! What enforces on each configured interface, as a type rather than strings: which
//! dataplane is meant to (`Enforcer`), and whether it does right now (`IfaceMode`). The
//! labels of `lazaret_interface_attached{mode}` and of `lazaret status` come from here.

use super::xdp::AttachMode;

/// The dataplane meant to enforce on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enforcer {
    /// The XDP program in the driver.
    XdpNative,
    /// The XDP program in generic (skb) mode: correct, slower.
    XdpSkb,
    /// lazaret's nftables tables.
    Nftables,
}

impl Enforcer {
    pub const ALL: [Enforcer; 3] = [Enforcer::XdpNative, Enforcer::XdpSkb, Enforcer::Nftables];

    /// `mode` of `lazaret_interface_attached`, as recorded in the state directory.
    pub const fn label(self) -> &'static str {
        match self {
            Enforcer::XdpNative => "native",
            Enforcer::XdpSkb => "skb",
            Enforcer::Nftables => "nftables",
        }
    }

    pub fn from_label(label: &str) -> Option<Enforcer> {
        Enforcer::ALL.into_iter().find(|e| e.label() == label)
    }

    /// The XDP mode an attach used (`Auto` is never the outcome of one).
    pub fn xdp(mode: AttachMode) -> Enforcer {
        match mode {
            AttachMode::Skb => Enforcer::XdpSkb,
            _ => Enforcer::XdpNative,
        }
    }

    /// `dataplane` of `lazaret_dataplane_info`.
    pub const fn dataplane(self) -> &'static str {
        if self.is_xdp() {
            "xdp"
        } else {
            "nftables"
        }
    }

    pub const fn is_xdp(self) -> bool {
        matches!(self, Enforcer::XdpNative | Enforcer::XdpSkb)
    }
}

/// An interface's state, with the dataplane meant to enforce there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IfaceMode {
    /// The dataplane enforces.
    Enforcing(Enforcer),
    /// The dataplane is not on it (gone, not present yet, another program took it), and it
    /// is held closed by name (`dataplane::nft::hold`) until the dataplane is back.
    Held(Enforcer),
    /// Nothing enforces and nothing holds it closed: detached on request, or an nftables
    /// table that could not be restored yet.
    Detached(Enforcer),
}

impl IfaceMode {
    pub fn enforcer(self) -> Enforcer {
        match self {
            IfaceMode::Enforcing(e) | IfaceMode::Held(e) | IfaceMode::Detached(e) => e,
        }
    }

    pub fn is_enforcing(self) -> bool {
        matches!(self, IfaceMode::Enforcing(_))
    }

    /// The same interface, no longer enforcing (its dataplane stays the one meant to).
    pub fn detached(self) -> IfaceMode {
        IfaceMode::Detached(self.enforcer())
    }

    /// The same interface, held closed until its dataplane is back.
    pub fn held(self) -> IfaceMode {
        IfaceMode::Held(self.enforcer())
    }

    /// As `lazaret status` shows it: the enforcer's label, `held` or `detached`.
    pub fn label(self) -> &'static str {
        match self {
            IfaceMode::Enforcing(e) => e.label(),
            IfaceMode::Held(_) => "held",
            IfaceMode::Detached(_) => "detached",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip_and_detaching_keeps_the_enforcer() {
        for e in Enforcer::ALL {
            assert_eq!(Enforcer::from_label(e.label()), Some(e));
            let m = IfaceMode::Enforcing(e);
            assert_eq!((m.label(), m.is_enforcing()), (e.label(), true));
            assert_eq!(m.detached().label(), "detached");
            assert_eq!(m.detached().enforcer(), e);
            assert_eq!((m.held().label(), m.held().is_enforcing()), ("held", false));
            assert_eq!(m.held().enforcer(), e);
        }
        assert_eq!(Enforcer::from_label("detached"), None);
        assert_eq!(Enforcer::from_label("held"), None);
        assert_eq!(Enforcer::xdp(AttachMode::Skb), Enforcer::XdpSkb);
    }
}
