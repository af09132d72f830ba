//! `[exceptions.*]`: vendor service windows (see [`crate::windows`]). Each needs whom it
//! grants (devices or a class), what (workflows that are neither essential nor name
//! devices themselves), when (`from`, and `until` or `duration`, within the site's
//! maximum), and under whose authority (`ticket`, `approved_by`).

use super::*;
use crate::raw::RawException;
use crate::windows::{format_duration, format_time, parse_time};

impl Validator<'_> {
    pub(super) fn exceptions(
        &mut self,
        raw: &BTreeMap<String, RawException>,
        site: &Site,
        workflows: &BTreeMap<String, Workflow>,
        devices: &[Device],
        now: i64,
    ) -> BTreeMap<String, Exception> {
        let mut out = BTreeMap::new();
        for (name, e) in raw {
            if let Some(x) = self.exception(name, e, site, workflows, now) {
                if x.until > now {
                    self.grants_something(&x, devices);
                }
                out.insert(name.clone(), x);
            }
        }
        out
    }

    /// Warnings for a window that grants nothing: no device of it, or a workflow every
    /// one of its devices has anyway (the window would hide a standing grant from review).
    fn grants_something(&mut self, e: &Exception, devices: &[Device]) {
        let granted: Vec<&Device> = devices.iter().filter(|d| e.applies_to(d)).collect();
        if granted.is_empty() {
            self.diags.push(Diagnostic::at(
                Problem::ExceptionGrantsNothing {
                    name: e.name.clone(),
                },
                e.span,
            ));
            return;
        }
        for w in &e.workflows {
            if granted.iter().all(|d| d.workflows.contains(w)) {
                self.diags.push(Diagnostic::at(
                    Problem::ExceptionRedundant {
                        name: e.name.clone(),
                        workflow: w.clone(),
                    },
                    e.span,
                ));
            }
        }
    }

    fn exception(
        &mut self,
        name: &str,
        e: &RawException,
        site: &Site,
        workflows: &BTreeMap<String, Workflow>,
        now: i64,
    ) -> Option<Exception> {
        self.check_name(NameKind::Exception, &e.name);
        let before = self.diags.error_count();
        let missing = |v: &mut Self, key: &'static str| {
            v.diags.err(
                Problem::ExceptionMissing {
                    name: name.to_string(),
                    key,
                },
                e.name.span,
            );
        };
        let devices: Vec<String> = e
            .devices
            .iter()
            .flatten()
            .filter(|d| self.known(NameKind::Device, d))
            .map(|d| d.v.clone())
            .collect();
        let class = e
            .class
            .as_ref()
            .filter(|c| self.known(NameKind::Class, c))
            .map(|c| c.v.clone());
        if e.devices.as_ref().is_none_or(Vec::is_empty) && e.class.is_none() {
            missing(self, "devices` or `class");
        }
        let mut granted = Vec::new();
        for w in e.workflows.iter().flatten() {
            if !self.known(NameKind::Workflow, w) {
                continue;
            }
            let Some(wf) = workflows.get(&w.v) else {
                continue;
            };
            let problem = if wf.essential {
                Some(Problem::ExceptionEssentialWorkflow {
                    name: name.to_string(),
                    workflow: w.v.clone(),
                })
            } else if wf.rules.iter().any(|r| r.ends.is_some()) {
                Some(Problem::ExceptionWorkflowNamesDevices {
                    name: name.to_string(),
                    workflow: w.v.clone(),
                })
            } else {
                None
            };
            match problem {
                Some(p) => self.diags.push(
                    Diagnostic::at(p, w.span)
                        .note(wf.span, "the workflow is defined here")
                        .hint("grant a workflow of its own, written for the visit"),
                ),
                None => granted.push(w.v.clone()),
            }
        }
        if e.workflows.as_ref().is_none_or(Vec::is_empty) {
            missing(self, "workflows");
        }
        let time = |v: &mut Self, t: &Sp<String>| {
            let parsed = parse_time(&t.v);
            if parsed.is_none() {
                v.diags.push(
                    Diagnostic::at(Problem::BadDateTime { text: t.v.clone() }, t.span)
                        .hint("write it as 2026-12-04T09:00:00Z (UTC) or with its offset, 2026-12-04T10:00:00+01:00"),
                );
            }
            parsed
        };
        let from = match &e.from {
            Some(t) => time(self, t),
            None => {
                missing(self, "from");
                None
            }
        };
        let until = match (&e.until, &e.duration) {
            (Some(_), Some(d)) => {
                self.diags.err(
                    Problem::ExceptionUntilAndDuration {
                        name: name.to_string(),
                    },
                    d.span,
                );
                None
            }
            (Some(t), None) => time(self, t),
            (None, Some(d)) => self
                .duration(d)
                .and_then(|s| from.map(|f| f.saturating_add(i64::try_from(s).unwrap_or(i64::MAX)))),
            (None, None) => {
                missing(self, "until` or `duration");
                None
            }
        };
        let end_span = e
            .until
            .as_ref()
            .or(e.duration.as_ref())
            .map_or(e.name.span, |t| t.span);
        if let (Some(f), Some(u)) = (from, until) {
            let length = u.saturating_sub(f);
            if length <= 0 {
                self.diags.err(
                    Problem::ExceptionEndsBeforeStart {
                        name: name.to_string(),
                    },
                    end_span,
                );
            } else if length > i64::try_from(site.exception_max_s).unwrap_or(i64::MAX) {
                self.diags.push(
                    Diagnostic::at(
                        Problem::ExceptionTooLong {
                            name: name.to_string(),
                            length: format_duration(length),
                            max: format_duration(site.exception_max_s as i64),
                        },
                        end_span,
                    )
                    .hint("split the visit into windows the site accepts, or raise `max` in [site.exceptions]"),
                );
            } else if u <= now {
                self.diags.push(
                    Diagnostic::at(
                        Problem::ExceptionExpired {
                            name: name.to_string(),
                            until: format_time(u),
                        },
                        e.name.span,
                    )
                    .hint("remove it from the policy (git keeps the record)"),
                );
            }
        }
        for key in ["ticket", "approved_by"] {
            let v = if key == "ticket" {
                &e.ticket
            } else {
                &e.approved_by
            };
            if v.as_ref().is_none_or(|t| t.v.trim().is_empty()) {
                missing(self, key);
            }
        }
        if self.diags.error_count() > before {
            return None;
        }
        Some(Exception {
            name: name.to_string(),
            span: e.name.span,
            devices,
            class,
            workflows: granted,
            from: from?,
            until: until?,
            ticket: text(&e.ticket),
            approved_by: text(&e.approved_by),
            description: text(&e.description),
        })
    }
}
