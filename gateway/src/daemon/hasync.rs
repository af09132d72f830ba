//! Quarantine replication between the two members of an active/standby pair
//! (`docs/ha.md`): a quarantine or release on one member is carried out on the other. The
//! channel also carries the active member's flows ([`super::flowsync`]), learned flows and
//! unknown devices ([`super::records`]).
//!
//! The channel runs over the pair's dedicated link: each member listens on `[ha] listen`
//! and connects to `[ha] peer`, so each direction has its own connection, opened by the
//! sender. A connection carries lines of JSON, each frame signed with HMAC-SHA256 under
//! the pair's pre-shared key (`[ha] key_file`) over its sequence number, time and body. The
//! receiver refuses, closes and counts (`lazaret_ha_sync_refused_total{reason}`):
//! a connection from any address but the peer's; a frame whose signature fails; a sequence
//! number that does not grow (a replay within the connection) or a time more than
//! [`CLOCK_SKEW_MS`] from its own clock (a replay of an old connection); a first message
//! that is not a [`Body::Hello`]; a peer under another datapath ABI or another policy
//! commit (its verdicts would differ: what it quarantines may not exist here).
//! A hello it accepts it answers with its own hello; the sender reports the link up
//! (`lazaret_ha_sync_up`) only on that answer, so a refused member's link stays down.
//!
//! What is sent: after the hello, a [`Body::Snapshot`] of every quarantine the sender holds
//! and of the releases it made or took in the last day, then each quarantine and release as
//! it happens. A sender that is not connected drops what it would have sent: the snapshot
//! at the next connection carries it. Of a quarantine and a release of one device, the
//! later wins on both members (a release later than a quarantine's `since` undoes it; a
//! quarantine at the same second as a release stays: the safe side). Releases are kept for a
//! day in the quarantine state file, so a restarted member still knows them.
//!
//! Enforcement never waits for the peer: a quarantine is enforced here first, then sent.
//! While the link is up it is enforced on the peer within the time of one message (the
//! namespace test holds it to two seconds).

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    sync::{mpsc, watch},
};

use super::quarantine::Entry;

/// How far a frame's time may be from this member's clock (the members keep time with
/// NTP; a frame older than this is a replay).
pub const CLOCK_SKEW_MS: u64 = 60_000;
/// The longest line read: a snapshot of a large site's quarantines fits many times over; a
/// longer one is refused before it is held in memory.
const MAX_LINE: u64 = 4 << 20;
/// Between two attempts to reach the peer.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);
/// Connecting to the peer, and writing one frame to it, give up after this.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// What the members say to each other.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Body {
    /// The first message of a connection: who speaks, under which policy commit and ABI.
    Hello {
        member: String,
        commit: Option<String>,
        abi: u32,
        /// The challenge the listening member opened the connection with (a fresh random one):
        /// a recorded connection replayed later carries an old one.
        #[serde(default)]
        nonce: String,
    },
    /// Every quarantine the sender holds, and the releases it made or took in the last day.
    Snapshot {
        entries: BTreeMap<String, Entry>,
        #[serde(default)]
        released: BTreeMap<String, Released>,
    },
    Quarantine {
        device: String,
        entry: Entry,
    },
    Release {
        device: String,
        by: String,
        reason: String,
        /// Unix seconds, on the releasing member's clock.
        #[serde(default)]
        at: u64,
    },
    /// Flows of the active member (see [`super::flowsync`]).
    Flows {
        flows: Vec<super::flowsync::SyncedFlow>,
    },
    /// What the active member learned: learn-mode devices' flows and unknown devices, in
    /// parts (see [`super::records`]).
    Records {
        #[serde(default)]
        learned: BTreeMap<String, super::learn::DeviceFlows>,
        #[serde(default)]
        unknown: Vec<super::unknown::UnknownDevice>,
    },
}

pub use super::quarantine::{Released, RELEASES_KEPT_S};

/// One line on the wire.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Frame {
    seq: u64,
    ts_ms: u64,
    /// The [`Body`] as JSON text: signed as sent, parsed only once the signature holds.
    body: String,
    /// Hex HMAC-SHA256 of `"<seq>.<ts_ms>.<body>"`.
    mac: String,
}

/// Why a connection or a frame was refused (the metric's `reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A connection from an address that is not the peer's.
    Address,
    /// Not a frame, or a body that is not a message.
    Malformed,
    /// The signature does not hold: another key, or the frame was changed.
    Key,
    /// A sequence number that does not grow.
    Replay,
    /// A time too far from this member's clock.
    Clock,
    /// The first message is not a hello, or a hello comes later.
    Hello,
    /// The peer runs another datapath ABI.
    Abi,
    /// The peer enforces another policy commit.
    Commit,
}

impl Refusal {
    pub const ALL: [Refusal; 8] = [
        Refusal::Address,
        Refusal::Malformed,
        Refusal::Key,
        Refusal::Replay,
        Refusal::Clock,
        Refusal::Hello,
        Refusal::Abi,
        Refusal::Commit,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Refusal::Address => "address",
            Refusal::Malformed => "malformed",
            Refusal::Key => "key",
            Refusal::Replay => "replay",
            Refusal::Clock => "clock",
            Refusal::Hello => "hello",
            Refusal::Abi => "abi",
            Refusal::Commit => "commit",
        }
    }
}

/// What a frame's `mac` signs: `"<seq>.<ts_ms>.<body>"`.
fn signed(seq: u64, ts_ms: u64) -> String {
    format!("{seq}.{ts_ms}.")
}

/// `body` as one signed line (newline included).
pub fn seal(key: &[u8], seq: u64, ts_ms: u64, body: &Body) -> String {
    let body = serde_json::to_string(body).unwrap_or_default();
    let mac = super::sign::hex(key, &[signed(seq, ts_ms).as_bytes(), body.as_bytes()]);
    let frame = Frame {
        seq,
        ts_ms,
        body,
        mac,
    };
    let mut line = serde_json::to_string(&frame).unwrap_or_default();
    line.push('\n');
    line
}

/// The receiving end of one connection: checks every frame, in order.
pub struct Opener<'k> {
    key: &'k [u8],
    last_seq: Option<u64>,
}

impl<'k> Opener<'k> {
    pub fn new(key: &'k [u8]) -> Self {
        Opener {
            key,
            last_seq: None,
        }
    }

    /// The body of `line`, received at `now_ms`, if it is signed with the key, newer than
    /// the last one and timely; the first must be a hello, and only the first.
    pub fn open(&mut self, line: &[u8], now_ms: u64) -> Result<Body, Refusal> {
        let frame: Frame = serde_json::from_slice(line).map_err(|_| Refusal::Malformed)?;
        let head = signed(frame.seq, frame.ts_ms);
        let parts = [head.as_bytes(), frame.body.as_bytes()];
        if !super::sign::verify_hex(self.key, &parts, &frame.mac) {
            return Err(Refusal::Key);
        }
        if self.last_seq.is_some_and(|last| frame.seq <= last) {
            return Err(Refusal::Replay);
        }
        if frame.ts_ms.abs_diff(now_ms) > CLOCK_SKEW_MS {
            return Err(Refusal::Clock);
        }
        let body: Body = serde_json::from_str(&frame.body).map_err(|_| Refusal::Malformed)?;
        let first = self.last_seq.is_none();
        if first != matches!(body, Body::Hello { .. }) {
            return Err(Refusal::Hello);
        }
        self.last_seq = Some(frame.seq);
        Ok(body)
    }
}

/// Whether a peer's hello may be listened to: it answers this connection's challenge
/// `nonce`, under the same datapath ABI and policy commit.
pub fn check_hello(body: &Body, commit: Option<&str>, nonce: &str) -> Result<(), Refusal> {
    let Body::Hello {
        commit: theirs,
        abi,
        nonce: theirs_nonce,
        ..
    } = body
    else {
        return Err(Refusal::Hello);
    };
    if theirs_nonce != nonce {
        return Err(Refusal::Replay);
    }
    if *abi != lazaret_abi::ABI_VERSION {
        return Err(Refusal::Abi);
    }
    if theirs.as_deref() != commit {
        return Err(Refusal::Commit);
    }
    Ok(())
}

/// The first line of a connection, from the listening member: a fresh random challenge the
/// connecting member's hello must carry, and the listener's answer too. Sequence numbers
/// and times catch a replay within a connection or of an old one; the challenge catches a
/// recorded connection replayed within the time window.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Challenge {
    nonce: String,
}

/// 16 random bytes, hex.
fn challenge() -> std::io::Result<String> {
    let mut b = [0u8; 16];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// What the channel tells the controller.
#[derive(Debug)]
pub enum Inbound {
    /// This member's sender reached the peer (`true`: send it a snapshot) or lost it.
    Link(bool),
    /// A message of the peer, which introduced itself as `member`.
    Peer { member: String, body: Body },
    /// A connection or frame refused.
    Refused(Refusal, String),
}

/// The channel's settings.
#[derive(Clone)]
pub struct Settings {
    pub key: Arc<Vec<u8>>,
    pub member: String,
    pub listen: SocketAddr,
    pub peer: SocketAddr,
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The queues to the peer: quarantines and releases, and flows. The sender empties the first
/// before it takes from the second, so a bulk transfer of flows never delays a quarantine,
/// and the flows' queue is short, so a slow link slows the flow replication's thread down.
pub struct Outbound {
    pub control: mpsc::Sender<Body>,
    pub flows: mpsc::Sender<Body>,
}

/// Starts the listener and the sender. `commit` follows the enforcing policy's commit.
pub fn spawn(
    s: Settings,
    commit: watch::Receiver<Option<String>>,
    to_controller: mpsc::Sender<Inbound>,
) -> Outbound {
    tokio::spawn(listen(s.clone(), commit.clone(), to_controller.clone()));
    let (control, control_rx) = mpsc::channel(1024);
    let (flows, flows_rx) = mpsc::channel(4);
    tokio::spawn(send(s, commit, [control_rx, flows_rx], to_controller));
    Outbound { control, flows }
}

/// Binds `listen`, retrying: lazaret starts before the network is configured (its unit
/// runs before network-pre.target), so the link's address may come later.
async fn bind(listen: SocketAddr) -> TcpListener {
    let mut logged = false;
    loop {
        match TcpListener::bind(listen).await {
            Ok(l) => {
                if logged {
                    tracing::info!(%listen, "ha sync: listening");
                }
                return l;
            }
            Err(e) => {
                if !logged {
                    tracing::warn!(%listen, error = %e, "ha sync: cannot listen yet (is the address on this host?); retrying every second");
                    logged = true;
                }
                tokio::time::sleep(RECONNECT_EVERY).await;
            }
        }
    }
}

async fn listen(
    s: Settings,
    commit: watch::Receiver<Option<String>>,
    to_controller: mpsc::Sender<Inbound>,
) {
    let listener = bind(s.listen).await;
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "ha sync: accepting a connection");
                tokio::time::sleep(RECONNECT_EVERY).await;
                continue;
            }
        };
        if from.ip() != s.peer.ip() {
            let _ = to_controller
                .send(Inbound::Refused(Refusal::Address, from.to_string()))
                .await;
            continue;
        }
        let (key, commit, to) = (s.key.clone(), commit.clone(), to_controller.clone());
        let own = s.member.clone();
        tokio::spawn(async move {
            if let Err((r, what)) = receive(stream, &key, &own, &commit, &to).await {
                let _ = to.send(Inbound::Refused(r, what)).await;
            }
        });
    }
}

/// This member's hello under `commit`, answering `nonce`.
fn hello(member: &str, commit: Option<String>, nonce: &str) -> Body {
    Body::Hello {
        member: member.to_string(),
        commit,
        abi: lazaret_abi::ABI_VERSION,
        nonce: nonce.to_string(),
    }
}

/// The next line of `reader` into `line` (newline included); 0 at the end of the stream.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
) -> Result<usize, (Refusal, String)> {
    line.clear();
    let n = reader
        .take(MAX_LINE)
        .read_until(b'\n', line)
        .await
        .map_err(|e| (Refusal::Malformed, e.to_string()))?;
    if n > 0 && line.last() != Some(&b'\n') {
        return Err((
            Refusal::Malformed,
            format!("a line longer than {MAX_LINE} bytes"),
        ));
    }
    Ok(n)
}

/// One connection from the peer, until it closes or a frame is refused. A hello that is
/// accepted is answered with this member's own (the sender reports the link up only then).
async fn receive(
    stream: TcpStream,
    key: &[u8],
    own: &str,
    commit: &watch::Receiver<Option<String>>,
    to: &mpsc::Sender<Inbound>,
) -> Result<(), (Refusal, String)> {
    let (rd, mut wr) = stream.into_split();
    let nonce = challenge().map_err(|e| (Refusal::Malformed, format!("no challenge: {e}")))?;
    let mut first = serde_json::to_string(&Challenge {
        nonce: nonce.clone(),
    })
    .unwrap_or_default();
    first.push('\n');
    if write(&mut wr, &first).await.is_err() {
        return Ok(());
    }
    let mut reader = BufReader::new(rd);
    let mut opener = Opener::new(key);
    let mut member = String::new();
    let mut line = Vec::new();
    loop {
        if read_line(&mut reader, &mut line).await? == 0 {
            return Ok(());
        }
        let body = opener
            .open(&line, unix_ms())
            .map_err(|r| (r, format!("from {member:?}")))?;
        if let Body::Hello { member: m, .. } = &body {
            let ours = commit.borrow().clone();
            check_hello(&body, ours.as_deref(), &nonce).map_err(|r| {
                (
                    r,
                    format!("{m:?} speaks {body:?}; this member's commit is {ours:?}"),
                )
            })?;
            member.clone_from(m);
            let answer = seal(key, 1, unix_ms(), &hello(own, ours, &nonce));
            if write(&mut wr, &answer).await.is_err() {
                return Ok(());
            }
            continue;
        }
        let msg = Inbound::Peer {
            member: member.clone(),
            body,
        };
        if to.send(msg).await.is_err() {
            return Ok(());
        }
    }
}

/// Keeps a connection to the peer and writes what the controller hands over. The link is
/// up once the peer answered the hello with its own, signed with the key and under the same
/// commit and ABI: a peer that refuses this member closes the connection instead, and the
/// link stays down (`lazaret_ha_sync_up` 0, so `LazaretPairSyncDown` fires).
async fn send(
    s: Settings,
    commit: watch::Receiver<Option<String>>,
    [mut control, mut flows]: [mpsc::Receiver<Body>; 2],
    to_controller: mpsc::Sender<Inbound>,
) {
    let mut seq = 0u64;
    let mut line = Vec::new();
    loop {
        // Not connected: what would have been sent is dropped (the snapshot at the next
        // connection carries every quarantine, and the flow replication starts over).
        while control.try_recv().is_ok() || flows.try_recv().is_ok() {}
        let Ok(Ok(stream)) = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(s.peer)).await
        else {
            tokio::time::sleep(RECONNECT_EVERY).await;
            continue;
        };
        let (rd, mut wr) = stream.into_split();
        let mut reader = BufReader::new(rd);
        // The listener's challenge first.
        let nonce = match tokio::time::timeout(IO_TIMEOUT, read_line(&mut reader, &mut line)).await
        {
            Ok(Ok(n)) if n > 0 => serde_json::from_slice::<Challenge>(&line).map(|c| c.nonce),
            _ => {
                tokio::time::sleep(RECONNECT_EVERY).await;
                continue;
            }
        };
        let Ok(nonce) = nonce else {
            let what = format!("the challenge of {}", s.peer);
            if to_controller
                .send(Inbound::Refused(Refusal::Malformed, what))
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(RECONNECT_EVERY).await;
            continue;
        };
        seq += 1;
        let ours = commit.borrow().clone();
        let greeting = hello(&s.member, ours.clone(), &nonce);
        let line_out = seal(&s.key, seq, unix_ms(), &greeting);
        if write(&mut wr, &line_out).await.is_err() {
            tokio::time::sleep(RECONNECT_EVERY).await;
            continue;
        }
        let answer = tokio::time::timeout(IO_TIMEOUT, read_line(&mut reader, &mut line)).await;
        if !matches!(answer, Ok(Ok(n)) if n > 0) {
            // Refused (the peer counts why), or no answer.
            tokio::time::sleep(RECONNECT_EVERY).await;
            continue;
        }
        let accepted = Opener::new(&s.key)
            .open(&line, unix_ms())
            .and_then(|body| check_hello(&body, ours.as_deref(), &nonce));
        if let Err(r) = accepted {
            let what = format!("the answer of {} to this member's hello", s.peer);
            if to_controller.send(Inbound::Refused(r, what)).await.is_err() {
                return;
            }
            tokio::time::sleep(RECONNECT_EVERY).await;
            continue;
        }
        if to_controller.send(Inbound::Link(true)).await.is_err() {
            return;
        }
        let mut peek = [0u8; 1];
        loop {
            let body = tokio::select! {
                biased;
                body = control.recv() => match body {
                    Some(body) => body,
                    None => return,
                },
                // Closed when this member replicates no flows: the branch is then skipped.
                Some(body) = flows.recv() => body,
                // The peer sends nothing more on this connection: readable means it closed
                // it (it refused a frame, or it stopped).
                _ = reader.read(&mut peek) => break,
            };
            seq += 1;
            let line = seal(&s.key, seq, unix_ms(), &body);
            if line.len() as u64 > MAX_LINE {
                // The peer would refuse it and close the connection, and the next one would
                // send it again: never sent. (The senders keep their parts far below.)
                tracing::error!(
                    bytes = line.len(),
                    "ha sync: a message too long for the other member was not sent"
                );
                continue;
            }
            if write(&mut wr, &line).await.is_err() {
                break;
            }
        }
        let _ = to_controller.send(Inbound::Link(false)).await;
        tokio::time::sleep(RECONNECT_EVERY).await;
    }
}

async fn write<W: tokio::io::AsyncWrite + Unpin>(
    stream: &mut W,
    line: &str,
) -> std::io::Result<()> {
    match tokio::time::timeout(IO_TIMEOUT, stream.write_all(line.as_bytes())).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::from(std::io::ErrorKind::TimedOut)),
    }
}

/// `by` of a quarantine or release carried out for the peer: who decided, and on which
/// member (the audit log and the events show it).
pub fn by_on(by: &str, member: &str) -> String {
    format!("{by} (on {member})")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::quarantine::Action;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn hello(commit: Option<&str>) -> Body {
        Body::Hello {
            member: "gw-a1".into(),
            commit: commit.map(str::to_string),
            abi: lazaret_abi::ABI_VERSION,
            nonce: NONCE.into(),
        }
    }

    const NONCE: &str = "00112233445566778899aabbccddeeff";

    fn release() -> Body {
        Body::Release {
            device: "pump-1".into(),
            by: "root".into(),
            reason: "checked".into(),
            at: 1_800_000_000,
        }
    }

    #[test]
    fn frames_signed_with_the_key_open_in_order_and_nothing_else_does() {
        let now = 1_800_000_000_000;
        let mut o = Opener::new(KEY);
        assert_eq!(
            o.open(seal(KEY, 1, now, &hello(None)).as_bytes(), now),
            Ok(hello(None))
        );
        let q = Body::Quarantine {
            device: "pump-1".into(),
            entry: Entry {
                action: Action::Isolate,
                reason: "scan".into(),
                by: "lazaret (automatic)".into(),
                since: 1,
                until: None,
                recovered: false,
            },
        };
        assert_eq!(o.open(seal(KEY, 2, now, &q).as_bytes(), now), Ok(q.clone()));
        // The same frame again, or an older one: a replay.
        assert_eq!(
            o.open(seal(KEY, 2, now, &q).as_bytes(), now),
            Err(Refusal::Replay)
        );
        // Another key; a body changed after signing.
        let other = seal(b"another key, just as long.......", 3, now, &q);
        assert_eq!(o.open(other.as_bytes(), now), Err(Refusal::Key));
        let changed = seal(KEY, 3, now, &q).replace("isolate", "alert");
        assert_eq!(o.open(changed.as_bytes(), now), Err(Refusal::Key));
        // Too old, or from too far ahead.
        let old = seal(KEY, 3, now - CLOCK_SKEW_MS - 1, &release());
        assert_eq!(o.open(old.as_bytes(), now), Err(Refusal::Clock));
        // A second hello; garbage.
        assert_eq!(
            o.open(seal(KEY, 4, now, &hello(None)).as_bytes(), now),
            Err(Refusal::Hello)
        );
        assert_eq!(o.open(b"{\"seq\":1}\n", now), Err(Refusal::Malformed));
        assert_eq!(
            o.open(seal(KEY, 5, now, &release()).as_bytes(), now),
            Ok(release())
        );
        // A connection must start with a hello.
        let mut fresh = Opener::new(KEY);
        assert_eq!(
            fresh.open(seal(KEY, 1, now, &release()).as_bytes(), now),
            Err(Refusal::Hello)
        );
    }

    #[test]
    fn a_peer_under_another_abi_or_commit_or_challenge_is_refused() {
        let check = |body: &Body, commit: Option<&str>| check_hello(body, commit, NONCE);
        assert_eq!(check(&hello(Some("abc")), Some("abc")), Ok(()));
        assert_eq!(check(&hello(None), None), Ok(()));
        assert_eq!(
            check(&hello(Some("abc")), Some("def")),
            Err(Refusal::Commit)
        );
        assert_eq!(check(&hello(None), Some("def")), Err(Refusal::Commit));
        let old = Body::Hello {
            member: "gw-a1".into(),
            commit: None,
            abi: lazaret_abi::ABI_VERSION - 1,
            nonce: NONCE.into(),
        };
        assert_eq!(check(&old, None), Err(Refusal::Abi));
        assert_eq!(check(&release(), None), Err(Refusal::Hello));
        // A hello recorded on another connection answers another challenge: a replay.
        assert_eq!(
            check_hello(&hello(None), None, "ffeeddccbbaa99887766554433221100"),
            Err(Refusal::Replay)
        );
        assert_eq!(challenge().expect("random").len(), 32);
        assert_ne!(challenge().expect("random"), challenge().expect("random"));
    }
}
