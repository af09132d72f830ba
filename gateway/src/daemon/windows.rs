//! Vendor service windows in the daemon (see [`crate::policy::windows`]): the enforcing
//! generation's schedule, a timer at its next boundary, and a recompile of the policy in
//! force when it fires — not of the directory, which may hold a broken edit by then: a
//! window must close on time whatever the repository looks like. Each window that opens
//! or closes is logged, counted, written to the audit log and sent as an event.

use super::serve::unix_ms;
use super::*;
use crate::policy::windows::Schedule;

/// The reason a reload is asked for at a window's boundary (`Controller::job` compiles the
/// policy in force for it).
pub(super) const WINDOW_RELOAD: &str = "service window";

/// After asking for a boundary's reload, the clock does not ask again for this long: the
/// reload is under way (or queued, or failed and to be retried).
const RETRY_MS: u64 = 1000;

#[derive(Default)]
pub(super) struct Windows {
    /// The enforcing generation's windows.
    schedule: Schedule,
    /// What it was compiled from.
    in_force: Option<compiler::InForce>,
    /// Unix ms before which the clock does not ask for a reload again.
    quiet_until_ms: u64,
    /// `schedule.due`, kept while it lies ahead: the loop asks on every turn, and a
    /// policy may hold many windows.
    due: Option<Option<i64>>,
}

impl Windows {
    fn due(&mut self, now: i64) -> Option<i64> {
        match self.due {
            Some(Some(t)) if t > now => return Some(t),
            Some(None) => return None,
            _ => {}
        }
        let due = self.schedule.due(now);
        self.due = Some(due);
        due
    }
}

impl Controller {
    /// The policy in force, for a reload asked for by the clock.
    pub(super) fn window_sources(&self, why: &str) -> Option<compiler::InForce> {
        (why == WINDOW_RELOAD)
            .then(|| self.windows.in_force.clone())
            .flatten()
    }

    /// When the clock next needs a reload: the enforcing generation's next window
    /// boundary, or a second after the last ask while the enforcing one is behind it.
    pub(super) fn window_deadline(&mut self) -> Option<tokio::time::Instant> {
        let now_ms = unix_ms();
        let due = self.windows.due(i64::try_from(now_ms / 1000).ok()?)?;
        let due_ms = u64::try_from(due).ok()?.saturating_mul(1000);
        let at_ms = due_ms.max(self.windows.quiet_until_ms);
        Some(tokio::time::Instant::now() + Duration::from_millis(at_ms.saturating_sub(now_ms)))
    }

    /// A window boundary passed: compile the policy in force again, for the clock.
    pub(super) fn window_due(&mut self) {
        self.windows.quiet_until_ms = unix_ms() + RETRY_MS;
        self.reload_and_report(WINDOW_RELOAD);
    }

    /// A generation enforces: say which windows it opened and closed.
    pub(super) fn windows_enforced(&mut self, schedule: Schedule, in_force: compiler::InForce) {
        let old = std::mem::take(&mut self.windows.schedule);
        let (opened, closed) = old.changes(&schedule);
        let ts = events::unix_now();
        let mut records = Vec::new();
        for (list, is_open) in [(&opened, true), (&closed, false)] {
            for e in list {
                let devices = self.window_devices(e);
                let what = if is_open { "opened" } else { "closed" };
                tracing::warn!(
                    exception = %e.name,
                    ticket = %e.ticket,
                    approved_by = %e.approved_by,
                    from = %crate::policy::windows::format_time(e.from),
                    until = %crate::policy::windows::format_time(e.until),
                    devices = %devices.join(","),
                    "service window {what}"
                );
                let reason = format!(
                    "service window {what}: {} ({}, ticket {}, approved by {})",
                    e.name,
                    e.interval(),
                    e.ticket,
                    e.approved_by
                );
                for d in &devices {
                    if let Err(err) = self.quarantines.audit(
                        &format!("exception_{what}"),
                        d,
                        None,
                        "lazaret",
                        &reason,
                    ) {
                        tracing::error!(error = %err, "audit log");
                    }
                }
                records.push(events::window_event(e, devices, is_open, ts));
            }
        }
        self.metrics
            .exceptions(schedule.open.len(), opened.len(), closed.len());
        for r in records {
            self.notify(r);
        }
        self.windows.schedule = schedule;
        self.windows.due = None;
        self.windows.in_force = Some(in_force);
    }

    /// The devices of the enforcing policy a window grants (by id, or by its class).
    fn window_devices(&self, e: &crate::policy::model::Exception) -> Vec<String> {
        let Some(c) = &self.compiled else {
            return e.devices.clone();
        };
        c.devices
            .iter()
            .filter(|d| e.devices.contains(&d.id) || (e.class.is_some() && d.class == e.class))
            .map(|d| d.id.clone())
            .collect()
    }
}
