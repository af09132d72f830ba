//! The story, step by step: what each step does and shows, and what it checks.

use super::*;

impl<'a> Story<'a> {
    pub(super) fn new(opts: &'a Options) -> Self {
        Story {
            opts,
            dir: demo_dir(&opts.prefix),
            step: 0,
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A handle on one of the demo's namespaces (teardown removes them, by name).
    pub(super) fn ns(&self, name: &str) -> Netns {
        Netns::borrowed(format!("{}-{name}", self.opts.prefix))
    }

    pub(super) fn config(&self) -> PathBuf {
        self.dir.join("lazaret.toml")
    }

    pub(super) fn socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    pub(super) fn heading(&mut self, what: &str) {
        self.step += 1;
        println!("\n[{}/{STEPS}] {what}", self.step);
    }

    /// Runs a step; an error names it.
    pub(super) fn step<T>(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut Self) -> Result<T>,
    ) -> Result<T> {
        if STOPPING.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        self.heading(what);
        f(self).with_context(|| format!("step {}/{STEPS} ({what}) failed", self.step))
    }

    pub(super) fn play(&mut self) -> Result<()> {
        println!("lazaret demo — St. Example General, simulated on this machine");
        println!(
            "policies: {} (as they are); everything lives in namespaces {}-*",
            self.opts.policies.display(),
            self.opts.prefix
        );
        self.step("Building the hospital", Self::build)?;
        self.step("Starting `lazaret run` on the gateway", Self::start_daemon)?;
        let services = self.start_services()?;
        self.step("Clinical traffic", Self::clinical_traffic)?;
        let session = self.step(
            "pump-depot-01 syncs with the pump server (one message every 200 ms)",
            Self::open_pump_session,
        )?;
        self.step(
            "pump-depot-01 is compromised: it scans the ICU segment",
            |s| s.compromise(&session),
        )?;
        self.step(
            "The rest of the hospital keeps working",
            Self::still_working,
        )?;
        self.step("Biomed reimages the pump and releases it", Self::release)?;
        self.summary()?;
        drop(session);
        if !self.opts.keep {
            self.stop.store(true, Ordering::SeqCst);
            for s in services {
                let _ = s.join();
            }
        }
        Ok(())
    }

    // === Step 3 ===

    pub(super) fn clinical_traffic(&mut self) -> Result<()> {
        for id in ["mon-icu-01", "mon-icu-02"] {
            self.expect(
                true,
                id,
                "HL7 engine",
                "HL7 ORU^R01 over MLLP, ACK received",
                || hl7(&self.ns(dev(id).ns), "PCD-01"),
            )?;
        }
        self.expect(
            true,
            "cs-icu-01",
            "mon-icu-01",
            "time sync, UDP 2000, same bridge segment",
            || time_sync(&self.ns("cs"), &self.ns("mon1")),
        )?;
        self.expect(true, "ct-01", "PACS", "DICOM association accepted", || {
            dicom(&self.ns("ct"))
        })?;
        self.expect(
            true,
            "pump-icu-01",
            "pump server",
            "drug-library check answered",
            || pump_exchange(&self.ns("pump1")),
        )?;
        for d in DEVICES {
            self.expect(true, d.id, "NTP", "time received", || ntp(&self.ns(d.ns)))?;
        }
        self.expect(
            false,
            "mon-icu-01",
            "pump server",
            "not in its workflows",
            || pump_exchange(&self.ns("mon1")),
        )?;
        self.expect(
            false,
            "mon-icu-01",
            "pump-icu-01",
            "device to device, no workflow",
            || tcp_answers(&self.ns("mon1"), "10.30.0.11:80"),
        )?;
        Ok(())
    }

    /// Runs one flow and prints its outcome; an outcome other than `allowed` is an error.
    pub(super) fn expect(
        &self,
        allowed: bool,
        from: &str,
        to: &str,
        what: &str,
        flow: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        let t = Instant::now();
        let result = flow();
        let ms = t.elapsed().as_millis();
        match (&result, allowed) {
            (Ok(()), true) => {
                println!("      ✓ {from:<14} → {to:<12} {what} ({ms} ms)");
                Ok(())
            }
            (Err(_), false) => {
                println!("      ✗ {from:<14} → {to:<12} blocked: {what}");
                Ok(())
            }
            (Ok(()), false) => bail!("{from} → {to} ({what}) should have been blocked"),
            (Err(e), true) => bail!("{from} → {to} ({what}) failed: {e:#}"),
        }
    }

    // === Step 4 ===

    pub(super) fn open_pump_session(&mut self) -> Result<PumpSession> {
        let session = PumpSession::open(&self.ns("pump9"))?;
        wait_until(Duration::from_secs(3), || session.exchanged() >= 3);
        if session.exchanged() < 3 || session.cut_after().is_some() {
            bail!("the pump session did not get going");
        }
        println!(
            "      ✓ session open: {} messages answered",
            session.exchanged()
        );
        Ok(session)
    }

    // === Step 5 ===

    pub(super) fn compromise(&mut self, session: &PumpSession) -> Result<()> {
        let pump = self.ns("pump9");
        let targets: Vec<String> = ["10.20.0.10", "10.20.0.11", "10.20.0.12"]
            .iter()
            .flat_map(|h| {
                [22u16, 23, 80, 443, 445, 3389, 5900]
                    .iter()
                    .map(move |p| format!("{h}:{p}"))
            })
            .collect();
        println!(
            "      {} connection attempts to the ICU segment (ssh, telnet, http, https, smb, rdp, vnc)",
            targets.len()
        );
        let started = Instant::now();
        // One thread per attempt, like a scanner's parallel probes; each waits PATIENCE.
        let probes: Vec<_> = targets
            .into_iter()
            .map(|t| {
                let pump = Netns::borrowed(pump.name.clone());
                thread::spawn(move || tcp_answers(&pump, &t).is_ok())
            })
            .collect();
        let mut quarantined = None;
        wait_until(Duration::from_secs(15), || {
            match self.api(&Request::QuarantineList {}) {
                Ok(list) => {
                    quarantined = list.get("pump-depot-01").cloned();
                    quarantined.is_some()
                }
                Err(_) => false,
            }
        });
        let answered = probes
            .into_iter()
            .map(thread::JoinHandle::join)
            .filter(|r| !matches!(r, Ok(false)))
            .count();
        let Some(q) = quarantined else {
            bail!("pump-depot-01 was not quarantined");
        };
        println!(
            "      ✗ every attempt blocked ({answered} answered); each distinct denied flow is a deviation"
        );
        println!(
            "      ⚠ threshold crossed (10 deviations within 5m): quarantined, action {}, {} ms after the scan began",
            q["action"].as_str().unwrap_or("?"),
            started.elapsed().as_millis()
        );
        if answered > 0 {
            bail!("{answered} scan attempts were answered");
        }
        wait_until(Duration::from_secs(5), || session.cut_after().is_some());
        match session.cut_after() {
            Some(n) => println!(
                "      ✗ its session to the pump server is cut (after {n} answered messages)"
            ),
            None => bail!("the quarantined pump's session to the pump server was not cut"),
        }
        self.show_feed("pump-depot-01")?;
        self.expect(
            true,
            "pump-depot-01",
            "NTP",
            "still allowed by the quarantine profile",
            || ntp(&pump),
        )?;
        self.expect(
            true,
            "pump-depot-01",
            "jump host",
            "it can still open a session to biomed's jump host (TCP 22)",
            || ssh_banner(&pump),
        )?;
        self.expect(false, "pump-depot-01", "pump server", "isolated", || {
            pump_exchange(&pump)
        })?;
        Ok(())
    }

    /// What the on-call engineer sees in the event feed: the device's first denies, the
    /// quarantine, and the first packet of its session the quarantine dropped.
    pub(super) fn show_feed(&self, device: &str) -> Result<()> {
        let feed = self.cli(&["events"])?;
        let lines: Vec<&str> = feed.lines().filter(|l| l.contains(device)).collect();
        let denies: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.contains("deny_no_rule"))
            .collect();
        let short = |l: &str| {
            // Time of day, then the event without the class and mode.
            let (ts, rest) = l.split_once(' ').unwrap_or(("", l));
            let time = ts
                .split_once('T')
                .map_or(ts, |(_, t)| t.trim_end_matches('Z'));
            let rest = rest.replace(" (infusion-pump, enforce)", "");
            format!(
                "        {time} {}",
                rest.split_whitespace().collect::<Vec<_>>().join(" ")
            )
        };
        for l in denies.iter().take(3) {
            println!("{}", short(l));
        }
        if denies.len() > 3 {
            println!("        … {} more denied flows", denies.len() - 3);
        }
        let Some(q) = lines.iter().find(|l| l.contains(" quarantine ")) else {
            bail!("the event feed has no quarantine of {device}");
        };
        println!("{}", short(q));
        if let Some(cut) = lines
            .iter()
            .find(|l| l.contains("deny_quarantine") && l.contains(PUMP_SERVER))
        {
            println!("{}", short(cut));
        }
        Ok(())
    }

    // === Step 6 ===

    pub(super) fn still_working(&mut self) -> Result<()> {
        self.expect(
            true,
            "mon-icu-01",
            "HL7 engine",
            "observations flowing",
            || hl7(&self.ns("mon1"), "PCD-01"),
        )?;
        self.expect(
            true,
            "mon-icu-02",
            "HL7 engine",
            "observations flowing",
            || hl7(&self.ns("mon2"), "PCD-01"),
        )?;
        self.expect(
            true,
            "pump-icu-01",
            "pump server",
            "the pump at bed 1 is untouched",
            || pump_exchange(&self.ns("pump1")),
        )?;
        self.expect(true, "ct-01", "PACS", "imaging unaffected", || {
            dicom(&self.ns("ct"))
        })?;
        Ok(())
    }

    // === Step 7 ===

    pub(super) fn release(&mut self) -> Result<()> {
        self.cli(&[
            "quarantine",
            "release",
            "pump-depot-01",
            "--reason",
            "reimaged by biomed, ticket BME-4471",
        ])?;
        let list = self.api(&Request::QuarantineList {})?;
        if list.get("pump-depot-01").is_some() {
            bail!("pump-depot-01 is still quarantined after the release");
        }
        self.expect(
            true,
            "pump-depot-01",
            "pump server",
            "sync works again",
            || pump_exchange(&self.ns("pump9")),
        )?;
        println!(
            "      every quarantine and release is in {}",
            self.dir.join("state/audit.log").display()
        );
        Ok(())
    }

    // === The end ===

    pub(super) fn summary(&self) -> Result<()> {
        let devices = self.api(&Request::Devices {})?;
        let list = devices.as_array().cloned().unwrap_or_default();
        println!("\nSummary (live counters from the gateway)\n");
        println!(
            "  {:<15} {:<18} {:>9} {:>8}  state",
            "device", "class", "allowed", "denied"
        );
        for d in DEVICES {
            let Some(row) = list.iter().find(|r| r["id"] == d.id) else {
                bail!("{} is missing from the daemon's device list", d.id);
            };
            let state = match row["quarantine"].as_str() {
                Some(a) => format!("quarantined ({a})"),
                None => row["mode"].as_str().unwrap_or("?").to_string(),
            };
            println!(
                "  {:<15} {:<18} {:>9} {:>8}  {state}",
                d.id,
                d.class,
                row["allowed_packets"].as_u64().unwrap_or(0),
                row["denied_packets"].as_u64().unwrap_or(0),
            );
        }
        let cfg = self.config();
        println!("\nWhere to look next (while the lab runs: `cargo xtask demo --keep`):");
        println!("  lazaret status --config {}", cfg.display());
        println!("  lazaret devices --live --config {}", cfg.display());
        println!(
            "  ip netns exec {} curl -s http://10.10.0.1:9464/metrics | grep ^lazaret_",
            self.ns("gw").name
        );
        println!(
            "  the daemon's log: {}",
            self.dir.join("lazaret.log").display()
        );
        Ok(())
    }

    pub(super) fn print_keep(&self) {
        println!(
            "\nThe lab keeps running (--keep): the gateway keeps enforcing; the simulated servers \
             stopped with the demo. Explore it:"
        );
        println!(
            "  ip netns exec {} bash          # a shell on pump-depot-01",
            self.ns("pump9").name
        );
        println!("  ip netns list | grep {}-", self.opts.prefix);
        println!(
            "  {} status --config {}",
            self.opts.lazaret.display(),
            self.config().display()
        );
        println!("Tear it down: cargo xtask demo --down");
    }
}
