//! Small constructors over the `nftables` crate's JSON schema, so the renderer reads like
//! the ruleset it builds. Pure.

use nftables::expr::CTDir;
use nftables::expr::{
    BinaryOperation, Expression as E, Meta, MetaKey, NamedExpression as N, Payload, PayloadField,
    Range, SetItem, CT,
};
use nftables::stmt::{self, Counter, JumpTarget, Mangle, Match, Operator, Statement as S};

pub(super) type Expr = E<'static>;
pub(super) type Stmt = S<'static>;

pub(super) fn s(v: impl Into<String>) -> Expr {
    E::String(v.into().into())
}

pub(super) fn n(v: u32) -> Expr {
    E::Number(v)
}

pub(super) fn set_ref(name: &str) -> Expr {
    s(format!("@{name}"))
}

pub(super) fn meta(key: MetaKey) -> Expr {
    E::Named(N::Meta(Meta { key }))
}

pub(super) fn payload(protocol: &'static str, field: &'static str) -> Expr {
    E::Named(N::Payload(Payload::PayloadField(PayloadField {
        protocol: protocol.into(),
        field: field.into(),
    })))
}

/// `ct original KEY`; address keys name their family in the key (`ip saddr`), which is how
/// nft 1.0.6 reads and writes them in JSON.
pub(super) fn ct_orig(key: &'static str) -> Expr {
    E::Named(N::CT(CT {
        key: key.into(),
        family: None,
        dir: Some(CTDir::Original),
    }))
}

/// Whether the packet's conntrack entry is confirmed: an earlier packet of its flow was
/// accepted (conntrack confirms an entry as its first packet leaves). `false` for the first
/// packet of a flow, however often a refused one is sent again, and for packets without an
/// entry (invalid, untracked), which no rule with this match then judges.
pub(super) fn ct_confirmed(confirmed: bool) -> Stmt {
    /// `IPS_CONFIRMED` of `enum ip_conntrack_status`.
    const IPS_CONFIRMED: u32 = 1 << 3;
    let status = and(ct("status"), n(IPS_CONFIRMED));
    if confirmed {
        ne(status, n(0))
    } else {
        eq(status, n(0))
    }
}

pub(super) fn ct(key: &'static str) -> Expr {
    E::Named(N::CT(CT {
        key: key.into(),
        family: None,
        dir: None,
    }))
}

pub(super) fn concat(parts: Vec<Expr>) -> Expr {
    E::Named(N::Concat(parts))
}

pub(super) fn range(a: Expr, b: Expr) -> Expr {
    E::Range(Box::new(Range { range: [a, b] }))
}

/// A map lookup: `key map @name`.
pub(super) fn map_lookup(key: Expr, name: &str) -> Expr {
    E::Named(N::Map(Box::new(nftables::expr::Map {
        key,
        data: set_ref(name),
    })))
}

/// An anonymous set `{ a, b, … }`.
pub(super) fn anon(items: Vec<Expr>) -> Expr {
    E::Named(N::Set(items.into_iter().map(SetItem::Element).collect()))
}

pub(super) fn and(a: Expr, b: Expr) -> Expr {
    E::BinaryOperation(Box::new(BinaryOperation::AND(a, b)))
}

pub(super) fn m(left: Expr, op: Operator, right: Expr) -> Stmt {
    S::Match(Match { left, right, op })
}

pub(super) fn eq(left: Expr, right: Expr) -> Stmt {
    m(left, Operator::EQ, right)
}

pub(super) fn ne(left: Expr, right: Expr) -> Stmt {
    m(left, Operator::NEQ, right)
}

/// `left @set` (membership).
pub(super) fn in_set(left: Expr, set: &str) -> Stmt {
    m(left, Operator::IN, set_ref(set))
}

pub(super) fn not_in_set(left: Expr, set: &str) -> Stmt {
    m(left, Operator::NEQ, set_ref(set))
}

pub(super) fn set_mark(value: Expr) -> Stmt {
    S::Mangle(Mangle {
        key: meta(MetaKey::Mark),
        value,
    })
}

pub(super) fn set_ct_mark(value: Expr) -> Stmt {
    S::Mangle(Mangle {
        key: ct("mark"),
        value,
    })
}

pub(super) fn counter(name: &str) -> Stmt {
    S::Counter(Counter::Named(name.to_string().into()))
}

pub(super) fn jump(chain: &str) -> Stmt {
    S::Jump(JumpTarget {
        target: chain.to_string().into(),
    })
}

pub(super) fn goto(chain: &str) -> Stmt {
    S::Goto(JumpTarget {
        target: chain.to_string().into(),
    })
}

pub(super) fn accept() -> Stmt {
    S::Accept(None)
}

pub(super) fn drop_() -> Stmt {
    S::Drop(None)
}

pub(super) fn ret() -> Stmt {
    S::Return(None)
}

/// `log prefix "…" group N`: the controller reads these through nflog.
pub(super) fn log_group(prefix: &str, group: u32) -> Stmt {
    S::Log(Some(stmt::Log {
        prefix: Some(prefix.to_string().into()),
        group: Some(group),
        snaplen: None,
        queue_threshold: None,
        level: None,
        flags: None,
    }))
}

/// `update @set { key }`: adds `key` to a dynamic set or refreshes it. The statement the
/// element carries (a per-key `limit`) is added to the JSON by [`super::apply::to_json`]:
/// the `nftables` crate (0.6.3) has no field for it.
pub(super) fn update_set(key: Expr, set: &str) -> Stmt {
    S::Set(stmt::Set {
        op: stmt::SetOp::Update,
        elem: key,
        set: format!("@{set}").into(),
    })
}

/// `limit rate N/second burst B packets`.
pub(super) fn limit(rate: u32, burst: u32) -> Stmt {
    S::Limit(stmt::Limit {
        rate,
        rate_unit: Some("packets".into()),
        per: Some("second".into()),
        burst: Some(burst),
        burst_unit: Some("packets".into()),
        inv: None,
    })
}
