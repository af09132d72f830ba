//! lazaret: micro-segmentation gateway for hospital medical-device networks.
//!
//! - [`policy`]: the TOML policy language, its validation, the pure compiler into the
//!   datapath's map contents, and the reference classifier. No kernel, no I/O beyond reading
//!   the policy files.
//! - [`datapath`]: the XDP program embedded in this binary, loading it, filling its maps
//!   generation by generation, reading its counters.
//! - [`model`]: the datapath's twin on the host (frame parser, flow state) around the
//!   reference classifier, for differential tests and fuzzing.
//! - `fuzzing` (feature `fuzzing`, off in the shipped binary): the fuzz harnesses (`fuzz/`
//!   and `tests/tests/fuzz_corpus.rs` call them).
//! - [`dataplane`]: what the controller pushes to every dataplane alike.
//! - [`daemon`]: `lazaret run`: attach, pin, reload, serve.
//! - [`metrics`]: Prometheus metrics and the `/metrics` endpoint.
//! - [`config`]: the daemon's configuration file.
//! - [`text`]: outside text made safe to print.

pub mod config;
pub mod daemon;
pub mod datapath;
pub mod dataplane;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod metrics;
pub mod model;
pub mod nft;
pub mod policy;
pub mod text;
