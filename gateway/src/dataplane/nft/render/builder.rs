//! Accumulates the table's objects: counters, sets and maps, chains and rules, and the
//! verdict rules that count, log and decide (`decide`).

use super::super::expr::*;
use super::names::*;
use super::{
    counter_name, EventBudget, RenderOptions, COUNTERS, EVENT_METER, EVENT_METERS,
    EVENT_METER_SIZE, EVENT_METER_UNKNOWN, LOG_PREFIX, SIDE_NAMES, UNKNOWN_BUDGET, V4, V6,
};
use lazaret_abi::*;
use nftables::expr::MetaKey;
use nftables::schema::{
    Chain, Counter, Limit, LimitUnit, Map, NfListObject, Rule, Set, SetFlag, SetType, SetTypeValue,
    Table,
};
use nftables::types::NfTimeUnit;
use std::collections::HashSet;

/// The side of the packets a chain decides on.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Devices,
    Upstream,
    /// The chains both sides share (`flow` and after).
    Either,
}

/// Whose event budget a logged frame spends (see `Builder::log`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Payer {
    /// The device that sent it: the frame passed identity as that device
    /// ([`Reason::names_its_sender`]) on the devices' side, or, in the chains both sides
    /// share, if it came in there.
    Sender(Side),
    /// Its source MAC's bucket, then the budget all such sources share: unknown sources,
    /// upstream's frames, and those that only claim a device's identity.
    Source,
}

/// Accumulates the table's objects.
pub(super) struct Builder<'o> {
    pub(super) opt: &'o RenderOptions,
    pub(super) objects: Vec<NfListObject<'static>>,
    /// The site's event budgets (see `log`).
    budget: EventBudget,
}

impl<'o> Builder<'o> {
    pub(super) fn new(opt: &'o RenderOptions, budget: EventBudget) -> Self {
        let objects = vec![NfListObject::Table(Table {
            family: opt.family.nf(),
            name: opt.table.clone().into(),
            handle: None,
        })];
        Builder {
            opt,
            objects,
            budget,
        }
    }

    pub(super) fn counters(&mut self) {
        for r in COUNTERS {
            for (side, _) in SIDE_NAMES {
                self.objects.push(NfListObject::Counter(Counter {
                    family: self.opt.family.nf(),
                    table: self.opt.table.clone().into(),
                    name: counter_name(*r, side).into(),
                    handle: None,
                    packets: None,
                    bytes: None,
                }));
            }
        }
        if self.opt.log_group.is_some() {
            self.objects.push(NfListObject::Limit(Limit {
                family: self.opt.family.nf(),
                table: self.opt.table.clone().into(),
                name: UNKNOWN_BUDGET.into(),
                handle: None,
                rate: Some(self.budget.shared().rate),
                per: Some(NfTimeUnit::Second),
                burst: Some(self.budget.shared().burst),
                unit: Some(LimitUnit::Packets),
                inv: None,
            }));
        }
        // Filled by the packet path (`update @event_rate { … }`), one bucket per source.
        for (meter, key) in EVENT_METERS
            .into_iter()
            .filter(|_| self.opt.log_group.is_some())
        {
            let key = match key {
                "ipv4_addr" => SetType::Ipv4Addr,
                "ipv6_addr" => SetType::Ipv6Addr,
                _ => SetType::EtherAddr,
            };
            let timeout = self.budget.meter_timeout_s();
            self.dynamic_set(meter, vec![key], timeout, EVENT_METER_SIZE);
        }
    }

    /// A set the packet path fills (`update`), each element expiring `timeout_s` after its
    /// last update.
    pub(super) fn dynamic_set(&mut self, name: &str, t: Vec<SetType>, timeout_s: u32, size: u32) {
        let set = Set {
            flags: Some(HashSet::from([SetFlag::Timeout])),
            timeout: Some(timeout_s),
            size: Some(size),
            ..self.empty_set(name, t)
        };
        self.objects.push(NfListObject::Set(Box::new(set)));
    }

    /// A set of this table: its name and type, nothing else.
    fn empty_set(&self, name: &str, t: Vec<SetType>) -> Set<'static> {
        Set {
            family: self.opt.family.nf(),
            table: self.opt.table.clone().into(),
            name: name.to_string().into(),
            handle: None,
            set_type: Self::ty(t),
            policy: None,
            flags: None,
            elem: None,
            timeout: None,
            gc_interval: None,
            size: None,
            comment: None,
        }
    }

    pub(super) fn flags(interval: bool) -> Option<HashSet<SetFlag>> {
        interval.then(|| HashSet::from([SetFlag::Interval]))
    }

    pub(super) fn ty(t: Vec<SetType>) -> SetTypeValue<'static> {
        if t.len() == 1 {
            SetTypeValue::Single(t[0])
        } else {
            SetTypeValue::Concatenated(t.into())
        }
    }

    pub(super) fn set(&mut self, name: &str, t: Vec<SetType>, interval: bool, elems: Vec<Expr>) {
        let set = Set {
            flags: Self::flags(interval),
            elem: (!elems.is_empty()).then(|| elems.into()),
            ..self.empty_set(name, t)
        };
        self.objects.push(NfListObject::Set(Box::new(set)));
    }

    /// A map to `mark` values.
    pub(super) fn map(&mut self, name: &str, t: Vec<SetType>, interval: bool, elems: Vec<Expr>) {
        self.objects.push(NfListObject::Map(Box::new(Map {
            family: self.opt.family.nf(),
            table: self.opt.table.clone().into(),
            name: name.to_string().into(),
            handle: None,
            set_type: Self::ty(t),
            map: SetTypeValue::Single(SetType::Mark),
            policy: None,
            flags: Self::flags(interval),
            elem: (!elems.is_empty()).then(|| elems.into()),
            timeout: None,
            gc_interval: None,
            size: None,
            comment: None,
        })));
    }

    pub(super) fn chain(&mut self, name: &str) {
        self.objects.push(NfListObject::Chain(Chain {
            family: self.opt.family.nf(),
            table: self.opt.table.clone().into(),
            name: name.to_string().into(),
            ..Chain::default()
        }));
    }

    pub(super) fn rule(&mut self, chain: &str, expr: Vec<Stmt>) {
        self.objects.push(NfListObject::Rule(Rule {
            family: self.opt.family.nf(),
            table: self.opt.table.clone().into(),
            chain: chain.to_string().into(),
            expr: expr.into(),
            handle: None,
            index: None,
            comment: None,
        }));
    }

    /// A rule deciding `r` on `matches`: `counter name R_SIDE` and the verdict. With `log`
    /// and an nflog group, a rule before it logs the packet under the same matches
    /// (a separate rule: a rate limit that stops matching must not stop the verdict).
    /// `side` is the side of the chain's packets, or `None` in the chains both sides share:
    /// then one rule per side, told apart by the ingress interface.
    pub(super) fn decide(
        &mut self,
        chain: &str,
        matches: Vec<Stmt>,
        r: Reason,
        log: bool,
        side: Side,
    ) {
        if log {
            let prefix = format!("{LOG_PREFIX}{} ", r.name());
            self.log(chain, matches.clone(), &prefix, payer_of(r, side));
        }
        self.verdict(chain, matches, r, side);
    }

    /// A verdict of an end's policy (`judge_end`), logged, in the chains both sides share.
    /// On a new flow, the initiator's is its own frame's; the `responder`'s is reported as
    /// the responder's (`lazaret resp:<reason> `, [`super::RESPONDER_PREFIX`]: the XDP
    /// program's `DIR_PEER_INIT`) and spends the sender's source budget, never the
    /// responder's own, as the responder did not send it. On a flow judged again (admitted
    /// under another generation, by a reload or a quarantine: its conntrack entry is
    /// confirmed), a refusal is reported as such (`lazaret rejudge:<reason> `,
    /// [`super::REJUDGED_PREFIX`], the XDP program's `EVENT_F_REJUDGED`) from the source's
    /// budget: the packet may be either end's, and the policy moved, not the device. A flow
    /// that passes again (audit, learn) is not reported again, as on XDP.
    pub(super) fn decide_end(
        &mut self,
        chain: &str,
        matches: Vec<Stmt>,
        r: Reason,
        responder: bool,
    ) {
        let (prefix, payer) = if responder {
            let prefix = format!("{}{} ", super::RESPONDER_PREFIX, r.name());
            (prefix, Payer::Source)
        } else {
            (
                format!("{LOG_PREFIX}{} ", r.name()),
                payer_of(r, Side::Either),
            )
        };
        self.decide_new_or_again(chain, matches, r, Side::Either, (&prefix, payer));
    }

    /// A refusal of new flows and of flows judged again alike (`matches` says neither),
    /// each reported as `decide` and `decide_end` report theirs.
    pub(super) fn refuse_new_or_again(
        &mut self,
        chain: &str,
        matches: Vec<Stmt>,
        r: Reason,
        side: Side,
    ) {
        let prefix = format!("{LOG_PREFIX}{} ", r.name());
        self.decide_new_or_again(chain, matches, r, side, (&prefix, payer_of(r, side)));
    }

    /// The verdict `r` on `matches`, a new flow's reported with `new` (prefix, payer), a
    /// refusal of a flow judged again (its conntrack entry confirmed) as such.
    fn decide_new_or_again(
        &mut self,
        chain: &str,
        matches: Vec<Stmt>,
        r: Reason,
        side: Side,
        (prefix, payer): (&str, Payer),
    ) {
        let mut new = matches.clone();
        new.push(ct_confirmed(false));
        self.log(chain, new, prefix, payer);
        if !r.passes() {
            self.log_again(chain, matches.clone(), r);
        }
        self.verdict(chain, matches, r, side);
    }

    /// The report of a refusal of a flow judged again (`lazaret rejudge:<reason> `).
    fn log_again(&mut self, chain: &str, mut matches: Vec<Stmt>, r: Reason) {
        matches.push(ct_confirmed(true));
        let prefix = format!("{}{} ", super::REJUDGED_PREFIX, r.name());
        self.log(chain, matches, &prefix, Payer::Source);
    }

    /// Records the ports of a DCCP session whose packet passes (`matches`: the passing
    /// verdict's own), in `dccp4`/`6` (see `Builder::flow`): from its initiator's packets,
    /// and refreshed by its replies.
    pub(super) fn record_dccp(&mut self, chain: &str, matches: &[Stmt]) {
        for f in [super::V4, super::V6] {
            for (dir, reply) in [("original", false), ("reply", true)] {
                let mut r = matches.to_vec();
                r.extend([
                    f.is(),
                    eq(meta(MetaKey::L4proto), n(u32::from(PROTO_DCCP))),
                    eq(ct("direction"), s(dir)),
                    update_set(f.dccp_session(reply), &f.n(super::names::DCCP)),
                ]);
                self.rule(chain, r);
            }
        }
    }

    /// The counted verdict rule of `decide`.
    fn verdict(&mut self, chain: &str, matches: Vec<Stmt>, r: Reason, side: Side) {
        let verdict = if r.passes() { accept() } else { drop_() };
        let mut v = matches;
        // A flow passed for audit or learn is admitted like an allowed one (the XDP
        // program's flow entry): its later packets, replies included, pass as `allow_flow`
        // instead of being judged and reported again, each as a flow of its own.
        if matches!(r, Reason::Audit | Reason::Learn) {
            self.record_dccp(chain, &v);
            super::chains::record_mac_flow(self, chain, &v);
            v.push(set_ct_mark(n(self.opt.generation)));
        }
        match side {
            Side::Devices | Side::Upstream => {
                let s = if side == Side::Devices {
                    SIDE_DEVICES
                } else {
                    SIDE_UPSTREAM
                };
                v.push(counter(&counter_name(r, s)));
                v.push(verdict);
                self.rule(chain, v);
            }
            Side::Either => {
                let mut d = v.clone();
                d.push(in_set(meta(MetaKey::Iifname), DEV_IFACES));
                d.push(counter(&counter_name(r, SIDE_DEVICES)));
                d.push(verdict.clone());
                self.rule(chain, d);
                v.push(counter(&counter_name(r, SIDE_UPSTREAM)));
                v.push(verdict);
                self.rule(chain, v);
            }
        }
    }

    /// `matches`, then the packet is sent to the nflog group with `prefix`, at most the
    /// site's event rate per second (and burst, [`EventBudget`]) from each budget: a flooding
    /// source cannot use up the events of the others (the XDP program's token buckets).
    /// Whose budget, by `payer`, as the XDP program's `report`:
    /// - a frame a device sent ([`Payer::Sender`]) spends its own: for a device known by
    ///   address alone, by its source address in [`super::EVENT_METER_ADDR`] (identity
    ///   bound that address to it, whatever MAC the frame carries), else by MAC in
    ///   [`EVENT_METER`]. In the chains both sides share, frames from upstream are any
    ///   other source's;
    /// - any other frame ([`Payer::Source`]) spends its source MAC's in
    ///   [`EVENT_METER_UNKNOWN`], and then the budget all such sources share, the table's
    ///   named limit [`UNKNOWN_BUDGET`] (the XDP program's `LZ_EV_UNKNOWN`). Frames each
    ///   with a made-up source MAC find a fresh bucket each, and would otherwise fill a
    ///   meter and the event queue and drown the events that quarantine a device; frames
    ///   claiming a device's identity, or sent to it from upstream, would spend its budget
    ///   and silence its own deviations.
    ///
    /// One rule per case, each with the conditions that keep it apart from the others.
    /// No-op without an nflog group.
    pub(super) fn log(&mut self, chain: &str, matches: Vec<Stmt>, prefix: &str, payer: Payer) {
        let Some(g) = self.opt.log_group else {
            return;
        };
        let log = log_group(prefix, g);
        let mac = || payload("ether", "saddr");
        let iifname = || meta(MetaKey::Iifname);
        let Payer::Sender(side) = payer else {
            self.log_source(chain, matches, log);
            return;
        };
        let mut from_devices = matches.clone();
        if side == Side::Either {
            from_devices.push(in_set(meta(MetaKey::Iifname), DEV_IFACES));
            let mut upstream = matches;
            upstream.push(not_in_set(meta(MetaKey::Iifname), DEV_IFACES));
            self.log_source(chain, upstream, log.clone());
        }
        let bucket = limit(self.budget.rate, self.budget.burst);
        for f in [V4, V6] {
            // Identity admitted the frame by its address alone (`bind_nomac`): the device
            // has no MAC, and its frames may carry any, another device's among them (a
            // device behind a managed router). Its budget is keyed by that address, so
            // neither can spend the other's (the XDP program's budget is the device's own
            // cell).
            let by_addr = || concat(vec![f.saddr(), iifname()]);
            let mut bound = from_devices.clone();
            bound.extend([
                f.is(),
                in_set(by_addr(), &f.n("bind_nomac")),
                update_set(f.saddr(), &f.n("event_rate_addr")),
                bucket.clone(),
                log.clone(),
            ]);
            self.rule(chain, bound);
            let mut by_mac = from_devices.clone();
            by_mac.extend([f.is(), not_in_set(by_addr(), &f.n("bind_nomac"))]);
            // Identity admits no other source without a device MAC; should one come, it
            // is any other source's, not lost.
            let mut other = by_mac.clone();
            other.push(not_in_set(mac(), DEVMAC));
            self.log_source(chain, other, log.clone());
            by_mac.extend([
                in_set(mac(), DEVMAC),
                update_set(mac(), EVENT_METER),
                bucket.clone(),
                log.clone(),
            ]);
            self.rule(chain, by_mac);
        }
    }

    /// The rule logging `matches` within the budgets of a source that is not a device's
    /// own frame (see `log`). The shared budget after the per-source one is added to the
    /// JSON by `apply::to_json` (the crate's limit statement has no form naming one).
    fn log_source(&mut self, chain: &str, mut matches: Vec<Stmt>, log: Stmt) {
        matches.extend([
            update_set(payload("ether", "saddr"), EVENT_METER_UNKNOWN),
            limit(self.budget.rate, self.budget.burst),
            log,
        ]);
        self.rule(chain, matches);
    }
}

/// Whose budget a refusal's report spends (`decide`): a device's own for a frame it sent,
/// by `side`, where the reason spends its own; the source's otherwise.
fn payer_of(r: Reason, side: Side) -> Payer {
    if r.spends_own_budget() && side != Side::Upstream {
        Payer::Sender(side)
    } else {
        Payer::Source
    }
}
