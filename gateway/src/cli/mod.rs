//! Subcommands of the `lazaret` binary.

pub mod policy_cmds;
