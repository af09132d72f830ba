//! The XDP datapath: the embedded program, loading and attaching it, filling its maps.

/// The XDP program object, built by build.rs from gateway-ebpf.
pub static PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lazaret-xdp"));
/// The baseline program benchmarks compare against.
pub static BASELINE: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lazaret-baseline"));
