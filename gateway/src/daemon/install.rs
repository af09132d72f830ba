//! Reloads: a compile off the loop, the two halves of an install (nftables and the XDP slot
//! written off the loop, then the generation switch on it), and what a new generation changes.

use super::*;
impl Controller {
    /// Compiles the policy directory and installs it as the next generation, on this thread
    /// (at start). On error the enforcing generation is untouched.
    pub fn reload(&mut self) -> Result<ReloadReport, DaemonError> {
        self.reload_now("start")
    }

    pub(super) fn reload_now(&mut self, why: &str) -> Result<ReloadReport, DaemonError> {
        let job = self.job(why)?.ok_or(DaemonError::StoodDown)?;
        self.metrics.reload_attempted();
        let result = self.compiler.compile(&job);
        self.finish(job, result)
    }

    /// The next reload's job (the inactive slot, the next generation), if one may start now:
    /// `None` while another runs (this one runs after it) or when stood down.
    pub(super) fn job(&mut self, why: &str) -> Result<Option<compiler::Job>, DaemonError> {
        let generation = match self.reloads.ask(why) {
            reloader::Ask::Start { generation } => generation,
            reloader::Ask::Queued => return Ok(None),
            reloader::Ask::StoodDown => {
                tracing::warn!(
                    trigger = why,
                    "not reloading: detached on request (restart lazaret to enforce again)"
                );
                return Ok(None);
            }
        };
        // nftables alone has no slots: its table is replaced whole.
        let slot = self.planes.xdp.as_mut().map_or(Ok(0), Datapath::next_slot);
        let slot = match slot {
            Ok(slot) => slot,
            Err(e) => {
                self.reloads.refused(e.to_string());
                return Err(e.into());
            }
        };
        Ok(Some(compiler::Job {
            slot,
            generation,
            ifindexes: self.ifaces.ifindexes().clone(),
            why: why.to_string(),
            started: Instant::now(),
            in_force: self.window_sources(why),
        }))
    }

    /// Installs a compile's result (or reports its failure) and counts it in the metrics.
    pub(super) fn finish(
        &mut self,
        job: compiler::Job,
        result: Result<compiler::Output, DaemonError>,
    ) -> Result<ReloadReport, DaemonError> {
        let started = job.started;
        let result = result.and_then(|out| self.install(job, out));
        self.record(started, result)
    }

    /// Counts a reload's outcome in the metrics and the status.
    pub(super) fn record(
        &mut self,
        started: Instant,
        result: Result<ReloadReport, DaemonError>,
    ) -> Result<ReloadReport, DaemonError> {
        match result {
            Ok(r) => {
                let unix = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                self.metrics
                    .reload_succeeded(r.duration, r.generation, r.commit.as_deref(), unix);
                self.commit_tx.send_replace(r.commit.clone());
                if let Some(c) = &self.compiled {
                    let member = self.config.member();
                    self.metrics.set_gateway(
                        &c.site.name,
                        self.config.gateway.as_deref().unwrap_or(""),
                        &member,
                    );
                }
                if self.no_policy {
                    tracing::warn!(
                        generation = r.generation,
                        "a policy enforces: the device-side interfaces are no longer held closed"
                    );
                    self.no_policy = false;
                    self.update_hold();
                }
                Ok(r)
            }
            Err(e) => {
                let reason = match e {
                    DaemonError::Policy {
                        unreadable: true, ..
                    } => ReloadFailure::Io,
                    DaemonError::Policy { .. } => ReloadFailure::InvalidPolicy,
                    DaemonError::Io { .. } => ReloadFailure::Io,
                    DaemonError::Nftables(_)
                    | DaemonError::Dataplane(crate::dataplane::DataplaneError::Nftables(_)) => {
                        ReloadFailure::Nftables
                    }
                    _ => ReloadFailure::Datapath,
                };
                self.metrics.reload_failed(started.elapsed(), reason);
                self.reloads.refused(e.to_string());
                Err(e)
            }
        }
    }

    pub fn generation(&self) -> u64 {
        self.reloads.generation()
    }

    /// Asks for a reload. Serving, the policy is compiled off the loop and installed when
    /// the result arrives ([`Self::finish_reload`]); one asked for while another compiles
    /// runs after it (as one, however many were asked for).
    pub(super) fn reload_and_report(&mut self, why: &str) {
        let Some(tx) = self.compiled_tx.clone() else {
            // Not serving yet: on this thread.
            self.report(why, |ctl| ctl.reload_now(why));
            return;
        };
        match self.job(why) {
            Ok(Some(job)) => {
                self.metrics.reload_attempted();
                self.compiler.spawn(job, tx);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(trigger = why, error = %e, "reload refused; the previous generation keeps enforcing");
            }
        }
    }

    /// A compile finished: install it (the generation flip happens here, on the loop), then
    /// start a reload asked for meanwhile.
    pub(super) fn finish_reload(&mut self, done: compiler::Done) {
        let compiler::Done { job, result } = done;
        let (why, started) = (job.why.clone(), job.started);
        if self.reloads.stood_down() {
            // Detached on request while it compiled: nothing is installed, not even the
            // nftables table the detach removed.
            tracing::warn!(trigger = %why, "not installing the new generation: detached on request");
            self.reloads.refused(DaemonError::StoodDown.to_string());
            return;
        }
        let out = match result {
            Ok(out) => out,
            Err(e) => {
                self.report(&why, |ctl| ctl.record(started, Err(e)));
                self.next_reload();
                return;
            }
        };
        let generation = job.generation;
        let tx = self.staged_tx.clone();
        let signal = Box::new(move || {
            if let Some(tx) = tx {
                let _ = tx.send(());
            }
        });
        match self.stage_install(job, out, signal) {
            // Written off the loop; `finish_install` flips when the thread signals.
            Ok(staged) => self.reloads.compiled(staged),
            Err(e) => {
                // nftables may have enforced it before XDP refused it.
                self.reloads.burn(generation);
                self.report(&why, |ctl| ctl.record(started, Err(e)));
                self.next_reload();
            }
        }
    }

    /// The staged slot is written: the generation switch, on the loop.
    pub(super) fn finish_install(&mut self) {
        // None when stood down meanwhile: the staged generation is never switched to.
        let Some((why, staged)) = self.reloads.take_staged() else {
            return;
        };
        let (started, generation) = (staged.job.started, staged.job.generation);
        self.report(&why, |ctl| {
            let result = ctl.complete_install(staged);
            if result.is_err() {
                // nftables enforced it already; XDP may have, too.
                ctl.reloads.burn(generation);
            }
            ctl.record(started, result)
        });
        self.next_reload();
    }

    /// Starts a reload asked for while the last one ran.
    pub(super) fn next_reload(&mut self) {
        if let Some(next) = self.reloads.take_pending() {
            self.reload_and_report(&next);
        }
    }

    pub(super) fn report(
        &mut self,
        why: &str,
        reload: impl FnOnce(&mut Self) -> Result<ReloadReport, DaemonError>,
    ) {
        match reload(self) {
            Ok(_) => {
                if let Err(e) = self.write_ready() {
                    tracing::error!(error = %e, "could not write the ready file");
                }
            }
            Err(e) => {
                tracing::error!(trigger = why, error = %e, "reload refused; the previous generation keeps enforcing");
            }
        }
    }

    /// Installs a compiled generation on this thread (at start): [`Self::stage_install`],
    /// then [`Self::complete_install`].
    pub(super) fn install(
        &mut self,
        job: compiler::Job,
        out: compiler::Output,
    ) -> Result<ReloadReport, DaemonError> {
        let generation = job.generation;
        let result = self
            .stage_install(job, out, Box::new(|| {}))
            .and_then(|staged| self.complete_install(staged));
        if result.is_err() {
            // A dataplane may have enforced it before another refused it.
            self.reloads.burn(generation);
        }
        result
    }

    /// The first half of an install: nftables first (a table it refuses fails the reload
    /// before anything changed), then the XDP maps' inactive slot, written on a thread
    /// (`done` is called there when it is): a whole policy's half second of map writes
    /// never holds up the loop.
    pub(super) fn stage_install(
        &mut self,
        job: compiler::Job,
        out: compiler::Output,
        done: Box<dyn FnOnce() + Send>,
    ) -> Result<Staged, DaemonError> {
        let compiler::Output {
            compiled,
            how,
            contents,
            commit,
            sources,
            schedule,
            in_force,
        } = out;
        let generation = job.generation;
        // nftables first: a table it refuses fails the reload before anything changed.
        let sides: Vec<(String, lazaret_abi::IfaceConfig)> = self
            .config
            .interfaces
            .iter()
            .map(|i| (i.name.clone(), self.iface_config(i)))
            .collect();
        // The controller's quarantines, not anything read back from XDP: the two
        // dataplanes are given the same state.
        let mut states = policy::DeviceStates::default();
        for d in &compiled.devices {
            if let Some(e) = self.quarantines.entries.get(&d.id) {
                states.set_quarantine(d.hash, e.action.abi());
            }
        }
        let ifindexes = self.ifaces.ifindexes().clone();
        let g = crate::dataplane::Generation {
            number: generation,
            contents: &contents,
            rules: compiled.ranges(),
            ifindexes: &ifindexes,
            interfaces: &sides,
            states: &states,
        };
        // Each dataplane signals when its half is staged; `done` goes once all have.
        let staged = all_staged(self.dataplanes().count(), done);
        for dp in self.dataplanes() {
            dp.stage(&g, staged())?;
        }
        let entries = entry_count(&contents);
        Ok(Staged {
            job,
            compiled,
            how,
            commit,
            sources,
            entries,
            schedule,
            in_force,
        })
    }

    /// The second half: the generation switch (on the loop, once the slot is written), and
    /// everything that follows from the new generation.
    pub(super) fn complete_install(&mut self, staged: Staged) -> Result<ReloadReport, DaemonError> {
        let Staged {
            job,
            compiled,
            how,
            commit,
            sources,
            entries,
            schedule,
            in_force,
        } = staged;
        let (started, generation) = (job.started, job.generation);
        let ifindexes = self.ifaces.ifindexes().clone();
        for dp in self.dataplanes() {
            let (c, ix) = (compiled.clone(), ifindexes.clone());
            dp.commit(Box::new(move |slot| {
                c.map_contents(slot, generation, &ix).ok()
            }))?;
        }
        self.reloads.enforcing(generation, commit);
        self.on_lkg = sources.is_none();
        // What enforces now is the last-known-good: kept for a start with a broken
        // repository (on this thread at start, off the loop when serving).
        match sources {
            Some(src) if self.compiled_tx.is_some() => self.lkg.keep(
                src,
                generation,
                self.reloads.commit().map(str::to_string),
                &self.config.policy_dir,
            ),
            Some(src) => {
                let result = self.lkg.keep_now(
                    &src,
                    generation,
                    self.reloads.commit().map(str::to_string),
                    &self.config.policy_dir,
                );
                self.persisted("last_known_good", result);
            }
            None => {}
        }
        self.metrics.last_known_good(self.on_lkg);
        let mut modes = [0u64; 3];
        for d in &compiled.devices {
            modes[match d.mode {
                policy::model::Mode::Enforce => 0,
                policy::model::Mode::Audit => 1,
                policy::model::Mode::Learn => 2,
            }] += 1;
        }
        self.metrics
            .set_devices_by_mode(modes[0], modes[1], modes[2]);
        let known: std::collections::BTreeSet<String> = compiled
            .devices
            .iter()
            .filter_map(|d| d.mac.map(|m| unknown::fmt_mac(&m.0)))
            .collect();
        self.unknowns.retain_unknown(&known);
        self.metrics
            .set_unknown_devices(self.unknowns.devices.len() as u64);
        self.containment.set_policy(&compiled);
        // The previous compile of a big policy takes ~100 ms to free: not on this thread.
        if let Some(old) = self.compiled.replace(compiled) {
            std::thread::spawn(move || drop(old));
        }
        self.windows_enforced(schedule, in_force);
        let report = ReloadReport {
            generation,
            commit: self.reloads.commit().map(str::to_string),
            duration: started.elapsed(),
            entries,
        };
        let patched = match how {
            policy::incremental::How::Full => None,
            policy::incremental::How::Patched { devices } => Some(devices),
        };
        tracing::info!(
            generation,
            commit = report.commit.as_deref().unwrap_or("-"),
            entries = report.entries,
            patched_devices = patched,
            ms = report.duration.as_millis() as u64,
            "policy generation enforcing"
        );
        Ok(report)
    }

    /// `state_dir/ready` holds the enforcing generation: a readiness signal for tests and
    /// service managers. `state_dir/generation` holds it too, for the next start (see
    /// [`read_generation`]); nobody removes that one.
    pub(super) fn write_ready(&mut self) -> Result<(), DaemonError> {
        let dir = &self.config.state_dir;
        std::fs::create_dir_all(dir).map_err(io_err(format!(
            "creating state directory {}",
            dir.display()
        )))?;
        let kept = state::write_atomic(
            &dir.join(GENERATION_FILE),
            format!("{}\n", self.reloads.generation()).as_bytes(),
        );
        self.persisted("generation", kept);
        let dir = &self.config.state_dir;
        let path = dir.join("ready");
        let tmp = dir.join(".ready.tmp");
        std::fs::write(&tmp, format!("{}\n", self.reloads.generation()))
            .map_err(io_err(format!("writing {}", tmp.display())))?;
        std::fs::rename(&tmp, &path).map_err(io_err(format!("writing {}", path.display())))
    }
}

/// The last generation a run enforced, in the state directory.
pub(super) const GENERATION_FILE: &str = "generation";

/// The generation `state_dir/generation` holds (0 if none): see [`Controller::write_ready`].
/// Also the ready file's, which versions before `generation` existed wrote (an upgrade in
/// nftables mode must not restart the numbering either).
pub(super) fn read_generation(state_dir: &Path) -> u64 {
    [GENERATION_FILE, "ready"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(state_dir.join(f)).ok())
        .filter_map(|t| t.trim().parse::<u64>().ok())
        .max()
        .unwrap_or(0)
}

/// A generation half installed: nftables applied, its XDP slot being written.
pub(super) struct Staged {
    job: compiler::Job,
    compiled: Arc<Compiled>,
    how: policy::incremental::How,
    commit: Option<String>,
    sources: Option<Arc<policy::Sources>>,
    entries: usize,
    schedule: policy::windows::Schedule,
    in_force: compiler::InForce,
}

pub(super) fn entry_count(c: &crate::dataplane::xdp::MapContents) -> usize {
    c.dev_mac.len()
        + c.dev_ip4.len()
        + c.dev_ip6.len()
        + c.devices.len()
        + c.peer4.len()
        + c.peer6.len()
        + c.ports.len()
}

/// Hands out `n` signals; `done` is called when the last of them is.
fn all_staged(n: usize, done: crate::dataplane::Staged) -> impl Fn() -> crate::dataplane::Staged {
    use std::sync::{atomic::AtomicUsize, Mutex};
    let left = Arc::new(AtomicUsize::new(n));
    let done = Arc::new(Mutex::new(Some(done)));
    if n == 0 {
        if let Some(done) = done
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            done();
        }
    }
    move || {
        let (left, done) = (left.clone(), done.clone());
        Box::new(move || {
            if left.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
                let done = done
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take();
                if let Some(done) = done {
                    done();
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    #[test]
    fn staged_signals_once_after_every_dataplane() {
        let fired = Arc::new(AtomicBool::new(false));
        let f = fired.clone();
        let signal = all_staged(2, Box::new(move || f.store(true, Ordering::SeqCst)));
        let (a, b) = (signal(), signal());
        a();
        assert!(!fired.load(Ordering::SeqCst), "one of two is not all");
        std::thread::spawn(b).join().expect("thread");
        assert!(fired.load(Ordering::SeqCst));
    }
}
