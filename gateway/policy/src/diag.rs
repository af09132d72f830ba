//! Diagnostics: every problem a policy can have, as typed values, and their rendering as
//! `file:line:col: error: message`, the offending line, a caret and a hint. Pure: no I/O.

use super::source::{Location, Sources, Span};
use crate::text::printable;
use serde::Serialize;
use std::fmt::{self, Write as _};
use std::sync::Arc;

/// Kinds of names a policy defines and refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NameKind {
    Role,
    Class,
    Workflow,
    Device,
    Port,
    Interface,
    Gateway,
    Exception,
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameKind::Role => "role",
            NameKind::Class => "class",
            NameKind::Workflow => "workflow",
            NameKind::Device => "device",
            NameKind::Port => "site port",
            NameKind::Interface => "interface",
            NameKind::Gateway => "gateway",
            NameKind::Exception => "exception",
        })
    }
}

/// Whether a diagnostic blocks compilation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Error,
    Warning,
}

/// Everything that can be wrong with a policy. Tests match on these variants; the rendered
/// wording is pinned by the catalog test.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    // === Reading and syntax ===
    #[error("cannot read {path}: {message}")]
    Io { path: String, message: String },
    #[error("{path} is a {kind}, not a regular file: policy files must be plain files")]
    NotRegularFile { path: String, kind: &'static str },
    #[error("{path} is a symbolic link to {target}, outside the policy directory")]
    OutsideRoot { path: String, target: String },
    #[error("{path} leads back to a directory already read (a symbolic link loop)")]
    SymlinkLoop { path: String },
    #[error("{path} is nested more than {limit} directories deep")]
    TooDeep { path: String, limit: usize },
    #[error("{path} is {size} bytes, more than the {limit} bytes a policy file may have")]
    FileTooLarge { path: String, size: u64, limit: u64 },
    #[error("the policy files add up to more than {limit} bytes")]
    PolicyTooLarge { limit: u64 },
    #[error("more than {limit} policy files")]
    TooManyFiles { limit: usize },
    #[error(
        "{count} more problems (or entries left unchecked) not shown: only the first {shown} are reported, fix these first"
    )]
    Omitted {
        count: usize,
        shown: usize,
        /// Whether errors are among them (else only warnings).
        errors: bool,
    },
    #[error("{path} is not UTF-8 text")]
    NotUtf8 { path: String },
    #[error("no .toml files under {path}")]
    NoPolicyFiles { path: String },
    #[error("TOML syntax: {message}")]
    Syntax { message: String },

    // === Shape ===
    #[error("unknown key `{key}` in {table}")]
    UnknownKey { key: String, table: String },
    #[error("`{key}` must be {expected}, found {found}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("{table} needs `{key}`")]
    MissingKey { key: &'static str, table: String },
    #[error("invalid value `{value}` for `{key}`: expected {expected}")]
    BadValue {
        key: String,
        value: String,
        expected: String,
    },
    #[error("invalid {kind} name `{name}`: use letters, digits, `-`, `_` and `.` (at most 64)")]
    InvalidName { kind: NameKind, name: String },
    #[error("{kind} `{name}` is defined twice")]
    DuplicateName { kind: NameKind, name: String },
    #[error("[site] is defined twice")]
    DuplicateSite,
    #[error("no [site] section in any policy file")]
    NoSite,
    #[error("unknown {kind} `{name}`")]
    UnknownName { kind: NameKind, name: String },
    #[error("`{text}` is not {expected}")]
    BadSelector {
        text: String,
        expected: &'static str,
    },

    // === Values ===
    #[error("`{text}` is not an IP address or prefix")]
    BadAddress { text: String },
    #[error("prefix `{text}` has host bits set")]
    HostBits { text: String, network: String },
    #[error("port {value} is outside 0-65535")]
    PortOutOfRange { value: i64 },
    #[error("port range {lo}-{hi} is reversed")]
    ReversedPortRange { lo: u16, hi: u16 },
    #[error("`{text}` is not a port, a range `a-b` or a site port name")]
    BadPort { text: String },
    #[error("protocol {proto} has no ports; remove `ports`")]
    PortsWithoutPortProtocol { proto: String },
    #[error("`{text}` is not a protocol (tcp, udp, icmp, icmpv6, any or 0-255)")]
    BadProto { text: String },
    #[error("`{text}` is not a MAC address")]
    BadMac { text: String },
    #[error("`{text}` is not a date (YYYY-MM-DD)")]
    BadDate { text: String },
    #[error("`{text}` is not a duration (e.g. 30s, 5m, 4h, 2d)")]
    BadDuration { text: String },
    #[error("VLAN {value} is outside 0-4094")]
    BadVlan { value: i64 },
    #[error("`{key}` must be {expected}, found {value}")]
    OutOfRange {
        key: String,
        value: i64,
        expected: &'static str,
    },

    // === Inventory conflicts ===
    #[error("MAC {mac} is bound to both `{first}` and `{second}`")]
    DuplicateMac {
        mac: String,
        first: String,
        second: String,
    },
    #[error("address {addr} is bound to both `{first}` and `{second}`")]
    DuplicateAddress {
        addr: String,
        first: String,
        second: String,
    },
    #[error("device `{device}` has no MAC and no address: it cannot be recognised")]
    NoIdentity { device: String },
    #[error("device `{device}` is bound to `{interface}`, which is not a devices-side interface")]
    NotADeviceInterface { device: String, interface: String },
    #[error(
        "interface `{interface}` is served by gateways `{first}` and `{second}`: a devices-side interface belongs to exactly one gateway"
    )]
    InterfaceOnTwoGateways {
        interface: String,
        first: String,
        second: String,
    },
    #[error("devices-side interface `{interface}` is served by no gateway")]
    InterfaceWithoutGateway { interface: String },
    #[error("gateway `{gateway}` serves no devices-side interface")]
    GatewayWithoutDevices { gateway: String },
    #[error("gateway `{gateway}` has {count} members: a gateway runs on one host, or two (an active/standby pair)")]
    GatewayMembers { gateway: String, count: usize },
    #[error("host `{member}` is a member of gateways `{first}` and `{second}`")]
    MemberOfTwoGateways {
        member: String,
        first: String,
        second: String,
    },
    #[error("device `{device}` names no `interface`, so no gateway would enforce it")]
    DeviceWithoutGateway { device: String },
    #[error("device `{device}` names a bridge port but no `interface` (the bridge)")]
    PortWithoutInterface { device: String },
    #[error("`{name}` is not an interface name (at most 15 characters, no `/`, `:` or spaces)")]
    BadPortName { name: String },
    #[error("address {addr} of device `{device}` is outside the networks of `{interface}`")]
    AddressOutsideInterface {
        addr: String,
        device: String,
        interface: String,
    },
    #[error("device ids `{first}` and `{second}` hash to the same datapath id")]
    DeviceIdCollision { first: String, second: String },
    #[error("{addr}, given to device `{device}`, is {what}: no device sends from it")]
    NotAHostAddress {
        addr: String,
        device: String,
        what: &'static str,
    },
    #[error("{family} address {addr} given in `{key}`")]
    WrongFamily {
        key: &'static str,
        family: &'static str,
        addr: String,
    },

    // === Rules ===
    #[error("rule only reaches {rule_family} peers, but {devices} only {device_family} addresses")]
    FamilyMismatch {
        rule_family: &'static str,
        device_family: &'static str,
        devices: String,
    },
    #[error("{proto} rule has no {family} peer")]
    ProtoFamily {
        proto: &'static str,
        family: &'static str,
    },
    #[error("the quarantine profile may only name roles, prefixes or `any`, not `{text}`")]
    ManagedPeerInQuarantine { text: String },
    #[error("`{text}` is not a managed end: use `class:NAME` or `device:ID`")]
    BadEnd { text: String },

    // === Capacities ===
    #[error("{what} (map {map}): {count} exceeds the datapath capacity of {max}")]
    Capacity {
        what: &'static str,
        /// The map that would overflow, as `lazaret_map_capacity{map}` names it.
        map: &'static str,
        count: u64,
        max: u64,
    },

    // === Service windows ===
    #[error("`{text}` is not a date-time with a UTC offset")]
    BadDateTime { text: String },
    #[error("exception `{name}` needs `{key}`")]
    ExceptionMissing { name: String, key: &'static str },
    #[error("exception `{name}` has both `until` and `duration`")]
    ExceptionUntilAndDuration { name: String },
    #[error("exception `{name}` does not end after it starts")]
    ExceptionEndsBeforeStart { name: String },
    #[error("a service window of {max} is longer than lazaret accepts ({limit})")]
    ExceptionMaxTooLong { max: String, limit: &'static str },
    #[error("exception `{name}` lasts {length}, longer than the site's maximum of {max}")]
    ExceptionTooLong {
        name: String,
        length: String,
        max: String,
    },
    #[error("workflow `{workflow}` is essential: exception `{name}` cannot grant it")]
    ExceptionEssentialWorkflow { name: String, workflow: String },
    #[error(
        "workflow `{workflow}` names devices in its rules: exception `{name}` cannot grant it"
    )]
    ExceptionWorkflowNamesDevices { name: String, workflow: String },

    // === Warnings ===
    #[error("role `{name}` is never used")]
    UnusedRole { name: String },
    #[error("class `{name}` has no devices")]
    UnusedClass { name: String },
    #[error("workflow `{name}` applies to no device")]
    UnusedWorkflow { name: String },
    #[error("device `{device}` has no class and no workflow: it gets only the essentials")]
    DeviceWithoutPolicy { device: String },
    #[error(
        "rule {index} of workflow `{workflow}` is shadowed by rule {by}: it allows nothing more"
    )]
    ShadowedRule {
        workflow: String,
        index: usize,
        by: usize,
    },
    #[error(
        "rule {index} of workflow `{workflow}` never passes: {what} are refused on every \
         device port as a rogue DHCP server's"
    )]
    DhcpPortRule {
        workflow: String,
        index: usize,
        what: &'static str,
    },
    #[error("life-critical device `{device}` would be cut off by quarantine action `{action}`")]
    LifeCriticalQuarantine { device: String, action: String },
    #[error("device `{device}` has no address, so rules cannot name it as a peer")]
    PeerWithoutAddress { device: String },
    #[error("rule {index} of workflow `{workflow}` matches no device")]
    RuleMatchesNoDevice { workflow: String, index: usize },
    #[error("exception `{name}` ended at {until}: it grants nothing any more")]
    ExceptionExpired { name: String, until: String },
    #[error("exception `{name}` applies to no device")]
    ExceptionGrantsNothing { name: String },
    #[error("every device of exception `{name}` has workflow `{workflow}` already: the window adds nothing")]
    ExceptionRedundant { name: String, workflow: String },
    #[error("advisory file: {message}")]
    BadAdvisory { message: String },
    #[error(
        "interfaces `{first}` and `{second}` share a claim scope (their names fold alike): \
         devices behind either may own addresses of the other's networks; rename one"
    )]
    SharedClaimScope { first: String, second: String },
    #[error("device `{device}` is {band} risk ({advisories}) and workflow `{workflow}` lets it reach {what}")]
    RiskyBroadFlow {
        device: String,
        band: String,
        advisories: String,
        workflow: String,
        what: String,
    },
}

impl Problem {
    pub fn severity(&self) -> Severity {
        match self {
            Problem::UnusedRole { .. }
            | Problem::UnusedClass { .. }
            | Problem::UnusedWorkflow { .. }
            | Problem::DeviceWithoutPolicy { .. }
            | Problem::ShadowedRule { .. }
            | Problem::DhcpPortRule { .. }
            | Problem::LifeCriticalQuarantine { .. }
            | Problem::PeerWithoutAddress { .. }
            | Problem::RuleMatchesNoDevice { .. }
            | Problem::ExceptionExpired { .. }
            | Problem::ExceptionGrantsNothing { .. }
            | Problem::ExceptionRedundant { .. }
            | Problem::RiskyBroadFlow { .. }
            | Problem::SharedClaimScope { .. }
            | Problem::Omitted { errors: false, .. } => Severity::Warning,
            _ => Severity::Error,
        }
    }
}

/// A secondary position ("first defined here").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub span: Span,
    pub message: String,
}

/// One problem at one place, with an optional hint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub problem: Problem,
    pub span: Option<Span>,
    pub hint: Option<String>,
    pub notes: Vec<Note>,
}

impl Diagnostic {
    pub fn new(problem: Problem, span: Option<Span>) -> Diagnostic {
        Diagnostic {
            problem,
            span,
            hint: None,
            notes: Vec::new(),
        }
    }

    pub fn at(problem: Problem, span: Span) -> Diagnostic {
        Diagnostic::new(problem, Some(span))
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.hint = Some(hint.into());
        self
    }

    pub fn maybe_hint(mut self, hint: Option<String>) -> Diagnostic {
        self.hint = hint;
        self
    }

    pub fn note(mut self, span: Span, message: impl Into<String>) -> Diagnostic {
        self.notes.push(Note {
            span,
            message: message.into(),
        });
        self
    }

    pub fn severity(&self) -> Severity {
        self.problem.severity()
    }

    /// The diagnostic as text: header line, source line with caret, hint and notes.
    pub fn render(&self, sources: &Sources) -> String {
        let mut out = String::new();
        let label = match self.severity() {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        // Everything here may quote the policy's text, which is input: control characters
        // are shown escaped, never sent to the terminal (see `crate::text`).
        let problem = self.problem.to_string();
        let problem = printable(&problem);
        match self.span {
            Some(span) => {
                let loc = sources.locate(span);
                let _ = writeln!(out, "{loc}: {label}: {problem}");
                let (line, from, to) = sources.line_of(span);
                // The caret under the escaped line: widths of the escaped text before and in
                // the span.
                let width = |n: usize| {
                    printable(&line.chars().take(n).collect::<String>())
                        .chars()
                        .count()
                };
                let (from, to) = (width(from), width(to));
                let num = loc.line.to_string();
                let pad = " ".repeat(num.len());
                let _ = writeln!(out, "{pad} |");
                let _ = writeln!(out, "{num} | {}", printable(line));
                let _ = writeln!(
                    out,
                    "{pad} | {}{}",
                    " ".repeat(from),
                    "^".repeat(to.saturating_sub(from).max(1))
                );
            }
            None => {
                let _ = writeln!(out, "{label}: {problem}");
            }
        }
        if let Some(hint) = &self.hint {
            let _ = writeln!(out, "  = hint: {}", printable(hint));
        }
        for note in &self.notes {
            let _ = writeln!(
                out,
                "  = note: {}: {}",
                sources.locate(note.span),
                printable(&note.message)
            );
        }
        out
    }

    /// A JSON-friendly view (for `--output json`).
    pub fn to_json(&self, sources: &Sources) -> DiagnosticJson {
        DiagnosticJson {
            severity: self.severity(),
            location: self.span.map(|s| sources.locate(s)),
            message: self.problem.to_string(),
            hint: self.hint.clone(),
            notes: self
                .notes
                .iter()
                .map(|n| (sources.locate(n.span), n.message.clone()))
                .collect(),
        }
    }
}

/// Serialized form of a [`Diagnostic`].
#[derive(Clone, Debug, Serialize)]
pub struct DiagnosticJson {
    pub severity: Severity,
    pub location: Option<Location>,
    pub message: String,
    pub hint: Option<String>,
    pub notes: Vec<(Location, String)>,
}

/// A policy that does not compile: all its diagnostics (errors and warnings), with the
/// sources needed to render them.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{}", self.render())]
pub struct PolicyErrors {
    pub sources: Arc<Sources>,
    pub diagnostics: Vec<Diagnostic>,
}

impl PolicyErrors {
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .filter(|d| d.severity() == Severity::Error)
    }

    pub fn problems(&self) -> Vec<&Problem> {
        self.errors().map(|d| &d.problem).collect()
    }

    /// Every diagnostic, errors first, then warnings, then a count line.
    pub fn render(&self) -> String {
        render_all(&self.sources, &self.diagnostics)
    }
}

/// Renders diagnostics errors first (each group in position order) and a closing count.
pub fn render_all(sources: &Sources, diags: &[Diagnostic]) -> String {
    let mut out = String::new();
    for severity in [Severity::Error, Severity::Warning] {
        for d in diags.iter().filter(|d| d.severity() == severity) {
            out.push_str(&d.render(sources));
        }
    }
    let errors = diags
        .iter()
        .filter(|d| d.severity() == Severity::Error)
        .count();
    let warnings = diags.len() - errors;
    if errors > 0 {
        let _ = writeln!(
            out,
            "{} error{}, {} warning{}",
            errors,
            plural(errors),
            warnings,
            plural(warnings)
        );
    }
    out
}

pub(crate) fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Accumulates diagnostics across all stages, so every error is reported at once.
#[derive(Debug, Default)]
pub struct Diags {
    pub items: Vec<Diagnostic>,
    /// Problems past [`MAX_REPORTED`], counted and dropped: a file of a million bad entries
    /// must not become millions of messages in memory and on a terminal.
    pub omitted: usize,
    omitted_errors: bool,
}

/// Most problems kept (and reported) for one load.
pub const MAX_REPORTED: usize = 200;

impl Diags {
    pub fn push(&mut self, d: Diagnostic) {
        if self.items.len() >= MAX_REPORTED {
            self.omitted += 1;
            self.omitted_errors |= d.severity() == Severity::Error;
            return;
        }
        self.items.push(d);
    }

    pub fn err(&mut self, problem: Problem, span: Span) {
        self.push(Diagnostic::at(problem, span));
    }

    /// Whether every problem that will be reported has been found.
    pub fn saturated(&self) -> bool {
        self.items.len() >= MAX_REPORTED
    }

    /// An entry left unchecked because the problems are [`Self::saturated`]: counted with
    /// the omitted ones, and the load fails (it has errors already).
    pub fn skip(&mut self) {
        self.omitted += 1;
        self.omitted_errors = true;
    }

    /// Adds another collection's problems (within the same bound).
    pub fn extend(&mut self, other: Diags) {
        self.omitted += other.omitted;
        self.omitted_errors |= other.omitted_errors;
        for d in other.items {
            self.push(d);
        }
    }

    /// How many errors were found so far (kept or omitted).
    pub fn error_count(&self) -> usize {
        let kept = self
            .items
            .iter()
            .filter(|d| d.severity() == Severity::Error);
        kept.count() + if self.omitted_errors { self.omitted } else { 0 }
    }

    pub fn has_errors(&self) -> bool {
        self.omitted_errors || self.items.iter().any(|d| d.severity() == Severity::Error)
    }

    /// The problems, with one saying how many were left out, if any were.
    pub fn into_items(self) -> Vec<Diagnostic> {
        let mut items = self.items;
        if self.omitted > 0 {
            items.push(Diagnostic::new(
                Problem::Omitted {
                    count: self.omitted,
                    shown: MAX_REPORTED,
                    errors: self.omitted_errors,
                },
                None,
            ));
        }
        items
    }

    /// Sorts by position (file, offset), then by message, for a stable order.
    pub fn sort(&mut self) {
        // Cached: rendering a problem for every comparison is most of the cost.
        self.items
            .sort_by_cached_key(|d| (d.span.is_some(), d.span, d.problem.to_string()));
    }
}

/// The closest candidate to `name` by edit distance, if close enough to be a likely typo.
pub fn nearest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(2);
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let d = strsim::damerau_levenshtein(name, c);
        if d <= limit && best.is_none_or(|(bd, bc)| (d, c) < (bd, bc)) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

/// `did you mean "x"?` for the nearest candidate, if any.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    nearest(name, candidates).map(|c| format!("did you mean \"{c}\"?"))
}
