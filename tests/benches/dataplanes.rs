//! `cargo xtask bench dataplanes`: the XDP program against the nftables table, on the same
//! namespace topology, policy and traffic, measured in the same run.
//!
//! Topology: sender ns ── veth ── gateway ns (`dev0` devices side, `uplink0` upstream, and
//! `dev1`–`dev7` as idle veths so every interface of the generated policy exists) ── veth ──
//! sink ns. Policy: the generated 10,000-device / 100,000-rule one. Traffic: one managed
//! device's binding (its MAC, address, interface), small UDP frames (60 bytes) sent with an
//! AF_PACKET socket from one thread pinned to CPU 0 (`sched_setaffinity`) for a fixed time.
//! Deny path: a port the device's policy does not allow, packets per second counted by the
//! dataplane's own drop counter (XDP: `deny_no_rule` stats; nftables: the `deny_no_rule`
//! named counter). Allow path: an allowed (peer, port), packets per second arriving on the
//! sink's veth. Both verdicts are checked against the reference classifier first. Apply
//! time: XDP, filling the maps of the next generation and switching (`install`); nftables,
//! rendering the table and `nft -j -f` of the whole generation. Median of the runs.
//!
//! Target: XDP drops at least 5× the packets per second nftables drops.
//!
//! The ceiling: `lazaret_drop`, which only drops and counts, attached in XDP's place, on
//! the same frames. veth delivers inline, so the sender's syscalls and the link are paid
//! on the same CPU by every dataplane; the ceiling's rate is what they allow at all, and
//! `ceiling / nftables' rate` the most any dataplane's ratio can be with this sender (a
//! slow sender can hide the dataplanes' difference). Each dataplane's cost per dropped
//! packet beyond the ceiling (`1/rate - 1/ceiling`) is reported beside the rates.

#[path = "common/mod.rs"]
mod common;

use std::{
    collections::BTreeMap,
    fs::File,
    net::{IpAddr, Ipv4Addr},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use common::{median, round3, verdict};
use lazaret::{
    dataplane::nft::{self, Family, Nft, RenderOptions},
    dataplane::xdp::{AttachMode, Datapath, LoadOptions},
    policy::{self, classify, DeviceStates, FlowHint, IpDesc, MapContents, PacketDesc, PacketKind},
};
use lazaret_abi::*;
use lazaret_tests::{
    frames::udp4,
    netns::{mac_of, unique_prefix, veth, Netns},
    nftlab::ifindex,
};
use serde_json::json;

/// XDP drops at least 5× the packets per second nftables drops.
const TARGET_RATIO: f64 = 5.0;

/// Runs `f` with the calling thread inside `ns`, then returns it to its own namespace.
fn in_ns<T>(ns: &Netns, f: impl FnOnce() -> T) -> Result<T> {
    let own = File::open("/proc/thread-self/ns/net")?;
    let target = File::open(format!("/run/netns/{}", ns.name))?;
    // SAFETY: setns on namespace fds we own; it affects only this thread, and the thread
    // is put back before returning.
    unsafe {
        if libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
            bail!("setns: {}", std::io::Error::last_os_error());
        }
        let out = f();
        if libc::setns(own.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
            bail!("setns back: {}", std::io::Error::last_os_error());
        }
        Ok(out)
    }
}

/// Sends `frame` out of `ifname` in `ns` from a thread pinned to CPU 0, for `d`; returns the
/// number of frames sent.
fn blast(ns: &Netns, ifname: &str, frame: Vec<u8>, d: Duration) -> Result<u64> {
    let ifname = ifname.to_string();
    ns.run(move || -> Result<u64> {
        // SAFETY: plain libc calls on a cpu set and a socket this thread owns.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(0, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                bail!("sched_setaffinity: {}", std::io::Error::last_os_error());
            }
            let c = std::ffi::CString::new(ifname.clone())?;
            let index = libc::if_nametoindex(c.as_ptr());
            if index == 0 {
                bail!("no interface {ifname}");
            }
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            if fd < 0 {
                bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
            }
            let one: libc::c_int = 1;
            // Skip the sender's qdisc: the generator measures the gateway, not tc.
            libc::setsockopt(
                fd,
                libc::SOL_PACKET,
                libc::PACKET_QDISC_BYPASS,
                std::ptr::addr_of!(one).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            );
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = index as i32;
            if libc::bind(
                fd,
                std::ptr::addr_of!(addr).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            ) != 0
            {
                libc::close(fd);
                bail!("bind AF_PACKET: {}", std::io::Error::last_os_error());
            }
            // sendmmsg in batches: the generator's own syscall cost stays small beside the
            // gateway's per-packet work, which runs on the same CPU (veth delivers inline).
            const BATCH: usize = 64;
            let mut iov: libc::iovec = std::mem::zeroed();
            iov.iov_base = frame.as_ptr() as *mut libc::c_void;
            iov.iov_len = frame.len();
            let mut msgs: Vec<libc::mmsghdr> = (0..BATCH)
                .map(|_| {
                    let mut m: libc::mmsghdr = std::mem::zeroed();
                    m.msg_hdr.msg_iov = std::ptr::addr_of_mut!(iov);
                    m.msg_hdr.msg_iovlen = 1;
                    m
                })
                .collect();
            let deadline = Instant::now() + d;
            let mut sent = 0u64;
            while Instant::now() < deadline {
                let n = libc::sendmmsg(fd, msgs.as_mut_ptr(), BATCH as u32, 0);
                if n > 0 {
                    sent += n as u64;
                }
            }
            libc::close(fd);
            Ok(sent)
        }
    })?
}

fn rx_packets(ns: &Netns, ifname: &str) -> Result<u64> {
    let out = ns.exec(&[
        "cat",
        &format!("/sys/class/net/{ifname}/statistics/rx_packets"),
    ])?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

fn nft_counter(ns: &Netns, name: &str) -> Result<u64> {
    let out = ns.exec(&["nft", "list", "counter", "inet", "lazaret", name])?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .context("counter value")
}

struct Lab {
    sender: Netns,
    gw: Netns,
    sink: Netns,
    sender_if: String,
    sink_if: String,
    gw_mac: [u8; 6],
}

fn lab() -> Result<Lab> {
    let p = unique_prefix();
    let sender = Netns::new(format!("{p}snd"))?;
    let gw = Netns::new(format!("{p}gw"))?;
    let sink = Netns::new(format!("{p}sink"))?;
    let (sender_if, sink_if) = (format!("{p}s"), format!("{p}k"));
    veth(&sender, &sender_if, None, &gw, "dev0", Some("10.64.0.1/16"))?;
    veth(&sink, &sink_if, None, &gw, "uplink0", Some("10.10.0.1/16"))?;
    for i in 1..8 {
        gw.exec(&[
            "ip",
            "link",
            "add",
            &format!("dev{i}"),
            "type",
            "veth",
            "peer",
            "name",
            &format!("spare{i}"),
        ])?;
    }
    gw.set_sysctl("net.ipv4.ip_forward", "1")?;
    gw.set_sysctl("net.ipv4.conf.all.rp_filter", "0")?;
    gw.set_sysctl("net.ipv4.conf.dev0.rp_filter", "0")?;
    let gw_mac = mac_of(&gw, "dev0")?;
    Ok(Lab {
        sender,
        gw,
        sink,
        sender_if,
        sink_if,
        gw_mac,
    })
}

/// A device on `dev0` with an allowed UDP (peer, port) in its own policy, and a port that
/// policy denies towards the same peer.
struct Probe {
    device: usize,
    mac: [u8; 6],
    ip: Ipv4Addr,
    peer: Ipv4Addr,
    allow_port: u16,
    deny_port: u16,
}

fn pick(compiled: &policy::Compiled) -> Result<Probe> {
    for (device, d) in compiled.devices.iter().enumerate() {
        if d.interface.as_deref() != Some("dev0") || d.mode != policy::model::Mode::Enforce {
            continue;
        }
        let (Some(mac), Some(ip)) = (d.mac, d.ipv4.first()) else {
            continue;
        };
        let Some(p) = compiled.policies.iter().find(|p| p.id == d.policy) else {
            continue;
        };
        for e in &p.entries {
            let IpAddr::V4(peer) = e.peer.addr() else {
                continue;
            };
            let workflow = compiled
                .rules
                .get(e.rule as usize)
                .is_some_and(|r| matches!(r.origin, policy::Origin::Workflow { .. }));
            if !workflow || e.dir != policy::Dir::DeviceInit || !e.proto.matches(PROTO_UDP) {
                continue;
            }
            let port = e.ports.map_or(5000, |r| r.lo);
            return Ok(Probe {
                device,
                mac: mac.0,
                ip: *ip,
                peer,
                allow_port: port,
                deny_port: 9,
            });
        }
    }
    bail!("no enforcing device on dev0 with a UDP rule in the generated policy")
}

fn check_verdicts(m: &MapContents, gw: &Netns, p: &Probe) -> Result<()> {
    let dev0 = ifindex(gw, "dev0")?;
    for (port, pass) in [(p.allow_port, true), (p.deny_port, false)] {
        let d = classify(
            m,
            &DeviceStates::default(),
            &PacketDesc {
                side: SIDE_DEVICES,
                ifindex: dev0,
                port: dev0,
                claim_scope: CLAIM_POLICY as u16,
                vlan: VLAN_UNTAGGED,
                src_mac: p.mac,
                dst_mac: [0; 6],
                kind: PacketKind::Ip(IpDesc {
                    src: IpAddr::V4(p.ip),
                    dst: IpAddr::V4(p.peer),
                    proto: PROTO_UDP,
                    sport: 40000,
                    dport: port,
                    tcp_flags: 0,
                    icmp_type: 0,
                    nd_target: None,
                    hop_limit: 64,
                    quoted: None,
                }),
                flow: FlowHint::None,
            },
        );
        if d.passes() != pass {
            bail!("port {port}: the reference classifier says {:?}", d.reason);
        }
    }
    Ok(())
}

/// Packets per second: (deny path dropped, allow path forwarded), one run each.
fn measure(
    lab: &Lab,
    p: &Probe,
    d: Duration,
    dropped: &mut dyn FnMut() -> Result<u64>,
) -> Result<(f64, f64, f64)> {
    let frame = |port| udp4(p.mac, lab.gw_mac, p.ip, p.peer, 40000, port);
    let before = dropped()?;
    let sent = blast(&lab.sender, &lab.sender_if, frame(p.deny_port), d)?;
    let deny = (dropped()? - before) as f64 / d.as_secs_f64();
    let before = rx_packets(&lab.sink, &lab.sink_if)?;
    blast(&lab.sender, &lab.sender_if, frame(p.allow_port), d)?;
    let allow = (rx_packets(&lab.sink, &lab.sink_if)? - before) as f64 / d.as_secs_f64();
    Ok((deny, allow, sent as f64 / d.as_secs_f64()))
}

/// The deny path's rates read against the ceiling (a program that only drops): what each
/// dataplane adds per dropped packet beyond the sender, the link and the hook.
struct Costs {
    ceiling: f64,
    nft_pps: f64,
    xdp_ns: f64,
    nft_ns: f64,
}

impl Costs {
    fn of(ceiling: f64, xdp_pps: f64, nft_pps: f64) -> Costs {
        let ns = |pps: f64| {
            if pps > 0.0 && ceiling > 0.0 {
                (1.0 / pps - 1.0 / ceiling) * 1e9
            } else {
                f64::NAN
            }
        };
        Costs {
            ceiling,
            nft_pps,
            xdp_ns: ns(xdp_pps),
            nft_ns: ns(nft_pps),
        }
    }

    /// The most any dataplane's rate can be over nftables' with this sender.
    fn ceiling_ratio(&self) -> f64 {
        if self.nft_pps > 0.0 {
            self.ceiling / self.nft_pps
        } else {
            0.0
        }
    }

    /// nftables' added cost over XDP's; `None` when XDP's is not measurably above the
    /// ceiling's (or either rate is missing).
    fn ratio(&self) -> Option<f64> {
        (self.xdp_ns > 0.0 && self.nft_ns.is_finite()).then(|| self.nft_ns / self.xdp_ns)
    }
}

fn main() -> Result<()> {
    let args = common::args()?;
    let (runs, secs) = if args.quick { (1, 1.0) } else { (3, 2.0) };
    let d = Duration::from_secs_f64(secs);
    let key = "10000x100000";
    let dir = args.policy(key)?;
    let (_, mut compiled) = policy::load_and_compile(dir).map_err(|e| anyhow!("{}", e.render()))?;
    let lab = lab()?;
    let mut ifindexes = BTreeMap::new();
    for i in &compiled.interfaces {
        ifindexes.insert(i.name.clone(), ifindex(&lab.gw, &i.name)?);
    }
    let probe = pick(&compiled)?;
    // The generated devices sit on VLANs; the sender's frames are untagged (a routed
    // gateway sees a VLAN as its own interface, and there is no VLAN interface type here),
    // so the probe device is made untagged, for both dataplanes alike.
    compiled.devices[probe.device].vlan = None;
    // The sink owns the peer's address, so the gateway forwards the allowed packets to it.
    lab.sink.exec(&[
        "ip",
        "addr",
        "add",
        &format!("{}/32", probe.peer),
        "dev",
        &lab.sink_if,
    ])?;
    lab.sink
        .exec(&["ip", "addr", "add", "10.10.0.2/16", "dev", &lab.sink_if])?;
    lab.gw.exec(&[
        "ip",
        "route",
        "replace",
        &format!("{}/32", probe.peer),
        "dev",
        "uplink0",
    ])?;
    lab.sink
        .exec(&["ip", "route", "add", "default", "via", "10.10.0.1"])?;
    // Neighbor entries up front: no ARP in the measured path.
    let sink_mac = mac_of(&lab.sink, &lab.sink_if)?;
    lab.gw.exec(&[
        "ip",
        "neigh",
        "replace",
        &probe.peer.to_string(),
        "lladdr",
        &lazaret_tests::daemon::fmt_mac(sink_mac),
        "dev",
        "uplink0",
        "nud",
        "permanent",
    ])?;

    // === XDP ===
    let mut dp =
        Datapath::load(&LoadOptions::default()).context("loading the XDP program (needs root)")?;
    let mut xdp_apply = Vec::new();
    let mut contents = compiled.map_contents(dp.next_slot()?, 1, &ifindexes)?;
    check_verdicts(&contents, &lab.gw, &probe)?;
    for (name, ix) in &ifindexes {
        let side = if name == "uplink0" {
            SIDE_UPSTREAM
        } else {
            SIDE_DEVICES
        };
        dp.set_interface(*ix, side)?;
    }
    // Each timed install fills the empty slot of a freshly loaded program: a whole
    // generation, like nft's apply of a whole table. (Installing into a slot that already
    // holds this policy writes only the difference — nothing — and would time nothing.)
    for g in 1..=runs as u64 {
        let mut fresh = Datapath::load(&LoadOptions::default())?;
        let whole = compiled.map_contents(fresh.next_slot()?, g, &ifindexes)?;
        let t = Instant::now();
        fresh.install(&whole)?;
        xdp_apply.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    contents = compiled.map_contents(dp.next_slot()?, 1, &ifindexes)?;
    dp.install(&contents)?;
    let mode = in_ns(&lab.gw, || -> Result<AttachMode> {
        let m = dp.attach("dev0", AttachMode::Native)?;
        dp.attach("uplink0", AttachMode::Native)?;
        Ok(m)
    })??;
    eprintln!("dataplanes: XDP attached ({mode:?})");
    let (mut xdp_deny, mut xdp_allow, mut xdp_offered) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        eprintln!("dataplanes: XDP run {}/{runs}", i + 1);
        let idx = stats_index(Reason::DenyNoRule, SIDE_DEVICES) as usize;
        let mut dropped = || -> Result<u64> { Ok(dp.stats()?.get(idx).copied().unwrap_or(0)) };
        let (a, b, c) = measure(&lab, &probe, d, &mut dropped)?;
        xdp_deny.push(a);
        xdp_allow.push(b);
        xdp_offered.push(c);
    }
    drop(dp); // detaches

    // === The ceiling: every frame dropped at the hook, by a program that does nothing else ===
    let deny_frame = udp4(
        probe.mac,
        lab.gw_mac,
        probe.ip,
        probe.peer,
        40000,
        probe.deny_port,
    );
    let mut drop_all = Datapath::load_drop().context("loading the drop-all program")?;
    in_ns(&lab.gw, || drop_all.attach("dev0", AttachMode::Native))??;
    let mut ceiling = Vec::new();
    for i in 0..runs {
        eprintln!("dataplanes: drop-all run {}/{runs}", i + 1);
        let before = drop_all.dropped()?;
        blast(&lab.sender, &lab.sender_if, deny_frame.clone(), d)?;
        ceiling.push((drop_all.dropped()? - before) as f64 / d.as_secs_f64());
    }
    drop(drop_all); // detaches

    // === nftables ===
    let nft = Nft::in_netns(&lab.gw.name);
    let mut m = contents.clone();
    m.ifaces = ifindexes
        .iter()
        .filter(|(n, _)| *n == "dev0" || *n == "uplink0")
        .map(|(n, ix)| {
            (
                *ix,
                IfaceConfig::new(if n == "uplink0" {
                    SIDE_UPSTREAM
                } else {
                    SIDE_DEVICES
                }),
            )
        })
        .collect();
    let ifnames = ifindexes
        .iter()
        .map(|(n, i)| (*i, n.clone()))
        .collect::<BTreeMap<_, _>>();
    let (mut nft_render, mut nft_apply) = (Vec::new(), Vec::new());
    for g in 1..=runs as u32 + 1 {
        let t = Instant::now();
        let table = nft::render(
            &m,
            compiled.ranges(),
            &DeviceStates::default(),
            &RenderOptions {
                family: Family::Inet,
                table: "lazaret".into(),
                generation: g,
                ifnames: ifnames.clone(),
                stacked: Default::default(),
                log_group: None,
            },
        )?;
        let rendered = t.elapsed().as_secs_f64() * 1000.0;
        let took = nft.apply(&table)?.as_secs_f64() * 1000.0;
        if g > 1 {
            nft_render.push(rendered);
            nft_apply.push(took);
        }
    }
    let (mut nft_deny, mut nft_allow, mut nft_offered) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        eprintln!("dataplanes: nftables run {}/{runs}", i + 1);
        let gw = &lab.gw;
        let mut dropped = || nft_counter(gw, "deny_no_rule_devices");
        let (a, b, c) = measure(&lab, &probe, d, &mut dropped)?;
        nft_deny.push(a);
        nft_allow.push(b);
        nft_offered.push(c);
    }
    let _ = nft.delete(Family::Inet, "lazaret");

    // Rounded once, so the JSON and the markdown show the same figures.
    let (xd, nd) = (median(&xdp_deny).round(), median(&nft_deny).round());
    let (xa, na) = (median(&xdp_allow).round(), median(&nft_allow).round());
    let ratio = if nd > 0.0 { xd / nd } else { 0.0 };
    let allow_ratio = if na > 0.0 { xa / na } else { 0.0 };
    let (xap, nrp, nap) = (median(&xdp_apply), median(&nft_render), median(&nft_apply));
    let cost = Costs::of(median(&ceiling), xd, nd);
    let met = xd > 0.0 && ratio >= TARGET_RATIO;
    let out = json!({
        "quick": args.quick,
        "runs": runs,
        "seconds_per_run": secs,
        "policy": key,
        "frame_bytes": 60,
        "xdp_attach_mode": format!("{mode:?}").to_lowercase(),
        "deny_dropped_pps": { "xdp": xd.round(), "nftables": nd.round(), "ratio": round3(ratio) },
        "allow_forwarded_pps": { "xdp": xa.round(), "nftables": na.round(), "ratio": round3(allow_ratio) },
        "offered_pps_deny_path": { "xdp": median(&xdp_offered).round(), "nftables": median(&nft_offered).round() },
        "apply_ms": { "xdp_install": round3(xap), "nftables_render": round3(nrp), "nftables_apply": round3(nap) },
        "deny_ceiling_pps": cost.ceiling.round(),
        "deny_ceiling_ratio_to_nftables": round3(cost.ceiling_ratio()),
        "deny_cost_ns_per_packet": {
            "xdp": round3(cost.xdp_ns),
            "nftables": round3(cost.nft_ns),
            "ratio": cost.ratio().map(round3),
        },
        "target_deny_ratio": TARGET_RATIO,
        "deny_ratio_met": met,
    });
    let cost_ratio = cost.ratio().map_or(
        "— (XDP not measurably above the ceiling)".to_string(),
        |r| format!("{r:.0}×"),
    );
    let md = format!(
        "Same namespaces, same generated policy (10,000 devices / 100,000 rules), same sender (AF_PACKET `sendmmsg` in batches of 64, 60-byte UDP frames, one thread pinned to CPU 0, {secs} s per path), median of {runs} runs; XDP attached in {mode:?} mode on the gateway's veths.\n\n\
         | path | XDP | nftables | XDP / nftables | target | |\n|---|---:|---:|---:|---|---|\n\
         | deny: dropped packets/s | {xd:.0} | {nd:.0} | {ratio:.2}× (at most {ceiling_ratio:.2}× with this sender) | ≥ {TARGET_RATIO}× | {} |\n\
         | deny: ns per dropped packet beyond the ceiling ({ceiling:.0} packets/s dropped by a program that only drops) | {xns:.0} | {nns:.0} | {cost_ratio} | | |\n\
         | allow: forwarded packets/s | {xa:.0} | {na:.0} | {allow_ratio:.2}× | | |\n\
         | apply a whole generation | {xap:.0} ms (map fill + switch) | {nap:.0} ms (`nft -j -f`, + {nrp:.0} ms render) | | | |\n\n\
         The sender's syscalls and the link are paid by every dataplane on the same CPU, and they are much of a dropped packet's cost: a program that only drops reaches {ceiling:.0} packets/s, so no dataplane can show more than {ceiling_ratio:.2}× nftables' rate with this sender. The cost beyond that ceiling (`1/rate − 1/ceiling`, a difference of two measured rates: a few % of noise in either moves it a lot) says what each dataplane adds; the ceiling's path (an XDP hook) is not exactly nftables' (no XDP program), so it is an explanation, not the verdict.\n",
        verdict(met),
        ceiling = cost.ceiling,
        ceiling_ratio = cost.ceiling_ratio(),
        xns = cost.xdp_ns,
        nns = cost.nft_ns,
    );
    args.write(&out, &md)
}
