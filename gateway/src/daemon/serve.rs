//! The event loop: the I/O shell around the controller. It owns the sockets (metrics,
//! control), signals, timers, the policy directory watch and the dataplanes' event sources,
//! and hands each input to the controller; work that takes long comes back as a message.

use std::future::Future;

use super::*;

/// How often datapath counters are read into the metrics.
pub(super) const OBSERVE_EVERY: Duration = Duration::from_secs(5);

/// How often the configured interfaces are looked up by name. An interface that is deleted
/// and created again has no XDP program until the daemon notices: traffic on it passes
/// unjudged for up to this long (one `if_nametoindex` per interface per check).
pub(super) const INTERFACES_EVERY: Duration = Duration::from_millis(250);

/// How often the loop beats (heartbeat metric, `/healthz`, systemd's watchdog at half its
/// period if that is shorter).
pub(super) const BEAT_EVERY: Duration = Duration::from_secs(1);

pub(super) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `lazaret run`'s shell: starts the controller (adopting what an earlier run left pinned,
/// installing, attaching) and serves until SIGTERM, SIGINT or `shutdown`. Returning leaves
/// the dataplanes enforcing.
pub async fn run(
    config: Config,
    deps: Deps,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    Controller::start(config, deps)?.serve(shutdown).await
}

impl Controller {
    /// Serves until SIGTERM, SIGINT or `shutdown`; SIGHUP and changes in the policy
    /// directory reload. Returning leaves the datapath pinned and enforcing.
    pub async fn serve(mut self, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
        tokio::pin!(shutdown);
        let listener = tokio::net::TcpListener::bind(self.config.metrics_listen)
            .await
            .map_err(io_err(format!(
                "metrics endpoint {} (is the port already taken?)",
                self.config.metrics_listen
            )))?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let metrics = self.metrics.clone();
        let mut stop_metrics = stop_rx.clone();
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop_metrics.changed().await;
            };
            if let Err(e) = crate::metrics::serve(listener, metrics, shutdown).await {
                tracing::error!(error = %e, "metrics endpoint stopped");
            }
        });
        if let Some(w) = &self.config.webhook {
            // Checked when the configuration was parsed and loaded.
            let tls = |uri: &hyper::Uri| {
                if uri.scheme_str() == Some("https") {
                    webhook::tls_connector(w.ca.as_deref()).map(Some)
                } else {
                    Ok(None)
                }
            };
            match webhook::check_url(w.url.get_ref()).and_then(|uri| Ok((tls(&uri)?, uri))) {
                Ok((tls, uri)) => {
                    self.webhook = Some(webhook::Webhook::spawn(
                        uri,
                        w.secret.clone(),
                        tls,
                        self.metrics.clone(),
                    ));
                }
                Err(e) => tracing::error!(error = %e, "webhook disabled"),
            }
        }
        if let Some(s) = &self.config.syslog {
            // Checked when the configuration was parsed.
            match (
                super::syslog::check_address(&s.address),
                super::syslog::facility(&s.facility),
            ) {
                (Ok(target), Ok(facility)) => {
                    super::syslog::spawn(target, facility, &self.feed, self.metrics.clone());
                }
                (Err(e), _) | (_, Err(e)) => tracing::error!(error = %e, "syslog disabled"),
            }
        }
        let (sync_tx, mut sync_in) = mpsc::channel::<hasync::Inbound>(256);
        if let Some(settings) = self.sync_settings() {
            let out = hasync::spawn(settings, self.commit_tx.subscribe(), sync_tx);
            self.sync_out = Some(out.control);
            self.records_out = Some(out.flows.clone());
            self.start_flow_sync(out.flows);
        }
        let access = control::Access {
            group: self.config.control_gid,
        };
        let control = control::bind_for(&self.config.control_socket, access)?;
        let (calls_tx, mut calls) = mpsc::channel::<Call>(64);
        tokio::spawn(control::serve_for(
            control,
            calls_tx,
            self.feed.clone(),
            access,
        ));
        let mut tick = tokio::time::interval(OBSERVE_EVERY);
        let mut links = tokio::time::interval(INTERFACES_EVERY);
        let mut term =
            signal(SignalKind::terminate()).map_err(io_err("installing a SIGTERM handler"))?;
        let mut int =
            signal(SignalKind::interrupt()).map_err(io_err("installing a SIGINT handler"))?;
        let mut hup =
            signal(SignalKind::hangup()).map_err(io_err("installing a SIGHUP handler"))?;
        let dir = self.config.policy_dir.clone();
        let mut changes = watch::PolicyWatch::new(&dir).map_err(|e| DaemonError::Io {
            what: format!("watching {}", dir.display()),
            source: std::io::Error::other(e),
        })?;
        // Compiles run off the loop from now on; their results come back here.
        let (compiled_tx, mut compiled_rx) = mpsc::unbounded_channel();
        self.compiled_tx = Some(compiled_tx);
        let (staged_tx, mut staged_rx) = mpsc::unbounded_channel();
        self.staged_tx = Some(staged_tx);
        let (observed_tx, mut observed_rx) = mpsc::unbounded_channel();
        self.observed_tx = Some(observed_tx);
        // Every dataplane's events: drained here when their descriptor is readable (XDP's
        // ring buffer), or sent from a reader's thread (nftables' nflog). As many as the
        // ring buffer holds: nflog has no ring, so this queue is its buffer, and a burst of
        // the table's event budgets must fit (what does not is counted lost).
        let ring_events = lazaret_abi::EVENTS_BYTES as usize / size_of::<lazaret_abi::Event>();
        let (events_tx, mut sent) = mpsc::channel(ring_events.max(1024));
        let mut drains = Vec::new();
        for dp in self.dataplanes() {
            if let Some(drain) = dp.events(&events_tx)? {
                // SAFETY: the descriptor is owned by the drain, stays open and the same for
                // the drain's whole life, which the AsyncFd owns.
                let fd = unsafe {
                    tokio::io::unix::AsyncFd::register_with_interest(
                        Drain(drain),
                        tokio::io::Interest::READABLE,
                    )
                };
                drains.push(fd.map_err(|e| DaemonError::Io {
                    what: "watching a dataplane's events".into(),
                    source: std::io::Error::other(e.to_string()),
                })?);
            }
        }
        // Ready only now that events are read: nflog, unlike the XDP ring buffer, keeps
        // nothing for a reader that is not there yet.
        self.write_ready()?;
        // systemd (Type=notify): ready; and the watchdog, if the unit has one, is pinged from
        // the loop below, so a loop that stalls gets the daemon restarted (enforcement
        // carries on through the restart: everything is pinned).
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        let mut watchdog_usec = 0u64;
        let watchdog = sd_notify::watchdog_enabled(false, &mut watchdog_usec);
        let beat_every = if watchdog {
            Duration::from_micros(watchdog_usec / 2).min(BEAT_EVERY)
        } else {
            BEAT_EVERY
        };
        let mut beat = tokio::time::interval(beat_every);
        loop {
            // A policy change waiting for the directory to settle (see `watch`).
            let settle_at = changes.deadline();
            // A service window opening or closing.
            let window_at = self.window_deadline();
            tokio::select! {
                _ = term.recv() => break,
                () = &mut shutdown => break,
                Some(ev) = sent.recv() => self.on_event(&ev),
                Some(msg) = sync_in.recv() => self.on_sync(msg),
                _ = int.recv() => break,
                _ = hup.recv() => self.reload_and_report("SIGHUP"),
                _ = beat.tick() => {
                    // Events first: the beat says the loop keeps up, not only that it runs.
                    for drain in &mut drains {
                        let batch = drain.get_mut().0.drain();
                        for ev in &batch {
                            self.on_event(ev);
                        }
                    }
                    if let Some(written) = self.lkg.outcome() {
                        self.persisted("last_known_good", written);
                    }
                    self.metrics.heartbeat(unix_ms());
                    if watchdog {
                        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
                    }
                }
                _ = links.tick() => {
                    self.check_interfaces();
                    self.check_tamper();
                    self.sync_local();
                }
                _ = tick.tick() => {
                    self.observe();
                    self.check_windows_overdue();
                    self.sync_pins();
                    self.expire_quarantines();
                    self.save_learned();
                    self.save_taken_unknowns();
                    self.resend_snapshot();
                    self.send_records();
                }
                batch = drain_ready(&mut drains) => {
                    for ev in &batch {
                        self.on_event(ev);
                    }
                }
                Some(done) = compiled_rx.recv() => self.finish_reload(done),
                Some(()) = staged_rx.recv() => self.finish_install(),
                Some(snap) = observed_rx.recv() => self.observed(snap),
                Some(call) = calls.recv() => {
                    let reply = self.handle(call.request, &call.peer);
                    let _ = call.reply.send(reply);
                }
                true = changes.changed() => {}
                () = tokio::time::sleep_until(window_at.unwrap_or_else(tokio::time::Instant::now)),
                    if window_at.is_some() => self.window_due(),
                () = tokio::time::sleep_until(settle_at.unwrap_or_else(tokio::time::Instant::now)),
                    if settle_at.is_some() =>
                {
                    if changes.settled() {
                        self.reload_and_report("policy directory changed");
                    }
                }
            }
        }
        self.close_windows_for_stop();
        tracing::info!(
            generation = self.reloads.generation(),
            "stopping; the datapath stays pinned and keeps enforcing (lazaret detach removes it)"
        );
        self.save_learned();
        self.save_taken_unknowns();
        let _ = stop_tx.send(true);
        drop(events_tx);
        let _ = std::fs::remove_file(&self.config.control_socket);
        Ok(())
    }
}

/// A dataplane's event drain, as tokio watches it.
struct Drain(Box<dyn crate::dataplane::EventDrain>);

impl std::os::fd::AsRawFd for Drain {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

/// The events of every drain that is readable, once one is; never, without drains.
async fn drain_ready(drains: &mut [tokio::io::unix::AsyncFd<Drain>]) -> Vec<lazaret_abi::Event> {
    std::future::poll_fn(|cx| {
        let mut batch = Vec::new();
        for fd in drains.iter_mut() {
            // Until the descriptor is not ready (which registers the waker): readiness is
            // cleared after each drain, and an event may land in between.
            loop {
                match fd.poll_read_ready_mut(cx) {
                    std::task::Poll::Ready(Ok(mut guard)) => {
                        batch.extend(guard.get_inner_mut().0.drain());
                        guard.clear_ready();
                    }
                    std::task::Poll::Ready(Err(e)) => {
                        tracing::error!(error = %e, "waiting for a dataplane's events");
                        break;
                    }
                    std::task::Poll::Pending => break,
                }
            }
        }
        if batch.is_empty() {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(batch)
        }
    })
    .await
}
