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

/// An interface's state: enforcing, or not (gone, not present yet, not restorable, or
/// detached on request), with the dataplane meant to enforce there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IfaceMode {
    Enforcing(Enforcer),
    Detached(Enforcer),
}

impl IfaceMode {
    pub fn enforcer(self) -> Enforcer {
        match self {
            IfaceMode::Enforcing(e) | IfaceMode::Detached(e) => e,
        }
    }

    pub fn is_enforcing(self) -> bool {
        matches!(self, IfaceMode::Enforcing(_))
    }

    /// The same interface, no longer enforcing.
    pub fn detached(self) -> IfaceMode {
        IfaceMode::Detached(self.enforcer())
    }

    /// As `lazaret status` shows it: the enforcer's label, or `detached`.
    pub fn label(self) -> &'static str {
        match self {
            IfaceMode::Enforcing(e) => e.label(),
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
        }
        assert_eq!(Enforcer::from_label("detached"), None);
        assert_eq!(Enforcer::xdp(AttachMode::Skb), Enforcer::XdpSkb);
    }
}
