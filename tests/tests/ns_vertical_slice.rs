//! The whole path once, on real packets: a policy file, `lazaret run` in a gateway
//! namespace routing between a device and a server, real TCP through it, and the counters
//! read back from the kernel (the pinned maps, or the nftables table's named counters).
//! Runs on both dataplanes.

use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use lazaret_abi::{Reason, SIDE_DEVICES, SIDE_UPSTREAM};
use lazaret_tests::{
    daemon::{monitor_policy, workflow, Dataplane, Lab},
    netns::Routed,
    on_both_dataplanes,
};

on_both_dataplanes!(allow_list_enforced_on_real_traffic);

/// Connects from the device namespace; Ok(stream), or the error kind. Gives up after
/// 800 ms, before the kernel's first SYN retransmission (initial RTO 1 s): a refused
/// attempt sends exactly one SYN, so drop counters can be checked exactly.
fn connect(net: &Routed, to: SocketAddr) -> Result<TcpStream, ErrorKind> {
    net.device
        .run(move || TcpStream::connect_timeout(&to, Duration::from_millis(800)))
        .expect("enter device namespace")
        .map_err(|e| e.kind())
}

fn allow_list_enforced_on_real_traffic(dataplane: Dataplane) -> anyhow::Result<()> {
    // One device (MAC + IPv4), one rule: TCP 2575 to one server address.
    let mut lab = Lab::on(dataplane, |mac| {
        monitor_policy(mac, &["hl7-results"], &workflow("hl7-results", "tcp", 2575))
    })?;
    // A second server address the policy does not allow.
    lab.net.server.exec(&[
        "ip",
        "addr",
        "add",
        "10.10.0.21/24",
        "dev",
        &lab.net.server_if,
    ])?;
    let (hl7, other) = lab.net.server.run(|| {
        (
            TcpListener::bind("10.10.0.20:2575"),
            TcpListener::bind("10.10.0.21:2575"),
        )
    })?;
    let (hl7, _other) = (hl7?, other?);
    lab.start()?;

    // 1. Allowed: the monitor opens MLLP to the engine; data goes both ways.
    let server = std::thread::spawn(move || -> std::io::Result<Vec<u8>> {
        let (mut s, _) = hl7.accept()?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf)?;
        s.write_all(b"\x0bMSA|AA\x1c\r")?;
        Ok(buf[..n].to_vec())
    });
    let mut stream = match connect(&lab.net, "10.10.0.20:2575".parse()?) {
        Ok(s) => s,
        Err(kind) => panic!("allowed connection failed: {kind:?}\n{}", lab.stop()),
    };
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"\x0bMSH|^~\\&|MON\x1c\r")?;
    let mut reply = [0u8; 64];
    let n = stream.read(&mut reply)?;
    assert_eq!(&reply[..n], b"\x0bMSA|AA\x1c\r", "the reply came back");
    let received = server
        .join()
        .map_err(|_| anyhow::anyhow!("server panicked"))??;
    assert_eq!(received, b"\x0bMSH|^~\\&|MON\x1c\r");
    drop(stream);

    // 2. A port that is not allowed gets no answer (not even a reset).
    assert_eq!(
        connect(&lab.net, "10.10.0.20:22".parse()?).err(),
        Some(ErrorKind::TimedOut)
    );
    // 3. A peer that is not allowed gets no answer.
    assert_eq!(
        connect(&lab.net, "10.10.0.21:2575".parse()?).err(),
        Some(ErrorKind::TimedOut)
    );

    // 4. The dataplane's counters match what was sent.
    let at = |r: Reason, side: u8| lab.packets(r, side);
    assert_eq!(at(Reason::AllowRule, SIDE_DEVICES)?, 1, "one allowed SYN");
    assert!(
        at(Reason::AllowFlow, SIDE_DEVICES)? >= 3,
        "ACK, data, FIN from the device"
    );
    assert!(
        at(Reason::AllowFlow, SIDE_UPSTREAM)? >= 2,
        "SYN-ACK and data from the server"
    );
    // Each refused connect sent exactly one SYN: both dropped, none passed.
    assert_eq!(
        at(Reason::DenyNoRule, SIDE_DEVICES)?,
        2,
        "both refused SYNs were dropped"
    );
    assert_eq!(
        at(Reason::DenyNoFlow, SIDE_UPSTREAM)?,
        0,
        "no stray replies"
    );
    Ok(())
}
