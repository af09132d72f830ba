//! Subcommands of the `lazaret` binary.

pub mod detach;
pub mod policy_cmds;
pub mod run;
