//! From samples to figures: medians, ratios to each path's floor and to the baseline,
//! flatness, pass/fail against the targets, and the JSON and markdown fragments. Pure.

use serde_json::{json, Map, Value};

use crate::common::{median, round3, thousands, verdict};
use crate::{Path, Samples};

/// Target: cost at the most rules / cost at 1 rule, on every path.
pub(crate) const FLATNESS_MAX: f64 = 1.10;

/// Target of a path: lazaret's cost at the most rules / its floor's (the datapath issue's
/// table). `None`: reported, no target.
pub(crate) fn floor_target(key: &str) -> Option<f64> {
    match key {
        "established_flow" | "qinq_vlan" | "allowed_new_flow_table_full" => Some(1.15),
        "ipv6_two_ext_headers" => Some(1.3),
        "denied" => Some(1.5),
        "unknown_device" => Some(1.0),
        "allowed_new_flow" => Some(1.25),
        _ => None,
    }
}

/// How the counts are made (see `count`).
pub(crate) const COUNT_METHOD: &str = "A BPF interpreter runs the program's bytecode as aya \
    links it (before the verifier) on the path's frame, over the loaded program's real maps; \
    its verdict is checked against the kernel's. Kernel calls are helper calls, less lookups in \
    array maps, which the verifier inlines. New-flow paths are counted before the table is \
    filled: an eviction happens inside the kernel's update, not in the program.";

/// How the duties floor is built and read (docs/benchmarks.md has the argument).
pub(crate) const DUTIES_METHOD: &str = "Each duties floor is its path's floor plus the least \
a per-device gateway must still do there if it keeps lazaret's guarantees, in the leanest \
layout. On a confirmed flow: read the port's side and the active generation, check the flow \
was judged under that generation and its device's current epoch (a quarantine re-judges \
every flow), check a packet from the device carries its MAC (a spoofer on a confirmed \
5-tuple is judged, not passed), count the packet and its bytes for the device (epoch and \
MAC in one array record, one per-CPU block). For an unknown source: the side and \
generation, the source's identity by address (behind an address filter, as lazaret's: \
its bit is clear) and by MAC (both miss), its event budget (a \
token bucket per source MAC in an LRU hash), an event when the budget allows, a counter; \
drop. For a device's refused flow: the side and generation, the flow-table miss, the \
source's identity (a hash hit) and its MAC, one hash lookup for a rule keyed by the \
device's policy, protocol and port, the device's event budget (an array bucket), an event \
when it allows, the device's counter; drop. For a device's allowed new \
flow: the same up to the rule lookup (a hit), then the insert (with the device's cell and the \
generation) and the device's counter; pass. Its ratio to the path's \
floor (the unknown device's: the established floor, as its target) is what no \
implementation of those guarantees can go below; lazaret's ratio to it is what lazaret \
could still save.";

pub(crate) const FLOOR_METHOD: &str = "The floor program parses like the baseline (IPv6 extension \
headers too), then finds the packet's flow in an LRU hash keyed by the normalized 5-tuple \
(lazaret's key, value, capacity and clock) and refreshes its timestamp, or inserts it: the \
least a program keeping flow state as the datapath issue asks does per packet. The denial \
floor misses in that table, misses one more hash lookup (standing for the policy check) and \
drops. Each path's floor runs on the path's own frames, back to back with the baseline in \
each run: repeated frames (a lookup hit and a refresh), the denied frame (the denial floor), \
new flows one call each into a table kept with room or filled first; the unknown-device \
path is held to the established floor. ratio_to_floor is lazaret's median at the most rules \
over the floor's median; ratio_to_floor_net subtracts from both the empty program's cost \
(and, for one-call-per-packet paths, the per-call overhead). Pass/fail uses the stricter of \
the two.";

pub(crate) const METHOD: &str = "BPF_PROG_TEST_RUN on the loopback interface (ifindex 1, declared a \
device-side interface). One program per policy (10,000 devices; 1, 1,000, 100,000 rules) and \
the baseline program (parses Ethernet, up to two VLAN tags and the IP header, then passes) are \
loaded side by side; every run measures every path on every program, in an order that rotates \
from run to run, after one unrecorded warm-up run. A cost is the median over the runs of \
the kernel's mean ns per repetition (whole ns); ratio_to_baseline and flatness are medians \
of the ratios within each run (paired, timed back to back). Before timing, each path's frames are run \
once on each lazaret program and the XDP action and the counted reason (LZ_STATS delta) are \
checked; after every timed batch the LZ_STATS delta must equal the number of packets, all \
with the path's reason. Flows are picked from the compiled policies and checked with the \
reference classifier under all three. New flows cannot be repeated (the second repetition \
of a SYN is an established flow): each packet is its own BPF_PROG_TEST_RUN call with \
repeat 1 and a distinct 5-tuple (up to 64 devices of one class x 58,976 source ports; no \
tuple recurs within 4 x the flow table's size, and before each batch on a full table the \
batch's tuples left over by the kernel's approximate LRU are removed, untimed); the figure is the mean of the kernel's \
per-call durations, and the baseline is timed the same way on the same frames. Two states \
of the flow table: allowed_new_flow keeps room (the flows opened are removed, untimed, every \
65,536 packets, so no insertion evicts); allowed_new_flow_table_full is measured after every \
other path, with the table (LRU, 262,144 entries) filled first, so every insertion evicts. \
A single-repetition call carries a fixed cost (a clock read, run-context setup) that a \
repeated run spreads out; it is estimated as baseline(single calls) - baseline(repeated, same \
frame) and subtracted for the *_net figures. Pass/fail uses the stricter of the raw and net \
figures.";

pub(crate) struct Results<'a> {
    pub quick: bool,
    pub devices: usize,
    pub rule_counts: Vec<usize>,
    pub reps: u32,
    pub runs: usize,
    pub paths: &'a [Path],
    pub samples: Samples,
    pub floor: crate::floor::Floor,
    /// lazaret's program with the most rules: bytes after the verifier, JIT-compiled.
    pub sizes: (u32, u32),
    /// Per path: instructions executed and kernel calls made (see `count`).
    pub counts: &'a [crate::count::Counted],
    /// Per path: xdp-filter's samples, or why the path is not compared (see `peer`).
    pub peer: Vec<crate::peer::Compared>,
}

/// Figures of one path. Index 0 of the per-rule-count vectors is the fewest rules. Costs
/// are medians over the runs; ratios and flatness are medians of the ratios within each run
/// (paired: the programs of one run are timed back to back), so a slow stretch of the
/// machine that hits one run does not skew them.
struct Figures {
    by_rules: Vec<f64>,
    baseline: f64,
    ratios: Vec<f64>,
    flatness: f64,
    net: Option<Net>,
    floor: Option<FloorFig>,
}

/// A path against its floor.
struct FloorFig {
    ns: f64,
    ratio: f64,
    ratio_net: f64,
    target: Option<f64>,
    duties: Option<DutiesFig>,
}

/// A repeated path against the duties floor (see `floor`): raw and net, as the floor's.
struct DutiesFig {
    ns: f64,
    /// The duties floor over the floor: the least any implementation of lazaret's per-packet
    /// guarantees adds to flow tracking.
    over_floor: f64,
    over_floor_net: f64,
    /// lazaret over the duties floor: what lazaret could still save.
    lazaret_over: f64,
    lazaret_over_net: f64,
}

/// A new-flow path with the per-call overhead removed.
struct Net {
    baseline_repeated: f64,
    overhead: f64,
    by_rules: Vec<f64>,
    ratios: Vec<f64>,
    flatness: f64,
}

fn last(v: &[f64]) -> f64 {
    v.last().copied().unwrap_or(0.0)
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        f64::INFINITY
    }
}

/// Median over runs of `f(run)`.
fn per_run(runs: usize, f: impl Fn(usize) -> f64) -> f64 {
    median(&(0..runs).map(f).collect::<Vec<_>>())
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

impl Figures {
    fn ratio_max(&self) -> f64 {
        max(&self.ratios).max(self.net.as_ref().map_or(0.0, |n| max(&n.ratios)))
    }

    fn flatness_max(&self) -> f64 {
        self.flatness
            .max(self.net.as_ref().map_or(0.0, |n| n.flatness))
    }

    /// The stricter of the raw and net ratios to the floor.
    fn floor_ratio_max(&self) -> Option<f64> {
        self.floor.as_ref().map(|f| f.ratio.max(f.ratio_net))
    }

    /// Within the path's floor target (a path without one passes).
    fn pass_ratio(&self) -> bool {
        match (&self.floor, self.floor_ratio_max()) {
            (
                Some(FloorFig {
                    target: Some(t), ..
                }),
                Some(r),
            ) => r <= *t,
            _ => true,
        }
    }

    fn pass_flatness(&self) -> bool {
        self.flatness_max() <= FLATNESS_MAX
    }
}

impl Results<'_> {
    fn figures(&self, path: usize) -> Figures {
        let s = &self.samples.ns[path];
        let runs = s.iter().map(Vec::len).min().unwrap_or(0);
        let at = |prog: usize, run: usize| s[prog][run];
        let progs = s.len();
        let (lo, hi) = (1, progs - 1);
        let by_rules: Vec<f64> = s[1..].iter().map(|x| median(x)).collect();
        let ratios = (1..progs)
            .map(|p| per_run(runs, |r| ratio(at(p, r), at(0, r))))
            .collect();
        let flatness = per_run(runs, |r| ratio(at(hi, r), at(lo, r)));
        let repeated = &self.samples.baseline_repeated[path];
        let net = (repeated.len() >= runs && runs > 0).then(|| {
            // Per run: overhead = baseline per call - baseline repeated, never below 0.
            let ov = |r: usize| (at(0, r) - repeated[r]).max(0.0);
            Net {
                baseline_repeated: median(repeated),
                overhead: per_run(runs, ov),
                by_rules: (1..progs)
                    .map(|p| per_run(runs, |r| at(p, r) - ov(r)))
                    .collect(),
                ratios: (1..progs)
                    .map(|p| per_run(runs, |r| ratio(at(p, r) - ov(r), repeated[r])))
                    .collect(),
                flatness: per_run(runs, |r| ratio(at(hi, r) - ov(r), at(lo, r) - ov(r))),
            }
        });
        let floor = self.floor.of(self.paths[path].key).map(|pair| {
            let lazaret = last(&by_rules);
            // The empty program's cost, and a one-call-per-packet path's call overhead.
            let sub = median(&self.floor.empty.floor_ns) + net.as_ref().map_or(0.0, |n| n.overhead);
            FloorFig {
                ns: pair.floor(),
                ratio: ratio(lazaret, pair.floor()),
                ratio_net: ratio(lazaret - sub, pair.floor() - sub),
                target: floor_target(self.paths[path].key),
                duties: self
                    .floor
                    .duties_of(self.paths[path].key)
                    .map(|d| DutiesFig {
                        ns: d,
                        over_floor: ratio(d, pair.floor()),
                        over_floor_net: ratio(d - sub, pair.floor() - sub),
                        lazaret_over: ratio(lazaret, d),
                        lazaret_over_net: ratio(lazaret - sub, d - sub),
                    }),
            }
        });
        Figures {
            by_rules,
            baseline: median(&s[0]),
            ratios,
            flatness,
            net,
            floor,
        }
    }

    pub(crate) fn render(&self) -> (Value, String) {
        let figs: Vec<Figures> = (0..self.paths.len()).map(|i| self.figures(i)).collect();
        let pass = figs.iter().all(|f| f.pass_ratio() && f.pass_flatness());
        let mut out = Map::new();
        for (p, f) in self.paths.iter().zip(&figs) {
            out.insert(p.key.into(), self.path_json(p, f));
        }
        out.insert("pass".into(), json!(pass));
        out.insert("floor".into(), self.floor_json(&figs));
        let targets: Map<String, Value> = self
            .paths
            .iter()
            .filter_map(|p| floor_target(p.key).map(|t| (p.key.to_string(), json!(t))))
            .collect();
        out.insert(
            "targets".into(),
            json!({ "flatness_max": FLATNESS_MAX, "ratio_to_floor_max": targets }),
        );
        out.insert(
            "empty_ns_per_packet".into(),
            json!(round3(median(&self.floor.empty.floor_ns))),
        );
        out.insert(
            "program".into(),
            json!({
                "xlated_bytes": self.sizes.0,
                "xlated_instructions": self.sizes.0 / 8,
                "jited_bytes": self.sizes.1,
                "floor_xlated_bytes": self.floor.sizes.0,
                "floor_jited_bytes": self.floor.sizes.1,
            }),
        );
        out.insert(
            "setup".into(),
            json!({
                "quick": self.quick,
                "devices": self.devices,
                "rule_counts": self.rule_counts,
                "repetitions": self.reps,
                "runs": self.runs,
                "method": METHOD,
            }),
        );
        (Value::Object(out), self.markdown(&figs))
    }

    /// The floor's paths, with lazaret's figure at the most rules for the same path.
    fn floor_rows<'f>(
        &'f self,
        figs: &[Figures],
    ) -> Vec<(&'static str, &'f crate::floor::Pair, f64)> {
        let lazaret = |key: &str| {
            self.paths
                .iter()
                .position(|p| p.key == key)
                .and_then(|i| figs.get(i))
                .and_then(|f| f.by_rules.last().copied())
                .unwrap_or(0.0)
        };
        self.paths
            .iter()
            .filter_map(|p| Some((p.key, self.floor.of(p.key)?, lazaret(p.key))))
            .collect()
    }

    fn floor_json(&self, figs: &[Figures]) -> Value {
        let mut out = Map::new();
        for (key, pair, lazaret) in self.floor_rows(figs) {
            out.insert(
                key.to_string(),
                json!({
                    "ns_per_packet": round3(pair.floor()),
                    "baseline_ns_per_packet": round3(pair.baseline()),
                    "ratio_to_baseline": round3(pair.ratio()),
                    "lazaret_ns_per_packet": round3(lazaret),
                    "samples_ns": pair.floor_ns.iter().map(|x| round3(*x)).collect::<Vec<_>>(),
                }),
            );
        }
        out.insert("method".into(), json!(FLOOR_METHOD));
        Value::Object(out)
    }

    fn floor_markdown(&self, figs: &[Figures]) -> String {
        let mut s = format!(
            "\n**Floor: flow tracking alone.** {FLOOR_METHOD}\n\n\
             | path | floor | baseline | floor / baseline | lazaret, {} rules | lazaret / floor |\n\
             |---|---:|---:|---:|---:|---:|\n",
            thousands(self.rule_counts.last().copied().unwrap_or(0))
        );
        for (key, pair, lazaret) in self.floor_rows(figs) {
            let title = self
                .paths
                .iter()
                .find(|p| p.key == key)
                .map_or(key, |p| p.title);
            s.push_str(&format!(
                "| {title} | {:.1} | {:.1} | {:.2} | {lazaret:.1} | {:.2} |\n",
                pair.floor(),
                pair.baseline(),
                pair.ratio(),
                lazaret / pair.floor().max(f64::MIN_POSITIVE),
            ));
        }
        s
    }

    fn duties_markdown(&self, figs: &[Figures]) -> String {
        let mut s = format!(
            "\n**Duties floor: what lazaret's guarantees cost at the least.** {DUTIES_METHOD}\n\n\
             | path | floor | duties floor | duties / floor (raw / net) | lazaret, {} rules | \
             lazaret / duties floor (raw / net) | instructions: floor / duties / lazaret |\n\
             |---|---:|---:|---|---:|---|---|\n",
            thousands(self.rule_counts.last().copied().unwrap_or(0))
        );
        for (p, f) in self.paths.iter().zip(figs) {
            let Some((fl, d)) = f
                .floor
                .as_ref()
                .and_then(|fl| Some((fl, fl.duties.as_ref()?)))
            else {
                continue;
            };
            let count = |c: Option<crate::count::Counted>| {
                c.map_or("—".to_string(), |c| c.instructions.to_string())
            };
            let duty = self
                .floor
                .duty_counts
                .iter()
                .find(|(k, _)| *k == p.key)
                .map(|(_, c)| *c);
            let own = self
                .paths
                .iter()
                .position(|q| q.key == p.key)
                .and_then(|i| self.counts.get(i).copied());
            s.push_str(&format!(
                "| {} | {:.1} | {:.1} | {:.2} / {:.2} | {:.1} | {:.2} / {:.2} | {} / {} / {} |\n",
                p.title,
                fl.ns,
                d.ns,
                d.over_floor,
                d.over_floor_net,
                last(&f.by_rules),
                d.lazaret_over,
                d.lazaret_over_net,
                count(self.floor.count_of(p.key)),
                count(duty),
                count(own),
            ));
        }
        s
    }

    fn peer_markdown(&self, figs: &[Figures]) -> String {
        let mut s = format!(
            "\n**Peer: xdp-filter** (Debian's xdp-tools, `{}`, the allowed paths' ports \
             allowed both ways; same frames, same run). A stateless filter with one global \
             allow-list: what lazaret costs over it is per-device identity, policy and flow \
             state.\n\n| path | xdp-filter | lazaret, {} rules | lazaret / xdp-filter | instructions: \
             xdp-filter / lazaret |\n|---|---:|---:|---|---|\n",
            crate::peer::OBJECT,
            thousands(self.rule_counts.last().copied().unwrap_or(0))
        );
        for (i, ((p, f), c)) in self.paths.iter().zip(figs).zip(&self.peer).enumerate() {
            let lazaret = last(&f.by_rules);
            let (peer, r, insns) = match c {
                Ok((ns, counted)) => {
                    let peer = median(ns);
                    let ours = self.counts.get(i).map_or(0, |c| c.instructions);
                    (
                        format!("{peer:.1}"),
                        format!("{:.2}", ratio(lazaret, peer)),
                        format!("{} / {}", counted.instructions, ours),
                    )
                }
                Err(why) => ("—".into(), format!("not compared: {why}"), "—".into()),
            };
            s.push_str(&format!(
                "| {} | {peer} | {lazaret:.1} | {r} | {insns} |\n",
                p.title
            ));
        }
        s
    }

    fn counts_markdown(&self) -> String {
        let mut s = format!(
            "\n**Executed per packet**, {} rules (counted, not timed: the same on every run; \
             the bench fails when a path grows more than 10 % over \
             `tests/benches/datapath/reference.json`). {COUNT_METHOD}\n\n\
             | path | BPF instructions | floor | lazaret / floor | kernel calls | floor |\n\
             |---|---:|---:|---:|---:|---:|\n",
            thousands(self.rule_counts.last().copied().unwrap_or(0))
        );
        for (p, c) in self.paths.iter().zip(self.counts) {
            let (floor, ratio, calls) = match self.floor.count_of(p.key) {
                Some(f) => (
                    thousands(f.instructions as usize),
                    format!("{:.2}", ratio(c.instructions as f64, f.instructions as f64)),
                    f.kernel_calls.to_string(),
                ),
                None => ("—".into(), "—".into(), "—".into()),
            };
            s.push_str(&format!(
                "| {} | {} | {floor} | {ratio} | {} | {calls} |\n",
                p.title,
                thousands(c.instructions as usize),
                c.kernel_calls
            ));
        }
        s
    }

    fn path_json(&self, p: &Path, f: &Figures) -> Value {
        let pi = self.paths.iter().position(|x| x.key == p.key).unwrap_or(0);
        let samples = &self.samples.ns[pi];
        let mut by_rules = Map::new();
        for (i, rules) in self.rule_counts.iter().enumerate() {
            let ns = f.by_rules.get(i).copied().unwrap_or(0.0);
            by_rules.insert(
                rules.to_string(),
                json!({
                    "ns_per_packet": round3(ns),
                    "ratio_to_baseline": round3(f.ratios.get(i).copied().unwrap_or(0.0)),
                    "samples_ns": samples.get(i + 1).map(|s| s.iter().map(|x| round3(*x)).collect::<Vec<_>>()),
                }),
            );
        }
        let mut v = json!({
            "title": p.title,
            "frame": p.frame,
            "flow": p.flow,
            "reason": p.reason.name(),
            "rules": self.rule_counts.last(),
            "ns_per_packet": round3(last(&f.by_rules)),
            "baseline_ns_per_packet": round3(f.baseline),
            "ratio_to_baseline": round3(last(&f.ratios)),
            "flatness": round3(f.flatness),
            "by_rules": by_rules,
            "baseline_samples_ns": samples[0].iter().map(|x| round3(*x)).collect::<Vec<_>>(),
            "pass_flatness": f.pass_flatness(),
            "instructions": self.counts.get(pi).map(|c| c.instructions),
            "kernel_calls": self.counts.get(pi).map(|c| c.kernel_calls),
        });
        if let Some(obj) = v.as_object_mut() {
            match self.peer.get(pi) {
                Some(Ok((ns, counted))) => {
                    let peer = median(ns);
                    obj.insert("xdp_filter_ns_per_packet".into(), json!(round3(peer)));
                    obj.insert(
                        "xdp_filter_instructions".into(),
                        json!(counted.instructions),
                    );
                    obj.insert(
                        "xdp_filter_kernel_calls".into(),
                        json!(counted.kernel_calls),
                    );
                    obj.insert(
                        "ratio_to_xdp_filter".into(),
                        json!(round3(ratio(last(&f.by_rules), peer))),
                    );
                }
                Some(Err(why)) => {
                    obj.insert("xdp_filter_not_compared".into(), json!(why));
                }
                None => {}
            }
        }
        if let (Some(fl), Some(obj)) = (&f.floor, v.as_object_mut()) {
            obj.insert("floor_ns_per_packet".into(), json!(round3(fl.ns)));
            if let Some(c) = self.floor.count_of(p.key) {
                obj.insert("floor_instructions".into(), json!(c.instructions));
                obj.insert("floor_kernel_calls".into(), json!(c.kernel_calls));
            }
            obj.insert("ratio_to_floor".into(), json!(round3(fl.ratio)));
            obj.insert("ratio_to_floor_net".into(), json!(round3(fl.ratio_net)));
            obj.insert("target_ratio_to_floor".into(), json!(fl.target));
            obj.insert("pass_ratio_to_floor".into(), json!(f.pass_ratio()));
            if let Some(d) = &fl.duties {
                obj.insert("duties_floor_ns_per_packet".into(), json!(round3(d.ns)));
                if let Some((_, c)) = self.floor.duty_counts.iter().find(|(k, _)| *k == p.key) {
                    obj.insert("duties_floor_instructions".into(), json!(c.instructions));
                    obj.insert("duties_floor_kernel_calls".into(), json!(c.kernel_calls));
                }
                obj.insert(
                    "ratio_duties_floor_to_floor".into(),
                    json!(round3(d.over_floor)),
                );
                obj.insert(
                    "ratio_duties_floor_to_floor_net".into(),
                    json!(round3(d.over_floor_net)),
                );
                obj.insert(
                    "ratio_to_duties_floor".into(),
                    json!(round3(d.lazaret_over)),
                );
                obj.insert(
                    "ratio_to_duties_floor_net".into(),
                    json!(round3(d.lazaret_over_net)),
                );
            }
        }
        if let (Some(n), Some(obj)) = (&f.net, v.as_object_mut()) {
            let net_last = last(&n.by_rules);
            obj.insert(
                "timing".into(),
                json!("one BPF_PROG_TEST_RUN call per packet"),
            );
            obj.insert(
                "baseline_repeated_ns_per_packet".into(),
                json!(round3(n.baseline_repeated)),
            );
            obj.insert("call_overhead_ns".into(), json!(round3(n.overhead)));
            obj.insert("ns_per_packet_net".into(), json!(round3(net_last)));
            obj.insert(
                "ratio_to_baseline_net".into(),
                json!(round3(last(&n.ratios))),
            );
            obj.insert("flatness_net".into(), json!(round3(n.flatness)));
        }
        v
    }

    fn markdown(&self, figs: &[Figures]) -> String {
        let rules: Vec<String> = self
            .rule_counts
            .iter()
            .map(|r| format!("{} rule{}", thousands(*r), if *r == 1 { "" } else { "s" }))
            .collect();
        let mut s = format!(
            "ns/packet through BPF_PROG_TEST_RUN, {} devices; median of {} runs of {} \
             repetitions{}; baseline = the parse-only program on the same frames, same run.\n\n",
            thousands(self.devices),
            self.runs,
            thousands(self.reps as usize),
            if self.quick { " (--quick)" } else { "" }
        );
        s.push_str(&format!(
            "| path | {} | floor | ratio to floor (raw / net) | target | flatness (≤ {FLATNESS_MAX:.2}) | baseline | ratio to baseline |\n",
            rules.join(" | ")
        ));
        s.push_str(&format!(
            "|---|{}---:|---|---|---|---:|---:|\n",
            "---:|".repeat(rules.len())
        ));
        for (p, f) in self.paths.iter().zip(figs) {
            let cells: Vec<String> = f.by_rules.iter().map(|x| format!("{x:.1}")).collect();
            let (floor, ratios, target) = match &f.floor {
                Some(fl) => (
                    format!("{:.1}", fl.ns),
                    format!("{:.2} / {:.2}", fl.ratio, fl.ratio_net),
                    match fl.target {
                        Some(t) => format!("≤ {t} {}", verdict(f.pass_ratio())),
                        None => "—".into(),
                    },
                ),
                None => ("—".into(), "—".into(), "—".into()),
            };
            s.push_str(&format!(
                "| {} | {} | {floor} | {ratios} | {target} | {:.2} {} | {:.1} | {:.2} |\n",
                p.title,
                cells.join(" | "),
                f.flatness_max(),
                verdict(f.pass_flatness()),
                f.baseline,
                f.ratio_max(),
            ));
        }
        s.push_str(&format!(
            "\nCosts are medians over the runs. The ratio to the floor is lazaret's median at \
             the most rules over the floor's (raw), and the same with the empty program's \
             {:.1} ns (and a one-call path's per-call overhead) taken from both (net); pass/fail \
             uses the stricter. Flatness and the ratio to the baseline (kept for reference) are \
             medians of the ratios within each run (the programs of a run are timed back to \
             back); the latter shows the highest over the rule counts. Program: {} bytes \
             after the verifier ({} instructions), {} bytes JIT-compiled (the floor: {} / {}).\n",
            median(&self.floor.empty.floor_ns),
            self.sizes.0,
            self.sizes.0 / 8,
            self.sizes.1,
            self.floor.sizes.0,
            self.floor.sizes.1,
        ));
        for (p, f) in self.paths.iter().zip(figs) {
            if let Some(n) = &f.net {
                let cells: Vec<String> = n.by_rules.iter().map(|x| format!("{x:.1}")).collect();
                s.push_str(&format!(
                    "\n{}: one BPF_PROG_TEST_RUN call per packet (raw figures above); per-call \
                     overhead ≈ {:.1} ns (baseline {:.1} ns per call, {:.1} ns repeated); net: \
                     {} ns, ratio {:.2}.\n",
                    p.title,
                    n.overhead,
                    f.baseline,
                    n.baseline_repeated,
                    cells.join(" / "),
                    last(&n.ratios)
                ));
            }
        }
        s.push_str(&self.counts_markdown());
        s.push_str(&self.peer_markdown(figs));
        s.push_str(&self.floor_markdown(figs));
        s.push_str(&self.duties_markdown(figs));
        s.push_str("\nFlows (chosen from the compiled policies):\n\n");
        for p in self.paths {
            s.push_str(&format!("- {}: {}; {}\n", p.title, p.frame, p.flow));
        }
        s
    }
}
