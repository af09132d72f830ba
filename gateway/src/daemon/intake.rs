//! What the dataplanes report (XDP ring buffer, nflog): deviations counted towards a
//! quarantine, flows of learn-mode devices, unknown devices; and the event feed and webhook.

use super::*;

/// The unknown-device list is written at most this often as new devices appear; the tick
/// writes what waited (see `on_unknown`).
pub(super) const SAVE_UNKNOWNS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl Controller {
    /// A controller event for followers (and the webhook, when one is configured).
    pub(super) fn notify(&self, event: events::Record) {
        self.feed.publish(&event);
        if let Some(hook) = &self.webhook {
            hook.send(event);
        }
    }

    /// The learned flows; a file that cannot be read is moved aside (never overwritten)
    /// and learning starts again.
    pub(super) fn load_learned(state_dir: &Path) -> learn::Learned {
        match learn::Learned::load(state_dir) {
            Ok(l) => l,
            Err(e) => {
                let path = state_dir.join(learn::FILE);
                let moved = path.with_extension(format!("json.corrupt-{}", quarantine::now()));
                let _ = std::fs::rename(&path, &moved);
                tracing::error!(error = %e, moved = %moved.display(), "learned flows unreadable; moved aside, learning starts again");
                learn::Learned {
                    version: 1,
                    ..learn::Learned::default()
                }
            }
        }
    }

    /// Writes the learned flows if they changed.
    pub(super) fn save_learned(&mut self) {
        if !self.learned_dirty {
            return;
        }
        let result = self.learned.save(&self.config.state_dir);
        if result.is_ok() {
            self.learned_dirty = false;
        }
        self.persisted("learned", result);
    }

    /// A learn event: recorded for its device if the device is in learn mode. New flow
    /// patterns are written at once, counts on the next tick.
    pub(super) fn on_learn(&mut self, ev: &lazaret_abi::Event) {
        let Some(d) = self
            .compiled
            .as_ref()
            .and_then(|c| c.device_by_hash(ev.device))
            .filter(|d| d.mode == policy::model::Mode::Learn)
        else {
            return;
        };
        let id = d.id.clone();
        self.learned_dirty = true;
        self.records_changed(records::Changed::Learned(&id));
        if self.learned.observe(&id, ev, quarantine::now()) {
            self.save_learned();
        }
    }

    pub(super) fn load_unknowns(state_dir: &Path) -> unknown::Unknowns {
        let path = state_dir.join("unknown-devices.json");
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "unknown-device list unreadable; starting a new one");
                unknown::Unknowns::default()
            }),
            Err(_) => unknown::Unknowns::default(),
        }
    }

    pub(super) fn save_unknowns(&mut self) {
        self.unknowns_saved = Some(std::time::Instant::now());
        let path = self.config.state_dir.join("unknown-devices.json");
        let result = serde_json::to_vec_pretty(&self.unknowns)
            .map_err(std::io::Error::other)
            .and_then(|body| state::write_atomic(&path, &body));
        // Written: nothing waits. Not written: the next tick tries again.
        self.unknowns_dirty = result.is_err();
        self.persisted("unknown_devices", result);
    }

    /// An unknown source spoke on a device port.
    pub(super) fn on_unknown(&mut self, ev: &lazaret_abi::Event) {
        let src = event_addr(ev.family, &ev.src);
        let flow = (ev.family != 0).then(|| {
            let dst = endpoint(ev.family, &ev.dst, ev.dst_port);
            format!("proto {} {dst}", ev.proto)
        });
        let sighting = unknown::Sighting {
            mac: ev.src_mac,
            vlan: ev.vlan,
            ifindex: ev.ifindex,
            src,
            flow,
            now: quarantine::now(),
        };
        let new = self.unknowns.observe(&sighting);
        let mac = unknown::fmt_mac(&ev.src_mac);
        self.records_changed(records::Changed::Unknown(&mac));
        let vendor = self.vendors.name(&ev.src_mac).map(str::to_string);
        if let Some(d) = self.unknowns.devices.get_mut(&mac) {
            d.vendor.clone_from(&vendor);
            d.randomized = super::oui::locally_administered(&ev.src_mac);
        }
        if new {
            tracing::warn!(mac = %mac, vendor = vendor.as_deref().unwrap_or("-"), vlan = ev.vlan, ifindex = ev.ifindex, source = %src.map_or_else(|| "-".to_string(), |a| a.to_string()), "new unknown device on a device port");
            self.metrics.unknown_device_discovered();
            self.notify(events::new_unknown_event(
                &sighting,
                vendor.as_deref(),
                events::unix_now(),
            ));
            self.metrics
                .set_unknown_devices(self.unknowns.devices.len() as u64);
            // Written at once, unless the list was written within the last second: a
            // flood of made-up source MACs would otherwise rewrite the whole list (up to
            // `MAX_TRACKED` devices) once per new MAC, and hold the event loop, the
            // quarantines' among it, for a minute. The tick writes what waited.
            if self
                .unknowns_saved
                .is_some_and(|at| at.elapsed() < SAVE_UNKNOWNS_EVERY)
            {
                self.unknowns_dirty = true;
            } else {
                self.save_unknowns();
            }
            // A new device is news for the other member at once; changes to known ones
            // go with the next tick.
            self.send_unknown(&mac);
        }
    }

    /// One datapath event: metrics, unknown-device discovery, deviation detection.
    pub(super) fn on_event(&mut self, ev: &lazaret_abi::Event) {
        self.feed.publish(&events::datapath_event(
            ev,
            self.compiled.as_deref(),
            events::unix_now(),
        ));
        if ev.kind == lazaret_abi::EVENT_UNKNOWN && ev.side != lazaret_abi::SIDE_DEVICES {
            // A packet from upstream to an address of the devices' networks no device has
            // (the datapath's `to_unowned`): its sender is a router or a server, not an
            // unknown device to list, count as a deviation or page someone about. The
            // address is resolved, so a device that only listens claims it (see `probe`).
            if self.role.0.decides() {
                if let Some(dst) = event_addr(ev.family, &ev.dst) {
                    self.prober.probe(dst);
                }
            }
            return;
        }
        if let Some(kind) = deviation::kind_label(ev) {
            self.metrics.deviation(kind);
        }
        if ev.kind == lazaret_abi::EVENT_UNKNOWN {
            self.on_unknown(ev);
            return;
        }
        if ev.kind == lazaret_abi::EVENT_LEARN {
            self.on_learn(ev);
            return;
        }
        let now_ms = self.started.elapsed().as_millis() as u64;
        let decision = self.containment.on_event(
            ev,
            &self.quarantines.entries,
            now_ms,
            quarantine::now(),
            describe,
        );
        if let Some(d) = decision {
            let device = d.device.clone();
            if !self.role.0.decides() {
                // A standby sees no device traffic worth acting on: what reaches it is
                // stray, and its quarantine would not follow a failover anyway.
                tracing::warn!(device = %device, reason = %d.entry.reason, "standby: automatic quarantine not carried out");
                self.metrics.standby_decision();
                return;
            }
            if let Err(e) = self.quarantine(d) {
                tracing::error!(device = %device, error = %e, "automatic quarantine failed");
            }
        }
    }
}

/// One line about an event, for logs and quarantine reasons.
pub(super) fn describe(ev: &lazaret_abi::Event) -> String {
    let reason = lazaret_abi::Reason::from_u8(ev.reason).map_or("?", |r| r.name());
    format!(
        "{reason} proto {} {} -> {}",
        ev.proto,
        endpoint(ev.family, &ev.src, ev.src_port),
        endpoint(ev.family, &ev.dst, ev.dst_port)
    )
}

/// An event's address of `family` (IPv4 in the first four bytes), if it has one.
pub(super) fn event_addr(family: u8, a: &[u8; 16]) -> Option<std::net::IpAddr> {
    match family {
        lazaret_abi::FAMILY_V4 => Some(std::net::IpAddr::from([a[0], a[1], a[2], a[3]])),
        lazaret_abi::FAMILY_V6 => Some(std::net::IpAddr::from(*a)),
        _ => None,
    }
}
