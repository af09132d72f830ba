//! CLI commands that talk to the running daemon through its control socket.

use std::{collections::BTreeMap, path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{Args, Subcommand};
use lazaret::{
    config::Config,
    daemon::{
        api,
        control::{call, follow_events, Request},
        events,
        quarantine::{self, Action},
        unknown::UnknownDevice,
    },
    text::printable,
};
use serde::{de::DeserializeOwned, Serialize};

use super::{Format, Globals};

/// Where the running daemon listens: `--socket`, or the control socket the configuration
/// file (`--config`) names.
#[derive(Debug, Args)]
pub(crate) struct Target {
    /// Control socket (overrides the configuration file's).
    #[arg(long)]
    pub socket: Option<PathBuf>,
}

/// A command to the running daemon: where it listens and how to print its reply.
pub(crate) struct Daemon {
    socket: PathBuf,
    format: Format,
}

impl Daemon {
    /// `command`'s daemon: its socket from `target` or the configuration, its output from
    /// `g` (text or JSON: the daemon's replies print no CSV).
    pub(crate) fn of(target: &Target, g: &Globals, command: &str) -> anyhow::Result<Daemon> {
        let format = g.format(command)?;
        let socket = match &target.socket {
            Some(s) => s.clone(),
            None => Config::load(&g.config())?.control_socket,
        };
        Ok(Daemon { socket, format })
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum QuarantineCommand {
    /// Quarantined devices.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Quarantine a device now.
    Add {
        device: String,
        #[arg(long, value_enum)]
        action: ActionArg,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        target: Target,
    },
    /// Release a device from quarantine.
    Release {
        device: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum PinsCommand {
    /// Devices pinned to the bridge port they were first seen on (or configured with
    /// `port`).
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Release a device's pin: the port it is next seen on pins it again (after a device
    /// was moved to another port on purpose). The addresses it owns by first use (a device
    /// known by its MAC alone) are released too: another device may use them at once.
    Release {
        device: String,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(crate) enum ActionArg {
    Alert,
    Restrict,
    Isolate,
}

/// Sends `request` and reads the reply as `T` (the type [`api`] pairs with the request).
fn send<T: DeserializeOwned>(d: &Daemon, request: Request) -> anyhow::Result<T> {
    let socket = &d.socket;
    let reply =
        call(socket, &request).with_context(|| format!("control socket {}", socket.display()))?;
    reply.into_typed().map_err(anyhow::Error::msg)
}

fn print<T: Serialize>(
    d: &Daemon,
    data: &T,
    human: impl FnOnce(&T) -> String,
) -> anyhow::Result<ExitCode> {
    if d.format == Format::Json {
        println!("{}", serde_json::to_string_pretty(data)?);
    } else {
        print!("{}", human(data));
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn status(target: &Target, g: &Globals) -> anyhow::Result<ExitCode> {
    let d = &Daemon::of(target, g, "status")?;
    let data: api::Status = send(d, Request::Status {})?;
    print(d, &data, status_text)
}

/// `lazaret status` for people.
fn status_text(d: &api::Status) -> String {
    let mut out = format!(
        "generation {} (commit {}), up {}, {} devices, {} quarantined\n",
        d.generation,
        printable(d.commit.as_deref().unwrap_or("-")),
        duration(d.uptime_seconds),
        d.devices,
        d.quarantined
    );
    out += match d.policy {
        api::PolicySource::Repository => "",
        api::PolicySource::LastKnownGood => {
            "policy: the LAST-KNOWN-GOOD from the state directory (the repository was refused at start)\n"
        }
        api::PolicySource::Pinned => {
            "policy: the generation pinned by an earlier run (the repository was refused at start)\n"
        }
        api::PolicySource::None => {
            "policy: NONE (the repository was refused at start and there is no last-known-good): device ports are held closed\n"
        }
    };
    if let Some(ha) = &d.ha {
        let vips: Vec<String> = ha
            .virtual_addresses
            .iter()
            .map(ToString::to_string)
            .collect();
        out += &format!(
            "role: {} (holds {} of the gateway addresses {}){}\n",
            ha.role.name().to_uppercase(),
            ha.held,
            vips.join(", "),
            if ha.role.decides() {
                ""
            } else {
                "; automatic quarantines are not carried out"
            }
        );
    }
    if !d.held.is_empty() {
        out += &format!("held closed: {}\n", printable(&d.held.join(", ")));
    }
    for (name, mode) in &d.interfaces {
        let name = printable(name);
        out += &match mode {
            api::InterfaceMode::Native => format!("  interface {name}: XDP native\n"),
            api::InterfaceMode::Skb => format!("  interface {name}: XDP skb (generic)\n"),
            api::InterfaceMode::Nftables => format!("  interface {name}: nftables\n"),
            api::InterfaceMode::Held => {
                format!("  interface {name}: HELD CLOSED (its dataplane is not on it)\n")
            }
            api::InterfaceMode::Detached => {
                format!("  interface {name}: DETACHED (nothing enforces)\n")
            }
        };
    }
    for m in &d.maps {
        out += &format!(
            "  map {:<12} {:>8} / {:<8} ({:.1} %)\n",
            m.map,
            m.entries,
            m.capacity,
            m.pressure * 100.0
        );
    }
    if let Some(e) = &d.last_reload_error {
        out += &format!(
            "last reload FAILED (the previous generation enforces):\n{}\n",
            printable(e)
        );
    }
    for (state, e) in &d.state_errors {
        out += &format!(
            "state {state} NOT PERSISTED (enforced, but a reboot would lose it): {}\n",
            printable(e)
        );
    }
    out
}

/// `lazaret devices --live` and `--unknown`: the inventory as the running daemon sees it.
pub(crate) fn devices_from_daemon(
    target: &Target,
    g: &Globals,
    unknown: bool,
    command: &str,
) -> anyhow::Result<ExitCode> {
    let d = &Daemon::of(target, g, command)?;
    if unknown {
        let data: Vec<UnknownDevice> = send(d, Request::UnknownDevices {})?;
        return print(d, &data, |d| unknown_table(d, interface_name));
    }
    let data: Vec<api::Device> = send(d, Request::Devices {})?;
    print(d, &data, |d| live_table(d, monotonic_ns()))
}

/// CLOCK_MONOTONIC now, in nanoseconds: the clock of the datapath's `last_seen_ns` (the
/// CLI runs on the daemon's host).
fn monotonic_ns() -> u64 {
    lazaret::clock_ns(libc::CLOCK_MONOTONIC)
}

/// How long ago a device was last seen, from CLOCK_MONOTONIC readings (`never` for 0).
fn ago(last_seen_ns: u64, now_ns: u64) -> String {
    if last_seen_ns == 0 {
        return "never".into();
    }
    let s = now_ns.saturating_sub(last_seen_ns) / 1_000_000_000;
    match s {
        0..=119 => format!("{s} s ago"),
        120..=7_199 => format!("{} min ago", s / 60),
        7_200..=172_799 => format!("{} h ago", s / 3_600),
        _ => format!("{} d ago", s / 86_400),
    }
}

/// `lazaret devices --live`: counters, quarantine and when each device was last seen.
fn live_table(d: &[api::Device], now_ns: u64) -> String {
    let mut out = format!(
        "{:<16} {:<20} {:<8} {:<10} {:>12} {:>12} {:>12} {:>12}  LAST SEEN\n",
        "ID", "CLASS", "MODE", "QUARANTINE", "ALLOWED PKT", "ALLOWED B", "DENIED PKT", "DENIED B"
    );
    for x in d {
        out += &format!(
            "{:<16} {:<20} {:<8} {:<10} {:>12} {:>12} {:>12} {:>12}  {}\n",
            printable(&x.id),
            printable(x.class.as_deref().unwrap_or("-")),
            x.mode.name(),
            x.quarantine.map_or("-", Action::name),
            x.allowed_packets,
            x.allowed_bytes,
            x.denied_packets,
            x.denied_bytes,
            ago(x.last_seen_ns, now_ns)
        );
    }
    out
}

pub(crate) fn flows(device: String, target: &Target, g: &Globals) -> anyhow::Result<ExitCode> {
    let d = &Daemon::of(target, g, "flows")?;
    let data: Vec<api::Flow> = send(
        d,
        Request::Flows {
            device: device.clone(),
        },
    )?;
    print(d, &data, |d| {
        let mut out: String = d.iter().map(flow_line).collect();
        if out.is_empty() {
            out = format!("no flows for {}\n", printable(&device));
        }
        out
    })
}

/// The interface `ifindex` names on this host (the CLI runs where the daemon does), or
/// `#ifindex` when it names none here.
fn interface_name(ifindex: u32) -> String {
    nix::net::if_::if_indextoname(ifindex)
        .ok()
        .and_then(|n| n.into_string().ok())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| format!("#{ifindex}"))
}

/// `lazaret devices --unknown`: times in UTC and interfaces by name.
fn unknown_table(d: &[UnknownDevice], name_of: impl Fn(u32) -> String) -> String {
    let mut out = format!(
        "{:<18} {:<28} {:>5} {:<12} {:<30} {:<23} {:<23} FLOWS TRIED\n",
        "MAC", "VENDOR", "VLAN", "INTERFACE", "ADDRESSES", "FIRST SEEN", "LAST SEEN"
    );
    for u in d {
        let addrs: Vec<String> = u.addresses.iter().map(ToString::to_string).collect();
        let flows: Vec<&str> = u.flows.iter().map(String::as_str).collect();
        out += &format!(
            "{:<18} {:<28} {:>5} {:<12} {:<30} {:<23} {:<23} {}\n",
            printable(&u.mac),
            lazaret::daemon::events::vendor_text(u.vendor.as_deref(), u.randomized),
            u.vlan,
            printable(&name_of(u.ifindex)),
            addrs.join(","),
            utc(u.first_seen),
            utc(u.last_seen),
            printable(&flows.join("; "))
        );
    }
    out
}

/// One flow of `lazaret flows`: the opener first, so the arrow reads the way the
/// connection was made (`tcp 10.20.0.11:40312 -> 10.10.1.20:2575`).
fn flow_line(f: &api::Flow) -> String {
    let (from, to) = match f.initiator {
        api::End::A => (&f.a, &f.b),
        api::End::B => (&f.b, &f.a),
    };
    format!(
        "{:<6} {} -> {}  {} ({} table)  rule {}\n",
        lazaret::policy::model::Proto::from_number(f.proto).to_string(),
        printable(from),
        printable(to),
        f.state.name(),
        f.table.name(),
        f.rule
    )
}

/// Unix seconds as a UTC time people read (`2026-12-04 17:46:47 UTC`).
fn utc(unix_s: u64) -> String {
    match chrono::DateTime::from_timestamp(i64::try_from(unix_s).unwrap_or(i64::MAX), 0) {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        None => format!("{unix_s} (Unix seconds)"),
    }
}

/// One quarantine of `lazaret quarantine list`, with its times in UTC.
fn quarantine_line(device: &str, e: &quarantine::Entry) -> String {
    let until = e
        .until
        .map_or(String::new(), |u| format!(" until {}", utc(u)));
    format!(
        "{}: {}{} since {}{until} by {}: {}\n",
        printable(device),
        e.action.name(),
        if e.recovered { " (recovered)" } else { "" },
        utc(e.since),
        printable(&e.by),
        printable(&e.reason)
    )
}

pub(crate) fn quarantine(cmd: QuarantineCommand, g: &Globals) -> anyhow::Result<ExitCode> {
    match cmd {
        QuarantineCommand::List { target } => {
            let d = &Daemon::of(&target, g, "quarantine list")?;
            let data: BTreeMap<String, quarantine::Entry> = send(d, Request::QuarantineList {})?;
            print(d, &data, |d| {
                let mut out = String::new();
                for (dev, e) in d {
                    out += &quarantine_line(dev, e);
                }
                if out.is_empty() {
                    out = "no device is quarantined\n".into();
                }
                out
            })
        }
        QuarantineCommand::Add {
            device,
            action,
            reason,
            target,
        } => {
            let action = match action {
                ActionArg::Alert => Action::Alert,
                ActionArg::Restrict => Action::Restrict,
                ActionArg::Isolate => Action::Isolate,
            };
            let d = &Daemon::of(&target, g, "quarantine add")?;
            let data: api::Quarantined = send(
                d,
                Request::QuarantineAdd {
                    device,
                    action,
                    reason,
                },
            )?;
            print(d, &data, |d| {
                format!(
                    "{}: quarantined ({})\n",
                    printable(&d.device),
                    d.action.name()
                )
            })
        }
        QuarantineCommand::Release {
            device,
            reason,
            target,
        } => {
            let d = &Daemon::of(&target, g, "quarantine release")?;
            let data: api::Released = send(d, Request::QuarantineRelease { device, reason })?;
            print(d, &data, |d| {
                format!("{}: released\n", printable(&d.device))
            })
        }
    }
}

pub(crate) fn pins(cmd: PinsCommand, g: &Globals) -> anyhow::Result<ExitCode> {
    match cmd {
        PinsCommand::List { target } => {
            let d = &Daemon::of(&target, g, "pins list")?;
            let data: Vec<api::Pin> = send(d, Request::Pins {})?;
            print(d, &data, |d| pins_text(d))
        }
        PinsCommand::Release {
            device,
            reason,
            target,
        } => {
            let d = &Daemon::of(&target, g, "pins release")?;
            let data: api::Released = send(d, Request::PinRelease { device, reason })?;
            print(d, &data, |d| {
                let mut out = String::new();
                if d.pin != Some(false) {
                    out += &format!(
                        "{}: pin released; the port it is next seen on pins it again\n",
                        printable(&d.device)
                    );
                }
                if let Some(n @ 1..) = d.addresses {
                    out += &format!(
                        "{}: {n} address(es) it owned by first use released; the next device to use one owns it\n",
                        printable(&d.device)
                    );
                }
                out
            })
        }
    }
}

/// `lazaret pins list` for people.
fn pins_text(pins: &[api::Pin]) -> String {
    let mut out = String::new();
    for p in pins {
        out += &format!(
            "{} ({}): pinned to port {}\n",
            printable(p.device.as_deref().unwrap_or("not in the policy")),
            printable(&p.mac),
            printable(&p.port),
        );
    }
    if out.is_empty() {
        out = "no device is pinned to a bridge port\n".into();
    }
    out
}

/// A span of seconds as people say it: `42 s`, `17 min`, `5 h 12 min`, `3 d 4 h`.
fn duration(s: u64) -> String {
    match s {
        0..=119 => format!("{s} s"),
        120..=7_199 => format!("{} min", s / 60),
        7_200..=172_799 => format!("{} h {} min", s / 3_600, s % 3_600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3_600),
    }
}

/// `lazaret events [--follow]`: recent events, then (following) new ones as they happen.
pub(crate) fn events(follow: bool, target: &Target, g: &Globals) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let d = Daemon::of(target, g, "events")?;
    let socket = d.socket.clone();
    let mut out = std::io::stdout().lock();
    follow_events(&socket, follow, |ev| {
        let text = if d.format == Format::Json {
            ev.to_string()
        } else {
            match serde_json::from_value::<events::Record>(ev.clone()) {
                Ok(record) => events::human(&record),
                Err(_) => format!("(an event this lazaret cannot read: {ev})"),
            }
        };
        // A closed pipe (`lazaret events -f | head`) ends the stream quietly.
        writeln!(out, "{text}").is_ok() && out.flush().is_ok()
    })
    .with_context(|| format!("control socket {}", socket.display()))?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flow_reads_from_its_opener_with_the_protocol_named() {
        let f = api::Flow {
            proto: 6,
            a: "10.10.1.20:2575".into(),
            b: "10.20.0.11:40312".into(),
            initiator: api::End::B,
            state: api::FlowState::Established,
            table: lazaret::policy::twin::FlowTable::Established,
            rule: 7,
        };
        assert_eq!(
            flow_line(&f),
            "tcp    10.20.0.11:40312 -> 10.10.1.20:2575  established (established table)  rule 7\n"
        );
        let other = api::Flow {
            proto: 132,
            initiator: api::End::A,
            ..f
        };
        assert!(
            flow_line(&other).starts_with("proto 132 10.10.1.20:2575 -> 10.20.0.11:40312"),
            "{}",
            flow_line(&other)
        );
    }

    #[test]
    fn an_unknown_device_shows_its_interface_by_name_and_its_times_in_utc() {
        let u = UnknownDevice {
            mac: "02:00:00:00:00:99".into(),
            vlan: 20,
            ifindex: 7,
            addresses: ["10.20.0.99"
                .parse()
                .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into())]
            .into(),
            first_seen: 1_764_870_407,
            last_seen: 1_764_870_467,
            flows: ["tcp 10.10.1.20:2575".to_string()].into(),
            packets_reported: 3,
            vendor: None,
            randomized: true,
        };
        let text = unknown_table(&[u], |i| {
            if i == 7 {
                "icu0".into()
            } else {
                format!("#{i}")
            }
        });
        let row = text.lines().nth(1).unwrap_or_default();
        for part in [
            "02:00:00:00:00:99",
            " randomized ",
            " icu0 ",
            "2025-12-04 17:46:47 UTC",
            "2025-12-04 17:47:47 UTC",
            "tcp 10.10.1.20:2575",
        ] {
            assert!(row.contains(part), "{part:?} not in {row:?}");
        }
        assert_eq!(interface_name(u32::MAX), format!("#{}", u32::MAX));
    }

    #[test]
    fn live_devices_say_when_they_were_last_seen() {
        let s = 1_000_000_000;
        assert_eq!(ago(0, 500 * s), "never");
        assert_eq!(ago(495 * s, 500 * s), "5 s ago");
        assert_eq!(ago(100 * s, 500 * s), "6 min ago");
        assert_eq!(ago(s, 10_000 * s), "2 h ago");
        assert_eq!(ago(s, 900_000 * s), "10 d ago");
        let d = api::Device {
            id: "mon-icu-01".into(),
            class: Some("patient-monitor".into()),
            mode: lazaret::policy::model::Mode::Enforce,
            ipv4: Vec::new(),
            ipv6: Vec::new(),
            quarantine: None,
            allowed_packets: 10,
            allowed_bytes: 1_000,
            denied_packets: 0,
            denied_bytes: 0,
            last_seen_ns: 480 * s,
        };
        let table = live_table(&[d], 500 * s);
        assert!(
            table
                .lines()
                .next()
                .unwrap_or_default()
                .ends_with("LAST SEEN"),
            "{table}"
        );
        assert!(
            table
                .lines()
                .nth(1)
                .unwrap_or_default()
                .ends_with("20 s ago"),
            "{table}"
        );
        assert!(monotonic_ns() > 0);
    }

    /// The daemon commands' text and JSON for a member of a pair with a held interface, a
    /// failed reload and full-ish maps; and pins. (Flows, quarantines and the device tables
    /// have their own tests above.) Snapshots in `src/cli/snapshots/`.
    #[test]
    fn daemon_command_output() {
        let status = api::Status {
            generation: 42,
            commit: Some("9f1c2ab".into()),
            uptime_seconds: 3 * 86_400 + 4 * 3_600 + 17,
            policy_dir: "/etc/lazaret/policies".into(),
            policy: api::PolicySource::Repository,
            interfaces: [
                ("icu0".to_string(), api::InterfaceMode::Native),
                ("pumps0".to_string(), api::InterfaceMode::Held),
                ("wan0".to_string(), api::InterfaceMode::Skb),
            ]
            .into(),
            devices: 10,
            quarantined: 1,
            held: vec!["pumps0".into()],
            last_reload_error: Some("policies/site.toml:3:1: error: unknown key `sight`".into()),
            state_errors: BTreeMap::new(),
            maps: vec![api::MapUsage {
                map: "LZ_FLOWS".into(),
                entries: 52_000,
                capacity: 65_536,
                pressure: 52_000.0 / 65_536.0,
            }],
            ha: Some(api::HaStatus {
                role: lazaret::daemon::ha::Role::Standby,
                virtual_addresses: vec![
                    std::net::Ipv4Addr::new(10, 20, 0, 1).into(),
                    std::net::Ipv4Addr::new(10, 10, 0, 1).into(),
                ],
                held: 0,
            }),
        };
        insta::assert_snapshot!("status_text", status_text(&status));
        let json = serde_json::to_string_pretty(&status).unwrap_or_default();
        insta::assert_snapshot!("status_json", json);
        let pins = [api::Pin {
            device: Some("pump-icu-01".into()),
            mac: "00:1a:2b:30:00:11".into(),
            port: "br-pumps/veth7".into(),
        }];
        insta::assert_snapshot!("pins_text", pins_text(&pins));
        insta::assert_snapshot!("pins_none_text", pins_text(&[]));
        assert_eq!(duration(59), "59 s");
        assert_eq!(duration(600), "10 min");
        assert_eq!(duration(2 * 3_600 + 61), "2 h 1 min");
    }

    #[test]
    fn a_quarantine_shows_its_times_in_utc() {
        let e = quarantine::Entry {
            action: Action::Isolate,
            reason: "INC-4711".into(),
            by: "alice via root (uid 0)".into(),
            since: 1_764_870_407,
            until: Some(1_764_874_007),
            recovered: false,
        };
        assert_eq!(
            quarantine_line("pump-depot-01", &e),
            "pump-depot-01: isolate since 2025-12-04 17:46:47 UTC until 2025-12-04 18:46:47 UTC by alice via root (uid 0): INC-4711\n"
        );
    }
}
