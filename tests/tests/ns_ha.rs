//! An active/standby pair (docs/ha.md): the role follows the gateway addresses, a standby
//! never quarantines on its own, and the shipped keepalived configuration moves the
//! addresses away from a member whose lazaret died. Real daemons and a real keepalived, in
//! the tests' own namespaces.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use lazaret_abi::{Reason, SIDE_DEVICES};
use lazaret_tests::{
    daemon::{fmt_mac, pump_policy, round_trip, Dataplane, Lab},
    lazaret_bin,
    netns::{mac_of, unique_prefix, veth, wait_until, ChildGuard, Netns},
    on_both_dataplanes,
};

/// The gateway addresses keepalived moves in these tests: on the device side and the
/// upstream side of each member's lab, next to its own addresses (10.20.0.1, 10.10.0.1).
const VIP_DEV: &str = "10.20.0.250";
const VIP_UP: &str = "10.10.0.250";

fn ha_lab() -> Result<Lab> {
    ha_lab_on(Dataplane::Xdp)
}

fn ha_lab_on(dataplane: Dataplane) -> Result<Lab> {
    let lab = Lab::on(dataplane, |mac| {
        pump_policy("ha lab", mac, Some("isolate"), false)
    })?;
    lab.append_config(&format!(
        "\n[ha]\nvirtual_addresses = [\"{VIP_DEV}\", \"{VIP_UP}\"]\n"
    ))?;
    lab.echo_servers(&[2575])?;
    Ok(lab)
}

/// The member's role, as `lazaret status` reports it.
fn role(lab: &Lab) -> Result<String> {
    let status = lab.cli(&["status"])?;
    status["ha"]["role"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("no ha role in the status: {status}"))
}

fn wait_role(lab: &Lab, want: &str, within: Duration) -> Result<()> {
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

/// Five distinct denied flows to the server: three within a minute quarantine the pump.
fn scan(lab: &Lab) {
    for port in [23u16, 25, 80, 139, 445] {
        let _ = lab.connect(port, Duration::from_millis(200));
    }
}

fn holds(ns: &Netns, addr: &str) -> Result<bool> {
    let out = ns.exec(&["ip", "-br", "addr"])?;
    Ok(String::from_utf8_lossy(&out.stdout).contains(&format!("{addr}/")))
}

#[test]
fn a_standby_never_quarantines_and_the_addresses_make_it_active() -> Result<()> {
    let mut lab = ha_lab()?;
    lab.start()?;
    wait_role(&lab, "standby", Duration::from_secs(2))?;
    ensure!(
        lab.metric("lazaret_ha_role{role=\"standby\"}")? == Some(1.0),
        "the role metric says standby"
    );

    // A scan on the standby: decided, not carried out.
    scan(&lab);
    let suppressed = wait_until(Duration::from_secs(5), || {
        lab.metric("lazaret_ha_standby_decisions_total")
            .ok()
            .flatten()
            .is_some_and(|n| n >= 1.0)
    });
    ensure!(suppressed, "the standby's decision was not counted");
    let list = lab.cli(&["quarantine", "list"])?;
    ensure!(
        list.as_object().is_some_and(serde_json::Map::is_empty),
        "the standby quarantined: {list}"
    );

    // Half the addresses is not active.
    let gw = &lab.net.gateway;
    gw.exec(&[
        "ip",
        "addr",
        "add",
        &format!("{VIP_DEV}/24"),
        "dev",
        &lab.net.gw_dev_if,
    ])?;
    thread::sleep(Duration::from_millis(600));
    ensure!(
        role(&lab)? == "standby",
        "a member with half the addresses is not active"
    );
    gw.exec(&[
        "ip",
        "addr",
        "add",
        &format!("{VIP_UP}/24"),
        "dev",
        &lab.net.gw_up_if,
    ])?;
    wait_role(&lab, "active", Duration::from_secs(2))?;

    // Active: the same scan quarantines.
    scan(&lab);
    let quarantined = wait_until(Duration::from_secs(5), || {
        lab.cli(&["quarantine", "list"])
            .is_ok_and(|l| l["pump-icu-01"]["action"] == "isolate")
    });
    ensure!(
        quarantined,
        "the active member did not quarantine the scanning pump"
    );

    // Addresses gone: standby again.
    gw.exec(&[
        "ip",
        "addr",
        "del",
        &format!("{VIP_UP}/24"),
        "dev",
        &lab.net.gw_up_if,
    ])?;
    wait_role(&lab, "standby", Duration::from_secs(2))
}

/// The file `deploy/<file>` with each `(from, to)` of `swaps` put in (the first `from`
/// replaced); an error names a `from` the shipped file no longer has.
fn shipped<const N: usize>(file: &str, swaps: [(&str, String); N]) -> Result<String> {
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
struct Member {
    lab: Lab,
    keepalived: Option<ChildGuard>,
}

/// `deploy/keepalived/keepalived.conf` for member `n` (0 or 1) of the pair: the shipped
/// file with this lab's interface names, addresses, daemon binary and configuration put
/// in. The binary is a copy in the lab's directory: keepalived's script security refuses
/// a script on a path others may write to, which a build tree can be.
fn keepalived_conf(lab: &Lab, n: usize, link: &str) -> Result<String> {
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
    fn start_keepalived(&mut self, n: usize, link: &str) -> Result<()> {
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

    fn log(&self) -> String {
        self.keepalived
            .as_ref()
            .map(ChildGuard::output)
            .unwrap_or_default()
    }
}

#[test]
fn keepalived_moves_the_addresses_from_a_member_whose_lazaret_died() -> Result<()> {
    let mut members = [ha_lab()?, ha_lab()?].map(|lab| Member {
        lab,
        keepalived: None,
    });
    veth(
        &members[0].lab.net.gateway,
        "ha-a",
        Some("192.168.255.1/24"),
        &members[1].lab.net.gateway,
        "ha-b",
        Some("192.168.255.2/24"),
    )?;
    for (n, link) in [(0, "ha-a"), (1, "ha-b")] {
        members[n].lab.start()?;
        members[n].start_keepalived(n, link)?;
    }
    let [a, b] = &mut members;
    let debug = |a: &Member, b: &Member| format!("a:\n{}\nb:\n{}", a.log(), b.log());
    // The higher priority wins the first election.
    let elected = wait_until(Duration::from_secs(10), || {
        holds(&a.lab.net.gateway, VIP_DEV).unwrap_or(false)
            && holds(&a.lab.net.gateway, VIP_UP).unwrap_or(false)
    });
    ensure!(elected, "member a did not become master\n{}", debug(a, b));
    wait_role(&a.lab, "active", Duration::from_secs(2))?;
    wait_role(&b.lab, "standby", Duration::from_secs(2))?;

    // a's lazaret dies: its check fails, it gives the addresses up, b takes them.
    a.lab.kill9();
    let moved = wait_until(Duration::from_secs(15), || {
        holds(&b.lab.net.gateway, VIP_DEV).unwrap_or(false)
            && holds(&b.lab.net.gateway, VIP_UP).unwrap_or(false)
            && !holds(&a.lab.net.gateway, VIP_DEV).unwrap_or(true)
    });
    ensure!(
        moved,
        "the addresses did not move to member b\n{}",
        debug(a, b)
    );
    wait_role(&b.lab, "active", Duration::from_secs(2))?;
    Ok(())
}

/// The pair's pre-shared key in these tests, and another one.
const KEY: &str = "6c617a617265742d706169722d6b6579";
const OTHER_KEY: &str = "616e6f746865722d6b65792d3132333435";

/// Two members joined by their dedicated link, replicating quarantines: member a with
/// [`KEY`], member b with `b_key`. Not started.
fn replicating_pair(b_key: &str) -> Result<[Lab; 2]> {
    replicating_pair_on(Dataplane::Xdp, b_key)
}

/// [`replicating_pair`] on `dataplane`.
fn replicating_pair_on(dataplane: Dataplane, b_key: &str) -> Result<[Lab; 2]> {
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

fn quarantined(lab: &Lab) -> Result<serde_json::Value> {
    lab.cli(&["quarantine", "list"])
}

fn wait_metric(lab: &Lab, series: &str, at_least: f64, within: Duration) -> Result<()> {
    let ok = wait_until(within, || {
        lab.metric(series)
            .ok()
            .flatten()
            .is_some_and(|v| v >= at_least)
    });
    ensure!(ok, "{series} did not reach {at_least} within {within:?}");
    Ok(())
}

#[test]
fn a_quarantine_on_one_member_is_enforced_on_the_other_and_so_is_its_release() -> Result<()> {
    let [mut a, mut b] = replicating_pair(KEY)?;
    a.start()?;
    // Decided while the other member is down: its snapshot carries it when it comes up.
    a.quarantine("pump-icu-01", "isolate", "suspected compromise")?;
    // And b starts before its end of the link has its address (lazaret starts before the
    // network is configured): it listens once the address is there.
    let b_link = ["192.168.255.2/24", "dev", "ha-b"];
    b.net
        .gateway
        .exec(&[&["ip", "addr", "del"][..], &b_link].concat())?;
    b.start()?;
    thread::sleep(Duration::from_millis(1200));
    b.net
        .gateway
        .exec(&[&["ip", "addr", "add"][..], &b_link].concat())?;
    let carried = wait_until(Duration::from_secs(5), || {
        quarantined(&b).is_ok_and(|l| l["pump-icu-01"]["action"] == "isolate")
    });
    ensure!(
        carried,
        "member b did not take member a's quarantine: {}",
        quarantined(&b)?
    );
    let (qa, qb) = (quarantined(&a)?, quarantined(&b)?);
    ensure!(
        qa["pump-icu-01"] == qb["pump-icu-01"],
        "the members hold different entries: {qa} / {qb}"
    );
    // Enforced on b: the pump's session through b does not open.
    ensure!(
        b.connect(2575, Duration::from_millis(800)).is_err(),
        "the pump reached its server through member b"
    );
    wait_metric(&a, "lazaret_ha_sync_up", 1.0, Duration::from_secs(3))?;
    wait_metric(&b, "lazaret_ha_sync_up", 1.0, Duration::from_secs(3))?;

    // Released on b: released on a within two seconds.
    b.release("pump-icu-01", "biomed checked the pump")?;
    let released = wait_until(Duration::from_secs(2), || {
        quarantined(&a).is_ok_and(|l| l.get("pump-icu-01").is_none())
    });
    ensure!(
        released,
        "member a kept the quarantine: {}",
        quarantined(&a)?
    );
    ensure!(
        a.connect(2575, Duration::from_millis(1000)).is_ok(),
        "the release did not restore the pump's workflow through member a"
    );
    // And again from a, while both are up.
    a.quarantine("pump-icu-01", "restrict", "second look")?;
    let again = wait_until(Duration::from_secs(2), || {
        quarantined(&b).is_ok_and(|l| l["pump-icu-01"]["action"] == "restrict")
    });
    ensure!(again, "member b did not take the second quarantine");
    Ok(())
}

#[test]
fn a_member_with_another_key_is_refused_and_changes_nothing() -> Result<()> {
    let [mut a, mut b] = replicating_pair(OTHER_KEY)?;
    a.start()?;
    b.start()?;
    wait_metric(
        &a,
        "lazaret_ha_sync_refused_total{reason=\"key\"}",
        1.0,
        Duration::from_secs(5),
    )?;
    b.quarantine("pump-icu-01", "isolate", "decided on b")?;
    thread::sleep(Duration::from_millis(1500));
    let list = quarantined(&a)?;
    ensure!(
        list.get("pump-icu-01").is_none(),
        "a message signed with another key was carried out: {list}"
    );
    Ok(())
}

/// A release made while the other member was down reaches it with the next connection's
/// snapshot, and that member's older quarantine does not come back to undo it.
#[test]
fn a_release_made_while_the_other_member_was_down_wins_over_the_older_quarantine() -> Result<()> {
    let [mut a, mut b] = replicating_pair(KEY)?;
    a.start()?;
    b.start()?;
    a.quarantine("pump-icu-01", "isolate", "suspected compromise")?;
    let both = wait_until(Duration::from_secs(3), || {
        quarantined(&b).is_ok_and(|l| l["pump-icu-01"]["action"] == "isolate")
    });
    ensure!(both, "member b did not take the quarantine");
    // b goes down (it keeps its quarantine in its state directory); a releases meanwhile.
    b.kill9();
    thread::sleep(Duration::from_millis(1100));
    a.release("pump-icu-01", "biomed checked the pump")?;
    b.start()?;
    let converged = wait_until(Duration::from_secs(5), || {
        quarantined(&b).is_ok_and(|l| l.get("pump-icu-01").is_none())
    });
    ensure!(
        converged,
        "member b kept the quarantine: {}",
        quarantined(&b)?
    );
    // Both directions have exchanged their snapshots by now: a is still released.
    wait_metric(&a, "lazaret_ha_sync_up", 1.0, Duration::from_secs(3))?;
    wait_metric(&b, "lazaret_ha_sync_up", 1.0, Duration::from_secs(3))?;
    thread::sleep(Duration::from_millis(500));
    let list = quarantined(&a)?;
    ensure!(
        list.get("pump-icu-01").is_none(),
        "member b's older quarantine came back to member a: {list}"
    );
    Ok(())
}

/// How the active member fails.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Its lazaret is killed (keepalived's check fails: it gives the addresses up).
    DaemonKilled,
    /// Its keepalived is killed.
    KeepalivedKilled,
    /// Its device-side link goes down (keepalived tracks it: FAULT).
    DeviceLinkDown,
    /// The whole member is gone: every process killed, its namespace removed.
    MemberGone,
}

/// Two members on one device segment and one upstream segment, with real keepalived moving
/// the gateway addresses ([`VIP_DEV`], [`VIP_UP`]) and the replication between them
/// (conntrackd too on nftables). Each member's lab is built as usual; then member b's ends
/// of its lab move into member a's device and server namespaces, where a bridge joins them
/// to member a's: the device (10.20.0.11) and the server (10.10.0.20) each sit on one
/// segment with both members, and reach each other through the virtual addresses.
struct Pair {
    members: [Member; 2],
    /// The dedicated link's switch: a bridge between the members' `ha-a` and `ha-b`, so
    /// one member's end can go without taking the other's with it (a veth pair dies whole).
    link: Netns,
    conntrackd: Vec<ChildGuard>,
    /// Connections the server accepted on [`DENIED_PORT`].
    denied_accepted: Arc<AtomicUsize>,
}

/// A port the lab policy allows the pump nothing on.
const DENIED_PORT: u16 = 23;

impl Pair {
    fn new(dataplane: Dataplane) -> Result<Pair> {
        let [a, b] = replicating_pair_on(dataplane, KEY)?;
        // One device, one policy: member b binds member a's device MAC.
        b.write_policy(&std::fs::read_to_string(
            a.policy_dir.join("hospital.toml"),
        )?)?;
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
            members,
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

    fn holds_all(&self, n: usize) -> bool {
        let gw = &self.members[n].lab.net.gateway;
        holds(gw, VIP_DEV).unwrap_or(false) && holds(gw, VIP_UP).unwrap_or(false)
    }

    fn debug(&self) -> String {
        let [a, b] = &self.members;
        let ct: Vec<_> = self.conntrackd.iter().map(ChildGuard::output).collect();
        format!(
            "keepalived a:\n{}\nkeepalived b:\n{}\nconntrackd:\n{}",
            a.log(),
            b.log(),
            ct.join("\n")
        )
    }

    /// The device tries the denied port: it must not get through.
    fn try_denied(&self) -> Result<()> {
        let lab = &self.members[0].lab;
        ensure!(
            lab.connect(DENIED_PORT, Duration::from_millis(300))
                .is_err(),
            "the pump reached a port the policy denies"
        );
        Ok(())
    }

    /// Makes member a fail as `fault` says.
    fn fail_a(&mut self, fault: Fault) -> Result<()> {
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
                for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse::<i32>() {
                        // SAFETY: a signal to a process of the test's own namespace.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
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
fn count_accepts(server: &Netns, port: u16) -> Result<Arc<AtomicUsize>> {
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

/// The pair's promise: a long-lived TCP session through the active member carries on
/// through the standby after the active one fails (`fault`), without a new handshake — on
/// XDP by lazaret's flow replication, on nftables by conntrackd with the shipped
/// configuration — and a flow the policy denies stays denied throughout (counted at the
/// server). Without its flow on member b the session's next segment would be dropped there
/// (a mid-stream segment opens no flow).
fn a_session_survives(dataplane: Dataplane, fault: Fault) -> Result<()> {
    let mut pair = Pair::new(dataplane)?;
    let mut sessions = Vec::new();
    for _ in 0..2 {
        let mut s = pair.members[0].lab.connect(2575, Duration::from_secs(1))?;
        ensure!(
            round_trip(&mut s),
            "a session does not work through member a"
        );
        sessions.push(s);
    }
    pair.try_denied()?;
    let b = &pair.members[1].lab;
    // Member a's stamp on the session (after the failover, conntrackd carries member b's
    // stamp back to it).
    let on_a = ct_mark(&pair.members[0].lab)?;
    // The sessions' flows reach the standby.
    if dataplane == Dataplane::Xdp {
        let adopted = "lazaret_ha_flow_updates_total{outcome=\"adopted\"}";
        wait_metric(b, adopted, 2.0, Duration::from_secs(5))?;
    } else {
        let replicated = wait_until(Duration::from_secs(5), || {
            session_entry(b).is_ok_and(|e| e.is_some_and(|l| l.contains("ESTABLISHED")))
        });
        ensure!(
            replicated,
            "conntrackd did not carry the session to member b\n{}",
            pair.debug()
        );
    }

    let through_b = || b.packets(Reason::AllowFlow, SIDE_DEVICES);
    let before = through_b()?;
    let fault_at = Instant::now();
    pair.fail_a(fault)?;
    let moved = wait_until(Duration::from_secs(15), || pair.holds_all(1));
    ensure!(
        moved,
        "member b did not take the addresses after {fault:?}\n{}",
        pair.debug()
    );
    let b = &pair.members[1].lab;
    wait_role(b, "active", Duration::from_secs(2))?;
    // The same sessions, through member b: no new handshake. (TCP retransmits: allow a few
    // seconds for the neighbours to learn member b's MAC.)
    for (i, s) in sessions.iter_mut().enumerate() {
        let carried_on = wait_until(Duration::from_secs(8), || round_trip(s));
        ensure!(
            carried_on,
            "session {i} did not survive {fault:?}\n{}",
            pair.debug()
        );
    }
    eprintln!(
        "{dataplane:?}, {fault:?}: sessions flowing again {:?} after the fault",
        fault_at.elapsed()
    );
    // Through member b, not a member a that still forwards.
    let b = &pair.members[1].lab;
    ensure!(
        b.packets(Reason::AllowFlow, SIDE_DEVICES)? > before,
        "the sessions did not go through member b"
    );
    if dataplane == Dataplane::Nftables {
        // Judged again by member b: its table stamped the flow with its own mark (odd: the
        // pair's second member), not the one conntrackd carried from member a.
        let on_b = ct_mark(b)?;
        ensure!(
            on_b.is_some_and(|m| m % 2 == 1) && on_b != on_a,
            "member b did not judge the session again: mark {on_b:?} on b, {on_a:?} on a"
        );
    }
    // A new session opens through member b (its policy, its flows); the denied port stays
    // shut, and the server never saw a connection on it.
    let lab = &pair.members[0].lab;
    ensure!(
        lab.connect(2575, Duration::from_secs(1))
            .is_ok_and(|mut s| round_trip(&mut s)),
        "a new session does not open through member b"
    );
    pair.try_denied()?;
    ensure!(
        pair.denied_accepted.load(Ordering::SeqCst) == 0,
        "the server accepted a connection on a denied port"
    );
    Ok(())
}

fn session_survives_the_daemon_killed(dataplane: Dataplane) -> Result<()> {
    a_session_survives(dataplane, Fault::DaemonKilled)
}

fn session_survives_keepalived_killed(dataplane: Dataplane) -> Result<()> {
    a_session_survives(dataplane, Fault::KeepalivedKilled)
}

fn session_survives_the_device_link_down(dataplane: Dataplane) -> Result<()> {
    a_session_survives(dataplane, Fault::DeviceLinkDown)
}

fn session_survives_the_member_gone(dataplane: Dataplane) -> Result<()> {
    a_session_survives(dataplane, Fault::MemberGone)
}

on_both_dataplanes!(
    session_survives_the_daemon_killed,
    session_survives_keepalived_killed,
    session_survives_the_device_link_down,
    session_survives_the_member_gone,
);

/// The conntrack entry of the lab session (the device to the server's 2575) in member
/// `lab`'s gateway, as `conntrack -L` prints it.
fn session_entry(lab: &Lab) -> Result<Option<String>> {
    let out = lab
        .net
        .gateway
        .exec(&["conntrack", "-L", "-p", "tcp", "--dport", "2575"])?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.contains("src=10.20.0.11"))
        .map(str::to_string))
}

/// The conntrack mark of the lab session in member `lab`'s gateway (its flow stamp).
fn ct_mark(lab: &Lab) -> Result<Option<u32>> {
    Ok(session_entry(lab)?.and_then(|e| {
        e.split_whitespace()
            .find_map(|w| w.strip_prefix("mark="))
            .and_then(|m| m.parse().ok())
    }))
}

/// `deploy/conntrackd/conntrackd.conf` for member `n` (0 or 1) of a replicating pair, run
/// in its gateway namespace: the shipped file with the lab's link, addresses and paths.
fn start_conntrackd(lab: &Lab, n: usize) -> Result<ChildGuard> {
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
