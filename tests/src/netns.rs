//! Network namespaces and veth pairs for integration tests.
//!
//! Every name is unique per test (`lz<pid><seq><tag>`), so tests run in parallel without
//! colliding; everything is torn down when its guard drops, which also happens while a
//! failing test unwinds. Nothing here touches the host's root namespace except creating and
//! deleting namespaces and moving the veth ends it created into them.

use std::{
    fs::File,
    io::Read,
    net::Ipv4Addr,
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A short unique prefix for this test's names (interface names are limited to 15 bytes).
pub fn unique_prefix() -> String {
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    // The separator keeps (pid 1234, seq 56) and (pid 12345, seq 6) apart.
    format!("lz{}x{}", std::process::id() % 100_000, seq)
}

/// Runs a command, failing with its stderr if it fails.
pub fn sh(cmd: &mut Command) -> Result<Output> {
    let out = cmd.output().with_context(|| {
        format!("could not run {cmd:?} (is iproute2 installed? run `cargo xtask setup`)")
    })?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

fn ip(args: &[&str]) -> Result<Output> {
    sh(Command::new("ip").args(args))
}

/// A network namespace, deleted on drop (unless it is a [`Netns::borrowed`] handle).
#[derive(Debug)]
pub struct Netns {
    pub name: String,
    owned: bool,
}

impl Netns {
    pub fn new(name: String) -> Result<Self> {
        ip(&["netns", "add", &name]).context(
            "creating a network namespace needs root (CAP_SYS_ADMIN); run the tests as root",
        )?;
        let ns = Netns { name, owned: true };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A handle on an existing namespace that dropping leaves in place (its owner, or an
    /// explicit teardown, removes it).
    pub fn borrowed(name: String) -> Self {
        Netns { name, owned: false }
    }

    /// Gives up ownership: the namespace outlives this handle.
    pub fn keep(mut self) -> Self {
        self.owned = false;
        self
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, args: &[&str]) -> Result<Output> {
        sh(Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args))
    }

    /// Starts a long-running command inside the namespace; killed when the guard drops.
    /// Its output is drained continuously (a full pipe would block the child) and kept.
    pub fn spawn(&self, args: &[&str]) -> Result<ChildGuard> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("could not start {args:?} in {}", self.name))?;
        let output = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        let streams: [Option<Box<dyn Read + Send>>; 2] = [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ];
        for mut stream in streams.into_iter().flatten() {
            let output = output.clone();
            readers.push(thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut out) = output.lock() {
                        out.extend_from_slice(&buf[..n]);
                    }
                }
            }));
        }
        Ok(ChildGuard {
            child: Some(child),
            output,
            readers,
        })
    }

    /// Runs `f` on a thread that has entered this namespace: sockets it creates live in the
    /// namespace and may be used from any thread afterwards.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let path = format!("/run/netns/{}", self.name);
        let file = File::open(&path).with_context(|| format!("opening {path}"))?;
        thread::spawn(move || -> Result<T> {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| anyhow!("setns: {e}"))?;
            Ok(f())
        })
        .join()
        .map_err(|_| anyhow!("thread inside namespace panicked"))?
    }

    /// Runs `f` on a scoped thread that has entered this namespace, so `f` may borrow:
    /// for BPF_PROG_TEST_RUN on this namespace's interfaces.
    pub fn within<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let path = format!("/run/netns/{}", self.name);
        let file = File::open(&path).with_context(|| format!("opening {path}"))?;
        thread::scope(|scope| {
            scope
                .spawn(move || -> Result<T> {
                    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                        .map_err(|e| anyhow!("setns: {e}"))?;
                    Ok(f())
                })
                .join()
                .map_err(|_| anyhow!("thread inside namespace panicked"))?
        })
    }

    pub fn set_sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.exec(&["sysctl", "-qw", &format!("{key}={value}")])?;
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        // Deleting the namespace destroys the veth ends inside it (and their peers).
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// A child process killed (and reaped) on drop.
#[derive(Debug)]
pub struct ChildGuard {
    child: Option<Child>,
    output: Arc<Mutex<Vec<u8>>>,
    readers: Vec<thread::JoinHandle<()>>,
}

impl ChildGuard {
    pub fn child_mut(&mut self) -> Option<&mut Child> {
        self.child.as_mut()
    }

    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends a signal to the process and its `ip netns exec` wrapper's child.
    pub fn signal(&self, sig: libc::c_int) {
        if let Some(c) = &self.child {
            // A pid we spawned and have not reaped; an unknown signal number sends nothing.
            if let Ok(sig) = nix::sys::signal::Signal::try_from(sig) {
                let pid = nix::unistd::Pid::from_raw(c.id() as i32);
                let _ = nix::sys::signal::kill(pid, sig);
            }
        }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// What the process printed so far (stdout and stderr interleaved).
    pub fn output(&self) -> String {
        self.output
            .lock()
            .map(|o| String::from_utf8_lossy(&o).into_owned())
            .unwrap_or_default()
    }

    /// Kills the process and returns what it printed.
    pub fn stop(&mut self) -> String {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        self.output()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Creates a veth pair with one end in each namespace, addresses them and brings them up.
/// Returns the two interface names.
pub fn veth(
    a: &Netns,
    a_name: &str,
    a_addr: Option<&str>,
    b: &Netns,
    b_name: &str,
    b_addr: Option<&str>,
) -> Result<()> {
    // Create inside namespace `a` directly, so nothing ever exists in the root namespace.
    a.exec(&[
        "ip", "link", "add", a_name, "type", "veth", "peer", "name", b_name, "netns", &b.name,
    ])?;
    for (ns, name, addr) in [(a, a_name, a_addr), (b, b_name, b_addr)] {
        if let Some(addr) = addr {
            ns.exec(&["ip", "addr", "add", addr, "dev", name])?;
        }
        ns.exec(&["ip", "link", "set", name, "up"])?;
    }
    Ok(())
}

/// The MAC address of an interface inside a namespace.
pub fn mac_of(ns: &Netns, ifname: &str) -> Result<[u8; 6]> {
    let out = ns.exec(&["cat", &format!("/sys/class/net/{ifname}/address")])?;
    parse_mac(String::from_utf8_lossy(&out.stdout).trim())
}

pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        bail!("not a MAC address: {s:?}");
    }
    for (i, p) in parts.iter().enumerate() {
        mac[i] = u8::from_str_radix(p, 16).with_context(|| format!("not a MAC address: {s:?}"))?;
    }
    Ok(mac)
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// The classic three-namespace topology: a device, a gateway routing between a device-side
/// and an upstream veth, and a server.
#[derive(Debug)]
pub struct Routed {
    pub device: Netns,
    pub gateway: Netns,
    pub server: Netns,
    /// Gateway-side interface facing the device, and the one facing the server.
    pub gw_dev_if: String,
    pub gw_up_if: String,
    pub device_if: String,
    pub server_if: String,
    pub device_mac: [u8; 6],
    pub device_ip: Ipv4Addr,
    pub server_ip: Ipv4Addr,
}

impl Routed {
    /// device 10.20.0.11/24 — gateway 10.20.0.1 | 10.10.0.1 — server 10.10.0.20/24.
    pub fn new() -> Result<Self> {
        let p = unique_prefix();
        let device = Netns::new(format!("{p}dev"))?;
        let gateway = Netns::new(format!("{p}gw"))?;
        let server = Netns::new(format!("{p}srv"))?;
        let (device_if, gw_dev_if) = (format!("{p}d"), format!("{p}gd"));
        let (server_if, gw_up_if) = (format!("{p}s"), format!("{p}gu"));
        veth(
            &device,
            &device_if,
            Some("10.20.0.11/24"),
            &gateway,
            &gw_dev_if,
            Some("10.20.0.1/24"),
        )?;
        veth(
            &server,
            &server_if,
            Some("10.10.0.20/24"),
            &gateway,
            &gw_up_if,
            Some("10.10.0.1/24"),
        )?;
        device.exec(&["ip", "route", "add", "default", "via", "10.20.0.1"])?;
        server.exec(&["ip", "route", "add", "default", "via", "10.10.0.1"])?;
        gateway.set_sysctl("net.ipv4.ip_forward", "1")?;
        let device_mac = mac_of(&device, &device_if)?;
        Ok(Routed {
            device,
            gateway,
            server,
            gw_dev_if,
            gw_up_if,
            device_if,
            server_if,
            device_mac,
            device_ip: Ipv4Addr::new(10, 20, 0, 11),
            server_ip: Ipv4Addr::new(10, 10, 0, 20),
        })
    }
}

/// A private bpffs mounted on a temporary directory, unmounted and removed on drop: the
/// daemon under test pins its maps there, never in the host's /sys/fs/bpf.
#[derive(Debug)]
pub struct BpfMount {
    pub path: std::path::PathBuf,
}

impl BpfMount {
    pub fn new(parent: &std::path::Path) -> Result<Self> {
        let path = parent.join("bpffs");
        std::fs::create_dir_all(&path)?;
        sh(Command::new("mount").args(["-t", "bpf", "bpf"]).arg(&path))
            .context("mounting a bpf filesystem needs root")?;
        Ok(BpfMount { path })
    }
}

impl Drop for BpfMount {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// A temporary directory removed on drop.
#[derive(Debug)]
pub struct TempDir {
    pub path: std::path::PathBuf,
}

impl TempDir {
    /// A new, empty directory: a name already taken (left by an earlier process with this
    /// pid, whose lab outlived it) is skipped for the next one, so a lab never starts with
    /// another lab's files and never removes what it did not create.
    pub fn new() -> Result<Self> {
        for _ in 0..100 {
            let name = format!("{}-{}", unique_prefix(), std::process::id());
            let path = std::env::temp_dir().join(name);
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(TempDir { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
            }
        }
        bail!("100 temporary directory names of this process are all taken")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Sends raw Ethernet frames out of `ifname` inside `ns` through an AF_PACKET socket.
pub fn send_raw(ns: &Netns, ifname: &str, frames: Vec<Vec<u8>>) -> Result<()> {
    let sock = RawSocket::open(ns, ifname)?;
    frames.iter().try_for_each(|f| sock.send(f))
}

/// An AF_PACKET socket bound to an interface of a namespace. The socket stays in the
/// namespace it was made in, so any thread may send through it: a paced stream needs no
/// thread of its own inside the namespace.
pub struct RawSocket(std::os::fd::OwnedFd);

impl RawSocket {
    pub fn open(ns: &Netns, ifname: &str) -> Result<RawSocket> {
        use std::os::fd::FromRawFd;
        let ifname = ifname.to_string();
        ns.run(move || -> Result<RawSocket> {
            let c = std::ffi::CString::new(ifname.clone())?;
            // SAFETY: plain libc calls with valid arguments; the fd is owned at once.
            unsafe {
                let index = libc::if_nametoindex(c.as_ptr());
                if index == 0 {
                    bail!("no interface {ifname}");
                }
                let fd = libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW,
                    i32::from((libc::ETH_P_ALL as u16).to_be()),
                );
                if fd < 0 {
                    bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
                }
                let sock = RawSocket(std::os::fd::OwnedFd::from_raw_fd(fd));
                let mut addr: libc::sockaddr_ll = std::mem::zeroed();
                addr.sll_family = libc::AF_PACKET as u16;
                addr.sll_ifindex = index as i32;
                addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
                let rc = libc::bind(
                    fd,
                    std::ptr::addr_of!(addr).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                );
                if rc != 0 {
                    bail!("bind AF_PACKET: {}", std::io::Error::last_os_error());
                }
                Ok(sock)
            }
        })?
    }

    /// Makes [`Self::recv`] give up after `timeout`, so a reader can check for its stop.
    pub fn with_read_timeout(self, timeout: Duration) -> Result<RawSocket> {
        use std::os::fd::AsRawFd;
        let tv = libc::timeval {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_usec: libc::suseconds_t::from(timeout.subsec_micros()),
        };
        // SAFETY: setting an option of a socket we own from a value that outlives the call.
        let rc = unsafe {
            libc::setsockopt(
                self.0.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                std::ptr::addr_of!(tv).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        if rc != 0 {
            bail!("SO_RCVTIMEO: {}", std::io::Error::last_os_error());
        }
        Ok(self)
    }

    /// Receives one frame into `buf`: its length, or `None` when none came (timeout).
    pub fn recv(&self, buf: &mut [u8]) -> Option<usize> {
        use std::os::fd::AsRawFd;
        // SAFETY: receiving into a buffer we own, on a socket we own.
        let n = unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        usize::try_from(n).ok().filter(|&n| n > 0)
    }

    /// Sends one frame.
    pub fn send(&self, frame: &[u8]) -> Result<()> {
        use std::os::fd::AsRawFd;
        // SAFETY: sending a buffer we own on a socket we own.
        let n = unsafe { libc::send(self.0.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 {
            bail!("send: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }
}
