//! The exact contents of one generation slot of the datapath's policy maps, as produced by
//! the policy compiler and written by [`super::Datapath::install`]. Plain data: no aya.

use lazaret_abi::{
    DevKey, DevRef, Device, Ip4Key, Ip6Key, MacKey, PeerClass, PeerKey4, PeerKey6, PortKey,
    RuleRef, SiteConfig,
};

/// Entries of every per-slot map, keys already stamped with their slot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapContents {
    pub site: SiteConfig,
    pub dev_mac: Vec<(MacKey, DevRef)>,
    pub dev_ip4: Vec<(Ip4Key, DevRef)>,
    pub dev_ip6: Vec<(Ip6Key, DevRef)>,
    pub devices: Vec<(DevKey, Device)>,
    /// (LPM prefix length, key, value).
    pub peer4: Vec<(u32, PeerKey4, PeerClass)>,
    pub peer6: Vec<(u32, PeerKey6, PeerClass)>,
    pub ports: Vec<(u32, PortKey, RuleRef)>,
}

impl MapContents {
    /// Number of map entries, for capacity reports.
    pub fn entry_count(&self) -> usize {
        self.dev_mac.len()
            + self.dev_ip4.len()
            + self.dev_ip6.len()
            + self.devices.len()
            + self.peer4.len()
            + self.peer6.len()
            + self.ports.len()
    }
}
