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
    /// Windows overdue at the last check (logged when the count grows).
    overdue: usize,
    /// `schedule.due` and the second it was computed for: the loop asks on every turn and
    /// a policy may hold many windows, so it is computed again only when the second
    /// changes and the answer may have (past a boundary, or the clock set back).
    due: Option<(i64, Option<i64>)>,
}

impl Windows {
    fn due(&mut self, now: i64) -> Option<i64> {
        if let Some((at, due)) = self.due {
            let still = match due {
                _ if now < at => false,
                _ if now == at => true,
                Some(t) => t > now,
                None => true,
            };
            if still {
                return due;
            }
        }
        let due = self.schedule.due(now);
        self.due = Some((now, due));
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
        if self.reloads.stood_down() {
            return None;
        }
        let now_ms = unix_ms();
        let due = self.windows.due(i64::try_from(now_ms / 1000).ok()?)?;
        let due_ms = u64::try_from(due).ok()?.saturating_mul(1000);
        let at_ms = due_ms.max(self.windows.quiet_until_ms);
        Some(tokio::time::Instant::now() + Duration::from_millis(at_ms.saturating_sub(now_ms)))
    }

    /// A window boundary passed: compile the policy in force again, for the clock. Not
    /// while a reload runs: it would replace a reload of the directory queued behind it
    /// (which applies the windows too); if the one running was compiled before the
    /// boundary, the generation it installs is behind the clock and this asks again.
    pub(super) fn window_due(&mut self) {
        self.windows.quiet_until_ms = unix_ms() + RETRY_MS;
        if self.reloads.busy() {
            return;
        }
        self.reload_and_report(WINDOW_RELOAD);
    }

    /// Exports how many windows this gateway enforces open past their end (a closing
    /// install failing): access nobody approved any more, for the alert. Detached on
    /// request, nothing is enforced: none.
    pub(super) fn check_windows_overdue(&mut self) {
        let now = crate::policy::windows::now();
        let overdue: Vec<&str> = if self.reloads.stood_down() {
            Vec::new()
        } else {
            (self.windows.schedule.open.iter())
                .filter_map(|n| self.windows.schedule.exceptions.get(n))
                // Two seconds' grace: the closing reload compiles and installs meanwhile.
                .filter(|e| e.until + 2 <= now && !self.window_devices(e).is_empty())
                .map(|e| e.name.as_str())
                .collect()
        };
        if overdue.len() > self.windows.overdue {
            tracing::error!(
                windows = %overdue.join(","),
                "service windows past their end are still enforced open: the reload closing them fails (retried every second)"
            );
        }
        self.windows.overdue = overdue.len();
        self.metrics.exceptions_overdue(overdue.len());
    }

    /// Stopping with windows open: nothing would close them on time while the pinned
    /// datapath keeps enforcing, so they are closed now (a restart opens them again).
    pub(super) fn close_windows_for_stop(&mut self) {
        if self.windows.schedule.open.is_empty() {
            return;
        }
        let Some(mut in_force) = self.windows.in_force.clone() else {
            return;
        };
        in_force.windows_closed = true;
        let why = "stopping: closing the open service windows";
        let job = match self.job(why) {
            Ok(Some(mut job)) => {
                job.in_force = Some(in_force);
                job
            }
            Ok(None) | Err(_) => {
                tracing::error!(
                    "stopping with service windows open and a reload under way: they stay open until lazaret runs again"
                );
                return;
            }
        };
        self.metrics.reload_attempted();
        let result = self.compiler.compile(&job);
        if let Err(e) = self.finish(job, result) {
            tracing::error!(error = %e, "stopping: could not close the open service windows; they stay open until lazaret runs again");
        }
    }

    /// A generation enforces: say which windows it opened and closed. A window of
    /// another gateway's devices (a fleet) is not this one's to report.
    pub(super) fn windows_enforced(&mut self, schedule: Schedule, in_force: compiler::InForce) {
        let old = std::mem::take(&mut self.windows.schedule);
        let (opened, closed) = old.changes(&schedule);
        let ts = events::unix_now();
        let mut records = Vec::new();
        let mut counts = [0usize; 2];
        for (list, is_open) in [(&opened, true), (&closed, false)] {
            for e in list {
                let devices = self.window_devices(e);
                if devices.is_empty() {
                    continue;
                }
                counts[usize::from(!is_open)] += 1;
                let what = if is_open { "opened" } else { "closed" };
                let devices_text = devices.join(",");
                tracing::warn!(
                    exception = %e.name,
                    ticket = %e.ticket,
                    approved_by = %e.approved_by,
                    from = %crate::policy::windows::format_time(e.from),
                    until = %crate::policy::windows::format_time(e.until),
                    devices = %devices_text,
                    "service window {what}"
                );
                let reason = format!(
                    "service window {what}: {} ({}, ticket {}, approved by {})",
                    e.name,
                    e.interval(),
                    e.ticket,
                    e.approved_by
                );
                // One line per window, its devices listed: a class's window may name
                // thousands, and each line is synced to disk on this loop.
                if let Err(err) = self.quarantines.audit(
                    &format!("exception_{what}"),
                    &devices_text,
                    None,
                    "lazaret",
                    &reason,
                ) {
                    tracing::error!(error = %err, "audit log");
                }
                records.push(events::window_event(e, devices, is_open, ts));
            }
        }
        let open = (schedule.open.iter())
            .filter_map(|n| schedule.exceptions.get(n))
            .filter(|e| !self.window_devices(e).is_empty())
            .count();
        self.metrics.exceptions(open, counts[0], counts[1]);
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
