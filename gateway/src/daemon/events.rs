//! The controller's event feed: what `lazaret events [--follow]` shows and what the webhook
//! sends. Datapath events (deny, audit, spoof, unknown, learn, rogue) and controller events
//! (quarantine, release) become one JSON object each, with the context the controller knows
//! and the datapath does not: the device's inventory id, class and mode, and the rule that
//! was involved (workflow and rule number).
//!
//! The feed keeps the last [`RECENT`] events and broadcasts new ones to every follower. A
//! follower too slow to keep up loses events (it is told how many), never slows the
//! controller: publishing is a bounded, non-blocking operation.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, PoisonError},
};

use lazaret_abi::{Event as AbiEvent, Reason, DIR_DEVICE_INIT, FAMILY_V4, NO_RULE};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::quarantine::Action;
use crate::policy::{model::Mode, Compiled};

/// Events kept for `lazaret events` without `--follow` (and replayed to a new follower).
pub const RECENT: usize = 256;
/// Events a follower may lag behind before it loses some.
const FOLLOW_BUFFER: usize = 1024;

/// One event, serialized once as a JSON line (without the newline).
pub type Line = Arc<str>;

struct Inner {
    recent: VecDeque<Line>,
    tx: broadcast::Sender<Line>,
}

/// Cheap to clone; shared by the controller (publisher) and the control server (followers).
#[derive(Clone)]
pub struct Feed {
    inner: Arc<Mutex<Inner>>,
}

impl Default for Feed {
    fn default() -> Self {
        let (tx, _) = broadcast::channel(FOLLOW_BUFFER);
        Feed {
            inner: Arc::new(Mutex::new(Inner {
                recent: VecDeque::with_capacity(RECENT),
                tx,
            })),
        }
    }
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed").finish_non_exhaustive()
    }
}

impl Feed {
    /// Records an event and hands it to every follower.
    pub fn publish(&self, event: &Record) {
        let line: Line = serde_json::to_string(event)
            .unwrap_or_else(|e| {
                format!("{{\"v\":{RECORD_VERSION},\"kind\":\"unencodable\",\"error\":\"{e}\"}}")
            })
            .into();
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if inner.recent.len() == RECENT {
            inner.recent.pop_front();
        }
        inner.recent.push_back(line.clone());
        // Err only means nobody follows.
        let _ = inner.tx.send(line);
    }

    /// The recent events and a receiver of every later one: taken under one lock, so a
    /// follower sees each event exactly once.
    pub fn subscribe(&self) -> (Vec<Line>, broadcast::Receiver<Line>) {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        (inner.recent.iter().cloned().collect(), inner.tx.subscribe())
    }

    /// The recent events, oldest first.
    pub fn recent(&self) -> Vec<Line> {
        self.subscribe().0
    }
}

/// Unix time now, in seconds with millisecond precision.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| (d.as_millis() as f64) / 1000.0)
}

/// The version of the event record's JSON (`"v"`), raised on any change a consumer could
/// notice other than a new optional field or a new `kind`. docs/events.md documents it.
pub const RECORD_VERSION: u32 = 1;

/// One event of the feed, the webhook and `lazaret events --output json`: one JSON object,
/// `{"v": 1, "ts": …, "kind": "…", …}` with the fields of its kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// [`RECORD_VERSION`].
    pub v: u32,
    /// Unix seconds, millisecond precision.
    pub ts: f64,
    #[serde(flatten)]
    pub event: Event,
}

impl Record {
    pub fn new(ts: f64, event: Event) -> Record {
        Record {
            v: RECORD_VERSION,
            ts,
            event,
        }
    }

    /// The `kind` as in the JSON.
    pub fn kind(&self) -> &'static str {
        match &self.event {
            Event::Deny(_) => "deny",
            Event::Audit(_) => "audit",
            Event::Spoof(_) => "spoof",
            Event::Unknown(_) => "unknown",
            Event::Learn(_) => "learn",
            Event::Rogue(_) => "rogue",
            Event::Other(_) => "other",
            Event::Quarantine(_) => "quarantine",
            Event::Release(_) => "release",
            Event::NewUnknownDevice(_) => "new_unknown_device",
            Event::ExceptionOpened(_) => "exception_opened",
            Event::ExceptionClosed(_) => "exception_closed",
            Event::Lost { .. } => "lost",
        }
    }
}

/// What happened, by `kind`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// A packet the policy denies (enforce mode).
    Deny(Traffic),
    /// A packet of an audit-mode device or workflow: allowed, reported.
    Audit(Traffic),
    /// A source whose address, MAC, interface, VLAN or port is not its binding.
    Spoof(Traffic),
    /// A source not in the inventory.
    Unknown(Traffic),
    /// A new flow of a learn-mode device.
    Learn(Traffic),
    /// A rogue DHCP server or IPv6 router on a device port.
    Rogue(Traffic),
    /// A datapath event of a kind this version does not know.
    Other(Traffic),
    /// A device quarantined (by a person, or by lazaret on a deviation).
    Quarantine(Decision),
    /// A device released.
    Release(Decision),
    /// A source not in the inventory, seen for the first time.
    NewUnknownDevice(Sighting),
    /// A vendor service window began to be enforced.
    ExceptionOpened(Window),
    /// A vendor service window stopped being enforced (its flows are re-judged).
    ExceptionClosed(Window),
    /// This follower fell behind and lost `count` events.
    Lost { count: u64 },
}

/// A datapath event with the policy's context.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Traffic {
    /// The verdict's reason (`deny_no_rule`, `spoof_mac`, …: the `reason` label of
    /// `lazaret_packets_total`).
    pub reason: String,
    /// The inventory id, class and mode of the device, when the source is one.
    pub device: Option<String>,
    pub class: Option<String>,
    pub mode: Option<Mode>,
    pub src_mac: String,
    /// 0: untagged.
    pub vlan: u16,
    pub ifindex: u32,
    /// The policy generation that judged the packet.
    pub generation: u64,
    /// IP protocol number; absent for a frame without IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<u8>,
    /// `address:port` (`[v6]:port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<String>,
    /// Who opened the flow, for a device's packet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initiator: Option<Opener>,
    /// The rule involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<RuleRef>,
    /// For audit and learn events: what enforcing would have done (`deny_no_rule` or
    /// `allow_rule`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub would_be: Option<String>,
    /// A flow admitted earlier and refused when judged again under a new policy or device
    /// state (`EVENT_F_REJUDGED`): a session the change cut, not a deviation.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rejudged: bool,
}

/// Who opened a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Opener {
    Device,
    Peer,
}

/// A compiled rule, as an event names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleRef {
    pub id: u32,
    /// Where it comes from (`workflow hl7 rule 1`, `essential dhcp`, …); absent if the rule
    /// is not in the enforcing policy any more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A quarantine decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub device: String,
    /// The quarantine's action; `null` for a release.
    pub action: Option<Action>,
    /// A user (control API peer), or `lazaret`.
    pub by: String,
    pub reason: String,
}

/// A vendor service window (`[exceptions.NAME]`), as its events name it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub name: String,
    pub ticket: String,
    pub approved_by: String,
    /// RFC 3339, UTC.
    pub from: String,
    pub until: String,
    pub devices: Vec<String>,
    pub workflows: Vec<String>,
}

/// A service window opening (`opened`) or closing, for the feed.
pub fn window_event(
    e: &crate::policy::model::Exception,
    devices: Vec<String>,
    opened: bool,
    ts: f64,
) -> Record {
    let w = Window {
        name: e.name.clone(),
        ticket: e.ticket.clone(),
        approved_by: e.approved_by.clone(),
        from: crate::policy::windows::format_time(e.from),
        until: crate::policy::windows::format_time(e.until),
        devices,
        workflows: e.workflows.clone(),
    };
    Record::new(
        ts,
        if opened {
            Event::ExceptionOpened(w)
        } else {
            Event::ExceptionClosed(w)
        },
    )
}

/// A source not in the inventory, first seen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sighting {
    pub src_mac: String,
    pub address: Option<std::net::IpAddr>,
    pub vlan: u16,
    pub ifindex: u32,
    /// Its first flow (`proto dst:port`).
    pub flow: Option<String>,
    /// Who the IEEE assigned the MAC to, if the registry knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// A locally administered (randomised) MAC.
    #[serde(default)]
    pub randomized: bool,
}

/// The datapath event kind's variant.
fn traffic_event(kind: u8, t: Traffic) -> Event {
    match kind {
        lazaret_abi::EVENT_DENY => Event::Deny(t),
        lazaret_abi::EVENT_AUDIT => Event::Audit(t),
        lazaret_abi::EVENT_SPOOF => Event::Spoof(t),
        lazaret_abi::EVENT_UNKNOWN => Event::Unknown(t),
        lazaret_abi::EVENT_LEARN => Event::Learn(t),
        lazaret_abi::EVENT_ROGUE => Event::Rogue(t),
        _ => Event::Other(t),
    }
}

/// `a.b.c.d:port` or `[v6]:port`.
pub fn endpoint(family: u8, addr: &[u8; 16], port: u16) -> String {
    if family == FAMILY_V4 {
        format!("{}.{}.{}.{}:{port}", addr[0], addr[1], addr[2], addr[3])
    } else {
        format!("[{}]:{port}", std::net::Ipv6Addr::from(*addr))
    }
}

/// A datapath event with the policy's context. Pure.
pub fn datapath_event(ev: &AbiEvent, compiled: Option<&Compiled>, ts: f64) -> Record {
    let device = compiled.and_then(|c| c.device_by_hash(ev.device));
    let ip = ev.family != 0;
    let rule = (ev.rule != NO_RULE).then(|| {
        let info = compiled.and_then(|c| c.rule(ev.rule));
        RuleRef {
            id: info.map_or(ev.rule, |r| r.id),
            origin: info.map(|r| r.origin.to_string()),
            description: info.map(|r| r.description.clone()),
        }
    });
    // What enforcement would have done: an audit or learn miss would be a drop; a flow
    // that matched a rule of a workflow in audit mode would be allowed once the workflow
    // enforces.
    let would_be =
        matches!(ev.kind, lazaret_abi::EVENT_AUDIT | lazaret_abi::EVENT_LEARN).then(|| {
            if ev.rule == NO_RULE {
                Reason::DenyNoRule.name().to_string()
            } else {
                Reason::AllowRule.name().to_string()
            }
        });
    let traffic = Traffic {
        reason: Reason::from_u8(ev.reason)
            .map_or("other", |r| r.name())
            .to_string(),
        device: device.map(|d| d.id.clone()),
        class: device.and_then(|d| d.class.clone()),
        mode: device.map(|d| d.mode),
        src_mac: super::unknown::fmt_mac(&ev.src_mac),
        vlan: ev.vlan,
        ifindex: ev.ifindex,
        generation: ev.generation,
        proto: ip.then_some(ev.proto),
        src: ip.then(|| endpoint(ev.family, &ev.src, ev.src_port)),
        dst: ip.then(|| endpoint(ev.family, &ev.dst, ev.dst_port)),
        initiator: (ip && ev.device != 0).then_some(if ev.dir == DIR_DEVICE_INIT {
            Opener::Device
        } else {
            Opener::Peer
        }),
        rule,
        would_be,
        rejudged: ev.flags & lazaret_abi::EVENT_F_REJUDGED != 0,
    };
    Record::new(ts, traffic_event(ev.kind, traffic))
}

/// A quarantine (`action` set) or a release (`None`).
pub fn quarantine_event(
    device: &str,
    action: Option<Action>,
    by: &str,
    reason: &str,
    ts: f64,
) -> Record {
    let decision = Decision {
        device: device.to_string(),
        action,
        by: by.to_string(),
        reason: reason.to_string(),
    };
    Record::new(
        ts,
        match action {
            Some(_) => Event::Quarantine(decision),
            None => Event::Release(decision),
        },
    )
}

/// A source not in the inventory spoke on a device port for the first time.
pub fn new_unknown_event(s: &super::unknown::Sighting, vendor: Option<&str>, ts: f64) -> Record {
    Record::new(
        ts,
        Event::NewUnknownDevice(Sighting {
            src_mac: super::unknown::fmt_mac(&s.mac),
            address: s.src,
            vlan: s.vlan,
            ifindex: s.ifindex,
            flow: s.flow.clone(),
            vendor: vendor.map(str::to_string),
            randomized: super::oui::locally_administered(&s.mac),
        }),
    )
}

/// A MAC's vendor as the CLI prints it: the registry's name (made safe), `randomized` for a
/// locally administered MAC, `vendor unknown` otherwise.
pub fn vendor_text(vendor: Option<&str>, randomized: bool) -> String {
    match (vendor, randomized) {
        (_, true) => "randomized".to_string(),
        (Some(v), false) => crate::text::printable(v).into_owned(),
        (None, false) => "vendor unknown".to_string(),
    }
}

/// One readable line for a feed event (the CLI's default output).
pub fn human(r: &Record) -> String {
    let when = chrono::DateTime::from_timestamp_millis((r.ts * 1000.0) as i64).map_or_else(
        || r.ts.to_string(),
        |t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
    );
    let kind = r.kind();
    let p = |s: &str| crate::text::printable(s).into_owned();
    match &r.event {
        Event::Quarantine(d) | Event::Release(d) => format!(
            "{when} {kind:<10} {} {}by {}: {}",
            p(&d.device),
            d.action
                .map_or(String::new(), |a| format!("({}) ", a.name())),
            p(&d.by),
            p(&d.reason)
        ),
        Event::NewUnknownDevice(s) => format!(
            "{when} new unknown device {} ({}) address {} vlan {} ifindex {} (first flow: {})",
            s.src_mac,
            vendor_text(s.vendor.as_deref(), s.randomized),
            s.address.map_or_else(|| "-".to_string(), |a| a.to_string()),
            s.vlan,
            s.ifindex,
            s.flow.as_deref().unwrap_or("-")
        ),
        Event::Lost { count } => {
            format!("{when} lost       {count} events (this follower fell behind)")
        }
        Event::ExceptionOpened(w) | Event::ExceptionClosed(w) => format!(
            "{when} {kind} {} ({} – {}, ticket {}, approved by {}) for {}: {}",
            p(&w.name),
            w.from,
            w.until,
            p(&w.ticket),
            p(&w.approved_by),
            p(&w.devices.join(", ")),
            p(&w.workflows.join(", "))
        ),
        Event::Deny(t)
        | Event::Audit(t)
        | Event::Spoof(t)
        | Event::Unknown(t)
        | Event::Learn(t)
        | Event::Rogue(t)
        | Event::Other(t) => {
            let who = match &t.device {
                Some(d) => format!(
                    "{} ({}, {})",
                    p(d),
                    p(t.class.as_deref().unwrap_or("-")),
                    t.mode.map_or("-", Mode::name)
                ),
                None => format!("unknown {}", t.src_mac),
            };
            let mut line = format!("{when} {kind:<10} {who} {}", t.reason);
            if let (Some(proto), Some(src), Some(dst)) = (t.proto, &t.src, &t.dst) {
                line += &format!(" proto {proto} {src} -> {dst}");
            }
            if let Some(i) = t.initiator {
                line += match i {
                    Opener::Device => " (opened by device)",
                    Opener::Peer => " (opened by peer)",
                };
            }
            if let Some(o) = t.rule.as_ref().and_then(|r| r.origin.as_deref()) {
                line += &format!(" rule: {}", p(o));
            }
            if let Some(w) = &t.would_be {
                line += &format!(" would be: {w}");
            }
            line
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deny(kind: u8) -> AbiEvent {
        let mut ev = AbiEvent {
            kind,
            reason: Reason::DenyNoRule as u8,
            family: FAMILY_V4,
            proto: 6,
            dst_port: 23,
            src_port: 40000,
            rule: NO_RULE,
            ..AbiEvent::default()
        };
        ev.src[..4].copy_from_slice(&[10, 20, 0, 11]);
        ev.dst[..4].copy_from_slice(&[10, 10, 0, 20]);
        ev
    }

    #[test]
    fn a_follower_sees_recent_then_live_events_once() {
        let feed = Feed::default();
        feed.publish(&lost(1));
        let (recent, mut rx) = feed.subscribe();
        feed.publish(&lost(2));
        assert_eq!(recent.len(), 1);
        assert_eq!(&*recent[0], r#"{"v":1,"ts":0.0,"kind":"lost","count":1}"#);
        assert_eq!(
            rx.try_recv().ok().as_deref(),
            Some(r#"{"v":1,"ts":0.0,"kind":"lost","count":2}"#)
        );
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn recent_events_are_bounded() {
        let feed = Feed::default();
        for n in 0..RECENT + 10 {
            feed.publish(&lost(n as u64));
        }
        let recent = feed.recent();
        assert_eq!(recent.len(), RECENT);
        assert!(recent[0].contains(r#""count":10}"#), "{}", recent[0]);
    }

    fn lost(count: u64) -> Record {
        Record::new(0.0, Event::Lost { count })
    }

    #[test]
    fn datapath_events_read_as_one_line() {
        let r = datapath_event(&deny(lazaret_abi::EVENT_DENY), None, 1.5);
        let v = serde_json::to_value(&r).expect("json");
        assert_eq!(v["kind"], "deny");
        assert_eq!(v["v"], RECORD_VERSION);
        assert_eq!(v["dst"], "10.10.0.20:23");
        assert!(v["device"].is_null());
        assert!(v.get("would_be").is_none());
        let back: Record = serde_json::from_value(v).expect("reads back");
        assert_eq!(back, r);
        let line = human(&r);
        assert!(
            line.contains("deny") && line.contains("10.20.0.11:40000 -> 10.10.0.20:23"),
            "{line}"
        );
        let mut audit = deny(lazaret_abi::EVENT_AUDIT);
        audit.reason = Reason::Audit as u8;
        let r = datapath_event(&audit, None, 1.5);
        let v = serde_json::to_value(&r).expect("json");
        assert_eq!(v["would_be"], "deny_no_rule");
        assert!(human(&r).contains("would be: deny_no_rule"));
    }

    /// Every kind reads back as itself, and its `kind` is the one `Record::kind` names.
    #[test]
    fn every_kind_round_trips() {
        let decision = Decision {
            device: "pump-01".into(),
            action: Some(Action::Isolate),
            by: "lazaret".into(),
            reason: "3 denied flows".into(),
        };
        let mut records = vec![
            quarantine_event("pump-01", Some(Action::Isolate), "root", "scan", 2.0),
            quarantine_event("pump-01", None, "root", "cleared", 3.0),
            Record::new(1.0, Event::Quarantine(decision)),
            Record::new(
                1.0,
                Event::NewUnknownDevice(Sighting {
                    src_mac: "02:00:00:00:00:01".into(),
                    address: None,
                    vlan: 20,
                    ifindex: 3,
                    flow: Some("6 10.10.0.20:23".into()),
                    vendor: None,
                    randomized: true,
                }),
            ),
            lost(7),
        ];
        let window = crate::policy::model::Exception {
            name: "visit".into(),
            span: Default::default(),
            devices: vec!["anes-01".into()],
            class: None,
            workflows: vec!["vendor-remote".into()],
            from: 1_796_374_800,
            until: 1_796_382_000,
            ticket: "CHG-4711".into(),
            approved_by: "biomed".into(),
            description: String::new(),
        };
        for opened in [true, false] {
            let r = window_event(&window, vec!["anes-01".into()], opened, 4.0);
            let line = human(&r);
            assert!(
                line.contains("2026-12-04T09:00:00Z – 2026-12-04T11:00:00Z")
                    && line.contains("CHG-4711"),
                "{line}"
            );
            records.push(r);
        }
        for kind in [
            lazaret_abi::EVENT_DENY,
            lazaret_abi::EVENT_AUDIT,
            lazaret_abi::EVENT_SPOOF,
            lazaret_abi::EVENT_UNKNOWN,
            lazaret_abi::EVENT_LEARN,
            lazaret_abi::EVENT_ROGUE,
            250,
        ] {
            records.push(datapath_event(&deny(kind), None, 4.0));
        }
        for r in records {
            let v = serde_json::to_value(&r).expect("json");
            assert_eq!(v["kind"], r.kind(), "{v}");
            let back: Record = serde_json::from_value(v).expect("reads back");
            assert_eq!(back, r);
        }
    }
}
