//! Stage one of parsing: a spanned TOML tree into raw structs that keep the position of every
//! value. Checks shape only (known keys, value types); meaning is `validate`'s job. Pure.

use super::diag::{did_you_mean, Diagnostic, Diags, Problem};
use super::source::Span;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// A value and where it was written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sp<T> {
    pub v: T,
    pub span: Span,
}

/// A port or protocol written as a number or a string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NumOrText {
    Num(i64),
    Text(String),
}

/// Everything one policy file defines.
#[derive(Clone, Debug, Default)]
pub struct RawFile {
    pub site: Option<RawSite>,
    pub roles: Vec<RawRole>,
    pub classes: Vec<RawClass>,
    pub workflows: Vec<RawWorkflow>,
    pub devices: Vec<RawDevice>,
    pub exceptions: Vec<RawException>,
}

impl RawFile {
    /// Whether the file holds nothing but `[[devices]]` entries.
    pub fn devices_only(&self) -> bool {
        self.site.is_none()
            && self.roles.is_empty()
            && self.classes.is_empty()
            && self.workflows.is_empty()
            && self.exceptions.is_empty()
    }
}

#[derive(Clone, Debug, Default)]
pub struct RawSite {
    pub span: Span,
    pub name: Option<Sp<String>>,
    pub unknown_devices: Option<Sp<String>>,
    pub l2_control: Option<Sp<bool>>,
    pub interfaces: Vec<RawInterface>,
    pub ports: Vec<(Sp<String>, Sp<i64>)>,
    pub essentials: RawEssentials,
    pub quarantine: RawSiteQuarantine,
    pub event_rate: Option<Sp<i64>>,
    pub event_burst: Option<Sp<i64>>,
    pub gateways: Vec<RawGateway>,
    /// `[site.exceptions] max`: the longest service window the site accepts.
    pub exception_max: Option<Sp<String>>,
    /// `[site.risk] enforce_from`, `tighten_from`: risk bands.
    pub risk_enforce_from: Option<Sp<String>>,
    pub risk_tighten_from: Option<Sp<String>>,
}

/// `[site.gateways.NAME]`.
#[derive(Clone, Debug, Default)]
pub struct RawGateway {
    pub name: Sp<String>,
    pub interfaces: Vec<Sp<String>>,
    pub members: Vec<Sp<String>>,
}

#[derive(Clone, Debug, Default)]
pub struct RawInterface {
    pub name: Sp<String>,
    pub side: Option<Sp<String>>,
    pub networks: Vec<Sp<String>>,
}

#[derive(Clone, Debug, Default)]
pub struct RawEssentials {
    pub dhcp: Option<Sp<bool>>,
    pub dns: Option<Sp<bool>>,
    pub ntp: Option<Sp<bool>>,
    pub neighbor: Option<Sp<bool>>,
    pub dhcp_servers: Option<Vec<Sp<String>>>,
    pub dns_servers: Option<Vec<Sp<String>>>,
    pub ntp_servers: Option<Vec<Sp<String>>>,
}

#[derive(Clone, Debug, Default)]
pub struct RawSiteQuarantine {
    pub allow: Vec<RawRule>,
    pub defaults: RawQuarantine,
}

#[derive(Clone, Debug, Default)]
pub struct RawQuarantine {
    pub span: Option<Span>,
    pub after: Option<Sp<i64>>,
    pub within: Option<Sp<String>>,
    pub action: Option<Sp<String>>,
    pub ttl: Option<Sp<String>>,
}

#[derive(Clone, Debug, Default)]
pub struct RawRole {
    pub name: Sp<String>,
    pub description: Option<Sp<String>>,
    pub addresses: Vec<Sp<String>>,
}

#[derive(Clone, Debug, Default)]
pub struct RawClass {
    pub name: Sp<String>,
    pub description: Option<Sp<String>>,
    pub workflows: Vec<Sp<String>>,
    pub mode: Option<Sp<String>>,
    pub quarantine: RawQuarantine,
}

#[derive(Clone, Debug, Default)]
pub struct RawWorkflow {
    pub name: Sp<String>,
    pub description: Option<Sp<String>>,
    pub mode: Option<Sp<String>>,
    pub essential: Option<Sp<bool>>,
    pub rules: Vec<RawRule>,
}

#[derive(Clone, Debug, Default)]
pub struct RawRule {
    pub span: Span,
    pub device: Option<Vec<Sp<String>>>,
    pub peer: Option<Vec<Sp<String>>>,
    pub proto: Option<Sp<NumOrText>>,
    pub ports: Option<Vec<Sp<NumOrText>>>,
    pub initiator: Option<Sp<String>>,
    pub description: Option<Sp<String>>,
}

/// `[exceptions.NAME]`: a vendor service window.
#[derive(Clone, Debug)]
pub struct RawException {
    pub name: Sp<String>,
    pub span: Span,
    pub devices: Option<Vec<Sp<String>>>,
    pub class: Option<Sp<String>>,
    pub workflows: Option<Vec<Sp<String>>>,
    /// Date-times as written (a TOML date-time or a string), parsed by validation.
    pub from: Option<Sp<String>>,
    pub until: Option<Sp<String>>,
    pub duration: Option<Sp<String>>,
    pub ticket: Option<Sp<String>>,
    pub approved_by: Option<Sp<String>>,
    pub description: Option<Sp<String>>,
}

#[derive(Clone, Debug, Default)]
pub struct RawDevice {
    pub span: Span,
    pub id: Option<Sp<String>>,
    pub class: Option<Sp<String>>,
    pub mac: Option<Sp<String>>,
    pub ipv4: Vec<Sp<String>>,
    pub ipv6: Vec<Sp<String>>,
    pub vlan: Option<Sp<i64>>,
    pub interface: Option<Sp<String>>,
    pub port: Option<Sp<String>>,
    pub vendor: Option<Sp<String>>,
    pub model: Option<Sp<String>>,
    pub serial: Option<Sp<String>>,
    pub firmware: Option<Sp<String>>,
    pub last_patched: Option<Sp<String>>,
    pub location: Option<Sp<String>>,
    pub owner: Option<Sp<String>>,
    pub life_critical: Option<Sp<bool>>,
    pub stores_phi: Option<Sp<bool>>,
    pub patient_connection: Option<Sp<String>>,
    pub patchable: Option<Sp<bool>>,
    pub notes: Option<Sp<String>>,
    pub mode: Option<Sp<String>>,
    pub workflows: Vec<Sp<String>>,
    pub quarantine: RawQuarantine,
}

// === Keys each table accepts (unknown keys are rejected with the nearest of these) ===

const TOP_KEYS: &[&str] = &[
    "site",
    "roles",
    "classes",
    "workflows",
    "devices",
    "exceptions",
];
const SITE_KEYS: &[&str] = &[
    "name",
    "unknown_devices",
    "l2_control",
    "interfaces",
    "ports",
    "essentials",
    "quarantine",
    "events",
    "gateways",
    "exceptions",
    "risk",
];
const SITE_EXCEPTION_KEYS: &[&str] = &["max"];
const SITE_RISK_KEYS: &[&str] = &["enforce_from", "tighten_from"];
const EXCEPTION_KEYS: &[&str] = &[
    "devices",
    "class",
    "workflows",
    "from",
    "until",
    "duration",
    "ticket",
    "approved_by",
    "description",
];
const GATEWAY_KEYS: &[&str] = &["description", "interfaces", "members"];
const IFACE_KEYS: &[&str] = &["side", "networks"];
const ESSENTIAL_KEYS: &[&str] = &[
    "dhcp",
    "dns",
    "ntp",
    "neighbor",
    "dhcp_servers",
    "dns_servers",
    "ntp_servers",
];
const SITE_QUARANTINE_KEYS: &[&str] = &["allow", "after", "within", "action", "ttl"];
const QUARANTINE_KEYS: &[&str] = &["after", "within", "action", "ttl"];
const EVENT_KEYS: &[&str] = &["rate", "burst"];
const ROLE_KEYS: &[&str] = &["description", "addresses"];
const CLASS_KEYS: &[&str] = &["description", "workflows", "mode", "quarantine"];
const WORKFLOW_KEYS: &[&str] = &["description", "mode", "essential", "rules"];
const RULE_KEYS: &[&str] = &[
    "device",
    "peer",
    "proto",
    "ports",
    "initiator",
    "description",
];
const QUARANTINE_RULE_KEYS: &[&str] = &["peer", "proto", "ports", "initiator", "description"];
const DEVICE_KEYS: &[&str] = &[
    "id",
    "class",
    "mac",
    "ipv4",
    "ipv6",
    "vlan",
    "interface",
    "port",
    "vendor",
    "model",
    "serial",
    "firmware",
    "last_patched",
    "location",
    "owner",
    "life_critical",
    "stores_phi",
    "patient_connection",
    "patchable",
    "notes",
    "mode",
    "workflows",
    "quarantine",
];

type Val<'i> = Spanned<DeValue<'i>>;

/// Walks one file's tree, recording shape problems in `diags`.
pub fn read_file(file: u32, doc: &DeTable<'_>, diags: &mut Diags) -> RawFile {
    let mut cx = Cx { file, diags };
    let mut out = RawFile::default();
    let top = Table::new(doc, Span::new(file, 0..0), "the top level".to_string());
    cx.check_keys(&top, TOP_KEYS);
    if let Some((t, span)) = cx.table(&top, "site") {
        out.site = Some(cx.site(&t, span));
    }
    for (name, t) in cx.named_tables(&top, "roles", "role") {
        cx.check_keys(&t, ROLE_KEYS);
        out.roles.push(RawRole {
            description: cx.string(&t, "description"),
            addresses: cx.strings(&t, "addresses").unwrap_or_default(),
            name,
        });
    }
    for (name, t) in cx.named_tables(&top, "classes", "class") {
        cx.check_keys(&t, CLASS_KEYS);
        out.classes.push(RawClass {
            description: cx.string(&t, "description"),
            workflows: cx.strings(&t, "workflows").unwrap_or_default(),
            mode: cx.string(&t, "mode"),
            quarantine: cx.quarantine(&t, "quarantine", QUARANTINE_KEYS),
            name,
        });
    }
    for (name, t) in cx.named_tables(&top, "workflows", "workflow") {
        cx.check_keys(&t, WORKFLOW_KEYS);
        let mut rules = Vec::new();
        for r in cx.tables(&t, "rules", &format!("a rule of workflow `{}`", name.v)) {
            if cx.diags.saturated() {
                cx.diags.skip();
                continue;
            }
            rules.push(cx.rule(&r, RULE_KEYS));
        }
        out.workflows.push(RawWorkflow {
            description: cx.string(&t, "description"),
            mode: cx.string(&t, "mode"),
            essential: cx.boolean(&t, "essential"),
            rules,
            name,
        });
    }
    for (name, t) in cx.named_tables(&top, "exceptions", "exception") {
        cx.check_keys(&t, EXCEPTION_KEYS);
        out.exceptions.push(RawException {
            span: t.span,
            devices: cx.strings(&t, "devices"),
            class: cx.string(&t, "class"),
            workflows: cx.strings(&t, "workflows"),
            from: cx.datetime(&t, "from"),
            until: cx.datetime(&t, "until"),
            duration: cx.string(&t, "duration"),
            ticket: cx.string(&t, "ticket"),
            approved_by: cx.string(&t, "approved_by"),
            description: cx.string(&t, "description"),
            name,
        });
    }
    for t in cx.tables(&top, "devices", "a [[devices]] entry") {
        // A file that has already produced every problem that will be reported is not
        // checked further: a million bad entries would otherwise cost minutes for messages
        // nobody sees.
        if cx.diags.saturated() {
            cx.diags.skip();
            continue;
        }
        out.devices.push(cx.device(&t));
    }
    out
}

/// A table being read: its entries, where it is, and how messages name it.
struct Table<'a, 'i> {
    map: &'a DeTable<'i>,
    span: Span,
    what: String,
}

impl<'a, 'i> Table<'a, 'i> {
    fn new(map: &'a DeTable<'i>, span: Span, what: String) -> Self {
        Table { map, span, what }
    }

    fn get(&self, key: &str) -> Option<&'a Val<'i>> {
        self.map.get(key)
    }
}

struct Cx<'d> {
    file: u32,
    diags: &'d mut Diags,
}

fn type_name(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

impl Cx<'_> {
    fn span(&self, range: std::ops::Range<usize>) -> Span {
        Span::new(self.file, range)
    }

    fn check_keys(&mut self, t: &Table<'_, '_>, known: &[&str]) {
        for k in t.map.keys() {
            let key: &str = k.get_ref();
            if !known.contains(&key) {
                let d = Diagnostic::at(
                    Problem::UnknownKey {
                        key: key.to_string(),
                        table: t.what.clone(),
                    },
                    self.span(k.span()),
                )
                .maybe_hint(did_you_mean(key, known.iter().copied()));
                self.diags.push(d);
            }
        }
    }

    fn wrong_type(&mut self, key: &str, expected: &'static str, v: &Val<'_>) {
        self.diags.err(
            Problem::WrongType {
                key: key.to_string(),
                expected,
                found: type_name(v.get_ref()),
            },
            self.span(v.span()),
        );
    }

    fn value<'a, 'i>(&self, t: &Table<'a, 'i>, key: &str) -> Option<&'a Val<'i>> {
        t.get(key)
    }

    fn string(&mut self, t: &Table<'_, '_>, key: &str) -> Option<Sp<String>> {
        let v = self.value(t, key)?;
        match v.get_ref() {
            DeValue::String(s) => Some(Sp {
                v: s.to_string(),
                span: self.span(v.span()),
            }),
            _ => {
                self.wrong_type(key, "a string", v);
                None
            }
        }
    }

    /// A date-time: a TOML one (`from = 2026-12-04T09:00:00Z`) or a string holding one,
    /// as written; validation parses it.
    fn datetime(&mut self, t: &Table<'_, '_>, key: &str) -> Option<Sp<String>> {
        let v = self.value(t, key)?;
        let text = match v.get_ref() {
            DeValue::String(s) => s.to_string(),
            DeValue::Datetime(d) => d.to_string(),
            _ => {
                self.wrong_type(key, "a date-time such as 2026-12-04T09:00:00Z", v);
                return None;
            }
        };
        Some(Sp {
            v: text,
            span: self.span(v.span()),
        })
    }

    fn boolean(&mut self, t: &Table<'_, '_>, key: &str) -> Option<Sp<bool>> {
        let v = self.value(t, key)?;
        match v.get_ref() {
            DeValue::Boolean(b) => Some(Sp {
                v: *b,
                span: self.span(v.span()),
            }),
            _ => {
                self.wrong_type(key, "true or false", v);
                None
            }
        }
    }

    fn int_value(&mut self, key: &str, v: &Val<'_>) -> Option<Sp<i64>> {
        match v.get_ref() {
            DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => Some(Sp {
                    v: n,
                    span: self.span(v.span()),
                }),
                Err(_) => {
                    self.diags.err(
                        Problem::OutOfRange {
                            key: key.to_string(),
                            value: i64::MAX,
                            expected: "a 64-bit integer",
                        },
                        self.span(v.span()),
                    );
                    None
                }
            },
            _ => {
                self.wrong_type(key, "an integer", v);
                None
            }
        }
    }

    fn int(&mut self, t: &Table<'_, '_>, key: &str) -> Option<Sp<i64>> {
        let v = self.value(t, key)?;
        self.int_value(key, v)
    }

    /// A string or an array of strings.
    fn strings(&mut self, t: &Table<'_, '_>, key: &str) -> Option<Vec<Sp<String>>> {
        let v = self.value(t, key)?;
        match v.get_ref() {
            DeValue::String(s) => Some(vec![Sp {
                v: s.to_string(),
                span: self.span(v.span()),
            }]),
            DeValue::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    match item.get_ref() {
                        DeValue::String(s) => out.push(Sp {
                            v: s.to_string(),
                            span: self.span(item.span()),
                        }),
                        _ => self.wrong_type(key, "a string", item),
                    }
                }
                Some(out)
            }
            _ => {
                self.wrong_type(key, "a string or an array of strings", v);
                None
            }
        }
    }

    fn num_or_text(&mut self, key: &str, v: &Val<'_>) -> Option<Sp<NumOrText>> {
        match v.get_ref() {
            DeValue::String(s) => Some(Sp {
                v: NumOrText::Text(s.to_string()),
                span: self.span(v.span()),
            }),
            DeValue::Integer(_) => self.int_value(key, v).map(|n| Sp {
                v: NumOrText::Num(n.v),
                span: n.span,
            }),
            _ => {
                self.wrong_type(key, "a number or a string", v);
                None
            }
        }
    }

    fn num_or_texts(&mut self, t: &Table<'_, '_>, key: &str) -> Option<Vec<Sp<NumOrText>>> {
        let v = self.value(t, key)?;
        match v.get_ref() {
            DeValue::Array(items) => Some(
                items
                    .iter()
                    .filter_map(|item| self.num_or_text(key, item))
                    .collect(),
            ),
            _ => self.num_or_text(key, v).map(|one| vec![one]),
        }
    }

    /// A date as a TOML local date or a string.
    fn date(&mut self, t: &Table<'_, '_>, key: &str) -> Option<Sp<String>> {
        let v = self.value(t, key)?;
        let span = self.span(v.span());
        match v.get_ref() {
            DeValue::String(s) => Some(Sp {
                v: s.to_string(),
                span,
            }),
            DeValue::Datetime(d) => Some(Sp {
                v: d.to_string(),
                span,
            }),
            _ => {
                self.wrong_type(key, "a date", v);
                None
            }
        }
    }

    fn table<'a, 'i>(&mut self, t: &Table<'a, 'i>, key: &str) -> Option<(Table<'a, 'i>, Span)> {
        let v = self.value(t, key)?;
        match v.get_ref() {
            DeValue::Table(map) => {
                let span = self.span(v.span());
                let what = if t.what == "the top level" {
                    format!("[{key}]")
                } else if let Some(inner) =
                    t.what.strip_prefix('[').and_then(|w| w.strip_suffix(']'))
                {
                    format!("[{inner}.{key}]")
                } else {
                    format!("`{key}` of {}", t.what)
                };
                Some((Table::new(map, span, what), span))
            }
            _ => {
                self.wrong_type(key, "a table", v);
                None
            }
        }
    }

    /// `[key.NAME]` tables: the name (with the key's span) and the table.
    fn named_tables<'a, 'i>(
        &mut self,
        t: &Table<'a, 'i>,
        key: &str,
        singular: &str,
    ) -> Vec<(Sp<String>, Table<'a, 'i>)> {
        let Some((outer, _)) = self.table(t, key) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(outer.map.len());
        for (k, v) in outer.map {
            let name = Sp {
                v: k.get_ref().to_string(),
                span: self.span(k.span()),
            };
            match v.get_ref() {
                DeValue::Table(map) => {
                    let what = format!("{singular} `{}`", name.v);
                    out.push((name, Table::new(map, self.span(v.span()), what)));
                }
                _ => self.wrong_type(&format!("{key}.{}", name.v), "a table", v),
            }
        }
        out
    }

    /// An array of tables (`[[key]]` or `key = [{...}, ...]`).
    fn tables<'a, 'i>(&mut self, t: &Table<'a, 'i>, key: &str, what: &str) -> Vec<Table<'a, 'i>> {
        let Some(v) = self.value(t, key) else {
            return Vec::new();
        };
        match v.get_ref() {
            DeValue::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    match item.get_ref() {
                        DeValue::Table(map) => {
                            out.push(Table::new(map, self.span(item.span()), what.to_string()));
                        }
                        _ => self.wrong_type(key, "an array of tables", item),
                    }
                }
                out
            }
            _ => {
                self.wrong_type(key, "an array of tables", v);
                Vec::new()
            }
        }
    }

    fn site(&mut self, t: &Table<'_, '_>, span: Span) -> RawSite {
        self.check_keys(t, SITE_KEYS);
        let mut site = RawSite {
            span,
            name: self.string(t, "name"),
            unknown_devices: self.string(t, "unknown_devices"),
            l2_control: self.boolean(t, "l2_control"),
            ..RawSite::default()
        };
        for (name, it) in self.named_tables(t, "interfaces", "interface") {
            self.check_keys(&it, IFACE_KEYS);
            site.interfaces.push(RawInterface {
                side: self.string(&it, "side"),
                networks: self.strings(&it, "networks").unwrap_or_default(),
                name,
            });
        }
        if let Some((e, _)) = self.table(t, "exceptions") {
            self.check_keys(&e, SITE_EXCEPTION_KEYS);
            site.exception_max = self.string(&e, "max");
        }
        if let Some((r, _)) = self.table(t, "risk") {
            self.check_keys(&r, SITE_RISK_KEYS);
            site.risk_enforce_from = self.string(&r, "enforce_from");
            site.risk_tighten_from = self.string(&r, "tighten_from");
        }
        for (name, g) in self.named_tables(t, "gateways", "gateway") {
            self.check_keys(&g, GATEWAY_KEYS);
            let _ = self.string(&g, "description");
            site.gateways.push(RawGateway {
                interfaces: self.strings(&g, "interfaces").unwrap_or_default(),
                members: self.strings(&g, "members").unwrap_or_default(),
                name,
            });
        }
        if let Some((ports, _)) = self.table(t, "ports") {
            for (k, v) in ports.map {
                let name = Sp {
                    v: k.get_ref().to_string(),
                    span: self.span(k.span()),
                };
                if let Some(n) = self.int_value(&format!("ports.{}", name.v), v) {
                    site.ports.push((name, n));
                }
            }
        }
        if let Some((e, _)) = self.table(t, "essentials") {
            self.check_keys(&e, ESSENTIAL_KEYS);
            site.essentials = RawEssentials {
                dhcp: self.boolean(&e, "dhcp"),
                dns: self.boolean(&e, "dns"),
                ntp: self.boolean(&e, "ntp"),
                neighbor: self.boolean(&e, "neighbor"),
                dhcp_servers: self.strings(&e, "dhcp_servers"),
                dns_servers: self.strings(&e, "dns_servers"),
                ntp_servers: self.strings(&e, "ntp_servers"),
            };
        }
        if let Some((q, qspan)) = self.table(t, "quarantine") {
            self.check_keys(&q, SITE_QUARANTINE_KEYS);
            let allow = self
                .tables(&q, "allow", "an entry of [site.quarantine] allow")
                .into_iter()
                .map(|r| self.rule(&r, QUARANTINE_RULE_KEYS))
                .collect();
            site.quarantine = RawSiteQuarantine {
                allow,
                defaults: self.quarantine_fields(&q, Some(qspan)),
            };
        }
        if let Some((ev, _)) = self.table(t, "events") {
            self.check_keys(&ev, EVENT_KEYS);
            site.event_rate = self.int(&ev, "rate");
            site.event_burst = self.int(&ev, "burst");
        }
        site
    }

    fn quarantine(&mut self, t: &Table<'_, '_>, key: &str, known: &[&str]) -> RawQuarantine {
        match self.table(t, key) {
            Some((q, span)) => {
                let q = Table::new(q.map, span, format!("the quarantine of {}", t.what));
                self.check_keys(&q, known);
                self.quarantine_fields(&q, Some(span))
            }
            None => RawQuarantine::default(),
        }
    }

    fn quarantine_fields(&mut self, q: &Table<'_, '_>, span: Option<Span>) -> RawQuarantine {
        RawQuarantine {
            span,
            after: self.int(q, "after"),
            within: self.string(q, "within"),
            action: self.string(q, "action"),
            ttl: self.string(q, "ttl"),
        }
    }

    fn rule(&mut self, t: &Table<'_, '_>, known: &[&str]) -> RawRule {
        self.check_keys(t, known);
        RawRule {
            span: t.span,
            device: self.strings(t, "device"),
            peer: self.strings(t, "peer"),
            proto: self
                .value(t, "proto")
                .and_then(|v| self.num_or_text("proto", v)),
            ports: self.num_or_texts(t, "ports"),
            initiator: self.string(t, "initiator"),
            description: self.string(t, "description"),
        }
    }

    fn device(&mut self, t: &Table<'_, '_>) -> RawDevice {
        let id = self.string(t, "id");
        let what = match &id {
            Some(id) => format!("device `{}`", id.v),
            None => "a [[devices]] entry".to_string(),
        };
        let t = Table::new(t.map, t.span, what);
        self.check_keys(&t, DEVICE_KEYS);
        RawDevice {
            span: t.span,
            id,
            class: self.string(&t, "class"),
            mac: self.string(&t, "mac"),
            ipv4: self.strings(&t, "ipv4").unwrap_or_default(),
            ipv6: self.strings(&t, "ipv6").unwrap_or_default(),
            vlan: self.int(&t, "vlan"),
            interface: self.string(&t, "interface"),
            port: self.string(&t, "port"),
            vendor: self.string(&t, "vendor"),
            model: self.string(&t, "model"),
            serial: self.string(&t, "serial"),
            firmware: self.string(&t, "firmware"),
            last_patched: self.date(&t, "last_patched"),
            location: self.string(&t, "location"),
            owner: self.string(&t, "owner"),
            life_critical: self.boolean(&t, "life_critical"),
            stores_phi: self.boolean(&t, "stores_phi"),
            patient_connection: self.string(&t, "patient_connection"),
            patchable: self.boolean(&t, "patchable"),
            notes: self.string(&t, "notes"),
            mode: self.string(&t, "mode"),
            workflows: self.strings(&t, "workflows").unwrap_or_default(),
            quarantine: self.quarantine(&t, "quarantine", QUARANTINE_KEYS),
        }
    }
}
