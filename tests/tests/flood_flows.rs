//! A random-source flood into the flow table, through the real XDP program
//! (BPF_PROG_TEST_RUN): a workflow lets any host of 10.10.0.0/16 open TCP 2575 to the
//! monitor, and an attacker in that prefix sends SYNs from one and a half times as many
//! random sources as the flow table holds (`MAX_FLOWS`). Each opens a flow, so the table
//! must evict. Meanwhile the monitor's own sessions to its server are of two kinds: active
//! (a packet every `TOUCH_EVERY` flood packets, like a live HL7 feed) and idle (silent
//! during the flood). Afterwards a mid-stream packet of each session shows whether its flow
//! is still there (`AllowFlow`) or was evicted (`DenyNoFlow`: the session is cut).
//!
//! What the LRU guarantees (measured here, see docs/reliability.md): the kernel's LRU hash
//! evicts among entries not recently used, so active sessions survive a flood; idle ones
//! are evicted once the flood has written more than the table holds. Nothing reserves room
//! for managed devices' flows: protection would need a per-device flow quota in the
//! datapath (new flows of a device beyond its quota denied instead of evicting others).

use std::net::Ipv4Addr;

use anyhow::Result;
use lazaret::{
    datapath::{Datapath, LoadOptions},
    policy,
};
use lazaret_abi::{Reason, MAX_FLOWS, SIDE_DEVICES, SIDE_UPSTREAM};
use lazaret_tests::{
    daemon::monitor_policy,
    frames::{tcp4, Mac, TCP_ACK, TCP_SYN},
    reliability::record_figure,
};

const MONITOR: Mac = [0x02, 0, 0, 0, 0, 0x11];
const GW: Mac = [0x02, 0, 0, 0, 0, 0xfe];
const SESSIONS: u16 = 32;
const TOUCH_EVERY: u64 = 4096;

fn lab_policy() -> String {
    let rules = r#"
[workflows.hl7]
description = "HL7 results to the server"
[[workflows.hl7.rules]]
device = "class:patient-monitor"
peer = "10.10.0.20/32"
proto = "tcp"
ports = [2575]

[workflows.hl7-inbound]
description = "HL7 orders from the clinical network"
[[workflows.hl7-inbound.rules]]
device = "class:patient-monitor"
peer = "10.10.0.0/16"
proto = "tcp"
ports = [2575]
initiator = "peer"
"#;
    monitor_policy(MONITOR, &["hl7", "hl7-inbound"], rules)
}

/// The reason the datapath counted for one frame.
fn judge(dp: &mut Datapath, side: u8, frame: &[u8]) -> Result<Option<Reason>> {
    dp.set_interface(1, side)?;
    let before = dp.stats()?;
    dp.test_run(frame)?;
    let after = dp.stats()?;
    let moved: Vec<usize> = (0..before.len())
        .filter(|&i| after[i] != before[i])
        .collect();
    Ok(match moved.as_slice() {
        [i] => Reason::from_u8((i / 2) as u8),
        _ => None,
    })
}

/// Outcome of one flood: (flood flows opened, active sessions kept, idle sessions kept).
fn flood(compiled: &policy::Compiled, referenced: bool) -> Result<(u64, u16, u16)> {
    let mut dp = Datapath::load(&LoadOptions::default())?;
    let slot = dp.next_slot()?;
    dp.install(&compiled.map_contents(slot, 1, &Default::default())?)?;
    let monitor = Ipv4Addr::new(10, 20, 0, 11);
    let server = Ipv4Addr::new(10, 10, 0, 20);
    // Sessions 0..SESSIONS/2 are active, the rest idle.
    let active = |i: u16| i < SESSIONS / 2;
    for i in 0..SESSIONS {
        let sport = 50_000 + i;
        let syn = tcp4(MONITOR, GW, monitor, server, sport, 2575, TCP_SYN);
        assert_eq!(judge(&mut dp, SIDE_DEVICES, &syn)?, Some(Reason::AllowRule));
        let synack = tcp4(GW, MONITOR, server, monitor, 2575, sport, TCP_SYN | TCP_ACK);
        assert_eq!(
            judge(&mut dp, SIDE_UPSTREAM, &synack)?,
            Some(Reason::AllowFlow)
        );
    }

    // The flood: a fixed xorshift over 10.10.0.0/16 and ephemeral ports. A referenced
    // flood follows each SYN with an ACK of the same flow, so every flood entry is used
    // twice, like a legitimate session's.
    let total = u64::from(MAX_FLOWS) * 3 / 2;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut opened = 0u64;
    dp.set_interface(1, SIDE_UPSTREAM)?;
    for n in 0..total {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let src = Ipv4Addr::new(10, 10, (x >> 8) as u8, x as u8);
        let sport = 1024 + ((x >> 16) % 60_000) as u16;
        let syn = tcp4(GW, MONITOR, src, monitor, sport, 2575, TCP_SYN);
        if dp.test_run(&syn)? == 2 {
            opened += 1;
        }
        if referenced {
            dp.test_run(&tcp4(GW, MONITOR, src, monitor, sport, 2575, TCP_ACK))?;
        }
        if n % TOUCH_EVERY == 0 {
            dp.set_interface(1, SIDE_DEVICES)?;
            for i in (0..SESSIONS).filter(|&i| active(i)) {
                let ack = tcp4(MONITOR, GW, monitor, server, 50_000 + i, 2575, TCP_ACK);
                dp.test_run(&ack)?;
            }
            dp.set_interface(1, SIDE_UPSTREAM)?;
        }
    }
    let (mut active_kept, mut idle_kept) = (0u16, 0u16);
    for i in 0..SESSIONS {
        let ack = tcp4(MONITOR, GW, monitor, server, 50_000 + i, 2575, TCP_ACK);
        let kept = judge(&mut dp, SIDE_DEVICES, &ack)? == Some(Reason::AllowFlow);
        match (active(i), kept) {
            (true, true) => active_kept += 1,
            (false, true) => idle_kept += 1,
            _ => {}
        }
    }
    Ok((opened, active_kept, idle_kept))
}

#[test]
fn random_source_flood_keeps_active_sessions() -> Result<()> {
    let dir = tempfile_dir()?;
    std::fs::write(dir.join("lab.toml"), lab_policy())?;
    let compiled = policy::load_and_compile(&dir).map_err(|e| anyhow::anyhow!(e.render()));
    let _ = std::fs::remove_dir_all(&dir);
    let (_, compiled) = compiled?;
    let half = SESSIONS / 2;
    let total = u64::from(MAX_FLOWS) * 3 / 2;
    let mut figures = Vec::new();
    for (referenced, name) in [(false, "SYN flood"), (true, "SYN+ACK flood")] {
        let (opened, active_kept, idle_kept) = flood(&compiled, referenced)?;
        eprintln!(
            "{name}: {total} flows, {opened} opened; active sessions kept {active_kept}/{half}, idle {idle_kept}/{half}"
        );
        assert!(
            opened > u64::from(MAX_FLOWS),
            "the flood did not overflow the table"
        );
        // The guarantee: a session in use is never evicted by the flood.
        assert_eq!(active_kept, half, "{name}: active sessions were evicted");
        figures.push(format!(
            "{name}: active {active_kept}/{half}, idle {idle_kept}/{half} kept"
        ));
    }
    record_figure(
        "flood_flows::random_source_flood_keeps_active_sessions",
        &format!(
            "{total} random-source flows into a {MAX_FLOWS}-flow table; {}",
            figures.join("; ")
        ),
    );
    Ok(())
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!(
        "{}-flows-{}",
        lazaret_tests::netns::unique_prefix(),
        std::process::id()
    ));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
