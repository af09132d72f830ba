//! The table's chains, one method per stage of the decision, each the twin of a function of
//! the XDP program (named in its doc). Their number is fixed: everything that grows with the
//! policy is a set or map element (see [`super`]).

use super::super::expr::*;
use super::builder::{Builder, Payer, Side};
use super::names::*;
use super::{
    owner_tag, Fam, LEARN_PREFIX, LINK_LOCAL_ELSEWHERE, LINK_LOCAL_NOBODY, OWNER_INDEX, OWNER_MARK,
    OWNER_TABLE, V4, V6,
};
use lazaret_abi::*;
use nftables::expr::{Expression as Expr, MetaKey};
use nftables::schema::{Chain, NfListObject};
use nftables::types::{NfChainPolicy, NfChainType, NfHook};

fn iifname() -> Expr<'static> {
    meta(MetaKey::Iifname)
}

fn ether_saddr() -> Expr<'static> {
    payload("ether", "saddr")
}

fn ether_daddr() -> Expr<'static> {
    payload("ether", "daddr")
}

/// A packet from a device port to a link-local address (`link_local`), or from a device
/// port to any other address. The first kind is judged every time for the device its frame
/// is sent to (`link_local_device`): it never takes the admitted-flow shortcut, and never
/// keeps or reads an owner in the conntrack mark. Every rule that tells the two apart
/// matches one of these, so they cannot drift apart.
fn device_port_to(f: Fam, link_local: bool) -> [Stmt; 2] {
    let to = if link_local { eq } else { ne };
    [
        in_set(iifname(), DEV_IFACES),
        to(f.daddr(), f.link_local_unicast()),
    ]
}

/// A packet from a device port, by a device known by its MAC (`devmac`), at a flow end
/// (its source's in the flow's `dir`ection) that no inventory entry names: the device there
/// is the one that sends, whoever sent before (see `Builder::flow`).
fn mac_only_end(f: Fam, dir: &str) -> Vec<Stmt> {
    let end = if dir == "original" {
        f.ct_saddr()
    } else {
        f.ct_daddr()
    };
    vec![
        in_set(iifname(), DEV_IFACES),
        eq(ct("direction"), s(dir)),
        not_in_set(end, &f.n("dev")),
        in_set(ether_saddr(), DEVMAC),
    ]
}

/// A packet [`record_mac_flow`] records and the admitted-flow shortcut finds recorded: one
/// with ports (TCP, UDP, UDP-Lite, SCTP; an ICMP header's first four bytes are its type,
/// code and checksum, which would make each echo a new element), and not an error related
/// to a flow (conntrack judges it by the flow it quotes, while its key is its own header:
/// an error whose checksum matched one recorded for another would pass as a flow's).
/// Every other packet of such a device at such an end is judged, every time.
fn ported_flow() -> [Stmt; 2] {
    let ported = [PROTO_TCP, PROTO_UDP, PROTO_UDPLITE, PROTO_SCTP].map(|p| n(u32::from(p)));
    [
        eq(meta(MetaKey::L4proto), anon(ported.to_vec())),
        ne(ct("state"), s("related")),
    ]
}

/// Conntrack's directions of a flow: its initiator's packets, then its responder's.
const DIRECTIONS: [&str; 2] = ["original", "reply"];

/// Records in `macflow4`/`6` or `macanswer4`/`6` the flow of a packet that passes on `matches` (the passing
/// verdict's own) from a device known by its MAC at an end no inventory entry names
/// ([`mac_only_end`]): its later packets from that device take the admitted-flow shortcut.
pub(super) fn record_mac_flow(b: &mut Builder, chain: &str, matches: &[Stmt]) {
    for f in [V4, V6] {
        for (dir, set) in DIRECTIONS.into_iter().zip(MACFLOW) {
            let mut r = matches.to_vec();
            r.push(f.is());
            r.extend(mac_only_end(f, dir));
            r.extend(ported_flow());
            r.push(update_set(f.sent_by(), &f.n(set)));
            b.rule(chain, r);
        }
    }
}

/// The packets whose destination's owner the conntrack mark keeps (`judge`): from
/// upstream, and from a device port to an address that is not link-local.
fn owner_kept_for(f: Fam) -> [Vec<Stmt>; 2] {
    [
        vec![not_in_set(iifname(), DEV_IFACES)],
        device_port_to(f, false).into(),
    ]
}

/// The device a frame from a device port to a link-local address is sent to, by its
/// destination MAC, in the packet mark (no device: the rule stops here). Read from the
/// frame itself, not kept in the conntrack mark as an owner is: the packets of one flow
/// may go to different MACs, and one packet's owner must never be read for another's.
fn link_local_device(f: Fam) -> Vec<Stmt> {
    let mut r = vec![
        eq(ct("direction"), s("original")),
        not_in_set(f.ct_daddr(), &f.n("dev")),
    ];
    r.extend(device_port_to(f, true));
    r.push(set_mark(map_lookup(ether_daddr(), DEVIDX_MAC)));
    r
}

fn mark() -> Expr<'static> {
    meta(MetaKey::Mark)
}

/// The device index of the frame stage's owner mark ([`OWNER_MARK`]); 0 for any other
/// mark the table is handed (no owner).
fn owner_index() -> Expr<'static> {
    and(mark(), n(OWNER_INDEX))
}

/// Matches a flow whose conntrack mark holds the owner mark of this table (`tag`) that
/// `judge4`/`6` kept there, and puts its device index in the packet mark.
fn kept_owner(tag: u32) -> Vec<Stmt> {
    vec![
        eq(and(ct("mark"), n(OWNER_MARK | OWNER_TABLE)), n(tag)),
        set_mark(and(ct("mark"), n(OWNER_INDEX))),
    ]
}

impl Builder<'_> {
    /// The base chain and every regular chain, then their rules, stage by stage.
    pub(super) fn chains(&mut self, site_flags: u32, quarantine_policy: u32) {
        // Base chain: after conntrack (-200), before anything routes the packet.
        self.objects.push(NfListObject::Chain(Chain {
            family: self.opt.family.nf(),
            table: self.opt.table.clone().into(),
            name: CHAIN_HOOK.into(),
            _type: Some(NfChainType::Filter),
            hook: Some(NfHook::Prerouting),
            prio: Some(-150),
            policy: Some(NfChainPolicy::Accept),
            ..Chain::default()
        }));
        let all = [
            "from_devices",
            "from_upstream",
            "flow",
            "id4",
            "id6",
            "judge4",
            "judge6",
            "end_init4",
            "end_resp4",
            "end_init6",
            "end_resp6",
            "soft_audit",
            "soft_learn",
            "soft_resp4",
            "soft_resp6",
            "dccp_flow4",
            "dccp_flow6",
            "admitted4",
            "admitted6",
            "admitted_ok4",
            "admitted_ok6",
        ];
        for c in all {
            self.chain(c);
        }
        // Stage 2 per end: a verdict of the responder's policy is reported as the
        // responder's (`DIR_PEER_INIT`), as the XDP program's `judge_end` does.
        for d in ["init", "resp"] {
            for v in ["enforce", "quarantine", "audit", "learn"] {
                self.chain(&format!("ports_{d}_{v}"));
            }
        }
        for f in [V4, V6] {
            for d in ["init", "resp"] {
                for v in ["enforce", "quarantine", "audit", "learn"] {
                    self.chain(&format!("class_{d}_{v}{}", f.v));
                }
            }
        }
        self.hook();
        self.chain_from_devices(site_flags);
        self.identify(site_flags);
        self.chain_from_upstream();
        self.flow();
        self.judge(quarantine_policy);
        self.ports();
        self.soft();
    }

    /// The base chain: devices' interfaces to `from_devices`, upstream to `from_upstream`.
    fn hook(&mut self) {
        self.rule(
            CHAIN_HOOK,
            vec![in_set(iifname(), DEV_IFACES), jump("from_devices")],
        );
        self.rule(
            CHAIN_HOOK,
            vec![in_set(iifname(), UP_IFACES), jump("from_upstream")],
        );
    }

    /// Rogue servers, identity (`id4`/`id6`), neighbor discovery, then flows.
    fn chain_from_devices(&mut self, site_flags: u32) {
        let c = "from_devices";
        // A DHCP server's message: from the server's port, or to the client's (which a
        // client reads whatever the source port).
        for (family, port, number) in [
            (V4, "sport", 67),
            (V4, "dport", 68),
            (V6, "sport", 547),
            (V6, "dport", 546),
        ] {
            let r = vec![family.is(), eq(payload("udp", port), n(number))];
            self.decide(c, r, Reason::DenyRogueDhcp, true, Side::Devices);
        }
        let r = vec![
            V6.is(),
            eq(payload("icmpv6", "type"), anon(vec![n(134), n(137)])),
        ];
        self.decide(c, r, Reason::DenyRogueRa, true, Side::Devices);
        self.rule(c, vec![V4.is(), jump("id4")]);
        self.rule(c, vec![V6.is(), jump("id6")]);
        // Neighbor discovery reads no owner mark: before the refusal of the other table's,
        // so that what is sent to a neighbour's link-local address (which names it by its
        // MAC) is not refused while a reload swaps the tables.
        let neighbor = [131, 132, 133, 135, 136, 143].map(n).to_vec();
        let r = vec![V6.is(), eq(payload("icmpv6", "type"), anon(neighbor))];
        if site_flags & SITE_F_NEIGHBOR != 0 {
            self.decide(c, r, Reason::AllowNeighbor, false, Side::Devices);
        } else {
            self.decide(c, r, Reason::DenyNoRule, true, Side::Devices);
        }
        // As from upstream (`chain_from_upstream`): an owner mark of the other table of the
        // pair is refused, never read as a device of this one.
        let tag = owner_tag(&self.opt.table);
        let theirs = (tag ^ OWNER_TABLE) | OWNER_MARK;
        let r = vec![eq(and(mark(), n(OWNER_MARK | OWNER_TABLE)), n(theirs))];
        self.decide(c, r, Reason::DenyNoFlow, false, Side::Devices);
        self.rule(c, vec![goto("flow")]);
    }

    /// `identify_source`: returns for a managed source, else a verdict.
    fn identify(&mut self, site_flags: u32) {
        for f in [V4, V6] {
            let c = format!("id{}", f.v);
            let bind_key = concat(vec![f.saddr(), ether_saddr(), iifname()]);
            self.rule(
                &c,
                vec![
                    in_set(f.saddr(), &f.n("dev")),
                    in_set(bind_key, &f.n("bind")),
                    ret(),
                ],
            );
            self.rule(
                &c,
                vec![
                    in_set(f.saddr(), &f.n("dev")),
                    in_set(concat(vec![f.saddr(), iifname()]), &f.n("bind_nomac")),
                    ret(),
                ],
            );
            let r = vec![in_set(f.saddr(), &f.n("dev"))];
            self.decide(&c, r, Reason::DenySpoof, true, Side::Devices);
            let mac_if = || concat(vec![ether_saddr(), iifname()]);
            self.rule(
                &c,
                vec![
                    ne(f.saddr(), f.unspecified()),
                    in_set(mac_if(), &f.n("macbind")),
                    ret(),
                ],
            );
            self.rule(
                &c,
                vec![
                    eq(f.saddr(), f.unspecified()),
                    in_set(mac_if(), MACBIND),
                    ret(),
                ],
            );
            let r = vec![in_set(ether_saddr(), DEVMAC)];
            self.decide(&c, r, Reason::DenySpoof, true, Side::Devices);
            let unknown = if site_flags & SITE_F_UNKNOWN_AUDIT != 0 {
                Reason::UnknownAudit
            } else {
                Reason::DenyUnknown
            };
            self.decide(&c, Vec::new(), unknown, true, Side::Devices);
        }
    }

    /// A device's address is forged upstream (devices are never upstream); else the packet
    /// is attributed to the device addressed; else it is not ours.
    fn chain_from_upstream(&mut self) {
        for f in [V4, V6] {
            let r = vec![f.is(), in_set(f.saddr(), &f.n("dev"))];
            self.decide("from_upstream", r, Reason::DenySpoof, true, Side::Upstream);
        }
        for f in [V4, V6] {
            let r = vec![
                f.is(),
                not_in_set(f.saddr(), &f.n("dev")),
                not_in_set(f.daddr(), &f.n("dev")),
                // Nor one a device owns by first use (the frame stage's owner mark).
                eq(and(mark(), n(OWNER_MARK)), n(0)),
            ];
            self.decide(
                "from_upstream",
                r,
                Reason::PassUnmanaged,
                false,
                Side::Upstream,
            );
        }
        // An owner mark of the other table of the pair (both frame stages run while a
        // reload swaps them, the later one's mark standing): its device index is the other
        // generation's numbering. Refused for those milliseconds, never read as this one's
        // device, nor as no device.
        let tag = owner_tag(&self.opt.table);
        let theirs = (tag ^ OWNER_TABLE) | OWNER_MARK;
        let r = vec![eq(and(mark(), n(OWNER_MARK | OWNER_TABLE)), n(theirs))];
        self.decide(
            "from_upstream",
            r,
            Reason::DenyNoFlow,
            false,
            Side::Upstream,
        );
        self.rule("from_upstream", vec![goto("flow")]);
    }

    /// Conntrack stands in for the XDP flow table. A flow admitted under this generation
    /// passes unless an end is quarantined; anything else is judged by its original
    /// direction, as the XDP program re-judges stale flows.
    ///
    /// "Admitted" is a confirmed conntrack entry (an earlier packet was accepted), not
    /// `ct state established`: conntrack keeps an unreplied flow `new` (a device streaming
    /// UDP to a collector that never answers), and the XDP program's flow entry exists
    /// from the first packet. So that flow's later packets pass as `allow_flow`, and when
    /// a reload cuts it, its refusal is reported as judged again, as on XDP, not as a new
    /// flow the device opened (evidence: three such streams would quarantine it).
    fn flow(&mut self) {
        let gen = self.opt.generation;
        let c = "flow";
        // Bypass class: conntrack relates to the flow it quotes every ICMP type it counts
        // as an error (ICMPv4 source quench and redirect too, every ICMPv6 type below 128),
        // checking only that it goes to the quoted packet's sender. The XDP program relates
        // only destination unreachable, time exceeded and parameter problem (and ICMPv6's
        // packet too big), whose sender the frame stage checks; any other type is a packet
        // of no flow there. Passed as its flow's, a device's redirect quoting its
        // neighbour's session would reach the server, or the neighbour.
        for (f, proto, icmp, errors) in [
            (V4, PROTO_ICMP, "icmp", &[3, 11, 12][..]),
            (V6, PROTO_ICMPV6, "icmpv6", &[1, 2, 3, 4][..]),
        ] {
            let r = vec![
                f.is(),
                eq(ct("state"), s("related")),
                eq(meta(MetaKey::L4proto), n(u32::from(proto))),
                ne(
                    payload(icmp, "type"),
                    anon(errors.iter().copied().map(n).collect()),
                ),
            ];
            self.decide(c, r, Reason::DenyNoFlow, true, Side::Either);
        }
        for f in [V4, V6] {
            let c = &format!("admitted{}", f.v);
            self.rule("flow", vec![f.is(), jump(c)]);
            // Bypass class: conntrack keys a flow by its addresses, and an address no
            // inventory entry names (one a device known by its MAC alone owns by first use,
            // or takes by answering at a flow end that named no device) may pass from one
            // such device to another. Taking the shortcut, the new holder's packets would go
            // on as the first's flow, its own policy never asked, its isolation never
            // cutting it (the XDP program names the device at each end of its flow entry and
            // judges a packet from another, `sent_elsewhere`). Such a device's packet at
            // such an end takes the shortcut only on a flow it passed on itself, at the same
            // end (`macflow4`/`6` as initiator, `macanswer4`/`6` as responder, recorded
            // where the judge chains pass it); else it is judged, for it. Found positively,
            // then refused the shortcut by a rule that reads no transport header: a lookup
            // whose key cannot be read (a header too short for ports) matches neither way.
            let ok = format!("admitted_ok{}", f.v);
            for (dir, set) in DIRECTIONS.into_iter().zip(MACFLOW) {
                let mut found = mac_only_end(f, dir);
                found.extend(ported_flow());
                found.extend([in_set(f.sent_by(), &f.n(set)), goto(&ok)]);
                self.rule(c, found);
            }
            for dir in DIRECTIONS {
                let mut other = mac_only_end(f, dir);
                other.push(ret());
                self.rule(c, other);
            }
            self.rule(c, vec![goto(&ok)]);
            let c = &ok;
            let admitted = vec![
                f.is(),
                ct_confirmed(true),
                // DCCP's sessions are not conntrack's (below), nor the errors about them.
                ne(ct("protocol"), n(u32::from(PROTO_DCCP))),
                eq(ct("mark"), n(gen)),
                not_in_set(f.ct_saddr(), &f.n("quar")),
                not_in_set(f.ct_daddr(), &f.n("quar")),
            ];
            // From a device port, the frame's MAC as well: a quarantined device known by
            // its MAC alone has no address in the quarantine sets, and its flows would pass
            // on (the XDP program finds it by the epoch its flow entries name). Judged
            // again, its packets meet its quarantine (`judge4`/`6`, by MAC).
            let mut from_device = admitted.clone();
            from_device.push(not_in_set(ether_saddr(), &f.n(QUAR_MAC)));
            // Bypass class: the device at a flow's link-local end is the one its frames are
            // sent to (by MAC, the frame stage's owner mark), but conntrack keys the flow by
            // addresses and ports: a neighbour could open it at one device's MAC and send
            // the same on to another's, or, owning a silent device's link-local address by
            // first use, open a flow from it and send the replies to that device's MAC.
            // What a device port sends to a link-local address is judged every time, for
            // the device it is sent to (the XDP program judges it again when that is not the
            // device the flow names there, `sent_elsewhere`).
            from_device.extend(device_port_to(f, false));
            let mut from_upstream = admitted;
            from_upstream.push(not_in_set(iifname(), DEV_IFACES));
            for (r, side) in [
                (from_device, Side::Devices),
                (from_upstream, Side::Upstream),
            ] {
                // To a quarantined device known by its MAC alone, at an address it owns
                // (the frame stage's owner mark): judged again, as its own packets are.
                let mut plain = r.clone();
                plain.push(eq(and(mark(), n(OWNER_MARK)), n(0)));
                self.decide(c, plain, Reason::AllowFlow, false, side);
                let mut owned = r;
                owned.push(ne(and(mark(), n(OWNER_MARK)), n(0)));
                for q in [QUAR_ISOLATE, QUAR_RESTRICT] {
                    owned.push(not_in_set(owner_index(), q));
                }
                self.decide(c, owned, Reason::AllowFlow, false, side);
            }
        }
        // Bypass class: a packet conntrack does not track (a `notrack` rule elsewhere in
        // the ruleset, a raw-table exemption for bulk traffic, say) has no original tuple.
        // Every rule of the judge chains reads it, so none would match and the packet would
        // reach this chain's final accept unjudged. Without conntrack there is no flow to
        // judge it by: dropped and reported as a packet of no flow (not evidence). XDP keeps
        // its own flow table and judges such packets as any other.
        let r = vec![eq(ct("state"), s("untracked"))];
        self.decide(c, r, Reason::DenyNoFlow, true, Side::Either);
        // Segments with none of SYN, ACK and RST (FIN, NULL and Xmas scans) are no live
        // stack's: conntrack calls them invalid, the XDP program a packet of no flow, and
        // both report them. Conntrack's other refusals (out of window and the like) are
        // dropped unreported: the XDP program has no such judgement.
        let r = vec![
            eq(ct("state"), s("invalid")),
            eq(meta(MetaKey::L4proto), n(u32::from(PROTO_TCP))),
            eq(and(payload("tcp", "flags"), n(0x16)), n(0)),
        ];
        self.decide(c, r, Reason::DenyNoFlow, true, Side::Either);
        let r = vec![eq(ct("state"), s("invalid"))];
        self.decide(c, r, Reason::DenyNoFlow, false, Side::Either);
        // A new conntrack entry (not confirmed: a confirmed one is a flow judged again) from
        // a packet that cannot open a flow (`initiating`): reported, as the XDP program
        // reports a packet of no flow (an ACK scan shows in the feed; it is not evidence,
        // see `deviation::is_evidence`).
        let r = vec![
            ct_confirmed(false),
            eq(meta(MetaKey::L4proto), n(u32::from(PROTO_TCP))),
            ne(and(payload("tcp", "flags"), n(0x12)), n(0x02)),
        ];
        self.decide(c, r, Reason::DenyNoFlow, true, Side::Either);
        let r = vec![
            ct_confirmed(false),
            V4.is(),
            eq(meta(MetaKey::L4proto), n(u32::from(PROTO_ICMP))),
            ne(payload("icmp", "type"), n(8)),
        ];
        self.decide(c, r, Reason::DenyNoFlow, true, Side::Either);
        let r = vec![
            ct_confirmed(false),
            V6.is(),
            eq(meta(MetaKey::L4proto), n(u32::from(PROTO_ICMPV6))),
            ne(payload("icmpv6", "type"), n(128)),
        ];
        self.decide(c, r, Reason::DenyNoFlow, true, Side::Either);
        // Bypass class: no flow opens from a device port to a link-local address of no
        // device (the frame stage's mark: sent to no device's MAC, not the gateway's own
        // address). Opened at such a MAC, judged by the sender's policy alone, its packets
        // sent on to a device's MAC would pass as the flow's. Nor do the initiator's packets
        // of one judged again go on there (opened at a device's MAC that accepts it, then
        // sent on to an unmanaged host's: the sender's policy alone), refused as a flow
        // judged again, as on XDP. The original direction only (a new entry's packets are):
        // a device's reply to an upstream host's IPv4 link-local address goes to the
        // gateway's MAC, no device's. Before the sender's policy (the XDP program's
        // `judge_flow` asks a new flow's after it: a quarantined sender's refusal is
        // reported as this one here; a flow judged again's before it, as here).
        let nobody = vec![
            in_set(iifname(), DEV_IFACES),
            eq(and(mark(), n(LINK_LOCAL_NOBODY)), n(LINK_LOCAL_NOBODY)),
            eq(ct("direction"), s("original")),
        ];
        self.refuse_new_or_again(c, nobody, Reason::DenyNoRule, Side::Devices);
        // Nor do the responder's go on to another MAC than the initiator's (XDP: the device
        // a flow names at a link-local end is never renamed). nftables keeps no device per
        // flow end: the initiator claimed its IPv6 link-local address opening the flow, and
        // the frame stage marks a frame sent to another MAC than the claim's
        // (`LINK_LOCAL_ELSEWHERE`). Passed on the policies of what it reaches, it would go
        // on to an unmanaged host's MAC, or a third device's, as the flow's. Not an ICMP
        // error (judged as XDP's `judge_related` does).
        let elsewhere = vec![
            in_set(iifname(), DEV_IFACES),
            eq(
                and(mark(), n(LINK_LOCAL_ELSEWHERE)),
                n(LINK_LOCAL_ELSEWHERE),
            ),
            eq(ct("direction"), s("reply")),
            ne(ct("state"), s("related")),
        ];
        self.refuse_new_or_again(c, elsewhere, Reason::DenyNoRule, Side::Devices);
        // Bypass class, DCCP: this kernel's conntrack tracks it by its addresses alone (the
        // kernel's DCCP tracker is gone), so a peer's own session to a device, on other
        // ports, would be a reply of the device's session. Each session's ports are kept in
        // `dccp4`/`6` (the XDP program keys its flows by them): a reply on others is a
        // packet of no flow. A DCCP packet is judged by the policy every time (it takes no
        // admitted-flow shortcut above); the ports of one that passes are recorded
        // (`record_dccp`: after the judge chains here, in the audit and learn verdicts, which
        // accept inside them), so refused packets cannot fill the sets. An ICMP error about
        // a DCCP session cannot be told apart by its quoted ports here: refused.
        let r = vec![
            eq(ct("state"), s("related")),
            eq(ct("protocol"), n(u32::from(PROTO_DCCP))),
        ];
        self.decide(c, r, Reason::DenyNoFlow, true, Side::Either);
        for f in [V4, V6] {
            let dccp = format!("dccp_flow{}", f.v);
            let r = vec![
                f.is(),
                eq(meta(MetaKey::L4proto), n(u32::from(PROTO_DCCP))),
                jump(&dccp),
            ];
            self.rule(c, r);
            let r = vec![
                eq(ct("direction"), s("reply")),
                not_in_set(f.dccp_session(true), &f.n(DCCP)),
            ];
            self.decide(&dccp, r, Reason::DenyNoFlow, true, Side::Either);
            // Too short to hold its ports (no rule above could read them): the XDP
            // program's parser refuses it so.
            let ports = range(n(0), n(65535));
            self.rule(&dccp, vec![eq(payload("th", "dport"), ports), ret()]);
            self.decide(&dccp, vec![], Reason::DenyMalformed, true, Side::Either);
        }
        self.rule(c, vec![V4.is(), jump("judge4")]);
        self.rule(c, vec![V6.is(), jump("judge6")]);
        // A new flow of a learn-mode device passes with a rule: reported as a learn record
        // all the same (a flow without a rule is logged as `learn` by its ports chain).
        // The initiator's record is its own frame's; the responder's is the sender's, as
        // the XDP program's for a flow its device did not open.
        for f in [V4, V6] {
            for (end, payer) in [
                (f.ct_saddr(), Payer::Sender(Side::Either)),
                (f.ct_daddr(), Payer::Source),
            ] {
                let r = vec![f.is(), ct_confirmed(false), in_set(end, &f.n(LEARN_ADDR))];
                let prefix = format!("{LEARN_PREFIX}{} ", Reason::AllowRule.name());
                self.log(c, r, &prefix, payer);
            }
        }
        self.record_dccp(c, &[]);
        // A packet of a DCCP session conntrack had confirmed: its flow's, as on XDP.
        let r = vec![
            ct_confirmed(true),
            eq(meta(MetaKey::L4proto), n(u32::from(PROTO_DCCP))),
            set_ct_mark(n(gen)),
        ];
        self.decide(c, r, Reason::AllowFlow, false, Side::Either);
        // A device port's packet to a link-local address, judged above though conntrack
        // had confirmed its flow: the flow's, as on XDP.
        for f in [V4, V6] {
            let mut r = vec![f.is(), ct_confirmed(true)];
            r.extend(device_port_to(f, true));
            r.push(set_ct_mark(n(gen)));
            self.decide(c, r, Reason::AllowFlow, false, Side::Devices);
        }
        record_mac_flow(self, c, &[]);
        let r = vec![set_ct_mark(n(gen))];
        self.decide(c, r, Reason::AllowRule, false, Side::Either);
    }

    /// `judge_policy` over the flow's original tuple, initiator's end first; then
    /// `judge_end` (the policy by quarantine state) and stage 1, the peer's class.
    fn judge(&mut self, quarantine_policy: u32) {
        let tag = owner_tag(&self.opt.table);
        for f in [V4, V6] {
            let c = format!("judge{}", f.v);
            // A packet to an address a device known by its MAC alone owns by first use
            // names that device in the frame stage's owner mark (the XDP program's
            // `owned_device`). Opening a flow, the owner is its responder, asked after the
            // initiator, whose chains overwrite the packet mark: kept meanwhile in the
            // conntrack mark, whose admitted flows' stamps never have the owner bit
            // (`flow_stamp`); cleared when there is no owner of this table, so a stale one
            // is not read. A packet passing stamps its flow again (`AllowRule`); one
            // refused leaves it unadmitted, as it was. (The conntrack mark is the flow's,
            // not the packet's: a packet of the same flow accepted meanwhile on another CPU
            // may stamp it between the keeping and the reading, or keep its own owner there
            // (from upstream and from a device port an address's owner may differ), and the
            // responder is then not asked for this packet, or the other's is asked in its
            // place. A known race: docs/reliability.md, *Open findings*. Not for what a
            // device port sends to a link-local address, whose device is read from each
            // frame: `link_local_device`.)
            let to_unbound = || {
                vec![
                    eq(ct("direction"), s("original")),
                    not_in_set(f.ct_daddr(), &f.n("dev")),
                ]
            };
            // Bypass class: no owner is kept or read for a link-local address from a device
            // port, whose device is the one each frame is sent to (`link_local_device`):
            // two packets of one flow sent at once to two MACs, or one from upstream, could
            // each have the other's owner read, or cleared, in place of its own.
            for whence in owner_kept_for(f) {
                let mut r = to_unbound();
                r.extend(whence.clone());
                r.push(eq(and(mark(), n(OWNER_MARK | OWNER_TABLE)), n(tag)));
                r.push(set_ct_mark(mark()));
                self.rule(&c, r);
                let mut r = to_unbound();
                r.extend(whence);
                r.push(ne(and(mark(), n(OWNER_MARK | OWNER_TABLE)), n(tag)));
                r.push(ne(and(ct("mark"), n(OWNER_MARK)), n(0)));
                r.push(set_ct_mark(n(0)));
                self.rule(&c, r);
            }
            self.rule(
                &c,
                vec![
                    set_mark(map_lookup(f.ct_saddr(), &f.n("devidx"))),
                    jump(&format!("end_init{}", f.v)),
                ],
            );
            // A device known by its MAC only (no address of this family).
            self.rule(
                &c,
                vec![
                    eq(ct("direction"), s("original")),
                    not_in_set(f.ct_saddr(), &f.n("dev")),
                    in_set(iifname(), DEV_IFACES),
                    set_mark(map_lookup(ether_saddr(), DEVIDX_MAC)),
                    jump(&format!("end_init{}", f.v)),
                ],
            );
            // A reply to an owned address: the owner is the flow's initiator, judged first
            // (the packet mark is intact).
            self.rule(
                &c,
                vec![
                    eq(ct("direction"), s("reply")),
                    not_in_set(f.ct_saddr(), &f.n("dev")),
                    eq(and(mark(), n(OWNER_MARK | OWNER_TABLE)), n(tag)),
                    set_mark(owner_index()),
                    jump(&format!("end_init{}", f.v)),
                ],
            );
            self.rule(
                &c,
                vec![
                    set_mark(map_lookup(f.ct_daddr(), &f.n("devidx"))),
                    jump(&format!("end_resp{}", f.v)),
                ],
            );
            // An owner kept above: the flow's responder.
            for whence in owner_kept_for(f) {
                let mut r = to_unbound();
                r.extend(whence);
                r.extend(kept_owner(tag));
                r.push(jump(&format!("end_resp{}", f.v)));
                self.rule(&c, r);
            }
            let mut r = link_local_device(f);
            r.push(jump(&format!("end_resp{}", f.v)));
            self.rule(&c, r);
            // A device known by its MAC only, answering a flow another end opened (to an
            // address no inventory entry names, so no rule above found it): its answers are
            // its own packets, judged by its policy as the flow's responder, as the XDP
            // program judges them (the source's device, by its MAC).
            self.rule(
                &c,
                vec![
                    eq(ct("direction"), s("reply")),
                    not_in_set(f.ct_daddr(), &f.n("dev")),
                    in_set(iifname(), DEV_IFACES),
                    set_mark(map_lookup(ether_saddr(), DEVIDX_MAC)),
                    jump(&format!("end_resp{}", f.v)),
                ],
            );
            // `judge_end`: the policy by quarantine state, then the lookup.
            for d in ["init", "resp"] {
                let c = format!("end_{d}{}", f.v);
                let class = |v: &str| format!("class_{d}_{v}{}", f.v);
                self.rule(
                    &c,
                    vec![
                        in_set(mark(), QUAR_ISOLATE),
                        set_mark(n(quarantine_policy)),
                        goto(&class("quarantine")),
                    ],
                );
                self.rule(
                    &c,
                    vec![
                        in_set(mark(), QUAR_RESTRICT),
                        set_mark(map_lookup(mark(), DEV_RESTRICT)),
                        goto(&class("quarantine")),
                    ],
                );
                for (set, v) in [(AUDIT, "audit"), (LEARN, "learn")] {
                    self.rule(
                        &c,
                        vec![
                            in_set(mark(), set),
                            set_mark(map_lookup(mark(), DEV_POLICY)),
                            goto(&class(v)),
                        ],
                    );
                }
                self.rule(
                    &c,
                    vec![
                        set_mark(map_lookup(mark(), DEV_POLICY)),
                        goto(&class("enforce")),
                    ],
                );
                // Stage 1: the peer's class under this policy. The peer is the other end.
                let peer = if d == "init" {
                    f.ct_daddr()
                } else {
                    f.ct_saddr()
                };
                for (v, reason) in [
                    ("enforce", Reason::DenyNoRule),
                    ("quarantine", Reason::DenyQuarantine),
                    ("audit", Reason::Audit),
                    ("learn", Reason::Learn),
                ] {
                    let cc = class(v);
                    self.rule(
                        &cc,
                        vec![
                            set_mark(map_lookup(
                                concat(vec![mark(), peer.clone()]),
                                &f.n(&format!("peer_{d}_")),
                            )),
                            goto(&format!("ports_{d}_{v}")),
                        ],
                    );
                    self.end_refused(&cc, d, v, reason);
                }
            }
        }
    }

    /// The end of a stage-1 or stage-2 chain of end `d` under verdict `v`: the policy has no
    /// rule. An initiator whose mode only reports that goes on to the responder's policy
    /// (`soft_…`); any other refusal is the verdict.
    fn end_refused(&mut self, chain: &str, d: &str, v: &str, reason: Reason) {
        if d == "init" && reason.passes() {
            self.rule(chain, vec![goto(&format!("soft_{v}"))]);
        } else {
            self.decide_end(chain, Vec::new(), reason, d == "resp");
        }
    }

    /// The XDP program's `Initiator::softened`: a refusal the initiator's mode (audit,
    /// learn) only reports is the verdict unless the responder's policy refuses the flow
    /// outright. Bypass class: taken as the verdict at once, a device in either mode could
    /// open flows on devices that enforce and accept nothing of the kind.
    ///
    /// `soft_audit`/`soft_learn` look the responder up (none: no rule matches) and ask
    /// `soft_resp4`/`6`, which asks its policy (`end_resp`) unless its own mode only reports
    /// a refusal too and it is not quarantined: then the initiator's deviation is the one
    /// reported. A responder's refusal drops there; its acceptance returns here, to the
    /// initiator's softened verdict.
    fn soft(&mut self) {
        for (v, reason) in [("audit", Reason::Audit), ("learn", Reason::Learn)] {
            let c = format!("soft_{v}");
            for f in [V4, V6] {
                self.rule(
                    &c,
                    vec![
                        f.is(),
                        set_mark(map_lookup(f.ct_daddr(), &f.n("devidx"))),
                        jump(&format!("soft_resp{}", f.v)),
                    ],
                );
                // An owner by first use (kept by `judge4`/`6`).
                for whence in owner_kept_for(f) {
                    let mut r = vec![
                        f.is(),
                        eq(ct("direction"), s("original")),
                        not_in_set(f.ct_daddr(), &f.n("dev")),
                    ];
                    r.extend(whence);
                    r.extend(kept_owner(owner_tag(&self.opt.table)));
                    r.push(jump(&format!("soft_resp{}", f.v)));
                    self.rule(&c, r);
                }
                let mut r = vec![f.is()];
                r.extend(link_local_device(f));
                r.push(jump(&format!("soft_resp{}", f.v)));
                self.rule(&c, r);
                // A device known by its MAC alone answering (as `judge4`/`6`'s last rule):
                // without it, an audited initiator's softened refusal was the verdict, and
                // such a device, quarantined, went on sending on its flows with it.
                self.rule(
                    &c,
                    vec![
                        f.is(),
                        eq(ct("direction"), s("reply")),
                        not_in_set(f.ct_daddr(), &f.n("dev")),
                        in_set(iifname(), DEV_IFACES),
                        set_mark(map_lookup(ether_saddr(), DEVIDX_MAC)),
                        jump(&format!("soft_resp{}", f.v)),
                    ],
                );
            }
            self.decide_end(&c, Vec::new(), reason, false);
        }
        for f in [V4, V6] {
            let c = format!("soft_resp{}", f.v);
            let end = format!("end_resp{}", f.v);
            for set in [QUAR_ISOLATE, QUAR_RESTRICT] {
                self.rule(&c, vec![in_set(mark(), set), goto(&end)]);
            }
            for set in [AUDIT, LEARN] {
                self.rule(&c, vec![in_set(mark(), set), ret()]);
            }
            self.rule(&c, vec![goto(&end)]);
        }
    }

    /// Stage 2: protocol and responder port under the class.
    fn ports(&mut self) {
        for d in ["init", "resp"] {
            self.ports_of(d);
        }
    }

    /// Stage 2 for one end (`init` or `resp`).
    fn ports_of(&mut self, d: &str) {
        for (v, reason) in [
            ("enforce", Reason::DenyNoRule),
            ("quarantine", Reason::DenyQuarantine),
            ("audit", Reason::Audit),
            ("learn", Reason::Learn),
        ] {
            let c = format!("ports_{d}_{v}");
            // The flow's protocol and responder port, both from conntrack's original tuple:
            // for a packet of the flow they are the packet's own, for an ICMP error related
            // to the flow they are the quoted session's (as the XDP program's
            // `judge_related`). So an error about a session still allowed passes when its
            // flow is judged again after a reload, where the error's own protocol (ICMP)
            // would be refused. nft types `ct original proto-dst` by the packet's transport
            // protocol (any known one will do): hence the `meta l4proto` match, which lets
            // related ICMP errors through to the lookup.
            let proto = || ct_orig("protocol");
            for p in [PROTO_TCP, PROTO_UDP] {
                let carriers = [p, PROTO_ICMP, PROTO_ICMPV6].map(|v| n(u32::from(v)));
                self.rule(
                    &c,
                    vec![
                        eq(meta(MetaKey::L4proto), anon(carriers.to_vec())),
                        eq(proto(), n(u32::from(p))),
                        in_set(concat(vec![mark(), proto(), ct_orig("proto-dst")]), PORTS),
                        ret(),
                    ],
                );
            }
            self.rule(
                &c,
                vec![
                    ne(
                        proto(),
                        anon(vec![n(u32::from(PROTO_TCP)), n(u32::from(PROTO_UDP))]),
                    ),
                    in_set(concat(vec![mark(), proto()]), PORTS0),
                    ret(),
                ],
            );
            self.end_refused(&c, d, v, reason);
        }
    }
}
