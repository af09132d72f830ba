//! `cargo xtask bench [GROUP] [--quick]`: every benchmark group in one report.

use anyhow::{bail, Result};

pub fn run(_groups: &[String], _quick: bool) -> Result<()> {
    bail!("benchmarks are not implemented yet")
}
