//! CLI commands that talk to the running daemon through its control socket.

use std::{collections::BTreeMap, path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{Args, Subcommand};
use lazaret::{
    config::{Config, DEFAULT_PATH},
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

#[derive(Debug, Args)]
pub(crate) struct Target {
    /// Configuration file of the daemon (for its control socket).
    #[arg(long, default_value = DEFAULT_PATH)]
    pub config: PathBuf,
    /// Control socket (overrides the configuration file).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Print the daemon's JSON reply.
    #[arg(long)]
    pub json: bool,
}

impl Target {
    fn socket(&self) -> anyhow::Result<PathBuf> {
        match &self.socket {
            Some(s) => Ok(s.clone()),
            None => Ok(Config::load(&self.config)?.control_socket),
        }
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
    /// was moved to another port on purpose).
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
fn send<T: DeserializeOwned>(target: &Target, request: Request) -> anyhow::Result<T> {
    let socket = target.socket()?;
    let reply =
        call(&socket, &request).with_context(|| format!("control socket {}", socket.display()))?;
    reply.into_typed().map_err(anyhow::Error::msg)
}

fn print<T: Serialize>(
    target: &Target,
    data: &T,
    human: impl FnOnce(&T) -> String,
) -> anyhow::Result<ExitCode> {
    if target.json {
        println!("{}", serde_json::to_string_pretty(data)?);
    } else {
        print!("{}", human(data));
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn status(target: Target) -> anyhow::Result<ExitCode> {
    let data: api::Status = send(&target, Request::Status {})?;
    print(&target, &data, |d| {
        let mut out = format!(
            "generation {} (commit {}), up {} s, {} devices, {} quarantined\n",
            d.generation,
            printable(d.commit.as_deref().unwrap_or("-")),
            d.uptime_seconds,
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
    })
}

/// `lazaret devices --live` and `--unknown`: the inventory as the running daemon sees it.
pub(crate) fn devices_from_daemon(
    config: &std::path::Path,
    socket: Option<PathBuf>,
    unknown: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let target = Target {
        config: config.to_path_buf(),
        socket,
        json,
    };
    if unknown {
        let data: Vec<UnknownDevice> = send(&target, Request::UnknownDevices {})?;
        return print(&target, &data, |d| {
            let mut out = format!(
                "{:<18} {:>5} {:>7}  {:<30} {:>11} {:>11}  FLOWS TRIED\n",
                "MAC", "VLAN", "IFINDEX", "ADDRESSES", "FIRST SEEN", "LAST SEEN"
            );
            for u in d {
                let addrs: Vec<String> = u.addresses.iter().map(ToString::to_string).collect();
                let flows: Vec<&str> = u.flows.iter().map(String::as_str).collect();
                out += &format!(
                    "{:<18} {:>5} {:>7}  {:<30} {:>11} {:>11}  {}\n",
                    printable(&u.mac),
                    u.vlan,
                    u.ifindex,
                    addrs.join(","),
                    u.first_seen,
                    u.last_seen,
                    printable(&flows.join("; "))
                );
            }
            out
        });
    }
    let data: Vec<api::Device> = send(&target, Request::Devices {})?;
    print(&target, &data, |d| {
        let mut out = format!(
            "{:<16} {:<20} {:<8} {:<10} {:>12} {:>12} {:>12} {:>12}\n",
            "ID",
            "CLASS",
            "MODE",
            "QUARANTINE",
            "ALLOWED PKT",
            "ALLOWED B",
            "DENIED PKT",
            "DENIED B"
        );
        for x in d {
            out += &format!(
                "{:<16} {:<20} {:<8} {:<10} {:>12} {:>12} {:>12} {:>12}\n",
                printable(&x.id),
                printable(x.class.as_deref().unwrap_or("-")),
                x.mode.name(),
                x.quarantine.map_or("-", Action::name),
                x.allowed_packets,
                x.allowed_bytes,
                x.denied_packets,
                x.denied_bytes
            );
        }
        out
    })
}

pub(crate) fn flows(device: String, target: Target) -> anyhow::Result<ExitCode> {
    let data: Vec<api::Flow> = send(
        &target,
        Request::Flows {
            device: device.clone(),
        },
    )?;
    print(&target, &data, |d| {
        let mut out = String::new();
        for f in d {
            out += &format!(
                "proto {:<3} {} <-> {}  opened by {}  {} ({} table)  rule {}\n",
                f.proto,
                f.a,
                f.b,
                match f.initiator {
                    api::End::A => "a",
                    api::End::B => "b",
                },
                f.state.name(),
                f.table.name(),
                f.rule
            );
        }
        if out.is_empty() {
            out = format!("no flows for {}\n", printable(&device));
        }
        out
    })
}

pub(crate) fn quarantine(cmd: QuarantineCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        QuarantineCommand::List { target } => {
            let data: BTreeMap<String, quarantine::Entry> =
                send(&target, Request::QuarantineList {})?;
            print(&target, &data, |d| {
                let mut out = String::new();
                for (dev, e) in d {
                    out += &format!(
                        "{}: {}{} since {} by {}: {}\n",
                        printable(dev),
                        e.action.name(),
                        if e.recovered { " (recovered)" } else { "" },
                        e.since,
                        printable(&e.by),
                        printable(&e.reason)
                    );
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
            let data: api::Quarantined = send(
                &target,
                Request::QuarantineAdd {
                    device,
                    action,
                    reason,
                },
            )?;
            print(&target, &data, |d| {
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
            let data: api::Released = send(&target, Request::QuarantineRelease { device, reason })?;
            print(&target, &data, |d| {
                format!("{}: released\n", printable(&d.device))
            })
        }
    }
}

pub(crate) fn pins(cmd: PinsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PinsCommand::List { target } => {
            let data: Vec<api::Pin> = send(&target, Request::Pins {})?;
            print(&target, &data, |d| {
                let mut out = String::new();
                for p in d {
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
            })
        }
        PinsCommand::Release {
            device,
            reason,
            target,
        } => {
            let data: api::Released = send(&target, Request::PinRelease { device, reason })?;
            print(&target, &data, |d| {
                format!(
                    "{}: pin released; the port it is next seen on pins it again\n",
                    printable(&d.device)
                )
            })
        }
    }
}

/// `lazaret events [--follow]`: recent events, then (following) new ones as they happen.
pub(crate) fn events(follow: bool, target: Target) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let socket = target.socket()?;
    let mut out = std::io::stdout().lock();
    follow_events(&socket, follow, |ev| {
        let text = if target.json {
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
