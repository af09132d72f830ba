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

use lazaret_abi::{Event, Reason, DIR_DEVICE_INIT, FAMILY_V4, NO_RULE};
use serde_json::{json, Value};
use tokio::sync::broadcast;

use crate::policy::Compiled;

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
    pub fn publish(&self, event: &Value) {
        let line: Line = event.to_string().into();
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

/// The event kind's name, as in the feed and the CLI.
pub fn kind_name(kind: u8) -> &'static str {
    match kind {
        lazaret_abi::EVENT_DENY => "deny",
        lazaret_abi::EVENT_AUDIT => "audit",
        lazaret_abi::EVENT_SPOOF => "spoof",
        lazaret_abi::EVENT_UNKNOWN => "unknown",
        lazaret_abi::EVENT_LEARN => "learn",
        lazaret_abi::EVENT_ROGUE => "rogue",
        _ => "other",
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
pub fn datapath_event(ev: &Event, compiled: Option<&Compiled>, ts: f64) -> Value {
    let device = compiled.and_then(|c| c.device_by_hash(ev.device));
    let reason = Reason::from_u8(ev.reason).map_or("other", |r| r.name());
    let mut v = json!({
        "ts": ts,
        "kind": kind_name(ev.kind),
        "reason": reason,
        "device": device.map(|d| d.id.as_str()),
        "class": device.and_then(|d| d.class.as_deref()),
        "mode": device.map(|d| d.mode.name()),
        "src_mac": super::unknown::fmt_mac(&ev.src_mac),
        "vlan": ev.vlan,
        "ifindex": ev.ifindex,
        "generation": ev.generation,
    });
    if ev.family != 0 {
        v["proto"] = json!(ev.proto);
        v["src"] = json!(endpoint(ev.family, &ev.src, ev.src_port));
        v["dst"] = json!(endpoint(ev.family, &ev.dst, ev.dst_port));
        if ev.device != 0 {
            v["initiator"] = json!(if ev.dir == DIR_DEVICE_INIT {
                "device"
            } else {
                "peer"
            });
        }
    }
    if ev.rule != NO_RULE {
        if let Some(rule) = compiled.and_then(|c| c.rule(ev.rule)) {
            v["rule"] = json!({
                "id": rule.id,
                "origin": rule.origin.to_string(),
                "description": rule.description,
            });
        } else {
            v["rule"] = json!({ "id": ev.rule });
        }
    }
    // What enforcement would have done: an audit or learn miss would be a drop; a flow
    // that matched a rule of a workflow in audit mode would be allowed once the workflow
    // enforces.
    if matches!(ev.kind, lazaret_abi::EVENT_AUDIT | lazaret_abi::EVENT_LEARN) {
        v["would_be"] = json!(if ev.rule == NO_RULE {
            Reason::DenyNoRule.name()
        } else {
            Reason::AllowRule.name()
        });
    }
    v
}

/// A quarantine decision (`kind` is `quarantine` or `release`).
pub fn quarantine_event(
    kind: &str,
    device: &str,
    action: Option<&str>,
    by: &str,
    reason: &str,
    ts: f64,
) -> Value {
    json!({
        "ts": ts,
        "kind": kind,
        "device": device,
        "action": action,
        "by": by,
        "reason": reason,
    })
}

/// A source not in the inventory spoke on a device port for the first time.
pub fn new_unknown_event(s: &super::unknown::Sighting, ts: f64) -> Value {
    json!({
        "ts": ts,
        "kind": "new_unknown_device",
        "src_mac": super::unknown::fmt_mac(&s.mac),
        "address": s.src,
        "vlan": s.vlan,
        "ifindex": s.ifindex,
        "flow": s.flow,
    })
}

/// One readable line for a feed event (the CLI's default output).
pub fn human(v: &Value) -> String {
    let ts = v["ts"].as_f64().unwrap_or(0.0);
    let when = chrono::DateTime::from_timestamp_millis((ts * 1000.0) as i64).map_or_else(
        || ts.to_string(),
        |t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
    );
    let kind = v["kind"].as_str().unwrap_or("?");
    let s = |k: &str| v[k].as_str().unwrap_or("-").to_string();
    match kind {
        "quarantine" | "release" => format!(
            "{when} {kind:<10} {} {}by {}: {}",
            s("device"),
            v["action"]
                .as_str()
                .map_or(String::new(), |a| format!("({a}) ")),
            s("by"),
            s("reason")
        ),
        "new_unknown_device" => format!(
            "{when} new unknown device {} address {} vlan {} ifindex {} (first flow: {})",
            s("src_mac"),
            s("address"),
            v["vlan"],
            v["ifindex"],
            s("flow")
        ),
        "lost" => format!(
            "{when} lost       {} events (this follower fell behind)",
            v["count"]
        ),
        _ => {
            let who = match v["device"].as_str() {
                Some(d) => format!("{d} ({}, {})", s("class"), s("mode")),
                None => format!("unknown {}", s("src_mac")),
            };
            let mut line = format!("{when} {kind:<10} {who} {}", s("reason"));
            if v.get("src").is_some() {
                line += &format!(" proto {} {} -> {}", v["proto"], s("src"), s("dst"));
            }
            if let Some(i) = v["initiator"].as_str() {
                line += &format!(" (opened by {i})");
            }
            if let Some(o) = v["rule"]["origin"].as_str() {
                line += &format!(" rule: {o}");
            }
            if let Some(w) = v["would_be"].as_str() {
                line += &format!(" would be: {w}");
            }
            line
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deny(kind: u8) -> Event {
        let mut ev = Event {
            kind,
            reason: Reason::DenyNoRule as u8,
            family: FAMILY_V4,
            proto: 6,
            dst_port: 23,
            src_port: 40000,
            rule: NO_RULE,
            ..Event::default()
        };
        ev.src[..4].copy_from_slice(&[10, 20, 0, 11]);
        ev.dst[..4].copy_from_slice(&[10, 10, 0, 20]);
        ev
    }

    #[test]
    fn a_follower_sees_recent_then_live_events_once() {
        let feed = Feed::default();
        feed.publish(&json!({"n": 1}));
        let (recent, mut rx) = feed.subscribe();
        feed.publish(&json!({"n": 2}));
        assert_eq!(recent.len(), 1);
        assert_eq!(&*recent[0], r#"{"n":1}"#);
        assert_eq!(rx.try_recv().ok().as_deref(), Some(r#"{"n":2}"#));
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn recent_events_are_bounded() {
        let feed = Feed::default();
        for n in 0..RECENT + 10 {
            feed.publish(&json!({ "n": n }));
        }
        let recent = feed.recent();
        assert_eq!(recent.len(), RECENT);
        assert_eq!(&*recent[0], r#"{"n":10}"#);
    }

    #[test]
    fn datapath_events_read_as_one_line() {
        let v = datapath_event(&deny(lazaret_abi::EVENT_DENY), None, 1.5);
        assert_eq!(v["kind"], "deny");
        assert_eq!(v["dst"], "10.10.0.20:23");
        assert!(v.get("would_be").is_none());
        let line = human(&v);
        assert!(
            line.contains("deny") && line.contains("10.20.0.11:40000 -> 10.10.0.20:23"),
            "{line}"
        );
        let mut audit = deny(lazaret_abi::EVENT_AUDIT);
        audit.reason = Reason::Audit as u8;
        let v = datapath_event(&audit, None, 1.5);
        assert_eq!(v["would_be"], "deny_no_rule");
        assert!(human(&v).contains("would be: deny_no_rule"));
    }
}
