//! Accumulates the table's objects: counters, sets and maps, chains and rules, and the
//! verdict rules that count, log and decide (`decide`).

use super::super::expr::*;
use super::names::*;
use super::{
    counter_name, RenderOptions, COUNTERS, EVENT_METER, EVENT_METERS, EVENT_METER_SIZE,
    EVENT_METER_TIMEOUT_S, EVENT_METER_UNKNOWN, LOG_PREFIX, SIDE_NAMES, UNKNOWN_BUDGET,
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

/// Accumulates the table's objects.
pub(super) struct Builder<'o> {
    pub(super) opt: &'o RenderOptions,
    pub(super) objects: Vec<NfListObject<'static>>,
}

impl<'o> Builder<'o> {
    pub(super) fn new(opt: &'o RenderOptions) -> Self {
        let objects = vec![NfListObject::Table(Table {
            family: opt.family.nf(),
            name: opt.table.clone().into(),
            handle: None,
        })];
        Builder { opt, objects }
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
                rate: Some(EVENT_RATE_PER_S * UNKNOWN_EVENTS_SHARE),
                per: Some(NfTimeUnit::Second),
                burst: Some(EVENT_BURST * UNKNOWN_EVENTS_SHARE),
                unit: Some(LimitUnit::Packets),
                inv: None,
            }));
        }
        // Filled by the packet path (`update @event_rate { … }`), one bucket per source.
        for meter in EVENT_METERS
            .into_iter()
            .filter(|_| self.opt.log_group.is_some())
        {
            self.objects.push(NfListObject::Set(Box::new(Set {
                family: self.opt.family.nf(),
                table: self.opt.table.clone().into(),
                name: meter.into(),
                handle: None,
                set_type: SetTypeValue::Single(SetType::EtherAddr),
                policy: None,
                flags: Some(HashSet::from([SetFlag::Timeout])),
                elem: None,
                timeout: Some(EVENT_METER_TIMEOUT_S),
                gc_interval: None,
                size: Some(EVENT_METER_SIZE),
                comment: None,
            })));
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
        self.objects.push(NfListObject::Set(Box::new(Set {
            family: self.opt.family.nf(),
            table: self.opt.table.clone().into(),
            name: name.to_string().into(),
            handle: None,
            set_type: Self::ty(t),
            policy: None,
            flags: Self::flags(interval),
            elem: (!elems.is_empty()).then(|| elems.into()),
            timeout: None,
            gc_interval: None,
            size: None,
            comment: None,
        })));
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
            self.log(chain, matches.clone(), &prefix);
        }
        let verdict = if r.passes() { accept() } else { drop_() };
        let mut v = matches;
        // A flow passed for audit or learn is admitted like an allowed one (the XDP
        // program's flow entry): its later packets, replies included, pass as `allow_flow`
        // instead of being judged and reported again, each as a flow of its own.
        if matches!(r, Reason::Audit | Reason::Learn) {
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

    /// `matches`, then the packet is sent to the nflog group with `prefix`, at most
    /// [`EVENT_RATE_PER_S`] per second (burst [`EVENT_BURST`]) per source MAC: each source
    /// has its own bucket, so a flooding device cannot use up the events of the others (the
    /// XDP program's per-source token bucket). A device's MAC has its bucket in
    /// [`EVENT_METER`]; any other source's (an unknown MAC, made up or not, the upstream
    /// router's) is in [`EVENT_METER_UNKNOWN`], and then spends from the budget all such
    /// sources share, the table's named limit [`UNKNOWN_BUDGET`] (the XDP program's
    /// `LZ_EV_UNKNOWN`): frames each with a made-up source MAC find a fresh bucket each,
    /// and would otherwise fill the devices' meter and the event queue, and drown the
    /// events that quarantine a device. Two rules, one per kind of source. No-op without
    /// an nflog group.
    pub(super) fn log(&mut self, chain: &str, matches: Vec<Stmt>, prefix: &str) {
        let Some(g) = self.opt.log_group else {
            return;
        };
        for device in [true, false] {
            let mut m = matches.clone();
            let (source, meter) = if device {
                (in_set(payload("ether", "saddr"), DEVMAC), EVENT_METER)
            } else {
                (
                    not_in_set(payload("ether", "saddr"), DEVMAC),
                    EVENT_METER_UNKNOWN,
                )
            };
            m.push(source);
            // The per-source limit, and for the unknown meter the shared budget after it,
            // are added to the JSON by `apply::to_json` (the crate has no field for either).
            m.push(update_set(payload("ether", "saddr"), meter));
            m.push(log_group(prefix, g));
            self.rule(chain, m);
        }
    }
}
