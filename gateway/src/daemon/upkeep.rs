//! Keeping enforcement in place while serving: interfaces lost and regained (decided by
//! [`super::interfaces`]), tamper checks, the gateway's own addresses, bridge-port pins, the
//! interface hold, and the counters read into the metrics off the loop.

use super::serve::unix_ms;
use super::*;

/// How often a reload that did not render the interfaces stacked on enforced ones is asked
/// again (see `check_interfaces`).
const STACKED_RETRY: Duration = Duration::from_secs(5);
impl Controller {
    /// The interfaces held closed: those that disappeared (XDP cannot be on them when they
    /// return) and, with no policy, every device-side interface.
    pub(super) fn held_interfaces(&self) -> std::collections::BTreeSet<String> {
        let mut held = self.ifaces.held().clone();
        if self.no_policy {
            held.extend(
                self.config
                    .interfaces
                    .iter()
                    .filter(|i| i.side == crate::config::Side::Devices)
                    .map(|i| i.name.clone()),
            );
        }
        held
    }

    /// Reads the datapath's counters into the metrics, on a thread of its own when serving
    /// (with a big policy, counting map entries and reading every device's counters takes
    /// tens of milliseconds the loop must not spend); the snapshot comes back through
    /// `observed`. At most one read at a time.
    pub(super) fn observe(&mut self) {
        let Some(tx) = self.observed_tx.clone() else {
            return;
        };
        if self.observing {
            return;
        }
        let devices: Vec<(u64, Option<String>)> = self
            .compiled
            .as_ref()
            .map(|c| {
                c.devices
                    .iter()
                    .map(|d| (d.hash, d.class.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let sources: Result<Vec<_>, _> = self.dataplanes().map(Dataplane::counters).collect();
        let mut sources: Vec<_> = match sources {
            Ok(sources) => sources.into_iter().flatten().collect(),
            Err(e) => {
                tracing::warn!(error = %e, "opening the dataplanes' counters; read at the next tick");
                return;
            }
        };
        self.observing = true;
        tokio::task::spawn_blocking(move || {
            let _ = tx.send(read_snapshot(&mut sources, &devices));
        });
    }

    /// A snapshot `observe` read.
    pub(super) fn observed(&mut self, snap: Option<DatapathSnapshot>) {
        self.observing = false;
        if let Some(snap) = snap {
            self.metrics.counters_read(unix_ms() as f64 / 1000.0);
            self.usage.clone_from(&snap.map_entries);
            self.metrics.observe_datapath(&snap);
        }
    }

    /// The datapath's view of a configured interface (side, untagged VLAN, bridge binding).
    pub(super) fn iface_config(
        &self,
        iface: &crate::config::Interface,
    ) -> lazaret_abi::IfaceConfig {
        let bridge = iface
            .bridge
            .as_ref()
            .and_then(|b| self.ifaces.ifindexes().get(b).copied());
        iface.datapath_config(bridge)
    }

    /// Records `mode` for `interface`, in `status` and in `lazaret_interface_attached`.
    pub(super) fn set_mode(&mut self, interface: &str, mode: IfaceMode) {
        self.ifaces.set_mode(interface, mode);
        self.planes.nft.report(interface, mode.enforcer());
        self.metrics
            .set_interface(interface, mode.enforcer().label(), mode.is_enforcing());
    }

    /// Acts on what [`interfaces::Interfaces::check`] found: a bridge that appeared (its
    /// ports configured, a reload for devices bound to it), an interface gone (held closed
    /// by name: neither XDP nor the nftables frame stage, bound to the device, will be on it
    /// when it returns), an interface back, possibly under a new ifindex (attached anew:
    /// the old pinned link died with the old interface; devices bound to it are recompiled
    /// for the new ifindex).
    pub(super) fn check_interfaces(&mut self) {
        if self.reloads.stood_down() {
            return;
        }
        let held = self.ifaces.held().clone();
        for change in self.ifaces.check(self.ifindex) {
            match change {
                interfaces::Change::BridgeAppeared {
                    bridge,
                    ifindex,
                    ports,
                } => {
                    tracing::warn!(bridge = %bridge, ifindex, "bridge appeared");
                    for port in ports {
                        let Some(iface) = self.config.interfaces.iter().find(|i| i.name == port)
                        else {
                            continue;
                        };
                        let config = self.iface_config(iface);
                        let index = self.ifaces.ifindex(&port);
                        if let Some(Err(e)) = index
                            .zip(self.planes.xdp.as_mut())
                            .map(|(p, dp)| dp.set_interface_config(p, config))
                        {
                            tracing::error!(interface = %port, error = %e, "configuring a bridge port");
                        }
                    }
                    self.reload_and_report("bridge appeared");
                }
                interfaces::Change::Lost { interface } => {
                    tracing::error!(interface = %interface, "interface disappeared: held closed until it returns");
                    if let Some(mode) = self.ifaces.mode(&interface) {
                        self.set_mode(&interface, mode);
                    }
                }
                interfaces::Change::Returned {
                    interface,
                    ifindex,
                    enforcer,
                } => self.returned(&interface, ifindex, enforcer),
            }
        }
        if self.ifaces.held() != &held {
            self.update_hold();
        }
        // Bypass class: an interface stacked on one nftables enforces on (a VLAN
        // sub-interface of a trunk, say) is known to its table only once rendered with it;
        // until then what is routed through it passes the inet hooks unjudged. Found here
        // within one check (250 ms) of its creation, or of a render without it (one that
        // raced its creation); a reload that did not render it is asked again, at most
        // every `STACKED_RETRY`.
        let stacked = self.planes.nft.stacked();
        if &stacked != self.planes.nft.rendered_stacked() {
            let due = self
                .stacked_tried
                .as_ref()
                .is_none_or(|(tried, at)| tried != &stacked || at.elapsed() >= STACKED_RETRY);
            if due {
                tracing::warn!(stacked = ?stacked, "interfaces stacked on one nftables enforces on changed: reloading to judge them as it");
                self.stacked_tried = Some((stacked, Instant::now()));
                self.reload_and_report("interfaces stacked on an enforced one changed");
            }
        }
    }

    /// `interface` is back (or still without its dataplane) under `index`: its dataplane
    /// enforces on it again, or it stays held and is retried at the next check.
    pub(super) fn returned(&mut self, interface: &str, index: u32, enforcer: Enforcer) {
        tracing::warn!(
            interface,
            ifindex = index,
            "interface (re)appeared: attaching"
        );
        let Some(iface) = self
            .config
            .interfaces
            .iter()
            .find(|i| i.name == interface)
            .cloned()
        else {
            return;
        };
        // The old pinned XDP link died with the old interface.
        self.release_interface(interface);
        // Attach first, then reload for the new ifindex: until the reload, devices bound to
        // the interface fail their binding check and are dropped (closed), rather than the
        // interface passing everything (open). nftables matches interfaces by name; the
        // reload re-renders its table for the new ifindex of devices bound to the
        // interface and hooks the frame stage on the new device.
        match self.attach_interface(&iface, index, enforcer) {
            Ok(mode) => {
                // Enforcing again: the hold can go. A reload that fails is reported and
                // retried with the next policy change; the attach is not redone.
                self.set_mode(interface, IfaceMode::Enforcing(mode));
                tracing::info!(interface, mode = mode.label(), "re-attached");
                self.reload_and_report("interface returned");
            }
            Err(e) => {
                // Not enforcing on it: held closed, retried at the next check.
                tracing::error!(interface, error = %e, "re-attaching failed; will retry");
                self.set_mode(interface, IfaceMode::Held(enforcer));
            }
        }
    }

    /// Compares what the kernel enforces with what this daemon put there, and puts it back
    /// if someone else changed it: an XDP program detached (its pinned link detached through
    /// bpf(2)) or replaced, lazaret's nftables tables deleted or changed, the interface hold
    /// removed. Each finding is counted in `lazaret_datapath_tamper_total`, and
    /// `lazaret_interface_attached` says 0 until enforcement is back. An XDP interface that
    /// cannot be restored (another program holds it) is held closed and retried.
    pub(super) fn check_tamper(&mut self) {
        if self.reloads.stood_down() {
            return;
        }
        let held = !self.held_interfaces().is_empty();
        // The interfaces each dataplane enforces on, with their ifindexes.
        let enforcing: Vec<(String, u32, Enforcer)> = self
            .ifaces
            .modes()
            .iter()
            .filter(|(_, m)| m.is_enforcing())
            .filter_map(|(n, m)| Some((n.clone(), self.ifaces.ifindex(n)?, m.enforcer())))
            .collect();
        let mut found: Vec<(Enforcer, crate::dataplane::Tampering)> = Vec::new();
        for dp in self.dataplanes() {
            let on: Vec<(String, u32)> = enforcing
                .iter()
                .filter(|(_, _, e)| dp.serves(*e))
                .map(|(n, i, _)| (n.clone(), *i))
                .collect();
            let Some(enforcer) = Enforcer::ALL.into_iter().find(|e| dp.serves(*e)) else {
                continue;
            };
            found.extend(dp.tampered(&on, held).into_iter().map(|t| (enforcer, t)));
        }
        for (enforcer, t) in found {
            self.repair(enforcer, t);
        }
    }

    /// Puts back what a dataplane found changed behind lazaret's back, and counts it in
    /// `lazaret_datapath_tamper_total`. `lazaret_interface_attached` says 0 until the
    /// interface enforces again; an XDP interface that cannot be restored (another program
    /// holds it) is held closed and retried by the interface check.
    fn repair(&mut self, enforcer: Enforcer, t: crate::dataplane::Tampering) {
        use crate::dataplane::Repair;
        let counted = match t.repair {
            Repair::Hold => self.held_interfaces().into_iter().collect(),
            Repair::Reattach | Repair::Restore => t.interfaces.clone(),
        };
        for name in &counted {
            self.metrics.tamper(name, t.kind);
        }
        match t.repair {
            Repair::Hold => self.update_hold(),
            Repair::Reattach => {
                for name in &t.interfaces {
                    let (Some(mode), Some(index)) =
                        (self.ifaces.mode(name), self.ifaces.ifindex(name))
                    else {
                        continue;
                    };
                    let Some(iface) = self
                        .config
                        .interfaces
                        .iter()
                        .find(|i| &i.name == name)
                        .cloned()
                    else {
                        continue;
                    };
                    self.set_mode(name, mode.detached());
                    self.release_interface(name);
                    match self.attach_interface(&iface, index, mode.enforcer()) {
                        Ok(now) => {
                            tracing::warn!(interface = %name, mode = now.label(), "enforcement restored");
                            self.set_mode(name, IfaceMode::Enforcing(now));
                        }
                        Err(e) => {
                            tracing::error!(interface = %name, error = %e, "cannot restore enforcement: the interface is held closed");
                            self.set_mode(name, mode.held());
                            self.update_hold();
                        }
                    }
                }
            }
            Repair::Restore => {
                // Interfaces that are gone stay as they are; these are detached until
                // restored.
                for name in &t.interfaces {
                    self.set_mode(name, IfaceMode::Detached(enforcer));
                }
                let pins = self.pins.list();
                let restored = self
                    .dataplanes()
                    .find(|d| d.serves(enforcer))
                    .map(|d| d.restore(&pins));
                match restored {
                    Some(Ok(())) => {
                        tracing::warn!(dataplane = enforcer.dataplane(), "enforcement restored");
                        // The restored table enforces on every interface of its dataplane:
                        // those enforcing at this check, and those an earlier restore that
                        // failed left detached (this check did not list them, as they were
                        // not enforcing; left detached, their next tampering would go
                        // uncounted and `status` would call them detached).
                        let waiting: Vec<String> = self
                            .ifaces
                            .modes()
                            .iter()
                            .filter(|(_, m)| **m == IfaceMode::Detached(enforcer))
                            .map(|(n, _)| n.clone())
                            .collect();
                        for name in t.interfaces.iter().chain(&waiting) {
                            self.set_mode(name, IfaceMode::Enforcing(enforcer));
                        }
                    }
                    Some(Err(e)) => {
                        tracing::error!(dataplane = enforcer.dataplane(), error = %e, "cannot restore enforcement (retried every check)");
                    }
                    None => {}
                }
            }
        }
    }

    /// Gives the dataplanes the gateway's current addresses when they changed.
    pub(super) fn sync_local(&mut self) {
        let now = match local::own_addresses() {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "reading the gateway's addresses; the previous ones stay");
                return;
            }
        };
        self.update_role(&now);
        if now == self.local {
            return;
        }
        // Every dataplane is given them, even after one failed.
        let results: Vec<_> = self.dataplanes().map(|dp| dp.set_local(&now)).collect();
        match results.into_iter().collect::<Result<Vec<()>, _>>() {
            Ok(_) => {
                tracing::info!(
                    addresses = now.len(),
                    "the gateway's own addresses given to the dataplanes"
                );
                self.local = now;
            }
            Err(e) => {
                tracing::error!(error = %e, "updating the gateway's addresses in the dataplanes; retried at the next check");
            }
        }
    }

    /// This host's role, from its addresses `own` (see [`ha`]): logged and exported when
    /// it changes.
    fn update_role(&mut self, own: &std::collections::BTreeSet<std::net::IpAddr>) {
        let vips = self
            .config
            .ha
            .as_ref()
            .map(|h| h.virtual_addresses.as_slice());
        let (role, held) = ha::role(vips, own);
        if (role, held) == self.role {
            return;
        }
        let total = vips.map_or(0, <[_]>::len);
        if role == ha::Role::Standby && held > 0 {
            tracing::error!(
                held,
                of = total,
                "this member holds only some of the [ha] virtual addresses: standby until it holds all (keepalived must move them together)"
            );
        } else {
            tracing::warn!(
                role = role.name(),
                held,
                of = total,
                "high-availability role"
            );
        }
        self.role = (role, held);
        self.metrics.set_ha_role(role.name());
        if let Some(f) = &self.flow_sync {
            f.set_active(role == ha::Role::Active);
        }
        if role == ha::Role::Active {
            self.resend_records();
        }
    }

    /// Puts the pins of the state directory back into the dataplanes (after a reboot they
    /// are empty): a pin ends only when a person releases it.
    pub(super) fn restore_pins(&mut self) {
        let (pins, ifindexes) = (self.pins.list(), self.ifaces.ifindexes().clone());
        for dp in self.dataplanes() {
            if let Err(e) = dp.restore_pins(&pins, &ifindexes) {
                tracing::error!(error = %e, "restoring the port pins");
            }
        }
    }

    /// Reads the pins the dataplanes learned and keeps new ones in the state directory.
    pub(super) fn sync_pins(&mut self) {
        let mut seen = Vec::new();
        let ifindexes = self.ifaces.ifindexes().clone();
        for dp in self.dataplanes() {
            match dp.pins(&ifindexes) {
                Ok(pins) => seen.extend(pins),
                Err(e) => tracing::debug!(error = %e, "reading the port pins"),
            }
        }
        if self.pins.merge(seen) {
            let result = self.pins.save(&self.config.state_dir);
            self.persisted("port_pins", result);
        }
    }

    pub(super) fn update_hold(&self) {
        let held = self.held_interfaces();
        self.metrics.held(held.len());
        match self.planes.nft.hold(&held) {
            Ok(()) => {
                tracing::info!(held = %names(&held), "interfaces held closed until XDP is attached or a policy compiles");
            }
            Err(e) => {
                tracing::warn!(error = %e, held = %names(&held), "could not hold interfaces closed (nftables): a returning interface passes traffic unjudged until re-attached");
            }
        }
    }
}

/// Every dataplane's counters, read through `sources` (on a thread: see
/// `Controller::observe`): `None` if a dataplane's packet counters cannot be read.
/// `devices`: (hash, class) of the policy's devices.
pub(super) fn read_snapshot(
    sources: &mut [Box<dyn crate::dataplane::Counters>],
    devices: &[(u64, Option<String>)],
) -> Option<DatapathSnapshot> {
    let mut snap = DatapathSnapshot::default();
    for source in sources {
        source.read_into(devices, &mut snap).ok()?;
    }
    Some(snap)
}
