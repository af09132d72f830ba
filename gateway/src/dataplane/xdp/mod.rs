//! The XDP datapath from userspace: the embedded program, loading and attaching it, filling
//! its maps one generation at a time, reading its counters, and running it on crafted frames
//! (BPF_PROG_TEST_RUN).
//!
//! Everything here needs CAP_BPF (and CAP_NET_ADMIN to attach); the pure parts of policy
//! handling live in [`crate::policy`].

pub mod attach;
mod batch;
mod error;
mod events;
mod loader;

pub use crate::policy::MapContents;
pub use error::DatapathError;
pub use events::EventReader;
pub use loader::{
    AttachMode, Datapath, DatapathReader, DeviceCounterTotals, FlowTable, FlowTables, LoadOptions,
};

/// The XDP program object, built by build.rs from gateway-ebpf.
pub static PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lazaret-xdp"));
/// The baseline program benchmarks compare against.
pub static BASELINE: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lazaret-baseline"));
/// The floor program benchmarks compare against: the baseline plus a flow-table lookup and
/// refresh (or insert) per packet.
pub static FLOOR: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lazaret-floor"));
