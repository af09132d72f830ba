//! `lazaret detach`: the explicit way to stop enforcing.

use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;
use lazaret::{
    config::Config,
    daemon::{
        control::{call, Request},
        detach_all,
    },
};

#[derive(Debug, Args)]
pub(crate) struct DetachArgs {
    /// Detach although the daemon is running: it is told to stop enforcing (and stops
    /// restoring enforcement) until it is restarted.
    #[arg(long)]
    pub force: bool,
    /// Why (kept in the daemon's audit log).
    #[arg(long, default_value = "lazaret detach")]
    pub reason: String,
}

pub(crate) fn run(args: DetachArgs, g: &super::Globals) -> anyhow::Result<ExitCode> {
    g.text_only("detach")?;
    let config = Config::load(&g.config())?;
    // A running daemon treats a detach behind its back as tampering and restores
    // enforcement within a second: it is asked instead, and only with --force.
    let running = call(&config.control_socket, &Request::Status {}).is_ok();
    if running && !args.force {
        bail!(
            "lazaret is running (control socket {}) and restores enforcement it did not remove. \
             Stop it first (`systemctl stop lazaret`: the pinned datapath keeps enforcing, then \
             `lazaret detach`), or `lazaret detach --force` to tell it to stop enforcing until it \
             is restarted",
            config.control_socket.display()
        );
    }
    if running {
        let reply = call(
            &config.control_socket,
            &Request::Detach {
                reason: args.reason.clone(),
            },
        )
        .context("asking the running daemon to detach")?;
        let reply: lazaret::daemon::api::Detached = reply
            .into_typed()
            .map_err(|e| anyhow::anyhow!("the running daemon refused to detach: {e}"))?;
        println!(
            "the running daemon stopped enforcing ({}) and reports those interfaces detached until it is restarted",
            lazaret::text::printable(&reply.detached.join(", "))
        );
    }
    let removed = detach_all(&config.pin_dir)?;
    if removed.is_empty() {
        println!(
            "nothing pinned under {}: lazaret was not enforcing",
            config.pin_dir.display()
        );
    } else {
        println!(
            "removed {} pinned links and maps under {}: XDP is detached and lazaret no longer enforces",
            removed.len(),
            config.pin_dir.display()
        );
    }
    // The nftables dataplane's table, which also outlives the daemon. With `dataplane =
    // "xdp"` a table left by an earlier nftables run is removed too, if nft is there.
    let nft = lazaret::dataplane::nft::Nft::default();
    for family in lazaret::dataplane::nft::dataplane::FAMILIES {
        for table in lazaret::dataplane::nft::dataplane::TABLES {
            match nft.has_table(family, table) {
                Ok(true) => {
                    nft.delete(family, table)?;
                    println!(
                        "removed the nftables table {} {table}: nftables no longer enforces",
                        family.name()
                    );
                }
                Ok(false) => {}
                Err(e) if config.dataplane != lazaret::config::Dataplane::Xdp => {
                    return Err(e.into())
                }
                Err(_) => {}
            }
        }
    }
    // An interface hold a daemon left behind (it stopped while an interface was gone): the
    // hold is lifted like everything else. Without nft there is none.
    let _ = nft.hold(&Default::default());
    Ok(ExitCode::SUCCESS)
}
