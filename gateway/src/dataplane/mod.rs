//! The dataplanes, and the seam between them and the controller.
//!
//! - [`xdp`]: the XDP program, loaded, pinned and filled generation by generation.
//! - [`nft`]: the same compiled policy as nftables tables, where XDP cannot run.
//! - [`IfaceMode`] / [`Enforcer`]: what enforces on each interface, as types.
//! - [`Dataplane`]: what the controller does to every dataplane, the same way, whichever it
//!   is: install a generation ([`Dataplane::stage`], [`Dataplane::commit`]), set a device's
//!   quarantine, the gateway's own addresses, bridge-port pins.
//!
//! A trait rather than an enum of the two: the controller holds both at once (with
//! `dataplane = "auto"` nftables takes over the interfaces where XDP cannot attach, and the
//! nftables dataplane also owns the interface hold that both rely on), and reaches them
//! through `Controller::dataplanes` — nftables first, so a table `nft` refuses fails an
//! install before XDP's slot is written; XDP is absent with `dataplane = "nftables"`, which
//! loads no BPF at all.
//!
//! Not behind the seam yet (issue 17, item 1): attaching an interface, reading counters,
//! events (ring buffer vs nflog) and tamper checks, which still branch on the interface's
//! [`Enforcer`]; so a third dataplane is today one module implementing [`Dataplane`], one
//! [`Enforcer`] variant, one `config::Dataplane` value, and a branch at each of those four.

mod mode;
pub mod nft;
pub mod xdp;

pub use mode::{Enforcer, IfaceMode};

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use lazaret_abi::IfaceConfig;

use crate::policy::{DeviceStates, MapContents};

/// An error of one dataplane.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error(transparent)]
    Xdp(#[from] crate::dataplane::xdp::DatapathError),
    #[error(transparent)]
    Nftables(#[from] crate::dataplane::nft::NftError),
}

/// A compiled generation, as every dataplane is given it to install.
pub struct Generation<'a> {
    /// Its number (nftables stamps it in each connection's mark).
    pub number: u64,
    /// The compiled policy, encoded for the XDP maps' next slot (nftables renders its
    /// tables from the same contents).
    pub contents: &'a MapContents,
    /// The configured interfaces and bridges (0: not present).
    pub ifindexes: &'a BTreeMap<String, u32>,
    /// Each configured interface with its side, untagged VLAN and binding.
    pub interfaces: &'a [(String, IfaceConfig)],
    /// The devices' quarantines, as the controller holds them.
    pub states: &'a DeviceStates,
}

/// Called once a staged generation may be committed, on whatever thread staged it.
pub type Staged = Box<dyn FnOnce() + Send>;

/// Builds the committed generation's contents for another XDP slot (`None`: cannot).
pub type Retired = Box<dyn FnOnce(u8) -> Option<MapContents> + Send>;

/// What the controller does to every dataplane alike.
pub trait Dataplane {
    /// The first half of installing `g`: `staged` is called once it may be committed. XDP
    /// writes its inactive slot on a thread of its own (packets still see the old
    /// generation); nftables replaces its tables in one atomic transaction, so for it
    /// staging is enforcing, and calls `staged` before returning. On error nothing changed.
    fn stage(&mut self, g: &Generation<'_>, staged: Staged) -> Result<(), DataplaneError>;

    /// The second half: the staged generation judges every packet from now on (XDP flips
    /// its generation switch). `retired` builds it for the other slot, which XDP brings up
    /// to date in the background so the next small edit writes only its difference.
    fn commit(&mut self, retired: Retired) -> Result<(), DataplaneError>;

    /// Sets `device`'s quarantine (`lazaret_abi::QUARANTINE_*`); its flows are judged by
    /// the new state from their next packet on.
    fn set_quarantine(&mut self, device: u64, quarantine: u8) -> Result<(), DataplaneError>;

    /// The gateway's own addresses (devices may reach them only as the site allows).
    fn set_local(&mut self, addrs: &BTreeSet<IpAddr>) -> Result<(), DataplaneError>;

    /// The bridge-port pins the dataplane holds, as (MAC, port name); `ifindexes` names
    /// the ports.
    fn pins(
        &mut self,
        ifindexes: &BTreeMap<String, u32>,
    ) -> Result<Vec<([u8; 6], String)>, DataplaneError>;

    /// Puts back pins kept in the state directory (after a reboot the dataplane has none).
    fn restore_pins(
        &mut self,
        pins: &[([u8; 6], String)],
        ifindexes: &BTreeMap<String, u32>,
    ) -> Result<(), DataplaneError>;

    /// Releases the pin of `mac`; whether there was one.
    fn release_pin(&mut self, mac: [u8; 6]) -> Result<bool, DataplaneError>;
}

impl Dataplane for crate::dataplane::xdp::Datapath {
    fn stage(&mut self, g: &Generation<'_>, staged: Staged) -> Result<(), DataplaneError> {
        Ok(xdp::Datapath::stage(self, g.contents.clone(), staged)?)
    }

    fn commit(&mut self, retired: Retired) -> Result<(), DataplaneError> {
        xdp::Datapath::commit(self)?;
        if let Err(e) = self.sync_retired(retired) {
            // The next install reads the slot back instead: slower, as exact.
            tracing::warn!(error = %e, "could not start bringing the retired slot up to date");
        }
        Ok(())
    }

    /// Also bumps the device's epoch, so its established flows are re-judged.
    fn set_quarantine(&mut self, device: u64, quarantine: u8) -> Result<(), DataplaneError> {
        let mut st = self.device_state(device)?;
        if st.quarantine != quarantine {
            st.quarantine = quarantine;
            st.epoch = st.epoch.wrapping_add(1);
            self.set_device_state(device, st)?;
        }
        Ok(())
    }

    fn set_local(&mut self, addrs: &BTreeSet<IpAddr>) -> Result<(), DataplaneError> {
        self.set_local_addrs(addrs)?;
        Ok(())
    }

    fn pins(
        &mut self,
        ifindexes: &BTreeMap<String, u32>,
    ) -> Result<Vec<([u8; 6], String)>, DataplaneError> {
        Ok(self
            .port_pins()?
            .into_iter()
            .filter_map(|(mac, pin)| {
                let (name, _) = ifindexes.iter().find(|(_, i)| **i == pin.ifindex)?;
                Some((mac, name.clone()))
            })
            .collect())
    }

    fn restore_pins(
        &mut self,
        pins: &[([u8; 6], String)],
        ifindexes: &BTreeMap<String, u32>,
    ) -> Result<(), DataplaneError> {
        // Every pin is tried: one that fails does not leave the others unpinned.
        let mut failed = Ok(());
        for (mac, port) in pins {
            if let Some(ifindex) = ifindexes.get(port) {
                let pin = lazaret_abi::PortPin {
                    ifindex: *ifindex,
                    ..Default::default()
                };
                if let Err(e) = self.set_port_pin(*mac, pin) {
                    failed = Err(e.into());
                }
            }
        }
        failed
    }

    fn release_pin(&mut self, mac: [u8; 6]) -> Result<bool, DataplaneError> {
        Ok(self.release_port_pin(mac)?)
    }
}

impl Dataplane for crate::dataplane::nft::NftDataplane {
    /// Renders and swaps the tables of the interfaces nftables enforces on (none: only
    /// remembered, for a fallback later).
    fn stage(&mut self, g: &Generation<'_>, staged: Staged) -> Result<(), DataplaneError> {
        let took = self.apply(
            g.contents,
            g.ifindexes,
            g.interfaces,
            g.states.clone(),
            g.number,
        )?;
        if let Some(took) = took {
            tracing::info!(
                generation = g.number,
                ms = took.as_millis() as u64,
                "nftables table applied"
            );
        }
        staged();
        Ok(())
    }

    /// Nothing left to do: the table swapped at [`Dataplane::stage`] enforces already.
    fn commit(&mut self, _retired: Retired) -> Result<(), DataplaneError> {
        Ok(())
    }

    fn set_quarantine(&mut self, device: u64, quarantine: u8) -> Result<(), DataplaneError> {
        Ok(crate::dataplane::nft::NftDataplane::set_quarantine(
            self, device, quarantine,
        )?)
    }

    fn set_local(&mut self, addrs: &BTreeSet<IpAddr>) -> Result<(), DataplaneError> {
        Ok(crate::dataplane::nft::NftDataplane::set_local(self, addrs)?)
    }

    fn pins(
        &mut self,
        _ifindexes: &BTreeMap<String, u32>,
    ) -> Result<Vec<([u8; 6], String)>, DataplaneError> {
        Ok(crate::dataplane::nft::NftDataplane::pins(self)?)
    }

    /// Written into the next generation's frame stage.
    fn restore_pins(
        &mut self,
        pins: &[([u8; 6], String)],
        _ifindexes: &BTreeMap<String, u32>,
    ) -> Result<(), DataplaneError> {
        crate::dataplane::nft::NftDataplane::restore_pins(self, pins);
        Ok(())
    }

    fn release_pin(&mut self, mac: [u8; 6]) -> Result<bool, DataplaneError> {
        Ok(crate::dataplane::nft::NftDataplane::release_pin(self, mac)?)
    }
}
