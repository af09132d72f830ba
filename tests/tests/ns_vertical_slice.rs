//! The whole path once, on real packets: a policy file, `lazaret run` in a gateway
//! namespace routing between a device and a server, real TCP through it.

use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use lazaret::datapath::Datapath;
use lazaret_abi::{stats_index, Reason, SIDE_DEVICES, SIDE_UPSTREAM};
use lazaret_tests::{lazaret_bin, netns::*};

fn fmt_mac(m: [u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

fn policy(mac: [u8; 6]) -> String {
    format!(
        r#"
[site]
name = "vertical slice"
unknown_devices = "deny"

[site.essentials]
dhcp = false
dns = false
ntp = false
neighbor = true

[classes.patient-monitor]
description = "Bedside monitors"
workflows = ["hl7-results"]

[workflows.hl7-results]
description = "Monitors send HL7 v2 results over MLLP to the interface engine"
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
ipv4 = "10.20.0.11"
"#,
        fmt_mac(mac)
    )
}

/// Connects from the device namespace; Ok(stream), or the error kind.
fn connect(net: &Routed, to: SocketAddr) -> Result<TcpStream, ErrorKind> {
    net.device
        .run(move || TcpStream::connect_timeout(&to, Duration::from_millis(1500)))
        .expect("enter device namespace")
        .map_err(|e| e.kind())
}

#[test]
fn allow_list_enforced_on_real_traffic() -> anyhow::Result<()> {
    let net = Routed::new()?;
    let tmp = TempDir::new()?;
    let bpffs = BpfMount::new(&tmp.path)?;
    let policy_dir = tmp.path.join("policies");
    std::fs::create_dir_all(&policy_dir)?;
    std::fs::write(policy_dir.join("hospital.toml"), policy(net.device_mac))?;
    let state_dir = tmp.path.join("state");
    let config = tmp.path.join("lazaret.toml");
    std::fs::write(
        &config,
        format!(
            r#"policy_dir = "{}"
state_dir = "{}"
pin_dir = "{}"
control_socket = "{}"
[[interfaces]]
name = "{}"
side = "devices"
[[interfaces]]
name = "{}"
side = "upstream"
"#,
            policy_dir.display(),
            state_dir.display(),
            bpffs.path.display(),
            tmp.path.join("control.sock").display(),
            net.gw_dev_if,
            net.gw_up_if
        ),
    )?;

    // A second server address the policy does not allow.
    net.server.exec(&["ip", "addr", "add", "10.10.0.21/24", "dev", &net.server_if])?;
    // Listeners on the server: the allowed port, and the same port on the other address.
    let (hl7, other) = net.server.run(|| {
        (
            TcpListener::bind("10.10.0.20:2575"),
            TcpListener::bind("10.10.0.21:2575"),
        )
    })?;
    let (hl7, _other) = (hl7?, other?);

    let bin = lazaret_bin()?;
    let mut daemon = net.gateway.spawn(&[
        bin.to_str().unwrap_or_default(),
        "run",
        "--config",
        config.to_str().unwrap_or_default(),
    ])?;
    let ready = wait_until(Duration::from_secs(20), || {
        state_dir.join("ready").exists() || !daemon.running()
    });
    if !ready || !state_dir.join("ready").exists() {
        panic!("lazaret run did not become ready:\n{}", daemon.stop());
    }

    // 1. Allowed: the monitor opens MLLP to the engine; data goes both ways.
    let server = std::thread::spawn(move || -> std::io::Result<Vec<u8>> {
        let (mut s, _) = hl7.accept()?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf)?;
        s.write_all(b"\x0bMSA|AA\x1c\r")?;
        Ok(buf[..n].to_vec())
    });
    let mut stream = match connect(&net, "10.10.0.20:2575".parse()?) {
        Ok(s) => s,
        Err(kind) => panic!("allowed connection failed: {kind:?}\n{}", daemon.stop()),
    };
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"\x0bMSH|^~\\&|MON\x1c\r")?;
    let mut reply = [0u8; 64];
    let n = stream.read(&mut reply)?;
    assert_eq!(&reply[..n], b"\x0bMSA|AA\x1c\r", "the reply came back");
    let received = server.join().map_err(|_| anyhow::anyhow!("server panicked"))??;
    assert_eq!(received, b"\x0bMSH|^~\\&|MON\x1c\r");
    drop(stream);

    // 2. A port that is not allowed gets no answer (not even a reset).
    assert_eq!(connect(&net, "10.10.0.20:22".parse()?).err(), Some(ErrorKind::TimedOut));
    // 3. A peer that is not allowed gets no answer.
    assert_eq!(connect(&net, "10.10.0.21:2575".parse()?).err(), Some(ErrorKind::TimedOut));

    // 4. The counters in the pinned maps match what was sent.
    let pins = bpffs.path.join(format!("v{}", lazaret_abi::ABI_VERSION));
    let stats = Datapath::pinned_stats(&pins)?;
    let at = |r: Reason, side: u8| stats[stats_index(r, side) as usize];
    assert_eq!(at(Reason::AllowRule, SIDE_DEVICES), 1, "one allowed SYN");
    assert!(at(Reason::AllowFlow, SIDE_DEVICES) >= 3, "ACK, data, FIN from the device");
    assert!(at(Reason::AllowFlow, SIDE_UPSTREAM) >= 2, "SYN-ACK and data from the server");
    // Each refused connect retransmits its SYN within 1.5 s: at least one SYN each, and
    // every one of them dropped, none passed.
    let denied = at(Reason::DenyNoRule, SIDE_DEVICES);
    assert!(denied >= 2, "both refused connections were dropped ({denied})");
    assert_eq!(at(Reason::DenyNoFlow, SIDE_UPSTREAM), 0, "no stray replies");

    daemon.signal(libc::SIGTERM);
    Ok(())
}
