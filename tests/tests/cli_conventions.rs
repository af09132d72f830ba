//! The CLI's conventions, through the real binary on the example hospital: `--config` and
//! `--output` are global (before or after the command), CSV only where there is a table,
//! the documented exit statuses (`check --deny-warnings`, `plan --detailed-exitcode`), and
//! `import csv` on the example's own export (what it writes checks and plans), and
//! snapshots of each offline command's text and JSON output (`tests/snapshots/`; review a
//! deliberate change with `cargo insta review`, or rerun with `INSTA_UPDATE=always`).
//! The daemon's commands are snapshotted on their renderers (`cli::control_cmds` tests).

use std::{path::Path, process::Command};

use anyhow::{ensure, Result};
use lazaret_tests::{lazaret_bin, netns::TempDir};

/// Runs lazaret in the repository's root (so `policies` is the example hospital):
/// (exit status, stdout, stderr).
fn lazaret(args: &[&str]) -> Result<(i32, String, String)> {
    lazaret_in(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..").as_path(),
        args,
    )
}

fn lazaret_in(dir: &Path, args: &[&str]) -> Result<(i32, String, String)> {
    let out = Command::new(lazaret_bin()?)
        .args(args)
        .current_dir(dir)
        .output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// stdout of a command that must succeed.
fn stdout(args: &[&str]) -> Result<String> {
    let (code, out, err) = lazaret(args)?;
    ensure!(code == 0, "lazaret {args:?} exited {code}: {err}");
    Ok(out)
}

/// A copy of the example hospital in a temporary directory.
fn example_copy() -> Result<TempDir> {
    let tmp = TempDir::new()?;
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let ok = Command::new("cp")
        .arg("-r")
        .arg(&src)
        .arg(tmp.path.join("policies"))
        .status()?
        .success();
    ensure!(ok, "copying the example policy");
    Ok(tmp)
}

/// The monitor's HL7 results to the interface engine: allowed.
const EXPLAIN_ALLOW: [&str; 8] = [
    "explain",
    "policies",
    "--from",
    "mon-icu-01",
    "--to",
    "10.10.1.20",
    "--port",
    "2575",
];

#[test]
fn config_and_output_are_global() -> Result<()> {
    let before = stdout(&[
        "--output",
        "csv",
        "devices",
        "policies",
        "--today",
        "2026-12-01",
    ])?;
    let after = stdout(&[
        "devices",
        "policies",
        "--today",
        "2026-12-01",
        "--output",
        "csv",
    ])?;
    ensure!(
        before == after,
        "--output before and after the command differ"
    );
    ensure!(before.starts_with("id,class,mac,"), "not CSV: {before}");
    // The old spellings still work: --format (and its `table`), --json.
    let old = stdout(&[
        "devices",
        "policies",
        "--today",
        "2026-12-01",
        "--format",
        "table",
    ])?;
    let new = stdout(&["devices", "policies", "--today", "2026-12-01"])?;
    ensure!(old == new, "--format table is not --output text");
    let old = stdout(&["check", "policies", "--json"])?;
    let new = stdout(&["check", "policies", "--output", "json"])?;
    ensure!(old == new, "--json is not --output json");
    // --config before and after: the same configuration read (its error names it).
    for args in [
        &["--config", "/nonexistent/lazaret.toml", "status"][..],
        &["status", "--config", "/nonexistent/lazaret.toml"],
    ] {
        let (code, _, err) = lazaret(args)?;
        ensure!(
            code == 2 && err.contains("/nonexistent/lazaret.toml"),
            "lazaret {args:?}: exit {code}, {err}"
        );
    }
    Ok(())
}

/// The global `--config` names the policy directory of the commands that read one, and
/// commands that print only text refuse another output rather than ignore it.
#[test]
fn config_names_the_policy_and_text_only_commands_refuse_json() -> Result<()> {
    let tmp = example_copy()?;
    let config = tmp.path.join("lazaret.toml");
    std::fs::write(
        &config,
        format!(
            "policy_dir = \"{}\"\n[[interfaces]]\nname = \"icu0\"\nside = \"devices\"\n",
            tmp.path.join("policies").display()
        ),
    )?;
    let config = config.to_string_lossy().into_owned();
    let empty = TempDir::new()?;
    let (code, out, err) = lazaret_in(&empty.path, &["--config", &config, "devices"])?;
    ensure!(
        code == 0 && out.contains("pump-icu-01"),
        "devices: exit {code}, {err}"
    );
    let (code, _, err) = lazaret_in(&empty.path, &["--config", &config, "compile"])?;
    ensure!(code == 0, "compile: exit {code}, {err}");
    for args in [
        &[
            "learn",
            "export",
            "--device",
            "mon-icu-01",
            "--output",
            "json",
        ][..],
        &["detach", "--output", "json"],
        &["run", "--output", "csv"],
    ] {
        let (code, _, err) = lazaret(args)?;
        ensure!(
            code == 2 && err.contains("prints only text"),
            "{args:?}: exit {code}, {err}"
        );
    }
    // An unreadable configuration is an I/O failure (2), one with problems a finding (1).
    let (code, _, err) = lazaret(&["config", "check", "--config", "/nonexistent.toml"])?;
    ensure!(code == 2, "unreadable: exit {code}, {err}");
    Ok(())
}

#[test]
fn csv_is_refused_where_there_is_no_table() -> Result<()> {
    for args in [
        &["check", "policies"][..],
        &["compile", "policies"],
        &EXPLAIN_ALLOW,
        &["plan", "policies", "policies"],
        &["status", "--socket", "/nonexistent"],
        &["quarantine", "list", "--socket", "/nonexistent"],
    ] {
        let mut args = args.to_vec();
        args.extend(["--output", "csv"]);
        let (code, out, err) = lazaret(&args)?;
        ensure!(
            code == 2 && out.is_empty() && err.contains("prints no table"),
            "lazaret {args:?}: exit {code}, {out}{err}"
        );
    }
    Ok(())
}

#[test]
fn check_deny_warnings_fails_on_a_warning() -> Result<()> {
    let tmp = example_copy()?;
    let dir = tmp.path.join("policies");
    std::fs::write(
        dir.join("unused.toml"),
        "[roles.retired-pacs]\ndescription = \"The old PACS\"\naddresses = [\"10.10.9.9\"]\n",
    )?;
    let dir = dir.to_string_lossy().into_owned();
    let (code, _, err) = lazaret(&["check", &dir])?;
    ensure!(
        code == 0 && err.contains("warning"),
        "without: exit {code}, {err}"
    );
    let (code, _, err) = lazaret(&["check", &dir, "--deny-warnings"])?;
    ensure!(
        code == 1 && err.contains("--deny-warnings"),
        "with: exit {code}, {err}"
    );
    let (code, out, _) = lazaret(&["check", &dir, "--deny-warnings", "--output", "json"])?;
    let json: serde_json::Value = serde_json::from_str(&out)?;
    ensure!(code == 1 && json["ok"] == false, "json: exit {code}, {out}");
    // The example has none.
    let (code, _, err) = lazaret(&["check", "policies", "--deny-warnings"])?;
    ensure!(code == 0, "the example hospital: exit {code}, {err}");
    Ok(())
}

#[test]
fn plan_detailed_exitcode_says_whether_anything_changes() -> Result<()> {
    let tmp = example_copy()?;
    let changed = tmp.path.join("policies");
    let pumps = changed.join("devices/pumps.toml");
    let text = std::fs::read_to_string(&pumps)?;
    std::fs::write(&pumps, text.replacen("10.30.0.12", "10.30.0.13", 1))?;
    let changed = changed.to_string_lossy().into_owned();
    let plan = |new: &str| lazaret(&["plan", "policies", new, "--detailed-exitcode"]);
    let (code, _, err) = plan("policies")?;
    ensure!(code == 0, "no change: exit {code}, {err}");
    let (code, out, err) = plan(&changed)?;
    insta::assert_snapshot!("plan_changed_text", out);
    let (_, json, _) = lazaret(&["plan", "policies", &changed, "--output", "json"])?;
    let json: serde_json::Value = serde_json::from_str(&json)?;
    insta::assert_snapshot!("plan_changed_json", serde_json::to_string_pretty(&json)?);
    ensure!(
        code == 2 && out.contains("pump-icu-02"),
        "a change: exit {code}, {out}{err}"
    );
    std::fs::write(changed.clone() + "/broken.toml", "[[devices]\n")?;
    let (code, _, err) = plan(&changed)?;
    ensure!(code == 1, "an error: exit {code}, {err}");
    // Every failure is 1 with the flag, I/O and usage included (2 would read as changes).
    for args in [
        &["plan", "policies", "/nonexistent", "--detailed-exitcode"][..],
        &[
            "plan",
            "policies",
            "policies",
            "--detailed-exitcode",
            "--output",
            "csv",
        ],
    ] {
        let (code, _, err) = lazaret(args)?;
        ensure!(code == 1, "{args:?}: exit {code}, {err}");
    }
    // Without the flag, a plan with changes is a success.
    let (code, _, _) = lazaret(&["plan", "policies", "policies"])?;
    ensure!(code == 0, "plain plan: exit {code}");
    Ok(())
}

/// Each offline command's text and JSON output on the example hospital, as a snapshot.
#[test]
fn offline_commands_output() -> Result<()> {
    let today = ["--today", "2026-12-01"];
    let explain_deny = [
        "explain",
        "policies",
        "--from",
        "pump-icu-01",
        "--to",
        "10.10.1.20",
        "--port",
        "23",
    ];
    let cases: [(&str, Vec<&str>); 7] = [
        ("check", vec!["check", "policies"]),
        ("devices", [&["devices", "policies"][..], &today].concat()),
        ("explain_allow", EXPLAIN_ALLOW.to_vec()),
        ("explain_deny", explain_deny.to_vec()),
        ("plan_none", vec!["plan", "policies", "policies"]),
        ("compile", vec!["compile", "policies"]),
        (
            "devices_csv",
            [&["devices", "policies", "--output", "csv"][..], &today].concat(),
        ),
    ];
    for (name, args) in cases {
        // explain's deny exits 1 (a finding); everything else here 0.
        let want = if name == "explain_deny" { 1 } else { 0 };
        let (code, out, err) = lazaret(&args)?;
        ensure!(code == want, "{args:?}: exit {code}, {err}");
        insta::assert_snapshot!(format!("{name}_text"), out);
        if name.ends_with("csv") || name == "compile" {
            continue;
        }
        let mut args = args.clone();
        args.extend(["--output", "json"]);
        let (code, out, err) = lazaret(&args)?;
        ensure!(code == want, "{args:?}: exit {code}, {err}");
        let json: serde_json::Value =
            serde_json::from_str(&out).map_err(|e| anyhow::anyhow!("{args:?}: {e}: {err}"))?;
        insta::assert_snapshot!(format!("{name}_json"), serde_json::to_string_pretty(&json)?);
    }
    Ok(())
}

/// `config check`, text and JSON.
#[test]
fn config_check_output() -> Result<()> {
    let tmp = TempDir::new()?;
    std::fs::write(
        tmp.path.join("lazaret.toml"),
        "policy_dir = \"policies\"\n[[interfaces]]\nname = \"icu0\"\nside = \"devices\"\n\
         [[interfaces]]\nname = \"wan0\"\nside = \"upstream\"\n",
    )?;
    let check = ["config", "check", "--config", "lazaret.toml"];
    let (code, out, err) = lazaret_in(&tmp.path, &check)?;
    ensure!(code == 0, "exit {code}: {err}");
    insta::assert_snapshot!("config_check_text", out);
    let (code, out, err) = lazaret_in(&tmp.path, &[&check[..], &["--output", "json"]].concat())?;
    ensure!(code == 0, "json: exit {code}, {err}");
    let json: serde_json::Value = serde_json::from_str(&out)?;
    insta::assert_snapshot!("config_check_json", serde_json::to_string_pretty(&json)?);
    Ok(())
}

// === `lazaret import csv` on the example hospital's own export (policies/import/); the
// importer's catalog of messy and hostile exports is in gateway/src/import/csv/tests.rs ===

const IMPORT: [&str; 7] = [
    "import",
    "csv",
    "policies/import/cmms-export.csv",
    "--mapping",
    "policies/import/cmms-mapping.toml",
    "--dir",
    "policies",
];

/// The example hospital as committed.
fn example() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

/// Whether two directories hold the same files with the same bytes.
fn same_tree(a: &Path, b: &Path) -> Result<bool> {
    Ok(Command::new("diff")
        .arg("-r")
        .arg(a)
        .arg(b)
        .output()?
        .status
        .success())
}

#[test]
fn the_example_export_imports_passes_check_and_shows_in_plan() -> Result<()> {
    let tmp = example_copy()?;
    let dir = tmp.path.as_path();

    let (code, out, err) = lazaret_in(dir, &[&IMPORT[..], &["--dry-run"]].concat())?;
    ensure!(code == 0, "dry run exited {code}: {err}");
    ensure!(out.contains("+ pump-icu-03 → "), "{out}");
    ensure!(out.contains("1 new, 0 changed, 10 unchanged"), "{out}");
    ensure!(out.contains("Dry run: nothing written."), "{out}");
    ensure!(
        same_tree(&example(), &dir.join("policies"))?,
        "a dry run wrote"
    );

    let (code, out, err) = lazaret_in(dir, &IMPORT)?;
    ensure!(code == 0, "import exited {code}: {err}");
    ensure!(out.contains("wrote policies/devices/cmms.toml"), "{out}");

    let (code, out, err) = lazaret_in(dir, &["check", "policies", "--deny-warnings"])?;
    ensure!(
        code == 0,
        "check of the imported policy exited {code}: {out}{err}"
    );
    ensure!(out.contains("11 devices"), "{out}");

    let before = example();
    let before = before.to_string_lossy();
    let (code, out, err) = lazaret_in(dir, &["plan", &before, "policies"])?;
    ensure!(code == 0, "plan exited {code}: {err}");
    ensure!(
        out.contains("+ pump-icu-03 (infusion-pump) new device"),
        "{out}"
    );
    ensure!(out.contains("1 device changed"), "{out}");

    let (code, out, err) = lazaret_in(dir, &IMPORT)?;
    ensure!(code == 0, "second import exited {code}: {err}");
    ensure!(out.contains("No changes"), "{out}");
    Ok(())
}

#[test]
fn a_refused_import_exits_1_names_the_row_and_writes_nothing() -> Result<()> {
    let tmp = example_copy()?;
    let dir = tmp.path.as_path();
    let export = dir.join("policies/import/cmms-export.csv");
    let text = std::fs::read_to_string(&export)?;
    ensure!(
        text.contains("00-30-E6-20-00-30"),
        "the example export changed"
    );
    std::fs::write(&export, text.replace("00-30-E6-20-00-30", "00-30-E6-20-00"))?;
    let (code, out, err) = lazaret_in(dir, &IMPORT)?;
    ensure!(code == 1, "exited {code}: {out}{err}");
    ensure!(
        err.contains("line 2, column \"MAC Address\": \"00-30-E6-20-00\" is not a MAC address"),
        "{err}"
    );
    ensure!(err.contains("nothing was written"), "{err}");
    ensure!(
        same_tree(&example().join("devices"), &dir.join("policies/devices"))?,
        "a refused import wrote"
    );
    Ok(())
}

#[test]
fn the_example_mud_file_imports_and_agrees_with_the_policy() -> Result<()> {
    let tmp = example_copy()?;
    let dir = tmp.path.as_path();
    let import = [
        "import",
        "mud",
        "policies/import/plum360.mud.json",
        "--binding",
        "policies/import/plum360-binding.toml",
        "--dir",
        "policies",
    ];
    let (code, out, err) = lazaret_in(dir, &[&import[..], &["--dry-run"]].concat())?;
    ensure!(code == 0, "dry run exited {code}: {err}");
    ensure!(
        out.contains("+ device -> role:pump-server tcp/51243"),
        "{out}"
    );
    ensure!(
        out.contains("left out pump-v4-fr/lldp: an Ethernet match"),
        "{out}"
    );
    ensure!(
        same_tree(&example(), &dir.join("policies"))?,
        "a dry run wrote"
    );

    let (code, out, err) = lazaret_in(dir, &import)?;
    ensure!(code == 0, "import exited {code}: {out}{err}");
    let (code, out, err) = lazaret_in(dir, &["check", "policies", "--deny-warnings"])?;
    ensure!(code == 0, "check exited {code}: {out}{err}");
    // The manufacturer's file allows nothing the hospital's policy does not.
    let before = example();
    let (code, out, err) = lazaret_in(dir, &["plan", &before.to_string_lossy(), "policies"])?;
    ensure!(code == 0, "plan exited {code}: {err}");
    ensure!(
        out.contains("3 devices changed: 0 flows newly allowed, 0 newly denied."),
        "{out}"
    );

    let export = [
        "export",
        "mud",
        "--class",
        "infusion-pump",
        "--binding",
        "policies/import/plum360-binding.toml",
        "--dir",
        "policies",
    ];
    let (code, out, err) = lazaret_in(dir, &export)?;
    ensure!(code == 0, "export exited {code}: {err}");
    let doc: serde_json::Value = serde_json::from_str(&out)?;
    ensure!(
        doc["ietf-mud:mud"]["mud-url"] == "https://mud.hospital.example/infusion-pump.json",
        "{out}"
    );
    Ok(())
}

#[test]
fn advisories_in_the_repository_show_in_devices_risk_and_explain() -> Result<()> {
    let tmp = example_copy()?;
    let dir = tmp.path.as_path();
    // Given on the command line first, then kept in the repository's advisories/.
    let (code, out, err) = lazaret_in(
        dir,
        &[
            "risk",
            "policies",
            "--advisories",
            "policies/import/advisories",
        ],
    )?;
    ensure!(code == 0, "risk exited {code}: {err}");
    ensure!(
        out.contains("   15  advisory EXAMPLE-PUMPS-2026-001 (CVE-2026-99901)\n   25  advisory EXAMPLE-PUMPS-2026-001: known exploited"),
        "{out}"
    );
    ensure!(
        out.contains("10 devices, 3 affected by an advisory (1 advisories, 1 KEV entries read)"),
        "{out}"
    );
    // check reads a feed kept outside the repository as if it were in advisories/.
    let (code, out, err) = lazaret_in(
        dir,
        &[
            "check",
            "policies",
            "--advisories",
            "policies/import/advisories",
        ],
    )?;
    ensure!(code == 0, "check --advisories exited {code}: {out}{err}");
    let bad = dir.join("bad-feed");
    std::fs::create_dir(&bad)?;
    std::fs::write(bad.join("x.json"), "{\n  \"document\": ,\n}\n")?;
    let (code, _, err) = lazaret_in(dir, &["check", "policies", "--advisories", "bad-feed"])?;
    ensure!(code == 1, "a broken feed exited {code}: {err}");
    ensure!(
        err.contains("bad-feed/x.json:2:") && err.contains("advisory file: not JSON"),
        "{err}"
    );
    let ok = Command::new("cp")
        .arg("-r")
        .arg(dir.join("policies/import/advisories"))
        .arg(dir.join("policies/advisories"))
        .status()?
        .success();
    ensure!(ok, "copying the advisories");
    let (code, out, err) = lazaret_in(dir, &["check", "policies", "--deny-warnings"])?;
    ensure!(code == 0, "check exited {code}: {out}{err}");
    let (code, out, err) = lazaret_in(dir, &["devices", "policies", "--today", "2026-12-05"])?;
    ensure!(code == 0, "devices exited {code}: {err}");
    let pump = out
        .lines()
        .find(|l| l.starts_with("pump-icu-01"))
        .unwrap_or_default();
    ensure!(pump.contains("100 high (EXAMPLE-PUMPS-2026-001)"), "{out}");
    let (code, out, err) = lazaret_in(
        dir,
        &[
            "explain",
            "policies",
            "--from",
            "pump-icu-01",
            "--to",
            "10.10.3.10",
            "--port",
            "51243",
        ],
    )?;
    ensure!(code == 0, "explain exited {code}: {err}");
    ensure!(
        out.contains("pump-icu-01: advisory EXAMPLE-PUMPS-2026-001 (CVE-2026-99901) applies, known exploited"),
        "{out}"
    );
    Ok(())
}
