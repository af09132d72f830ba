//! End to end with a real Prometheus server (Debian's `prometheus` package, installed by
//! `cargo xtask setup`; `$PROMETHEUS` overrides the binary): started by the test in the
//! lab's server namespace, it scrapes the running lazaret on the gateway's upstream address
//! every second and evaluates `deploy/prometheus/lazaret-rules.yml` as shipped (no
//! templating: `LazaretDeviceQuarantined` has `for: 0s`). A scanning pump is isolated, and
//! the quarantine alert is read back firing through Prometheus's own HTTP API.
//!
//! Bounded: Prometheus must see the target up within 30 s, and fire within 30 s of the
//! quarantine (in practice a few seconds each).

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use lazaret_tests::{
    daemon::{pump_policy, Lab},
    netns::ChildGuard,
};

const PROMETHEUS_ADDR: &str = "10.10.0.20:9090";
const LAZARET_METRICS: &str = "10.10.0.1:9464";

fn policy(mac: [u8; 6]) -> String {
    pump_policy("prometheus lab", mac, Some("isolate"), false)
}

fn prometheus_bin() -> PathBuf {
    std::env::var_os("PROMETHEUS")
        .map_or_else(|| PathBuf::from("/usr/bin/prometheus"), PathBuf::from)
}

fn rules() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/lazaret-rules.yml")
}

/// Starts Prometheus in the server namespace, scraping lazaret every second.
fn start_prometheus(lab: &Lab) -> Result<ChildGuard> {
    let bin = prometheus_bin();
    if !bin.is_file() {
        bail!(
            "{} not found: run `cargo xtask setup` (it installs Debian's `prometheus` package), or point $PROMETHEUS at it",
            bin.display()
        );
    }
    let dir = lab.tmp.path.join("prometheus");
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: lazaret\n    static_configs:\n      - targets: [\"{LAZARET_METRICS}\"]\n",
            rules().display()
        ),
    )?;
    lab.net.server.spawn(&[
        bin.to_str().context("prometheus path")?,
        &format!("--config.file={}", config.display()),
        &format!("--storage.tsdb.path={}", dir.join("data").display()),
        &format!("--web.listen-address={PROMETHEUS_ADDR}"),
        "--log.level=warn",
    ])
}

/// GET a Prometheus API path from inside the server namespace; the parsed `data`.
fn api(lab: &Lab, path: &str) -> Result<serde_json::Value> {
    let request = format!("GET {path} HTTP/1.0\r\nHost: prometheus\r\n\r\n");
    let reply = lab.net.server.run(move || -> std::io::Result<String> {
        let mut s = TcpStream::connect(PROMETHEUS_ADDR)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(request.as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })??;
    let (head, body) = reply.split_once("\r\n\r\n").context("HTTP reply")?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        bail!("Prometheus answered {path} with {head}");
    }
    let v: serde_json::Value = serde_json::from_str(body)?;
    if v["status"] != "success" {
        bail!("Prometheus API {path}: {v}");
    }
    Ok(v["data"].clone())
}

/// Polls `f` every 250 ms until it yields a value, for at most `secs` seconds.
fn poll<T>(secs: u64, what: &str, mut f: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last_err = None;
    while Instant::now() < deadline {
        match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        thread::sleep(Duration::from_millis(250));
    }
    bail!("{what} within {secs} s (last error: {last_err:?})")
}

fn quarantine_alerts(lab: &Lab) -> Result<Vec<serde_json::Value>> {
    let data = api(lab, "/api/v1/alerts")?;
    Ok(data["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["labels"]["alertname"] == "LazaretDeviceQuarantined")
        .cloned()
        .collect())
}

#[test]
fn prometheus_fires_the_quarantine_alert() -> Result<()> {
    let mut lab = Lab::new(policy)?;
    // Metrics on the gateway's upstream address, where the monitoring server reaches it.
    let config = std::fs::read_to_string(&lab.config)?;
    std::fs::write(
        &lab.config,
        format!("metrics_listen = \"{LAZARET_METRICS}\"\n{config}"),
    )?;
    lab.start()?;
    let mut prometheus = start_prometheus(&lab)?;

    poll(30, "Prometheus did not scrape lazaret", || {
        if !prometheus.running() {
            bail!("prometheus exited:\n{}", prometheus.output());
        }
        let data = api(&lab, "/api/v1/query?query=up%7Bjob%3D%22lazaret%22%7D")?;
        let up = data["result"][0]["value"][1] == "1";
        Ok(up.then_some(()))
    })?;
    // The rules are loaded, and the quarantine alert is silent before any quarantine.
    let groups = api(&lab, "/api/v1/rules")?;
    let names: Vec<&str> = groups["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|g| g["name"].as_str())
        .collect();
    assert!(names.contains(&"lazaret.containment"), "{names:?}");
    assert!(
        quarantine_alerts(&lab)?.is_empty(),
        "no quarantine alert before a quarantine"
    );

    for port in [23u16, 25, 80, 139, 445] {
        let _ = lab.connect(port, Duration::from_millis(200));
    }
    poll(5, "the pump was not isolated", || {
        let list = lab.cli(&["quarantine", "list"])?;
        Ok((list["pump-icu-01"]["action"] == "isolate").then_some(()))
    })?;
    let alert = poll(30, "LazaretDeviceQuarantined did not fire", || {
        Ok(quarantine_alerts(&lab)?
            .into_iter()
            .find(|a| a["state"] == "firing"))
    })?;
    assert_eq!(alert["labels"]["action"], "isolate", "{alert}");
    assert_eq!(alert["labels"]["severity"], "critical", "{alert}");
    assert_eq!(alert["labels"]["job"], "lazaret", "{alert}");
    assert_eq!(alert["labels"]["instance"], LAZARET_METRICS, "{alert}");
    assert!(
        alert["annotations"]["summary"]
            .as_str()
            .is_some_and(|s| s.contains("quarantined (isolate)")),
        "{alert}"
    );
    drop(prometheus);
    Ok(())
}
