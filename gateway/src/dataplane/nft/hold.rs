//! A hold on device-side interfaces the XDP program should enforce on but is not attached
//! to (`inet lazaret_hold` for routed interfaces and `bridge lazaret_hold` for bridge ports,
//! which the inet hooks see as their bridge): an interface deleted under the daemon comes back (same name, new ifindex) without a
//! program, and the kernel would forward its traffic unjudged until the daemon notices and
//! attaches again. When the daemon sees such an interface gone, it puts its *name* in this
//! table — `inet lazaret_hold`, one prerouting rule per name that drops everything arriving
//! on it and one forward rule that drops everything sent to it — so the interface is closed
//! from the moment it is created again; the daemon lifts
//! the hold once the program is attached and the policy bound to the new ifindex. A daemon
//! that dies meanwhile leaves the hold in place (closed); the next start lifts it after
//! attaching. What it cannot cover: an interface deleted and re-created within one of the
//! daemon's interface checks (250 ms), which the daemon only sees as a new ifindex.
//!
//! The same hold closes every device-side interface when the daemon starts with no policy
//! at all (the repository refused, no last-known-good, nothing pinned: a first boot with a
//! broken checkout), and interfaces configured but not created yet at boot.

use super::expr::{drop_, eq, meta, s};
use super::{ApplyError, Nft};
use nftables::batch::Batch;
use nftables::expr::MetaKey;
use nftables::schema::{Chain, NfListObject, Nftables, Rule, Table};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};
use std::collections::BTreeSet;

pub const HOLD_TABLE: &str = "lazaret_hold";
const CHAIN: &str = "hold";
const CHAIN_OUT: &str = "hold_out";

impl Nft {
    /// Drops everything arriving on the interfaces named in `held`, and everything forwarded
    /// to them (matched by name, so an interface created after the rule is held too), replacing the previous hold in one
    /// transaction; an empty `held` removes the table.
    pub fn hold(&self, held: &BTreeSet<String>) -> Result<(), ApplyError> {
        // Apart: a kernel without the bridge family still holds routed interfaces.
        self.run(hold_batch(NfFamily::INet, held))?;
        self.run(hold_batch(NfFamily::Bridge, held))
    }
}

fn hold_batch(family: NfFamily, held: &BTreeSet<String>) -> Nftables<'static> {
    let table = Table {
        family,
        name: HOLD_TABLE.into(),
        handle: None,
    };
    let mut b = Batch::new();
    // `add` makes the `delete` valid when the table does not exist yet.
    b.add(NfListObject::Table(table.clone()));
    b.delete(NfListObject::Table(table.clone()));
    if !held.is_empty() {
        b.add(NfListObject::Table(table));
        // In: before conntrack (-200), so a held interface's packets create no state. Out:
        // forwarded towards a held interface, so nothing reaches its devices either (the
        // XDP program on an upstream interface has no policy to judge by while held).
        for (chain, hook, key) in [
            (CHAIN, NfHook::Prerouting, MetaKey::Iifname),
            (CHAIN_OUT, NfHook::Forward, MetaKey::Oifname),
        ] {
            b.add(NfListObject::Chain(Chain {
                family,
                table: HOLD_TABLE.into(),
                name: chain.into(),
                _type: Some(NfChainType::Filter),
                hook: Some(hook),
                prio: Some(-300),
                policy: Some(NfChainPolicy::Accept),
                ..Chain::default()
            }));
            for name in held {
                b.add(NfListObject::Rule(Rule {
                    family,
                    table: HOLD_TABLE.into(),
                    chain: chain.into(),
                    expr: vec![eq(meta(key), s(name.as_str())), drop_()].into(),
                    handle: None,
                    index: None,
                    comment: None,
                }));
            }
        }
    }
    b.to_nftables()
}

#[cfg(test)]
mod tests {
    use super::super::apply::to_json;
    use nftables::types::NfFamily;

    /// The hold is a table of its own in each family, matched by name, dropping; none when
    /// nothing is held.
    #[test]
    fn hold_renders_one_drop_rule_per_name() {
        let held: std::collections::BTreeSet<String> =
            ["icu0".to_string(), "pumps0".to_string()].into();
        for family in [NfFamily::INet, NfFamily::Bridge] {
            let json = to_json(&super::hold_batch(family, &held)).to_string();
            assert!(json.contains(r#""name":"lazaret_hold""#), "{json}");
            assert!(
                json.contains(r#""icu0""#) && json.contains(r#""pumps0""#),
                "{json}"
            );
            // In and out, per name.
            assert_eq!(json.matches(r#""drop""#).count(), 4, "{json}");
            assert!(
                json.contains("oifname") && json.contains("forward"),
                "{json}"
            );
            let none = to_json(&super::hold_batch(family, &Default::default())).to_string();
            assert!(!none.contains("prerouting"), "{none}");
        }
    }
}
