//! The active/standby pair's labs (docs/ha.md), shared by `tests/ns_ha.rs` and
//! `benches/ha.rs`: member labs with `[ha]`, the replication between them, the shipped
//! keepalived and conntrackd configurations run in the members' namespaces, and [`Pair`]: two
//! members on one device segment and one upstream segment.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};

use crate::{
    daemon::{fmt_mac, pump_policy, Dataplane, Lab},
    lazaret_bin,
    netns::{mac_of, unique_prefix, veth, wait_until, ChildGuard, Netns},
};

/// The gateway addresses keepalived moves in these tests: on the device side and the
/// upstream side of each member's lab, next to its own addresses (10.20.0.1, 10.10.0.1).
pub const VIP_DEV: &str = "10.20.0.250";
pub const VIP_UP: &str = "10.10.0.250";

/// A member's lab on XDP (see [`ha_lab_on`]).
pub fn ha_lab() -> Result<Lab> {
    ha_lab_on(Dataplane::Xdp)
}

/// A member's lab on `dataplane`: the pump lab with `[ha] virtual_addresses`, the pump
/// also sending audit records to the server (syslog, UDP 514: a datagram stream to time a
/// failover with), and an echo server on the pump's session port. Not started.
pub fn ha_lab_on(dataplane: Dataplane) -> Result<Lab> {
    let lab = Lab::on(dataplane, |mac| {
        let pump = pump_policy("ha lab", mac, Some("isolate"), false);
        let classes = "workflows = [\"pump-server-sync\"]";
        let with_audit = "workflows = [\"pump-server-sync\", \"audit-records\"]";
        format!("{}{AUDIT_WORKFLOW}", pump.replacen(classes, with_audit, 1))
    })?;
    lab.append_config(&format!(
        "\n[ha]\nvirtual_addresses = [\"{VIP_DEV}\", \"{VIP_UP}\"]\n"
    ))?;
    lab.echo_servers(&[2575])?;
    Ok(lab)
}

/// The pump's audit records to the lab server: IHE ATNA over syslog, UDP 514 (the device
/// sends; docs/clinical-flows.md row 16).
const AUDIT_WORKFLOW: &str = r#"
[workflows.audit-records]
description = "Audit records (IHE ATNA, syslog)"
[[workflows.audit-records.rules]]
device = "class:infusion-pump"
peer = "10.10.0.20/32"
proto = "udp"
ports = [514]
initiator = "device"
"#;

/// The syslog port of [`AUDIT_WORKFLOW`].
pub const AUDIT_PORT: u16 = 514;

/// The member's role, as `lazaret status` reports it.
pub fn role(lab: &Lab) -> Result<String> {
    let status = lab.cli(&["status"])?;
    status["ha"]["role"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("no ha role in the status: {status}"))
}

/// Waits up to `within` for the member's role to be `want`.
pub fn wait_role(lab: &Lab, want: &str, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let now = role(lab)?;
        if now == want {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the member is {now}, not {want}, after {within:?}");
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Whether `addr` is on an interface of `ns`.
pub fn holds(ns: &Netns, addr: &str) -> Result<bool> {
    let out = ns.exec(&["ip", "-br", "addr"])?;
    Ok(String::from_utf8_lossy(&out.stdout).contains(&format!("{addr}/")))
}

/// The file `deploy/<file>` with each `(from, to)` of `swaps` put in (the first `from`
/// replaced); an error names a `from` the shipped file no longer has.
pub fn shipped<const N: usize>(file: &str, swaps: [(&str, String); N]) -> Result<String> {
    let mut conf = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy")
            .join(file),
    )?;
    for (from, to) in swaps {
        ensure!(
            conf.contains(from),
            "the shipped {file} no longer has {from:?}"
        );
        conf = conf.replacen(from, &to, 1);
    }
    Ok(conf)
}

/// One member: its lab (daemon), its end of the VRRP link and its keepalived.
pub struct Member {
    pub lab: Lab,
    pub keepalived: Option<ChildGuard>,
}

/// `deploy/keepalived/keepalived.conf` for member `n` (0 or 1) of the pair: the shipped
/// file with this lab's interface names, addresses, daemon binary and configuration put
/// in. The binary is a copy in the lab's directory: keepalived's script security refuses
/// a script on a path others may write to, which a build tree can be.
pub fn keepalived_conf(lab: &Lab, n: usize, link: &str) -> Result<String> {
    let (me, peer, prio) = if n == 0 {
        ("192.168.255.1", "192.168.255.2", "150")
    } else {
        ("192.168.255.2", "192.168.255.1", "100")
    };
    let bin = lab.tmp.path.join("lazaret");
    std::fs::copy(lazaret_bin()?, &bin)?;
    let status = format!("{} status --config {}", bin.display(), lab.config.display());
    let swaps = [
        ("router_id lazaret-a", format!("router_id lazaret-{n}")),
        (
            "/usr/bin/lazaret status --config /etc/lazaret/lazaret.toml",
            status,
        ),
        ("interface ha0", format!("interface {link}")),
        (
            "unicast_src_ip 192.168.255.1",
            format!("unicast_src_ip {me}"),
        ),
        ("        192.168.255.2 ", format!("        {peer} ")),
        ("priority 150", format!("priority {prio}")),
        (
            "        eth1.20
        eth0
",
            format!(
                "        {}
        {}
",
                lab.net.gw_dev_if, lab.net.gw_up_if
            ),
        ),
        (
            "10.20.0.1/24 dev eth1.20",
            format!("{VIP_DEV}/24 dev {}", lab.net.gw_dev_if),
        ),
        (
            "10.10.0.1/24 dev eth0",
            format!("{VIP_UP}/24 dev {}", lab.net.gw_up_if),
        ),
    ];
    shipped("keepalived/keepalived.conf", swaps)
}

impl Member {
    pub fn start_keepalived(&mut self, n: usize, link: &str) -> Result<()> {
        let dir = &self.lab.tmp.path;
        let conf = dir.join("keepalived.conf");
        std::fs::write(&conf, keepalived_conf(&self.lab, n, link)?)?;
        let (pid, vrrp) = (dir.join("keepalived.pid"), dir.join("vrrp.pid"));
        let check = self.lab.net.gateway.exec(&[
            "keepalived",
            "--config-test",
            "-f",
            &conf.to_string_lossy(),
        ])?;
        ensure!(
            check.status.success(),
            "keepalived refuses the configuration: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        self.keepalived = Some(self.lab.net.gateway.spawn(&[
            "keepalived",
            "--dont-fork",
            "--log-console",
            "--no-syslog",
            "--vrrp",
            "-f",
            &conf.to_string_lossy(),
            "-p",
            &pid.to_string_lossy(),
            "-r",
            &vrrp.to_string_lossy(),
        ])?);
        Ok(())
    }

    pub fn log(&self) -> String {
        self.keepalived
            .as_ref()
            .map(ChildGuard::output)
            .unwrap_or_default()
    }
}

/// The pair's pre-shared key in these tests, and another one.
pub const KEY: &str = "6c617a617265742d706169722d6b6579";
pub const OTHER_KEY: &str = "616e6f746865722d6b65792d3132333435";

/// Two members joined by their dedicated link, replicating quarantines: member a with
/// [`KEY`], member b with `b_key`. Not started.
pub fn replicating_pair(b_key: &str) -> Result<[Lab; 2]> {
    replicating_pair_on(Dataplane::Xdp, b_key)
}

/// [`replicating_pair`] on `dataplane`.
pub fn replicating_pair_on(dataplane: Dataplane, b_key: &str) -> Result<[Lab; 2]> {
    use std::os::unix::fs::PermissionsExt as _;
    let labs = [ha_lab_on(dataplane)?, ha_lab_on(dataplane)?];
    veth(
        &labs[0].net.gateway,
        "ha-a",
        Some("192.168.255.1/24"),
        &labs[1].net.gateway,
        "ha-b",
        Some("192.168.255.2/24"),
    )?;
    for (n, lab) in labs.iter().enumerate() {
        let (me, peer, key) = if n == 0 { (1, 2, KEY) } else { (2, 1, b_key) };
        let file = lab.tmp.path.join("ha.key");
        std::fs::write(&file, key)?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
        // Into the [ha] table ha_lab appended last.
        lab.append_config(&format!(
            "listen = \"192.168.255.{me}:9465\"\npeer = \"192.168.255.{peer}:9465\"\nkey_file = \"{}\"\n",
            file.display()
        ))?;
    }
    Ok(labs)
}

/// Starts both members of a [`replicating_pair`] with member a holding the gateway
/// addresses (so active), and waits for it to be active and connected to member b.
pub fn start_with_a_active(a: &mut Lab, b: &mut Lab) -> Result<()> {
    for (vip, ifname) in [(VIP_DEV, &a.net.gw_dev_if), (VIP_UP, &a.net.gw_up_if)] {
        a.net
            .gateway
            .exec(&["ip", "addr", "add", &format!("{vip}/24"), "dev", ifname])?;
    }
    a.start()?;
    b.start()?;
    wait_role(a, "active", Duration::from_secs(2))?;
    wait_metric(a, "lazaret_ha_sync_up", 1.0, Duration::from_secs(5))
}

/// Waits up to `within` for `series` of the member's metrics to reach `at_least`.
pub fn wait_metric(lab: &Lab, series: &str, at_least: f64, within: Duration) -> Result<()> {
    let ok = wait_until(within, || {
        lab.metric(series)
            .ok()
            .flatten()
            .is_some_and(|v| v >= at_least)
    });
    ensure!(ok, "{series} did not reach {at_least} within {within:?}");
    Ok(())
}

/// How the active member fails.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Its lazaret is killed (keepalived's check fails: it gives the addresses up).
    DaemonKilled,
    /// Its keepalived is killed.
    KeepalivedKilled,
    /// Its device-side link goes down (keepalived tracks it: FAULT).
    DeviceLinkDown,
    /// The whole member is gone: every process killed, its namespace removed.
    MemberGone,
}

impl Fault {
    pub const ALL: [Fault; 4] = [
        Fault::DaemonKilled,
        Fault::KeepalivedKilled,
        Fault::DeviceLinkDown,
        Fault::MemberGone,
    ];

    /// A short name, for figures.
    pub fn name(self) -> &'static str {
        match self {
            Fault::DaemonKilled => "daemon_killed",
            Fault::KeepalivedKilled => "keepalived_killed",
            Fault::DeviceLinkDown => "device_link_down",
            Fault::MemberGone => "member_gone",
        }
    }

    /// What happens to the active member, in words.
    pub fn what(self) -> &'static str {
        match self {
            Fault::DaemonKilled => "its lazaret killed (SIGKILL)",
            Fault::KeepalivedKilled => "its keepalived killed",
            Fault::DeviceLinkDown => "its device-side link down",
            Fault::MemberGone => {
                "all of it gone at once (every process killed, interfaces removed)"
            }
        }
    }
}

/// Two members on one device segment and one upstream segment, with real keepalived moving
/// the gateway addresses ([`VIP_DEV`], [`VIP_UP`]) and the replication between them
/// (conntrackd too on nftables). Each member's lab is built as usual; then member b's ends
/// of its lab move into member a's device and server namespaces, where a bridge joins them
/// to member a's: the device (10.20.0.11) and the server (10.10.0.20) each sit on one
/// segment with both members, and reach each other through the virtual addresses.
pub struct Pair {
    pub dataplane: Dataplane,
    pub members: [Member; 2],
    /// A bedside monitor (10.20.0.12) on the device segment, next to the pump: its HL7
    /// session ([`Pair::hl7_session`]) is the long-lived one a failover must not cut.
    pub monitor: Netns,
    /// The dedicated link's switch: a bridge between the members' `ha-a` and `ha-b`, so
    /// one member's end can go without taking the other's with it (a veth pair dies whole).
    pub link: Netns,
    pub conntrackd: Vec<ChildGuard>,
    /// Connections the server accepted on [`DENIED_PORT`].
    pub denied_accepted: Arc<AtomicUsize>,
}

/// The [`Pair`]'s monitor on the device segment (the pump is 10.20.0.11).
pub const MONITOR_IP: &str = "10.20.0.12";

/// The monitor of a [`Pair`], with MAC `mac`: its class, its HL7 workflow and itself.
fn monitor_policy(mac: [u8; 6]) -> String {
    format!(
        r#"
[classes.patient-monitor]
description = "Bedside patient monitors"
workflows = ["hl7-results"]

# docs/clinical-flows.md row 3: the monitor opens its HL7 v2 session (MLLP) to the
# interface engine on the hl7 port and sends observations on it for as long as it runs.
[workflows.hl7-results]
description = "Observation results (HL7 v2 ORU^R01 over MLLP)"
[[workflows.hl7-results.rules]]
device = "class:patient-monitor"
peer = "10.10.0.20/32"
proto = "tcp"
ports = [2575]
initiator = "device"

[[devices]]
id = "mon-icu-01"
class = "patient-monitor"
mac = "{}"
ipv4 = "{MONITOR_IP}"
"#,
        fmt_mac(mac)
    )
}

/// Sends observation `n` in an MLLP frame on an HL7 session to the lab's echo server and
/// reads it back: true if the whole frame came back.
pub fn hl7_round_trip(s: &mut TcpStream, n: u32) -> bool {
    let frame = format!(
        "\x0bMSH|^~\\&|MON|ICU|ENGINE|HOSP|20261205010000||ORU^R01|{n}|P|2.6\r\
         OBX|1|NM|8867-4^Heart rate^LN||72|/min|||||F\r\x1c\r"
    );
    let _ = s.set_read_timeout(Some(Duration::from_millis(1500)));
    let mut back = vec![0u8; frame.len()];
    s.write_all(frame.as_bytes()).is_ok()
        && s.read_exact(&mut back).is_ok()
        && back == frame.as_bytes()
}

/// A port the lab policy allows the pump nothing on.
pub const DENIED_PORT: u16 = 23;

impl Pair {
    pub fn new(dataplane: Dataplane) -> Result<Pair> {
        let [a, b] = replicating_pair_on(dataplane, KEY)?;
        // The members' own addresses on the shared segments (the labs both gave .1).
        for (lab, own) in [(&a, "2"), (&b, "3")] {
            for (net, ifname) in [
                ("10.20.0", &lab.net.gw_dev_if),
                ("10.10.0", &lab.net.gw_up_if),
            ] {
                let gw = &lab.net.gateway;
                gw.exec(&["ip", "addr", "del", &format!("{net}.1/24"), "dev", ifname])?;
                gw.exec(&[
                    "ip",
                    "addr",
                    "add",
                    &format!("{net}.{own}/24"),
                    "dev",
                    ifname,
                ])?;
            }
        }
        let segments = [
            (
                &a.net.device,
                "segd",
                &a.net.device_if,
                &b.net.device_if,
                &b.net.device,
            ),
            (
                &a.net.server,
                "segu",
                &a.net.server_if,
                &b.net.server_if,
                &b.net.server,
            ),
        ];
        for (ns, bridge, ours, theirs, their_ns) in segments {
            their_ns.exec(&["ip", "link", "set", theirs, "netns", &ns.name])?;
            let mac = fmt_mac(mac_of(ns, ours)?);
            ns.exec(&[
                "ip", "link", "add", bridge, "address", &mac, "type", "bridge",
            ])?;
            for port in [ours, theirs] {
                ns.exec(&["ip", "addr", "flush", "dev", port])?;
                ns.exec(&["ip", "link", "set", port, "master", bridge, "up"])?;
            }
            ns.exec(&["ip", "link", "set", bridge, "up"])?;
        }
        let hosts = [
            (&a.net.device, "10.20.0.11", "segd", VIP_DEV),
            (&a.net.server, "10.10.0.20", "segu", VIP_UP),
        ];
        for (ns, addr, bridge, via) in hosts {
            ns.exec(&["ip", "addr", "add", &format!("{addr}/24"), "dev", bridge])?;
            ns.exec(&[
                "ip", "route", "replace", "default", "via", via, "dev", bridge,
            ])?;
        }
        // The monitor: a host of its own on the device segment.
        let monitor = Netns::new(format!("{}mon", unique_prefix()))?;
        let on_segment = format!("{MONITOR_IP}/24");
        veth(
            &a.net.device,
            "segm",
            None,
            &monitor,
            "mon0",
            Some(&on_segment),
        )?;
        a.net
            .device
            .exec(&["ip", "link", "set", "segm", "master", "segd", "up"])?;
        monitor.exec(&[
            "ip", "route", "replace", "default", "via", VIP_DEV, "dev", "mon0",
        ])?;
        // One policy for both members: member a's pump and the monitor.
        let policy = std::fs::read_to_string(a.policy_dir.join("hospital.toml"))?
            + &monitor_policy(mac_of(&monitor, "mon0")?);
        for lab in [&a, &b] {
            lab.write_policy(&policy)?;
        }
        let link = Netns::new(format!("{}ha", unique_prefix()))?;
        link.exec(&["ip", "link", "add", "name", "sw", "type", "bridge"])?;
        link.exec(&["ip", "link", "set", "sw", "up"])?;
        for (lab, end, port, addr) in [
            (&a, "ha-a", "pa", "192.168.255.1/24"),
            (&b, "ha-b", "pb", "192.168.255.2/24"),
        ] {
            // replicating_pair joined them directly; the other end goes with this one.
            let _ = lab.net.gateway.exec(&["ip", "link", "del", end]);
            veth(&link, port, None, &lab.net.gateway, end, Some(addr))?;
            link.exec(&["ip", "link", "set", port, "master", "sw", "up"])?;
        }
        let denied_accepted = count_accepts(&a.net.server, DENIED_PORT)?;
        let mut members = [a, b].map(|lab| Member {
            lab,
            keepalived: None,
        });
        let mut conntrackd = Vec::new();
        for (n, link) in [(0, "ha-a"), (1, "ha-b")] {
            members[n].lab.start()?;
            if dataplane == Dataplane::Nftables {
                conntrackd.push(start_conntrackd(&members[n].lab, n)?);
            }
            members[n].start_keepalived(n, link)?;
        }
        let pair = Pair {
            dataplane,
            members,
            monitor,
            link,
            conntrackd,
            denied_accepted,
        };
        let [a, b] = &pair.members;
        let elected = wait_until(Duration::from_secs(10), || pair.holds_all(0));
        ensure!(elected, "member a did not become master\n{}", pair.debug());
        wait_role(&a.lab, "active", Duration::from_secs(2))?;
        wait_role(&b.lab, "standby", Duration::from_secs(2))?;
        wait_metric(&a.lab, "lazaret_ha_sync_up", 1.0, Duration::from_secs(5))?;
        Ok(pair)
    }

    /// Waits until `sessions` flows of the lab session are on member b: taken by lazaret's
    /// replication (XDP), or in its conntrack table (nftables, conntrackd).
    pub fn wait_replicated(&self, sessions: usize) -> Result<()> {
        let b = &self.members[1].lab;
        if self.dataplane == Dataplane::Xdp {
            let adopted = "lazaret_ha_flow_updates_total{outcome=\"adopted\"}";
            return wait_metric(b, adopted, sessions as f64, Duration::from_secs(5))
                .with_context(|| self.daemon_logs());
        }
        let replicated = wait_until(Duration::from_secs(5), || {
            session_entries(b)
                .is_ok_and(|e| e.iter().filter(|l| l.contains("ESTABLISHED")).count() >= sessions)
        });
        ensure!(
            replicated,
            "conntrackd did not carry the sessions to member b\n{}",
            self.debug()
        );
        Ok(())
    }

    /// Both members' daemon output so far.
    pub fn daemon_logs(&self) -> String {
        let log = |m: &Member| {
            m.lab
                .daemon
                .as_ref()
                .map(ChildGuard::output)
                .unwrap_or_default()
        };
        format!(
            "lazaret a:\n{}\nlazaret b:\n{}",
            log(&self.members[0]),
            log(&self.members[1])
        )
    }

    pub fn holds_all(&self, n: usize) -> bool {
        let gw = &self.members[n].lab.net.gateway;
        holds(gw, VIP_DEV).unwrap_or(false) && holds(gw, VIP_UP).unwrap_or(false)
    }

    pub fn debug(&self) -> String {
        let [a, b] = &self.members;
        let ct: Vec<_> = self.conntrackd.iter().map(ChildGuard::output).collect();
        format!(
            "keepalived a:\n{}\nkeepalived b:\n{}\nconntrackd:\n{}",
            a.log(),
            b.log(),
            ct.join("\n")
        )
    }

    /// The monitor opens its HL7 MLLP session to the lab server (the interface engine).
    pub fn hl7_session(&self) -> Result<TcpStream> {
        let s = self.monitor.run(|| {
            TcpStream::connect_timeout(
                &SocketAddr::from(([10, 10, 0, 20], 2575)),
                Duration::from_secs(1),
            )
        })??;
        Ok(s)
    }

    /// The device tries the denied port: it must not get through.
    pub fn try_denied(&self) -> Result<()> {
        let lab = &self.members[0].lab;
        ensure!(
            lab.connect(DENIED_PORT, Duration::from_millis(300))
                .is_err(),
            "the pump reached a port the policy denies"
        );
        Ok(())
    }

    /// Makes member a fail as `fault` says.
    pub fn fail_a(&mut self, fault: Fault) -> Result<()> {
        let a = &mut self.members[0];
        match fault {
            Fault::DaemonKilled => {
                a.lab.kill9();
            }
            Fault::KeepalivedKilled => {
                if let Some(k) = a.keepalived.as_mut() {
                    k.stop();
                }
            }
            Fault::DeviceLinkDown => {
                let ifname = a.lab.net.gw_dev_if.clone();
                a.lab
                    .net
                    .gateway
                    .exec(&["ip", "link", "set", &ifname, "down"])?;
            }
            Fault::MemberGone => {
                // As a power cut: every process of the member at once, so none says
                // goodbye (keepalived's priority-0 advertisement); then its interfaces go.
                let name = a.lab.net.gateway.name.clone();
                let pids = std::process::Command::new("ip")
                    .args(["netns", "pids", &name])
                    .output()?;
                let pids: Vec<i32> = String::from_utf8_lossy(&pids.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect();
                // Stopped first: a process killed while another still runs can say goodbye
                // on its behalf (keepalived's VRRP child, told its parent died, sends the
                // priority-0 advertisement a dead host never sends).
                for sig in [libc::SIGSTOP, libc::SIGKILL] {
                    for pid in &pids {
                        // SAFETY: a signal to a process of the test's own namespace.
                        unsafe { libc::kill(*pid, sig) };
                    }
                }
                // The kernel tears a namespace down in the background, and its interfaces
                // forward until then: take them away at once, as the power does.
                let gw = &a.lab.net.gateway;
                for ifname in [&a.lab.net.gw_dev_if, &a.lab.net.gw_up_if, "ha-a"] {
                    gw.exec(&["ip", "link", "del", ifname])?;
                }
                std::process::Command::new("ip")
                    .args(["netns", "delete", &name])
                    .status()?;
                // Its end of the dedicated link loses carrier on the other member, as a
                // cable to a dead host does.
                self.link.exec(&["ip", "link", "set", "pb", "down"])?;
            }
        }
        Ok(())
    }
}

/// Counts the connections accepted on the lab server's `port`, for at most a minute.
pub fn count_accepts(server: &Netns, port: u16) -> Result<Arc<AtomicUsize>> {
    let l = server.run(move || std::net::TcpListener::bind(("10.10.0.20", port)))??;
    l.set_nonblocking(true)?;
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            match l.accept() {
                Ok(_) => {
                    c.fetch_add(1, Ordering::SeqCst);
                }
                Err(_) => thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    Ok(count)
}

/// The conntrack entries of the lab sessions (the pump or the monitor to the server's 2575) in member
/// `lab`'s gateway, as `conntrack -L` prints them.
pub fn session_entries(lab: &Lab) -> Result<Vec<String>> {
    let out = lab
        .net
        .gateway
        .exec(&["conntrack", "-L", "-p", "tcp", "--dport", "2575"])?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("src=10.20.0.11 ") || l.contains(&format!("src={MONITOR_IP} ")))
        .map(str::to_string)
        .collect())
}

/// The conntrack mark of the lab session in member `lab`'s gateway (its flow stamp).
pub fn ct_mark(lab: &Lab) -> Result<Option<u32>> {
    Ok(session_entries(lab)?.first().and_then(|e| {
        e.split_whitespace()
            .find_map(|w| w.strip_prefix("mark="))
            .and_then(|m| m.parse().ok())
    }))
}

/// `deploy/conntrackd/conntrackd.conf` for member `n` (0 or 1) of a replicating pair, run
/// in its gateway namespace: the shipped file with the lab's link, addresses and paths.
pub fn start_conntrackd(lab: &Lab, n: usize) -> Result<ChildGuard> {
    let (me, peer, link) = if n == 0 {
        ("192.168.255.1", "192.168.255.2", "ha-a")
    } else {
        ("192.168.255.2", "192.168.255.1", "ha-b")
    };
    let dir = &lab.tmp.path;
    let swaps = [
        (
            "IPv4_address 192.168.255.1\n",
            format!("IPv4_address {me}\n"),
        ),
        (
            "IPv4_Destination_Address 192.168.255.2",
            format!("IPv4_Destination_Address {peer}"),
        ),
        ("Interface ha0", format!("Interface {link}")),
        (
            "Syslog on",
            format!(
                "Syslog off\n\tLogFile {}",
                dir.join("conntrackd.log").display()
            ),
        ),
        (
            "LockFile /var/lock/conntrackd.lock",
            format!("LockFile {}", dir.join("conntrackd.lock").display()),
        ),
        (
            "Path /var/run/conntrackd.ctl",
            format!("Path {}", dir.join("conntrackd.ctl").display()),
        ),
    ];
    let conf = shipped("conntrackd/conntrackd.conf", swaps)?;
    let file = dir.join("conntrackd.conf");
    std::fs::write(&file, conf)?;
    lab.net
        .gateway
        .spawn(&["conntrackd", "-C", &file.to_string_lossy()])
}
