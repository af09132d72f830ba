//! Advisories and what a device's risk changes: the `advisories/` files read into a
//! catalog (each problem at its line), `[site.risk]` applied to each device by its band,
//! and the warning about high-risk devices with workflows to the internet or to all of a
//! device segment.

use super::*;
use crate::advisories::Catalog;
use crate::risk::{self, Band};

impl Validator<'_> {
    /// The advisory files among `sources`, read.
    pub(super) fn advisories(&mut self, sources: &Sources) -> Catalog {
        let mut catalog = Catalog::default();
        for (i, f) in sources.files().iter().enumerate() {
            if !crate::load::is_advisory(&f.name) {
                continue;
            }
            if let Err(e) = catalog.add(&f.name, &f.text) {
                let at = offset(&f.text, e.line, e.column);
                let span = Span::new(u32::try_from(i).unwrap_or(u32::MAX), at..at);
                self.diags.push(
                    Diagnostic::at(Problem::BadAdvisory { message: e.message }, span)
                        .hint("advisories/ holds CSAF 2.0 documents and CISA KEV catalogs (JSON)"),
                );
            }
        }
        catalog
    }

    /// Applies `[site.risk]` to each device by its risk as of `today`, and warns about
    /// high-risk devices whose workflows reach the internet or a whole device segment.
    pub(super) fn risk(
        &mut self,
        devices: &mut [Device],
        site: &Site,
        workflows: &BTreeMap<String, Workflow>,
        catalog: &Catalog,
        today: i64,
    ) {
        for d in devices.iter_mut() {
            let hits = catalog.hits(&d.inventory);
            let r = risk::score(&d.inventory, today, &hits);
            let band = Band::of(r.score);
            if site.risk_enforce_from.is_some_and(|b| band >= b) && d.mode != Mode::Enforce {
                let bare = if d.workflows.is_empty() {
                    " (it takes part in no workflow: only the site's essentials pass)"
                } else {
                    ""
                };
                d.risk_actions.push(format!(
                    "enforced, not {}: risk {} ({}) is at or above [site.risk] enforce_from{bare}",
                    d.mode.name(),
                    r.score,
                    band.name()
                ));
                d.mode = Mode::Enforce;
            }
            if site.risk_tighten_from.is_some_and(|b| band >= b) && d.quarantine.after > 1 {
                let after = (d.quarantine.after / 2).max(1);
                d.risk_actions.push(format!(
                    "quarantine after {after} denies, not {}: risk {} ({}) is at or above \
[site.risk] tighten_from",
                    d.quarantine.after,
                    r.score,
                    band.name()
                ));
                d.quarantine.after = after;
            }
            if band == Band::High {
                self.broad_flows(d, &r, site, workflows);
            }
        }
    }

    fn broad_flows(
        &mut self,
        d: &Device,
        r: &risk::Risk,
        site: &Site,
        workflows: &BTreeMap<String, Workflow>,
    ) {
        let segments: Vec<&IpNet> = (site.interfaces.values())
            .filter(|i| i.side == Side::Devices)
            .flat_map(|i| &i.networks)
            .collect();
        let advisories = if r.advisories.is_empty() {
            format!("risk {}", r.score)
        } else {
            let ids: Vec<&str> = r.advisories.iter().map(|h| h.id.as_str()).collect();
            format!("risk {}, advisories {}", r.score, ids.join(", "))
        };
        for name in &d.workflows {
            let Some(wf) = workflows.get(name) else {
                continue;
            };
            for rule in &wf.rules {
                let mine = rule.ends.as_ref().is_none_or(|ends| {
                    ends.iter().any(|e| match e {
                        EndSel::Class(c) => d.class.as_deref() == Some(c),
                        EndSel::Device(id) => *id == d.id,
                    })
                });
                if !mine {
                    continue;
                }
                let what = rule.peers.iter().find_map(|p| match p {
                    PeerSel::Any => Some("any address (the internet)".to_string()),
                    PeerSel::Prefix(net) if is_internet(net) => {
                        Some(format!("{net}, on the internet"))
                    }
                    PeerSel::Prefix(net) => segments
                        .iter()
                        .find(|s| net.contains(**s))
                        .map(|s| format!("{net}, all of device segment {s}")),
                    _ => None,
                });
                if let Some(what) = what {
                    self.diags.push(
                        Diagnostic::at(
                            Problem::RiskyBroadFlow {
                                device: d.id.clone(),
                                band: "high".to_string(),
                                advisories: advisories.clone(),
                                workflow: name.clone(),
                                what,
                            },
                            rule.span,
                        )
                        .note(d.span, "the device is defined here")
                        .hint("narrow the rule's peer to the servers the device needs"),
                    );
                }
            }
        }
    }
}

/// Whether a prefix reaches beyond private, shared, loopback and link-local space.
fn is_internet(net: &IpNet) -> bool {
    const LOCAL: &[&str] = &[
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "fc00::/7",
        "fe80::/10",
        "::1/128",
    ];
    !LOCAL
        .iter()
        .filter_map(|l| l.parse::<IpNet>().ok())
        .any(|l| l.contains(net))
}

/// The byte offset of a 1-based line and column (0: the start of the text).
fn offset(text: &str, line: usize, column: usize) -> usize {
    if line == 0 {
        return 0;
    }
    let start: usize = text
        .split_inclusive('\n')
        .take(line - 1)
        .map(str::len)
        .sum();
    (start + column.saturating_sub(1)).min(text.len())
}
