//! `[site]`: the gateway's interfaces, the deviation thresholds and quarantine defaults, the
//! essentials every device may reach, and the roles' servers.

use super::*;

/// Defaults of `[site.quarantine]`.
pub(super) const DEFAULT_AFTER: u32 = 20;

pub(super) const DEFAULT_WITHIN_S: u64 = 60;

pub(super) const DEFAULT_TTL_S: u64 = 3600;

impl Validator<'_> {
    pub(super) fn default_site(&self) -> Site {
        Site {
            name: String::new(),
            span: Span::default(),
            unknown_audit: false,
            l2_control: false,
            interfaces: BTreeMap::new(),
            ports: BTreeMap::new(),
            essentials: Essentials {
                dhcp: None,
                dns: None,
                ntp: None,
                neighbor: true,
            },
            quarantine_allow: Vec::new(),
            quarantine_defaults: QuarantineSettings {
                after: DEFAULT_AFTER,
                within_s: DEFAULT_WITHIN_S,
                action: QuarantineAction::Restrict,
                ttl_s: DEFAULT_TTL_S,
            },
            event_rate: lazaret_abi::EVENT_RATE_PER_S,
            event_burst: lazaret_abi::EVENT_BURST,
        }
    }

    pub(super) fn site(&mut self, s: &crate::raw::RawSite) -> (Site, bool) {
        let mut site = self.default_site();
        site.span = s.span;
        match &s.name {
            Some(n) => site.name = n.v.clone(),
            None => self.diags.err(
                Problem::MissingKey {
                    key: "name",
                    table: "[site]".to_string(),
                },
                s.span,
            ),
        }
        if let Some(u) = &s.unknown_devices {
            site.unknown_audit =
                self.choice("unknown_devices", u, &[("deny", false), ("audit", true)])
                    == Some(true);
        }
        site.l2_control = s.l2_control.as_ref().is_some_and(|b| b.v);
        let mut ok = true;
        for i in &s.interfaces {
            self.check_name(NameKind::Interface, &i.name);
            let side = match &i.side {
                Some(side) => self.choice(
                    "side",
                    side,
                    &[("devices", Side::Devices), ("upstream", Side::Upstream)],
                ),
                None => {
                    self.diags.err(
                        Problem::MissingKey {
                            key: "side",
                            table: format!("interface `{}`", i.name.v),
                        },
                        i.name.span,
                    );
                    None
                }
            };
            let networks = i.networks.iter().filter_map(|n| self.net(n)).collect();
            match side {
                Some(side) => {
                    site.interfaces.insert(
                        i.name.v.clone(),
                        Interface {
                            name: i.name.v.clone(),
                            side,
                            networks,
                            span: i.name.span,
                        },
                    );
                }
                None => ok = false,
            }
        }
        if site.interfaces.len() > lazaret_abi::MAX_IFACES as usize {
            self.diags.err(
                Problem::Capacity {
                    what: "interfaces",
                    map: lazaret_abi::MAP_IFACE,
                    count: site.interfaces.len() as u64,
                    max: u64::from(lazaret_abi::MAX_IFACES),
                },
                s.span,
            );
        }
        for (name, port) in &s.ports {
            self.check_name(NameKind::Port, name);
            if let Some(p) = self.port_number(port) {
                site.ports.insert(name.v.clone(), p);
            }
        }
        self.ports = site.ports.clone();
        let q = &s.quarantine.defaults;
        let d = &mut site.quarantine_defaults;
        if let Some(n) = &q.after {
            d.after = self
                .ranged("after", n, 1, i64::from(u32::MAX), "1 or more")
                .map_or(d.after, |n| n as u32);
        }
        if let Some(w) = &q.within {
            d.within_s = self.duration(w).unwrap_or(d.within_s);
        }
        if let Some(t) = &q.ttl {
            d.ttl_s = self.duration(t).unwrap_or(d.ttl_s);
        }
        if let Some(a) = &q.action {
            d.action = self.action(a).unwrap_or(d.action);
        }
        if let Some(r) = &s.event_rate {
            site.event_rate = self
                .ranged("rate", r, 1, 1_000_000, "1-1000000")
                .map_or(site.event_rate, |n| n as u32);
        }
        if let Some(b) = &s.event_burst {
            site.event_burst = self
                .ranged("burst", b, 1, 1_000_000, "1-1000000")
                .map_or(site.event_burst, |n| n as u32);
        }
        (site, ok)
    }

    pub(super) fn essentials(
        &mut self,
        raw: &RawPolicy,
        roles: &BTreeMap<String, Role>,
        site_span: Span,
    ) -> Essentials {
        let e = raw.site.as_ref().map(|s| &s.essentials);
        let on = |b: Option<&Option<Sp<bool>>>| b.and_then(|b| b.as_ref()).is_none_or(|b| b.v);
        let servers = |this: &mut Self,
                       enabled: bool,
                       key: &str,
                       list: Option<&Vec<Sp<String>>>,
                       default_role: &str| {
            if !enabled {
                return None;
            }
            let mut out = Vec::new();
            match list {
                Some(list) => {
                    for s in list {
                        out.extend(this.server(s, roles));
                    }
                }
                None => match roles.get(default_role) {
                    Some(r) => {
                        this.used_roles.insert(default_role.to_string());
                        out.extend(r.addresses.iter().copied());
                    }
                    None => this.diags.push(
                        Diagnostic::new(
                            Problem::UnknownName {
                                kind: NameKind::Role,
                                name: default_role.to_string(),
                            },
                            raw.site.as_ref().map(|_| site_span),
                        )
                        .hint(format!(
                            "the {key} essential uses role `{default_role}` by default: define it, set [site.essentials] {key}_servers, or turn the essential off with {key} = false"
                        )),
                    ),
                },
            }
            Some(out)
        };
        Essentials {
            dhcp: servers(
                self,
                on(e.map(|e| &e.dhcp)),
                "dhcp",
                e.and_then(|e| e.dhcp_servers.as_ref()),
                "dhcp",
            ),
            dns: servers(
                self,
                on(e.map(|e| &e.dns)),
                "dns",
                e.and_then(|e| e.dns_servers.as_ref()),
                "dns",
            ),
            ntp: servers(
                self,
                on(e.map(|e| &e.ntp)),
                "ntp",
                e.and_then(|e| e.ntp_servers.as_ref()),
                "ntp",
            ),
            neighbor: on(e.map(|e| &e.neighbor)),
        }
    }

    /// A server selector of the essentials: a role or a prefix.
    pub(super) fn server(&mut self, s: &Sp<String>, roles: &BTreeMap<String, Role>) -> Vec<IpNet> {
        match self.peer_sel(s, false) {
            Some(PeerSel::Role(r)) => roles
                .get(&r)
                .map(|r| r.addresses.clone())
                .unwrap_or_default(),
            Some(PeerSel::Prefix(p)) => vec![p],
            Some(PeerSel::Any) => vec![
                IpNet::V4(ipnet::Ipv4Net::default()),
                IpNet::V6(ipnet::Ipv6Net::default()),
            ],
            _ => Vec::new(),
        }
    }

    // === Rules ===
}
