//! `lazaret run`: the controller daemon.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use lazaret::{
    config::{Config, LogFormat},
    daemon::{self, preflight},
};

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Log format (overrides the configuration file).
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormatArg>,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(crate) enum LogFormatArg {
    Text,
    Json,
}

pub(crate) fn run(args: RunArgs, g: &super::Globals) -> anyhow::Result<ExitCode> {
    g.text_only("run (its logs: --log-format)")?;
    let config = Config::load(&g.config())?;
    let format = match args.log_format {
        Some(LogFormatArg::Json) => LogFormat::Json,
        Some(LogFormatArg::Text) => LogFormat::Text,
        None => config.log_format,
    };
    init_logging(format);
    // Files the daemon creates (state, audit log, ready file, control socket before its
    // chmod) are never writable by others, whatever umask it was started with.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o027));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        preflight::check(&config)?;
        daemon::run(config, daemon::Deps::host(), std::future::pending()).await?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LAZARET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal: journald, files and SIEM pipelines get plain
    // text (escape codes there are noise, or worse, interpreted by whoever reads them).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
