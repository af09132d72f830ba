//! `[[devices]]`: the inventory, resolved per device (class, workflows, settings), and the
//! conflicts between devices (addresses, MACs, ids).

use super::*;

/// The same MAC, address or id hash on two devices of `devices`.
pub fn conflicts(devices: &[Device], diags: &mut Diags) {
    let mut v = Validator {
        diags: Dd::Borrowed(diags),
        names: Names::default(),
        used_roles: BTreeSet::new(),
        named_devices: BTreeSet::new(),
        ports: BTreeMap::new(),
    };
    v.conflicts(devices);
}

impl Validator<'_> {
    pub(super) fn devices(
        &mut self,
        raw: &[RawDevice],
        site: &Site,
        classes: &BTreeMap<String, Class>,
    ) -> Vec<Device> {
        let mut out: Vec<Device> = Vec::with_capacity(raw.len());
        let mut ids: BTreeMap<&str, Span> = BTreeMap::new();
        for d in raw {
            let Some(id) = self.entry_id(d) else { continue };
            if let Some(first) = ids.get(id.v.as_str()) {
                self.diags.push(
                    Diagnostic::at(
                        Problem::DuplicateName {
                            kind: NameKind::Device,
                            name: id.v.clone(),
                        },
                        id.span,
                    )
                    .note(*first, "first defined here"),
                );
                continue;
            }
            ids.insert(&id.v, id.span);
            if let Some(dev) = self.device(d, id, site, classes) {
                out.push(dev);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        self.conflicts(&out);
        out
    }

    /// A `[[devices]]` entry's id, checked; an error when it has none.
    pub(super) fn entry_id<'r>(&mut self, d: &'r RawDevice) -> Option<&'r Sp<String>> {
        let Some(id) = &d.id else {
            self.diags.err(
                Problem::MissingKey {
                    key: "id",
                    table: "a [[devices]] entry".to_string(),
                },
                d.span,
            );
            return None;
        };
        self.check_name(NameKind::Device, id);
        Some(id)
    }

    pub(super) fn device(
        &mut self,
        d: &RawDevice,
        id: &Sp<String>,
        site: &Site,
        classes: &BTreeMap<String, Class>,
    ) -> Option<Device> {
        let class = d
            .class
            .as_ref()
            .filter(|c| self.known(NameKind::Class, c))
            .map(|c| c.v.clone());
        let class_def = class.as_ref().and_then(|c| classes.get(c));
        let mac = d.mac.as_ref().and_then(|m| match m.v.parse::<Mac>() {
            Ok(mac) => Some(mac),
            Err(()) => {
                self.diags.push(
                    Diagnostic::at(Problem::BadMac { text: m.v.clone() }, m.span)
                        .hint("write six hex bytes separated by `:`, e.g. 00:1a:2b:3c:4d:5e"),
                );
                None
            }
        });
        let mut ipv4 = Vec::new();
        let mut ipv6 = Vec::new();
        for (key, list) in [("ipv4", &d.ipv4), ("ipv6", &d.ipv6)] {
            for a in list {
                let parsed = a.v.trim().parse::<IpAddr>();
                if let Some(what) = parsed.as_ref().ok().and_then(|&a| not_a_host(a)) {
                    let problem = Problem::NotAHostAddress {
                        addr: a.v.clone(),
                        device: id.v.clone(),
                        what,
                    };
                    self.diags.push(
                        Diagnostic::at(problem, a.span)
                            .hint("give the address the device is configured with"),
                    );
                    continue;
                }
                match parsed {
                    Ok(IpAddr::V4(x)) if key == "ipv4" => ipv4.push(x),
                    Ok(IpAddr::V6(x)) if key == "ipv6" => ipv6.push(x),
                    Ok(other) => self.diags.push(
                        Diagnostic::at(
                            Problem::WrongFamily {
                                key,
                                family: Family::of_addr(&other).name(),
                                addr: a.v.clone(),
                            },
                            a.span,
                        )
                        .hint(format!(
                            "move it to `{}`",
                            if key == "ipv4" { "ipv6" } else { "ipv4" }
                        )),
                    ),
                    Err(_) => self.diags.push(
                        Diagnostic::at(Problem::BadAddress { text: a.v.clone() }, a.span)
                            .hint("a device address is a single address, without a prefix length"),
                    ),
                }
            }
        }
        ipv4.sort();
        ipv4.dedup();
        ipv6.sort();
        ipv6.dedup();
        if mac.is_none()
            && d.mac.is_none()
            && ipv4.is_empty()
            && ipv6.is_empty()
            && d.ipv4.is_empty()
            && d.ipv6.is_empty()
        {
            self.diags.push(
                Diagnostic::at(
                    Problem::NoIdentity {
                        device: id.v.clone(),
                    },
                    id.span,
                )
                .hint("give it a `mac`, an `ipv4` or an `ipv6` address"),
            );
        }
        let vlan = d.vlan.as_ref().and_then(|v| {
            if (0..=4094).contains(&v.v) {
                Some(v.v as u16)
            } else {
                self.diags.err(Problem::BadVlan { value: v.v }, v.span);
                None
            }
        });
        if d.interface.is_none() && !site.gateways.is_empty() {
            self.diags.push(
                Diagnostic::at(
                    Problem::DeviceWithoutGateway {
                        device: id.v.clone(),
                    },
                    id.span,
                )
                .hint("add `interface = \"<its devices-side interface>\"`: with [site.gateways] each device is enforced by the gateway serving its interface"),
            );
        }
        let interface = d.interface.as_ref().and_then(|i| {
            if !self.known(NameKind::Interface, i) {
                return None;
            }
            let iface = site.interfaces.get(&i.v)?;
            if iface.side != Side::Devices {
                self.diags.err(
                    Problem::NotADeviceInterface {
                        device: id.v.clone(),
                        interface: i.v.clone(),
                    },
                    i.span,
                );
                return None;
            }
            if !iface.networks.is_empty() {
                let addrs = ipv4
                    .iter()
                    .map(|a| IpAddr::V4(*a))
                    .chain(ipv6.iter().map(|a| IpAddr::V6(*a)));
                for a in addrs {
                    if !iface.networks.iter().any(|n| n.contains(&a)) {
                        self.diags.push(
                            Diagnostic::at(
                                Problem::AddressOutsideInterface {
                                    addr: a.to_string(),
                                    device: id.v.clone(),
                                    interface: i.v.clone(),
                                },
                                i.span,
                            )
                            .note(iface.span, "the interface's networks are defined here"),
                        );
                    }
                }
            }
            Some(i.v.clone())
        });
        let port = d.port.as_ref().and_then(|p| {
            if interface.is_none() {
                self.diags.push(
                    Diagnostic::at(
                        Problem::PortWithoutInterface {
                            device: id.v.clone(),
                        },
                        p.span,
                    )
                    .hint("add `interface = \"<bridge>\"`: a port belongs to a bridge"),
                );
                return None;
            }
            // Linux interface names: IFNAMSIZ - 1 bytes, no '/', ':' or whitespace.
            let ok = !p.v.is_empty()
                && p.v.len() <= 15
                && !p
                    .v
                    .chars()
                    .any(|c| c == '/' || c == ':' || c.is_whitespace());
            if !ok {
                self.diags
                    .err(Problem::BadPortName { name: p.v.clone() }, p.span);
                return None;
            }
            Some(p.v.clone())
        });
        let last_patched = d
            .last_patched
            .as_ref()
            .and_then(|t| match t.v.parse::<Date>() {
                Ok(date) => Some(date),
                Err(()) => {
                    self.diags
                        .err(Problem::BadDate { text: t.v.clone() }, t.span);
                    None
                }
            });
        let patient_connection = d
            .patient_connection
            .as_ref()
            .and_then(|p| {
                self.choice(
                    "patient_connection",
                    p,
                    &[
                        ("direct", PatientConnection::Direct),
                        ("indirect", PatientConnection::Indirect),
                        ("none", PatientConnection::None),
                    ],
                )
            })
            .unwrap_or_default();
        let inventory = Inventory {
            vendor: text(&d.vendor),
            model: text(&d.model),
            serial: text(&d.serial),
            firmware: text(&d.firmware),
            last_patched,
            location: text(&d.location),
            owner: text(&d.owner),
            life_critical: d.life_critical.as_ref().is_some_and(|b| b.v),
            stores_phi: d.stores_phi.as_ref().is_some_and(|b| b.v),
            patient_connection,
            patchable: d.patchable.as_ref().is_none_or(|b| b.v),
            notes: text(&d.notes),
        };
        let own_mode = d.mode.as_ref().and_then(|m| self.mode(m));
        let mode = own_mode
            .or(class_def.and_then(|c| c.mode))
            .unwrap_or_default();
        let mut workflows: BTreeSet<String> = class_def
            .map(|c| c.workflows.iter().cloned().collect())
            .unwrap_or_default();
        for w in &d.workflows {
            if self.known(NameKind::Workflow, w) {
                workflows.insert(w.v.clone());
            }
        }
        let own_q = self.quarantine_partial(&d.quarantine);
        let class_q = class_def.map(|c| c.quarantine).unwrap_or_default();
        let defaults = site.quarantine_defaults;
        let (action, action_span) = match own_q.action.or(class_q.action) {
            Some((a, span)) => (a, Some(span)),
            // Cutting off a life-sustaining device must be a deliberate decision.
            None if inventory.life_critical => (QuarantineAction::Alert, None),
            None => (defaults.action, None),
        };
        if inventory.life_critical && action != QuarantineAction::Alert {
            self.diags.push(
                Diagnostic::new(
                    Problem::LifeCriticalQuarantine {
                        device: id.v.clone(),
                        action: action.name().to_string(),
                    },
                    Some(action_span.unwrap_or(id.span)),
                )
                .note(id.span, "the device is defined here")
                .hint("make sure this is deliberate, or set quarantine.action = \"alert\" on the device"),
            );
        }
        let quarantine = QuarantineSettings {
            after: own_q.after.or(class_q.after).unwrap_or(defaults.after),
            within_s: own_q
                .within_s
                .or(class_q.within_s)
                .unwrap_or(defaults.within_s),
            action,
            ttl_s: own_q.ttl_s.or(class_q.ttl_s).unwrap_or(defaults.ttl_s),
        };
        if class.is_none()
            && workflows.is_empty()
            && d.class.is_none()
            && !self.named_devices.contains(&id.v)
        {
            self.diags.push(
                Diagnostic::at(
                    Problem::DeviceWithoutPolicy {
                        device: id.v.clone(),
                    },
                    id.span,
                )
                .hint("give it a `class` or `workflows`"),
            );
        }
        Some(Device {
            id: id.v.clone(),
            span: id.span,
            class,
            mac,
            ipv4,
            ipv6,
            vlan,
            interface,
            port,
            inventory,
            mode,
            workflows,
            quarantine,
            risk_actions: Vec::new(),
        })
    }

    /// The same MAC or address on two devices.
    pub(super) fn conflicts(&mut self, devices: &[Device]) {
        let mut macs: BTreeMap<Mac, &Device> = BTreeMap::new();
        let mut addrs: BTreeMap<IpAddr, &Device> = BTreeMap::new();
        let mut hashes: BTreeMap<u64, &Device> = BTreeMap::new();
        // Report the later definition (in file order) against the earlier one.
        let mut order: Vec<&Device> = devices.iter().collect();
        order.sort_by_key(|d| d.span);
        for d in order {
            if let Some(mac) = d.mac {
                if let Some(first) = macs.get(&mac) {
                    self.diags.push(
                        Diagnostic::at(
                            Problem::DuplicateMac {
                                mac: mac.to_string(),
                                first: first.id.clone(),
                                second: d.id.clone(),
                            },
                            d.span,
                        )
                        .note(first.span, format!("`{}` is defined here", first.id)),
                    );
                } else {
                    macs.insert(mac, d);
                }
            }
            for a in d.addresses() {
                if let Some(first) = addrs.get(&a) {
                    self.diags.push(
                        Diagnostic::at(
                            Problem::DuplicateAddress {
                                addr: a.to_string(),
                                first: first.id.clone(),
                                second: d.id.clone(),
                            },
                            d.span,
                        )
                        .note(first.span, format!("`{}` is defined here", first.id)),
                    );
                } else {
                    addrs.insert(a, d);
                }
            }
            let h = lazaret_abi::device_id_hash(d.id.as_bytes());
            if let Some(first) = hashes.get(&h) {
                self.diags.push(Diagnostic::at(
                    Problem::DeviceIdCollision {
                        first: first.id.clone(),
                        second: d.id.clone(),
                    },
                    d.span,
                ));
            } else {
                hashes.insert(h, d);
            }
        }
    }
}

/// What keeps `a` from being a device's own address, if anything: the datapath identifies
/// a device by the source address of what it sends, and gives the unspecified and
/// link-local sources of address configuration their own rules, which a device bound the
/// unspecified address would bypass (bypass class: the XDP fast path's flow flags assume
/// no device binds it).
fn not_a_host(a: IpAddr) -> Option<&'static str> {
    let what = match a {
        IpAddr::V4(x) if x.is_unspecified() => "the unspecified address",
        IpAddr::V4(x) if x.is_broadcast() => "the broadcast address",
        IpAddr::V4(x) if x.is_multicast() => "a multicast address",
        IpAddr::V4(x) if x.is_loopback() => "a loopback address",
        IpAddr::V6(x) if x.is_unspecified() => "the unspecified address",
        IpAddr::V6(x) if x.is_multicast() => "a multicast address",
        IpAddr::V6(x) if x.is_loopback() => "the loopback address",
        IpAddr::V6(x) if x.to_ipv4_mapped().is_some() => "an IPv4-mapped address",
        _ => return None,
    };
    Some(what)
}
