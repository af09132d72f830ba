//! The daemon under traffic: `kill -9` and restart, and 200 reloads, while allowed and denied
//! streams run through the gateway; a reload cutting a flow; `lazaret detach`. These run on
//! both dataplanes; the ABI upgrade is XDP's (pinned maps and links; nftables has no pins).
//! An interface removed and re-added under the daemon is `fault_interface`.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use lazaret_abi::{Reason, SIDE_DEVICES, SIDE_UPSTREAM};
use lazaret_tests::{
    daemon::{monitor_policy, round_trip, wait_event, workflow, Dataplane, Lab},
    on_both_dataplanes,
};

on_both_dataplanes!(
    kill_9_and_restart_under_traffic_keeps_enforcing,
    two_hundred_reloads_lose_no_allowed_packet,
    a_flow_the_new_policy_forbids_is_cut,
    detach_removes_enforcement,
    a_service_window_opens_and_closes_on_time,
    stopping_closes_the_open_service_windows,
);

const SERVER: &str = "10.10.0.20";

fn policy(lab_mac: [u8; 6], extra: bool) -> String {
    let mut wf = vec!["hl7-results", "device-sync"];
    let mut rules = workflow("hl7-results", "tcp", 2575) + &workflow("device-sync", "udp", 5000);
    if extra {
        wf.push("extra");
        rules += &workflow("extra", "udp", 5001);
    }
    monitor_policy(lab_mac, &wf, &rules)
}

/// Traffic running through the lab until `stop` is set; every loop is bounded by `limit`.
struct Traffic {
    stop: Arc<AtomicBool>,
    tcp_ok: Arc<AtomicU64>,
    tcp_broken: Arc<AtomicBool>,
    udp_sent: Arc<AtomicU64>,
    udp_lost: Arc<AtomicU64>,
    denied_received: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl Traffic {
    fn start(lab: &Lab, limit: Duration) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let deadline = Instant::now() + limit;
        let mut threads = Vec::new();
        // Server side: a TCP echo, a UDP echo and a UDP sink for denied packets.
        let (tcp_l, udp_echo, sink) = lab.net.server.run(|| -> std::io::Result<_> {
            Ok((
                TcpListener::bind((SERVER, 2575))?,
                UdpSocket::bind((SERVER, 5000))?,
                UdpSocket::bind((SERVER, 9999))?,
            ))
        })??;
        {
            let stop = stop.clone();
            threads.push(thread::spawn(move || {
                if let Ok((mut s, _)) = tcp_l.accept() {
                    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                    let mut buf = [0u8; 64];
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        match s.read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => {
                                if s.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                            Err(_) => continue,
                        }
                    }
                }
            }));
        }
        {
            let stop = stop.clone();
            threads.push(thread::spawn(move || {
                let _ = udp_echo.set_read_timeout(Some(Duration::from_millis(100)));
                let mut buf = [0u8; 64];
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    if let Ok((n, from)) = udp_echo.recv_from(&mut buf) {
                        let _ = udp_echo.send_to(&buf[..n], from);
                    }
                }
            }));
        }
        let denied_received = Arc::new(AtomicU64::new(0));
        {
            let (stop, count) = (stop.clone(), denied_received.clone());
            threads.push(thread::spawn(move || {
                let _ = sink.set_read_timeout(Some(Duration::from_millis(100)));
                let mut buf = [0u8; 64];
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    if sink.recv_from(&mut buf).is_ok() {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        // Device side: a long-lived TCP stream, a UDP request/response stream, and a
        // stream of denied UDP packets.
        let to = |port: u16| -> SocketAddr { SocketAddr::from(([10, 10, 0, 20], port)) };
        let (tcp, udp, denied) = lab.net.device.run(move || -> std::io::Result<_> {
            let tcp = TcpStream::connect_timeout(&to(2575), Duration::from_secs(3))?;
            let udp = UdpSocket::bind("10.20.0.11:0")?;
            udp.connect(to(5000))?;
            let denied = UdpSocket::bind("10.20.0.11:0")?;
            denied.connect(to(9999))?;
            Ok((tcp, udp, denied))
        })??;
        let tcp_ok = Arc::new(AtomicU64::new(0));
        let tcp_broken = Arc::new(AtomicBool::new(false));
        {
            let (stop, ok, broken) = (stop.clone(), tcp_ok.clone(), tcp_broken.clone());
            threads.push(thread::spawn(move || {
                let mut tcp = tcp;
                // Generous: a dropped segment would be retransmitted within this, a cut
                // flow never answers.
                let _ = tcp.set_read_timeout(Some(Duration::from_secs(3)));
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    seq += 1;
                    let msg = seq.to_be_bytes();
                    let mut back = [0u8; 8];
                    if tcp.write_all(&msg).is_err()
                        || tcp.read_exact(&mut back).is_err()
                        || back != msg
                    {
                        broken.store(true, Ordering::Relaxed);
                        break;
                    }
                    ok.fetch_add(1, Ordering::Relaxed);
                    thread::sleep(Duration::from_millis(10));
                }
            }));
        }
        let udp_sent = Arc::new(AtomicU64::new(0));
        let udp_lost = Arc::new(AtomicU64::new(0));
        {
            let (stop, sent, lost) = (stop.clone(), udp_sent.clone(), udp_lost.clone());
            threads.push(thread::spawn(move || {
                let _ = udp.set_read_timeout(Some(Duration::from_millis(500)));
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    seq += 1;
                    let msg = seq.to_be_bytes();
                    if udp.send(&msg).is_err() {
                        lost.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                    let mut back = [0u8; 8];
                    // Skip stale replies of earlier requests, if any.
                    loop {
                        match udp.recv(&mut back) {
                            Ok(8) if back == msg => break,
                            Ok(_) => continue,
                            Err(_) => {
                                lost.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                        }
                    }
                    thread::sleep(Duration::from_millis(5));
                }
            }));
        }
        {
            let stop = stop.clone();
            threads.push(thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    n += 1;
                    let _ = denied.send(&n.to_be_bytes());
                    thread::sleep(Duration::from_millis(5));
                }
            }));
        }
        Ok(Traffic {
            stop,
            tcp_ok,
            tcp_broken,
            udp_sent,
            udp_lost,
            denied_received,
            threads,
        })
    }

    fn finish(self) -> (u64, bool, u64, u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        (
            self.tcp_ok.load(Ordering::Relaxed),
            self.tcp_broken.load(Ordering::Relaxed),
            self.udp_sent.load(Ordering::Relaxed),
            self.udp_lost.load(Ordering::Relaxed),
            self.denied_received.load(Ordering::Relaxed),
        )
    }
}

/// (flow packets of both sides, denied packets of the devices side), read from the kernel.
fn counts(lab: &Lab) -> Result<(u64, u64)> {
    Ok((
        lab.packets(Reason::AllowFlow, SIDE_DEVICES)?
            + lab.packets(Reason::AllowFlow, SIDE_UPSTREAM)?,
        lab.packets(Reason::DenyNoRule, SIDE_DEVICES)?,
    ))
}

fn kill_9_and_restart_under_traffic_keeps_enforcing(dataplane: Dataplane) -> Result<()> {
    let mut lab = Lab::on(dataplane, |mac| policy(mac, false))?;
    lab.start()?;
    let traffic = Traffic::start(&lab, Duration::from_secs(30))?;
    thread::sleep(Duration::from_secs(1));
    let before = counts(&lab)?;

    let out = lab.kill9();
    // No daemon at all for a while: the pinned program and maps (or the nftables table)
    // keep enforcing.
    thread::sleep(Duration::from_millis(700));
    let during = counts(&lab)?;
    lab.start()?;
    thread::sleep(Duration::from_secs(1));
    let after = counts(&lab)?;
    let (tcp_ok, tcp_broken, udp_sent, udp_lost, denied) = traffic.finish();

    let flow = |s: &(u64, u64)| s.0;
    let dropped = |s: &(u64, u64)| s.1;
    assert!(
        !tcp_broken,
        "the allowed TCP stream broke ({tcp_ok} round trips before)\n{out}"
    );
    assert!(tcp_ok > 100, "the TCP stream ran ({tcp_ok} round trips)");
    assert_eq!(udp_lost, 0, "allowed UDP packets lost (of {udp_sent})");
    assert_eq!(denied, 0, "denied packets reached the server");
    assert!(
        flow(&during) > flow(&before),
        "enforcement continued without the daemon"
    );
    assert!(
        flow(&after) > flow(&during),
        "counters continue after the restart"
    );
    assert!(
        dropped(&after) > dropped(&during) && dropped(&during) > dropped(&before),
        "denied stream dropped throughout"
    );
    Ok(())
}

fn two_hundred_reloads_lose_no_allowed_packet(dataplane: Dataplane) -> Result<()> {
    let mut lab = Lab::on(dataplane, |mac| policy(mac, false))?;
    lab.start()?;
    let traffic = Traffic::start(&lab, Duration::from_secs(120))?;
    let mut gen = lab.ready_generation().context("generation")?;
    for i in 0..200 {
        lab.write_policy(&policy(lab.net.device_mac, i % 2 == 0))?;
        lab.signal(libc::SIGHUP);
        gen += 1;
        lab.wait_generation(gen, Duration::from_secs(10))?;
        // The watcher may reload once more for the same write: follow the daemon.
        gen = gen.max(lab.ready_generation().unwrap_or(gen));
    }
    // Let the watcher's reload of the last write land before measuring: the generation
    // must hold for a second (at most 10 s of waiting; under load it lands late).
    let mut gen = lab.ready_generation().context("generation")?;
    let settled = Instant::now() + Duration::from_secs(10);
    loop {
        thread::sleep(Duration::from_millis(1000));
        let now = lab.ready_generation().context("generation")?;
        if now == gen || Instant::now() > settled {
            break;
        }
        gen = now;
    }
    // An invalid policy changes nothing.
    lab.write_policy("this is [not valid toml")?;
    lab.signal(libc::SIGHUP);
    thread::sleep(Duration::from_millis(800));
    assert_eq!(
        lab.ready_generation(),
        Some(gen),
        "an invalid policy was not installed"
    );
    let (tcp_ok, tcp_broken, udp_sent, udp_lost, denied) = traffic.finish();
    let out = lab.stop();
    assert!(!tcp_broken, "the TCP stream broke during reloads\n{out}");
    assert!(
        tcp_ok > 100 && udp_sent > 100,
        "traffic ran ({tcp_ok} tcp, {udp_sent} udp)"
    );
    assert_eq!(
        udp_lost, 0,
        "allowed UDP packets lost during 200 reloads (of {udp_sent})"
    );
    assert_eq!(denied, 0);
    assert!(
        out.contains("reload refused"),
        "the invalid policy was logged:\n{out}"
    );
    Ok(())
}

fn a_flow_the_new_policy_forbids_is_cut(dataplane: Dataplane) -> Result<()> {
    let mut lab = Lab::on(dataplane, |mac| policy(mac, false))?;
    lab.start()?;
    let listener = lab.net.server.run(|| TcpListener::bind((SERVER, 2575)))??;
    let server = thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let _ = s.set_read_timeout(Some(Duration::from_secs(8)));
            let mut buf = [0u8; 16];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 || s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    });
    let mut tcp = lab.net.device.run(|| {
        TcpStream::connect_timeout(
            &SocketAddr::from(([10, 10, 0, 20], 2575)),
            Duration::from_secs(3),
        )
    })??;
    tcp.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut back = [0u8; 4];
    tcp.write_all(b"ping")?;
    tcp.read_exact(&mut back)?;
    // New policy: HL7 is no longer allowed.
    let gen = lab.ready_generation().context("generation")?;
    lab.write_policy(&monitor_policy(
        lab.net.device_mac,
        &["device-sync"],
        &workflow("device-sync", "udp", 5000),
    ))?;
    lab.signal(libc::SIGHUP);
    lab.wait_generation(gen + 1, Duration::from_secs(10))?;
    tcp.write_all(b"ping")?;
    assert!(
        tcp.read_exact(&mut back).is_err(),
        "the forbidden flow was cut"
    );
    drop(tcp);
    let _ = server.join();
    Ok(())
}

/// The vendor's remote session (HTTPS to the server) as a workflow, and a window granting it
/// to the monitor from `from` to `until` (Unix seconds).
fn vendor_window(from: i64, until: i64) -> String {
    let time = lazaret::policy::windows::format_time;
    format!(
        r#"
[workflows.vendor-remote]
description = "the vendor's remote session"
[[workflows.vendor-remote.rules]]
peer = "10.10.0.20/32"
proto = "tcp"
ports = [443]

[exceptions.vendor-visit]
devices = ["mon-icu-01"]
workflows = ["vendor-remote"]
from = {}
until = "{}"
ticket = "CHG-0042"
approved_by = "biomed on call"
"#,
        time(from),
        time(until)
    )
}

/// A daemon that stops closes its open windows: the pinned datapath keeps enforcing after
/// it, and nothing would close them on time. The vendor's session is cut.
fn stopping_closes_the_open_service_windows(dataplane: Dataplane) -> Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let mut lab = Lab::on(dataplane, |mac| {
        policy(mac, false) + &vendor_window(now - 60, now + 3600)
    })?;
    lab.start()?;
    lab.echo_servers(&[443])?;
    let mut session = lab.connect(443, Duration::from_secs(2))?;
    assert!(round_trip(&mut session), "the window is open");
    let log = lab.stop();
    assert!(
        log.contains("service window closed"),
        "closed on stop:\n{log}"
    );
    assert!(
        !round_trip(&mut session),
        "the session outlived the daemon's stop"
    );
    assert!(
        lab.connect(443, Duration::from_millis(800)).is_err(),
        "a new session passed after the daemon stopped"
    );
    Ok(())
}

/// A vendor service window (`[exceptions.*]`) is enforced by the clock alone: HTTPS to the
/// server (the vendor's remote session) is refused before it opens, passes while it is open (no reload asked for), and
/// is cut when it closes — the established session included — with an event each time.
fn a_service_window_opens_and_closes_on_time(dataplane: Dataplane) -> Result<()> {
    let mut lab = Lab::on(dataplane, |mac| policy(mac, false))?;
    lab.start()?;
    lab.echo_servers(&[443])?;
    let events = lab.follow_events()?;
    let unix = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    };
    let from = unix().ceil() as i64 + 4;
    let until = from + 5;
    let time = lazaret::policy::windows::format_time;
    let window = vendor_window(from, until);
    let gen = lab.ready_generation().context("generation")?;

    lab.write_policy(&(policy(lab.net.device_mac, false) + &window))?;
    lab.signal(libc::SIGHUP);
    lab.wait_generation(gen + 1, Duration::from_secs(10))?;
    let wait_until = |t: f64| {
        let left = t - unix();
        if left > 0.0 {
            thread::sleep(Duration::from_secs_f64(left));
        }
    };
    assert!(
        unix() < from as f64 - 1.0,
        "the lab took too long: the window opened already"
    );
    assert!(
        lab.connect(443, Duration::from_millis(800)).is_err(),
        "the session passed before the window opened"
    );
    wait_until(from as f64 + 0.5);
    let mut session = lab.connect(443, Duration::from_secs(2))?;
    assert!(
        round_trip(&mut session),
        "the session works while the window is open"
    );
    let opened = wait_event(&events, |e| e["kind"] == "exception_opened")?;
    assert_eq!(opened["name"], "vendor-visit");
    assert_eq!(opened["ticket"], "CHG-0042");
    assert_eq!(opened["devices"][0], "mon-icu-01");
    assert_eq!(lab.metric("lazaret_exceptions_open")?, Some(1.0));
    // An unfinished edit lands in the checkout: its reload is refused, and it cannot keep
    // the window open (the close compiles the policy in force, not the checkout).
    lab.write_policy("[site\nname = ")?;
    wait_until(until as f64 - 1.0);
    assert!(
        round_trip(&mut session),
        "the session works to the window's last second"
    );
    // Closed at `until`: within a second, the established session is cut and a new one refused.
    wait_until(until as f64 + 1.0);
    assert!(
        !round_trip(&mut session),
        "the established session outlived the window"
    );
    assert!(
        lab.connect(443, Duration::from_millis(800)).is_err(),
        "a new session passed after the window closed"
    );
    let closed = wait_event(&events, |e| e["kind"] == "exception_closed")?;
    assert_eq!(closed["until"], time(until));
    assert_eq!(lab.metric("lazaret_exceptions_open")?, Some(0.0));
    let log = lab.stop();
    assert!(
        log.contains("reload refused"),
        "the broken edit was refused:\n{log}"
    );
    for what in ["opened", "closed"] {
        assert!(
            log.contains(&format!("service window {what}")),
            "the window's {what} was logged:\n{log}"
        );
    }
    Ok(())
}

/// `lazaret detach` (in the gateway's namespace, the daemon stopped) removes enforcement:
/// the XDP links and pins, or the nftables table.
fn detach_removes_enforcement(dataplane: Dataplane) -> Result<()> {
    let mut lab = Lab::on(dataplane, |mac| policy(mac, false))?;
    lab.start()?;
    lab.echo_servers(&[2575, 443])?;
    assert!(
        lab.connect(443, Duration::from_millis(600)).is_err(),
        "443 is denied while enforcing"
    );
    lab.stop();
    let bin = lazaret_tests::lazaret_bin()?;
    let config = lab.config.to_string_lossy().into_owned();
    lab.net.gateway.exec(&[
        bin.to_str().context("binary path")?,
        "detach",
        "--config",
        &config,
    ])?;
    let listed = lazaret_tests::nftlab::list_text(&lab.net.gateway)?;
    assert!(!listed.contains("table inet lazaret"), "{listed}");
    let link = lab
        .net
        .gateway
        .exec(&["ip", "link", "show", &lab.net.gw_dev_if])?;
    assert!(
        !String::from_utf8_lossy(&link.stdout).contains("xdp"),
        "no XDP program left"
    );
    assert!(
        lab.connect(443, Duration::from_millis(800)).is_ok(),
        "nothing enforces after detach"
    );
    Ok(())
}

/// XDP only: the pins of an older ABI on bpffs (nftables has no pins).
#[test]
fn upgrade_from_an_older_abi_is_swapped_in_without_a_gap() -> Result<()> {
    let mut lab = Lab::new(|mac| policy(mac, false))?;
    lab.start()?;
    let traffic = Traffic::start(&lab, Duration::from_secs(30))?;
    thread::sleep(Duration::from_millis(500));
    // Pretend the pins were left by an older release: its maps and links under v0.
    lab.kill9();
    let current = lab
        .bpffs
        .path
        .join(format!("v{}", lazaret_abi::ABI_VERSION));
    let older = lab.bpffs.path.join("v0");
    std::fs::rename(&current, &older).context("rename the pin directory on bpffs")?;
    thread::sleep(Duration::from_millis(300));
    lab.start()?;
    thread::sleep(Duration::from_secs(1));
    let (tcp_ok, tcp_broken, udp_sent, udp_lost, denied) = traffic.finish();
    let out = lab.stop();
    assert!(!older.exists(), "the older ABI's pins were removed\n{out}");
    assert!(
        current.join(format!("link_{}", lab.net.gw_dev_if)).exists(),
        "the link is pinned under the new ABI"
    );
    assert!(
        !tcp_broken,
        "the TCP session survived the upgrade (its flow was carried over)\n{out}"
    );
    assert!(
        tcp_ok > 50 && udp_sent > 50,
        "traffic ran ({tcp_ok} tcp, {udp_sent} udp)"
    );
    assert_eq!(udp_lost, 0, "no allowed packet lost across the upgrade");
    assert_eq!(denied, 0, "no denied packet passed during the upgrade");
    assert!(out.contains("flows carried over"), "{out}");
    Ok(())
}

/// What a [`Recorder`] was asked to do, in order.
type Log = Arc<std::sync::Mutex<Vec<String>>>;

/// A dataplane that enforces nothing and records every call: the shell under test drives
/// it exactly as it drives XDP (it answers for the XDP enforcers).
struct Recorder(Log);

impl Recorder {
    fn note(&self, what: String) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(what);
    }
}

mod recorder {
    use std::{
        collections::{BTreeMap, BTreeSet},
        net::IpAddr,
        path::Path,
    };

    use lazaret::dataplane::{
        Attach, Counters, Dataplane, DataplaneError, Enforcer, EventDrain, Generation, Retired,
        Staged, Tampering,
    };

    use super::Recorder;

    impl Dataplane for Recorder {
        fn serves(&self, e: Enforcer) -> bool {
            e.is_xdp()
        }
        fn attach(&mut self, a: &Attach<'_>) -> Result<Enforcer, DataplaneError> {
            self.note(format!("attach {} {}", a.iface.name, a.ifindex));
            Ok(Enforcer::XdpNative)
        }
        fn release(&mut self, interface: &str, _pin_dir: &Path) {
            self.note(format!("release {interface}"));
        }
        fn attached_all(&mut self, _pin_dir: &Path) {}
        fn stage(&mut self, g: &Generation<'_>, staged: Staged) -> Result<(), DataplaneError> {
            self.note(format!("stage {}", g.number));
            staged();
            Ok(())
        }
        fn commit(&mut self, _retired: Retired) -> Result<(), DataplaneError> {
            self.note("commit".into());
            Ok(())
        }
        fn tampered(&mut self, _enforcing: &[(String, u32)], _held: bool) -> Vec<Tampering> {
            Vec::new()
        }
        fn restore(&mut self, _pins: &[([u8; 6], String)]) -> Result<(), DataplaneError> {
            Ok(())
        }
        fn events(
            &mut self,
            _tx: &tokio::sync::mpsc::Sender<lazaret_abi::Event>,
        ) -> Result<Option<Box<dyn EventDrain>>, DataplaneError> {
            Ok(None)
        }
        fn counters(&mut self) -> Result<Option<Box<dyn Counters>>, DataplaneError> {
            Ok(None)
        }
        fn set_quarantine(&mut self, device: u64, quarantine: u8) -> Result<(), DataplaneError> {
            self.note(format!("quarantine {device:x} {quarantine}"));
            Ok(())
        }
        fn set_local(&mut self, _addrs: &BTreeSet<IpAddr>) -> Result<(), DataplaneError> {
            Ok(())
        }
        fn pins(
            &mut self,
            _ifindexes: &BTreeMap<String, u32>,
        ) -> Result<Vec<([u8; 6], String)>, DataplaneError> {
            Ok(Vec::new())
        }
        fn restore_pins(
            &mut self,
            _pins: &[([u8; 6], String)],
            _ifindexes: &BTreeMap<String, u32>,
        ) -> Result<(), DataplaneError> {
            Ok(())
        }
        fn release_pin(&mut self, _mac: [u8; 6]) -> Result<bool, DataplaneError> {
            Ok(false)
        }

        fn release_addresses(&mut self, _mac: [u8; 6]) -> Result<usize, DataplaneError> {
            Ok(0)
        }
    }
}

/// What the shell under test answered: its `status`, its reply to a quarantine of
/// `quarantine`, and every call its dataplane saw.
struct ShellRun {
    status: lazaret::daemon::api::Status,
    quarantined: lazaret::daemon::control::Reply,
    log: Vec<String>,
    /// What the daemon's `[syslog]` output sent to a UDP collector in the namespace.
    syslog: Vec<String>,
}

/// Runs the daemon's shell over a [`Recorder`] and two interfaces (dev0, up0) that exist
/// only in the injected lookup, with `policy` and `config_extra` in its configuration; asks
/// for `status` and to isolate `quarantine`, collects its syslog messages (until one
/// contains `syslog_until`, at most 5 s; without it, what has arrived), then shuts it down.
/// No BPF is loaded; it runs in a namespace of its own so that nftables, enforcing nowhere,
/// can touch nothing of the host's.
fn run_shell(
    policy: &str,
    config_extra: &str,
    quarantine: &str,
    syslog_until: Option<&str>,
) -> Result<ShellRun> {
    use lazaret::daemon::{api, control, quarantine::Action, Deps};
    use lazaret::dataplane::{nft::NftDataplane, Dataplanes};

    let tmp = lazaret_tests::netns::TempDir::new()?;
    let ns =
        lazaret_tests::netns::Netns::new(format!("{}sh", lazaret_tests::netns::unique_prefix()))?;
    let policy_dir = tmp.path.join("policy");
    std::fs::create_dir_all(&policy_dir)?;
    std::fs::write(policy_dir.join("site.toml"), policy)?;
    let socket = tmp.path.join("control.sock");
    // The SIEM: a UDP socket on the namespace's loopback.
    let collector = ns.within(|| std::net::UdpSocket::bind("127.0.0.1:0"))??;
    let text = format!(
        "policy_dir = \"{}\"\nstate_dir = \"{}\"\npin_dir = \"{}\"\ncontrol_socket = \"{}\"\n\
         metrics_listen = \"127.0.0.1:0\"\n{config_extra}\n\
         [[interfaces]]\nname = \"dev0\"\nside = \"devices\"\n\
         [[interfaces]]\nname = \"up0\"\nside = \"upstream\"\n\
         [syslog]\naddress = \"udp://127.0.0.1:{}\"\n",
        policy_dir.display(),
        tmp.path.join("state").display(),
        tmp.path.join("pins").display(),
        socket.display(),
        collector.local_addr()?.port(),
    );
    let syslog_until = syslog_until.map(str::to_string);
    let config = lazaret::config::Config::parse(&text, &tmp.path.join("lazaret.toml"))?;
    let log: Log = Arc::default();
    let deps = {
        let log = log.clone();
        Deps {
            dataplanes: Box::new(move |_config, registry| {
                Ok(Dataplanes {
                    nft: NftDataplane::new(registry)
                        .map_err(lazaret::dataplane::DataplaneError::Metrics)?,
                    xdp: None,
                    others: vec![Box::new(Recorder(log))],
                })
            }),
            ifindex: |name| match name {
                "dev0" => Some(4001),
                "up0" => Some(4002),
                _ => None,
            },
        }
    };
    let quarantine = quarantine.to_string();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (served, asked) = ns.within(move || {
        thread::scope(|scope| {
            // The client: a thread of its own, which stops the daemon whatever happens to it
            // (a panic drops `stop_tx`, which stops it too).
            let client = scope.spawn(
                move || -> Result<(api::Status, control::Reply, Vec<String>)> {
                    let _stop = stop_tx;
                    let up = lazaret_tests::netns::wait_until(Duration::from_secs(20), || {
                        control::call(&socket, &control::Request::Status {}).is_ok()
                    });
                    anyhow::ensure!(up, "the control socket never answered");
                    let status: api::Status = control::call(&socket, &control::Request::Status {})?
                        .into_typed()
                        .map_err(anyhow::Error::msg)?;
                    let quarantined = control::call(
                        &socket,
                        &control::Request::QuarantineAdd {
                            device: quarantine,
                            action: Action::Isolate,
                            reason: "shell test".into(),
                        },
                    )?;
                    // Bounded: 5 s at most, 100 ms per wait.
                    let mut syslog = Vec::new();
                    let until = std::time::Instant::now() + Duration::from_secs(5);
                    collector.set_read_timeout(Some(Duration::from_millis(100)))?;
                    let mut buf = vec![0u8; 8192];
                    loop {
                        if let Ok(n) = collector.recv(&mut buf) {
                            syslog.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                        }
                        let done = match &syslog_until {
                            Some(want) => syslog.iter().any(|m| m.contains(want.as_str())),
                            None => true,
                        };
                        if done || std::time::Instant::now() > until {
                            break;
                        }
                    }
                    Ok((status, quarantined, syslog))
                },
            );
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let served = runtime.block_on(lazaret::daemon::run(config, deps, async {
                let _ = stop_rx.await;
            }));
            let asked = client
                .join()
                .map_err(|_| anyhow::anyhow!("the client panicked"))?;
            anyhow::Ok((served, asked))
        })
    })??;
    if let Err(e) = &served {
        anyhow::bail!(
            "the daemon's shell failed: {e}; the dataplane was asked: {:?}",
            log.lock().map(|l| l.clone())
        );
    }
    let (status, quarantined, syslog) = asked?;
    let log = log
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    Ok(ShellRun {
        status,
        quarantined,
        log,
        syslog,
    })
}

/// The daemon's shell (`daemon::run`) over a dataplane it did not build: it stages and
/// commits the policy through it, attaches both interfaces, answers `status`, applies a
/// quarantine through it, and returns on shutdown.
#[test]
fn the_shell_drives_the_dataplanes_it_is_given() -> Result<()> {
    use lazaret::daemon::api;
    let rules = workflow("hl7-results", "tcp", 2575);
    let ShellRun {
        status,
        quarantined,
        log,
        syslog,
    } = run_shell(
        &monitor_policy([2, 0, 0, 0, 0, 0x11], &["hl7-results"], &rules),
        "",
        "mon-icu-01",
        Some(" quarantine - "),
    )?;
    assert_eq!(status.generation, 1, "{status:?}");
    assert_eq!(status.devices, 1);
    assert_eq!(
        status.interfaces.values().copied().collect::<Vec<_>>(),
        [api::InterfaceMode::Native, api::InterfaceMode::Native],
        "both interfaces enforced by the dataplane given"
    );
    assert!(quarantined.ok, "{quarantined:?}");
    let position = |what: &str| log.iter().position(|l| l.starts_with(what));
    let (stage, commit) = (position("stage 1"), position("commit"));
    let (dev0, up0) = (position("attach dev0 4001"), position("attach up0 4002"));
    assert!(stage < commit && commit < dev0 && dev0 < up0, "{log:?}");
    assert!(
        log.iter().any(|l| l.starts_with("quarantine ")
            && l.ends_with(&format!(" {}", lazaret_abi::QUARANTINE_ISOLATE))),
        "the quarantine reached the dataplane: {log:?}"
    );
    // ... and the SIEM, as an RFC 5424 warning (local4: 20 * 8 + 4) carrying the record.
    let sent = syslog
        .iter()
        .find(|m| m.contains(" quarantine - "))
        .ok_or_else(|| anyhow::anyhow!("no quarantine reached syslog: {syslog:?}"))?;
    assert!(sent.starts_with("<164>1 "), "{sent}");
    assert!(sent.contains(r#""device":"mon-icu-01""#), "{sent}");
    Ok(())
}

/// One gateway of a fleet (`gateway` in its configuration, `[site.gateways.*]` in the
/// policy): it enforces the devices behind its own interfaces and nothing of the other
/// gateway's, which it cannot quarantine either; it needs no interface of the other's.
#[test]
fn a_gateway_of_a_fleet_enforces_its_own_devices_only() -> Result<()> {
    let rules = workflow("hl7-results", "tcp", 2575);
    let policy = monitor_policy([2, 0, 0, 0, 0, 0x11], &["hl7-results"], &rules)
        .replace(
            "[site.essentials]",
            "[site.interfaces.dev0]\nside = \"devices\"\n\
             [site.interfaces.dev1]\nside = \"devices\"\n\
             [site.interfaces.up0]\nside = \"upstream\"\n\
             [site.gateways.ward-a]\ninterfaces = [\"dev0\", \"up0\"]\nmembers = [\"gw-a1\", \"gw-a2\"]\n\
             [site.gateways.ward-b]\ninterfaces = [\"dev1\", \"up0\"]\n\
             [site.essentials]",
        )
        .replace(
            "ipv4 = \"10.20.0.11\"",
            "ipv4 = \"10.20.0.11\"\ninterface = \"dev0\"\n\n\
             [[devices]]\nid = \"mon-b-01\"\nclass = \"patient-monitor\"\nipv4 = \"10.21.0.11\"\ninterface = \"dev1\"",
        );
    let run = run_shell(
        &policy,
        "gateway = \"ward-a\"\nmember = \"gw-a2\"",
        "mon-b-01",
        None,
    )?;
    assert_eq!(run.status.generation, 1, "{:?}", run.status);
    assert_eq!(
        run.status.devices, 1,
        "ward-b's monitor is not enforced here"
    );
    assert!(
        !run.quarantined.ok,
        "a device of another gateway cannot be quarantined here: {:?}",
        run.quarantined
    );
    assert!(
        !run.log.iter().any(|l| l.starts_with("quarantine ")),
        "nothing reached the dataplane: {:?}",
        run.log
    );
    Ok(())
}
