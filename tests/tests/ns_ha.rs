//! An active/standby pair (docs/ha.md): the role follows the gateway addresses, a standby
//! never quarantines on its own, and the shipped keepalived configuration moves the
//! addresses away from a member whose lazaret died; quarantines and flows follow the pair,
//! and open sessions survive every kind of failover. Real daemons, keepalived and
//! conntrackd, in the tests' own namespaces (the labs: `lazaret_tests::ha`).

use std::{
    sync::atomic::Ordering,
    thread,
    time::{Duration, Instant},
};

use anyhow::{ensure, Result};
use lazaret_abi::{Reason, SIDE_DEVICES};
use lazaret_tests::{
    bypass::Observer,
    daemon::{round_trip, Dataplane, Lab},
    frames::{ethernet, ipv4, tcp, tcp4, with_l4_checksum4, Ipv4Opts, ETH_IPV4, TCP_ACK, TCP_SYN},
    ha::*,
    netns::{mac_of, send_raw, veth, wait_until},
    on_both_dataplanes,
};

/// PSH: a segment carrying data.
const TCP_PSH: u8 = 0x08;

/// Five distinct denied flows to the server: three within a minute quarantine the pump.
fn scan(lab: &Lab) {
    for port in [23u16, 25, 80, 139, 445] {
        let _ = lab.connect(port, Duration::from_millis(200));
    }
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

fn quarantined(lab: &Lab) -> Result<serde_json::Value> {
    lab.cli(&["quarantine", "list"])
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

/// A member enforcing another policy commit (a rollout half done) is refused and counted:
/// what it quarantines may not be in this member's policy, and its flows were judged under
/// another policy. Nothing it sends is carried out.
#[test]
fn a_member_under_another_policy_commit_is_refused_and_changes_nothing() -> Result<()> {
    let [mut a, mut b] = replicating_pair(KEY)?;
    // Member b's policy directory is a git checkout, so it enforces a commit; a's is not.
    for args in [
        &["init", "-q"][..],
        &["add", "-A"],
        &["commit", "-qm", "hospital"],
    ] {
        let ok = std::process::Command::new("git")
            .args(["-c", "user.email=ci@example.invalid", "-c", "user.name=ci"])
            .args(args)
            .current_dir(&b.policy_dir)
            .status()?
            .success();
        ensure!(ok, "git {args:?} in member b's policy directory");
    }
    a.start()?;
    b.start()?;
    wait_metric(
        &a,
        "lazaret_ha_sync_refused_total{reason=\"commit\"}",
        1.0,
        Duration::from_secs(5),
    )?;
    // Neither member reports its replication up, not even for the moment of a hello (so
    // LazaretPairSyncDown fires).
    for _ in 0..10 {
        for lab in [&a, &b] {
            ensure!(
                lab.metric("lazaret_ha_sync_up")? == Some(0.0),
                "a member reports its replication up across commits"
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
    b.quarantine("pump-icu-01", "isolate", "decided on b")?;
    thread::sleep(Duration::from_millis(1500));
    let list = quarantined(&a)?;
    ensure!(
        list.get("pump-icu-01").is_none(),
        "a quarantine from another policy commit was carried out: {list}"
    );
    Ok(())
}

/// A release made while the other member was down reaches it with the next connection's
/// snapshot, even after a restart of the member that made it, and that member's older
/// quarantine does not come back to undo it.
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
    // And a restarts before b comes back: it keeps its releases in its state directory.
    a.kill9();
    a.start()?;
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

/// The pair's promise: the long-lived sessions through the active member — a monitor's HL7
/// MLLP session to the interface engine and a pump's session to its server — carry on
/// through the standby after the active one fails (`fault`), without a new handshake — on
/// XDP by lazaret's flow replication, on nftables by conntrackd with the shipped
/// configuration — and a flow the policy denies stays denied throughout (counted at the
/// server). Without its flow on member b the session's next segment would be dropped there
/// (a mid-stream segment opens no flow).
fn a_session_survives(dataplane: Dataplane, fault: Fault) -> Result<()> {
    let mut pair = Pair::new(dataplane)?;
    let mut pump = pair.members[0].lab.connect(2575, Duration::from_secs(1))?;
    ensure!(
        round_trip(&mut pump),
        "the pump's session does not work through member a"
    );
    let mut hl7 = pair.hl7_session()?;
    ensure!(
        hl7_round_trip(&mut hl7, 1),
        "the monitor's HL7 session does not work through member a"
    );
    pair.try_denied()?;
    let b = &pair.members[1].lab;
    // Member a's stamp on the session (after the failover, conntrackd carries member b's
    // stamp back to it).
    let on_a = ct_mark(&pair.members[0].lab)?;
    // The sessions' flows reach the standby.
    pair.wait_replicated(2)?;

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
    ensure!(
        wait_until(Duration::from_secs(8), || round_trip(&mut pump)),
        "the pump's session did not survive {fault:?}\n{}",
        pair.debug()
    );
    // The same observation until it comes back: a late echo of an earlier try is then the
    // same bytes, not one frame behind.
    let hl7_on = wait_until(Duration::from_secs(8), || hl7_round_trip(&mut hl7, 2));
    ensure!(
        hl7_on,
        "the monitor's HL7 session did not survive {fault:?}\n{}",
        pair.debug()
    );
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
            on_a.is_some() && on_b.is_some_and(|m| m % 2 == 1) && on_b != on_a,
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

/// A device quarantined on the active member stays quarantined through a failover — its
/// workflow cut through the new active, its quarantine profile (the biomed jump host) still
/// open — and its release on the new active reaches the old one when that one comes back
/// (the snapshot of the reconnecting replication: the later release wins over the older
/// quarantine it kept in its state directory).
fn a_quarantine_holds_through_a_failover_and_its_release_follows_back(
    dataplane: Dataplane,
) -> Result<()> {
    let mut pair = Pair::new(dataplane)?;
    pair.members[0].lab.echo_servers(&[22])?;
    pair.members[0]
        .lab
        .quarantine("pump-icu-01", "isolate", "suspected compromise")?;
    let on_b = wait_until(Duration::from_secs(3), || {
        quarantined(&pair.members[1].lab).is_ok_and(|l| l["pump-icu-01"]["action"] == "isolate")
    });
    ensure!(on_b, "member b did not take the quarantine");

    pair.fail_a(Fault::DaemonKilled)?;
    let moved = wait_until(Duration::from_secs(15), || pair.holds_all(1));
    ensure!(
        moved,
        "member b did not take the addresses\n{}",
        pair.debug()
    );
    let [a, b] = &mut pair.members;
    wait_role(&b.lab, "active", Duration::from_secs(2))?;
    // The device's namespace is member a's lab's; its path now runs through member b.
    let device = &a.lab;
    let cut_before = b.lab.packets(Reason::DenyQuarantine, SIDE_DEVICES)?;
    ensure!(
        device.connect(2575, Duration::from_millis(800)).is_err(),
        "the quarantined pump's workflow works through member b"
    );
    ensure!(
        b.lab.packets(Reason::DenyQuarantine, SIDE_DEVICES)? > cut_before,
        "member b did not cut the quarantined pump"
    );
    let profile = wait_until(Duration::from_secs(3), || {
        device
            .connect(22, Duration::from_millis(500))
            .is_ok_and(|mut s| round_trip(&mut s))
    });
    ensure!(
        profile,
        "the quarantine profile does not work through member b"
    );

    // Released on the new active while the old one's lazaret is down; it comes back.
    b.lab.release("pump-icu-01", "biomed checked the pump")?;
    a.lab.start()?;
    let released = wait_until(Duration::from_secs(5), || {
        quarantined(&a.lab).is_ok_and(|l| l.get("pump-icu-01").is_none())
    });
    ensure!(
        released,
        "member a kept the quarantine: {}",
        quarantined(&a.lab)?
    );
    ensure!(
        a.lab
            .connect(2575, Duration::from_secs(1))
            .is_ok_and(|mut s| round_trip(&mut s)),
        "the released pump's workflow does not work"
    );
    Ok(())
}

on_both_dataplanes!(a_quarantine_holds_through_a_failover_and_its_release_follows_back);

/// What the active member finds on its segments — here a device that is not in the
/// inventory — reaches the standby, so the list does not start again after a failover; the
/// standby, which sees no such traffic, keeps it as it came (without an interface of its
/// own).
#[test]
fn the_active_members_unknown_devices_reach_the_standby() -> Result<()> {
    let [mut a, mut b] = replicating_pair(KEY)?;
    start_with_a_active(&mut a, &mut b)?;
    let gw_mac = mac_of(&a.net.gateway, &a.net.gw_dev_if)?;
    let stranger = [0x02, 0x5e, 0, 0, 0, 0x42];
    let frame = tcp4(
        stranger,
        gw_mac,
        std::net::Ipv4Addr::new(10, 20, 0, 66),
        a.net.server_ip,
        40000,
        443,
        TCP_SYN,
    );
    send_raw(&a.net.device, &a.net.device_if, vec![frame])?;
    let listed = |lab: &Lab| {
        lab.cli(&["devices", "--unknown"])
            .is_ok_and(|u| u.to_string().contains("02:5e:00:00:00:42"))
    };
    ensure!(
        wait_until(Duration::from_secs(5), || listed(&a)),
        "member a did not list the unknown device"
    );
    ensure!(
        wait_until(Duration::from_secs(3), || listed(&b)),
        "member b did not get member a's unknown device: {}",
        b.cli(&["devices", "--unknown"])?
    );
    Ok(())
}

/// What the other member (or anyone holding the sync key, or conntrackd's multicast
/// group) hands over is a flow, never a verdict: a carried-over session to a port the
/// policy denies is judged again on its first packet and dropped before the server, while
/// one the policy allows goes on. XDP: the entry flowsync writes (no generation); nftables:
/// a conntrack entry as conntrackd injects it (another member's stamp).
fn a_carried_over_flow_to_a_denied_port_is_judged_again(dp: Dataplane) -> Result<()> {
    let mut lab = ha_lab_on(dp)?;
    lab.start()?;
    let gw_mac = mac_of(&lab.net.gateway, &lab.net.gw_dev_if)?;
    let server = Observer::on(&lab.net.server, &lab.net.server_if)?;
    // The allowed session first: it proves the carried-over entry is used at all.
    for (port, marker, allowed) in [
        (2575u16, &b"lazaret-carried-allowed"[..], true),
        (23, &b"lazaret-carried-denied"[..], false),
    ] {
        let sport = 40100 + port % 100;
        carry_over(&lab, sport, port)?;
        let l4 = tcp(sport, port, TCP_ACK | TCP_PSH, marker);
        let ip = ipv4(
            lab.net.device_ip,
            lab.net.server_ip,
            6,
            &l4,
            &Ipv4Opts::default(),
        );
        let frame = with_l4_checksum4(ethernet(gw_mac, lab.net.device_mac, &[], ETH_IPV4, &ip));
        send_raw(&lab.net.device, &lab.net.device_if, vec![frame])?;
        let seen = server.saw(marker, Duration::from_secs(if allowed { 3 } else { 1 }));
        ensure!(
            seen == allowed,
            "a carried-over session to port {port} {} the server",
            if allowed { "did not reach" } else { "reached" }
        );
    }
    Ok(())
}
on_both_dataplanes!(a_carried_over_flow_to_a_denied_port_is_judged_again);

/// Puts an established session from the lab device's `sport` to the server's `dport` in
/// the gateway's flow state as the other member's replication would.
fn carry_over(lab: &Lab, sport: u16, dport: u16) -> Result<()> {
    let (device, server) = (lab.net.device_ip, lab.net.server_ip);
    match lab.dataplane {
        Dataplane::Xdp => {
            use aya::maps::{HashMap, Map, MapData};
            use lazaret::daemon::flowsync::{datapath_now_ns, SyncedFlow};
            use lazaret::policy::twin::FlowTable;
            use lazaret_abi::{FlowKey, FlowValue, FLOW_ESTABLISHED};
            // The server's address is the lower: the key's first end.
            let flow = SyncedFlow {
                table: FlowTable::Established,
                proto: 6,
                a: (server, dport).into(),
                b: (device, sport).into(),
                initiator: 1,
                state: FLOW_ESTABLISHED,
                resp_isn: 0,
                idle_ms: 0,
            };
            let (table, key, value) = flow
                .entry(datapath_now_ns())
                .map_err(|o| anyhow::anyhow!("not a flow flowsync writes: {o:?}"))?;
            let data =
                MapData::from_pin(lazaret::dataplane::pin_dir(&lab.bpffs.path).join(table.map()))?;
            let mut map: HashMap<_, FlowKey, FlowValue> = Map::LruHashMap(data).try_into()?;
            map.insert(key, value, 0)?;
        }
        Dataplane::Nftables => {
            let (sport, dport) = (sport.to_string(), dport.to_string());
            let out = lab.net.gateway.exec(&[
                "conntrack",
                "-I",
                "-p",
                "tcp",
                "-s",
                &device.to_string(),
                "-d",
                &server.to_string(),
                "--sport",
                &sport,
                "--dport",
                &dport,
                "--state",
                "ESTABLISHED",
                "-t",
                "120",
                "-u",
                "SEEN_REPLY,ASSURED",
                "-m",
                "4242",
            ])?;
            ensure!(
                out.status.success(),
                "conntrack -I: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    Ok(())
}

/// A learn-mode device's flows recorded on the active member reach the standby's state
/// directory (a failover does not start the baseline again), and a flow recorded later
/// follows on its own.
#[test]
fn learned_flows_reach_the_standby() -> Result<()> {
    let [mut a, mut b] = replicating_pair(KEY)?;
    for lab in [&a, &b] {
        let text = std::fs::read_to_string(lab.policy_dir.join("hospital.toml"))?;
        lab.write_policy(&text.replacen(
            "life_critical = false",
            "life_critical = false\nmode = \"learn\"",
            1,
        ))?;
    }
    start_with_a_active(&mut a, &mut b)?;
    let learned = |lab: &Lab| -> Vec<String> {
        std::fs::read_to_string(lab.state_dir.join("learned-flows.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["devices"]["pump-icu-01"]["flows"].as_object().cloned())
            .map(|f| f.keys().cloned().collect())
            .unwrap_or_default()
    };
    for port in [2575u16, 8443] {
        lab_echo(&a, port)?;
        let mut s = a.connect(port, Duration::from_secs(2))?;
        ensure!(
            round_trip(&mut s),
            "the learn-mode pump's session to {port}"
        );
        let on = |lab: &Lab| {
            learned(lab)
                .iter()
                .any(|k| k.ends_with(&format!(" {port}")))
        };
        ensure!(
            wait_until(Duration::from_secs(5), || on(&a)),
            "member a did not record the flow to {port}: {:?}",
            learned(&a)
        );
        ensure!(
            wait_until(Duration::from_secs(8), || on(&b)),
            "member b did not get member a's flow to {port}: {:?}",
            learned(&b)
        );
    }
    Ok(())
}

/// An echo server on the lab server's `port`, unless [`ha_lab_on`] started one.
fn lab_echo(lab: &Lab, port: u16) -> Result<()> {
    if port == 2575 {
        return Ok(());
    }
    lab.echo_servers(&[port])
}

/// A peer that holds the key and answers the challenge but runs another datapath ABI (a
/// member half-way through an upgrade) is refused, counted, and gets no answer; the same
/// peer under this member's ABI is answered, so the refusal is the ABI's. The peer is this
/// test speaking the channel's protocol from member b's address.
#[test]
fn a_member_under_another_abi_is_refused() -> Result<()> {
    use lazaret::daemon::hasync::{seal, Body};
    use std::io::{BufRead, BufReader, Write};
    let [mut a, b] = replicating_pair(KEY)?;
    a.start()?;
    // One connection: the challenge, our hello under `abi`, and the first line back (None
    // if the member closed the connection instead).
    let hello_with = |abi: u32| -> Result<Option<String>> {
        b.net.gateway.run(move || -> Result<Option<String>> {
            let s = std::net::TcpStream::connect_timeout(
                &"192.168.255.1:9465".parse()?,
                Duration::from_secs(2),
            )?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            let mut lines = BufReader::new(s.try_clone()?);
            let mut challenge = String::new();
            lines.read_line(&mut challenge)?;
            let nonce = serde_json::from_str::<serde_json::Value>(&challenge)?["nonce"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis() as u64;
            let hello = Body::Hello {
                member: "impostor".into(),
                commit: None,
                abi,
                nonce,
            };
            (&s).write_all(seal(KEY.as_bytes(), 1, now_ms, &hello).as_bytes())?;
            let mut answer = String::new();
            Ok(match lines.read_line(&mut answer) {
                Ok(n) if n > 0 => Some(answer),
                _ => None,
            })
        })?
    };
    // Until the member listens, the connection is refused.
    let mut answered = None;
    let until = Instant::now() + Duration::from_secs(5);
    while answered.is_none() && Instant::now() < until {
        answered = hello_with(lazaret_abi::ABI_VERSION).ok().flatten();
        thread::sleep(Duration::from_millis(100));
    }
    ensure!(
        answered.as_deref().is_some_and(|l| l.contains("hello")),
        "member a did not answer a hello under its own ABI: {answered:?}"
    );
    let answered = hello_with(lazaret_abi::ABI_VERSION + 1)?;
    ensure!(
        answered.is_none(),
        "member a answered a peer under another ABI: {answered:?}"
    );
    wait_metric(
        &a,
        "lazaret_ha_sync_refused_total{reason=\"abi\"}",
        1.0,
        Duration::from_secs(3),
    )?;
    Ok(())
}
