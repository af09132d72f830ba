//! Subcommands of the `lazaret` binary.

pub(crate) mod config_cmds;
pub(crate) mod control_cmds;
pub(crate) mod detach;
pub(crate) mod learn_cmds;
pub(crate) mod policy_cmds;
pub(crate) mod run;
