//! The datapath ABI: every map key and value, event, reason and constant that lazaret's XDP
//! program and its userspace controller exchange. Defined once here, imported by both sides.
//!
//! Pure data: `no_std`, no aya-ebpf, no I/O. Every type is `#[repr(C)]` with fixed-width
//! fields, explicit padding (always zero) and a compile-time size assertion, so the kernel and
//! userspace views cannot drift. Bump [`ABI_VERSION`] on any change to a type, a map or a
//! shared function here (such as [`AddrBits::bit`]):
//! the controller pins maps under a directory stamped with it and refuses to adopt a mismatch.
//!
//! Keys made only of bytes carry an `align` no larger than their size divides (so their
//! bytes do not change): without it LLVM must assume any address and builds, zeroes, copies
//! and compares them a byte at a time (the BPF target emits byte-loop `memset`/`memcpy`
//! calls for that), which was most of the XDP hot path's instructions. Keys of an LPM trie
//! stay at most 4-aligned: the trie's key is the key after a 4-byte prefix length.
//!
//! # Generations
//! Policy maps hold two generations side by side, told apart by a `slot` byte (0 or 1) at the
//! start of every key. [`MAP_GEN`] holds the active slot; the program reads it once per packet,
//! so a packet is judged by exactly one generation. Userspace fills the inactive slot
//! completely, flips [`MAP_GEN`] with one write, waits for in-flight packets, then clears the
//! old slot. Runtime state (device epochs and quarantine, flows, counters) lives outside the
//! slots and survives reloads.
//!
//! # Decision procedure (mirrored by the reference classifier in `lazaret::policy::classify`)
//! 1. The ingress interface's side comes from [`MAP_IFACE`] (ifindexes below
//!    [`IFACE_DIRECT`]; an array, so unset entries read as zero) or [`MAP_IFACE_HIGH`] (the
//!    rest); an interface missing there is a device side with the defaults (fail closed):
//!    the zero [`IfaceConfig`].
//! 2. Device side: the source is attributed by IP ([`MAP_DEV_IP4`]/[`MAP_DEV_IP6`]). If the IP
//!    belongs to a device, its MAC (when bound), VLAN (unless [`VLAN_ANY`]) and interface
//!    (unless [`IFINDEX_ANY`]) must match, else [`Reason::DenySpoof`]. If the IP is unmanaged
//!    but the source MAC is a device's ([`MAP_DEV_MAC`]), the frame is spoofing, except from
//!    an unspecified or link-local source, which is attributed by MAC (DHCP, NDP), or from a
//!    device without an address of that family — never with one of the gateway's own
//!    addresses ([`MAP_LOCAL`]), and a link-local source only if no other MAC owns it (see
//!    *Link-local addresses*). Neither: an unknown device, judged by the site default. An
//!    attributed device behind a bridge port must be on its port (see *Bridge ports*).
//! 3. Upstream side: a source address of a managed device is spoofing (devices are never
//!    upstream). The frame is attributed to the device owning the destination IP; no such
//!    device means it is not lazaret's to judge ([`Reason::PassUnmanaged`]), but for an
//!    address of the devices' declared networks where the site denies unknown devices and
//!    has devices known by their MAC alone in the family ([`Reason::DenyUnknown`]: see
//!    *Addresses owned by first use*).
//! 4. Neighbor discovery and MLD from a device are link-scope or dropped
//!    ([`Reason::DenyNdScope`]): NS, NA and RS with hop limit 255 to a link-scope multicast
//!    group, a link-local address, the gateway or a device on the same interface and VLAN;
//!    MLD with hop limit 1 to a multicast group. An NA may only advertise an address of its
//!    sender: its own bound address, or a link-local address it owns.
//! 5. An ICMP error travels back along the flow it quotes or is dropped
//!    ([`Reason::DenyIcmpError`]): to the quoted packet's source, and from a device port
//!    only from the quoted packet's destination (a device is no router). It passes if that
//!    flow is live and, under the current generation and epochs, still allowed.
//! 6. A packet of a known flow ([`MAP_EST_FLOWS`] first, then [`MAP_FLOWS`]) passes if the
//!    flow was validated under the current generation and the epochs of its devices;
//!    otherwise the flow is re-judged as its initiating packet and kept or cut. A flow of
//!    [`MAP_FLOWS`] that is confirmed (see *Flow tables*) moves to [`MAP_EST_FLOWS`] if its
//!    device's promotion budget allows.
//! 7. A new initiating packet is judged against the effective policy of every managed end:
//!    peer address → peer class ([`MAP_PEER4`]/[`MAP_PEER6`], longest prefix), then
//!    (class, protocol, port) → rule ([`MAP_PORTS`], longest prefix). The effective policy is
//!    the device's own, its restrict policy, or the site quarantine policy, by its state in
//!    [`MAP_DEV_STATE`]. No match is a deny; the device's mode turns a deny into audit or learn.
//!
//! # Exact entries in hashes
//! Each longest-prefix map is stored as two: its full-length entries (a peer host, one
//! port) in a hash ([`MAP_PEER4_HOST`], [`MAP_PEER6_HOST`], [`MAP_PORTS_EXACT`]), the shorter
//! prefixes in the trie. A full-length entry is the longest prefix any key can match, so a
//! hash hit is the trie's answer, and only a miss needs the trie. The trie walk deepens with
//! the number of entries; the hash lookup does not, so a big policy costs a packet about what
//! a small one does. [`PeerClass::port_prefixes`] says for which protocols a class has port
//! entries shorter than a single port; when the packet's protocol has none, a miss in
//! [`MAP_PORTS_EXACT`] is the answer and the trie is not walked. Userspace splits the lists
//! and computes the flags; the reference classifier keeps the single-trie semantics, so the
//! differential tests check the split against them.
//!
//! # What the parser drops before judging
//! - **VLAN tags**: a port carries untagged frames (`IfaceConfig::untagged_vlan` names
//!   their VLAN, and a tagged frame other than a priority tag is refused), or one tag
//!   (a trunk), or with `IfaceConfig::outer_vlan` exactly two tags whose outer one is
//!   that VLAN. Anything else is [`Reason::DenyVlanTag`]: an outer tag in front of a
//!   device's own is how a frame hops VLANs.
//! - **Extension headers** (RFC 8200 §4.1, RFC 5095, RFC 8754, RFC 7112): Hop-by-Hop only
//!   first, at most one Destination Options and one Fragment header, no Routing header
//!   (type 0 is deprecated, segment routing must not cross a domain edge, and no device or
//!   server of a device network source-routes), no Authentication header (unused on device
//!   networks, and it hides the chain from stateless filters). A first fragment must carry
//!   the whole chain and the upper-layer header.
//! - **Fragments**: a later fragment that would start inside its train's upper-layer header
//!   (RFC 1858, RFC 5722) or reassemble past 65,535 bytes, and an unknown train, are
//!   [`Reason::DenyFragment`].
//! - **TCP**: SYN with FIN or RST is [`Reason::DenyTcpFlags`].
//! - **Link-local destinations in group frames**: from a device port, an IPv6 link-local
//!   destination in a frame sent to a group MAC is [`Reason::DenyMalformed`] (such a
//!   destination names the device the frame is sent to, by MAC; a bridge floods a group
//!   frame to that device, which would take it).
//!
//! # Addresses owned by first use
//! IPv6 link-local addresses are not in the policy: a device makes its own. Nor are the
//! addresses of a device known by its MAC alone in a family (addressed by DHCP or SLAAC):
//! it may use any address no inventory entry binds. The first MAC to use such an address
//! (as a source, as the sender of its ARP, or as the target of its neighbor advertisement)
//! owns it in [`MAP_LL_OWNER`] until it leaves it unused for [`TIMEOUT_LL_OWNER_NS`] (FCFS
//! source address validation, RFC 6620); another MAC using it meanwhile is spoofing, so a
//! device cannot take over the address its neighbour was given. As a destination the
//! address names its owner longer, until another MAC claims it or
//! [`TIMEOUT_DEST_OWNER_NS`] passes: what is sent to a quiet device is still judged by its
//! policy. An address-conflict probe of an address no one holds that its sender may take
//! makes it the address's tentative holder ([`MAP_PROBED`], ABI 16) for [`TIMEOUT_PROBE_HOLD_NS`]:
//! another MAC's probe or use of it is refused meanwhile (RFC 6620's tentative bindings).
//! An IPv4 address is keyed
//! as its IPv4-mapped IPv6 form (`::ffff:a.b.c.d`, [`owner_key`]), which no device may use
//! on the wire. The gateway's own addresses ([`MAP_LOCAL`]) are never claimable (a device
//! advertising the router's link-local address would become every device's default
//! router), nor are IPv4 0/8, 127/8 and 224/3 (multicast, reserved, broadcast) or IPv6
//! `::`, `::1`, multicast and IPv4-mapped ones (RFC 4291 §2.5.5.2).
//!
//! Nor is an address outside the devices' networks (ABI 14): the peer maps' [`DIR_CLAIM`]
//! entries (longest prefix wins) make the networks of the devices-side interfaces
//! claimable ([`CLAIM_DEVICES`]), the upstream interfaces' networks not, and link-local
//! addresses claimable unless declared otherwise (a device makes its own). A devices-side
//! interface that declares no networks, none that declares one of the family, or a site
//! that declares no devices-side interface, makes every address of the family outside the
//! upstream networks claimable ([`CLAIM_ANY`]). So a device cannot take a server's address (and be handed what is sent to
//! it), nor spoof one from outside the devices' networks. Each devices-side interface has
//! its own entries (ABI 15; keyed by [`IfaceConfig::claim_scope`]): behind it, its own
//! networks and link-local addresses are claimable, another devices-side interface's
//! networks are not (a device behind one cannot take the address DHCP gives a device
//! behind another, nor send from it; a trunk carrying several VLANs is one interface), and
//! where it declares no networks, or no interface declares one of a family, every address
//! of the family but the upstream and the other interfaces' networks is. A
//! gateway of a fleet counts only the devices-side interfaces it serves; the others'
//! networks are not to be owned there. An owner found outside the site-wide networks (the
//! policy changed since) names no device as a destination.
//!
//! The owner record also names the device at a destination: a packet to an address no
//! inventory entry binds, owned by the MAC of a device known by its MAC alone in that
//! family, is judged by that device's policy as one to a bound address is, until another
//! MAC claims the address or the owner leaves it unused for [`TIMEOUT_DEST_OWNER_NS`] (a
//! day: past the claim, so a quiet device is still judged by its policy; the nftables
//! frame stage's marks of owners live as long, and a new claim deletes the previous
//! owner's). An address of the devices' declared networks that no device binds or owns
//! is, from upstream, an unknown device's ([`Reason::DenyUnknown`]) where the site denies
//! those and has devices known by their MAC alone in the family: one that has not spoken
//! yet is not reached as no device's. The daemon then resolves the address (its
//! `daemon::probe`), so that a device that only listens answers and owns it. From a device port only inside the devices' declared networks
//! ([`CLAIM_DEVICES`]): elsewhere a device may have claimed a server's address, and would
//! be asked about every device's flow to it. A link-local address (fe80::/10; 169.254/16
//! but its broadcast address) is not looked up this way from a device port: it names the
//! device the frame is sent to (by destination MAC, whatever the device has bound: behind
//! a bridge that device receives it, and a neighbour could use a silent device's
//! link-local address first); sent to a group MAC it is refused, and no flow opens to one
//! sent to a MAC of no device, nor do its initiator's packets go on there once opened at a
//! device's MAC, unless it is the gateway's own address. From upstream an
//! IPv6 one names no device (nothing is routed to it); an IPv4 one is looked up as any
//! other.
//!
//! Owning is bounded per device: [`CLAIM_BURST`] new addresses at once, then one every
//! [`CLAIM_PERIOD_S`] ([`MAP_DEV_CLAIM`]); refreshing its own costs nothing. The bound
//! slows a device claiming a flood of addresses down (to have the map evict a quiet
//! neighbour's entry, then take its address, one device would need weeks of claims kept
//! alive; many devices proportionally less); it does not make eviction impossible. The
//! owner key is site-wide (not per VLAN): two VLANs whose DHCP scopes overlap contend for
//! the same addresses.
//!
//! # Bridge ports
//! Behind a Linux bridge (`IfaceConfig::binding_ifindex` set), identity includes the port:
//! a device with `Device::port_ifindex` must arrive on that port; another managed device
//! is pinned, by its MAC, to the port it is first seen on ([`MAP_PORT_PIN`]) until a person
//! releases the pin. A frame with its MAC from any other port is spoofing, so a device
//! cannot pose as its neighbour and pull the bridge's forwarding entry (and the neighbour's
//! replies) to its own port.
//!
//! # Flow tables
//! Flows live in two LRU hashes. A flow is created in [`MAP_FLOWS`] (the *new* table) by
//! its allowed initiating packet. It moves to [`MAP_EST_FLOWS`] (the *established* table)
//! once it is *confirmed*: TCP when the initiator's ACK acknowledges the responder's SYN-ACK
//! (`ack == responder ISN + 1`, [`FLOW_ESTABLISHED`]); UDP, ICMP and other protocols when
//! the responder sends a packet back. A spoofed-source flood cannot confirm its flows (the
//! SYN-ACKs and replies go to addresses the attacker does not hold, and a blind ACK has to
//! guess a 32-bit ISN), so it only churns the new table: established sessions of managed
//! devices are not evicted by it, however many flows it opens.
//!
//! Confirmed flows cost a promotion token of the device the flow is charged to (its
//! initiator when managed, else its responder: the device of the admitting verdict) from
//! a token bucket in [`MAP_PROMOTE`] ([`SiteConfig::promote_rate`] per second, burst
//! [`SiteConfig::promote_burst`]). A confirmed flow whose device has no token stays in the
//! new table (it keeps working, unprotected) and tries again on each of its later packets.
//! So one device — a compromised one opening confirmed flows as fast as it can, or the
//! target of a flood from real hosts that complete their handshakes — moves at most
//! `burst + rate × t` flows into the established table in `t` seconds: with the defaults it
//! needs longer than [`TIMEOUT_TCP_ESTABLISHED_NS`] to cycle [`MAX_EST_FLOWS`] entries, so
//! an idle established session is not evicted by one device before it would time out
//! anyway (k devices together: k times faster).
#![no_std]

use core::mem::{offset_of, size_of};

/// Version of everything in this crate. Stamped on the bpffs pin directory.
pub const ABI_VERSION: u32 = 16;

// === Map names (the static's name in the eBPF object; at most 15 bytes) ===

/// `Array<u32>`, one entry: the active slot (0 or 1).
pub const MAP_GEN: &str = "LZ_GEN";
/// `Array<SiteConfig>`, two entries indexed by slot.
pub const MAP_SITE: &str = "LZ_SITE";
/// `Array<IfaceConfig>` of [`IFACE_DIRECT`], indexed by ifindex: which side each attached
/// interface faces, the VLAN of its untagged frames, and the interface devices behind it
/// bind to. An array, so a packet finds its interface without a hash lookup (ABI 6).
pub const MAP_IFACE: &str = "LZ_IFACE";
/// `HashMap<u32 ifindex, IfaceConfig>`: as [`MAP_IFACE`], for ifindexes from
/// [`IFACE_DIRECT`] up (a host whose interfaces were created and deleted many times).
pub const MAP_IFACE_HIGH: &str = "LZ_IFACE_HIGH";
/// `HashMap<MacKey, Device>` (per slot): the device record itself, so that identifying a
/// frame's device is one lookup (ABI 6; ABI 5 held the id and a second lookup in
/// [`MAP_DEVICES`] found the record).
pub const MAP_DEV_MAC: &str = "LZ_DEV_MAC";
/// `HashMap<Ip4Key, Device>` (per slot), as [`MAP_DEV_MAC`].
pub const MAP_DEV_IP4: &str = "LZ_DEV_IP4";
/// `HashMap<Ip6Key, Device>` (per slot), as [`MAP_DEV_MAC`].
pub const MAP_DEV_IP6: &str = "LZ_DEV_IP6";
/// `HashMap<DevKey, Device>` (per slot): the devices by id, for the controller (reading a
/// slot back, counting); the program identifies devices through the maps above.
pub const MAP_DEVICES: &str = "LZ_DEVICES";
/// `Array<Device>` of `2 * COUNTER_SLOTS`, indexed by [`dev_cell_index`] (per slot): each
/// slot's device records by [`Device::cell`], zeroed where no device of the slot has the
/// cell. A packet of an established flow finds its device's record here from the cell the
/// flow entry names, an array lookup the verifier inlines, instead of a hash lookup by its
/// address (ABI 7; see the program's fast path).
pub const MAP_DEV_CELL: &str = "LZ_DEV_CELL";
/// `Array<AddrBits>` of two entries, indexed by slot: a bit for every address of
/// [`MAP_DEV_IP4`] and [`MAP_DEV_IP6`] in the slot, at [`AddrBits::bit`] (ABI 9). A clear
/// bit proves that no device has the address, so the program skips the hash lookup: an
/// upstream packet for an unmanaged host, the destination of a device's new flow to a
/// server, an unknown source. A set bit proves nothing (addresses share bits); the hash
/// decides. Written whole with the slot's identity maps, before the slot is made active,
/// so the bits of the active slot are never fewer than its addresses; a daemon adopting
/// pinned maps also ORs each slot's addresses into its bits (adding bits only, the one
/// write into the active slot).
pub const MAP_DEV_ADDR_BITS: &str = "LZ_DEV_ADDRBITS";
/// `Array<DevState>` of [`COUNTER_SLOTS`], indexed by [`Device::cell`]: epochs and
/// quarantine, outside the slots (ABI 6; a hash by device id before). Written by the
/// controller, which also writes a device's state into a cell when it gives it the cell.
pub const MAP_DEV_STATE: &str = "LZ_DEV_STATE";
/// `LpmTrie<PeerKey4, PeerClass>` (per slot).
pub const MAP_PEER4: &str = "LZ_PEER4";
/// `LpmTrie<PeerKey6, PeerClass>` (per slot).
pub const MAP_PEER6: &str = "LZ_PEER6";
/// `LpmTrie<PortKey, RuleRef>` (per slot).
pub const MAP_PORTS: &str = "LZ_PORTS";
/// `HashMap<PeerKey4, PeerClass>` (per slot): the full-length entries of the IPv4 peer map.
pub const MAP_PEER4_HOST: &str = "LZ_PEER4_HOST";
/// `HashMap<PeerKey6, PeerClass>` (per slot): the full-length entries of the IPv6 peer map.
pub const MAP_PEER6_HOST: &str = "LZ_PEER6_HOST";
/// `HashMap<PortKey, RuleRef>` (per slot): the single-port entries of the port map.
pub const MAP_PORTS_EXACT: &str = "LZ_PORTS_EXACT";
/// `LruHashMap<FlowKey, FlowValue>`: flows not (yet) confirmed, or confirmed beyond their
/// device's promotion budget; outside the slots. See *Flow tables*.
pub const MAP_FLOWS: &str = "LZ_FLOWS";
/// `LruHashMap<FlowKey, FlowValue>`: confirmed flows, looked up first; outside the slots.
pub const MAP_EST_FLOWS: &str = "LZ_EST_FLOWS";
/// `LruHashMap<u64 device id, TokenBucket>`: per-device budget of promotions into
/// [`MAP_EST_FLOWS`].
pub const MAP_PROMOTE: &str = "LZ_PROMOTE";
/// `LruHashMap<FragKey, FragValue>`: verdicts of fragment trains.
pub const MAP_FRAGS: &str = "LZ_FRAGS";
/// `PerCpuArray<u64>` of [`STATS_LEN`]: packets by reason and side, see [`stats_index`].
pub const MAP_STATS: &str = "LZ_STATS";
/// `PerCpuArray<DevCounters>` of [`COUNTER_SLOTS`], indexed by [`Device::cell`] (ABI 6;
/// a per-CPU hash by device id before, one more hash lookup per packet).
pub const MAP_DEV_COUNT: &str = "LZ_DEV_COUNT";
/// `PerCpuArray<u64>` of `2 * MAX_RULES`: hits per rule, see [`rule_hit_index`]. A hit is
/// a packet the rule decided: a flow's opening and its re-judgements. A packet its flow
/// passes (`AllowFlow`) counts for its device and its verdict, not for the rule again.
pub const MAP_RULE_HITS: &str = "LZ_RULE_HITS";
/// `RingBuf` of [`Event`]s.
pub const MAP_EVENTS: &str = "LZ_EVENTS";
/// `LruHashMap<u64 source key, TokenBucket>`: per-source event rate limit.
pub const MAP_EV_BUCKET: &str = "LZ_EV_BUCKET";
/// `Array<TokenBucket>` of [`COUNTER_SLOTS`]: event token buckets of managed devices, by
/// cell ([`Device::cell`]): an array the
/// verifier inlines, so a device's reported packet costs no hash lookup for its rate limit.
/// A zeroed entry is a bucket never used (full). Only frames that name their sender
/// ([`Reason::spends_own_budget`], from the devices' side, [`DIR_DEVICE_INIT`]) spend from it; [`MAP_EV_BUCKET`]
/// keeps every other source's, keyed by MAC.
pub const MAP_DEV_EV_BUCKET: &str = "LZ_DEV_EVBUCKET";
/// `Array<TokenBucket>` of 1 (ABI 10): the one budget all sources without a device share
/// (and frames that do not name their sender: upstream's, spoofs, rogue servers),
/// on top of each one's own bucket in [`MAP_EV_BUCKET`]: [`UNKNOWN_EVENTS_SHARE`] times a
/// source's rate and burst. A source's own bucket alone does not bound a flood whose
/// every frame has a source MAC of its own (each would find a fresh, full bucket): its
/// events would fill the ring buffer, and a deviating device's events, the ones that
/// quarantine it, would be lost. A zeroed entry is a bucket never used (full). Every CPU
/// takes from it without atomics, as from the devices' buckets: concurrent takes can blur
/// the rate a little (a lost update returns a token), never lift the bound by much.
pub const MAP_EV_UNKNOWN: &str = "LZ_EV_UNKNOWN";
/// `PerCpuArray<u64>` of [`EV_STATS_LEN`]: events sent, rate limited, lost; flow inserts failed.
pub const MAP_EV_STATS: &str = "LZ_EV_STATS";
/// `HashMap<LocalKey, u32>`: the gateway's own addresses, written by userspace from the
/// kernel's. A device port never speaks with them, claims them in ARP or NDP, and neighbor
/// discovery may address them (they are on-link). Outside the slots.
pub const MAP_LOCAL: &str = "LZ_LOCAL";
/// `LruHashMap<LlKey, LlOwner>`: which MAC claimed an address first (FCFS, RFC 6620): IPv6
/// link-local addresses, and those devices known by their MAC alone use. The datapath's own
/// record, refreshed by the owner's traffic. See *Addresses owned by first use*.
pub const MAP_LL_OWNER: &str = "LZ_LL_OWNER";
/// `LruHashMap<LlKey, LlOwner>` (ABI 16): which MAC first probed an address no one holds
/// (an ARP probe, a DAD neighbor solicitation), since when: its tentative holder for
/// [`TIMEOUT_PROBE_HOLD_NS`]. See *Addresses owned by first use*.
pub const MAP_PROBED: &str = "LZ_PROBED";
/// `Array<TokenBucket>` of [`COUNTER_SLOTS`] (ABI 13): each managed device's budget of new
/// addresses to own by first use, by cell ([`CLAIM_BURST`], then one every
/// [`CLAIM_PERIOD_S`]). See *Addresses owned by first use*.
pub const MAP_DEV_CLAIM: &str = "LZ_DEV_CLAIM";
/// `HashMap<PinKey, PortPin>`: the bridge port a managed MAC was first seen on. See
/// *Bridge ports*.
pub const MAP_PORT_PIN: &str = "LZ_PORT_PIN";

/// The XDP program's name in the object file.
pub const PROGRAM_NAME: &str = "lazaret_xdp";

// === Capacities (per slot where the map is per slot) ===

/// Managed devices per generation.
pub const MAX_DEVICES: u32 = 16_384;
/// Addresses (IPv4 or IPv6) bound to devices, per generation and family.
pub const MAX_DEVICE_ADDRS: u32 = 32_768;
/// Peer-prefix entries per generation and family.
pub const MAX_PEER_ENTRIES: u32 = 262_144;
/// (class, protocol, port-block) entries per generation.
pub const MAX_PORT_ENTRIES: u32 = 1_048_576;
/// Compiled rules per generation (rule ids are below this).
pub const MAX_RULES: u32 = 262_144;
/// Flows of the new table (LRU).
pub const MAX_FLOWS: u32 = 262_144;
/// Flows of the established table (LRU).
pub const MAX_EST_FLOWS: u32 = 131_072;
/// Devices with a promotion bucket (LRU; both generations' devices).
pub const MAX_PROMOTE_BUCKETS: u32 = 2 * MAX_DEVICES;
/// Tracked fragment trains (LRU).
pub const MAX_FRAGS: u32 = 16_384;
/// Event sources with a token bucket (LRU).
pub const MAX_EV_BUCKETS: u32 = 65_536;
/// Ring buffer size in bytes (a power of two, a multiple of the page size).
pub const EVENTS_BYTES: u32 = 1 << 20;
/// Configured interfaces.
pub const MAX_IFACES: u32 = 256;
/// Cells of [`MAP_DEV_COUNT`]: the devices of two generations (a whole policy replaced by
/// another shares none).
pub const COUNTER_SLOTS: u32 = 2 * MAX_DEVICES;
/// Ifindexes below this are configured in [`MAP_IFACE`], the rest in [`MAP_IFACE_HIGH`].
pub const IFACE_DIRECT: u32 = 4096;
/// The gateway's own addresses (both families).
pub const MAX_LOCAL_ADDRS: u32 = 1024;
/// Addresses with a recorded owner by first use (LRU): link-local ones, and those devices
/// the inventory binds none in a family use.
pub const MAX_LL_OWNERS: u32 = 65_536;
/// New addresses a device may own by first use at once ([`MAP_DEV_CLAIM`]) ...
pub const CLAIM_BURST: u32 = 64;
/// ... and then one every this many seconds. Refreshing an address it owns costs nothing.
pub const CLAIM_PERIOD_S: u64 = 60;
/// Managed MACs pinned to a bridge port.
pub const MAX_PORT_PINS: u32 = 2 * MAX_DEVICES;

// === Enumerations, as plain numbers ===

/// Side of an interface (`IfaceConfig::side`, `Event::side`, stats index).
pub const SIDE_DEVICES: u8 = 0;
pub const SIDE_UPSTREAM: u8 = 1;

/// Who opens a flow, in a peer key.
pub const DIR_DEVICE_INIT: u8 = 0;
pub const DIR_PEER_INIT: u8 = 1;
/// Not a direction (ABI 14): the peer maps' entries with this `dir` say which addresses a
/// device may own by first use, by class: [`CLAIM_DEVICES`] or [`CLAIM_ANY`]; [`CLAIM_NO`]
/// or no entry: none may. Their `policy` is a scope: [`CLAIM_POLICY`] for the whole site
/// (the networks of every devices-side interface: where an owner is looked up as a
/// destination), an interface's [`claim_scope`] for what devices behind it may claim (ABI
/// 15; every such scope has an entry for `0/0`, so a scope without one is no interface's).
/// See *Addresses owned by first use*.
pub const DIR_CLAIM: u8 = 2;
pub const CLAIM_POLICY: u32 = 0;
/// Not to be owned: an upstream network's. (The classes are numbered apart from the peer
/// classes of real policies, so that one is never read for the other.)
pub const CLAIM_NO: u32 = 0xffff_ff00;
/// A network the site declares for its devices, or link-local.
pub const CLAIM_DEVICES: u32 = 0xffff_ff01;
/// Declared nowhere, in a family no devices-side interface declares a network of.
pub const CLAIM_ANY: u32 = 0xffff_ff02;

/// `Device::mode`.
pub const MODE_ENFORCE: u8 = 0;
pub const MODE_AUDIT: u8 = 1;
pub const MODE_LEARN: u8 = 2;

/// `DevState::quarantine`.
pub const QUARANTINE_NONE: u8 = 0;
pub const QUARANTINE_RESTRICT: u8 = 1;
pub const QUARANTINE_ISOLATE: u8 = 2;

/// `Device::vlan` that matches any VLAN (and untagged frames).
pub const VLAN_ANY: u16 = 0xffff;
/// `Device::vlan` of an untagged device.
pub const VLAN_UNTAGGED: u16 = 0;
/// `Device::ifindex` that matches any device-side interface.
pub const IFINDEX_ANY: u32 = 0;
/// A rule id meaning "no rule".
pub const NO_RULE: u32 = u32::MAX;

/// `Device::flags`.
pub const DEV_F_HAS_MAC: u8 = 1 << 0;
pub const DEV_F_LIFE_CRITICAL: u8 = 1 << 1;
/// The device has no IPv4 (IPv6) address bound (DHCP-assigned): any source address of that
/// family with its MAC is attributed to it, and IP-based anti-spoofing cannot apply.
pub const DEV_F_NO_IP4: u8 = 1 << 2;
pub const DEV_F_NO_IP6: u8 = 1 << 3;

/// `SiteConfig::flags`.
pub const SITE_F_UNKNOWN_AUDIT: u32 = 1 << 0;
/// Pass link-local control frames (LLDP, STP, LACP, 802.1X) from device ports.
pub const SITE_F_L2_CONTROL: u32 = 1 << 1;
/// ARP and NDP for a device's own binding pass (the neighbor-discovery essential).
pub const SITE_F_NEIGHBOR: u32 = 1 << 2;
/// No device of the slot is known by its MAC alone in IPv4 (ABI 14): no address owned by
/// first use can name a device as a destination, and the owner is not looked up. (Set when
/// none is, so that a slot without the flag looks owners up: it fails safe.)
pub const SITE_F_NO_OWNERS4: u32 = 1 << 3;
/// The same for IPv6.
pub const SITE_F_NO_OWNERS6: u32 = 1 << 4;

/// `RuleRef::flags`: the rule's workflow is in audit mode: matching packets pass and are
/// reported.
pub const RULE_F_AUDIT: u32 = 1 << 0;

/// IP protocol numbers the datapath knows.
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;
/// SCTP, UDP-Lite and DCCP: rules name no ports for them (`has_ports` is TCP's and UDP's),
/// but their first four bytes are a source and a destination port that key their flows, so
/// a peer cannot open its own sessions on one the device opened. Conntrack keys SCTP and
/// UDP-Lite by their ports too; this kernel's conntrack tracks DCCP by its addresses alone,
/// so the nftables dataplane keeps DCCP's ports itself (`dccp4`/`dccp6`).
pub const PROTO_SCTP: u8 = 132;
pub const PROTO_UDPLITE: u8 = 136;
pub const PROTO_DCCP: u8 = 33;

/// `FlowKey::family`.
pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

/// `FlowValue::state`.
pub const FLOW_NEW: u8 = 0;
pub const FLOW_ESTABLISHED: u8 = 1;
pub const FLOW_CLOSING: u8 = 2;
/// TCP: the responder sent its SYN-ACK (ISN in `FlowValue::resp_isn`); the initiator's ACK
/// of it is still to come. Times out like [`FLOW_NEW`].
pub const FLOW_RESPONDED: u8 = 3;

/// Flow timeouts in nanoseconds, refreshed by traffic.
pub const TIMEOUT_TCP_HALF_OPEN_NS: u64 = 30 * NS_PER_S;
pub const TIMEOUT_TCP_ESTABLISHED_NS: u64 = 2 * 3600 * NS_PER_S;
pub const TIMEOUT_TCP_CLOSING_NS: u64 = 30 * NS_PER_S;
pub const TIMEOUT_UDP_NS: u64 = 60 * NS_PER_S;
pub const TIMEOUT_ICMP_NS: u64 = 60 * NS_PER_S;
pub const TIMEOUT_OTHER_NS: u64 = 60 * NS_PER_S;
pub const TIMEOUT_FRAG_NS: u64 = 30 * NS_PER_S;

/// How long a flow in `state` (`FLOW_*`) of protocol `proto` lives without a packet: the
/// datapath's rule, and the replication's (a flow the other member has not seen for longer
/// is not taken over).
#[inline(always)]
pub const fn flow_timeout_ns(proto: u8, state: u8) -> u64 {
    match proto {
        PROTO_TCP => match state {
            FLOW_ESTABLISHED => TIMEOUT_TCP_ESTABLISHED_NS,
            FLOW_CLOSING => TIMEOUT_TCP_CLOSING_NS,
            _ => TIMEOUT_TCP_HALF_OPEN_NS,
        },
        PROTO_UDP => TIMEOUT_UDP_NS,
        PROTO_ICMP | PROTO_ICMPV6 => TIMEOUT_ICMP_NS,
        _ => TIMEOUT_OTHER_NS,
    }
}
/// An address owned by first use whose owner has not used it for this long may be claimed
/// by another MAC (RFC 6620's lifetime of an unused binding); a DHCP server that gives a
/// released address to another device sooner sees that device refused until then.
pub const TIMEOUT_LL_OWNER_NS: u64 = 600 * NS_PER_S;
/// How long the first MAC to probe an address no one holds that it may take by first use
/// (an address-conflict probe: ARP from 0.0.0.0, DAD's NS from `::`) holds it tentatively
/// (RFC 6620's tentative bindings): another MAC's probe or use of it is refused meanwhile,
/// so no device can make a neighbour give up the address it is probing by answering with
/// a probe or a claim of its own. Past RFC 5227's probing and announcement (at most about
/// 7 s from the first probe to the first use) and RFC 4862's DAD (a second by default); a
/// probe does not renew it, and each new hold spends a token of the device's budget of new
/// addresses ([`CLAIM_BURST`]), so a device holds no more addresses by probing them than
/// it could take (a chosen one, again and again, at the budget's pace).
pub const TIMEOUT_PROBE_HOLD_NS: u64 = 10 * NS_PER_S;
/// How long an address owned by first use names its owner as a destination after the owner
/// last used it: past the claim ([`TIMEOUT_LL_OWNER_NS`]), until another MAC claims the
/// address or this passes. Bypass class: when the destination owner lived as long as the
/// claim, what upstream sent to a quiet device known by its MAC alone (a pump addressed by
/// DHCP, silent for 10 minutes) passed as traffic to no device, its policy not asked: a
/// port scan reached it. A day covers a device silent between a night's readings; longer
/// would keep naming a device that has left the address for good (a person's release,
/// `lazaret pins release`, or another device's claim ends it sooner).
pub const TIMEOUT_DEST_OWNER_NS: u64 = 24 * 3600 * NS_PER_S;
pub const NS_PER_S: u64 = 1_000_000_000;

/// Bound on VLAN tags (802.1Q / 802.1ad) the parser accepts; deeper stacks are dropped.
pub const MAX_VLAN_TAGS: usize = 2;
/// Bound on IPv6 extension headers walked. The walk accepts at most one Hop-by-Hop (first),
/// one Destination Options and one Fragment header (see *Extension headers*), so a chain
/// it accepts is never longer than this; anything longer is a repeat and dropped.
pub const MAX_IPV6_EXT_HEADERS: usize = 3;

/// Default event rate limit per source: tokens per second and burst.
pub const EVENT_RATE_PER_S: u32 = 50;
pub const EVENT_BURST: u32 = 100;
/// Sources without a device (unknown MACs, the upstream side's hosts, frames claiming a
/// device's identity without passing it) share one event
/// budget of this many times a source's rate and burst ([`MAP_EV_UNKNOWN`]): room for a
/// few unknown devices appearing at once, never for a flood of made-up source MACs.
pub const UNKNOWN_EVENTS_SHARE: u32 = 10;

/// Default promotion budget per device into the established table: tokens per second and
/// burst (see *Flow tables*).
pub const PROMOTE_RATE_PER_S: u32 = 16;
pub const PROMOTE_BURST: u32 = 64;

/// Why the datapath did what it did. Stable numbers: they index counters and travel in
/// events; Prometheus `reason` labels come from [`Reason::name`].
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// A new flow allowed by a rule.
    AllowRule = 0,
    /// A packet of an established flow.
    AllowFlow = 1,
    /// ARP or NDP for the device's own binding.
    AllowNeighbor = 2,
    /// A link-local control frame the site allows.
    AllowControl = 3,
    /// Upstream traffic not addressed to a managed device.
    PassUnmanaged = 4,
    /// Would be denied; passed because the device or rule is in audit mode.
    Audit = 5,
    /// Passed because the device is in learn mode.
    Learn = 6,
    /// An unknown device, passed because the site default is audit.
    UnknownAudit = 7,
    /// No rule allows this flow.
    DenyNoRule = 8,
    /// A non-initiating packet (TCP without SYN, echo reply, …) with no flow.
    DenyNoFlow = 9,
    /// A managed identity used with a foreign MAC, VLAN, interface or IP.
    DenySpoof = 10,
    /// An unknown device, and the site default is deny: from a device port, its frame; from
    /// upstream, a packet to an address of the devices' declared networks that no device
    /// binds or owns by first use, where some device is known by its MAC alone in the
    /// family (`to_unowned` in the program).
    DenyUnknown = 11,
    /// A frame the parser rejects (truncated, bad lengths, bad header fields).
    DenyMalformed = 12,
    /// An ethertype lazaret does not pass.
    DenyEthertype = 13,
    /// Denied because the device is quarantined.
    DenyQuarantine = 14,
    /// A DHCP server reply from a device port.
    DenyRogueDhcp = 15,
    /// A router advertisement or redirect from a device port.
    DenyRogueRa = 16,
    /// A fragment that belongs to no allowed train, or a first fragment without its L4 header.
    DenyFragment = 17,
    /// More VLAN tags than [`MAX_VLAN_TAGS`].
    DenyVlanDepth = 18,
    /// An IPv6 extension-header chain lazaret does not pass: longer than the bound, a
    /// repeated header, Hop-by-Hop not first, a Routing or Authentication header, or an
    /// unknown header (see *Extension headers*).
    DenyIpv6Ext = 19,
    /// A VLAN tag stack the port is not configured for: a tag on an access port, two tags
    /// on a port without an outer VLAN, or another outer VLAN than the port's.
    DenyVlanTag = 20,
    /// TCP SYN together with FIN or RST: no real stack sends it (a scan or an evasion).
    DenyTcpFlags = 21,
    /// Neighbor discovery or MLD that is not link-scope: a routed destination or a hop
    /// limit other than 255 (NDP) or 1 (MLD).
    DenyNdScope = 22,
    /// An ICMP error whose own addresses do not match the packet it quotes: not sent back
    /// along that packet's flow.
    DenyIcmpError = 23,
}

/// Number of reason slots reserved in counters (room for new reasons without an ABI bump of
/// the stats map).
pub const REASON_SLOTS: u32 = 32;
/// Length of [`MAP_STATS`].
pub const STATS_LEN: u32 = REASON_SLOTS * 2;

/// Index into [`MAP_STATS`] for a reason and a side.
#[inline(always)]
pub const fn stats_index(reason: Reason, side: u8) -> u32 {
    (reason as u32) * 2 + (side as u32 & 1)
}

/// Index into [`MAP_DEV_CELL`] for a slot and a [`Device::cell`].
#[inline(always)]
pub const fn dev_cell_index(slot: u8, cell: u16) -> u32 {
    (slot as u32 & 1) * COUNTER_SLOTS + cell as u32
}

/// Bits of [`AddrBits`]: 2^18. A full slot (32,768 addresses of each family, one filter
/// for both) sets at most one bit in four; the benchmark's site (10,000 devices, about
/// 11,000 addresses), one in 24. An address no device has finds its bit clear as often as
/// bits are clear.
pub const ADDR_BITS_LOG2: u32 = 18;
/// 64-bit words of [`AddrBits`].
pub const ADDR_BITS_WORDS: usize = 1 << (ADDR_BITS_LOG2 - 6);

/// Value of [`MAP_DEV_ADDR_BITS`]: one slot's device addresses as a one-hash Bloom filter.
/// An address is held as two native-endian words of its bytes in network order, as the
/// program holds it: an IPv4 address is its four bytes as a native `u32`, widened, and a
/// zero second word ([`AddrBits::v4`], [`AddrBits::v6`] make them from bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddrBits {
    pub words: [u64; ADDR_BITS_WORDS],
}

impl Default for AddrBits {
    fn default() -> Self {
        AddrBits {
            words: [0; ADDR_BITS_WORDS],
        }
    }
}

/// Sets the bits of every address given (see [`AddrBits::insert`]).
impl Extend<(u64, u64)> for AddrBits {
    fn extend<I: IntoIterator<Item = (u64, u64)>>(&mut self, addrs: I) {
        for addr in addrs {
            self.insert(addr);
        }
    }
}

impl AddrBits {
    /// The bit of an address. Part of the ABI: the program and the loader must agree, so
    /// a change bumps [`ABI_VERSION`] (`known_answers` pins it). Device addresses are
    /// mostly consecutive: the bytes are put in numeric order (on the little-endian hosts
    /// BPF runs on, the last byte lowest) and the halves folded, which keeps a run of
    /// addresses a run of distinct numbers, and a multiplicative (Fibonacci) hash spreads
    /// such a run evenly. Seven instructions on the packet path.
    #[inline(always)]
    pub const fn bit(w0: u64, w1: u64) -> u32 {
        let x = (w0 ^ w1).swap_bytes();
        let folded = (x ^ (x >> 32)) as u32;
        folded.wrapping_mul(0x9e37_79b1) >> (32 - ADDR_BITS_LOG2)
    }

    /// Sets the address's bit.
    #[inline(always)]
    pub fn insert(&mut self, (w0, w1): (u64, u64)) {
        let bit = Self::bit(w0, w1);
        self.words[(bit >> 6) as usize & (ADDR_BITS_WORDS - 1)] |= 1 << (bit & 63);
    }

    /// Whether a device may have the address (`false`: none has it).
    #[inline(always)]
    pub fn may_hold(&self, (w0, w1): (u64, u64)) -> bool {
        let bit = Self::bit(w0, w1);
        // The mask keeps the index provably inside the value for the verifier.
        self.words[(bit >> 6) as usize & (ADDR_BITS_WORDS - 1)] & (1 << (bit & 63)) != 0
    }

    /// The words of an IPv4 address, from its bytes in network order.
    pub const fn v4(bytes: [u8; 4]) -> (u64, u64) {
        (u32::from_ne_bytes(bytes) as u64, 0)
    }

    /// The words of an IPv6 address, from its bytes in network order.
    pub fn v6(b: [u8; 16]) -> (u64, u64) {
        let mut halves = [[0u8; 8]; 2];
        halves[0].copy_from_slice(&b[..8]);
        halves[1].copy_from_slice(&b[8..]);
        (u64::from_ne_bytes(halves[0]), u64::from_ne_bytes(halves[1]))
    }
}

/// Index into [`MAP_RULE_HITS`] for a slot and a rule id.
#[inline(always)]
pub const fn rule_hit_index(slot: u8, rule: u32) -> u32 {
    (slot as u32 & 1) * MAX_RULES + rule
}

impl Reason {
    /// Every reason, in number order.
    pub const ALL: [Reason; 24] = [
        Reason::AllowRule,
        Reason::AllowFlow,
        Reason::AllowNeighbor,
        Reason::AllowControl,
        Reason::PassUnmanaged,
        Reason::Audit,
        Reason::Learn,
        Reason::UnknownAudit,
        Reason::DenyNoRule,
        Reason::DenyNoFlow,
        Reason::DenySpoof,
        Reason::DenyUnknown,
        Reason::DenyMalformed,
        Reason::DenyEthertype,
        Reason::DenyQuarantine,
        Reason::DenyRogueDhcp,
        Reason::DenyRogueRa,
        Reason::DenyFragment,
        Reason::DenyVlanDepth,
        Reason::DenyIpv6Ext,
        Reason::DenyVlanTag,
        Reason::DenyTcpFlags,
        Reason::DenyNdScope,
        Reason::DenyIcmpError,
    ];

    /// Whether packets with this reason are passed (XDP_PASS) rather than dropped.
    pub const fn passes(self) -> bool {
        (self as u8) < (Reason::DenyNoRule as u8)
    }

    /// Snake-case label, used for metrics and logs.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::AllowRule => "allow_rule",
            Reason::AllowFlow => "allow_flow",
            Reason::AllowNeighbor => "allow_neighbor",
            Reason::AllowControl => "allow_control",
            Reason::PassUnmanaged => "pass_unmanaged",
            Reason::Audit => "audit",
            Reason::Learn => "learn",
            Reason::UnknownAudit => "unknown_audit",
            Reason::DenyNoRule => "deny_no_rule",
            Reason::DenyNoFlow => "deny_no_flow",
            Reason::DenySpoof => "deny_spoof",
            Reason::DenyUnknown => "deny_unknown",
            Reason::DenyMalformed => "deny_malformed",
            Reason::DenyEthertype => "deny_ethertype",
            Reason::DenyQuarantine => "deny_quarantine",
            Reason::DenyRogueDhcp => "deny_rogue_dhcp",
            Reason::DenyRogueRa => "deny_rogue_ra",
            Reason::DenyFragment => "deny_fragment",
            Reason::DenyVlanDepth => "deny_vlan_depth",
            Reason::DenyIpv6Ext => "deny_ipv6_ext",
            Reason::DenyVlanTag => "deny_vlan_tag",
            Reason::DenyTcpFlags => "deny_tcp_flags",
            Reason::DenyNdScope => "deny_nd_scope",
            Reason::DenyIcmpError => "deny_icmp_error",
        }
    }

    /// Whether a frame from the devices' side decided for this reason passed identity first,
    /// so the device its verdict names, when the flow is that device's own
    /// ([`DIR_DEVICE_INIT`]), is the one that sent it (a verdict of a responder's policy
    /// names the responder, which did not send the frame: `DIR_PEER_INIT`). Not so for spoofing (the
    /// verdict names the identity claimed), rogue servers and the parser's refusals (judged
    /// before identity, named by a MAC anyone can clone), unknown sources and frames of no
    /// device. Nor for fragments: the XDP program refuses some after identity, nftables
    /// only before it (the kernel reassembles the rest), so a fragment is never taken as
    /// the device's own. Both dataplanes charge a reported frame to its device's own event
    /// budget only when this holds ([`Reason::spends_own_budget`]; any other to its source
    /// MAC's and the budget such sources share),
    /// and only such frames count towards a quarantine: what the device did not provably
    /// send can neither silence its events nor have it quarantined.
    pub const fn names_its_sender(self) -> bool {
        matches!(
            self,
            Reason::AllowRule
                | Reason::AllowFlow
                | Reason::Audit
                | Reason::Learn
                | Reason::DenyNoRule
                | Reason::DenyNoFlow
                | Reason::DenyQuarantine
                | Reason::DenyNdScope
                | Reason::DenyIcmpError
        )
    }

    /// Whether a device's own frame ([`Reason::names_its_sender`]) decided for this reason
    /// spends the device's own event budget. Not a packet of no flow: it is never evidence
    /// (a retransmission after the gateway dropped a flow is one), so a device flooding
    /// them would spend its budget on events that cannot contain it, and have the
    /// deviations that can rate limited unseen. It spends its source MAC's budget and the
    /// shared one, where its own rate bounds what it takes.
    pub const fn spends_own_budget(self) -> bool {
        self.names_its_sender() && !matches!(self, Reason::DenyNoFlow)
    }

    /// The `EVENT_*` kind a reported packet of this reason is (learn records aside, which
    /// are [`EVENT_LEARN`] whatever their reason): both dataplanes report through this.
    pub const fn event_kind(self) -> u8 {
        match self {
            Reason::DenySpoof | Reason::DenyVlanTag | Reason::DenyIcmpError => EVENT_SPOOF,
            Reason::DenyUnknown | Reason::UnknownAudit => EVENT_UNKNOWN,
            Reason::DenyRogueDhcp | Reason::DenyRogueRa => EVENT_ROGUE,
            Reason::Audit => EVENT_AUDIT,
            Reason::Learn => EVENT_LEARN,
            _ => EVENT_DENY,
        }
    }

    /// The reason with this number, if any.
    pub const fn from_u8(n: u8) -> Option<Reason> {
        if (n as usize) < Reason::ALL.len() {
            Some(Reason::ALL[n as usize])
        } else {
            None
        }
    }
}

// === Map keys and values ===

/// Per-slot site settings (value of [`MAP_SITE`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SiteConfig {
    /// Monotonic generation number of the policy in this slot (0 = slot empty).
    pub generation: u64,
    /// `SITE_F_*`.
    pub flags: u32,
    /// Policy id enforced on isolated devices.
    pub quarantine_policy: u32,
    /// Event tokens per second and burst per source.
    pub event_rate: u32,
    pub event_burst: u32,
    /// Promotions into the established flow table per second and burst, per device.
    pub promote_rate: u32,
    pub promote_burst: u32,
}

/// Value of [`MAP_IFACE`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfaceConfig {
    /// `SIDE_*`.
    pub side: u8,
    pub _pad: u8,
    /// VLAN of frames that arrive without a tag (or priority-tagged, VID 0), for an access
    /// port or a VLAN sub-interface whose tag was removed before XDP sees the frame;
    /// [`VLAN_UNTAGGED`] keeps them untagged.
    pub untagged_vlan: u16,
    /// The interface a device behind this one is bound to (`Device::ifindex`): the bridge
    /// this interface is a port of, or [`IFINDEX_ANY`] for the interface itself.
    pub binding_ifindex: u32,
    /// The outer (service, 802.1ad) VLAN of a QinQ port: every frame must carry exactly two
    /// tags, the outer one this. 0: the port carries at most one tag.
    pub outer_vlan: u16,
    /// Which addresses a device behind this interface may own by first use: the
    /// [`DIR_CLAIM`] entries of policy `claim_scope` ([`claim_scope`] of the name of the
    /// interface devices behind it bind to). [`CLAIM_POLICY`] (0, and a scope no entry has):
    /// the site-wide ones.
    pub claim_scope: u16,
}

impl IfaceConfig {
    /// An interface of `side`, untagged frames untagged, bound as itself, its claims the
    /// site-wide ones.
    pub const fn new(side: u8) -> Self {
        IfaceConfig {
            side,
            _pad: 0,
            untagged_vlan: VLAN_UNTAGGED,
            binding_ifindex: IFINDEX_ANY,
            outer_vlan: 0,
            claim_scope: CLAIM_POLICY as u16,
        }
    }

    /// The interface devices behind `ifindex` bind to.
    pub const fn binding(&self, ifindex: u32) -> u32 {
        if self.binding_ifindex == IFINDEX_ANY {
            ifindex
        } else {
            self.binding_ifindex
        }
    }
}

/// Key of [`MAP_DEV_MAC`].
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacKey {
    pub slot: u8,
    pub _pad: u8,
    pub mac: [u8; 6],
}

/// Key of [`MAP_DEV_IP4`]. The address is in network byte order.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ip4Key {
    pub slot: u8,
    pub _pad: [u8; 3],
    pub addr: [u8; 4],
}

/// Key of [`MAP_DEV_IP6`].
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ip6Key {
    pub slot: u8,
    pub _pad: [u8; 3],
    pub addr: [u8; 16],
}

/// Key of [`MAP_DEVICES`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DevKey {
    pub slot: u8,
    pub _pad: [u8; 7],
    pub id: u64,
}

/// A managed device in one generation (value of [`MAP_DEVICES`] and of the identity maps).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Device {
    /// Stable id: [`device_id_hash`] of the inventory id. Keys state and counters.
    pub id: u64,
    /// Policy id of the device's allow-list.
    pub policy: u32,
    /// Policy id enforced while the device is quarantined with `restrict`.
    pub restrict_policy: u32,
    /// Interface the device must be behind, or [`IFINDEX_ANY`].
    pub ifindex: u32,
    /// VLAN id the device must use, [`VLAN_UNTAGGED`] or [`VLAN_ANY`].
    pub vlan: u16,
    /// `MODE_*`.
    pub mode: u8,
    /// `DEV_F_*`.
    pub flags: u8,
    pub mac: [u8; 6],
    /// The device's cell in [`MAP_DEV_COUNT`], [`MAP_DEV_STATE`], [`MAP_DEV_EV_BUCKET`] and
    /// [`MAP_DEV_CLAIM`]:
    /// assigned by the controller when the device first appears in a slot and kept while it
    /// is in either slot, so counts, quarantines and event budgets never move between
    /// devices across reloads (the compiler leaves it 0).
    pub cell: u16,
    /// Index of the device's class (for per-class metrics); `u32::MAX` for none.
    pub class: u32,
    /// The bridge port the device must be behind (`port` in the policy), or
    /// [`IFINDEX_ANY`]: pinned on first sight instead (see *Bridge ports*).
    pub port_ifindex: u32,
}

/// Runtime state of a device (value of [`MAP_DEV_STATE`]); written by userspace only.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DevState {
    /// Bumped to make every flow of the device be re-judged on its next packet.
    pub epoch: u32,
    /// `QUARANTINE_*`.
    pub quarantine: u8,
    pub _pad: [u8; 3],
}

/// Key of [`MAP_PEER4`]. LPM prefix length = [`PEER_KEY_FIXED_BITS`] + address prefix length.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerKey4 {
    pub slot: u8,
    /// `DIR_*`: who opens the flow, seen from the device whose policy this is.
    pub dir: u8,
    pub _pad: [u8; 2],
    /// Policy id, big-endian (LPM compares bytes in order).
    pub policy: [u8; 4],
    pub addr: [u8; 4],
}

/// Key of [`MAP_PEER6`]; as [`PeerKey4`] with a 16-byte address.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerKey6 {
    pub slot: u8,
    pub dir: u8,
    pub _pad: [u8; 2],
    pub policy: [u8; 4],
    pub addr: [u8; 16],
}

/// Bits of a peer key before the address: slot, dir, padding and policy.
pub const PEER_KEY_FIXED_BITS: u32 = 64;

/// Value of the peer maps: the equivalence class of peer addresses for one policy and
/// direction (every address in it is matched by the same rules).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerClass {
    pub class: u32,
    /// `PORT_PREFIX_*` bits: the protocols for which the class has port entries shorter
    /// than one port (ranges, all ports, any protocol). See *Exact entries in hashes*.
    pub port_prefixes: u32,
}

/// [`PeerClass::port_prefixes`]: an entry for any protocol (applies to every packet).
pub const PORT_PREFIX_ANY: u32 = 1;
pub const PORT_PREFIX_TCP: u32 = 2;
pub const PORT_PREFIX_UDP: u32 = 4;
/// Any other protocol (ICMP, ICMPv6, numbered protocols).
pub const PORT_PREFIX_OTHER: u32 = 8;

/// The [`PeerClass::port_prefixes`] bit of a protocol number.
#[inline(always)]
pub const fn port_prefix_bit(proto: u8) -> u32 {
    match proto {
        PROTO_TCP => PORT_PREFIX_TCP,
        PROTO_UDP => PORT_PREFIX_UDP,
        _ => PORT_PREFIX_OTHER,
    }
}

/// Key of [`MAP_PORTS`]. LPM prefix length:
/// - [`PORT_KEY_CLASS_BITS`]: any protocol, any port (a rule with protocol `any`);
/// - [`PORT_KEY_PROTO_BITS`]: this protocol, any port (ICMP, numbered protocols, all ports);
/// - [`PORT_KEY_PROTO_BITS`] + n: this protocol, ports whose top n bits match `port`.
///
/// A lookup uses the full key ([`PORT_KEY_FULL_BITS`]) with the packet's protocol and
/// destination port of the initiating direction (0 for protocols without ports).
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortKey {
    pub slot: u8,
    pub _pad: [u8; 3],
    /// Peer class, big-endian.
    pub class: [u8; 4],
    pub proto: u8,
    /// Port, big-endian.
    pub port: [u8; 2],
    pub _pad2: u8,
}

pub const PORT_KEY_CLASS_BITS: u32 = 64;
pub const PORT_KEY_PROTO_BITS: u32 = 72;
pub const PORT_KEY_FULL_BITS: u32 = 88;

/// Value of [`MAP_PORTS`]: the rule that allows.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleRef {
    /// Compiled rule id (below [`MAX_RULES`]), traceable to its workflow and rule.
    pub rule: u32,
    /// `RULE_F_*`.
    pub flags: u32,
}

/// Key of [`MAP_FLOWS`]: a normalized 5-tuple. Endpoint `a` is the lower of the two
/// (address, port) pairs, so both directions of a flow share one key. IPv4 addresses occupy
/// the first four bytes, the rest zero.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowKey {
    pub addr_a: [u8; 16],
    pub addr_b: [u8; 16],
    /// Ports in host byte order (ICMP: the echo identifier on both sides).
    pub port_a: u16,
    pub port_b: u16,
    pub proto: u8,
    /// `FAMILY_V4` or `FAMILY_V6`.
    pub family: u8,
    /// An ICMP or ICMPv6 echo flow: which end sends the requests ([`ECHO_BY_A`],
    /// [`ECHO_BY_B`]; see [`echo_end`]). [`ECHO_NONE`] for every other flow.
    pub echo: u8,
    pub _pad: u8,
}

/// [`FlowKey::echo`] of a flow that is no echo.
pub const ECHO_NONE: u8 = 0;
/// [`FlowKey::echo`]: endpoint a sends the echo requests, b the replies.
pub const ECHO_BY_A: u8 = 1;
/// [`FlowKey::echo`]: endpoint b sends the echo requests, a the replies.
pub const ECHO_BY_B: u8 = 2;

/// A packet's [`FlowKey::echo`] as if its source were endpoint a: [`ECHO_BY_A`] for an
/// ICMP (`proto` 1) or ICMPv6 (58) echo request, [`ECHO_BY_B`] for an echo reply,
/// [`ECHO_NONE`] for anything else. [`echo_end`] turns it into the key's.
#[inline(always)]
pub const fn echo_kind(proto: u8, icmp_type: u8) -> u8 {
    match (proto, icmp_type) {
        (PROTO_ICMP, 8) | (PROTO_ICMPV6, 128) => ECHO_BY_A,
        (PROTO_ICMP, 0) | (PROTO_ICMPV6, 129) => ECHO_BY_B,
        _ => ECHO_NONE,
    }
}

/// [`FlowKey::echo`] of a packet of `kind` ([`echo_kind`]) whose source is endpoint a of
/// the key (`src_is_a`), else b: the ends swap when the source is b.
///
/// Conntrack keys an echo by its type: a request and its reply are one flow's two
/// directions, a request the other way another flow. Keyed by the identifier alone (ABI 10
/// and earlier), both directions shared one key, and a request carrying the identifier of
/// a live echo session passed as that session's whichever end sent it: a peer's request to
/// a device that only the device's own session allowed, or a device's request to a peer
/// that only allowed itself to ping the device (a bypass class). No 16-bit encoding of the
/// identifier in the two ports can tell the ends apart for every identifier, hence a byte.
#[inline(always)]
pub const fn echo_end(kind: u8, src_is_a: bool) -> u8 {
    if src_is_a {
        kind
    } else {
        // 1 and 2 swap, 0 stays.
        (kind << 1 | kind >> 1) & 3
    }
}

/// [`FlowKey::echo`] of a flow of `proto` whose endpoint `initiator` (0: a, 1: b) opened
/// it: only an echo request opens an ICMP or ICMPv6 flow, so its initiator is its requester.
/// For keys made without seeing the packet (flows carried over from ABI 10, replicated).
#[inline(always)]
pub const fn echo_of_flow(proto: u8, initiator: u8) -> u8 {
    match proto {
        PROTO_ICMP | PROTO_ICMPV6 if initiator == 0 => ECHO_BY_A,
        PROTO_ICMP | PROTO_ICMPV6 => ECHO_BY_B,
        _ => ECHO_NONE,
    }
}

/// Value of [`MAP_FLOWS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowValue {
    /// Last packet seen, on the datapath clock: CLOCK_MONOTONIC_COARSE (`bpf_ktime_get_coarse_ns`,
    /// the scheduler tick's resolution; timeouts are seconds or more).
    pub last_seen_ns: u64,
    /// Generation under which the flow was last judged.
    pub generation: u64,
    /// Managed device at endpoint a / b, or 0.
    pub dev_a: u64,
    pub dev_b: u64,
    /// Epochs of those devices when the flow was last judged.
    pub epoch_a: u32,
    pub epoch_b: u32,
    /// Rule that allowed the flow, or [`NO_RULE`].
    pub rule: u32,
    /// `FLOW_*`.
    pub state: u8,
    /// 0: endpoint a opened the flow; 1: endpoint b did.
    pub initiator: u8,
    /// The reason recorded when the flow was admitted (allow, audit or learn).
    pub reason: u8,
    /// `FLOW_F_*` (ABI 6; a flow carried over from an older datapath has none).
    pub flags: u8,
    /// TCP: the responder's initial sequence number, from its SYN-ACK; the initiator's ACK
    /// must acknowledge `resp_isn + 1` to confirm the flow.
    pub resp_isn: u32,
    /// [`Device::cell`] of `dev_a` / `dev_b` when the flow was last judged (valid while the
    /// flow's generation is the active one: a device keeps its cell while in either slot).
    pub cell_a: u16,
    pub cell_b: u16,
}

/// [`FlowValue::flags`]: `dev_a` is the device the address `addr_a` names in the flow's
/// generation (found by that address, not by a MAC alone). A packet from upstream to an
/// endpoint with this flag, from an endpoint without a device, is judged from the flow
/// entry alone while the flow is current: no identity lookup (see the program's
/// `upstream_reply`).
pub const FLOW_F_ADDR_A: u8 = 1;
/// As [`FLOW_F_ADDR_A`], for `dev_b` and `addr_b`.
pub const FLOW_F_ADDR_B: u8 = 2;

/// Key of [`MAP_FRAGS`]: a fragment train.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FragKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// IPv4 identification (16 bits) or IPv6 fragment identification (32 bits).
    pub id: u32,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}

/// Value of [`MAP_FRAGS`]: the verdict of the first fragment, and the ports and echo kind
/// that name its flow. A later fragment passes only while that flow lives and was judged
/// under the generation and device states in force: its ports are not in it to judge again,
/// so a quarantine or a reload that cuts the flow cuts the train (ABI 12).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragValue {
    pub last_seen_ns: u64,
    /// [`Reason`] number given to the first fragment.
    pub reason: u8,
    /// The first fragment's echo kind (`ECHO_*`, as the program's parser gives it).
    pub echo: u8,
    /// Where the first fragment's upper-layer header ends, in bytes from the start of the
    /// fragmentable part: a later fragment starting before it would overwrite that header
    /// (RFC 1858, RFC 5722) and is dropped.
    pub hdr_end: u16,
    /// The first fragment's source and destination ports (or echo identifier), as in its
    /// flow key.
    pub sport: u16,
    pub dport: u16,
}

/// Key of [`MAP_LOCAL`]: one of the gateway's own addresses.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LocalKey {
    /// `FAMILY_V4` or `FAMILY_V6`.
    pub family: u8,
    pub _pad: [u8; 3],
    /// IPv4 in the first four bytes, the rest zero.
    pub addr: [u8; 16],
}

/// Key of [`MAP_LL_OWNER`]: an IPv6 address, or an IPv4 one in its IPv4-mapped form
/// ([`owner_key`]).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LlKey {
    pub addr: [u8; 16],
}

/// The [`MAP_LL_OWNER`] key of an address: an IPv6 address as it is, an IPv4 one as
/// `::ffff:a.b.c.d` (bytes 10 and 11 0xff, the address in bytes 12..16).
pub const fn owner_key(family: u8, addr: [u8; 16]) -> LlKey {
    if family == FAMILY_V6 {
        return LlKey { addr };
    }
    let mut k = [0u8; 16];
    k[10] = 0xff;
    k[11] = 0xff;
    k[12] = addr[0];
    k[13] = addr[1];
    k[14] = addr[2];
    k[15] = addr[3];
    LlKey { addr: k }
}

/// Value of [`MAP_LL_OWNER`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LlOwner {
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
    /// Last frame of the owner using the address (source or NA target).
    pub last_seen_ns: u64,
}

/// Key of [`MAP_PORT_PIN`]: a managed device's MAC.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PinKey {
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

/// Value of [`MAP_PORT_PIN`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortPin {
    /// The bridge port (ingress ifindex) the MAC was first seen on.
    pub ifindex: u32,
    pub _pad: u32,
    /// When it was pinned, on the datapath clock (see [`FlowValue::last_seen_ns`]).
    pub since_ns: u64,
}

/// Value of [`MAP_DEV_COUNT`] (per CPU; userspace sums).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DevCounters {
    pub allowed_packets: u64,
    pub allowed_bytes: u64,
    pub denied_packets: u64,
    pub denied_bytes: u64,
    pub last_seen_ns: u64,
}

/// Value of [`MAP_EV_BUCKET`], [`MAP_DEV_EV_BUCKET`] and [`MAP_DEV_CLAIM`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenBucket {
    /// Tokens available, in thousandths.
    pub tokens_milli: u64,
    /// The last refill, in the datapath clock (divided by [`CLAIM_PERIOD_S`] in
    /// [`MAP_DEV_CLAIM`], whose bucket refills one token a period).
    pub last_ns: u64,
}

/// Indexes of [`MAP_EV_STATS`]: the datapath's own outcomes (events, flow tracking).
pub const EV_STAT_SENT: u32 = 0;
pub const EV_STAT_RATE_LIMITED: u32 = 1;
pub const EV_STAT_RINGBUF_FULL: u32 = 2;
/// An allowed new flow the flow table refused to insert: admitted, but untracked (its
/// replies are dropped as [`Reason::DenyNoFlow`]).
pub const EV_STAT_FLOW_INSERT_FAILED: u32 = 3;
pub const EV_STATS_LEN: u32 = 4;

/// `Event::kind`.
pub const EVENT_DENY: u8 = 1;
pub const EVENT_AUDIT: u8 = 2;
pub const EVENT_SPOOF: u8 = 3;
pub const EVENT_UNKNOWN: u8 = 4;
pub const EVENT_LEARN: u8 = 5;
pub const EVENT_ROGUE: u8 = 6;

/// `Event::flags`: the verdict re-judged a flow admitted under an earlier policy or device
/// state (a reload, a quarantine) and refused it. The device did not deviate, the policy
/// moved: reported, never counted towards a quarantine, and never paid from a device's own
/// event budget (a narrowed workflow would otherwise quarantine every device with a session
/// open under it, and the peer whose replies are refused with them).
pub const EVENT_F_REJUDGED: u8 = 1;

/// `Event::version` of this layout.
pub const EVENT_VERSION: u16 = 1;

/// A datapath event, sent through [`MAP_EVENTS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// [`EVENT_VERSION`].
    pub version: u16,
    /// `EVENT_*`.
    pub kind: u8,
    /// [`Reason`] number.
    pub reason: u8,
    /// `SIDE_*` of the ingress interface.
    pub side: u8,
    /// `FAMILY_V4` / `FAMILY_V6`, or 0 for non-IP frames.
    pub family: u8,
    pub proto: u8,
    /// `DIR_*`: whether the managed device opened the flow.
    pub dir: u8,
    /// Innermost VLAN id, 0 for untagged.
    pub vlan: u16,
    pub src_port: u16,
    pub dst_port: u16,
    /// `EVENT_F_*` (0 from programs older than the flags: none set).
    pub flags: u8,
    pub _pad: u8,
    pub ifindex: u32,
    /// Rule involved, or [`NO_RULE`].
    pub rule: u32,
    pub ts_ns: u64,
    /// Device the packet was attributed to, or 0 for an unknown source.
    pub device: u64,
    /// Generation the packet was judged under.
    pub generation: u64,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub _pad2: [u8; 4],
}

/// The claim scope of a devices-side interface ([`IfaceConfig::claim_scope`]): FNV-1a of
/// its name folded to 16 bits, never [`CLAIM_POLICY`] (0, the site-wide scope). Stable
/// across restarts and policies, so an interface's configuration and a compiled policy
/// agree without knowing of each other. Two interfaces whose names fold alike share their
/// scope: each may own the other's networks' addresses, as without scopes.
pub const fn claim_scope(interface: &[u8]) -> u16 {
    let h = device_id_hash(interface);
    let folded = (h ^ (h >> 16) ^ (h >> 32) ^ (h >> 48)) as u16;
    if folded == CLAIM_POLICY as u16 {
        1
    } else {
        folded
    }
}

/// Stable 64-bit id of a device: FNV-1a of its inventory id. Never 0 (0 means "no device").
pub const fn device_id_hash(id: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < id.len() {
        hash ^= id[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    if hash == 0 {
        1
    } else {
        hash
    }
}

// === Layout assertions: the kernel and userspace must agree byte for byte ===

const _: () = {
    assert!(size_of::<SiteConfig>() == 32);
    assert!(size_of::<IfaceConfig>() == 12);
    // An unset entry of the interface array (all zero) is an unknown interface's default.
    let d = IfaceConfig::new(SIDE_DEVICES);
    assert!(d.side == 0 && d.untagged_vlan == 0 && d.binding_ifindex == 0 && d.outer_vlan == 0);
    assert!(d.claim_scope == 0);
    assert!(size_of::<MacKey>() == 8);
    assert!(size_of::<Ip4Key>() == 8);
    assert!(size_of::<Ip6Key>() == 20);
    assert!(size_of::<DevKey>() == 16);
    assert!(size_of::<Device>() == 40);
    assert!(size_of::<AddrBits>() == 32_768);
    assert!(offset_of!(Device, mac) == 24);
    assert!(offset_of!(Device, class) == 32);
    assert!(COUNTER_SLOTS <= u16::MAX as u32 + 1);
    assert!(size_of::<DevState>() == 8);
    assert!(size_of::<PeerKey4>() == 12);
    assert!(offset_of!(PeerKey4, addr) * 8 == PEER_KEY_FIXED_BITS as usize);
    assert!(size_of::<PeerKey6>() == 24);
    assert!(offset_of!(PeerKey6, addr) * 8 == PEER_KEY_FIXED_BITS as usize);
    assert!(size_of::<PeerClass>() == 8);
    assert!(size_of::<PortKey>() == 12);
    assert!(offset_of!(PortKey, proto) * 8 == PORT_KEY_CLASS_BITS as usize);
    assert!(offset_of!(PortKey, port) * 8 == PORT_KEY_PROTO_BITS as usize);
    assert!(size_of::<RuleRef>() == 8);
    assert!(size_of::<FlowKey>() == 40);
    assert!(size_of::<FlowValue>() == 56);
    // The sizing behind the promotion guarantee (see *Flow tables*): one device alone
    // cannot cycle the established table within the established-TCP timeout.
    assert!(
        ((MAX_EST_FLOWS - PROMOTE_BURST) / PROMOTE_RATE_PER_S) as u64
            > TIMEOUT_TCP_ESTABLISHED_NS / NS_PER_S
    );
    assert!(size_of::<FragKey>() == 40);
    assert!(size_of::<FragValue>() == 16);
    assert!(size_of::<LocalKey>() == 20);
    assert!(size_of::<LlKey>() == 16);
    assert!(size_of::<LlOwner>() == 16);
    assert!(size_of::<PinKey>() == 8);
    assert!(size_of::<PortPin>() == 16);
    assert!(size_of::<DevCounters>() == 40);
    assert!(size_of::<TokenBucket>() == 16);
    assert!(size_of::<Event>() == 96);
    assert!(offset_of!(Event, ts_ns) == 24);
    assert!(offset_of!(Event, src) == 48);
    assert!(Reason::ALL.len() <= REASON_SLOTS as usize);
    assert!(EVENTS_BYTES.is_power_of_two());
};

#[cfg(feature = "user")]
mod pod {
    //! `aya::Pod` for every map type: they are plain old data by construction (repr(C),
    //! integers and byte arrays, padding spelled out as fields).
    use super::*;
    macro_rules! pod {
        ($($t:ty),* $(,)?) => { $(
            // SAFETY: repr(C), only integer and byte-array fields, no implicit padding
            // (checked by the size assertions above).
            unsafe impl aya::Pod for $t {}
        )* };
    }
    pod!(
        SiteConfig,
        IfaceConfig,
        MacKey,
        Ip4Key,
        Ip6Key,
        DevKey,
        Device,
        DevState,
        PeerKey4,
        PeerKey6,
        PeerClass,
        PortKey,
        RuleRef,
        FlowKey,
        FlowValue,
        FragKey,
        FragValue,
        LocalKey,
        LlKey,
        LlOwner,
        PinKey,
        PortPin,
        DevCounters,
        TokenBucket,
        Event,
        AddrBits,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_numbered_in_order() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
            assert_eq!(Reason::from_u8(i as u8), Some(*r));
        }
        assert_eq!(Reason::from_u8(Reason::ALL.len() as u8), None);
    }

    #[test]
    fn pass_reasons_are_the_allows() {
        assert!(Reason::AllowRule.passes());
        assert!(Reason::UnknownAudit.passes());
        assert!(!Reason::DenyNoRule.passes());
        assert!(!Reason::DenyIpv6Ext.passes());
    }

    /// Inventories number devices consecutively: 10,000 of them take nearly as many bits,
    /// and 10,000 addresses next to them (an upstream subnet) mostly find their bit clear.
    /// The bounds are a random hash's (about 190 bits shared, 96 % clear); consecutive
    /// addresses do better (none shared, all clear).
    #[test]
    fn address_bits_spread_consecutive_addresses() {
        fn check(addr: impl Fn(u32) -> (u64, u64)) {
            let mut bits = AddrBits::default();
            for i in 0..10_000 {
                bits.insert(addr(i));
            }
            let set: u32 = bits.words.iter().map(|w| w.count_ones()).sum();
            assert!(set >= 9_700, "10,000 addresses set {set} bits");
            let clear = (10_000..20_000)
                .filter(|&i| !bits.may_hold(addr(i)))
                .count();
            assert!(
                clear >= 9_400,
                "{clear} of 10,000 other addresses find their bit clear"
            );
        }
        // 10.0.0.0 up.
        check(|i| AddrBits::v4((0x0a00_0000 + i).to_be_bytes()));
        // fd00:20::/64, the interface identifier counting up.
        check(|i| {
            let mut a = [0u8; 16];
            a[0] = 0xfd;
            a[3] = 0x20;
            a[12..].copy_from_slice(&i.to_be_bytes());
            AddrBits::v6(a)
        });
    }

    /// The bit of an address is part of the ABI: a program and a loader of the same ABI
    /// version must agree on it, and a pinned slot's bits outlive the daemon that wrote
    /// them. If these change, bump ABI_VERSION.
    const KNOWN_V4: u32 = 135_595;
    const KNOWN_V6: u32 = 27_819;

    #[test]
    fn known_answers() {
        let bit = |(w0, w1)| AddrBits::bit(w0, w1);
        assert_eq!(bit(AddrBits::v4([10, 64, 0, 10])), KNOWN_V4);
        let mut a = [0u8; 16];
        a[..2].copy_from_slice(&[0xfd, 0x00]);
        a[15] = 0x0a;
        assert_eq!(bit(AddrBits::v6(a)), KNOWN_V6);
    }

    #[test]
    fn device_id_hash_is_stable_and_nonzero() {
        // FNV-1a test vector: the empty string hashes to the offset basis.
        assert_eq!(device_id_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(device_id_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(device_id_hash(b"pump-0001"), device_id_hash(b"pump-0002"));
    }
}
