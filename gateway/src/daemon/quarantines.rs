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

    /// Carries out a quarantine: datapath state, persisted list, audit log, metrics, log
    /// line, event.
    pub(super) fn quarantine(
        &mut self,
        decision: containment::Decision,
    ) -> Result<(), DaemonError> {
        let containment::Decision {
            device,
            hash,
            entry,
        } = decision;
        let (device, action) = (device.as_str(), entry.action);
        let (by, reason) = (entry.by.clone(), entry.reason.clone());
        let (by, reason) = (by.as_str(), reason.as_str());
        self.apply_quarantine(hash, action)?;
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

    pub(super) fn release(
        &mut self,
        device: &str,
        by: &str,
        reason: &str,
    ) -> Result<(), DaemonError> {
        if let Some(hash) = self.device_hash(device) {
            self.apply_quarantine(hash, Action::Alert)?;
            self.containment.forget(hash);
        }
        self.quarantines.entries.remove(device);
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

    pub(super) fn device_hash(&self, id: &str) -> Option<u64> {
        self.compiled.as_ref()?.device(id).map(|d| d.hash)
    }
}
