//! A peer on the same frames: `xdp-filter` (Debian's xdp-tools), the best-known stateless
//! XDP packet filter, timed through BPF_PROG_TEST_RUN in the same run as lazaret.
//!
//! Its program objects ship in libxdp1; `xdpfilt_dny_all.o` is what `xdp-filter load
//! --policy deny` attaches with every feature: a frame passes when an entry of its maps
//! matches (Ethernet address, IPv4, IPv6, TCP/UDP port), and is dropped otherwise. It is
//! loaded here as a plain XDP program (xdp-filter itself runs it behind libxdp's
//! dispatcher, which adds one tail call's worth of cost we leave out, in its favour) with
//! the equivalent of `xdp-filter port P` for every port the bench's allowed flows use, in
//! both directions: one global allow-list, no devices, no state.
//!
//! A path is compared only where xdp-filter reaches lazaret's verdict on the same frame;
//! elsewhere the comparison would time a different decision (see [`Peer::compare`]).

use anyhow::{Context, Result};
use aya::{
    maps::PerCpuArray,
    programs::{ProgramError, TestRunOptions, Xdp},
    EbpfLoader, TestRun,
};

use crate::measure::XDP_PASS;

/// Where Debian's libxdp1 puts xdp-filter's objects.
pub(crate) const OBJECT: &str = "/usr/lib/x86_64-linux-gnu/bpf/xdpfilt_dny_all.o";
const PROGRAM: &str = "xdpfilt_dny_all";

/// xdp-filter's map flags (its `common_kern_user.h`).
const MAP_FLAG_SRC: u64 = 1 << 0;
const MAP_FLAG_DST: u64 = 1 << 1;
const MAP_FLAG_TCP: u64 = 1 << 2;
const MAP_FLAG_UDP: u64 = 1 << 3;

pub(crate) struct Peer {
    ebpf: aya::Ebpf,
    /// Counts its instructions (see `count`).
    interp: crate::count::Interpreter,
    /// Its maps are pinned by name: on a private bpf filesystem, never the host's.
    _pins: lazaret_tests::netns::BpfMount,
    _dir: lazaret_tests::netns::TempDir,
}

/// A path against xdp-filter: its samples (ns per packet, one per run) and its counts, or
/// why it is not compared.
pub(crate) type Compared = std::result::Result<(Vec<f64>, crate::count::Counted), String>;

impl Peer {
    /// Loads xdp-filter's program with `ports` allowed, as source or destination, TCP or
    /// UDP.
    pub(crate) fn load(ports: &[u16]) -> Result<Peer> {
        let bytes = std::fs::read(OBJECT).with_context(|| {
            format!(
                "reading {OBJECT} (xdp-filter's program; `cargo xtask setup` installs xdp-tools)"
            )
        })?;
        let dir = lazaret_tests::netns::TempDir::new()?;
        let pins = lazaret_tests::netns::BpfMount::new(&dir.path)?;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&pins.path)
            .load(&bytes)
            .with_context(|| format!("loading {OBJECT}"))?;
        program(&mut ebpf)?.load()?;
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
        let mut map: PerCpuArray<_, u64> = PerCpuArray::try_from(
            ebpf.map_mut("filter_ports")
                .context("xdp-filter's filter_ports map")?,
        )?;
        let flags = MAP_FLAG_SRC | MAP_FLAG_DST | MAP_FLAG_TCP | MAP_FLAG_UDP;
        for port in ports {
            // Keyed by the port as the header carries it (network order).
            let key = u32::from(port.to_be());
            let values = aya::maps::PerCpuValues::try_from(vec![flags; cpus])?;
            map.set(key, values, 0)?;
        }
        let interp = crate::count::Interpreter::of(&bytes, PROGRAM, program(&mut ebpf)?)?;
        Ok(Peer {
            ebpf,
            interp,
            _pins: pins,
            _dir: dir,
        })
    }

    /// The XDP action and mean ns per run of `reps` repetitions of `frame`.
    pub(crate) fn run(&mut self, frame: &[u8], reps: u32) -> Result<(u32, f64)> {
        let r = program(&mut self.ebpf)?
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat: reps,
                ..TestRunOptions::default()
            })
            .map_err(|e: ProgramError| anyhow::anyhow!("running xdp-filter: {e}"))?;
        Ok((r.return_value, r.duration.as_nanos() as f64))
    }

    /// Instructions and kernel calls on `frame`, counted like lazaret's (see `count`).
    pub(crate) fn count(&mut self, frame: &[u8]) -> Result<crate::count::Counted> {
        let (action, _) = self.run(frame, 1)?;
        Ok(self
            .interp
            .checked(frame, crate::flows::LO, action, "xdp-filter")?
            .counted)
    }

    /// Whether `frame` (lazaret's verdict `want`) is compared: xdp-filter must reach the same
    /// verdict on it.
    pub(crate) fn compare(&mut self, frame: &[u8], want: u32) -> Result<Option<String>> {
        let (action, _) = self.run(frame, 1)?;
        Ok((action != want).then(|| {
            format!(
                "xdp-filter {} this frame where lazaret {}s it",
                if action == XDP_PASS {
                    "passes"
                } else {
                    "drops"
                },
                if want == XDP_PASS { "pass" } else { "drop" }
            )
        }))
    }
}

/// xdp-filter's program in its object.
fn program(ebpf: &mut aya::Ebpf) -> Result<&mut Xdp> {
    Ok(ebpf
        .program_mut(PROGRAM)
        .with_context(|| format!("no program {PROGRAM} in {OBJECT}"))?
        .try_into()?)
}

/// The TCP or UDP destination port of an untagged, tagged or QinQ frame carrying IPv4 or
/// IPv6 without extension headers.
pub(crate) fn dport(frame: &[u8]) -> Option<u16> {
    let be16 = |at: usize| -> Option<u16> {
        Some(u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]))
    };
    let mut at = 12;
    let mut ethertype = be16(at)?;
    while ethertype == 0x8100 || ethertype == 0x88a8 {
        at += 4;
        ethertype = be16(at)?;
    }
    let l3 = at + 2;
    let (proto, l4) = match ethertype {
        0x0800 => (
            *frame.get(l3 + 9)?,
            l3 + 4 * usize::from(frame.get(l3)? & 0x0f),
        ),
        0x86dd => (*frame.get(l3 + 6)?, l3 + 40),
        _ => return None,
    };
    matches!(proto, 6 | 17).then_some(())?;
    be16(l4 + 2)
}
