//! Which dataplanes a gateway runs, opened from `config.dataplane`: the one place a
//! dataplane is constructed, so the controller never names one to build it.

use std::path::{Path, PathBuf};

use super::{nft, xdp, Dataplane, DataplaneError};
use crate::config::{self, Config};

/// Every dataplane of a running gateway.
pub struct Dataplanes {
    /// nftables: always open. It enforces where it is told to (every interface with
    /// `dataplane = "nftables"`, those XDP could not take with `auto`) and owns the
    /// interface hold every dataplane relies on; enforcing nowhere, it costs nothing.
    pub nft: nft::NftDataplane,
    /// XDP; `None` with `dataplane = "nftables"`, which loads no BPF at all.
    pub xdp: Option<xdp::Datapath>,
    /// Any other dataplane: the controller reaches it only through [`Dataplane`].
    pub others: Vec<Box<dyn Dataplane + Send>>,
}

impl Dataplanes {
    /// Opens what `config.dataplane` needs; nftables registers its metrics in `registry`.
    /// XDP loads its program with its maps pinned under [`pin_dir`] (adopting maps an
    /// earlier run pinned).
    pub fn open(
        config: &Config,
        registry: &prometheus::Registry,
    ) -> Result<Dataplanes, DataplaneError> {
        let mut nft = nft::NftDataplane::new(registry).map_err(DataplaneError::Metrics)?;
        // The member whose sync address is the higher one is the pair's second.
        let ha = config.ha.as_ref();
        nft.set_second_member(ha.is_some_and(|h| h.listen.is_some() && h.listen > h.peer));
        let xdp = match config.dataplane {
            config::Dataplane::Xdp | config::Dataplane::Auto => {
                let dir = pin_dir(&config.pin_dir);
                ensure_bpffs(&dir, &config.pin_dir)?;
                Some(xdp::Datapath::load(&xdp::LoadOptions {
                    pin_dir: Some(dir),
                })?)
            }
            config::Dataplane::Nftables => {
                for iface in &config.interfaces {
                    nft.add_interface(&iface.name);
                }
                None
            }
        };
        Ok(Dataplanes {
            nft,
            xdp,
            others: Vec::new(),
        })
    }

    /// Every dataplane, for what the controller does to all alike: nftables first (a
    /// table `nft` refuses fails an install before XDP's slot is written), then XDP, then
    /// the others.
    pub fn all(&mut self) -> impl Iterator<Item = &mut dyn Dataplane> {
        let nft: &mut dyn Dataplane = &mut self.nft;
        let xdp = self.xdp.as_mut().map(|d| d as &mut dyn Dataplane);
        let others = self
            .others
            .iter_mut()
            .map(|d| &mut **d as &mut dyn Dataplane);
        std::iter::once(nft).chain(xdp).chain(others)
    }
}

/// Where this ABI's XDP pins live: `<root>/v<ABI_VERSION>`.
pub fn pin_dir(root: &Path) -> PathBuf {
    root.join(format!("v{}", lazaret_abi::ABI_VERSION))
}

/// Creates `dir` and checks that it is on a bpf filesystem (`root` is the configured pin
/// directory, named in the error).
fn ensure_bpffs(dir: &Path, root: &Path) -> Result<(), DataplaneError> {
    std::fs::create_dir_all(dir).map_err(|source| DataplaneError::PinDir {
        dir: dir.to_path_buf(),
        source,
    })?;
    if !is_bpffs(dir) {
        return Err(DataplaneError::NotBpffs {
            dir: dir.to_path_buf(),
            root: root.to_path_buf(),
        });
    }
    Ok(())
}

fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|st| st.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC)
}
