//! Subcommands of the `lazaret` binary.

pub mod config_cmds;
pub mod control_cmds;
pub mod detach;
pub mod learn_cmds;
pub mod policy_cmds;
pub mod run;
