//! lazaret: micro-segmentation gateway for hospital medical-device networks.
//!
//! - [`policy`]: the pure policy core, crate `lazaret-policy` (re-exported): the TOML policy
//!   language, its validation, the compiler into the datapath's map contents, the reference
//!   classifier and the datapath's twin on the host (`policy::twin`). No kernel, no I/O beyond
//!   reading the policy files.
//! - `fuzzing` (feature `fuzzing`, off in the shipped binary): the fuzz harnesses (`fuzz/`
//!   and `tests/tests/fuzz_corpus.rs` call them).
//! - [`dataplane`]: the two dataplanes behind one seam: `dataplane::xdp` (the XDP program
//!   embedded in this binary, loading it, filling its maps generation by generation, reading
//!   its counters) and `dataplane::nft` (the same compiled policy as nftables tables).
//! - [`daemon`]: `lazaret run`: attach, pin, reload, serve.
//! - [`metrics`]: Prometheus metrics and the `/metrics` endpoint.
//! - [`config`]: the daemon's configuration file.
//! - [`import`]: `lazaret import`: inventories held elsewhere (a CMMS export) written into
//!   the policy repository as reviewable edits.
//! - [`text`]: outside text made safe to print (from the policy core).

pub mod config;
/// The pure policy core, its own crate so that Cargo keeps it free of aya and tokio.
pub use lazaret_policy as policy;
pub use lazaret_policy::text;
pub mod daemon;
pub mod dataplane;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod import;
pub mod metrics;

/// `clock` (a `CLOCK_*` id) now, in nanoseconds; 0 if it cannot be read.
pub fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to fill.
    if unsafe { libc::clock_gettime(clock, &raw mut t) } != 0 {
        return 0;
    }
    u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(t.tv_nsec).unwrap_or(0)
}
