//! The webhook: a receiver in the server namespace gets the automatic quarantine of a
//! scanning pump and its release as JSON POSTs. With a blackholed receiver (an address no
//! host answers), the quarantine still cuts the pump off and the controller keeps serving
//! while the delivery is still being retried.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use lazaret_tests::{
    daemon::{pump_policy, round_trip, Lab},
    netns::wait_until,
};

fn policy(mac: [u8; 6]) -> String {
    pump_policy("webhook lab", mac, Some("isolate"), false)
}

/// The test receiver's port (not a clinical flow: the hospital's paging bridge).
const RECEIVER_PORT: u16 = 8080;

/// An HTTP receiver on the server's address for at most a minute: answers 204 to every
/// POST and keeps the bodies.
fn receiver(lab: &Lab) -> Result<Arc<Mutex<Vec<serde_json::Value>>>> {
    let listener = lab
        .net
        .server
        .run(|| TcpListener::bind(("10.10.0.20", RECEIVER_PORT)))??;
    listener.set_nonblocking(true)?;
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let out = bodies.clone();
    thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let Ok((s, _)) = listener.accept() else {
                thread::sleep(Duration::from_millis(20));
                continue;
            };
            let _ = s.set_nonblocking(false);
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut r = BufReader::new(s);
            let mut len = 0usize;
            let mut line = String::new();
            while r.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0u8; len.min(64 * 1024)];
            if r.read_exact(&mut body).is_ok() {
                if let (Ok(v), Ok(mut b)) = (serde_json::from_slice(&body), out.lock()) {
                    b.push(v);
                }
            }
            let _ = r
                .get_mut()
                .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        }
    });
    Ok(bodies)
}

/// Five distinct denied flows: over the threshold of three.
fn scan(lab: &Lab) {
    for port in [23u16, 25, 80, 139, 445] {
        let _ = lab.connect(port, Duration::from_millis(200));
    }
}

fn quarantined(lab: &Lab) -> Result<Option<String>> {
    let list = lab.cli(&["quarantine", "list"])?;
    Ok(list["pump-icu-01"]["action"].as_str().map(String::from))
}

fn wait_isolated(lab: &Lab) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if quarantined(lab)?.as_deref() == Some("isolate") {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(50));
    }
    bail!("pump-icu-01 was not isolated")
}

#[test]
fn receiver_gets_the_quarantine_and_the_release() -> Result<()> {
    let mut lab = Lab::new(policy)?;
    lab.append_config(&format!(
        "[webhook]\nurl = \"http://10.10.0.20:{RECEIVER_PORT}/lazaret/events\"\n"
    ))?;
    let bodies = receiver(&lab)?;
    lab.start()?;
    scan(&lab);
    wait_isolated(&lab)?;
    lab.release("pump-icu-01", "pump reimaged")?;
    let got = |kind: &str| {
        bodies
            .lock()
            .ok()
            .and_then(|b| b.iter().find(|v| v["kind"] == kind).cloned())
    };
    wait_until(Duration::from_secs(10), || got("release").is_some());
    let Some(q) = got("quarantine") else {
        bail!("no quarantine event received: {:?}", bodies.lock().ok());
    };
    assert_eq!(q["device"], "pump-icu-01");
    assert_eq!(q["action"], "isolate");
    assert_eq!(q["by"], "lazaret (automatic)");
    assert!(
        q["reason"]
            .as_str()
            .is_some_and(|r| r.contains("3 distinct denied flows")),
        "{q}"
    );
    let Some(r) = got("release") else {
        bail!("no release event received: {:?}", bodies.lock().ok());
    };
    assert_eq!(r["reason"], "pump reimaged");
    // Counted once the receiver's answer is read, which comes after it kept the body.
    let delivered = "lazaret_webhook_deliveries_total{result=\"delivered\"}";
    wait_until(Duration::from_secs(2), || {
        lab.metric(delivered).ok().flatten() == Some(2.0)
    });
    assert_eq!(lab.metric(delivered)?, Some(2.0));
    Ok(())
}

#[test]
fn a_dead_receiver_never_holds_back_enforcement() -> Result<()> {
    let mut lab = Lab::new(policy)?;
    // No host has this address: every connection attempt waits for ARP, then fails.
    lab.append_config(&format!(
        "[webhook]\nurl = \"http://10.10.0.99:{RECEIVER_PORT}/lazaret/events\"\n"
    ))?;
    lab.echo_servers(&[2575, 22])?;
    lab.start()?;
    let mut session = lab.connect(2575, Duration::from_millis(1000))?;
    assert!(round_trip(&mut session), "the pump's session works");

    scan(&lab);
    wait_isolated(&lab)?;
    assert!(
        !round_trip(&mut session),
        "the isolated pump's session was cut"
    );
    // While that event is still being retried, the controller keeps taking decisions: a
    // release and a new quarantine both enforce at once.
    lab.release("pump-icu-01", "test")?;
    let mut again = lab.connect(2575, Duration::from_millis(1000))?;
    assert!(round_trip(&mut again), "release restores the workflow");
    lab.quarantine("pump-icu-01", "isolate", "test")?;
    assert!(!round_trip(&mut again), "the new quarantine cut it again");
    let status = lab.cli(&["status"])?;
    assert_eq!(status["quarantined"], 1);
    // Proof that all of this happened while the first delivery was still pending: nothing
    // was delivered, and no event has been given up on or dropped yet.
    for result in ["delivered", "failed", "dropped"] {
        assert_eq!(
            lab.metric(&format!(
                "lazaret_webhook_deliveries_total{{result=\"{result}\"}}"
            ))?,
            Some(0.0),
            "{result}"
        );
    }
    Ok(())
}
