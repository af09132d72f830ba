//! The lab the story plays in: namespaces and links (step 1), the daemon and its
//! configuration (step 2), the server room's services, and the control socket and CLI.

use super::*;

impl Story<'_> {
    // === Step 1: topology ===

    pub(super) fn build(&mut self) -> Result<()> {
        std::fs::create_dir_all(self.dir.join("state"))?;
        let bpffs = self.dir.join("bpffs");
        std::fs::create_dir_all(&bpffs)?;
        sh(Command::new("mount").args(["-t", "bpf", "bpf"]).arg(&bpffs))
            .context("mounting a private bpf filesystem (needs root)")?;
        let gw = self.create_ns("gw")?;
        gw.set_sysctl("net.ipv4.ip_forward", "1")?;
        let srv = self.create_ns("srv")?;
        veth(&gw, "uplink0", None, &srv, "eth0", None)?;
        for a in SERVER_ADDRS {
            srv.exec(&["ip", "addr", "add", &format!("{a}/16"), "dev", "eth0"])?;
        }
        srv.exec(&["ip", "route", "add", "default", "via", "10.10.0.1"])?;
        for bridge in ["icu0", "pumps0"] {
            gw.exec(&["ip", "link", "add", bridge, "type", "bridge"])?;
            gw.exec(&["ip", "link", "set", bridge, "up"])?;
        }
        for d in DEVICES {
            let ns = self.create_ns(d.ns)?;
            veth(&gw, d.port, None, &ns, "eth0", None)?;
            ns.exec(&["ip", "link", "set", "eth0", "down"])?;
            ns.exec(&["ip", "link", "set", "eth0", "address", d.mac])?;
            ns.exec(&["ip", "addr", "add", &format!("{}/24", d.ip), "dev", "eth0"])?;
            ns.exec(&["ip", "link", "set", "eth0", "up"])?;
            ns.exec(&["ip", "route", "add", "default", "via", d.gateway])?;
            if let Some(bridge) = d.bridge {
                gw.exec(&["ip", "link", "set", d.port, "master", bridge])?;
            }
        }
        for (iface, addr) in GATEWAY_ADDRS {
            gw.exec(&["ip", "addr", "add", addr, "dev", iface])?;
        }
        println!("      server room  10.10.0.0/16  HL7 engine, PACS, pump server, NTP, DNS, biomed jump host");
        println!("      icu0         bridge, VLAN 20  cs-icu-01, mon-icu-01, mon-icu-02 (device to device enforced)");
        println!(
            "      pumps0       bridge, VLAN 30  pump-icu-01 (bed 1), pump-depot-01 (biomed depot)"
        );
        println!("      imaging0     VLAN 40          ct-01");
        Ok(())
    }

    /// A namespace with loopback up and IPv6 off (the demo's devices are IPv4-only, and
    /// router solicitations and MLD reports would only add noise to the counters).
    pub(super) fn create_ns(&self, name: &str) -> Result<Netns> {
        if STOPPING.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        // Kept alive by name: teardown deletes it (and --keep leaves it).
        let ns = Netns::new(format!("{}-{name}", self.opts.prefix))?.keep();
        ns.set_sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
        ns.set_sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
        Ok(ns)
    }

    // === Step 2: the daemon ===

    pub(super) fn start_daemon(&mut self) -> Result<()> {
        let mut cfg = format!(
            "# lazaret demo: the gateway of St. Example General\n\
             policy_dir = \"{}\"\nstate_dir = \"{}\"\npin_dir = \"{}\"\ncontrol_socket = \"{}\"\n\
             metrics_listen = \"10.10.0.1:9464\"\n\n\
             [[interfaces]]\nname = \"uplink0\"\nside = \"upstream\"\n",
            self.opts.policies.display(),
            self.dir.join("state").display(),
            self.dir.join("bpffs").display(),
            self.socket().display(),
        );
        for d in DEVICES {
            cfg.push_str(&format!(
                "\n[[interfaces]]\nname = \"{}\"\nside = \"devices\"\nvlan = {}\n",
                d.port, d.vlan
            ));
            if let Some(b) = d.bridge {
                cfg.push_str(&format!("bridge = \"{b}\"\n"));
            }
        }
        std::fs::write(self.config(), cfg)?;
        let log = std::fs::File::create(self.dir.join("lazaret.log"))?;
        let gw = self.ns("gw");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &gw.name])
            .arg(&self.opts.lazaret)
            .arg("run")
            .arg("--config")
            .arg(self.config())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // Its own process group: a Ctrl-C in the terminal reaches the demo, which tears
        // the lab down in order, not the daemon directly.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().context("starting lazaret run")?;
        std::fs::write(self.dir.join("daemon.pid"), child.id().to_string())?;
        let ready = self.dir.join("state/ready");
        let mut child = child;
        let socket = self.socket();
        let up = wait_until(Duration::from_secs(30), || {
            (ready.exists() && socket.exists()) || matches!(child.try_wait(), Ok(Some(_)))
        });
        if !up || !ready.exists() || !socket.exists() {
            bail!(
                "lazaret run did not become ready; its log:\n{}",
                std::fs::read_to_string(self.dir.join("lazaret.log")).unwrap_or_default()
            );
        }
        // The child is reaped by teardown's kill; a running daemon must not be waited on.
        std::mem::forget(child);
        let status = self.api(&Request::Status {})?;
        if status["policy"] != "repository" {
            // The daemon never starts open: with a policy that does not compile it holds
            // the device ports closed (or enforces its last-known-good). The demo needs the
            // policy it was given.
            bail!(
                "lazaret started without the demo's policy (policy: {}; device ports held closed: {}); its log:\n{}",
                status["policy"],
                status["held"],
                std::fs::read_to_string(self.dir.join("lazaret.log")).unwrap_or_default()
            );
        }
        let generation = status["generation"].as_u64().unwrap_or(0);
        let commit = status["commit"].as_str().unwrap_or("not a git checkout");
        let mut modes = std::collections::BTreeMap::<String, usize>::new();
        for mode in status["interfaces"]
            .as_object()
            .into_iter()
            .flat_map(|m| m.values())
        {
            *modes
                .entry(mode.as_str().unwrap_or("?").to_string())
                .or_default() += 1;
        }
        let ifaces = modes
            .iter()
            .map(|(mode, n)| format!("{n} interfaces in {mode} mode"))
            .collect::<Vec<_>>()
            .join(", ");
        println!("      policy generation {generation} enforcing (commit: {commit})");
        println!("      XDP attached: {ifaces}");
        Ok(())
    }

    pub(super) fn api(&self, request: &Request) -> Result<serde_json::Value> {
        let reply = call(&self.socket(), request)?;
        if !reply.ok {
            bail!(
                "lazaret refused {request:?}: {}",
                reply.error.unwrap_or_default()
            );
        }
        Ok(reply.data.unwrap_or_default())
    }

    /// Runs the real CLI against the demo's daemon and prints it as the audience would
    /// type it.
    pub(super) fn cli(&self, args: &[&str]) -> Result<String> {
        let shown: Vec<String> = args
            .iter()
            .map(|a| {
                if a.contains(' ') {
                    format!("{a:?}")
                } else {
                    a.to_string()
                }
            })
            .collect();
        println!("      $ lazaret {}", shown.join(" "));
        let out = sh(Command::new(&self.opts.lazaret)
            .args(args)
            .arg("--config")
            .arg(self.config()))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    // === The server room ===

    pub(super) fn start_services(&self) -> Result<Vec<thread::JoinHandle<()>>> {
        let srv = self.ns("srv");
        let mut handles = Vec::new();
        let tcp: [(&str, Handler); 4] = [
            (HL7_ENGINE, serve_hl7),
            (PUMP_SERVER, serve_pump),
            (PACS, serve_dicom),
            (JUMP_HOST, serve_ssh_banner),
        ];
        for (addr, handler) in tcp {
            let addr: SocketAddr = addr.parse()?;
            let listener = srv.run(move || TcpListener::bind(addr))??;
            listener.set_nonblocking(true)?;
            let stop = self.stop.clone();
            handles.push(thread::spawn(move || accept_loop(listener, stop, handler)));
        }
        for (addr, reply) in [(NTP, ntp_reply as fn(&[u8]) -> Vec<u8>), (DNS, dns_reply)] {
            let addr: SocketAddr = addr.parse()?;
            let socket = srv.run(move || UdpSocket::bind(addr))??;
            socket.set_read_timeout(Some(Duration::from_millis(100)))?;
            let stop = self.stop.clone();
            handles.push(thread::spawn(move || udp_loop(socket, stop, reply)));
        }
        Ok(handles)
    }
}
