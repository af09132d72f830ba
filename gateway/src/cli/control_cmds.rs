//! CLI commands that talk to the running daemon through its control socket.

use std::{path::PathBuf, process::ExitCode};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use lazaret::{
    config::{Config, DEFAULT_PATH},
    daemon::{
        control::{call, follow_events, Request},
        events,
        quarantine::Action,
    },
    text::printable,
};

#[derive(Debug, Args)]
pub struct Target {
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
pub enum QuarantineCommand {
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
pub enum PinsCommand {
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
pub enum ActionArg {
    Alert,
    Restrict,
    Isolate,
}

fn send(target: &Target, request: Request) -> anyhow::Result<serde_json::Value> {
    let socket = target.socket()?;
    let reply =
        call(&socket, &request).with_context(|| format!("control socket {}", socket.display()))?;
    if !reply.ok {
        bail!(
            "{}",
            reply
                .error
                .unwrap_or_else(|| "the daemon refused the request".into())
        );
    }
    Ok(reply.data.unwrap_or(serde_json::Value::Null))
}

fn print(
    target: &Target,
    data: &serde_json::Value,
    human: impl FnOnce(&serde_json::Value) -> String,
) -> anyhow::Result<ExitCode> {
    if target.json {
        println!("{}", serde_json::to_string_pretty(data)?);
    } else {
        print!("{}", human(data));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn status(target: Target) -> anyhow::Result<ExitCode> {
    let data = send(&target, Request::Status {})?;
    print(&target, &data, |d| {
        let mut out = format!(
            "generation {} (commit {}), up {} s, {} devices, {} quarantined\n",
            d["generation"],
            d["commit"].as_str().unwrap_or("-"),
            d["uptime_seconds"],
            d["devices"],
            d["quarantined"]
        );
        match d["policy"].as_str() {
            Some("last_known_good") => {
                out += "policy: the LAST-KNOWN-GOOD from the state directory (the repository was refused at start)\n"
            }
            Some("pinned") => {
                out += "policy: the generation pinned by an earlier run (the repository was refused at start)\n"
            }
            Some("none") => {
                out += "policy: NONE (the repository was refused at start and there is no last-known-good): device ports are held closed\n"
            }
            _ => {}
        }
        if let Some(held) = d["held"].as_array().filter(|h| !h.is_empty()) {
            let names: Vec<&str> = held.iter().filter_map(|h| h.as_str()).collect();
            out += &format!("held closed: {}\n", printable(&names.join(", ")));
        }
        if let Some(ifaces) = d["interfaces"].as_object() {
            for (name, mode) in ifaces {
                out += &match mode.as_str().unwrap_or("?") {
                    m @ ("nftables" | "detached") => format!("  interface {name}: {m}\n"),
                    m => format!("  interface {name}: XDP {m}\n"),
                };
            }
        }
        if let Some(maps) = d["maps"].as_array() {
            for m in maps {
                out += &format!(
                    "  map {:<12} {:>8} / {:<8} ({:.1} %)\n",
                    m["map"].as_str().unwrap_or("?"),
                    m["entries"],
                    m["capacity"],
                    m["pressure"].as_f64().unwrap_or(0.0) * 100.0
                );
            }
        }
        if let Some(e) = d["last_reload_error"].as_str() {
            out += &format!(
                "last reload FAILED (the previous generation enforces):\n{}\n",
                printable(e)
            );
        }
        for (state, e) in d["state_errors"].as_object().into_iter().flatten() {
            out += &format!(
                "state {state} NOT PERSISTED (enforced, but a reboot would lose it): {}\n",
                printable(e.as_str().unwrap_or("?"))
            );
        }
        out
    })
}

/// `lazaret devices --live` and `--unknown`: the inventory as the running daemon sees it.
pub fn devices_from_daemon(
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
        let data = send(&target, Request::UnknownDevices {})?;
        return print(&target, &data, |d| {
            let mut out = format!(
                "{:<18} {:>5} {:>7}  {:<30} {:>11} {:>11}  FLOWS TRIED\n",
                "MAC", "VLAN", "IFINDEX", "ADDRESSES", "FIRST SEEN", "LAST SEEN"
            );
            for u in d.as_array().into_iter().flatten() {
                let addrs: Vec<&str> = u["addresses"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a.as_str())
                    .collect();
                let flows: Vec<&str> = u["flows"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a.as_str())
                    .collect();
                out += &format!(
                    "{:<18} {:>5} {:>7}  {:<30} {:>11} {:>11}  {}\n",
                    u["mac"].as_str().unwrap_or("?"),
                    u["vlan"].to_string(),
                    u["ifindex"].to_string(),
                    addrs.join(","),
                    u["first_seen"].to_string(),
                    u["last_seen"].to_string(),
                    flows.join("; ")
                );
            }
            out
        });
    }
    let data = send(&target, Request::Devices {})?;
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
        for x in d.as_array().into_iter().flatten() {
            out += &format!(
                "{:<16} {:<20} {:<8} {:<10} {:>12} {:>12} {:>12} {:>12}\n",
                x["id"].as_str().unwrap_or("?"),
                x["class"].as_str().unwrap_or("-"),
                x["mode"].as_str().unwrap_or("?"),
                x["quarantine"].as_str().unwrap_or("-"),
                x["allowed_packets"].to_string(),
                x["allowed_bytes"].to_string(),
                x["denied_packets"].to_string(),
                x["denied_bytes"].to_string()
            );
        }
        out
    })
}

pub fn flows(device: String, target: Target) -> anyhow::Result<ExitCode> {
    let data = send(
        &target,
        Request::Flows {
            device: device.clone(),
        },
    )?;
    print(&target, &data, |d| {
        let mut out = String::new();
        for f in d.as_array().into_iter().flatten() {
            out += &format!(
                "proto {:<3} {} <-> {}  opened by {}  {} ({} table)  rule {}\n",
                f["proto"],
                f["a"].as_str().unwrap_or("?"),
                f["b"].as_str().unwrap_or("?"),
                f["initiator"].as_str().unwrap_or("?"),
                f["state"].as_str().unwrap_or("?"),
                f["table"].as_str().unwrap_or("?"),
                f["rule"]
            );
        }
        if out.is_empty() {
            out = format!("no flows for {device}\n");
        }
        out
    })
}

pub fn quarantine(cmd: QuarantineCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        QuarantineCommand::List { target } => {
            let data = send(&target, Request::QuarantineList {})?;
            print(&target, &data, |d| {
                let mut out = String::new();
                for (dev, e) in d.as_object().into_iter().flatten() {
                    out += &format!(
                        "{}: {}{} since {} by {}: {}\n",
                        printable(dev),
                        e["action"].as_str().unwrap_or("?"),
                        if e["recovered"].as_bool() == Some(true) {
                            " (recovered)"
                        } else {
                            ""
                        },
                        e["since"],
                        printable(e["by"].as_str().unwrap_or("?")),
                        printable(e["reason"].as_str().unwrap_or(""))
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
            let data = send(
                &target,
                Request::QuarantineAdd {
                    device: device.clone(),
                    action,
                    reason,
                },
            )?;
            print(&target, &data, |_| {
                format!("{device}: quarantined ({})\n", action.name())
            })
        }
        QuarantineCommand::Release {
            device,
            reason,
            target,
        } => {
            let data = send(
                &target,
                Request::QuarantineRelease {
                    device: device.clone(),
                    reason,
                },
            )?;
            print(&target, &data, |_| format!("{device}: released\n"))
        }
    }
}

pub fn pins(cmd: PinsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PinsCommand::List { target } => {
            let data = send(&target, Request::Pins {})?;
            print(&target, &data, |d| {
                let mut out = String::new();
                for p in d.as_array().into_iter().flatten() {
                    out += &format!(
                        "{} ({}): pinned to port {}\n",
                        lazaret::text::printable(
                            p["device"].as_str().unwrap_or("not in the policy")
                        ),
                        p["mac"].as_str().unwrap_or("?"),
                        lazaret::text::printable(p["port"].as_str().unwrap_or("?")),
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
            let data = send(
                &target,
                Request::PinRelease {
                    device: device.clone(),
                    reason,
                },
            )?;
            print(&target, &data, |_| {
                format!("{device}: pin released; the port it is next seen on pins it again\n")
            })
        }
    }
}

/// `lazaret events [--follow]`: recent events, then (following) new ones as they happen.
pub fn events(follow: bool, target: Target) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let socket = target.socket()?;
    let mut out = std::io::stdout().lock();
    follow_events(&socket, follow, |ev| {
        let text = if target.json {
            ev.to_string()
        } else {
            events::human(&ev)
        };
        // A closed pipe (`lazaret events -f | head`) ends the stream quietly.
        writeln!(out, "{text}").is_ok() && out.flush().is_ok()
    })
    .with_context(|| format!("control socket {}", socket.display()))?;
    Ok(ExitCode::SUCCESS)
}
