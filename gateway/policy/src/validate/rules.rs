//! Workflows and their rules: peers, ends, protocols, port ranges, quarantine allow-lists.

use super::*;

impl Validator<'_> {
    pub(super) fn workflows(mut self, list: &[(&String, &RawWorkflow)]) -> ChunkResult {
        let mut out = Vec::with_capacity(list.len());
        for (name, w) in list {
            self.check_name(NameKind::Workflow, &w.name);
            let rules = w
                .rules
                .iter()
                .enumerate()
                .filter_map(|(i, r)| self.rule(r, i + 1, false))
                .collect();
            out.push(Workflow {
                name: (*name).clone(),
                description: text(&w.description),
                mode: w
                    .mode
                    .as_ref()
                    .and_then(|m| self.mode(m))
                    .unwrap_or_default(),
                essential: w.essential.as_ref().is_some_and(|e| e.v),
                rules,
                span: w.name.span,
            });
        }
        let diags = match self.diags {
            Dd::Owned(d) => d,
            Dd::Borrowed(d) => std::mem::take(d),
        };
        ChunkResult {
            workflows: out,
            diags,
            used_roles: self.used_roles,
            named_devices: self.named_devices,
        }
    }

    pub(super) fn peer_sel(&mut self, s: &Sp<String>, allow_managed: bool) -> Option<PeerSel> {
        let t = s.v.trim();
        if let Some(name) = t.strip_prefix("role:") {
            if self.known_str(NameKind::Role, name, s.span) {
                if !self.used_roles.contains(name) {
                    self.used_roles.insert(name.to_string());
                }
                return Some(PeerSel::Role(name.to_string()));
            }
            return None;
        }
        for (prefix, kind) in [("class:", NameKind::Class), ("device:", NameKind::Device)] {
            if let Some(name) = t.strip_prefix(prefix) {
                if !allow_managed {
                    self.diags.err(
                        Problem::ManagedPeerInQuarantine { text: s.v.clone() },
                        s.span,
                    );
                    return None;
                }
                if !self.known_str(kind, name, s.span) {
                    return None;
                }
                if kind == NameKind::Device {
                    self.named_devices.insert(name.to_string());
                    return Some(PeerSel::Device(name.to_string()));
                }
                return Some(PeerSel::Class(name.to_string()));
            }
        }
        if t == "any" {
            return Some(PeerSel::Any);
        }
        match parse_net(t) {
            Ok(net) => Some(PeerSel::Prefix(net)),
            Err(p) => {
                // `rol:x` or `clas:x` is a misspelt selector, not an address.
                if let Some((word, _)) = t.split_once(':') {
                    if !word.is_empty()
                        && word.chars().all(|c| c.is_ascii_alphabetic())
                        && word.parse::<IpAddr>().is_err()
                        && !is_hex_group(word)
                    {
                        let rest = t.split_once(':').map_or("", |(_, r)| r);
                        let hint = nearest(word, ["role", "class", "device"])
                            .map(|k| format!("did you mean \"{k}:{rest}\"?"));
                        self.diags.push(
                            Diagnostic::at(
                                Problem::BadSelector {
                                    text: s.v.clone(),
                                    expected: "role:NAME, class:NAME, device:ID, an address or prefix, or any",
                                },
                                s.span,
                            )
                            .maybe_hint(hint),
                        );
                        return None;
                    }
                }
                let hint = match &p {
                    Problem::HostBits { network, .. } => {
                        Some(format!("did you mean \"{network}\"?"))
                    }
                    _ => None,
                };
                self.diags.push(Diagnostic::at(p, s.span).maybe_hint(hint));
                None
            }
        }
    }

    pub(super) fn end_sel(&mut self, s: &Sp<String>) -> Option<EndSel> {
        let t = s.v.trim();
        if let Some(name) = t.strip_prefix("class:") {
            return self
                .known_str(NameKind::Class, name, s.span)
                .then(|| EndSel::Class(name.to_string()));
        }
        if let Some(name) = t.strip_prefix("device:") {
            if self.known_str(NameKind::Device, name, s.span) {
                self.named_devices.insert(name.to_string());
                return Some(EndSel::Device(name.to_string()));
            }
            return None;
        }
        self.diags
            .err(Problem::BadEnd { text: s.v.clone() }, s.span);
        None
    }

    /// A workflow rule, or an `allow` entry of the quarantine profile (`quarantine`).
    pub(super) fn rule(&mut self, r: &RawRule, index: usize, quarantine: bool) -> Option<Rule> {
        let mut ok = true;
        let what = if quarantine {
            "a quarantine allow entry"
        } else {
            "a rule"
        };
        let ends = match &r.device {
            Some(list) if !quarantine => {
                let mut out = Vec::new();
                for s in list {
                    match self.end_sel(s) {
                        Some(e) => out.push(e),
                        None => ok = false,
                    }
                }
                Some(out)
            }
            _ => None,
        };
        let mut peers = Vec::new();
        match &r.peer {
            Some(list) if !list.is_empty() => {
                for s in list {
                    match self.peer_sel(s, !quarantine) {
                        Some(p) => peers.push(p),
                        None => ok = false,
                    }
                }
            }
            _ => {
                self.diags.err(
                    Problem::MissingKey {
                        key: "peer",
                        table: what.to_string(),
                    },
                    r.span,
                );
                ok = false;
            }
        }
        let proto = match &r.proto {
            Some(p) => self.proto(p),
            None => {
                self.diags.push(
                    Diagnostic::at(
                        Problem::MissingKey {
                            key: "proto",
                            table: what.to_string(),
                        },
                        r.span,
                    )
                    .hint(
                        "write proto = \"tcp\", \"udp\", \"icmp\", \"icmpv6\", \"any\" or a number",
                    ),
                );
                None
            }
        };
        let mut ports = None;
        if let Some(list) = &r.ports {
            if let Some(proto) = proto {
                if !proto.has_ports() {
                    let span = list.first().map_or(r.span, |p| p.span);
                    self.diags.err(
                        Problem::PortsWithoutPortProtocol {
                            proto: proto.to_string(),
                        },
                        span,
                    );
                    ok = false;
                }
            }
            let mut out = Vec::new();
            for p in list {
                match self.port_range(p) {
                    Some(x) => out.push(x),
                    None => ok = false,
                }
            }
            if list.is_empty() {
                self.diags.push(Diagnostic::at(
                    Problem::BadValue {
                        key: "ports".to_string(),
                        value: "[]".to_string(),
                        expected: "at least one port (omit `ports` to allow all)".to_string(),
                    },
                    r.span,
                ));
                ok = false;
            }
            ports = Some(out);
        }
        let initiator = match &r.initiator {
            Some(i) => self.choice(
                "initiator",
                i,
                &[("device", Initiator::Device), ("peer", Initiator::Peer)],
            ),
            None => Some(Initiator::Device),
        };
        let (Some(proto), Some(initiator), true) = (proto, initiator, ok) else {
            return None;
        };
        Some(Rule {
            span: r.span,
            index,
            ends,
            peers,
            proto,
            ports,
            initiator,
            description: text(&r.description),
        })
    }

    pub(super) fn quarantine_partial(&mut self, q: &RawQuarantine) -> QuarantinePartial {
        QuarantinePartial {
            after: q
                .after
                .as_ref()
                .and_then(|n| self.ranged("after", n, 1, i64::from(u32::MAX), "1 or more"))
                .map(|n| n as u32),
            within_s: q.within.as_ref().and_then(|w| self.duration(w)),
            action: q
                .action
                .as_ref()
                .and_then(|a| self.action(a).map(|x| (x, a.span))),
            ttl_s: q.ttl.as_ref().and_then(|t| self.duration(t)),
        }
    }

    // === Devices ===
}
