//! Policy-repository subcommands: check, explain, plan, devices, compile.
//!
//! Thin: argument parsing, reading files or git revisions, and printing. Everything else is
//! in `lazaret::policy`. Exit codes: 0 ok, 1 the policy has errors (or `explain` denies),
//! 2 usage or I/O errors.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use super::{Format, Globals, Output};
use lazaret::policy::{
    self, diag::render_all, explain, git, model::Date, plan, risk, Compiled, Policy, PolicyErrors,
    Problem, Severity,
};
use lazaret_abi as abi;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Writes to stdout; a closed pipe (`lazaret compile | head`) ends output quietly instead of
/// panicking like `print!`.
pub(crate) fn write_out(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

macro_rules! out {
    ($($arg:tt)*) => { write_out(&format!($($arg)*)) };
}

macro_rules! outln {
    ($($arg:tt)*) => { write_out(&(format!($($arg)*) + "\n")) };
}

#[derive(Debug, Subcommand)]
pub(crate) enum PolicyCommand {
    /// Validate a policy directory and summarize what it compiles to.
    Check(CheckArgs),
    /// Explain why a flow is allowed or denied.
    Explain(ExplainArgs),
    /// Show what changes between two policy versions (directories or git revisions).
    Plan(PlanArgs),
    /// List the device inventory with identity, mode and risk score.
    Devices(DevicesArgs),
    /// Each device's risk score, its factors and the security advisories (CSAF 2.0, CISA
    /// KEV) that apply to it.
    Risk(super::risk_cmds::RiskArgs),
    /// Print the compiled policy (for debugging): with `--output text`, every distinct
    /// allow-list, its entries and the devices it is enforced for; with `json`, all of it.
    Compile(CompileArgs),
}

#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// Policy directory (default: the configuration's `policy_dir` with `--config`, else
    /// `policies`). With `--config`, the configuration is checked too, and the policy
    /// against it (every interface of the policy configured, on the same side), as the
    /// daemon would at start.
    pub dir: Option<PathBuf>,
    /// Warnings fail the check too (exit 1), as errors do.
    #[arg(long)]
    pub deny_warnings: bool,
    /// More security advisories (CSAF 2.0, KEV: the `*.json` of this directory), checked
    /// with the policy as if they were in its `advisories/`: a feed kept outside the
    /// repository.
    #[arg(long, value_name = "DIR")]
    pub advisories: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct ExplainArgs {
    /// Policy directory (default: the configuration's `policy_dir` with `--config`, else
    /// `policies`).
    pub dir: Option<PathBuf>,
    /// Initiator: a device id or an IP address.
    #[arg(long)]
    pub from: String,
    /// Responder: a device id or an IP address.
    #[arg(long)]
    pub to: String,
    /// tcp, udp, icmp, icmpv6 or a protocol number.
    #[arg(long, default_value = "tcp")]
    pub proto: String,
    /// Destination port (tcp and udp).
    #[arg(long)]
    pub port: Option<u16>,
    /// Assume a device is quarantined: DEVICE=restrict or DEVICE=isolate (repeatable).
    #[arg(long = "quarantine", value_name = "DEVICE=STATE")]
    pub quarantine: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct PlanArgs {
    /// The old version: a directory or a git revision.
    pub old: String,
    /// The new version: a directory or a git revision.
    pub new: String,
    /// For git revisions: the policy directory inside the repository (relative to the
    /// current directory).
    #[arg(long, default_value = ".")]
    pub path: String,
    /// Exit 0 when nothing changes, 2 when something does, 1 on errors (as terraform plan
    /// does), instead of 0 for any plan that could be made.
    #[arg(long)]
    pub detailed_exitcode: bool,
}

#[derive(Debug, Args)]
pub(crate) struct DevicesArgs {
    /// Policy directory (default: the configuration's `policy_dir` with `--config`, else
    /// `policies`).
    pub dir: Option<PathBuf>,
    /// Compute patch ages as of this date (YYYY-MM-DD) instead of today.
    #[arg(long)]
    pub today: Option<String>,
    /// Ask the running daemon: live counters (packets, bytes, last seen) and quarantine.
    #[arg(long, conflicts_with = "unknown")]
    pub live: bool,
    /// Ask the running daemon for sources seen on device ports that are not in the inventory.
    #[arg(long)]
    pub unknown: bool,
    /// The daemon's control socket, with --live / --unknown (overrides the configuration
    /// file's).
    #[arg(long)]
    pub socket: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct CompileArgs {
    /// Policy directory (default: the configuration's `policy_dir` with `--config`, else
    /// `policies`).
    pub dir: Option<PathBuf>,
}

pub(crate) fn run(cmd: PolicyCommand, g: &Globals) -> Result<ExitCode> {
    match cmd {
        PolicyCommand::Check(a) => check(a, g.config.as_deref(), g.format("check")?),
        PolicyCommand::Explain(mut a) => {
            a.dir = Some(g.policy_dir(a.dir.take())?);
            explain_cmd(a, g.format("explain")?)
        }
        // With --detailed-exitcode, 2 means changes: every failure is 1, as terraform's.
        PolicyCommand::Plan(a) if a.detailed_exitcode => {
            match g.format("plan").and_then(|f| plan_cmd(a, f)) {
                Err(e) => {
                    eprintln!("error: {e:#}");
                    Ok(ExitCode::from(1))
                }
                ok => ok,
            }
        }
        PolicyCommand::Plan(a) => plan_cmd(a, g.format("plan")?),
        PolicyCommand::Devices(a) if a.live || a.unknown => {
            let what = if a.live {
                "devices --live"
            } else {
                "devices --unknown"
            };
            super::control_cmds::devices_from_daemon(
                &super::control_cmds::Target {
                    socket: a.socket.clone(),
                },
                g,
                a.unknown,
                what,
            )
        }
        PolicyCommand::Devices(mut a) => {
            a.dir = Some(g.policy_dir(a.dir.take())?);
            devices(a, g.output())
        }
        PolicyCommand::Compile(mut a) => {
            a.dir = Some(g.policy_dir(a.dir.take())?);
            compile_cmd(a, g.format("compile")?)
        }
        PolicyCommand::Risk(mut a) => {
            a.dir = Some(g.policy_dir(a.dir.take())?);
            super::risk_cmds::run(a, g.output())
        }
    }
}

// === Loading ===

/// A policy that failed: usage/I/O problems exit 2, policy problems exit 1.
fn failure_code(e: &PolicyErrors) -> ExitCode {
    let io = e.errors().all(|d| {
        matches!(
            d.problem,
            Problem::Io { .. } | Problem::NoPolicyFiles { .. }
        )
    });
    if io {
        ExitCode::from(2)
    } else {
        ExitCode::from(1)
    }
}

fn load(dir: &Path) -> std::result::Result<(Policy, Compiled), PolicyErrors> {
    policy::load_and_compile(dir)
}

/// `load`, with advisory files from outside the directory (`check --advisories`).
fn load_with(
    dir: &Path,
    extra: Vec<policy::SourceFile>,
) -> std::result::Result<(Policy, Compiled), PolicyErrors> {
    let mut files = policy::load::read_dir(dir)?;
    files.extend(extra);
    let p = policy::parse_sources(files)?;
    let (c, _) = policy::windows::compile_at(&p, policy::windows::now())?;
    Ok((p, c))
}

fn print_errors(e: &PolicyErrors, format: Format) {
    match format {
        Format::Text => eprint!("{}", e.render()),
        Format::Json => {
            let out = CheckJson {
                ok: false,
                errors: e
                    .diagnostics
                    .iter()
                    .filter(|d| d.severity() == Severity::Error)
                    .map(|d| d.to_json(&e.sources))
                    .collect(),
                warnings: e
                    .diagnostics
                    .iter()
                    .filter(|d| d.severity() == Severity::Warning)
                    .map(|d| d.to_json(&e.sources))
                    .collect(),
                summary: None,
                gateways: Vec::new(),
            };
            outln!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        }
    }
}

/// Loads or prints the errors and returns the exit code to use.
fn load_or_report(dir: &Path, format: Format) -> std::result::Result<(Policy, Compiled), ExitCode> {
    load(dir).map_err(|e| {
        print_errors(&e, format);
        failure_code(&e)
    })
}

// === check ===

#[derive(Serialize)]
struct CheckJson {
    ok: bool,
    errors: Vec<policy::diag::DiagnosticJson>,
    warnings: Vec<policy::diag::DiagnosticJson>,
    summary: Option<policy::Stats>,
    /// Each gateway of a fleet's policy and what it enforces.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    gateways: Vec<GatewayJson>,
}

#[derive(Serialize)]
struct GatewayJson {
    name: String,
    members: Vec<String>,
    interfaces: Vec<String>,
    devices: usize,
}

fn pct(n: usize, max: u32) -> String {
    let p = n as f64 * 100.0 / f64::from(max);
    if n > 0 && p < 0.1 {
        "<0.1%".to_string()
    } else {
        format!("{p:.1}%")
    }
}

/// The one-paragraph summary of a compiled policy.
pub(crate) fn summary(c: &Compiled) -> String {
    let s = &c.stats;
    let warnings = c.warnings.len();
    format!(
        "{name}: {devices} devices in {classes} classes, {workflows} workflows, {roles} roles; \
         {rules} rules compiled into {policies} distinct policies ({pclasses} peer classes). \
         Map entries: {devices} devices ({pd} of {md}), {ip4} IPv4 and {ip6} IPv6 device \
         addresses ({pa} of {ma}), {peer4} IPv4 and {peer6} IPv6 peer entries ({pp} of {mp}), \
         {ports} port entries ({pports} of {mports}), rule ids {pr} of {mr}. {warnings} warning{ws}.",
        name = c.site.name,
        devices = s.devices,
        classes = s.classes,
        workflows = s.workflows,
        roles = s.roles,
        rules = s.rules,
        policies = s.policies,
        pclasses = s.peer_classes,
        pd = pct(s.devices, abi::MAX_DEVICES),
        md = abi::MAX_DEVICES,
        ip4 = s.dev_ip4,
        ip6 = s.dev_ip6,
        pa = pct(s.dev_ip4.max(s.dev_ip6), abi::MAX_DEVICE_ADDRS),
        ma = abi::MAX_DEVICE_ADDRS,
        peer4 = s.peer4,
        peer6 = s.peer6,
        pp = pct(s.peer4.max(s.peer6), abi::MAX_PEER_ENTRIES),
        mp = abi::MAX_PEER_ENTRIES,
        ports = s.ports,
        pports = pct(s.ports, abi::MAX_PORT_ENTRIES),
        mports = abi::MAX_PORT_ENTRIES,
        pr = pct(s.rules, abi::MAX_RULES),
        mr = abi::MAX_RULES,
        ws = if warnings == 1 { "" } else { "s" },
    )
}

fn check(a: CheckArgs, config_file: Option<&Path>, format: Format) -> Result<ExitCode> {
    let config = match config_file {
        Some(path) => match lazaret::config::Config::load(path) {
            Ok(c) => Some(c),
            Err(e) => {
                super::config_cmds::report(&e);
                return Ok(super::config_cmds::failure_code(&e));
            }
        },
        None => None,
    };
    let dir = a
        .dir
        .clone()
        .or_else(|| config.as_ref().map(|c| c.policy_dir.clone()))
        .unwrap_or_else(|| PathBuf::from("policies"));
    let loaded = if a.advisories.is_empty() {
        load(&dir)
    } else {
        let mut extra = Vec::new();
        for d in &a.advisories {
            extra.extend(super::risk_cmds::advisory_files(d)?);
        }
        load_with(&dir, extra)
    };
    let (policy, compiled) = match loaded {
        Ok(x) => x,
        Err(e) => {
            print_errors(&e, format);
            return Ok(failure_code(&e));
        }
    };
    let sources = &policy.sources;
    let mismatches = config
        .as_ref()
        .map(|c| against_config(&policy, c))
        .unwrap_or_default();
    if !mismatches.is_empty() {
        match format {
            Format::Text => {
                for (at, message) in &mismatches {
                    eprintln!("{}: error: {}", sources.locate(*at), message);
                }
                eprintln!(
                    "{} problem{} between the policy and {}",
                    mismatches.len(),
                    if mismatches.len() == 1 { "" } else { "s" },
                    config_file.unwrap_or(Path::new("")).display()
                );
            }
            Format::Json => {
                let out = CheckJson {
                    ok: false,
                    errors: mismatches
                        .iter()
                        .map(|(at, message)| policy::diag::DiagnosticJson {
                            severity: policy::diag::Severity::Error,
                            location: Some(sources.locate(*at)),
                            message: message.clone(),
                            hint: None,
                            notes: Vec::new(),
                        })
                        .collect(),
                    warnings: Vec::new(),
                    summary: None,
                    gateways: Vec::new(),
                };
                outln!("{}", serde_json::to_string_pretty(&out)?);
            }
        }
        return Ok(ExitCode::from(1));
    }
    // `--deny-warnings`: a policy with warnings fails as one with errors does.
    let failed = a.deny_warnings && !compiled.warnings.is_empty();
    match format {
        Format::Text => {
            if !compiled.warnings.is_empty() {
                eprint!("{}", render_all(sources, &compiled.warnings));
            }
            outln!("{}", summary(&compiled));
            for gw in policy.site.gateways.values() {
                outln!("{}", gateway_summary(&compiled.for_gateway(gw), gw));
            }
            if failed {
                eprintln!(
                    "failed: {} warning{} and --deny-warnings",
                    compiled.warnings.len(),
                    if compiled.warnings.len() == 1 {
                        ""
                    } else {
                        "s"
                    }
                );
            }
        }
        Format::Json => {
            let out = CheckJson {
                ok: !failed,
                errors: Vec::new(),
                warnings: compiled
                    .warnings
                    .iter()
                    .map(|d| d.to_json(sources))
                    .collect(),
                summary: Some(compiled.stats.clone()),
                gateways: policy
                    .site
                    .gateways
                    .values()
                    .map(|gw| {
                        let view = compiled.for_gateway(gw);
                        GatewayJson {
                            name: gw.name.clone(),
                            members: gw.members.clone(),
                            interfaces: view.interfaces.iter().map(|i| i.name.clone()).collect(),
                            devices: view.devices.len(),
                        }
                    })
                    .collect(),
            };
            outln!("{}", serde_json::to_string_pretty(&out)?);
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// What the daemon would refuse at start: an interface of the policy that the
/// configuration does not list (as an interface or a bridge), or lists on another side.
fn against_config(
    policy: &Policy,
    config: &lazaret::config::Config,
) -> Vec<(lazaret::policy::source::Span, String)> {
    use lazaret::config::Side as ConfigSide;
    use lazaret::policy::model::Side as PolicySide;
    let mut out = Vec::new();
    let member = config.member();
    let serves =
        match lazaret::daemon::compiler::gateway(policy, (config.gateway.as_deref(), &member)) {
            Ok(gw) => gw.map(|g| &g.interfaces),
            Err(message) => {
                out.push((policy.site.span, message));
                return out;
            }
        };
    // A fleet's policy names every gateway's interfaces: this host serves its own.
    let ours = policy
        .site
        .interfaces
        .values()
        .filter(|i| serves.is_none_or(|s| s.contains(&i.name)));
    for iface in ours {
        let configured: Vec<ConfigSide> = config
            .interfaces
            .iter()
            .filter(|i| i.name == iface.name || i.bridge.as_deref() == Some(&iface.name))
            .map(|i| i.side)
            .collect();
        let wanted = match iface.side {
            PolicySide::Devices => ConfigSide::Devices,
            PolicySide::Upstream => ConfigSide::Upstream,
        };
        let name = lazaret::text::printable(&iface.name);
        if configured.is_empty() {
            out.push((
                iface.span,
                format!(
                    "interface `{name}` is not in the configuration's [[interfaces]] (nor a bridge of one): nothing would enforce on it"
                ),
            ));
        } else if configured.iter().any(|s| *s != wanted) {
            out.push((
                iface.span,
                format!(
                    "interface `{name}` faces {} in the policy but {} in the configuration",
                    side_name(wanted),
                    side_name(if wanted == ConfigSide::Devices {
                        ConfigSide::Upstream
                    } else {
                        ConfigSide::Devices
                    })
                ),
            ));
        }
    }
    out
}

/// One line per gateway of a fleet: what it enforces.
fn gateway_summary(view: &Compiled, gw: &lazaret::policy::model::Gateway) -> String {
    let members = if gw.members.is_empty() {
        String::new()
    } else {
        format!(" (members {})", gw.members.join(", "))
    };
    let interfaces: Vec<&str> = view.interfaces.iter().map(|i| i.name.as_str()).collect();
    format!(
        "gateway {}{members}: {} device{} on {}",
        gw.name,
        view.devices.len(),
        if view.devices.len() == 1 { "" } else { "s" },
        interfaces.join(", ")
    )
}

fn side_name(s: lazaret::config::Side) -> &'static str {
    match s {
        lazaret::config::Side::Devices => "devices",
        lazaret::config::Side::Upstream => "upstream",
    }
}

// === explain ===

fn parse_proto(p: &str) -> Result<u8> {
    Ok(match p {
        "tcp" => abi::PROTO_TCP,
        "udp" => abi::PROTO_UDP,
        "icmp" => abi::PROTO_ICMP,
        "icmpv6" => abi::PROTO_ICMPV6,
        n => n.parse().with_context(|| {
            format!("unknown protocol {n:?}: use tcp, udp, icmp, icmpv6 or 0-255")
        })?,
    })
}

fn explain_cmd(a: ExplainArgs, format: Format) -> Result<ExitCode> {
    let proto = parse_proto(&a.proto)?;
    let mut quarantine = BTreeMap::new();
    for q in &a.quarantine {
        let Some((dev, state)) = q.split_once('=') else {
            bail!("--quarantine takes DEVICE=restrict or DEVICE=isolate, not {q:?}");
        };
        let state = match state {
            "restrict" => abi::QUARANTINE_RESTRICT,
            "isolate" => abi::QUARANTINE_ISOLATE,
            "none" => abi::QUARANTINE_NONE,
            s => bail!("unknown quarantine state {s:?}: use restrict or isolate"),
        };
        quarantine.insert(dev.to_string(), state);
    }
    let (policy, compiled) =
        match load_or_report(a.dir.as_deref().unwrap_or(Path::new("policies")), format) {
            Ok(x) => x,
            Err(code) => return Ok(code),
        };
    let q = explain::Query {
        from: a.from,
        to: a.to,
        proto,
        port: a.port,
        quarantine,
    };
    let e = explain::explain(&policy, &compiled, &q)?;
    match format {
        Format::Text => out!("{}", e.render()),
        Format::Json => outln!("{}", serde_json::to_string_pretty(&e)?),
    }
    Ok(if e.verdict == "deny" {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

// === plan ===

/// A directory, or a git revision of the repository around the current directory,
/// compiled as written: its service windows are planned on their own (see `plan`), not
/// mixed into the devices' flows by the hour the plan runs.
fn load_version(spec: &str, path: &str) -> std::result::Result<(Policy, Compiled), PolicyErrors> {
    let cwd = PathBuf::from(".");
    let dir = Path::new(spec);
    if dir.is_dir() {
        let policy = policy::load_dir(dir)?;
        let compiled = policy::compile(&policy)?;
        return Ok((policy, compiled));
    }
    let io = |message: String| PolicyErrors {
        sources: Default::default(),
        diagnostics: vec![policy::Diagnostic::new(
            Problem::Io {
                path: spec.to_string(),
                message,
            },
            None,
        )],
    };
    if !git::is_revision(&cwd, spec) {
        return Err(io("neither a directory nor a git revision".to_string()));
    }
    let files = git::read_revision(&cwd, spec, path).map_err(|e| io(format!("{e:#}")))?;
    let policy = policy::parse_sources(files)?;
    let compiled = policy::compile(&policy)?;
    Ok((policy, compiled))
}

fn plan_cmd(a: PlanArgs, format: Format) -> Result<ExitCode> {
    let mut versions = Vec::new();
    for spec in [&a.old, &a.new] {
        match load_version(spec, &a.path) {
            Ok(v) => versions.push(v),
            Err(e) => {
                eprintln!("{spec}:");
                print_errors(&e, format);
                return Ok(if a.detailed_exitcode {
                    ExitCode::from(1)
                } else {
                    failure_code(&e)
                });
            }
        }
    }
    let (Some((np, nc)), Some((op, oc))) = (versions.pop(), versions.pop()) else {
        bail!("internal error: two versions expected");
    };
    let p = plan::plan(&op, &oc, &np, &nc);
    match format {
        Format::Text => out!("{}", p.render()),
        Format::Json => outln!("{}", serde_json::to_string_pretty(&p)?),
    }
    // A change of a gateway's own definition touches it with no device changed.
    let changed = !p.is_empty() || !p.gateways_touched.is_empty();
    Ok(if a.detailed_exitcode && changed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

// === devices ===

#[derive(Serialize)]
struct DeviceRow {
    id: String,
    class: String,
    mac: String,
    ipv4: String,
    ipv6: String,
    vlan: String,
    interface: String,
    mode: &'static str,
    risk: u8,
    risk_band: &'static str,
    life_critical: bool,
    location: String,
    vendor: String,
    model: String,
    firmware: String,
    last_patched: String,
    quarantine_action: &'static str,
    /// The ids of the advisories that apply (`lazaret risk` has the details).
    advisories: Vec<String>,
}

fn today() -> i64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    (secs / 86_400) as i64
}

fn devices(a: DevicesArgs, output: Output) -> Result<ExitCode> {
    let today = match &a.today {
        Some(t) => t
            .parse::<Date>()
            .map_err(|()| anyhow::anyhow!("--today: {t:?} is not YYYY-MM-DD"))?
            .days(),
        None => today(),
    };
    let format = if output == Output::Json {
        Format::Json
    } else {
        Format::Text
    };
    let (policy, _) =
        match load_or_report(a.dir.as_deref().unwrap_or(Path::new("policies")), format) {
            Ok(x) => x,
            Err(code) => return Ok(code),
        };
    let rows: Vec<DeviceRow> = policy
        .devices
        .iter()
        .map(|d| {
            let r = risk::score(&d.inventory, today, &policy.advisories.hits(&d.inventory));
            let join = |v: Vec<String>| v.join(" ");
            DeviceRow {
                id: d.id.clone(),
                class: d.class.clone().unwrap_or_default(),
                mac: d.mac.map(|m| m.to_string()).unwrap_or_default(),
                ipv4: join(
                    d.ipv4
                        .iter()
                        .map(std::string::ToString::to_string)
                        .collect(),
                ),
                ipv6: join(
                    d.ipv6
                        .iter()
                        .map(std::string::ToString::to_string)
                        .collect(),
                ),
                vlan: d.vlan.map_or("any".to_string(), |v| v.to_string()),
                interface: d.interface.clone().unwrap_or_else(|| "any".to_string()),
                mode: d.mode.name(),
                risk: r.score,
                risk_band: r.band,
                life_critical: d.inventory.life_critical,
                location: d.inventory.location.clone(),
                vendor: d.inventory.vendor.clone(),
                model: d.inventory.model.clone(),
                firmware: d.inventory.firmware.clone(),
                last_patched: d
                    .inventory
                    .last_patched
                    .map(|x| x.to_string())
                    .unwrap_or_default(),
                quarantine_action: d.quarantine.action.name(),
                advisories: r.advisories.iter().map(|h| h.id.clone()).collect(),
            }
        })
        .collect();
    match output {
        Output::Json => outln!("{}", serde_json::to_string_pretty(&rows)?),
        Output::Csv => {
            outln!("id,class,mac,ipv4,ipv6,vlan,interface,mode,risk,risk_band,life_critical,location,vendor,model,firmware,last_patched,quarantine_action,advisories");
            for r in &rows {
                let fields = [
                    r.id.clone(),
                    r.class.clone(),
                    r.mac.clone(),
                    r.ipv4.clone(),
                    r.ipv6.clone(),
                    r.vlan.clone(),
                    r.interface.clone(),
                    r.mode.to_string(),
                    r.risk.to_string(),
                    r.risk_band.to_string(),
                    r.life_critical.to_string(),
                    r.location.clone(),
                    r.vendor.clone(),
                    r.model.clone(),
                    r.firmware.clone(),
                    r.last_patched.clone(),
                    r.quarantine_action.to_string(),
                    r.advisories.join(" "),
                ];
                outln!(
                    "{}",
                    fields
                        .iter()
                        .map(|f| csv_field(f))
                        .collect::<Vec<_>>()
                        .join(",")
                );
            }
        }
        Output::Text => out!("{}", table(&rows)),
    }
    Ok(ExitCode::SUCCESS)
}

fn csv_field(f: &str) -> String {
    lazaret::text::csv_cell(f)
}

fn table(rows: &[DeviceRow]) -> String {
    let header = [
        "ID", "CLASS", "MAC", "IPV4", "IPV6", "VLAN", "IFACE", "MODE", "RISK", "LOCATION",
    ];
    let cells: Vec<[String; 10]> = rows
        .iter()
        .map(|r| {
            // Policy text: control characters escaped before they reach a terminal.
            [
                r.id.clone(),
                r.class.clone(),
                if r.mac.is_empty() {
                    "-".into()
                } else {
                    r.mac.clone()
                },
                if r.ipv4.is_empty() {
                    "-".into()
                } else {
                    r.ipv4.clone()
                },
                if r.ipv6.is_empty() {
                    "-".into()
                } else {
                    r.ipv6.clone()
                },
                r.vlan.clone(),
                r.interface.clone(),
                r.mode.to_string(),
                if r.advisories.is_empty() {
                    format!("{} {}", r.risk, r.risk_band)
                } else {
                    format!("{} {} ({})", r.risk, r.risk_band, r.advisories.join(", "))
                },
                r.location.clone(),
            ]
            .map(|c| lazaret::text::printable(&c).into_owned())
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: Vec<&str>| {
        let mut s = String::new();
        for (i, (c, w)) in cols.iter().zip(widths).enumerate() {
            if i + 1 == cols.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in &cells {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

// === compile ===

fn compile_cmd(a: CompileArgs, format: Format) -> Result<ExitCode> {
    let (_, compiled) =
        match load_or_report(a.dir.as_deref().unwrap_or(Path::new("policies")), format) {
            Ok(x) => x,
            Err(code) => return Ok(code),
        };
    match format {
        Format::Text => out!("{}", compiled_text(&compiled)),
        Format::Json => outln!("{}", serde_json::to_string_pretty(&compiled)?),
    }
    Ok(ExitCode::SUCCESS)
}

/// The compiled policy for people: each distinct allow-list with its entries (in the
/// datapath's terms: who opens, the peer prefix, protocol and ports, the rule) and the
/// devices it is enforced for, in full or while restricted.
fn compiled_text(c: &Compiled) -> String {
    use lazaret::text::printable;
    use std::fmt::Write as _;
    let mut full: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
    let mut restricted: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
    for d in &c.devices {
        full.entry(d.policy).or_default().push(&d.id);
        restricted.entry(d.restrict_policy).or_default().push(&d.id);
    }
    let list = |v: Option<&Vec<&str>>| {
        let v = v.map_or(&[][..], |v| &v[..]);
        let shown: Vec<&str> = v.iter().take(8).copied().collect();
        let more = v.len().saturating_sub(shown.len());
        let mut s = shown.join(", ");
        if more > 0 {
            let _ = write!(s, " and {more} more");
        }
        s
    };
    let mut out = format!("{}\n", summary(c));
    for p in c.policies.iter() {
        let mut users = Vec::new();
        if p.id == c.site.quarantine_policy {
            users.push("every isolated device (the site quarantine profile)".to_string());
        }
        if full.contains_key(&p.id) {
            users.push(format!("enforced for {}", list(full.get(&p.id))));
        }
        if restricted.contains_key(&p.id) {
            users.push(format!(
                "while restricted, for {}",
                list(restricted.get(&p.id))
            ));
        }
        if users.is_empty() {
            users.push("no device".into());
        }
        let _ = writeln!(
            out,
            "\npolicy {} ({} entr{}): {}",
            p.id,
            p.entries.len(),
            if p.entries.len() == 1 { "y" } else { "ies" },
            printable(&users.join("; "))
        );
        for e in &p.entries {
            let peer = e.peer.to_string();
            let arrow = match e.dir {
                policy::compiled::Dir::DeviceInit => format!("device -> {peer}"),
                policy::compiled::Dir::PeerInit => format!("{peer} -> device"),
            };
            let ports = match (e.proto.has_ports(), e.ports) {
                (true, Some(r)) => format!("/{r}"),
                (true, None) => "/any".into(),
                (false, _) => String::new(),
            };
            let origin = c
                .rules
                .get(e.rule as usize)
                .map_or(String::new(), |r| format!(" ({})", r.origin));
            let audit = if e.audit { " [audit]" } else { "" };
            let _ = writeln!(
                out,
                "  {arrow} {}{ports}  rule #{}{}{audit}",
                e.proto,
                e.rule,
                printable(&origin)
            );
        }
    }
    out
}
