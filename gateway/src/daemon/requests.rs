//! The control socket's requests (`lazaret status`, `devices`, `flows`, `quarantine`, `pins`,
//! `detach`): each answered from the controller's state, with a typed reply ([`super::api`]).

use super::*;
impl Controller {
    /// The control reply of a change that is enforced: an error (the CLI exits non-zero)
    /// if `state` could not be written, since a reboot would undo it.
    pub(super) fn enforced_reply(
        &self,
        state: &str,
        what: String,
        data: &impl serde::Serialize,
    ) -> Reply {
        match self.state_errors.get(state) {
            None => Reply::of(data),
            Some(e) => Reply::error(format!(
                "{what} is enforced, but the state directory could not record it ({e}): a restart of the gateway would undo it. Fix the state directory; `lazaret status` shows the failure until a write succeeds"
            )),
        }
    }

    /// Answers one control request.
    pub(super) fn handle(&mut self, request: Request, peer: &str) -> Reply {
        match request {
            Request::Status {} => Reply::of(&self.status()),
            Request::Devices {} => match self.devices() {
                Some(devices) => Reply::of(&devices),
                None => Reply::error("no policy loaded"),
            },
            Request::Flows { device } => match self.flows(&device) {
                Ok(flows) => Reply::of(&flows),
                Err(e) => Reply::error(e),
            },
            Request::UnknownDevices {} => {
                Reply::data(json!(self.unknowns.devices.values().collect::<Vec<_>>()))
            }
            Request::QuarantineList {} => Reply::data(json!(self.quarantines.entries)),
            Request::Pins {} => {
                self.sync_pins();
                let device_of = |mac: &str| {
                    self.compiled.as_ref().and_then(|c| {
                        c.devices
                            .iter()
                            .find(|d| d.mac.is_some_and(|m| pins::fmt_mac(&m.0) == mac))
                            .map(|d| d.id.clone())
                    })
                };
                let pins: Vec<api::Pin> = self
                    .pins
                    .by_mac
                    .iter()
                    .map(|(mac, port)| api::Pin {
                        device: device_of(mac),
                        mac: mac.clone(),
                        port: port.clone(),
                    })
                    .collect();
                Reply::of(&pins)
            }
            Request::PinRelease { device, reason } => {
                match self.release_pin(&device, peer, &reason) {
                    Ok((false, 0)) => Reply::error(format!(
                        "{device:?} is not pinned to a port and owns no address"
                    )),
                    Ok((pin, addresses)) => self.enforced_reply(
                        "port_pins",
                        format!("the release of {device:?}'s port pin and owned addresses"),
                        &api::Released {
                            device: device.clone(),
                            released: true,
                            pin: Some(pin),
                            addresses: Some(addresses),
                        },
                    ),
                    Err(e) => Reply::error(e),
                }
            }
            Request::Detach { reason } => match self.stand_down(peer, &reason) {
                Ok(detached) => Reply::of(&api::Detached { detached }),
                Err(e) => Reply::error(e),
            },
            // The control server answers event requests from the feed; this is the same
            // answer without following.
            Request::Events { .. } => Reply::of(
                &self
                    .feed
                    .recent()
                    .iter()
                    .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                    .collect::<Vec<_>>(),
            ),
            Request::QuarantineAdd {
                device,
                action,
                reason,
            } => {
                let Some(hash) = self.device_hash(&device) else {
                    return Reply::error(format!("no device {device:?} in the policy"));
                };
                let decision = containment::Decision {
                    device: device.clone(),
                    hash,
                    entry: containment::entry(action, peer, &reason, 0, quarantine::now()),
                };
                match self.quarantine(decision) {
                    Ok(()) => self.enforced_reply(
                        "quarantine",
                        format!("the quarantine of {device:?} ({})", action.name()),
                        &api::Quarantined {
                            device: device.clone(),
                            action,
                        },
                    ),
                    Err(e) => Reply::error(e.to_string()),
                }
            }
            Request::QuarantineRelease { device, reason } => {
                if !self.quarantines.entries.contains_key(&device) {
                    return Reply::error(format!("{device:?} is not quarantined"));
                }
                match self.release(&device, peer, &reason) {
                    Ok(()) => self.enforced_reply(
                        "quarantine",
                        format!("the release of {device:?}"),
                        &api::Released {
                            device: device.clone(),
                            released: true,
                            pin: None,
                            addresses: None,
                        },
                    ),
                    Err(e) => Reply::error(e.to_string()),
                }
            }
        }
    }

    /// `status`'s reply.
    pub(super) fn status(&self) -> api::Status {
        api::Status {
            generation: self.reloads.generation(),
            commit: self.reloads.commit().map(str::to_string),
            uptime_seconds: self.started.elapsed().as_secs(),
            policy_dir: self.config.policy_dir.clone(),
            policy: if self.no_policy {
                api::PolicySource::None
            } else if self.on_lkg {
                api::PolicySource::LastKnownGood
            } else if self.compiled.is_none() {
                api::PolicySource::Pinned
            } else {
                api::PolicySource::Repository
            },
            interfaces: self
                .ifaces
                .modes()
                .iter()
                .map(|(n, m)| (n.clone(), (*m).into()))
                .collect(),
            devices: self.compiled.as_ref().map_or(0, |c| c.devices.len()),
            quarantined: self.quarantines.entries.len(),
            held: self.held_interfaces().into_iter().collect(),
            last_reload_error: self.reloads.last_error().map(str::to_string),
            state_errors: self
                .state_errors
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            // As of the last read of the counters (every few seconds): counting a big map's
            // entries takes tens of milliseconds, not for every `status`.
            maps: self
                .usage
                .iter()
                .map(|(m, n, cap)| api::MapUsage {
                    map: m.to_string(),
                    entries: *n,
                    capacity: *cap,
                    pressure: if *cap == 0 {
                        0.0
                    } else {
                        *n as f64 / *cap as f64
                    },
                })
                .collect(),
            ha: self.config.ha.as_ref().map(|h| api::HaStatus {
                role: self.role.0,
                virtual_addresses: h.virtual_addresses.clone(),
                held: self.role.1,
            }),
        }
    }

    /// `devices`' reply: `None` without a policy.
    pub(super) fn devices(&mut self) -> Option<Vec<api::Device>> {
        let c = self.compiled.as_ref()?;
        let mut out = Vec::with_capacity(c.devices.len());
        for d in &c.devices {
            // Counted by the XDP program only (nftables counts per reason and side).
            let t = self
                .planes
                .xdp
                .as_mut()
                .and_then(|dp| dp.device_counters(d.hash).ok())
                .unwrap_or_default();
            out.push(api::Device {
                id: d.id.clone(),
                class: d.class.clone(),
                mode: d.mode,
                ipv4: d.ipv4.clone(),
                ipv6: d.ipv6.clone(),
                quarantine: self.quarantines.entries.get(&d.id).map(|e| e.action),
                allowed_packets: t.allowed_packets,
                allowed_bytes: t.allowed_bytes,
                denied_packets: t.denied_packets,
                denied_bytes: t.denied_bytes,
                last_seen_ns: t.last_seen_ns,
            });
        }
        Some(out)
    }

    /// `flows`' reply: the flows of `device` in the XDP flow tables.
    pub(super) fn flows(&mut self, device: &str) -> Result<Vec<api::Flow>, String> {
        let hash = self
            .device_hash(device)
            .ok_or_else(|| format!("no device {device:?} in the policy"))?;
        let dp = self.planes.xdp.as_mut().ok_or(
            "flows are listed from the XDP flow table; this gateway runs dataplane = \"nftables\", whose flows are in conntrack (conntrack -L)",
        )?;
        let flows = dp.flows().map_err(|e| e.to_string())?;
        Ok(flows
            .iter()
            .filter(|(_, _, v)| v.dev_a == hash || v.dev_b == hash)
            .map(|(table, k, v)| api::Flow {
                proto: k.proto,
                a: endpoint(k.family, &k.addr_a, k.port_a),
                b: endpoint(k.family, &k.addr_b, k.port_b),
                initiator: if v.initiator == 0 {
                    api::End::A
                } else {
                    api::End::B
                },
                state: api::FlowState::from_abi(v.state),
                table: *table,
                rule: v.rule,
            })
            .collect())
    }

    /// `lazaret detach --force`: stop enforcing on purpose, and say so. The XDP links and
    /// maps are unpinned (the program leaves every interface), lazaret's nftables tables and
    /// the interface hold are removed, every interface reports detached, and nothing is
    /// restored or re-attached until the daemon is restarted.
    pub(super) fn stand_down(&mut self, by: &str, reason: &str) -> Result<Vec<String>, String> {
        self.reloads.stand_down();
        attach::detach_all(&self.config.pin_dir).map_err(|e| {
            format!(
                "removing the pinned links under {}: {e}",
                self.config.pin_dir.display()
            )
        })?;
        let ruleset = nft::Nft::default();
        for family in nft::dataplane::FAMILIES {
            for table in nft::dataplane::TABLES {
                if ruleset.has_table(family, table).unwrap_or(false) {
                    ruleset.delete(family, table).map_err(|e| e.to_string())?;
                }
            }
        }
        self.no_policy = false;
        self.metrics.held(0);
        let _ = ruleset.hold(&Default::default());
        let detached = self.ifaces.stand_down();
        for name in &detached {
            if let Some(mode) = self.ifaces.mode(name) {
                self.set_mode(name, mode);
            }
        }
        if let Err(e) = self.quarantines.audit("detach", "-", None, by, reason) {
            tracing::error!(error = %e, "audit log");
        }
        tracing::warn!(by, reason, interfaces = %names(&detached), "DETACHED on request: lazaret no longer enforces and restores nothing until restarted");
        Ok(detached)
    }

    /// Releases the pin of `device`'s MAC on every dataplane, and the addresses it owns by
    /// first use: the next port it is seen on pins it again, the next device to use one of
    /// its addresses owns it.
    pub(super) fn release_pin(
        &mut self,
        device: &str,
        by: &str,
        reason: &str,
    ) -> Result<(bool, usize), String> {
        let mac = self
            .compiled
            .as_ref()
            .and_then(|c| c.device(device))
            .ok_or_else(|| format!("no device {device:?} in the policy"))?
            .mac
            .ok_or_else(|| format!("{device:?} has no MAC: it is never pinned"))?
            .0;
        // The addresses first: a failure there leaves the pin as it was, and the state file
        // and the dataplanes agreeing.
        let mut owned = 0;
        for dp in self.dataplanes() {
            owned += dp.release_addresses(mac).map_err(|e| e.to_string())?;
        }
        if owned > 0 {
            if let Err(e) = self
                .quarantines
                .audit("release-addresses", device, None, by, reason)
            {
                tracing::error!(error = %e, "audit log");
            }
            tracing::warn!(
                device,
                by,
                reason,
                addresses = owned,
                "addresses owned by first use released"
            );
        }
        let mut held = false;
        for dp in self.dataplanes() {
            held |= dp.release_pin(mac).map_err(|e| e.to_string())?;
        }
        let kept = self.pins.by_mac.remove(&pins::fmt_mac(&mac)).is_some();
        let result = self.pins.save(&self.config.state_dir);
        self.persisted("port_pins", result);
        let pinned = held || kept;
        if pinned {
            if let Err(e) = self
                .quarantines
                .audit("release-pin", device, None, by, reason)
            {
                tracing::error!(error = %e, "audit log");
            }
            tracing::warn!(device, by, reason, "bridge-port pin released");
        }
        Ok((pinned, owned))
    }
}
