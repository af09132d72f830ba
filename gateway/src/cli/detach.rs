//! `lazaret detach`: the explicit way to stop enforcing.

use std::{path::PathBuf, process::ExitCode};

use clap::Args;
use lazaret::{
    config::{Config, DEFAULT_PATH},
    daemon::detach_all,
};

#[derive(Debug, Args)]
pub struct DetachArgs {
    /// Configuration file (for the pin directory).
    #[arg(long, default_value = DEFAULT_PATH)]
    pub config: PathBuf,
}

pub fn run(args: DetachArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?;
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
    let nft = lazaret::nft::Nft::default();
    for family in lazaret::nft::dataplane::FAMILIES {
        for table in lazaret::nft::dataplane::TABLES {
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
