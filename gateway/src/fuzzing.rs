//! The fuzz harnesses: one function per parser of untrusted input, each asserting the
//! property the fuzzer hunts for (no panic, every error positioned, the XDP program and its
//! twin agree). The libFuzzer targets in `fuzz/` are one-line wrappers around these, and the
//! regression test `tests/tests/fuzz_corpus.rs` feeds every committed corpus file through
//! the same functions, so a crash the fuzzer once found stays a failing test if it returns.
//!
//! A violated property panics (that is how libFuzzer learns of it); nothing here is called on
//! a production path.

use std::{collections::BTreeMap, path::Path};

use crate::{
    config::{Config, ConfigError},
    daemon::control,
    dataplane::xdp::{Datapath, DatapathError, LoadOptions},
    policy::twin::Model,
    policy::{self, MapContents, MapIndex, PolicyErrors, Problem, SourceFile},
};

// === policy ===

/// Problems that concern the whole policy rather than a place in it, so they carry no span.
fn positionless(p: &Problem) -> bool {
    matches!(
        p,
        Problem::NoSite
            | Problem::NoPolicyFiles { .. }
            | Problem::Io { .. }
            | Problem::NotUtf8 { .. }
            // Files refused before they are read: the path is the position.
            | Problem::NotRegularFile { .. }
            | Problem::OutsideRoot { .. }
            | Problem::SymlinkLoop { .. }
            | Problem::TooDeep { .. }
            | Problem::FileTooLarge { .. }
            | Problem::PolicyTooLarge { .. }
            | Problem::TooManyFiles { .. }
            // The count of problems past the reporting limit.
            | Problem::Omitted { .. }
            // Totals over the whole compiled policy (see compile.rs `check_capacity`).
            | Problem::Capacity { .. }
            // The default server role of an essential, when there is no [site] to point at.
            | Problem::UnknownName { .. }
    )
}

fn check_errors(errors: &PolicyErrors, text: &str) {
    for d in &errors.diagnostics {
        // Rendering slices the source by the span: it must not panic either.
        let rendered = d.render(&errors.sources);
        match d.span {
            Some(span) => {
                assert_eq!(
                    span.file, 0,
                    "span in a file that does not exist: {rendered}"
                );
                assert!(
                    span.start as usize <= text.len() && span.start <= span.end,
                    "span {span:?} outside the {}-byte file: {rendered}",
                    text.len()
                );
                let at = errors.sources.locate(span);
                assert!(at.line >= 1 && at.col >= 1, "{rendered}");
            }
            None => assert!(
                positionless(&d.problem),
                "an error without a position: {rendered}"
            ),
        }
    }
}

/// Bytes → one policy file → parse → validate → compile. Never panics; every error a user
/// could fix in the file says where.
pub fn policy(data: &[u8]) {
    // The loader refuses non-UTF-8 files before parsing (Problem::NotUtf8).
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = SourceFile::new("fuzz.toml".to_string(), text.to_string());
    match policy::parse_sources(vec![file]) {
        Err(e) => check_errors(&e, text),
        Ok(p) => {
            for w in &p.warnings {
                assert!(
                    w.span.is_some() || positionless(&w.problem),
                    "a warning without a position: {}",
                    w.problem
                );
            }
            match policy::compile(&p) {
                Err(e) => check_errors(&e, text),
                Ok(c) => {
                    // What the daemon does next: lay it out for the maps.
                    let ifs = p
                        .site
                        .interfaces
                        .keys()
                        .enumerate()
                        .map(|(i, n)| (n.clone(), i as u32 + 1))
                        .collect();
                    let _ = c.map_contents(0, 1, &ifs);
                }
            }
        }
    }
}

// === config ===

/// Bytes → the daemon's configuration. Never panics; every problem is positioned inside the
/// text.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = Config::parse(text, Path::new("lazaret.toml")) {
        let shown = e.to_string();
        match e {
            ConfigError::Invalid { .. } => {
                let lines = text.split('\n').count();
                for p in e.problems() {
                    assert!(p.line >= 1 && p.line <= lines && p.col >= 1, "{shown}");
                }
            }
            ConfigError::Read { .. } => panic!("parse read a file: {shown}"),
        }
    }
}

// === imports ===

/// Bytes → the importers' parsers of files from outside the hospital: a MUD file (against
/// a binding that names every abstraction), an advisory or KEV catalog, a CMMS export
/// (against a mapping of every device key). Never panics; a MUD rule with ports is TCP or
/// UDP with ordered ranges; an advisory error's line is inside the text; an export's
/// problems are at one of its lines.
pub fn imports(data: &[u8]) {
    use crate::import::{csv, mud};
    let binding = mud::Binding::parse(IMPORT_BINDING, "binding.toml").expect("the fuzz binding");
    if let Ok(imported) = mud::import::parse(data, "mud.json", &binding) {
        for rule in imported.rules.keys() {
            if let Some(ports) = &rule.ports {
                assert!(matches!(rule.proto, Some(6 | 17)), "ports on {rule}");
                assert!(ports.iter().all(|(lo, hi)| lo <= hi), "{rule}");
            }
        }
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines = text.split('\n').count();
    let mut catalog = policy::advisories::Catalog::default();
    match catalog.add("fuzz.json", text) {
        Ok(()) => {
            let inv = policy::model::Inventory {
                vendor: "ICU Medical".into(),
                model: "Plum 360".into(),
                firmware: "15.10".into(),
                ..Default::default()
            };
            let _ = catalog.hits(&inv);
        }
        Err(e) => assert!(e.line <= lines, "line {} of {lines}: {}", e.line, e.message),
    }
    for line in csv::fuzz_problem_lines(text) {
        assert!(
            line >= 1 && line as usize <= lines + 1,
            "line {line} of {lines}"
        );
    }
}

const IMPORT_BINDING: &str = r#"
class = "fuzzed"
[names]
"test.example.com" = ["role:a"]
[controllers]
"urn:ietf:params:mud:dns" = ["role:dns"]
[abstractions]
my-controller = ["role:b"]
local-networks = ["10.0.0.0/8"]
same-manufacturer = ["class:c"]
"#;

// === control ===

/// Bytes → a control request. Never panics; whatever decodes re-encodes to the same request
/// (the CLI's encoder and the daemon's decoder agree).
pub fn control(data: &[u8]) {
    if let Ok(req) = control::decode(data) {
        let again = serde_json::to_vec(&req).expect("a request always encodes");
        assert_eq!(control::decode(&again), Ok(req));
    }
}

// === packet ===

/// One record of a packet input: an optional quarantine change, then a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub side: u8,
    /// (device index, modulo the inventory; `QUARANTINE_*` value) set before the frame.
    pub quarantine: Option<(usize, u8)>,
    pub frame: &'a [u8],
}

/// Records from fuzzer bytes: `[flags][len][len bytes]`, the last taking what is left.
/// Flags: bit 0 = arrived on the upstream side; bit 3 = first set the quarantine of
/// device `flags >> 4` to `(flags >> 1) & 3` (3 reads as none), with an epoch bump, as
/// the daemon does. Several records per input let the fuzzer build flows (a request, then
/// its reply), fragment trains, and quarantines cutting live flows.
pub fn records(data: &[u8]) -> Vec<Record<'_>> {
    let mut out = Vec::new();
    let mut rest = data;
    while let [flags, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let side = if flags & 1 == 0 {
            lazaret_abi::SIDE_DEVICES
        } else {
            lazaret_abi::SIDE_UPSTREAM
        };
        let quarantine = (flags & 0b1000 != 0).then(|| {
            let q = (flags >> 1) & 3;
            (usize::from(flags >> 4), if q == 3 { 0 } else { q })
        });
        out.push(Record {
            side,
            quarantine,
            frame: &tail[..n],
        });
        rest = &tail[n..];
        if out.len() == 64 {
            break;
        }
    }
    out
}

/// Shortest frame BPF_PROG_TEST_RUN accepts for XDP.
const ETH_HLEN: usize = 14;

/// The ingress interface of test runs: the namespace's loopback.
const LO: u32 = 1;

/// The packet harness over the example hospital policy (`policies/`), laid out for the
/// maps as the differential test does: every interface is the loopback except `pumps0`, so
/// interface binding is exercised too. The host twin always runs; the real XDP program too
/// when it could be loaded (root, BPF_PROG_TEST_RUN).
pub struct PacketHarness {
    contents: MapContents,
    xdp: Option<Datapath>,
}

impl PacketHarness {
    /// Loads the XDP program if `with_xdp` and the machine allows it ([`Self::xdp_loaded`]
    /// says whether it did).
    pub fn new(policy_dir: &Path, with_xdp: bool) -> PacketHarness {
        let (_, compiled) =
            policy::load_and_compile(policy_dir).expect("the example policy compiles");
        let ifindexes: BTreeMap<String, u32> = [
            ("icu0", LO),
            ("imaging0", LO),
            ("uplink0", LO),
            ("pumps0", 9999),
        ]
        .into_iter()
        .map(|(n, i)| (n.to_string(), i))
        .collect();
        let mut xdp = if with_xdp {
            Datapath::load(&LoadOptions::default()).ok()
        } else {
            None
        };
        let slot = xdp.as_mut().and_then(|dp| dp.next_slot().ok()).unwrap_or(0);
        let contents = compiled
            .map_contents(slot, 1, &ifindexes)
            .expect("map contents");
        if let Some(dp) = xdp.as_mut() {
            dp.install(&contents).expect("install the example policy");
        }
        PacketHarness { contents, xdp }
    }

    pub fn xdp_loaded(&self) -> bool {
        self.xdp.is_some()
    }

    /// Runs one input: a fresh twin and an emptied flow table, so every input is judged
    /// from the same state and a crash reproduces from its file alone.
    pub fn run(&mut self, data: &[u8]) {
        let mut model = Model::new(MapIndex::new(&self.contents));
        let devices: Vec<u64> = self.contents.devices.iter().map(|(_, d)| d.id).collect();
        if let Some(dp) = self.xdp.as_mut() {
            clear_state(dp, &devices).expect("reset the flow, fragment and device tables");
        }
        for Record {
            side,
            quarantine,
            frame,
        } in records(data)
        {
            if let (Some((index, q)), false) = (quarantine, devices.is_empty()) {
                let id = devices[index % devices.len()];
                let mut st = model.states.states.get(&id).copied().unwrap_or_default();
                st.epoch = st.epoch.wrapping_add(1);
                st.quarantine = q;
                model.states.states.insert(id, st);
                if let Some(dp) = self.xdp.as_mut() {
                    dp.set_device_state(id, st).expect("set device state");
                }
            }
            let twin = model.judge(frame, side, LO);
            // The kernel delivers no frame shorter than an Ethernet header to XDP, and
            // BPF_PROG_TEST_RUN refuses one (EINVAL): only the twin judges those.
            if frame.len() < ETH_HLEN {
                continue;
            }
            let Some(dp) = self.xdp.as_mut() else {
                continue;
            };
            dp.set_interface(LO, side).expect("set interface side");
            let before = dp.stats().expect("stats");
            let action = dp.test_run(frame).expect("BPF_PROG_TEST_RUN");
            let after = dp.stats().expect("stats");
            let moved: Vec<usize> = (0..before.len())
                .filter(|&i| after[i] != before[i])
                .collect();
            let counted = match moved.as_slice() {
                [i] => lazaret_abi::Reason::from_u8((i / 2) as u8).map(|r| (r, (i % 2) as u8)),
                _ => None,
            };
            assert_eq!(
                counted,
                Some((twin.reason, side)),
                "frame {frame:02x?} on side {side}: XDP counted {counted:?}, the twin says {twin:?}"
            );
            let expected = if twin.reason.passes() { 2 } else { 1 };
            assert_eq!(action, expected, "XDP action for {:?}", twin.reason);
        }
    }
}

/// Empties the flow and fragment tables and resets every device's state (what one input
/// leaves for the next).
fn clear_state(dp: &mut Datapath, devices: &[u64]) -> Result<(), DatapathError> {
    for id in devices {
        dp.set_device_state(*id, lazaret_abi::DevState::default())?;
    }
    use aya::maps::HashMap;
    use lazaret_abi::{
        FlowKey, FlowValue, FragKey, FragValue, TokenBucket, MAP_EST_FLOWS, MAP_FLOWS, MAP_FRAGS,
        MAP_PROMOTE,
    };
    let ebpf = dp.ebpf_mut();
    for name in [MAP_FLOWS, MAP_EST_FLOWS] {
        if let Some(map) = ebpf.map_mut(name) {
            let mut flows: HashMap<_, FlowKey, FlowValue> =
                HashMap::try_from(map).map_err(DatapathError::map(name))?;
            let keys: Vec<FlowKey> = flows.keys().filter_map(Result::ok).collect();
            for k in keys {
                let _ = flows.remove(&k);
            }
        }
    }
    if let Some(map) = ebpf.map_mut(MAP_PROMOTE) {
        let mut buckets: HashMap<_, u64, TokenBucket> =
            HashMap::try_from(map).map_err(DatapathError::map(MAP_PROMOTE))?;
        let keys: Vec<u64> = buckets.keys().filter_map(Result::ok).collect();
        for k in keys {
            let _ = buckets.remove(&k);
        }
    }
    if let Some(map) = ebpf.map_mut(MAP_FRAGS) {
        let mut frags: HashMap<_, FragKey, FragValue> =
            HashMap::try_from(map).map_err(DatapathError::map(MAP_FRAGS))?;
        let keys: Vec<FragKey> = frags.keys().filter_map(Result::ok).collect();
        for k in keys {
            let _ = frags.remove(&k);
        }
    }
    Ok(())
}
