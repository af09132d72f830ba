//! The dataplanes, and the seam between them and the controller.
//!
//! - [`xdp`]: the XDP program, loaded, pinned and filled generation by generation.
//! - [`nft`]: the same compiled policy as nftables tables, where XDP cannot run.
//! - [`IfaceMode`] / [`Enforcer`]: what enforces on each interface, as types.
//! - [`DeviceDataplane`]: what the controller pushes to every dataplane that enforces, the
//!   same way, whichever it is.
//!
//! The controller holds both dataplanes (XDP is absent with `dataplane = "nftables"`, which
//! loads no BPF at all) and calls [`DeviceDataplane`] on each through
//! `Controller::dataplanes`: the device state it owns (quarantines), the gateway's own
//! addresses and the bridge-port pins reach both without a branch per dataplane.
//!
//! Not behind the seam yet (issue 17, item 1): attaching an interface, installing a
//! generation (XDP writes a slot off the loop and flips; nftables swaps tables), reading
//! counters, events (ring buffer vs nflog) and tamper checks. Those still branch on the
//! interface's [`Enforcer`].

mod mode;
pub mod nft;
pub mod xdp;

pub use mode::{Enforcer, IfaceMode};

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

/// An error of one dataplane.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error(transparent)]
    Xdp(#[from] crate::dataplane::xdp::DatapathError),
    #[error(transparent)]
    Nftables(#[from] crate::dataplane::nft::NftError),
}

/// What the controller keeps the same on every dataplane.
pub trait DeviceDataplane {
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

impl DeviceDataplane for crate::dataplane::xdp::Datapath {
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

impl DeviceDataplane for crate::dataplane::nft::NftDataplane {
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
