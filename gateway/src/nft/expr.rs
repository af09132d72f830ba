//! Small constructors over the `nftables` crate's JSON schema, so the renderer reads like
//! the ruleset it builds. Pure.

use nftables::expr::CTDir;
use nftables::expr::{
    BinaryOperation, Expression as E, Meta, MetaKey, NamedExpression as N, Payload, PayloadField,
    Range, SetItem, CT,
};
use nftables::stmt::{self, Counter, JumpTarget, Mangle, Match, Operator, Statement as S};

pub type Expr = E<'static>;
pub type Stmt = S<'static>;

pub fn s(v: impl Into<String>) -> Expr {
    E::String(v.into().into())
}

pub fn n(v: u32) -> Expr {
    E::Number(v)
}

pub fn set_ref(name: &str) -> Expr {
    s(format!("@{name}"))
}

pub fn meta(key: MetaKey) -> Expr {
    E::Named(N::Meta(Meta { key }))
}

pub fn payload(protocol: &'static str, field: &'static str) -> Expr {
    E::Named(N::Payload(Payload::PayloadField(PayloadField {
        protocol: protocol.into(),
        field: field.into(),
    })))
}

/// `ct original KEY`; address keys name their family in the key (`ip saddr`), which is how
/// nft 1.0.6 reads and writes them in JSON.
pub fn ct_orig(key: &'static str) -> Expr {
    E::Named(N::CT(CT {
        key: key.into(),
        family: None,
        dir: Some(CTDir::Original),
    }))
}

pub fn ct(key: &'static str) -> Expr {
    E::Named(N::CT(CT {
        key: key.into(),
        family: None,
        dir: None,
    }))
}

pub fn concat(parts: Vec<Expr>) -> Expr {
    E::Named(N::Concat(parts))
}

pub fn range(a: Expr, b: Expr) -> Expr {
    E::Range(Box::new(Range { range: [a, b] }))
}

/// A map lookup: `key map @name`.
pub fn map_lookup(key: Expr, name: &str) -> Expr {
    E::Named(N::Map(Box::new(nftables::expr::Map {
        key,
        data: set_ref(name),
    })))
}

/// An anonymous set `{ a, b, … }`.
pub fn anon(items: Vec<Expr>) -> Expr {
    E::Named(N::Set(items.into_iter().map(SetItem::Element).collect()))
}

pub fn and(a: Expr, b: Expr) -> Expr {
    E::BinaryOperation(Box::new(BinaryOperation::AND(a, b)))
}

pub fn m(left: Expr, op: Operator, right: Expr) -> Stmt {
    S::Match(Match { left, right, op })
}

pub fn eq(left: Expr, right: Expr) -> Stmt {
    m(left, Operator::EQ, right)
}

pub fn ne(left: Expr, right: Expr) -> Stmt {
    m(left, Operator::NEQ, right)
}

/// `left @set` (membership).
pub fn in_set(left: Expr, set: &str) -> Stmt {
    m(left, Operator::IN, set_ref(set))
}

pub fn not_in_set(left: Expr, set: &str) -> Stmt {
    m(left, Operator::NEQ, set_ref(set))
}

pub fn set_mark(value: Expr) -> Stmt {
    S::Mangle(Mangle {
        key: meta(MetaKey::Mark),
        value,
    })
}

pub fn set_ct_mark(value: Expr) -> Stmt {
    S::Mangle(Mangle {
        key: ct("mark"),
        value,
    })
}

pub fn counter(name: &str) -> Stmt {
    S::Counter(Counter::Named(name.to_string().into()))
}

pub fn jump(chain: &str) -> Stmt {
    S::Jump(JumpTarget {
        target: chain.to_string().into(),
    })
}

pub fn goto(chain: &str) -> Stmt {
    S::Goto(JumpTarget {
        target: chain.to_string().into(),
    })
}

pub fn accept() -> Stmt {
    S::Accept(None)
}

pub fn drop_() -> Stmt {
    S::Drop(None)
}

pub fn ret() -> Stmt {
    S::Return(None)
}

/// `log prefix "…" group N`: the controller reads these through nflog.
pub fn log_group(prefix: &str, group: u32) -> Stmt {
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
pub fn update_set(key: Expr, set: &str) -> Stmt {
    S::Set(stmt::Set {
        op: stmt::SetOp::Update,
        elem: key,
        set: format!("@{set}").into(),
    })
}

/// `limit rate N/second burst B packets`.
pub fn limit(rate: u32, burst: u32) -> Stmt {
    S::Limit(stmt::Limit {
        rate,
        rate_unit: Some("packets".into()),
        per: Some("second".into()),
        burst: Some(burst),
        burst_unit: Some("packets".into()),
        inv: None,
    })
}
