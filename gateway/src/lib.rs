//! lazaret: micro-segmentation gateway for hospital medical-device networks.
//!
//! - [`policy`]: the TOML policy language, its validation, the pure compiler into the
//!   datapath's map contents, and the reference classifier. No kernel, no I/O beyond reading
//!   the policy files.
//! - [`datapath`]: the XDP program embedded in this binary, loading it, filling its maps
//!   generation by generation, reading its counters.
//! - [`config`]: the daemon's configuration file.

pub mod config;
pub mod datapath;
pub mod policy;
