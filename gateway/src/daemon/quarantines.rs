//! The controller's side of quarantines: applying a decision of [`super::containment`] to every
//! dataplane, releasing, expiring by TTL, persisting ([`super::quarantine`]) and counting.

use super::*;
impl Controller {
    /// Sets the device's quarantine in the datapath and bumps its epoch, so its flows are
    /// re-judged against the new state on their next packet.
    pub(super) fn apply_quarantine(
        &mut self,
        hash: u64,
        action: Action,
    ) -> Result<(), DaemonError> {
        for dp in self.dataplanes() {
            dp.set_quarantine(hash, action.abi())?;
        }
        Ok(())
    }

    /// Writes the quarantine list; the datapath enforces regardless, the file is what
    /// survives a reboot.
    pub(super) fn save_quarantines(&mut self) {
        let result = self.quarantines.save();
        self.persisted("quarantine", result);
    }

    pub(super) fn update_quarantine_metrics(&self) {
        let mut counts = BTreeMap::new();
        for e in self.quarantines.entries.values() {
            *counts.entry(e.action.name()).or_insert(0u64) += 1;
        }
        let by: Vec<(&str, u64)> = ["alert", "restrict", "isolate"]
            .iter()
            .map(|a| (*a, counts.get(a).copied().unwrap_or(0)))
            .collect();
        self.metrics.set_quarantined(&by);
    }

    /// Carries out a quarantine decided here (by a person or automatically): datapath
    /// state, persisted list, audit log, metrics, log line, event; then tells the other
    /// member of a pair.
    pub(super) fn quarantine(
        &mut self,
        decision: containment::Decision,
    ) -> Result<(), DaemonError> {
        let (device, entry) = (decision.device.clone(), decision.entry.clone());
        self.enforce_quarantine(decision, None)?;
        self.replicate(hasync::Body::Quarantine { device, entry });
        Ok(())
    }

    /// Carries out a quarantine decided here, or on the pair's member `on`.
    fn enforce_quarantine(
        &mut self,
        decision: containment::Decision,
        on: Option<&str>,
    ) -> Result<(), DaemonError> {
        let containment::Decision {
            device,
            hash,
            entry,
        } = decision;
        let (device, action) = (device.as_str(), entry.action);
        let by = match on {
            Some(member) => hasync::by_on(&entry.by, member),
            None => entry.by.clone(),
        };
        let reason = entry.reason.clone();
        let (by, reason) = (by.as_str(), reason.as_str());
        self.apply_quarantine(hash, action)?;
        self.quarantines.released.remove(device);
        self.quarantines.entries.insert(device.to_string(), entry);
        self.save_quarantines();
        if let Err(e) = self
            .quarantines
            .audit("quarantine", device, Some(action), by, reason)
        {
            tracing::error!(error = %e, "audit log");
        }
        tracing::warn!(
            device,
            action = action.name(),
            by,
            reason,
            "device quarantined"
        );
        self.metrics.quarantine_event(action.name());
        self.update_quarantine_metrics();
        self.notify(events::quarantine_event(
            device,
            Some(action),
            by,
            reason,
            events::unix_now(),
        ));
        Ok(())
    }

    /// Releases a device here (a person, or the TTL); then tells the other member of a pair.
    pub(super) fn release(
        &mut self,
        device: &str,
        by: &str,
        reason: &str,
    ) -> Result<(), DaemonError> {
        let at = quarantine::now();
        self.enforce_release(device, by, reason, at)?;
        self.replicate(hasync::Body::Release {
            device: device.to_string(),
            by: by.to_string(),
            reason: reason.to_string(),
            at,
        });
        Ok(())
    }

    /// Releases `device` here, recording the release as made at `at` (Unix seconds, on the
    /// clock of the member that made it: the later of a quarantine and a release wins).
    fn enforce_release(
        &mut self,
        device: &str,
        by: &str,
        reason: &str,
        at: u64,
    ) -> Result<(), DaemonError> {
        if let Some(hash) = self.device_hash(device) {
            self.apply_quarantine(hash, Action::Alert)?;
            self.containment.forget(hash);
        }
        let released = quarantine::Released {
            at,
            by: by.to_string(),
            reason: reason.to_string(),
        };
        self.quarantines
            .record_release(device, released, quarantine::now());
        self.save_quarantines();
        if let Err(e) = self.quarantines.audit("release", device, None, by, reason) {
            tracing::error!(error = %e, "audit log");
        }
        tracing::warn!(device, by, reason, "device released from quarantine");
        self.update_quarantine_metrics();
        self.notify(events::quarantine_event(
            device,
            None,
            by,
            reason,
            events::unix_now(),
        ));
        Ok(())
    }

    /// Releases quarantines whose TTL has passed.
    pub(super) fn expire_quarantines(&mut self) {
        for d in containment::expired(&self.quarantines.entries, quarantine::now()) {
            if let Err(e) = self.release(&d, containment::TTL, "quarantine ttl expired") {
                tracing::error!(device = %d, error = %e, "automatic release failed");
            }
        }
    }

    /// Hands a quarantine or release to the replication, if there is one. Never waits: a
    /// full queue (the peer is slow or gone) drops it, and the snapshot at the next
    /// connection carries every quarantine.
    fn replicate(&mut self, body: hasync::Body) {
        if let Some(out) = &self.sync_out {
            if out.try_send(body).is_err() {
                tracing::warn!("ha sync: the queue to the other member is full; a snapshot of every quarantine follows");
                self.resnapshot = true;
            }
        }
    }

    /// Every quarantine and the releases of the last day, for the other member.
    fn snapshot(&self) -> hasync::Body {
        hasync::Body::Snapshot {
            entries: self.quarantines.entries.clone(),
            released: self.quarantines.recent_releases(quarantine::now()),
        }
    }

    /// Sends a snapshot again if a quarantine or release could not be queued (the link stayed
    /// up, so no reconnection would send one).
    pub(super) fn resend_snapshot(&mut self) {
        if !self.resnapshot {
            return;
        }
        if let Some(out) = &self.sync_out {
            if out.try_send(self.snapshot()).is_ok() {
                self.resnapshot = false;
            }
        }
    }

    /// Starts the XDP flow replication (see [`flowsync`]), when this member runs XDP.
    pub(super) fn start_flow_sync(&mut self, out: tokio::sync::mpsc::Sender<hasync::Body>) {
        let Some(xdp) = self.planes.xdp.as_ref() else {
            return;
        };
        let rt = tokio::runtime::Handle::current();
        let started = xdp.flow_tables().map_err(|e| e.to_string()).and_then(|t| {
            flowsync::spawn(t, out, self.metrics.clone(), rt).map_err(|e| e.to_string())
        });
        match started {
            Ok(h) => {
                h.set_active(self.role.0 == ha::Role::Active);
                self.flow_sync = Some(h);
            }
            Err(e) => {
                tracing::error!(error = %e, "ha sync: cannot start the flow replication; sessions will not survive a failover");
            }
        }
    }

    /// The replication's settings, when `[ha]` has them (and the key was loaded).
    pub(super) fn sync_settings(&self) -> Option<hasync::Settings> {
        let ha = self.config.ha.as_ref()?;
        Some(hasync::Settings {
            key: std::sync::Arc::new(ha.key.clone()?),
            member: self.config.member(),
            listen: ha.listen?,
            peer: ha.peer?,
        })
    }

    /// What the replication reports: the link, the other member's quarantines and
    /// releases, refusals.
    pub(super) fn on_sync(&mut self, msg: hasync::Inbound) {
        match msg {
            hasync::Inbound::Link(up) => {
                self.metrics.set_ha_sync_up(up);
                if let Some(f) = &self.flow_sync {
                    f.set_link(up);
                }
                if up {
                    tracing::info!(
                        "ha sync: connected to the other member; sending every quarantine"
                    );
                    self.replicate(self.snapshot());
                    self.resend_records();
                    self.send_records();
                } else {
                    tracing::warn!("ha sync: lost the other member; retrying every second");
                }
            }
            hasync::Inbound::Refused(r, what) => {
                tracing::error!(reason = r.label(), detail = %what, "ha sync: refused a connection or message");
                self.metrics.ha_sync_refused(r.label());
            }
            hasync::Inbound::Peer { member, body } => match body {
                hasync::Body::Quarantine { device, entry } => {
                    self.quarantine_for_peer(&member, device, entry);
                }
                hasync::Body::Snapshot { entries, released } => {
                    for (device, entry) in entries {
                        self.quarantine_for_peer(&member, device, entry);
                    }
                    for (device, r) in released {
                        self.release_for_peer(&member, &device, &r);
                    }
                }
                // Live: carried out if it is later than the quarantine held here.
                hasync::Body::Release {
                    device,
                    by,
                    reason,
                    at,
                } => {
                    let at = if at == 0 { quarantine::now() } else { at };
                    let r = hasync::Released { at, by, reason };
                    self.release_for_peer(&member, &device, &r);
                }
                hasync::Body::Flows { flows } => {
                    let n = flows.len() as u64;
                    if self.flow_sync.as_ref().is_some_and(|f| !f.take(flows)) {
                        tracing::warn!(flows = n, "ha sync: flows arrive faster than they are written; dropped (the next refresh brings them)");
                        self.metrics
                            .ha_flow_updates(flowsync::Outcome::Failed.label(), n);
                    }
                }
                hasync::Body::Records { learned, unknown } => self.take_records(learned, &unknown),
                hasync::Body::Hello { .. } => {}
            },
        }
    }

    /// A release the other member's snapshot carries, carried out here if this member
    /// holds a quarantine of the device from before the release.
    fn release_for_peer(&mut self, member: &str, device: &str, r: &hasync::Released) {
        let older = self
            .quarantines
            .entries
            .get(device)
            .is_some_and(|e| e.since < r.at);
        if !older {
            return;
        }
        let by = hasync::by_on(&r.by, member);
        if let Err(e) = self.enforce_release(device, &by, &r.reason, r.at) {
            tracing::error!(device = %device, error = %e, "ha sync: release failed");
        }
    }

    /// The other member's quarantine of `device`, carried out here unless this member
    /// already holds the same one (a snapshot repeats what was sent before) or released
    /// the device after it was decided.
    fn quarantine_for_peer(&mut self, member: &str, device: String, entry: quarantine::Entry) {
        if self.quarantines.entries.get(&device) == Some(&entry) {
            return;
        }
        if self
            .quarantines
            .released
            .get(&device)
            .is_some_and(|r| r.at > entry.since)
        {
            return;
        }
        let Some(hash) = self.device_hash(&device) else {
            tracing::warn!(device = %device, member, "ha sync: the other member quarantined a device this policy does not have");
            return;
        };
        let decision = containment::Decision {
            device: device.clone(),
            hash,
            entry,
        };
        if let Err(e) = self.enforce_quarantine(decision, Some(member)) {
            tracing::error!(device = %device, error = %e, "ha sync: quarantine failed");
        }
    }

    pub(super) fn device_hash(&self, id: &str) -> Option<u64> {
        self.compiled.as_ref()?.device(id).map(|d| d.hash)
    }
}
