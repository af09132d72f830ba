//! The CSV importer's catalog: real exports' mess (each a named test), conflicts refused
//! with their line and column, idempotence, and edits in place that keep what the export
//! does not own.

use super::values::parse_mac;
use super::*;

const SITE: &str = r#"
[site]
name = "t"
[site.interfaces.dev0]
side = "devices"
networks = ["10.20.0.0/16", "fd00:20::/64"]
[site.interfaces.up0]
side = "upstream"
networks = ["10.10.0.0/16"]
[site.essentials]
dhcp = false
dns = false
ntp = false

[roles.hl7]
addresses = ["10.10.0.5"]

[classes.patient-monitor]
workflows = ["monitoring"]
[classes.infusion-pump]
workflows = ["monitoring"]

[workflows.monitoring]
description = "results to the HL7 engine"
rules = [{ peer = "role:hl7", proto = "tcp", ports = [2575] }]
"#;

const DEVICES: &str = r#"# ICU monitors: hand-written; the CMMS owns some keys.

[[devices]]
id = "mon-01"
class = "patient-monitor"
mac = "00:1B:4F:20:00:11"   # the label on the back
ipv4 = ["10.20.0.11"]
vlan = 20
interface = "dev0"
firmware = "3.0.1"
last_patched = 2024-06-03
notes = "bed 1; keep"
"#;

const MAPPING: &str = r#"
[columns]
id = "Asset Tag"
mac = "MAC Address"
ipv4 = "IP"
vlan = "VLAN"
interface = "Interface"
firmware = "Software"
last_patched = "Last Patched"
life_critical = "Life Support"

[class]
column = "Model"
map = { "CARESCAPE B450" = "patient-monitor", "Alaris 8015" = "infusion-pump" }

[output]
file = "devices/cmms.toml"
"#;

const HEADER: &str =
    "Asset Tag,MAC Address,IP,VLAN,Interface,Model,Software,Last Patched,Life Support";
const MON: &str = "mon-01,00:1b:4f:20:00:11,10.20.0.11,20,dev0,CARESCAPE B450,3.0.1,2024-06-03,no";
const PUMP: &str = "pump-01,00-1A-2B-20-00-21,10.20.0.21,20,dev0,Alaris 8015,12.1,2025-01-10,yes";

/// A policy directory with the site and the ICU file.
fn repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("site.toml"), SITE).expect("site");
    std::fs::create_dir(dir.path().join("devices")).expect("mkdir");
    std::fs::write(dir.path().join("devices/icu.toml"), DEVICES).expect("icu");
    dir
}

fn mapping(extra: &str) -> Mapping {
    Mapping::parse(&format!("{extra}\n{MAPPING}"), "mapping.toml").expect("mapping")
}

/// Imports `export` (bytes) into `dir` with `m`, writing what it plans.
fn import(dir: &Path, export: &[u8], m: &Mapping, keep: bool) -> Result<Plan, ImportError> {
    let path = dir.join("import-export.csv");
    std::fs::write(&path, export).expect("export");
    let plan = plan(dir, &path, m, keep);
    std::fs::remove_file(&path).expect("rm export");
    let plan = plan?;
    write(&plan)?;
    Ok(plan)
}

fn problems(err: ImportError) -> Vec<RowProblem> {
    match err {
        ImportError::Rows { problems, .. } => problems,
        other => panic!("expected row problems, got: {other}"),
    }
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).expect("read")
}

#[test]
fn a_new_device_is_appended_and_an_existing_one_updated_in_place() {
    let dir = repo();
    let mon = MON.replace("3.0.1", "3.0.2");
    let csv = format!("{HEADER}\n{mon}\n{PUMP}\n");
    let plan = import(dir.path(), csv.as_bytes(), &mapping(""), false).expect("import");
    assert_eq!(plan.added.len(), 1);
    assert_eq!(plan.changed.len(), 1);
    let icu = read(dir.path(), "devices/icu.toml");
    // The owned key changed; comments, hand-written keys and spellings the export agrees
    // with are kept byte for byte.
    let want =
        DEVICES.replace("firmware = \"3.0.1\"", "firmware = \"3.0.2\"") + "life_critical = false\n";
    assert_eq!(icu, want);
    let cmms = read(dir.path(), "devices/cmms.toml");
    assert!(cmms.contains("[[devices]]\nid = \"pump-01\"\nclass = \"infusion-pump\"\nmac = \"00:1a:2b:20:00:21\"\nipv4 = \"10.20.0.21\"\nvlan = 20\n"), "{cmms}");
    assert!(
        cmms.contains("last_patched = 2025-01-10\nlife_critical = true\n"),
        "{cmms}"
    );
    // What it wrote loads.
    let policy = lazaret_policy::load_dir(dir.path()).expect("loads");
    assert_eq!(policy.devices.len(), 2);
}

#[test]
fn importing_the_same_export_again_changes_nothing() {
    let dir = repo();
    let csv = format!("{HEADER}\n{MON}\n{PUMP}\n");
    import(dir.path(), csv.as_bytes(), &mapping(""), false).expect("first");
    let before = (
        read(dir.path(), "devices/icu.toml"),
        read(dir.path(), "devices/cmms.toml"),
    );
    let again = import(dir.path(), csv.as_bytes(), &mapping(""), false).expect("again");
    assert!(again.files.is_empty(), "{again}");
    assert_eq!(again.unchanged, 2);
    let after = (
        read(dir.path(), "devices/icu.toml"),
        read(dir.path(), "devices/cmms.toml"),
    );
    assert_eq!(before, after);
}

#[test]
fn the_output_is_the_same_whatever_the_rows_order() {
    let (a, b) = (repo(), repo());
    let pump2 = PUMP
        .replace("pump-01", "pump-02")
        .replace("00-1A-2B-20-00-21", "001a2b200022")
        .replace("10.20.0.21", "10.20.0.22");
    let one = format!("{HEADER}\n{MON}\n{PUMP}\n{pump2}\n");
    let two = format!("{HEADER}\n{pump2}\n{PUMP}\n{MON}\n");
    import(a.path(), one.as_bytes(), &mapping(""), false).expect("a");
    import(b.path(), two.as_bytes(), &mapping(""), false).expect("b");
    assert_eq!(
        read(a.path(), "devices/cmms.toml"),
        read(b.path(), "devices/cmms.toml")
    );
}

#[test]
fn a_dry_run_plans_without_writing() {
    let dir = repo();
    let path = dir.path().join("import-export.csv");
    std::fs::write(&path, format!("{HEADER}\n{MON}\n{PUMP}\n")).expect("w");
    let p = plan(dir.path(), &path, &mapping(""), false).expect("plan");
    let text = p.to_string();
    assert!(text.contains("+ pump-01 → "), "{text}");
    assert!(text.contains("~ mon-01 in "), "{text}");
    assert!(text.contains("life_critical: (none) → false"), "{text}");
    assert!(text.ends_with("1 new, 1 changed, 0 unchanged"), "{text}");
    assert!(!dir.path().join("devices/cmms.toml").exists());
    assert_eq!(read(dir.path(), "devices/icu.toml"), DEVICES);
}

// === Real exports' mess ===

#[test]
fn a_utf8_byte_order_mark_is_not_part_of_the_first_header() {
    let dir = repo();
    let csv = format!("\u{feff}{HEADER}\n{MON}\n{PUMP}\n");
    import(dir.path(), csv.as_bytes(), &mapping(""), false).expect("import");
    assert!(read(dir.path(), "devices/cmms.toml").contains("pump-01"));
}

#[test]
fn semicolon_separated_exports_are_detected() {
    let dir = repo();
    let csv = format!("{HEADER}\n{MON}\n{PUMP}\n").replace(',', ";");
    import(dir.path(), csv.as_bytes(), &mapping(""), false).expect("import");
    assert!(read(dir.path(), "devices/cmms.toml").contains("pump-01"));
}

#[test]
fn tab_separated_exports_are_detected() {
    let dir = repo();
    let csv = format!("{HEADER}\n{MON}\n{PUMP}\n").replace(',', "\t");
    import(dir.path(), csv.as_bytes(), &mapping(""), false).expect("import");
    assert!(read(dir.path(), "devices/cmms.toml").contains("pump-01"));
}

#[test]
fn quoted_fields_keep_their_separators_quotes_and_line_breaks() {
    let dir = repo();
    let m = Mapping::parse(
        &MAPPING
            .replace("[class]", "[columns.x]\n[class]")
            .replace("[columns.x]\n", "")
            .replace(
                "life_critical = \"Life Support\"",
                "life_critical = \"Life Support\"\nlocation = \"Location\"",
            ),
        "m.toml",
    )
    .expect("mapping");
    let csv =
        format!("{HEADER},Location\n{MON},\"ICU, bed 1\"\n{PUMP},\"Ward \"\"B\"\"\nnorth\"\n");
    import(dir.path(), csv.as_bytes(), &m, false).expect("import");
    let cmms = read(dir.path(), "devices/cmms.toml");
    assert!(
        cmms.contains("location = \"\"\"\nWard \"B\"\nnorth\"\"\"\n"),
        "{cmms}"
    );
    assert!(read(dir.path(), "devices/icu.toml").contains("location = \"ICU, bed 1\""));
}

#[test]
fn a_latin1_export_is_decoded_when_the_mapping_says_so() {
    let dir = repo();
    let m = Mapping::parse(
        &MAPPING.replace(
            "life_critical = \"Life Support\"",
            "life_critical = \"Life Support\"\nlocation = \"Location\"",
        ),
        "m.toml",
    )
    .expect("mapping");
    let mut csv = format!("{HEADER},Location\n{MON},Intensivstation\n{PUMP},").into_bytes();
    csv.extend_from_slice(b"Kinderstation S\xfcd\n"); // ü in Latin-1
                                                      // As UTF-8 it is refused at its line, with the fix.
    let err = import(dir.path(), &csv, &m, false).expect_err("not UTF-8");
    let text = err.to_string();
    assert!(
        text.contains("line 3: not UTF-8") && text.contains("encoding = \"latin-1\""),
        "{text}"
    );
    let latin = Mapping::parse(
        &format!(
            "[csv]\nencoding = \"latin-1\"\n{}",
            MAPPING.replace(
                "life_critical = \"Life Support\"",
                "life_critical = \"Life Support\"\nlocation = \"Location\""
            )
        ),
        "m.toml",
    )
    .expect("mapping");
    import(dir.path(), &csv, &latin, false).expect("latin-1");
    assert!(read(dir.path(), "devices/cmms.toml").contains("location = \"Kinderstation Süd\""));
}

#[test]
fn mac_addresses_in_every_usual_spelling_are_one_form() {
    for (text, want) in [
        ("00:1a:2b:30:00:11", "00:1a:2b:30:00:11"),
        ("00-1A-2B-30-00-11", "00:1a:2b:30:00:11"),
        ("001a.2b30.0011", "00:1a:2b:30:00:11"),
        ("001A2B300011", "00:1a:2b:30:00:11"),
    ] {
        assert_eq!(
            parse_mac(text).map(|m| m.to_string()).as_deref(),
            Some(want),
            "{text}"
        );
    }
    for bad in [
        "00:1a:2b:30:00",
        "00:1a-2b:30:00:11",
        "001a.2b30.001",
        "00:1a:2b:30:00:1g",
        "0x1a2b300011",
        "00:1a:2b:30:00:11:22",
    ] {
        assert!(parse_mac(bad).is_none(), "{bad}");
    }
}

#[test]
fn trailing_spaces_and_empty_rows_are_ignored() {
    let dir = repo();
    let csv = format!(
        "{HEADER}  \n\n {} \n,,,,,,,,\n\n{}\n\n",
        MON.replace(',', " , "),
        PUMP
    );
    let plan = import(dir.path(), csv.as_bytes(), &mapping(""), false).expect("import");
    assert_eq!((plan.added.len(), plan.changed.len()), (1, 1), "{plan}");
    // Only the key the repository lacked: every trimmed value matched.
    assert_eq!(plan.changed[0].keys.len(), 1, "{plan}");
    assert_eq!(plan.added[0].2, 6, "{plan}");
}

#[test]
fn crlf_line_ends_are_read_as_line_ends() {
    let dir = repo();
    let csv = format!("{HEADER}\r\n{MON}\r\n{PUMP}\r\n");
    let plan = import(dir.path(), csv.as_bytes(), &mapping(""), false).expect("import");
    assert_eq!(plan.added[0].2, 3, "{plan}");
    assert!(!read(dir.path(), "devices/cmms.toml").contains('\r'));
}

#[test]
fn an_endless_export_is_refused_at_its_size_limit() {
    let dir = repo();
    let err = plan(dir.path(), Path::new("/dev/zero"), &mapping(""), false).expect_err("endless");
    assert!(
        err.to_string()
            .contains("larger than the 256 MiB such a file"),
        "{err}"
    );
}

#[test]
fn a_utf16_export_is_refused_with_what_to_do() {
    let dir = repo();
    let err = import(dir.path(), b"\xff\xfeA\x00", &mapping(""), false).expect_err("utf-16");
    assert!(
        err.to_string().contains("export as UTF-8 or Latin-1"),
        "{err}"
    );
}

// === Conflicts: refused with their line and column, nothing written ===

#[test]
fn malformed_values_are_refused_at_their_line_and_column() {
    let dir = repo();
    let bad = PUMP
        .replace("00-1A-2B-20-00-21", "00-1A-2B-20-00")
        .replace("10.20.0.21", "10.20.0.256")
        .replace(",20,", ",5000,")
        .replace("2025-01-10", "10/01/2025")
        .replace(",yes", ",maybe");
    let csv = format!("{HEADER}\n{MON}\n{bad}\n");
    let got = problems(import(dir.path(), csv.as_bytes(), &mapping(""), false).expect_err("bad"));
    let at: Vec<&str> = got.iter().map(|p| p.at.as_str()).collect();
    assert_eq!(
        at,
        [
            "line 3, column \"MAC Address\"",
            "line 3, column \"IP\"",
            "line 3, column \"VLAN\"",
            "line 3, column \"Last Patched\"",
            "line 3, column \"Life Support\"",
        ]
    );
    assert!(got[3].message.contains("YYYY-MM-DD"), "{}", got[3].message);
    assert!(!dir.path().join("devices/cmms.toml").exists());
    assert_eq!(read(dir.path(), "devices/icu.toml"), DEVICES);
}

#[test]
fn a_model_no_class_maps_from_is_refused_not_guessed() {
    let dir = repo();
    let csv = format!(
        "{HEADER}\n{MON}\n{}\n",
        PUMP.replace("Alaris 8015", "Alaris 8100")
    );
    let got = problems(import(dir.path(), csv.as_bytes(), &mapping(""), false).expect_err("class"));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].at, "line 3, column \"Model\"");
    assert!(
        got[0].message.contains("\"Alaris 8100\" maps to no class"),
        "{}",
        got[0].message
    );
    // A map to a class the policy lacks is refused too.
    let m = Mapping::parse(
        &MAPPING.replace("\"infusion-pump\" }", "\"pump\" }"),
        "m.toml",
    )
    .expect("m");
    let got = problems(
        import(
            dir.path(),
            format!("{HEADER}\n{MON}\n{PUMP}\n").as_bytes(),
            &m,
            false,
        )
        .expect_err("class"),
    );
    assert!(
        got[0]
            .message
            .contains("class \"pump\" is not a class of the policy"),
        "{got:?}"
    );
}

#[test]
fn an_id_mac_or_address_twice_in_the_export_is_refused() {
    let dir = repo();
    let twin_mac = PUMP
        .replace("pump-01", "pump-02")
        .replace("10.20.0.21", "10.20.0.22")
        .replace("00-1A-2B-20-00-21", "001a.2b20.0021");
    let twin_ip = PUMP
        .replace("pump-01", "pump-03")
        .replace("00-1A-2B-20-00-21", "00:1a:2b:20:00:23");
    let csv = format!("{HEADER}\n{MON}\n{PUMP}\n{twin_mac}\n{twin_ip}\n{MON}\n");
    let got = problems(import(dir.path(), csv.as_bytes(), &mapping(""), false).expect_err("twice"));
    let msgs: Vec<String> = got
        .iter()
        .map(|p| format!("{}: {}", p.at, p.message))
        .collect();
    assert!(
        msgs.contains(&"line 4: mac 00:1a:2b:20:00:21 is on line 3 too".to_string()),
        "{msgs:?}"
    );
    assert!(
        msgs.contains(&"line 5: address 10.20.0.21 is on line 3 too".to_string()),
        "{msgs:?}"
    );
    assert!(
        msgs.contains(&"line 6: id mon-01 is on line 2 too".to_string()),
        "{msgs:?}"
    );
}

#[test]
fn a_mac_or_address_already_another_devices_is_refused_with_where() {
    let dir = repo();
    let thief = PUMP.replace("00-1A-2B-20-00-21", "00:1b:4f:20:00:11");
    // mon-01 keeps its MAC (the export does not list it: kept) and the pump claims it.
    let csv = format!("{HEADER}\n{thief}\n");
    let got = problems(import(dir.path(), csv.as_bytes(), &mapping(""), true).expect_err("taken"));
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].at, "line 2");
    assert!(
        got[0]
            .message
            .starts_with("mac 00:1b:4f:20:00:11 is device mon-01's ("),
        "{}",
        got[0].message
    );
    assert!(got[0].message.contains("icu.toml:"), "{}", got[0].message);
    // Swapping addresses between two devices in one export is no conflict.
    let dir = repo();
    let csv = format!("{HEADER}\n{MON}\n{PUMP}\n");
    import(dir.path(), csv.as_bytes(), &mapping(""), false).expect("both");
    let swapped = format!(
        "{HEADER}\n{}\n{}\n",
        MON.replace("10.20.0.11", "10.20.0.21"),
        PUMP.replace("10.20.0.21", "10.20.0.11")
    );
    import(dir.path(), swapped.as_bytes(), &mapping(""), false).expect("swap");
}

#[test]
fn a_repository_device_missing_from_the_export_is_reported_not_deleted() {
    let dir = repo();
    let csv = format!("{HEADER}\n{PUMP}\n");
    let got =
        problems(import(dir.path(), csv.as_bytes(), &mapping(""), false).expect_err("missing"));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].at.ends_with("icu.toml:4"), "{}", got[0].at);
    assert!(
        got[0].message.contains("--keep-missing"),
        "{}",
        got[0].message
    );
    let plan = import(dir.path(), csv.as_bytes(), &mapping(""), true).expect("kept");
    assert_eq!(plan.kept, ["mon-01"]);
    assert_eq!(read(dir.path(), "devices/icu.toml"), DEVICES);
}

#[test]
fn a_row_the_policy_would_refuse_writes_nothing() {
    let dir = repo();
    // An interface the site does not have: only the policy knows.
    let csv = format!("{HEADER}\n{MON}\n{}\n", PUMP.replace("dev0", "ward9"));
    let err = import(dir.path(), csv.as_bytes(), &mapping(""), false).expect_err("after");
    assert!(matches!(err, ImportError::PolicyAfter { .. }), "{err}");
    assert!(err.to_string().contains("ward9"), "{err}");
    assert!(!dir.path().join("devices/cmms.toml").exists());
}

#[test]
fn a_missing_column_or_field_past_the_header_is_refused() {
    let dir = repo();
    let csv = format!("{}\n{MON}\n", HEADER.replace("VLAN", "Vlan Id"));
    let err = import(dir.path(), csv.as_bytes(), &mapping(""), false).expect_err("column");
    assert!(
        err.to_string()
            .contains("no column \"VLAN\" in the header row"),
        "{err}"
    );
    let csv = format!("{HEADER}\n{MON},stray\n{PUMP}\n");
    let got = problems(import(dir.path(), csv.as_bytes(), &mapping(""), false).expect_err("stray"));
    assert_eq!(got[0].at, "line 2");
    assert!(
        got[0].message.contains("past the header's 9 columns"),
        "{}",
        got[0].message
    );
}

#[test]
fn a_broken_repository_is_not_imported_into() {
    let dir = repo();
    std::fs::write(dir.path().join("devices/bad.toml"), "[[devices]]\nid = 1\n").expect("w");
    let csv = format!("{HEADER}\n{MON}\n");
    let err = import(dir.path(), csv.as_bytes(), &mapping(""), false).expect_err("broken");
    assert!(matches!(err, ImportError::PolicyBefore { .. }), "{err}");
}

#[test]
fn mapping_mistakes_are_refused_with_what_is_allowed() {
    for (text, want) in [
        (
            "[columns]\nid = \"A\"\nmacc = \"M\"\n[output]\nfile = \"d.toml\"\n",
            "\"macc\" is not a device key",
        ),
        (
            "[columns]\nmac = \"M\"\n[output]\nfile = \"d.toml\"\n",
            "needs `id`",
        ),
        (
            "[columns]\nid = \"A\"\n[output]\nfile = \"../d.toml\"\n",
            "inside the policy directory",
        ),
        (
            "[columns]\nid = \"A\"\n[output]\nfile = \"import/d.toml\"\n",
            "not under import/",
        ),
        (
            "[columns]\nid = \"A\"\n[output]\nfile = \"d.csv\"\n",
            "a .toml file",
        ),
        (
            "[csv]\nencoding = \"utf-16\"\n[columns]\nid = \"A\"\n[output]\nfile = \"d.toml\"\n",
            "use \"utf-8\", \"latin-1\" or \"windows-1252\"",
        ),
        (
            "[columns]\nid = \"A\"\n[output]\nfile = \"d.toml\"\n[extra]\n",
            "unknown field `extra`",
        ),
    ] {
        let err = Mapping::parse(text, "m.toml").expect_err(want).to_string();
        assert!(err.contains(want), "{text}: {err}");
        assert!(err.starts_with("m.toml: "), "{err}");
    }
}

// === Found in review ===

#[test]
fn a_changed_value_keeps_its_comments() {
    let dir = repo();
    let mon = MON.replace("00:1b:4f:20:00:11", "00:1b:4f:20:00:99");
    import(
        dir.path(),
        format!("{HEADER}\n{mon}\n{PUMP}\n").as_bytes(),
        &mapping(""),
        false,
    )
    .expect("import");
    let icu = read(dir.path(), "devices/icu.toml");
    assert!(
        icu.contains("mac = \"00:1b:4f:20:00:99\"   # the label on the back\n"),
        "{icu}"
    );
}

#[test]
fn windows_1252_is_its_own_encoding_and_refused_as_latin_1() {
    let dir = repo();
    let extra = "life_critical = \"Life Support\"\nlocation = \"Location\"";
    let text = MAPPING.replace("life_critical = \"Life Support\"", extra);
    let mut csv = format!("{HEADER},Location\n{MON},ICU\n{PUMP},").into_bytes();
    csv.extend_from_slice(b"Ward 3 \x96 north\n"); // an en dash in Windows-1252
    let latin =
        Mapping::parse(&format!("[csv]\nencoding = \"latin-1\"\n{text}"), "m.toml").expect("m");
    let err = import(dir.path(), &csv, &latin, false)
        .expect_err("C1 control")
        .to_string();
    assert!(
        err.contains("line 3: byte 0x96") && err.contains("windows-1252"),
        "{err}"
    );
    let cp = Mapping::parse(
        &format!("[csv]\nencoding = \"windows-1252\"\n{text}"),
        "m.toml",
    )
    .expect("m");
    import(dir.path(), &csv, &cp, false).expect("windows-1252");
    assert!(read(dir.path(), "devices/cmms.toml").contains("location = \"Ward 3 – north\""));
}

#[test]
fn a_short_row_is_refused_not_shifted() {
    let dir = repo();
    // A line break inside an unquoted value splits the pump's row in two.
    let split = PUMP.replacen(",dev0,", ",dev0\n", 1);
    let csv = format!("{HEADER}\n{MON}\n{split}\n");
    let got = problems(import(dir.path(), csv.as_bytes(), &mapping(""), false).expect_err("short"));
    assert_eq!(got[0].at, "line 3");
    assert!(
        got[0].message.starts_with("5 fields, but the header has 9"),
        "{got:?}"
    );
}

#[test]
fn a_symlinked_device_file_is_refused_and_nothing_is_written() {
    let dir = repo();
    let shared = dir.path().join("devices/shared-icu.toml.txt");
    std::fs::rename(dir.path().join("devices/icu.toml"), &shared).expect("mv");
    std::os::unix::fs::symlink("shared-icu.toml.txt", dir.path().join("devices/icu.toml"))
        .expect("ln");
    let mon = MON.replace("3.0.1", "3.0.2");
    let err = import(
        dir.path(),
        format!("{HEADER}\n{mon}\n{PUMP}\n").as_bytes(),
        &mapping(""),
        false,
    )
    .expect_err("link");
    assert!(err.to_string().contains("a symbolic link"), "{err}");
    assert_eq!(std::fs::read_to_string(&shared).expect("read"), DEVICES);
    assert!(
        !dir.path().join("devices/cmms.toml").exists(),
        "all or nothing"
    );
}

#[test]
fn a_write_that_fails_leaves_every_file_as_it_was() {
    let dir = repo();
    // A directory where the new devices' file would go, named to sort after the file the
    // import also edits: refused before anything is replaced.
    std::fs::create_dir(dir.path().join("devices/zz.toml")).expect("mkdir");
    let m = Mapping::parse(
        &MAPPING.replace("devices/cmms.toml", "devices/zz.toml"),
        "m.toml",
    )
    .expect("m");
    let mon = MON.replace("3.0.1", "3.0.2");
    let csv = format!("{HEADER}\n{mon}\n{PUMP}\n");
    let err = import(dir.path(), csv.as_bytes(), &m, false).expect_err("in the way");
    assert!(err.to_string().contains("not a regular file"), "{err}");
    assert!(matches!(err, ImportError::Write { .. }), "{err}");
    assert_eq!(read(dir.path(), "devices/icu.toml"), DEVICES);
    let left: Vec<_> = std::fs::read_dir(dir.path().join("devices"))
        .expect("ls")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.ends_with("import-tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
