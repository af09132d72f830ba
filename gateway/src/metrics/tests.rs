//! Tests of the metric families, their exposition and the HTTP endpoint.

use std::{error::Error, net::SocketAddr, sync::Arc, time::Duration};

use lazaret_abi::{stats_index, Reason, SIDE_DEVICES, SIDE_UPSTREAM, STATS_LEN};
use prometheus_parse::{Scrape, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::oneshot,
};

use super::*;
use crate::dataplane::xdp::DeviceCounterTotals;

type TestResult = Result<(), Box<dyn Error>>;

fn metrics() -> Result<Metrics, MetricsError> {
    Metrics::new("9.9.9-test")
}

fn scrape(metrics: &Metrics) -> Result<Scrape, Box<dyn Error>> {
    let text = metrics.render();
    Ok(Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))?)
}

/// The value of the one sample of `name` whose labels are exactly `labels`.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Result<f64, Box<dyn Error>> {
    let mut found = scrape.samples.iter().filter(|s| {
        s.metric == name
            && s.labels.len() == labels.len()
            && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
    });
    let sample = found
        .next()
        .ok_or_else(|| format!("no sample {name}{labels:?}"))?;
    if found.next().is_some() {
        return Err(format!("more than one sample {name}{labels:?}").into());
    }
    match sample.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Ok(v),
        _ => Err(format!("{name} is not a plain sample").into()),
    }
}

fn series_count(scrape: &Scrape, name: &str) -> usize {
    scrape.samples.iter().filter(|s| s.metric == name).count()
}

fn packets(entries: &[(Reason, u8, u64)]) -> Vec<u64> {
    let mut packets = vec![0; STATS_LEN as usize];
    for &(reason, side, n) in entries {
        packets[stats_index(reason, side) as usize] = n;
    }
    packets
}

fn class(name: &str, allowed: u64, denied: u64) -> (String, DeviceCounterTotals) {
    let totals = DeviceCounterTotals {
        allowed_packets: allowed,
        allowed_bytes: allowed * 100,
        denied_packets: denied,
        denied_bytes: denied * 60,
        last_seen_ns: 0,
    };
    (name.to_owned(), totals)
}

const SPOOF_DEVICES: [(&str, &str); 3] = [
    ("reason", "deny_spoof"),
    ("side", "devices"),
    ("verdict", "drop"),
];

// === Datapath counters ===

#[test]
fn packet_counters_advance_by_deltas_and_survive_resets() -> TestResult {
    let m = metrics()?;
    let reading = |n| DatapathSnapshot {
        packets: packets(&[(Reason::DenySpoof, SIDE_DEVICES, n)]),
        ..DatapathSnapshot::default()
    };
    m.observe_datapath(&reading(10));
    m.observe_datapath(&reading(15));
    assert_eq!(
        value(&scrape(&m)?, "lazaret_packets_total", &SPOOF_DEVICES)?,
        15.0
    );
    // The maps were recreated: 3 packets since.
    m.observe_datapath(&reading(3));
    assert_eq!(
        value(&scrape(&m)?, "lazaret_packets_total", &SPOOF_DEVICES)?,
        18.0
    );
    m.observe_datapath(&reading(7));
    assert_eq!(
        value(&scrape(&m)?, "lazaret_packets_total", &SPOOF_DEVICES)?,
        22.0
    );
    Ok(())
}

#[test]
fn every_reason_and_side_exists_before_any_packet() -> TestResult {
    let s = scrape(&metrics()?)?;
    assert_eq!(
        series_count(&s, "lazaret_packets_total"),
        Reason::ALL.len() * 2
    );
    for reason in Reason::ALL {
        let verdict = if reason.passes() { "pass" } else { "drop" };
        for side in ["devices", "upstream"] {
            let labels = [
                ("reason", reason.name()),
                ("side", side),
                ("verdict", verdict),
            ];
            assert_eq!(value(&s, "lazaret_packets_total", &labels)?, 0.0);
        }
    }
    Ok(())
}

#[test]
fn an_unread_packets_vector_leaves_the_counters_alone() -> TestResult {
    let m = metrics()?;
    let read = DatapathSnapshot {
        packets: packets(&[(Reason::DenySpoof, SIDE_DEVICES, 10)]),
        ..DatapathSnapshot::default()
    };
    m.observe_datapath(&read);
    m.observe_datapath(&DatapathSnapshot::default());
    m.observe_datapath(&read);
    assert_eq!(
        value(&scrape(&m)?, "lazaret_packets_total", &SPOOF_DEVICES)?,
        10.0
    );
    Ok(())
}

#[test]
fn event_outcomes_are_disjoint_and_survive_resets() -> TestResult {
    let m = metrics()?;
    let reading = |sent, limited, full, undecodable| DatapathSnapshot {
        event_stats: [sent, limited, full, 0],
        events_undecodable: undecodable,
        ..DatapathSnapshot::default()
    };
    m.observe_datapath(&reading(100, 5, 1, 2));
    m.observe_datapath(&reading(150, 9, 1, 2));
    m.observe_datapath(&reading(20, 0, 4, 3)); // recreated maps; one more undecodable
    let s = scrape(&m)?;
    let outcome = |o| value(&s, "lazaret_events_total", &[("outcome", o)]);
    assert_eq!(outcome("delivered")?, 98.0 + 50.0 + 19.0);
    assert_eq!(outcome("rate_limited")?, 9.0);
    assert_eq!(outcome("ring_full")?, 1.0 + 4.0);
    assert_eq!(outcome("undecodable")?, 3.0);
    Ok(())
}

#[test]
fn refused_flow_inserts_are_counted_across_readings() -> TestResult {
    let m = metrics()?;
    let reading = |failed| DatapathSnapshot {
        event_stats: [10, 0, 0, failed],
        ..DatapathSnapshot::default()
    };
    m.observe_datapath(&reading(3));
    m.observe_datapath(&reading(7));
    let s = scrape(&m)?;
    assert_eq!(value(&s, "lazaret_flow_insert_failures_total", &[])?, 7.0);
    Ok(())
}

/// nftables' packet counters restart with a restored table while its event counts (the
/// daemon's nflog reader's) keep growing: the events advance by their difference, not by
/// their whole total again.
#[test]
fn packet_counters_restarting_do_not_count_the_events_again() -> TestResult {
    let m = metrics()?;
    let reading = |packets_n, delivered| DatapathSnapshot {
        packets: packets(&[(Reason::DenySpoof, SIDE_DEVICES, packets_n)]),
        event_stats: [delivered, 0, 0, 0],
        ..DatapathSnapshot::default()
    };
    m.observe_datapath(&reading(10, 100));
    m.observe_datapath(&reading(3, 120)); // the table restored: its counters restart
    let s = scrape(&m)?;
    assert_eq!(value(&s, "lazaret_packets_total", &SPOOF_DEVICES)?, 13.0);
    assert_eq!(
        value(&s, "lazaret_events_total", &[("outcome", "delivered")])?,
        120.0
    );
    Ok(())
}

#[test]
fn unread_event_stats_are_not_taken_for_a_recreation() -> TestResult {
    let m = metrics()?;
    let reading = |packets_n, events| DatapathSnapshot {
        packets: packets(&[(Reason::DenySpoof, SIDE_DEVICES, packets_n)]),
        event_stats: events,
        ..DatapathSnapshot::default()
    };
    m.observe_datapath(&reading(10, [100, 5, 0, 0]));
    m.observe_datapath(&reading(15, [0; 4]));
    m.observe_datapath(&reading(20, [150, 6, 0, 0]));
    let s = scrape(&m)?;
    assert_eq!(value(&s, "lazaret_packets_total", &SPOOF_DEVICES)?, 20.0);
    assert_eq!(
        value(&s, "lazaret_events_total", &[("outcome", "delivered")])?,
        150.0
    );
    assert_eq!(
        value(&s, "lazaret_events_total", &[("outcome", "rate_limited")])?,
        6.0
    );
    Ok(())
}

#[test]
fn class_counters_hold_still_when_a_device_leaves_the_class() -> TestResult {
    let m = metrics()?;
    let global = packets(&[(Reason::AllowFlow, SIDE_UPSTREAM, 1000)]);
    let reading = |classes| DatapathSnapshot {
        packets: global.clone(),
        class_packets: classes,
        ..DatapathSnapshot::default()
    };
    m.observe_datapath(&reading(vec![class("pump", 40, 2), class("monitor", 7, 0)]));
    // A pump with 30 passed packets left the class; the others sent 5 more.
    m.observe_datapath(&reading(vec![class("pump", 15, 2)]));
    m.observe_datapath(&reading(vec![class("pump", 18, 3), class("monitor", 9, 0)]));
    let s = scrape(&m)?;
    let pump = |verdict| [("class", "pump"), ("verdict", verdict)];
    assert_eq!(
        value(&s, "lazaret_class_packets_total", &pump("pass"))?,
        43.0
    );
    assert_eq!(
        value(&s, "lazaret_class_packets_total", &pump("drop"))?,
        3.0
    );
    assert_eq!(
        value(&s, "lazaret_class_bytes_total", &pump("pass"))?,
        4300.0
    );
    assert_eq!(
        value(&s, "lazaret_class_bytes_total", &pump("drop"))?,
        180.0
    );
    let monitor = [("class", "monitor"), ("verdict", "pass")];
    assert_eq!(value(&s, "lazaret_class_packets_total", &monitor)?, 9.0);
    Ok(())
}

#[test]
fn class_counters_follow_a_map_recreation() -> TestResult {
    let m = metrics()?;
    m.observe_datapath(&DatapathSnapshot {
        packets: packets(&[(Reason::AllowFlow, SIDE_UPSTREAM, 1000)]),
        class_packets: vec![class("pump", 40, 2)],
        ..DatapathSnapshot::default()
    });
    m.observe_datapath(&DatapathSnapshot {
        packets: packets(&[(Reason::AllowFlow, SIDE_UPSTREAM, 6)]),
        class_packets: vec![class("pump", 5, 1)],
        ..DatapathSnapshot::default()
    });
    let s = scrape(&m)?;
    let pump = |verdict| [("class", "pump"), ("verdict", verdict)];
    assert_eq!(
        value(&s, "lazaret_class_packets_total", &pump("pass"))?,
        45.0
    );
    assert_eq!(
        value(&s, "lazaret_class_packets_total", &pump("drop"))?,
        3.0
    );
    Ok(())
}

#[test]
fn gauges_take_the_reading() -> TestResult {
    let m = metrics()?;
    let reading = |flows, entries| DatapathSnapshot {
        flows_active: flows,
        map_entries: vec![("LZ_FLOWS", entries, 262_144)],
        ..DatapathSnapshot::default()
    };
    m.observe_datapath(&reading(500, 500));
    m.observe_datapath(&reading(120, 130));
    let s = scrape(&m)?;
    assert_eq!(value(&s, "lazaret_flows_active", &[])?, 120.0);
    assert_eq!(
        value(&s, "lazaret_map_entries", &[("map", "LZ_FLOWS")])?,
        130.0
    );
    assert_eq!(
        value(&s, "lazaret_map_capacity", &[("map", "LZ_FLOWS")])?,
        262_144.0
    );
    Ok(())
}

// === Controller state ===

#[test]
fn policy_info_has_one_series_after_two_reloads() -> TestResult {
    let m = metrics()?;
    m.reload_attempted();
    m.reload_succeeded(
        Duration::from_millis(30),
        1,
        Some("abc123"),
        1_700_000_000.5,
    );
    m.reload_attempted();
    m.reload_failed(Duration::from_millis(4), ReloadFailure::InvalidPolicy);
    let s = scrape(&m)?;
    assert_eq!(value(&s, "lazaret_policy_last_reload_failed", &[])?, 1.0);
    m.reload_attempted();
    m.reload_succeeded(Duration::from_millis(40), 2, None, 1_700_000_060.0);
    let s = scrape(&m)?;
    assert_eq!(series_count(&s, "lazaret_policy_info"), 1);
    // An empty label is the same as no label to Prometheus.
    assert_eq!(
        value(
            &s,
            "lazaret_policy_info",
            &[("generation", "2"), ("commit", "")]
        )?,
        1.0
    );
    assert_eq!(value(&s, "lazaret_policy_last_reload_failed", &[])?, 0.0);
    assert_eq!(
        value(&s, "lazaret_policy_last_success_timestamp_seconds", &[])?,
        1_700_000_060.0
    );
    assert_eq!(value(&s, "lazaret_policy_reload_attempts_total", &[])?, 3.0);
    assert_eq!(
        value(&s, "lazaret_policy_reloads_total", &[("result", "success")])?,
        2.0
    );
    assert_eq!(
        value(&s, "lazaret_policy_reloads_total", &[("result", "failure")])?,
        1.0
    );
    let invalid = [("reason", "invalid_policy")];
    assert_eq!(
        value(&s, "lazaret_policy_reload_failures_total", &invalid)?,
        1.0
    );
    assert_eq!(
        value(
            &s,
            "lazaret_policy_reload_failures_total",
            &[("reason", "io")]
        )?,
        0.0
    );
    assert_eq!(
        value(&s, "lazaret_policy_reload_duration_seconds_count", &[])?,
        3.0
    );
    let sum = value(&s, "lazaret_policy_reload_duration_seconds_sum", &[])?;
    assert!((sum - 0.074).abs() < 1e-9, "{sum}");
    Ok(())
}

#[test]
fn reload_duration_is_a_histogram_in_seconds() -> TestResult {
    let m = metrics()?;
    m.reload_succeeded(Duration::from_millis(30), 1, Some("abc"), 0.0);
    m.reload_succeeded(Duration::from_millis(1500), 2, Some("def"), 0.0);
    let s = scrape(&m)?;
    let histogram = s
        .samples
        .iter()
        .find(|s| s.metric == "lazaret_policy_reload_duration_seconds")
        .ok_or("no histogram")?;
    let Value::Histogram(buckets) = &histogram.value else {
        return Err("not a histogram".into());
    };
    let count_le = |le: f64| buckets.iter().find(|b| b.less_than == le).map(|b| b.count);
    assert_eq!(count_le(0.025), Some(0.0));
    assert_eq!(count_le(0.05), Some(1.0));
    assert_eq!(count_le(2.0), Some(2.0));
    assert_eq!(count_le(f64::INFINITY), Some(2.0));
    Ok(())
}

#[test]
fn an_interface_has_only_its_current_mode_series() -> TestResult {
    let m = metrics()?;
    m.set_interface("eth1", "native", true);
    m.set_interface("eth2", "native", true);
    m.set_interface("eth1", "skb", true);
    m.set_interface("eth1", "skb", false);
    let s = scrape(&m)?;
    assert_eq!(series_count(&s, "lazaret_interface_attached"), 2);
    let eth1 = [("interface", "eth1"), ("mode", "skb")];
    assert_eq!(value(&s, "lazaret_interface_attached", &eth1)?, 0.0);
    let eth2 = [("interface", "eth2"), ("mode", "native")];
    assert_eq!(value(&s, "lazaret_interface_attached", &eth2)?, 1.0);
    m.remove_interface("eth1");
    assert_eq!(series_count(&scrape(&m)?, "lazaret_interface_attached"), 1);
    Ok(())
}

#[test]
fn quarantine_and_device_families() -> TestResult {
    let m = metrics()?;
    m.set_quarantined(&[("isolate", 2), ("alert", 1)]);
    m.set_quarantined(&[("isolate", 1)]);
    m.quarantine_event("isolate");
    m.quarantine_event("isolate");
    m.deviation("deny");
    m.deviation("spoof");
    m.deviation("deny");
    m.set_devices_by_mode(10, 2, 1);
    m.set_unknown_devices(4);
    m.unknown_device_discovered();
    let s = scrape(&m)?;
    let quarantined = |a| value(&s, "lazaret_quarantined_devices", &[("action", a)]);
    assert_eq!(quarantined("isolate")?, 1.0);
    assert_eq!(quarantined("alert")?, 0.0);
    assert_eq!(quarantined("restrict")?, 0.0);
    assert_eq!(
        value(&s, "lazaret_quarantines_total", &[("action", "isolate")])?,
        2.0
    );
    assert_eq!(
        value(&s, "lazaret_quarantines_total", &[("action", "alert")])?,
        0.0
    );
    assert_eq!(
        value(&s, "lazaret_deviations_total", &[("kind", "deny")])?,
        2.0
    );
    assert_eq!(
        value(&s, "lazaret_deviations_total", &[("kind", "spoof")])?,
        1.0
    );
    assert_eq!(
        value(&s, "lazaret_deviations_total", &[("kind", "rogue_ra")])?,
        0.0
    );
    assert_eq!(value(&s, "lazaret_devices", &[("mode", "enforce")])?, 10.0);
    assert_eq!(value(&s, "lazaret_devices", &[("mode", "audit")])?, 2.0);
    assert_eq!(value(&s, "lazaret_devices", &[("mode", "learn")])?, 1.0);
    assert_eq!(value(&s, "lazaret_unknown_devices", &[])?, 4.0);
    assert_eq!(
        value(&s, "lazaret_unknown_devices_discovered_total", &[])?,
        1.0
    );
    Ok(())
}

#[test]
fn label_values_outside_their_set_are_recorded_as_other() -> TestResult {
    // (Reload failures are a closed enum: see `every_reload_failure_has_its_own_label`.)
    let m = metrics()?;
    m.deviation("10.1.2.3");
    m.set_interface("eth1", "turbo", true);
    m.set_quarantined(&[("banish", 3)]);
    let s = scrape(&m)?;
    assert_eq!(
        value(&s, "lazaret_deviations_total", &[("kind", "other")])?,
        1.0
    );
    let eth1 = [("interface", "eth1"), ("mode", "other")];
    assert_eq!(value(&s, "lazaret_interface_attached", &eth1)?, 1.0);
    assert_eq!(
        value(&s, "lazaret_quarantined_devices", &[("action", "other")])?,
        3.0
    );
    assert!(!m.render().contains("10.1.2.3"));
    Ok(())
}

// === Exposition ===

#[test]
fn build_info_names_the_version_and_abi() -> TestResult {
    let s = scrape(&metrics()?)?;
    let abi = lazaret_abi::ABI_VERSION.to_string();
    let labels = [("version", "9.9.9-test"), ("abi_version", abi.as_str())];
    assert_eq!(value(&s, "lazaret_build_info", &labels)?, 1.0);
    Ok(())
}

#[test]
fn gateway_info_names_the_site_gateway_and_member_and_is_replaced() -> TestResult {
    let m = metrics()?;
    m.set_gateway("St. Example General", "ward-a", "gw-a1");
    m.set_gateway("St. Example General", "ward-b", "gw-b1");
    let s = scrape(&m)?;
    assert_eq!(series_count(&s, "lazaret_gateway_info"), 1);
    let labels = [
        ("site", "St. Example General"),
        ("gateway", "ward-b"),
        ("member", "gw-b1"),
    ];
    assert_eq!(value(&s, "lazaret_gateway_info", &labels)?, 1.0);
    Ok(())
}

#[test]
fn render_parses_with_types_and_help() -> TestResult {
    let m = metrics()?;
    m.observe_datapath(&DatapathSnapshot {
        packets: packets(&[(Reason::AllowRule, SIDE_DEVICES, 3)]),
        class_packets: vec![class("pump", 1, 1)],
        map_entries: vec![("LZ_FLOWS", 1, 2)],
        ..DatapathSnapshot::default()
    });
    m.reload_succeeded(Duration::from_millis(1), 1, Some("abc"), 1.0);
    m.set_interface("eth1", "native", true);
    let s = scrape(&m)?;
    let allow = [
        ("reason", "allow_rule"),
        ("side", "devices"),
        ("verdict", "pass"),
    ];
    assert_eq!(value(&s, "lazaret_packets_total", &allow)?, 3.0);
    for sample in &s.samples {
        let family = sample
            .metric
            .trim_end_matches("_sum")
            .trim_end_matches("_count");
        assert!(s.docs.contains_key(family), "{} has no HELP", sample.metric);
        let expected_counter = family.ends_with("_total");
        match sample.value {
            Value::Counter(_) => assert!(expected_counter, "{}", sample.metric),
            Value::Gauge(_) => assert!(!expected_counter, "{}", sample.metric),
            // The parser leaves a histogram's _sum and _count untyped.
            Value::Untyped(_) => assert_ne!(family, sample.metric, "{} untyped", sample.metric),
            Value::Histogram(_) => assert!(family.ends_with("_seconds")),
            Value::Summary(_) => panic!("no summaries expected: {}", sample.metric),
        }
    }
    Ok(())
}

#[test]
fn every_family_follows_the_conventions() -> TestResult {
    let m = metrics()?;
    // Families without series are not gathered: create one of each.
    m.observe_datapath(&DatapathSnapshot {
        class_packets: vec![class("pump", 1, 1)],
        map_entries: vec![("LZ_FLOWS", 1, 2)],
        ..DatapathSnapshot::default()
    });
    m.reload_succeeded(Duration::from_millis(1), 1, Some("abc"), 1.0);
    m.set_gateway("site", "", "host");
    m.set_ha_role("standalone");
    m.set_interface("eth1", "native", true);
    m.tamper("eth1", "xdp_detached");
    // The process collector's own families (`process_*`, documented as such) follow the
    // prometheus crate's conventions, not these.
    let families: Vec<_> = m
        .registry
        .gather()
        .into_iter()
        .filter(|f| !f.name().starts_with("process_"))
        .collect();
    assert_eq!(families.len(), FAMILIES.len(), "FAMILIES is out of date");
    let docs = include_str!("../../../docs/metrics.md");
    for family in &families {
        let name = family.name();
        assert!(FAMILIES.contains(&name), "{name} missing from FAMILIES");
        assert!(name.starts_with("lazaret_"), "{name}");
        assert!(
            docs.contains(&format!("`{name}`")),
            "{name} not in docs/metrics.md"
        );
        let counter = family.get_field_type() == prometheus::proto::MetricType::COUNTER;
        assert_eq!(counter, name.ends_with("_total"), "{name}");
        if name.ends_with("_info") {
            assert!(family
                .get_metric()
                .iter()
                .all(|m| m.get_gauge().get_value() == 1.0));
        }
        for metric in family.get_metric() {
            for label in metric.get_label() {
                let forbidden = ["device", "ip", "mac", "addr", "address", "id"];
                assert!(
                    !forbidden.contains(&label.name()),
                    "{name}: {}",
                    label.name()
                );
            }
        }
    }
    Ok(())
}

/// Every family lazaret exports.
const FAMILIES: &[&str] = &[
    "lazaret_build_info",
    "lazaret_gateway_info",
    "lazaret_ha_role",
    "lazaret_ha_standby_decisions_total",
    "lazaret_ha_sync_up",
    "lazaret_exceptions_open",
    "lazaret_exceptions_overdue",
    "lazaret_exception_transitions_total",
    "lazaret_ha_sync_refused_total",
    "lazaret_ha_flow_updates_total",
    "lazaret_syslog_messages_total",
    "lazaret_packets_total",
    "lazaret_class_packets_total",
    "lazaret_class_bytes_total",
    "lazaret_flows_active",
    "lazaret_map_entries",
    "lazaret_map_capacity",
    "lazaret_events_total",
    "lazaret_flow_insert_failures_total",
    "lazaret_policy_reload_attempts_total",
    "lazaret_policy_reloads_total",
    "lazaret_policy_reload_failures_total",
    "lazaret_policy_reload_duration_seconds",
    "lazaret_policy_last_success_timestamp_seconds",
    "lazaret_policy_last_reload_failed",
    "lazaret_policy_info",
    "lazaret_interface_attached",
    "lazaret_quarantined_devices",
    "lazaret_quarantines_total",
    "lazaret_deviations_total",
    "lazaret_devices",
    "lazaret_unknown_devices",
    "lazaret_unknown_devices_discovered_total",
    "lazaret_webhook_deliveries_total",
    "lazaret_loop_heartbeat_timestamp_seconds",
    "lazaret_datapath_counters_read_timestamp_seconds",
    "lazaret_state_persist_failures_total",
    "lazaret_state_persisted",
    "lazaret_policy_last_known_good",
    "lazaret_datapath_tamper_total",
    "lazaret_interfaces_held_closed",
];

// === HTTP endpoint ===

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One request on its own connection, read until the server closes it.
async fn request(addr: SocketAddr, method: &str, path: &str) -> Result<Reply, Box<dyn Error>> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let head = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = String::from_utf8(tokio::time::timeout(Duration::from_secs(5), exchange).await??)?;
    let (head, body) = raw.split_once("\r\n\r\n").ok_or("no end of headers")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or("no status line")?;
    let status = status_line.split(' ').nth(1).ok_or("no status")?.parse()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Ok(Reply {
        status,
        headers,
        body: body.to_owned(),
    })
}

struct Server {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start_server(metrics: Metrics) -> Result<Server, Box<dyn Error>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel();
    let shutdown = async move {
        // A dropped sender stops the server too.
        let _ = stopped.await;
    };
    let task = tokio::spawn(serve(listener, Arc::new(metrics), shutdown));
    Ok(Server { addr, stop, task })
}

#[tokio::test]
async fn get_metrics_answers_the_text_format() -> TestResult {
    let m = metrics()?;
    m.set_unknown_devices(7);
    let server = start_server(m).await?;
    let reply = request(server.addr, "GET", "/metrics").await?;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some(CONTENT_TYPE));
    assert!(CONTENT_TYPE.starts_with(prometheus::TEXT_FORMAT));
    let s = Scrape::parse(reply.body.lines().map(|l| Ok(l.to_owned())))?;
    assert_eq!(value(&s, "lazaret_unknown_devices", &[])?, 7.0);
    // A query string does not change the resource.
    assert_eq!(
        request(server.addr, "GET", "/metrics?x=1").await?.status,
        200
    );
    let head = request(server.addr, "HEAD", "/metrics").await?;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(
        head.header("content-length"),
        Some(reply.body.len().to_string().as_str())
    );
    Ok(())
}

#[tokio::test]
async fn other_paths_are_404_and_other_methods_405() -> TestResult {
    let server = start_server(metrics()?).await?;
    assert_eq!(request(server.addr, "GET", "/").await?.status, 404);
    assert_eq!(request(server.addr, "GET", "/metrics/x").await?.status, 404);
    for method in ["POST", "PUT", "DELETE"] {
        let reply = request(server.addr, method, "/metrics").await?;
        assert_eq!(reply.status, 405, "{method}");
        assert_eq!(reply.header("allow"), Some("GET, HEAD"));
    }
    Ok(())
}

#[tokio::test]
async fn the_server_stops_on_shutdown_despite_an_idle_connection() -> TestResult {
    let server = start_server(metrics()?).await?;
    assert_eq!(request(server.addr, "GET", "/metrics").await?.status, 200);
    let _idle = TcpStream::connect(server.addr).await?;
    let _ = server.stop.send(());
    tokio::time::timeout(Duration::from_secs(3), server.task).await???;
    assert!(
        TcpStream::connect(server.addr).await.is_err(),
        "still listening"
    );
    Ok(())
}

#[tokio::test]
async fn healthz_says_whether_the_loop_beats() -> TestResult {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    let beating = metrics()?;
    beating.heartbeat(now);
    let stalled = metrics()?;
    stalled.heartbeat(now - 2 * super::health::STALLED_AFTER_MS);
    for (m, code, status) in [
        (beating, 200, "ok"),
        (stalled, 503, "stalled"),
        // Before the first beat: not working yet.
        (metrics()?, 503, "stalled"),
    ] {
        let server = start_server(m).await?;
        let reply = request(server.addr, "GET", "/healthz").await?;
        assert_eq!(reply.status, code, "{}", reply.body);
        let body: serde_json::Value = serde_json::from_str(&reply.body)?;
        assert_eq!(body["status"], status, "{}", reply.body);
    }
    Ok(())
}

/// Every reason a reload can fail is exported under its own label, present at 0 from the
/// start; nftables refusing a generation is `nftables`, not `other`.
#[test]
fn every_reload_failure_has_its_own_label() -> TestResult {
    let m = metrics()?;
    let s = scrape(&m)?;
    for reason in ReloadFailure::ALL {
        assert_eq!(
            value(
                &s,
                "lazaret_policy_reload_failures_total",
                &[("reason", reason.label())]
            )?,
            0.0,
            "{reason:?}"
        );
    }
    m.reload_failed(Duration::ZERO, ReloadFailure::Nftables);
    let s = scrape(&m)?;
    assert_eq!(
        value(
            &s,
            "lazaret_policy_reload_failures_total",
            &[("reason", "nftables")]
        )?,
        1.0
    );
    Ok(())
}
