//! Helpers of the reliability suite (`fault_*`, `flood_*`, `ns_access`): raw HTTP to the
//! daemon's metrics endpoint, reading one metric, running a program as another user, and
//! recording the figure a test measured for `docs/reliability.md`.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::PathBuf,
    process::{Command, Output},
    time::Duration,
};

use anyhow::{bail, Context, Result};

use crate::daemon::Lab;

/// One HTTP/1.1 request to the metrics endpoint from inside the gateway namespace: the
/// status code and the body.
pub fn http(lab: &Lab, method: &str, path: &str) -> Result<(u16, String)> {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: lazaret\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let reply = lab.net.gateway.run(move || -> std::io::Result<String> {
        let mut s = TcpStream::connect("127.0.0.1:9464")?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(request.as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })??;
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no HTTP status in {head:?}"))?;
    Ok((code, body.to_string()))
}

/// The value of the first sample of `name` whose labels include `labels`, from a scrape.
pub fn metric(lab: &Lab, name: &str, labels: &[(&str, &str)]) -> Result<Option<f64>> {
    let (code, body) = http(lab, "GET", "/metrics")?;
    if code != 200 {
        bail!("metrics endpoint answered {code}");
    }
    Ok(body.lines().find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
        let wanted = metric == name
            && labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
        wanted.then(|| value.parse().ok()).flatten()
    }))
}

/// Runs `program args` as `uid`:`gid` with exactly the supplementary `groups`.
pub fn run_as(uid: u32, gid: u32, groups: &[u32], program: &str, args: &[&str]) -> Result<Output> {
    use std::os::unix::process::CommandExt;
    let groups: Vec<libc::gid_t> = groups.to_vec();
    let mut cmd = Command::new(program);
    cmd.args(args);
    // SAFETY: only async-signal-safe calls (setgroups, setgid, setuid) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(cmd.output()?)
}

/// One control request over the socket as another user, through python3 (so nothing of the
/// test binary runs with dropped privileges): the reply line.
pub fn control_as(uid: u32, gid: u32, groups: &[u32], socket: &std::path::Path) -> Result<String> {
    const CLIENT: &str = "import socket,sys\n\
        s=socket.socket(socket.AF_UNIX)\n\
        s.connect(sys.argv[1])\n\
        try:\n    s.sendall(b'{\"cmd\":\"status\"}\\n')\nexcept BrokenPipeError:\n    pass\n\
        print(s.makefile().readline().strip())\n";
    let out = run_as(
        uid,
        gid,
        groups,
        "python3",
        &["-c", CLIENT, socket.to_str().context("socket path")?],
    )?;
    if !out.status.success() {
        bail!(
            "control client as uid {uid} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Where tests write the figures they measured: `target/reliability/`, next to the build.
pub fn figures_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("reliability")
}

/// Records the figure test `test` measured (one line of text), for `cargo xtask
/// reliability`, which writes the table of `docs/reliability.md` from these files.
pub fn record_figure(test: &str, figure: &str) {
    let dir = figures_dir();
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join(format!("{test}.txt")), format!("{figure}\n"));
    eprintln!("{test}: {figure}");
}
