//! The configuration checked like policy, through the real binary: `lazaret config check`
//! reports every problem at once on its token, and `lazaret check --config` checks the
//! policy against the configuration (what the daemon would otherwise refuse at start).

use std::process::Command;

use anyhow::Result;
use lazaret_tests::{lazaret_bin, netns::TempDir};

fn run(args: &[&str]) -> Result<(i32, String, String)> {
    let out = Command::new(lazaret_bin()?).args(args).output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[test]
fn config_check_reports_every_problem_once() -> Result<()> {
    let dir = TempDir::new()?;
    let path = dir.path.join("lazaret.toml");
    std::fs::write(
        &path,
        "policy_dir = \"p\"\nlog_format = \"xml\"\n[[interfaces]]\nname = \"icu0\"\nside = \"dev\"\nbogus = 1\n",
    )?;
    let p = path.to_str().unwrap_or_default();
    let (code, _, err) = run(&["config", "check", "--config", p])?;
    assert_eq!(code, 1, "{err}");
    for expected in [
        format!("error: {p}:2:14: log_format"),
        format!("error: {p}:5:8: side"),
        format!("error: {p}:6:1: unknown key `bogus`"),
    ] {
        assert!(err.contains(&expected), "missing {expected:?} in:\n{err}");
    }
    assert!(!err.contains("error: error:"), "doubled prefix:\n{err}");
    // Unreadable: an I/O failure (2), not a configuration with problems (1).
    let (code, _, err) = run(&["config", "check", "--config", "/nonexistent/lazaret.toml"])?;
    assert_eq!(code, 2);
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
    Ok(())
}

#[test]
fn check_with_config_finds_interfaces_the_configuration_does_not_enforce() -> Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let policies = root.join("policies");
    let dir = TempDir::new()?;
    // The shipped configuration without `imaging0`, and `pumps0` turned upstream.
    let shipped = std::fs::read_to_string(root.join("deploy/lazaret.toml"))?;
    let mut text = shipped.replace(
        "policy_dir = \"/etc/lazaret/policies\"",
        &format!("policy_dir = \"{}\"", policies.display()),
    );
    text = text.replace("name = \"imaging0\"", "name = \"imaging9\"");
    text = text.replacen(
        "name = \"pumps0\"\nside = \"devices\"",
        "name = \"pumps0\"\nside = \"upstream\"",
        1,
    );
    let path = dir.path.join("lazaret.toml");
    std::fs::write(&path, &text)?;
    let p = path.to_str().unwrap_or_default();
    let (code, _, err) = run(&["check", "--config", p])?;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("interface `imaging0` is not in the configuration"),
        "{err}"
    );
    assert!(
        err.contains("interface `pumps0` faces devices in the policy but upstream"),
        "{err}"
    );
    assert!(
        err.contains("site.toml:"),
        "positioned in the policy:\n{err}"
    );
    // The shipped pair agrees, and the policy directory comes from the configuration.
    std::fs::write(
        &path,
        shipped.replace(
            "policy_dir = \"/etc/lazaret/policies\"",
            &format!("policy_dir = \"{}\"", policies.display()),
        ),
    )?;
    let (code, out, err) = run(&["check", "--config", p])?;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("devices"), "{out}");
    Ok(())
}

/// Two wards behind two gateways of one repository; ward-a is a pair.
const FLEET: &str = r#"
[site]
name = "Fleet General"
[site.essentials]
dhcp = false
dns = false
ntp = false
[site.interfaces.icu0]
side = "devices"
[site.interfaces.pumps0]
side = "devices"
[site.interfaces.up0]
side = "upstream"
[site.gateways.ward-a]
interfaces = ["icu0", "up0"]
members = ["gw-a1", "gw-a2"]
[site.gateways.ward-b]
interfaces = ["pumps0", "up0"]

[roles.pump-server]
addresses = ["10.10.3.10"]
[classes.pump]
workflows = ["sync"]
[workflows.sync]
rules = [{ peer = "role:pump-server", proto = "tcp", ports = [443] }]

[[devices]]
id = "pump-a"
class = "pump"
ipv4 = "10.20.0.11"
interface = "icu0"

[[devices]]
id = "pump-b"
class = "pump"
ipv4 = "10.30.0.11"
interface = "pumps0"
"#;

#[test]
fn check_with_config_checks_the_gateway_this_host_is_and_no_other() -> Result<()> {
    let dir = TempDir::new()?;
    let policies = dir.path.join("policies");
    std::fs::create_dir(&policies)?;
    std::fs::write(policies.join("site.toml"), FLEET)?;
    let config = |extra: &str| {
        format!(
            "policy_dir = \"{}\"\n{extra}\n[[interfaces]]\nname = \"icu0\"\nside = \"devices\"\n[[interfaces]]\nname = \"up0\"\nside = \"upstream\"\n",
            policies.display()
        )
    };
    let path = dir.path.join("lazaret.toml");
    let p = path.to_str().unwrap_or_default();
    // ward-a's member: pumps0 is ward-b's, so this host need not enforce on it.
    std::fs::write(&path, config("gateway = \"ward-a\"\nmember = \"gw-a1\""))?;
    let (code, out, err) = run(&["check", "--config", p])?;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("gateway ward-a (members gw-a1, gw-a2): 1 device on icu0, up0"),
        "{out}"
    );
    assert!(
        out.contains("gateway ward-b: 1 device on pumps0, up0"),
        "{out}"
    );
    let (code, out, err) = run(&["check", "--config", p, "--format", "json"])?;
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out)?;
    assert_eq!(json["gateways"][0]["name"], "ward-a");
    assert_eq!(json["gateways"][0]["devices"], 1);
    // Each way the configuration and the policy can disagree, refused with the reason.
    for (extra, expected) in [
        (
            "",
            "the policy names gateways (`ward-a`, `ward-b`): set `gateway",
        ),
        (
            "gateway = \"ward-c\"",
            "gateway `ward-c`, which the policy does not name",
        ),
        (
            "gateway = \"ward-a\"\nmember = \"gw-b1\"",
            "this host is `gw-b1`, which is not a member of gateway `ward-a`",
        ),
        // ward-b's interfaces are checked against a configuration that lacks pumps0.
        (
            "gateway = \"ward-b\"",
            "interface `pumps0` is not in the configuration",
        ),
    ] {
        std::fs::write(&path, config(extra))?;
        let (code, _, err) = run(&["check", "--config", p])?;
        assert_eq!(code, 1, "{extra}: {err}");
        assert!(
            err.contains(expected),
            "{extra}: missing {expected:?} in:\n{err}"
        );
        assert!(
            err.contains("site.toml:"),
            "positioned in the policy:\n{err}"
        );
    }
    Ok(())
}

/// `lazaret compile` prints the compiled policy for people by default (each distinct
/// allow-list, its entries and who it is enforced for), and JSON when asked.
#[test]
fn compile_prints_text_by_default_and_json_when_asked() -> Result<()> {
    let policies = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let p = policies.to_str().unwrap_or_default();
    let (code, out, err) = run(&["compile", p])?;
    assert_eq!(code, 0, "{err}");
    assert!(!out.trim_start().starts_with('{'), "text, not JSON:\n{out}");
    assert!(
        out.contains("(the site quarantine profile)")
            && out.contains(
                "device -> 10.10.9.5/32 tcp/22  rule #3 (quarantine profile, allow entry 1)"
            ),
        "{out}"
    );
    assert!(out.contains("while restricted, for"), "{out}");
    let (code, out, err) = run(&["compile", p, "--format", "json"])?;
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out)?;
    assert!(json["devices"].as_array().is_some_and(|d| !d.is_empty()));
    Ok(())
}

/// Shell completions and man pages come from the binary itself, and the exit statuses are
/// in `--help` and the man page.
#[test]
fn completions_man_pages_and_exit_statuses_are_generated() -> Result<()> {
    let (code, out, err) = run(&["completions", "bash"])?;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("_lazaret()") && out.contains("quarantine"),
        "{out}"
    );
    let (code, out, err) = run(&["--help"])?;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("Exit status:") && out.contains("2  anything else"),
        "{out}"
    );
    let dir = TempDir::new()?;
    let man = dir.path.join("man");
    let (code, _, err) = run(&["man", "--out", man.to_str().unwrap_or_default()])?;
    assert_eq!(code, 0, "{err}");
    let page = std::fs::read_to_string(man.join("lazaret.1"))?;
    assert!(page.contains("Exit status"), "{page}");
    for sub in [
        "lazaret-check.1",
        "lazaret-quarantine-add.1",
        "lazaret-plan.1",
    ] {
        assert!(man.join(sub).is_file(), "{sub} missing");
    }
    let (code, _, err) = run(&["completions", "tcsh"])?;
    assert_eq!(code, 2, "an unknown shell is a usage error: {err}");
    Ok(())
}
