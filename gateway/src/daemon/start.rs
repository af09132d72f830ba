//! Starting: adopting what an earlier run left pinned (maps, links, the generation), restoring
//! the controller's state (quarantines, pins), the first install, attaching every interface.

use super::*;
impl Controller {
    /// Loads the program (adopting pinned maps), installs the policy, attaches. At start the
    /// policy must be valid unless a previous generation is already enforcing from the
    /// pinned maps, in which case that one keeps enforcing and the error is logged.
    pub fn start(config: Config, deps: Deps) -> Result<Self, DaemonError> {
        let compiler =
            compiler::Compiler::new(&config.policy_dir, config.gateway.clone(), config.member());
        // At boot lazaret starts before the network is configured: an interface (a VLAN, a
        // bridge) may not exist yet. It is held closed by name (see `nft::hold`) under the
        // placeholder ifindex 0, which no interface has, so devices bound to it fail their
        // binding check; `check_interfaces` attaches when it appears.
        let ifaces =
            interfaces::Interfaces::new(&config.interfaces, config.dataplane, deps.ifindex);
        let pin_dir = crate::dataplane::pin_dir(&config.pin_dir);
        let metrics = Metrics::new(env!("CARGO_PKG_VERSION"))
            .map_err(|e| DaemonError::Metrics(e.to_string()))?;
        // nftables alone needs no BPF: nothing is loaded, no bpffs is needed or touched.
        let planes = (deps.dataplanes)(&config, metrics.registry())?;
        let (quarantines, state_error) = Quarantines::load(&config.state_dir);
        let config_state_dir = config.state_dir.clone();
        let config_has_ha = config.ha.is_some();
        let mut ctl = Controller {
            config,
            planes,
            ifindex: deps.ifindex,
            stacked_tried: None,
            ifaces,
            reloads: reloader::Reloader::new(read_generation(&config_state_dir)),
            pin_dir,
            metrics: Arc::new(metrics),
            compiled: None,
            compiler,
            compiled_tx: None,
            started: Instant::now(),
            quarantines,
            state_errors: BTreeMap::new(),
            lkg: lkg::Keeper::new(&config_state_dir),
            on_lkg: false,
            no_policy: false,
            staged_tx: None,
            usage: Vec::new(),
            observed_tx: None,
            observing: false,
            containment: containment::Containment::default(),
            unknowns: Self::load_unknowns(&config_state_dir),
            prober: probe::Prober::default(),
            feed: events::Feed::default(),
            webhook: None,
            learned: Self::load_learned(&config_state_dir),
            learned_dirty: false,
            local: std::collections::BTreeSet::new(),
            pins: pins::Pins::load(&config_state_dir),
            // Until the first reading of the addresses: a pair member decides nothing.
            role: if config_has_ha {
                (ha::Role::Standby, 0)
            } else {
                (ha::Role::Standalone, 0)
            },
            sync_out: None,
            resnapshot: false,
            flow_sync: None,
            vendors: load_vendors(),
            records_pending: records::Pending::default(),
            records_out: None,
            unknowns_dirty: false,
            unknowns_saved: None,
            commit_tx: tokio::sync::watch::channel(None).0,
            windows: windows::Windows::default(),
        };
        ctl.metrics.set_ha_role(ctl.role.0.name());
        ctl.metrics.set_ha_sync_up(false);
        ctl.sync_local();
        ctl.restore_pins();
        let legacy = match ctl.planes.xdp.as_mut() {
            Some(dp) => {
                let adopted = dp.active_site()?;
                ctl.reloads.adopt(adopted.generation);
                // A run killed between writing its next slot and switching to it left a
                // higher number in the inactive slot, one that never enforced: it is not
                // given again, so a number written once names one policy only.
                if let Some(written) = Datapath::pinned_generation(&ctl.pin_dir) {
                    ctl.reloads.burn(written);
                }
                if adopted.generation > 0 {
                    tracing::info!(
                        generation = adopted.generation,
                        "adopted the pinned datapath state"
                    );
                }
                attach::legacy_dirs(&ctl.config.pin_dir, &ctl.pin_dir)
            }
            None => Vec::new(),
        };
        // An upgrade from an older datapath ABI: continue its generation numbering, so the
        // flows carried over are all older than the first new generation and re-judged.
        for dir in &legacy {
            if let Some(g) = Datapath::pinned_generation(dir) {
                ctl.reloads.adopt(g);
            }
        }
        for iface in ctl.config.interfaces.clone() {
            if let Some(index) = ctl.ifaces.ifindex(&iface.name) {
                let config = ctl.iface_config(&iface);
                if let Some(dp) = ctl.planes.xdp.as_mut() {
                    dp.set_interface_config(index, config)?;
                }
            }
        }
        let held = ctl.ifaces.held();
        if !held.is_empty() {
            ctl.metrics.held(held.len());
            // Closed before anything else happens (the policy may take a while to compile).
            ctl.planes
                .nft
                .hold(held)
                .map_err(|e| DaemonError::Nftables(e.into()))?;
        }
        // Without XDP, the quarantines an earlier run's nftables table enforces are read
        // before the first table of this run replaces it: the state file may have lost one.
        // Its table also keeps enforcing if the repository is refused now (see
        // `start_without_repository`), like pinned XDP maps do.
        let mut kernel_quarantines = Vec::new();
        if ctl.config.dataplane == crate::config::Dataplane::Nftables
            && ctl.planes.nft.table_in_kernel()
        {
            kernel_quarantines = ctl.planes.nft.kernel_quarantines();
            ctl.reloads
                .adopt(read_generation(&ctl.config.state_dir).max(1));
        }
        match ctl.reload() {
            Ok(_) => {}
            Err(e @ DaemonError::Policy { .. }) => ctl.start_without_repository(&e)?,
            Err(e) => return Err(e),
        }
        ctl.restore_quarantines(state_error, &kernel_quarantines)?;
        // (`legacy` is empty without an XDP datapath.)
        if let Some(dp) = ctl.planes.xdp.as_mut() {
            for dir in &legacy {
                match dp.migrate_flows(dir) {
                    Ok(n) => {
                        tracing::info!(from = %dir.display(), flows = n, "flows carried over from the older datapath");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not carry flows over; their sessions will have to reconnect");
                    }
                }
            }
        }
        ctl.attach_all()?;
        // A hold an earlier run left (it died while an interface was gone): every interface
        // is attached now. Best effort: without nft there is no hold to lift.
        if let Err(e) = ctl.planes.nft.hold(&ctl.held_interfaces()) {
            tracing::debug!(error = %e, "lifting an interface hold");
        }
        Ok(ctl)
    }

    /// The policy repository was refused at start (`refused`): enforce the last-known-good
    /// policy; without one, keep a generation still pinned from before (a restart, not a
    /// reboot); without that either, hold the device-side interfaces closed until a reload
    /// succeeds. Never start open.
    pub(super) fn start_without_repository(
        &mut self,
        refused: &DaemonError,
    ) -> Result<(), DaemonError> {
        tracing::error!(error = %refused, "the policy repository is refused at start");
        match lkg::Snapshot::load(&self.config.state_dir) {
            Ok(Some(snap)) => {
                let job = self.job("last-known-good")?.ok_or(DaemonError::StoodDown)?;
                let result = self.compiler.compile_snapshot(&snap, &job);
                match result.and_then(|out| self.install(job, out)) {
                    Ok(r) => {
                        // `status` keeps saying why: the repository is still refused.
                        self.reloads.refused(refused.to_string());
                        tracing::error!(
                            generation = r.generation,
                            commit = snap.commit.as_deref().unwrap_or("-"),
                            saved = snap.saved,
                            enforced_as = snap.generation,
                            "enforcing the LAST-KNOWN-GOOD policy until the repository is fixed"
                        );
                        return Ok(());
                    }
                    Err(e) => {
                        // What the operator must fix is the repository.
                        self.reloads.refused(refused.to_string());
                        tracing::error!(error = %e, "the last-known-good policy cannot be enforced");
                    }
                }
            }
            Ok(None) => tracing::error!("no last-known-good policy in the state directory"),
            Err(e) => tracing::error!(error = %e, "the last-known-good policy is unusable"),
        }
        if self.reloads.generation() > 0 {
            // Pinned XDP maps, or (nftables alone) the table an earlier run left in the
            // kernel: what enforced before the restart keeps enforcing.
            tracing::error!(
                generation = self.reloads.generation(),
                "the generation enforcing before the restart keeps enforcing"
            );
            return Ok(());
        }
        // Nothing to enforce: the device ports are closed, by name, before they exist.
        self.no_policy = true;
        let held = self.held_interfaces();
        tracing::error!(held = %names(&held), "NO POLICY to enforce: device-side interfaces held closed until the repository compiles");
        self.metrics.held(held.len());
        self.planes
            .nft
            .hold(&held)
            .map_err(|e| DaemonError::Nftables(e.into()))
    }

    /// Puts the persisted quarantines back into the datapath (after a reboot the pinned
    /// state is gone), and lists the quarantines the pinned datapath enforces that the
    /// state file does not know (corrupt, or a write failed) as recovered: none is dropped
    /// and none is invisible.
    pub(super) fn restore_quarantines(
        &mut self,
        state_error: Option<quarantine::StateError>,
        kernel: &[(nft::KernelDevice, u8)],
    ) -> Result<(), DaemonError> {
        let devices: Vec<(String, u64, Vec<nft::KernelDevice>)> = self
            .compiled
            .as_ref()
            .map(|c| {
                c.devices
                    .iter()
                    .map(|d| {
                        let names = d.mac.map(|m| nft::KernelDevice::Mac(m.0)).into_iter();
                        let v4 = d.ipv4.iter().map(|a| nft::KernelDevice::Addr((*a).into()));
                        let v6 = d.ipv6.iter().map(|a| nft::KernelDevice::Addr((*a).into()));
                        (d.id.clone(), d.hash, names.chain(v4).chain(v6).collect())
                    })
                    .collect()
            })
            .unwrap_or_default();
        // Every quarantine the pinned datapath enforces is listed, whether the state file
        // was corrupt or merely missing one (a write that failed before a restart): a
        // device the datapath drops is never one `quarantine list` does not show.
        let corrupt = state_error.is_some();
        if let Some(err) = state_error {
            tracing::error!(error = %err, "quarantine state could not be read");
        }
        // Only ever stricter: where the datapath enforces more than the file records (a
        // quarantine whose write failed), the datapath's is kept; where the file records
        // more (a release whose write failed, or a reboot emptied the datapath), the file's
        // is applied below. A quarantine is never dropped by a restart.
        let mut recovered = 0;
        let mut enforced = Vec::new();
        for (id, hash, names) in &devices {
            let quarantine = match self.planes.xdp.as_mut() {
                Some(dp) => dp.device_state(*hash)?.quarantine,
                // nftables alone: what its table of the earlier run enforced on the device's
                // MAC or any of its addresses, the strictest if they differ (the policy
                // changed between the runs).
                None => kernel
                    .iter()
                    .filter(|(k, _)| names.contains(k))
                    .map(|(_, q)| *q)
                    .max()
                    .unwrap_or(lazaret_abi::QUARANTINE_NONE),
            };
            enforced.push((id, quarantine));
        }
        for (id, quarantine) in enforced {
            let action = match quarantine {
                lazaret_abi::QUARANTINE_RESTRICT => Action::Restrict,
                lazaret_abi::QUARANTINE_ISOLATE => Action::Isolate,
                _ => continue,
            };
            let recorded = self.quarantines.entries.get(id).map(|e| e.action);
            if recorded.is_some_and(|r| r >= action) {
                continue;
            }
            let reason = if corrupt {
                "recovered from the datapath after the state file was found corrupt".to_string()
            } else {
                format!(
                    "recovered from the datapath: the state file recorded {} (a write failed?)",
                    recorded.map_or("no quarantine", Action::name)
                )
            };
            tracing::warn!(device = %id, action = action.name(), "quarantine recovered from the datapath");
            self.quarantines.entries.insert(
                id.clone(),
                quarantine::Entry {
                    action,
                    reason,
                    by: "lazaret".into(),
                    since: quarantine::now(),
                    until: None,
                    recovered: true,
                },
            );
            recovered += 1;
        }
        if corrupt || recovered > 0 {
            self.save_quarantines();
        }
        for (id, entry) in self.quarantines.entries.clone() {
            match devices.iter().find(|(d, _, _)| *d == id) {
                Some((_, hash, _)) => self.apply_quarantine(*hash, entry.action)?,
                None => {
                    tracing::warn!(device = %id, "a quarantined device is not in the policy; its quarantine is kept");
                }
            }
        }
        self.update_quarantine_metrics();
        Ok(())
    }

    pub(super) fn attach_all(&mut self) -> Result<(), DaemonError> {
        let mut fell_back = false;
        for iface in self.config.interfaces.clone() {
            let Some(index) = self.ifaces.ifindex(&iface.name) else {
                // Not there yet: held closed (since `Interfaces::new`), attached when it
                // appears.
                if let Some(mode) = self.ifaces.mode(&iface.name) {
                    self.set_mode(&iface.name, mode);
                }
                continue;
            };
            // nftables where it was told to enforce (applied by the reload before this).
            let meant = if self.planes.nft.uses(&iface.name) {
                Enforcer::Nftables
            } else {
                interfaces::meant(&iface, self.config.dataplane)
            };
            let mode = match self.attach_interface(&iface, index, meant) {
                Ok(mode) => mode,
                Err(e)
                    if meant.is_xdp()
                        && self.config.dataplane == crate::config::Dataplane::Auto =>
                {
                    tracing::warn!(interface = %iface.name, error = %e, "XDP cannot attach: nftables enforces on this interface");
                    fell_back = true;
                    self.attach_interface(&iface, index, Enforcer::Nftables)?
                }
                Err(e) => return Err(e),
            };
            self.set_mode(&iface.name, IfaceMode::Enforcing(mode));
            if !fell_back {
                // The dataplane meant to enforce does: whatever another one (or an earlier
                // run in another mode) left on the interface goes.
                self.release_others(&iface.name, mode);
            }
        }
        if fell_back {
            // A flow must meet one dataplane at both ends: the XDP flow table and conntrack
            // do not know each other's flows (a reply entering an XDP interface for a flow
            // that nftables admitted would be dropped as flowless). So once one interface
            // needs nftables, every interface uses it. XDP lets go only once nftables
            // enforces on all of them: there is no moment without either.
            // One not present yet stays held closed, and nftables enforces when it appears.
            for iface in self.config.interfaces.clone() {
                if self.planes.nft.uses(&iface.name) {
                    continue;
                }
                tracing::warn!(interface = %iface.name, "moved to nftables with the interfaces that fell back");
                let index = self.ifaces.ifindex(&iface.name);
                let missing = interfaces::MISSING_IFINDEX;
                let mode =
                    self.attach_interface(&iface, index.unwrap_or(missing), Enforcer::Nftables)?;
                let mode = match index {
                    Some(_) => IfaceMode::Enforcing(mode),
                    None => IfaceMode::Held(mode),
                };
                self.set_mode(&iface.name, mode);
            }
            self.planes.nft.reapply()?;
            for iface in self.config.interfaces.clone() {
                self.release_others(&iface.name, Enforcer::Nftables);
            }
        }
        let pin_dir = self.pin_dir.clone();
        for dp in self.dataplanes() {
            dp.attached_all(&pin_dir);
        }
        Ok(())
    }

    /// Attaches the dataplane `enforcer` names to `iface` (present as `index`); how it
    /// enforces there. The others are not told to let go (see [`Self::release_others`]):
    /// until the caller does, the interface is never without enforcement.
    pub(super) fn attach_interface(
        &mut self,
        iface: &crate::config::Interface,
        index: u32,
        enforcer: Enforcer,
    ) -> Result<Enforcer, DaemonError> {
        let (pin_dir, state_dir) = (self.pin_dir.clone(), self.config.state_dir.clone());
        let a = crate::dataplane::Attach {
            iface,
            ifindex: index,
            config: self.iface_config(iface),
            pin_dir: &pin_dir,
            state_dir: &state_dir,
        };
        let dp = self
            .dataplanes()
            .find(|d| d.serves(enforcer))
            .ok_or(DaemonError::NoDataplane(enforcer))?;
        Ok(dp.attach(&a)?)
    }

    /// Every dataplane but the one `enforcer` names lets go of `interface`. Without XDP
    /// loaded (`dataplane = "nftables"`), a link an earlier XDP run pinned for it goes too:
    /// its program would otherwise keep judging by a frozen policy in front of nftables.
    pub(super) fn release_others(&mut self, interface: &str, enforcer: Enforcer) {
        let pin_dir = self.pin_dir.clone();
        for dp in self.dataplanes().filter(|d| !d.serves(enforcer)) {
            dp.release(interface, &pin_dir);
        }
        if self.planes.xdp.is_none() && !enforcer.is_xdp() {
            attach::release(&pin_dir, interface);
        }
    }

    /// Every dataplane lets go of `interface` (it came back under a new ifindex, or lost
    /// its program): attached anew next.
    pub(super) fn release_interface(&mut self, interface: &str) {
        let pin_dir = self.pin_dir.clone();
        for dp in self.dataplanes() {
            dp.release(interface, &pin_dir);
        }
    }
}

/// The IEEE's MAC registry (see [`oui`]); empty, with a warning, when it is not installed.
fn load_vendors() -> oui::Vendors {
    let (vendors, why) = oui::Vendors::load(std::path::Path::new(oui::SYSTEM_FILE));
    if let Some(why) = why {
        tracing::warn!(reason = %why, "no MAC vendor registry: unknown devices are listed without their vendor");
    }
    vendors
}
