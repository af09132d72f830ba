//! `[site]`: the gateway's interfaces, the deviation thresholds and quarantine defaults, the
//! essentials every device may reach, and the roles' servers.

use super::*;

/// Defaults of `[site.quarantine]`.
pub(super) const DEFAULT_AFTER: u32 = 20;

pub(super) const DEFAULT_WITHIN_S: u64 = 60;

pub(super) const DEFAULT_TTL_S: u64 = 3600;

/// Default of `[site.exceptions] max`: a working day and then some; a site sets less.
pub(super) const DEFAULT_EXCEPTION_MAX_S: u64 = 24 * 3600;
/// The most `[site.exceptions] max` may be.
const MAX_EXCEPTION_MAX_S: u64 = 366 * 86_400;

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
            gateways: BTreeMap::new(),
            exception_max_s: DEFAULT_EXCEPTION_MAX_S,
            risk_enforce_from: None,
            risk_tighten_from: None,
        }
    }

    /// `[site.gateways.*]`, against the site's interfaces (known by now): every
    /// devices-side interface is served by exactly one gateway, so every device is enforced
    /// by exactly one; an upstream interface may be named by several (each gateway has its
    /// own uplink by that name). A host is a member of one gateway; a gateway has one or two.
    pub(super) fn gateways(
        &mut self,
        raw: &[crate::raw::RawGateway],
        site: &Site,
    ) -> BTreeMap<String, Gateway> {
        let mut out: BTreeMap<String, Gateway> = BTreeMap::new();
        if raw.is_empty() {
            return out;
        }
        let mut owner: BTreeMap<&str, (&str, Span)> = BTreeMap::new();
        let mut hosts: BTreeMap<&str, (&str, Span)> = BTreeMap::new();
        for g in raw {
            self.check_name(NameKind::Gateway, &g.name);
            let mut interfaces = BTreeSet::new();
            let mut serves_devices = false;
            for i in &g.interfaces {
                if !self.known(NameKind::Interface, i) {
                    continue;
                }
                let devices_side = site
                    .interfaces
                    .get(&i.v)
                    .is_some_and(|x| x.side == Side::Devices);
                if devices_side {
                    serves_devices = true;
                    if let Some((first, at)) = owner.get(i.v.as_str()) {
                        self.diags.push(
                            Diagnostic::at(
                                Problem::InterfaceOnTwoGateways {
                                    interface: i.v.clone(),
                                    first: first.to_string(),
                                    second: g.name.v.clone(),
                                },
                                i.span,
                            )
                            .note(*at, format!("`{first}` serves it here"))
                            .hint("remove it from one of the gateways' `interfaces`"),
                        );
                    } else {
                        owner.insert(&i.v, (&g.name.v, i.span));
                    }
                }
                interfaces.insert(i.v.clone());
            }
            if !serves_devices {
                self.diags.push(
                    Diagnostic::at(
                        Problem::GatewayWithoutDevices {
                            gateway: g.name.v.clone(),
                        },
                        g.name.span,
                    )
                    .hint("list the devices-side interfaces it serves in `interfaces`"),
                );
            }
            if g.members.len() > 2 {
                self.diags.err(
                    Problem::GatewayMembers {
                        gateway: g.name.v.clone(),
                        count: g.members.len(),
                    },
                    g.name.span,
                );
            }
            for m in &g.members {
                self.check_name(NameKind::Gateway, m);
                match hosts.get(m.v.as_str()) {
                    Some((first, at)) => self.diags.push(
                        Diagnostic::at(
                            Problem::MemberOfTwoGateways {
                                member: m.v.clone(),
                                first: first.to_string(),
                                second: g.name.v.clone(),
                            },
                            m.span,
                        )
                        .note(*at, "first listed here"),
                    ),
                    None => {
                        hosts.insert(&m.v, (&g.name.v, m.span));
                    }
                }
            }
            out.insert(
                g.name.v.clone(),
                Gateway {
                    name: g.name.v.clone(),
                    interfaces,
                    members: g.members.iter().map(|m| m.v.clone()).collect(),
                    span: g.name.span,
                },
            );
        }
        for (name, i) in &site.interfaces {
            if i.side == Side::Devices && !owner.contains_key(name.as_str()) {
                self.diags.push(
                    Diagnostic::at(
                        Problem::InterfaceWithoutGateway {
                            interface: name.clone(),
                        },
                        i.span,
                    )
                    .hint("add it to the `interfaces` of the [site.gateways.*] that is inline with it: its devices would be enforced nowhere"),
                );
            }
        }
        out
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
        if let Some(m) = &s.exception_max {
            match self.duration(m) {
                Some(max) if max > MAX_EXCEPTION_MAX_S => self.diags.push(
                    Diagnostic::at(
                        Problem::ExceptionMaxTooLong {
                            max: m.v.clone(),
                            limit: "366d",
                        },
                        m.span,
                    )
                    .hint("a window is a visit, not a standing grant: write a workflow instead"),
                ),
                Some(max) => site.exception_max_s = max,
                None => {}
            }
        }
        let bands = [
            ("low", crate::risk::Band::Low),
            ("medium", crate::risk::Band::Medium),
            ("high", crate::risk::Band::High),
        ];
        site.risk_enforce_from =
            (s.risk_enforce_from.as_ref()).and_then(|b| self.choice("enforce_from", b, &bands));
        site.risk_tighten_from =
            (s.risk_tighten_from.as_ref()).and_then(|b| self.choice("tighten_from", b, &bands));
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
