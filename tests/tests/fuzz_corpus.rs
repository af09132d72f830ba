//! The fuzz corpora as regression tests: every file committed under `fuzz/corpus/TARGET/`
//! (seeds, and every crash the fuzzer found, once fixed) goes through the same harness
//! function the libFuzzer target calls (`lazaret::fuzzing`), so `cargo test` catches a
//! regression without nightly or cargo-fuzz. The packet corpus also runs through the real
//! XDP program, compared with the host twin (root needed, as for every datapath test).
//!
//! `write_seed_corpora` (ignored) regenerates the seeds from the example policy, the shipped
//! configuration and the frame builders: `cargo test -p lazaret-tests --test fuzz_corpus --
//! --ignored write_seed_corpora`.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use lazaret::{
    fuzzing::{self, PacketHarness},
    policy,
};
use lazaret_tests::{frames::*, reliability::record_figure};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = root().join("fuzz/corpus").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let out: Vec<_> = files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, bytes)
        })
        .collect();
    assert!(
        out.len() >= 3,
        "{}: only {} files",
        dir.display(),
        out.len()
    );
    out
}

fn run_all(test: &str, target: &str, f: impl FnMut(&[u8])) {
    let files = corpus(target);
    let mut f = f;
    for (path, bytes) in &files {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(bytes)));
        assert!(r.is_ok(), "{} fails its harness", path.display());
    }
    let regressions = files
        .iter()
        .filter(|(p, _)| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("regression-"))
        })
        .count();
    record_figure(
        &format!("fuzz_corpus::{test}"),
        &format!(
            "{} corpus files pass ({regressions} fuzzer findings)",
            files.len()
        ),
    );
}

#[test]
fn policy_corpus_passes() {
    run_all("policy_corpus_passes", "policy", fuzzing::policy);
}

#[test]
fn imports_corpus_passes() {
    run_all("imports_corpus_passes", "imports", fuzzing::imports);
}

#[test]
fn config_corpus_passes() {
    run_all("config_corpus_passes", "config", fuzzing::config);
}

#[test]
fn control_corpus_passes() {
    run_all("control_corpus_passes", "control", fuzzing::control);
}

#[test]
fn packet_corpus_passes_through_xdp_and_the_twin() {
    let mut h = PacketHarness::new(&root().join("policies"), true);
    assert!(
        h.xdp_loaded(),
        "the XDP program did not load (run as root: CAP_BPF and CAP_NET_ADMIN)"
    );
    run_all(
        "packet_corpus_passes_through_xdp_and_the_twin",
        "packet",
        |bytes| h.run(bytes),
    );
}

/// The seeds must exercise something: real policies parse, the shipped config loads, and
/// the sample requests decode (a corpus of rejected inputs would teach the fuzzer little).
#[test]
fn seeds_include_valid_inputs() {
    let valid_policies = corpus("policy")
        .iter()
        .filter(|(_, b)| {
            std::str::from_utf8(b).is_ok_and(|t| {
                policy::parse_sources(vec![policy::SourceFile::new("s".into(), t.into())]).is_ok()
            })
        })
        .count();
    assert!(valid_policies >= 2, "{valid_policies} valid policy seeds");
    let valid_requests = corpus("control")
        .iter()
        .filter(|(_, b)| lazaret::daemon::control::decode(b).is_ok())
        .count();
    assert!(valid_requests >= 5, "{valid_requests} valid control seeds");
    record_figure(
        "fuzz_corpus::seeds_include_valid_inputs",
        &format!("{valid_policies} valid policy seeds, {valid_requests} valid control seeds"),
    );
}

// === seeds ===

fn record(out: &mut Vec<u8>, upstream: bool, frame: &[u8]) {
    let n = frame.len().min(255);
    out.push(u8::from(upstream));
    out.push(n as u8);
    out.extend_from_slice(&frame[..n]);
}

const GW: Mac = [0x02, 0, 0, 0, 0, 0xfe];

fn packet_seeds() -> Vec<(String, Vec<u8>)> {
    let dir = root().join("policies");
    let (p, compiled) = policy::load_and_compile(&dir).expect("example policy");
    let ifs = p.site.interfaces.keys().map(|n| (n.clone(), 1)).collect();
    let contents = compiled.map_contents(0, 1, &ifs).expect("contents");
    let peers: Vec<Ipv4Addr> = contents
        .peer4
        .iter()
        .map(|(_, k, _)| Ipv4Addr::from(k.addr))
        .take(4)
        .collect();
    let mut seeds = Vec::new();
    for (n, (_, d)) in contents.devices.iter().enumerate().take(8) {
        let Some(ip) = contents
            .dev_ip4
            .iter()
            .find(|(_, r)| r.id == d.id)
            .map(|(k, _)| Ipv4Addr::from(k.addr))
        else {
            continue;
        };
        let mut s = Vec::new();
        for (i, peer) in peers.iter().enumerate() {
            let port = [443, 2575, 104, 11112][i % 4];
            let sport = 40000 + i as u16;
            record(
                &mut s,
                false,
                &tcp4(d.mac, GW, ip, *peer, sport, port, TCP_SYN),
            );
            record(
                &mut s,
                true,
                &tcp4(GW, d.mac, *peer, ip, port, sport, TCP_SYN | TCP_ACK),
            );
            record(
                &mut s,
                false,
                &tcp4(d.mac, GW, ip, *peer, sport, port, TCP_ACK),
            );
        }
        record(&mut s, false, &udp4(d.mac, GW, ip, peers[0], 40100, 53));
        // Isolate device n (flags: set quarantine, value 2, device index n), then the
        // first session's next packet: the quarantine cuts it.
        s.push(0b1000 | (2 << 1) | ((n as u8 & 0x0f) << 4));
        s.push(0);
        record(
            &mut s,
            false,
            &tcp4(d.mac, GW, ip, peers[0], 40000, 443, TCP_ACK),
        );
        let a = arp(1, d.mac, ip, [0; 6], peers[0]);
        record(&mut s, false, &ethernet([0xff; 6], d.mac, &[], ETH_ARP, &a));
        seeds.push((format!("device-{n}"), s));
    }
    // Tagged, fragmented, IPv6 and ICMP frames from an unknown source.
    let unknown = [0x02, 0xaa, 0, 0, 0, 1];
    let src = Ipv4Addr::new(10, 99, 0, 1);
    let mut s = Vec::new();
    let l4 = tcp(1234, 443, TCP_SYN, &[]);
    let ip = ipv4(src, peers[0], 6, &l4, &Ipv4Opts::default());
    record(
        &mut s,
        false,
        &ethernet(GW, unknown, &[(ETH_8021Q, 20)], ETH_IPV4, &ip),
    );
    let frag = Ipv4Opts {
        more_fragments: true,
        id: 7,
        ..Ipv4Opts::default()
    };
    record(
        &mut s,
        false,
        &ethernet(
            GW,
            unknown,
            &[],
            ETH_IPV4,
            &ipv4(src, peers[0], 17, &udp(1, 2, &[0; 16]), &frag),
        ),
    );
    let ping = ipv4(src, peers[0], 1, &icmp(8, 0, 1, 1), &Ipv4Opts::default());
    record(&mut s, true, &ethernet(unknown, GW, &[], ETH_IPV4, &ping));
    let v6 = ipv6(
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1),
        Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
        &[],
        58,
        &icmpv6_nd(135, Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2)),
    );
    record(&mut s, false, &ethernet(GW, unknown, &[], ETH_IPV6, &v6));
    seeds.push(("unknown-mixed".into(), s));
    seeds
}

fn policy_seeds() -> Vec<(String, Vec<u8>)> {
    // Every example file alone (mostly positioned errors: names defined elsewhere), and the
    // whole example hospital as one file (a valid policy).
    let mut files = Vec::new();
    let mut stack = vec![root().join("policies")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("policies").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "toml") {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut seeds = Vec::new();
    let mut all = Vec::new();
    for f in &files {
        let text = std::fs::read(f).expect("read");
        all.extend_from_slice(&text);
        all.push(b'\n');
        let name = f
            .strip_prefix(root().join("policies"))
            .expect("under policies")
            .display()
            .to_string()
            .replace('/', "-");
        seeds.push((name, text));
    }
    seeds.push(("whole-hospital.toml".into(), all));
    let lab = lazaret_tests::daemon::monitor_policy(
        [2, 0, 0, 0, 0, 0x11],
        &["hl7"],
        &lazaret_tests::daemon::workflow("hl7", "tcp", 2575),
    );
    seeds.push(("lab.toml".into(), lab.into_bytes()));
    seeds
}

fn control_seeds() -> Vec<(String, Vec<u8>)> {
    [
        ("status", r#"{"cmd":"status"}"#),
        ("devices", r#"{"cmd":"devices"}"#),
        ("unknown_devices", r#"{"cmd":"unknown_devices"}"#),
        ("flows", r#"{"cmd":"flows","device":"pump-icu-01"}"#),
        ("quarantine_list", r#"{"cmd":"quarantine_list"}"#),
        (
            "quarantine_add",
            r#"{"cmd":"quarantine_add","device":"pump-icu-01","action":"isolate","reason":"port scan"}"#,
        ),
        (
            "quarantine_release",
            r#"{"cmd":"quarantine_release","device":"pump-icu-01","reason":"reimaged"}"#,
        ),
        ("unknown_field", r#"{"cmd":"status","verbose":true}"#),
        ("bad_action", r#"{"cmd":"quarantine_add","device":"x","action":"burn","reason":""}"#),
    ]
    .into_iter()
    .map(|(n, t)| (n.to_string(), t.as_bytes().to_vec()))
    .collect()
}

fn config_seeds() -> Vec<(String, Vec<u8>)> {
    let shipped = std::fs::read(root().join("deploy/lazaret.toml")).expect("deploy config");
    let minimal =
        b"policy_dir = \"p\"\n[[interfaces]]\nname = \"icu0\"\nside = \"devices\"\n".to_vec();
    let bad = b"policy_dir = \"p\"\nmetrics_listen = \"nowhere\"\n[[interfaces]]\nname = \"icu0\"\nside = \"north\"\n".to_vec();
    vec![
        ("deploy-lazaret.toml".into(), shipped),
        ("minimal.toml".into(), minimal),
        ("bad-values.toml".into(), bad),
    ]
}

#[test]
#[ignore = "writes fuzz/corpus/*/seed-*: run by hand to regenerate the seeds"]
fn write_seed_corpora() {
    for (target, seeds) in [
        ("policy", policy_seeds()),
        ("config", config_seeds()),
        ("control", control_seeds()),
        ("packet", packet_seeds()),
    ] {
        let dir = root().join("fuzz/corpus").join(target);
        std::fs::create_dir_all(&dir).expect("corpus dir");
        for (name, bytes) in seeds {
            std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("write seed");
        }
    }
}
