//! Applying a rendered table with `nft -j -f -`: one call is one kernel transaction, so a
//! table generation replaces the previous one whole or not at all. I/O lives here only.

use super::render::{self, names, Rendered};
use crate::policy::DeviceStates;
use lazaret_abi::{QUARANTINE_ISOLATE, QUARANTINE_NONE};
use nftables::batch::Batch;
use nftables::helper::{self, NftablesError};
use nftables::schema::{FlushObject, NfCmd, NfListObject, Nftables, Set, Table};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How a device is named in a table an earlier run left in the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelDevice {
    Mac([u8; 6]),
    Addr(IpAddr),
}

/// Why `nft` refused or could not run.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("nft rejected the ruleset (the previous one keeps enforcing): {stderr}")]
    Rejected { stderr: String },
    #[error("cannot run {program}: {message}")]
    Run { program: String, message: String },
}

impl From<NftablesError> for ApplyError {
    fn from(e: NftablesError) -> Self {
        match e {
            NftablesError::NftFailed { stderr, .. } => ApplyError::Rejected {
                stderr: stderr.trim().to_string(),
            },
            other => ApplyError::Run {
                program: "nft".into(),
                message: other.to_string(),
            },
        }
    }
}

/// How to run `nft`: the program and the arguments before nft's own (for tests, `ip netns
/// exec NAME nft`).
#[derive(Clone, Debug)]
pub struct Nft {
    pub program: String,
    pub prefix_args: Vec<String>,
}

impl Default for Nft {
    fn default() -> Self {
        Nft {
            program: "nft".into(),
            prefix_args: Vec::new(),
        }
    }
}

impl Nft {
    /// `nft` run inside the network namespace `ns` (`ip netns exec`).
    pub fn in_netns(ns: &str) -> Nft {
        Nft {
            program: "ip".into(),
            prefix_args: vec!["netns".into(), "exec".into(), ns.into(), "nft".into()],
        }
    }

    /// `nft -j -f -` with the JSON on stdin. Run here rather than through the crate's
    /// helper, which lets nft's stderr (the reason for a refusal) go to our stderr.
    pub(super) fn run(&self, objects: Nftables) -> Result<(), ApplyError> {
        self.run_json(&to_json(&objects))
    }

    fn run_json(&self, json: &serde_json::Value) -> Result<(), ApplyError> {
        self.run_input(&["-j", "-f", "-"], &json.to_string())
    }

    /// `nft -f -` with a ruleset in nft's text syntax (the frame stage, see
    /// [`super::frame`]): one transaction.
    pub(super) fn run_text(&self, text: &str) -> Result<(), ApplyError> {
        self.run_input(&["-f", "-"], text)
    }

    fn run_input(&self, args: &[&str], input: &str) -> Result<(), ApplyError> {
        let run_err = |e: std::io::Error| ApplyError::Run {
            program: self.program.clone(),
            message: e.to_string(),
        };
        let mut child = Command::new(&self.program)
            .args(&self.prefix_args)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(run_err)?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(input.as_bytes()).map_err(run_err)?;
        }
        let out = child.wait_with_output().map_err(run_err)?;
        if out.status.success() {
            Ok(())
        } else {
            Err(ApplyError::Rejected {
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    /// Replaces lazaret's table with `r` in one transaction (add-if-missing, delete, add
    /// the new generation). Returns how long `nft` took.
    pub fn apply(&self, r: &Rendered) -> Result<Duration, ApplyError> {
        let t = Instant::now();
        // The frame stage first, whole: until the inet table is replaced too, a packet must
        // pass both the new frame stage and the old table (closed, never open).
        if let Some(f) = &r.frame {
            self.run_text(&format!("{}{}", f.build, f.hook))?;
        }
        let mut json = to_json(&replace_batch(r));
        start_counters_at(&mut json, &r.counter_base);
        self.run_json(&json)?;
        Ok(t.elapsed())
    }

    /// Replaces the table `previous` by `r`, a table of another name, in three transactions:
    /// the first builds `r` whole but unhooked (its sets are committed, nothing judges with
    /// it yet), the second hooks it, the third deletes `previous`. Why not one: the kernel
    /// commits a new concatenated interval set's elements after the transaction's rules
    /// become visible, so a packet judged in between meets empty sets (a reload under
    /// traffic then drops the odd packet). Why not hook and delete at once: a new base
    /// chain is hooked while its rules are still invisible, and with the old chain
    /// unhooked in the same commit, the odd denied packet met only the new chain's
    /// `accept` policy (seen under 200 reloads). With the steps apart, both tables judge
    /// for a moment — a packet must pass both — and the new one alone after. (A packet to an
    /// owned address meanwhile may carry the other frame stage's owner mark, whose device
    /// numbering may differ: each table refuses a mark of the other's, see
    /// `render::OWNER_TABLE`.) A failure in
    /// the first two steps leaves `previous` enforcing (a half-built `r` is unhooked and
    /// removed by the next apply); a failure of the third is only logged.
    pub fn swap(&self, previous: &str, r: &Rendered) -> Result<Duration, ApplyError> {
        if previous == r.table {
            return self.apply(r);
        }
        let t = Instant::now();
        let (build, hook, retire) = swap_batches(previous, r);
        let mut build = to_json(&build);
        start_counters_at(&mut build, &r.counter_base);
        self.run_json(&build)?;
        // The frame stage is built unhooked too, then hooked beside the old one: a packet
        // must pass both frame stages and both tables until the old ones go.
        if let Some(f) = &r.frame {
            self.run_text(&f.build)?;
        }
        self.run(hook)?;
        if let Some(f) = &r.frame {
            self.run_text(&f.hook)?;
        }
        // The new tables enforce now. An old one that cannot be deleted still judges too
        // (a packet must pass both: closed); the next apply builds over it by name.
        let retire_frame = format!("add table netdev {previous}\ndelete table netdev {previous}\n");
        let retired = self.run(retire).and_then(|()| self.run_text(&retire_frame));
        if let Err(e) = retired {
            tracing::warn!(table = previous, error = %e, "the previous nftables tables could not be deleted; they judge alongside the new ones until the next reload");
        }
        Ok(t.elapsed())
    }

    /// Writes the quarantine sets from `states` in one transaction, without touching the
    /// rest of the table. Flows of newly quarantined devices are re-judged on their next
    /// packet because the `flow` chain checks the address sets.
    pub fn set_quarantine(&self, r: &Rendered, states: &DeviceStates) -> Result<(), ApplyError> {
        self.run(quarantine_batch(r, states))
    }

    /// Rewrites the frame stage's set of quarantined devices' MACs (`quar_mac`).
    pub fn set_frame_quarantine(&self, table: &str, macs: &[String]) -> Result<(), ApplyError> {
        use super::frame::names::QUAR_MAC;
        let mut text = format!("flush set netdev {table} {QUAR_MAC}\n");
        if !macs.is_empty() {
            text.push_str(&format!(
                "add element netdev {table} {QUAR_MAC} {{ {} }}\n",
                macs.join(", ")
            ));
        }
        self.run_text(&text)
    }

    /// Rewrites the frame stage's sets of the gateway's own addresses in one transaction.
    pub fn set_local(
        &self,
        table: &str,
        local: &std::collections::BTreeSet<std::net::IpAddr>,
    ) -> Result<(), ApplyError> {
        use super::frame::names::{LOCAL4, LOCAL6, T_LOCAL};
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        let mut raw = Vec::new();
        for a in local {
            match a {
                std::net::IpAddr::V4(a) => v4.push(a.to_string()),
                std::net::IpAddr::V6(a) => {
                    v6.push(a.to_string());
                    raw.push(format!("0x{:032x}", u128::from(*a)));
                }
            }
        }
        let mut text = String::new();
        for (set, elems) in [(LOCAL4, v4), (LOCAL6, v6), (T_LOCAL, raw)] {
            text.push_str(&format!("flush set netdev {table} {set}\n"));
            if !elems.is_empty() {
                text.push_str(&format!(
                    "add element netdev {table} {set} {{ {} }}\n",
                    elems.join(", ")
                ));
            }
        }
        self.run_text(&text)
    }

    /// What the packet path recorded in the frame stage `table`: owners of addresses by
    /// first use and bridge-port pins. Empty when the table does not exist.
    pub fn dynamic(&self, table: &str) -> Result<super::frame::Dynamic, ApplyError> {
        use super::frame::names::{LL_OWNER, MAC_INDEX, OWN4, OWN_INDEX, PIN_PORT};
        let mut d = super::frame::Dynamic::default();
        for set in [LL_OWNER, OWN4, PIN_PORT] {
            let Some(listed) = self.json(&["list", "set", "netdev", table, set])? else {
                continue;
            };
            for (a, b, expires) in concat_pairs(&listed) {
                // What an owner has left: a reload does not renew it. (nft leaves `expires`
                // out of an element with nothing left.)
                let left = expires.unwrap_or(0);
                match (set, parse_mac(&b)) {
                    (LL_OWNER, Some(mac)) => {
                        d.owners6
                            .extend(parse_raw6(&a).map(|addr| (addr, mac, left)));
                    }
                    (OWN4, Some(mac)) => {
                        d.owners4
                            .extend(a.parse().ok().map(|addr| (addr, mac, left)));
                    }
                    (PIN_PORT, _) => d.pins.extend(parse_mac(&a).map(|mac| (mac, b))),
                    _ => {}
                }
            }
        }
        // The destination owners (`ownidx4`/`6`, address to the owner's device mark), by
        // MAC: the marks are this table's numbering (`macidx4`/`6`), the next table has its
        // own.
        for (v, mac_index) in [(4, MAC_INDEX[0]), (6, MAC_INDEX[1])] {
            let pairs = |name: &str| -> Result<Vec<(String, u64, Option<u64>)>, ApplyError> {
                Ok(self
                    .json(&["list", "map", "netdev", table, name])?
                    .map(|l| map_pairs(&l))
                    .unwrap_or_default())
            };
            let macs: BTreeMap<u64, [u8; 6]> = pairs(mac_index)?
                .into_iter()
                .filter_map(|(m, mark, _)| Some((mark, parse_mac(&m)?)))
                .collect();
            for (a, mark, left) in pairs(&format!("{OWN_INDEX}{v}"))? {
                let (Some(&mac), Some(left)) = (macs.get(&mark), left) else {
                    continue;
                };
                match v {
                    4 => d.dest4.extend(a.parse().ok().map(|a| (a, mac, left))),
                    _ => d.dest6.extend(parse_raw6(&a).map(|a| (a, mac, left))),
                }
            }
        }
        Ok(d)
    }

    /// The quarantines the inet `table` (of an earlier run) enforces, by device identity:
    /// the MAC of a device that has one and each of its addresses, so a device known by its
    /// addresses only is found too (the mark index behind them is the earlier run's own
    /// numbering, meaningless now). Read at start, before the first table of the new run
    /// replaces it, so a quarantine the state file lost is recovered; should an address
    /// have moved to another device between the runs, that device is recovered as
    /// quarantined too (listed as recovered, releasable): stricter, never laxer. Empty when
    /// the table does not exist.
    pub fn quarantined_devices(&self, table: &str) -> Result<Vec<(KernelDevice, u8)>, ApplyError> {
        let elems = |kind: &str, name: &str| -> Result<Vec<serde_json::Value>, ApplyError> {
            let Some(listed) = self.json(&["list", kind, "inet", table, name])? else {
                return Ok(Vec::new());
            };
            Ok(listed["nftables"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|o| o[kind]["elem"].as_array())
                .flatten()
                .cloned()
                .collect())
        };
        let marks = |name: &str| -> Result<Vec<u64>, ApplyError> {
            Ok(elems("set", name)?
                .iter()
                .filter_map(serde_json::Value::as_u64)
                .collect())
        };
        let isolate = marks(names::QUAR_ISOLATE)?;
        let restrict = marks(names::QUAR_RESTRICT)?;
        let state = |ix: u64| {
            if isolate.contains(&ix) {
                Some(QUARANTINE_ISOLATE)
            } else if restrict.contains(&ix) {
                Some(lazaret_abi::QUARANTINE_RESTRICT)
            } else {
                None
            }
        };
        let mut out = Vec::new();
        for e in elems("map", names::DEVIDX_MAC)? {
            let (Some(mac), Some(ix)) = (e[0].as_str().and_then(parse_mac), e[1].as_u64()) else {
                continue;
            };
            if let Some(q) = state(ix) {
                out.push((KernelDevice::Mac(mac), q));
            }
        }
        for map in ["devidx4", "devidx6"] {
            for e in elems("map", map)? {
                let addr = e[0].as_str().and_then(|a| a.parse::<IpAddr>().ok());
                let (Some(addr), Some(ix)) = (addr, e[1].as_u64()) else {
                    continue;
                };
                if let Some(q) = state(ix) {
                    out.push((KernelDevice::Addr(addr), q));
                }
            }
        }
        Ok(out)
    }

    /// Removes the pin of `mac` (on `ports`) from the frame stage `table`.
    pub fn release_pin(
        &self,
        table: &str,
        mac: [u8; 6],
        ports: &[String],
    ) -> Result<(), ApplyError> {
        use super::frame::names::{PINNED, PIN_PORT};
        let m = mac_text(mac);
        let mut text = format!("delete element netdev {table} {PINNED} {{ {m} }}\n");
        for p in ports {
            // Names come from the table itself; quoted as the renderer does.
            if p.chars()
                .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\')
            {
                text.push_str(&format!(
                    "delete element netdev {table} {PIN_PORT} {{ {m} . \"{p}\" }}\n"
                ));
            }
        }
        self.run_text(&text)
    }

    /// Removes the ownership by first use of `v4` and `v6` by `mac` from the frame stage
    /// `table`, and its destination ownership of those and of `dest` (addresses whose claim
    /// it has left, that still name it as a destination): the addresses are anyone's again.
    pub fn release_addresses(
        &self,
        table: &str,
        mac: [u8; 6],
        (v4, v6): (&[std::net::Ipv4Addr], &[std::net::Ipv6Addr]),
        dest: (&[std::net::Ipv4Addr], &[std::net::Ipv6Addr]),
    ) -> Result<(), ApplyError> {
        use super::frame::names::{CLAIMED4, LL_CLAIMED, LL_OWNER, OWN4, OWN_INDEX};
        let m = mac_text(mac);
        let mut text = String::new();
        // The owners' device marks (`ownidx4`/`6`) of those it has: deleting an element a
        // map does not hold would fail the whole transaction, so not one about to expire
        // (as the caller leaves out owners with less than 2 s left).
        let held = |v: u8| -> Result<Vec<String>, ApplyError> {
            let name = format!("{OWN_INDEX}{v}");
            Ok(self
                .json(&["list", "map", "netdev", table, &name])?
                .map(|l| map_keys(&l))
                .unwrap_or_default()
                .into_iter()
                .filter(|(_, left)| left.is_none_or(|s| s >= 2))
                .map(|(k, _)| k)
                .collect())
        };
        let held4 = held(4)?;
        let idx4: BTreeSet<_> = v4.iter().chain(dest.0).collect();
        for a in idx4.into_iter().filter(|a| held4.contains(&a.to_string())) {
            text.push_str(&format!(
                "delete element netdev {table} {OWN_INDEX}4 {{ {a} }}\n"
            ));
        }
        let held6: Vec<std::net::Ipv6Addr> =
            held(6)?.iter().filter_map(|k| parse_raw6(k)).collect();
        let idx6: BTreeSet<_> = v6.iter().chain(dest.1).collect();
        for a in idx6.into_iter().filter(|a| held6.contains(a)) {
            text.push_str(&format!(
                "delete element netdev {table} {OWN_INDEX}6 {{ 0x{:032x} }}\n",
                u128::from(*a)
            ));
        }
        for a in v4 {
            text.push_str(&format!(
                "delete element netdev {table} {OWN4} {{ {a} . {m} }}\n"
            ));
            text.push_str(&format!(
                "delete element netdev {table} {CLAIMED4} {{ {a} }}\n"
            ));
        }
        for a in v6 {
            let raw = format!("0x{:032x}", u128::from(*a));
            text.push_str(&format!(
                "delete element netdev {table} {LL_OWNER} {{ {raw} . {m} }}\n"
            ));
            text.push_str(&format!(
                "delete element netdev {table} {LL_CLAIMED} {{ {raw} }}\n"
            ));
        }
        self.run_text(&text)
    }

    /// Removes lazaret's table (nothing enforced by nftables afterwards).
    pub fn delete(&self, family: super::Family, table: &str) -> Result<(), ApplyError> {
        let mut b = Batch::new();
        let t = Table {
            family: family.nf(),
            name: table.to_string().into(),
            handle: None,
        };
        b.add(NfListObject::Table(t.clone()));
        b.delete(NfListObject::Table(t));
        self.run(b.to_nftables())
    }

    /// Runs `nft -j <args>` and reads its output as plain JSON: the `nftables` crate cannot
    /// parse every ruleset nft prints (the frame stage's raw-payload sets among them), and
    /// the questions asked here need none of its types. `Ok(None)`: nft refused (no such
    /// table).
    fn json(&self, args: &[&str]) -> Result<Option<serde_json::Value>, ApplyError> {
        let out = Command::new(&self.program)
            .args(&self.prefix_args)
            .arg("-j")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| ApplyError::Run {
                program: self.program.clone(),
                message: e.to_string(),
            })?;
        if !out.status.success() {
            return Ok(None);
        }
        serde_json::from_slice(&out.stdout)
            .map(Some)
            .map_err(|e| ApplyError::Run {
                program: self.program.clone(),
                message: format!("unreadable `nft -j {}`: {e}", args.join(" ")),
            })
    }

    /// The tables in the ruleset, as (family, name).
    pub fn tables(&self) -> Result<Vec<(String, String)>, ApplyError> {
        let listed = self
            .json(&["list", "tables"])?
            .ok_or_else(|| ApplyError::Rejected {
                stderr: "`nft list tables` failed".into(),
            })?;
        Ok(objects(&listed, "table")
            .filter_map(|t| {
                Some((
                    t.get("family")?.as_str()?.to_string(),
                    t.get("name")?.as_str()?.to_string(),
                ))
            })
            .collect())
    }

    /// Whether the ruleset holds the table `family name`.
    pub fn has_table(&self, family: super::Family, name: &str) -> Result<bool, ApplyError> {
        Ok(self
            .tables()?
            .iter()
            .any(|(f, n)| f == family.name() && n == name))
    }

    /// The number of rules in table `family name` (`None`: no such table), listed tersely
    /// (`-t`: without set elements, so a 10,000-device table lists in milliseconds).
    pub fn rule_count(
        &self,
        family: super::Family,
        name: &str,
    ) -> Result<Option<usize>, ApplyError> {
        Ok(self
            .json(&["-t", "list", "table", family.name(), name])?
            .map(|listed| objects(&listed, "rule").count()))
    }

    /// The named counters of lazaret's table `name` (name → packets, bytes); empty when the
    /// table does not exist.
    pub fn counters(
        &self,
        family: super::Family,
        name: &str,
    ) -> Result<BTreeMap<String, (u64, u64)>, ApplyError> {
        // No such table (the first generation, or after a detach): nothing to carry.
        Ok(self
            .json(&["list", "counters", "table", family.name(), name])?
            .map(|listed| counters_of(&listed, name))
            .unwrap_or_default())
    }

    /// The current ruleset, as nft's JSON (`nft -j list ruleset`).
    pub fn list(&self) -> Result<Nftables<'static>, ApplyError> {
        let mut args: Vec<&str> = self.prefix_args.iter().map(String::as_str).collect();
        args.extend(["-j", "list", "ruleset"]);
        Ok(helper::get_current_ruleset_with_args(
            Some(&self.program),
            &args,
        )?)
    }
}

/// The objects of kind `kind` (`table`, `rule`, …) in `nft -j` output.
fn objects<'a>(
    listed: &'a serde_json::Value,
    kind: &'a str,
) -> impl Iterator<Item = &'a serde_json::Value> + 'a {
    listed
        .get("nftables")
        .and_then(|l| l.as_array())
        .into_iter()
        .flatten()
        .filter_map(move |o| o.get(kind))
}

/// The JSON `nft` reads. The `nftables` crate (0.6.3) has no field for the statements of a
/// set or of a set-update statement, so two are added here, on the JSON value, from the
/// crate's own statement types (no string concatenation):
/// - the per-element counter of [`names::COUNTED`] sets (`"stmt": [{"counter": null}]`,
///   what `nft -j list` prints for `counter;` in a set);
/// - the per-source `limit` of every `update @event_rate { ether saddr … }` statement
///   (one token bucket per source, in every meter of [`render::EVENT_METERS`]): the
///   renderer puts it right after the update, as a statement of its own (with the site's
///   rate and burst), and it moves into the update here;
/// - after an update of [`render::EVENT_METER_UNKNOWN`], the reference to the table's
///   named limit [`render::UNKNOWN_BUDGET`] (`limit name "…"`), the budget sources without
///   a device share: the crate's limit statement has no form that names one.
pub fn to_json(objects: &Nftables) -> serde_json::Value {
    let mut v = serde_json::to_value(objects).unwrap_or_default();
    let meters = render::EVENT_METERS.map(|(m, _)| format!("@{m}"));
    let unknown_meter = format!("@{}", render::EVENT_METER_UNKNOWN);
    if let Some(list) = v.get_mut("nftables").and_then(|l| l.as_array_mut()) {
        for o in list {
            if let Some(exprs) = o
                .pointer_mut("/add/rule/expr")
                .and_then(|e| e.as_array_mut())
            {
                let meter_at = exprs.iter().position(|e| {
                    e.pointer("/set/set")
                        .and_then(|s| s.as_str())
                        .is_some_and(|n| meters.iter().any(|m| m == n))
                });
                let Some(at) = meter_at else { continue };
                let bucket = match exprs.get(at + 1) {
                    Some(l) if l.get("limit").is_some_and(serde_json::Value::is_object) => {
                        exprs.remove(at + 1)
                    }
                    _ => continue,
                };
                let unknown = exprs[at].pointer("/set/set").and_then(|s| s.as_str())
                    == Some(unknown_meter.as_str());
                if let Some(set) = exprs[at].get_mut("set").and_then(|s| s.as_object_mut()) {
                    set.insert("stmt".into(), serde_json::json!([bucket]));
                }
                if unknown {
                    exprs.insert(
                        at + 1,
                        serde_json::json!({ "limit": render::UNKNOWN_BUDGET }),
                    );
                }
                continue;
            }
            let Some(set) = o.pointer_mut("/add/set") else {
                continue;
            };
            let counted = set
                .get("name")
                .and_then(|n| n.as_str())
                .is_some_and(|n| names::COUNTED.contains(&n));
            if let (true, Some(obj)) = (counted, set.as_object_mut()) {
                obj.insert("stmt".into(), serde_json::json!([{ "counter": null }]));
            }
        }
    }
    v
}

/// The elements of the set or map (`kind`) `nft -j list` printed.
fn listed_elems<'a>(
    listed: &'a serde_json::Value,
    kind: &str,
) -> impl Iterator<Item = &'a serde_json::Value> {
    let at = format!("/{kind}/elem");
    listed
        .get("nftables")
        .and_then(|l| l.as_array())
        .into_iter()
        .flatten()
        .filter_map(move |o| o.pointer(&at))
        .filter_map(|e| e.as_array())
        .flatten()
}

/// An element's key part as nft writes it (`10.20.0.50`, `0xfd00…`). A raw key
/// (`@nh,64,128`) nft prints as a number when it is small (`::2`), negative with its top
/// bit set: written back as the hex it prints larger ones in.
fn key_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => {
            let n = n.as_u64().or_else(|| n.as_i64().map(|v| v as u64))?;
            Some(format!("0x{n:x}"))
        }
        _ => None,
    }
}

/// The seconds an element (`{"elem": {"val": …, "expires": …}}`) has left, when it expires.
fn expires(e: &serde_json::Value) -> Option<u64> {
    e.pointer("/elem/expires")
        .and_then(serde_json::Value::as_u64)
}

/// The two-part concatenated elements of a set in nft's JSON output (`{"concat": [a, b]}`,
/// possibly wrapped in `{"elem": {"val": …}}` with a timeout), as strings, with the seconds
/// each has left when it expires.
fn concat_pairs(listed: &serde_json::Value) -> Vec<(String, String, Option<u64>)> {
    listed_elems(listed, "set")
        .filter_map(|e| {
            let c = e.pointer("/elem/val/concat").or_else(|| e.get("concat"))?;
            let parts = c.as_array()?;
            Some((
                key_text(parts.first()?)?,
                key_text(parts.get(1)?)?,
                expires(e),
            ))
        })
        .collect()
}

/// A listed map's elements (`[key, value]`): the key as nft writes it, the value, and the
/// seconds left when it has a timeout.
fn map_elems(
    listed: &serde_json::Value,
) -> impl Iterator<Item = (String, Option<&serde_json::Value>, Option<u64>)> {
    listed_elems(listed, "map").filter_map(|pair| {
        let key = pair.get(0)?;
        let text = key_text(key.pointer("/elem/val").unwrap_or(key))?;
        Some((text, pair.get(1), expires(key)))
    })
}

/// The keys of a listed map's elements, with the seconds each has left.
fn map_keys(listed: &serde_json::Value) -> Vec<(String, Option<u64>)> {
    map_elems(listed)
        .map(|(key, _, left)| (key, left))
        .collect()
}

/// A listed map's elements with a number for their value (a mark): key, value, seconds left.
fn map_pairs(listed: &serde_json::Value) -> Vec<(String, u64, Option<u64>)> {
    map_elems(listed)
        .filter_map(|(key, value, left)| Some((key, value?.as_u64()?, left)))
        .collect()
}

fn parse_raw6(s: &str) -> Option<std::net::Ipv6Addr> {
    let hex = s.strip_prefix("0x")?;
    u128::from_str_radix(hex, 16)
        .ok()
        .map(std::net::Ipv6Addr::from)
}

/// A MAC as nft writes it (`02:00:00:00:0a:01`).
fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// The named counters of `table` in nft's JSON output (`nft -j list counters …`): name →
/// (packets, bytes). Read from the JSON value: the `nftables` crate (0.6.3) types counter
/// values as `u32`, which a busy gateway's byte counters outgrow.
pub fn counters_of(listed: &serde_json::Value, table: &str) -> BTreeMap<String, (u64, u64)> {
    objects(listed, "counter")
        .filter(|c| c.get("table").and_then(|t| t.as_str()) == Some(table))
        .filter_map(|c| {
            let num = |k: &str| c.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
            Some((
                c.get("name")?.as_str()?.to_string(),
                (num("packets"), num("bytes")),
            ))
        })
        .collect()
}

/// Starts the named counters of a table about to be added at `base` (name → packets,
/// bytes), so a new generation continues the counts of the one it replaces.
pub fn start_counters_at(json: &mut serde_json::Value, base: &BTreeMap<String, (u64, u64)>) {
    let Some(list) = json.get_mut("nftables").and_then(|l| l.as_array_mut()) else {
        return;
    };
    for o in list {
        let Some(c) = o
            .pointer_mut("/add/counter")
            .and_then(|c| c.as_object_mut())
        else {
            continue;
        };
        let Some(&(packets, bytes)) = c
            .get("name")
            .and_then(|n| n.as_str())
            .and_then(|n| base.get(n))
        else {
            continue;
        };
        c.insert("packets".into(), packets.into());
        c.insert("bytes".into(), bytes.into());
    }
}

/// The batch that replaces the table: one `nft -f` input, one transaction.
pub fn replace_batch(r: &Rendered) -> Nftables<'static> {
    let mut b = Batch::new();
    let t = Table {
        family: r.family.nf(),
        name: r.table.clone().into(),
        handle: None,
    };
    // `add table` is a no-op when it exists and makes the `delete` valid when it does not.
    b.add(NfListObject::Table(t.clone()));
    b.delete(NfListObject::Table(t));
    for o in &r.objects {
        b.add(o.clone());
    }
    b.to_nftables()
}

/// The three batches of [`Nft::swap`]: everything but the hooked base chain and its rules;
/// those; the deletion of `previous`.
pub fn swap_batches(
    previous: &str,
    r: &Rendered,
) -> (Nftables<'static>, Nftables<'static>, Nftables<'static>) {
    let table = |name: &str| Table {
        family: r.family.nf(),
        name: name.to_string().into(),
        handle: None,
    };
    let hooked = |o: &NfListObject| match o {
        NfListObject::Chain(c) => c.name == names::CHAIN_HOOK,
        NfListObject::Rule(rule) => rule.chain == names::CHAIN_HOOK,
        _ => false,
    };
    let mut build = Batch::new();
    build.add(NfListObject::Table(table(&r.table)));
    build.delete(NfListObject::Table(table(&r.table)));
    let mut hook = Batch::new();
    for o in &r.objects {
        if hooked(o) {
            hook.add(o.clone());
        } else {
            build.add(o.clone());
        }
    }
    let mut retire = Batch::new();
    retire.add(NfListObject::Table(table(previous)));
    retire.delete(NfListObject::Table(table(previous)));
    (
        build.to_nftables(),
        hook.to_nftables(),
        retire.to_nftables(),
    )
}

/// Flush and refill the six quarantine sets.
pub fn quarantine_batch(r: &Rendered, states: &DeviceStates) -> Nftables<'static> {
    use super::expr::{n, s};
    let mut b = Batch::new();
    let mut restrict = Vec::new();
    let mut isolate = Vec::new();
    let mut a4 = Vec::new();
    let mut a6 = Vec::new();
    let mut macs = [Vec::new(), Vec::new()];
    for (id, ix) in &r.dev_index {
        let q = states.quarantine(*id);
        if q == QUARANTINE_NONE {
            continue;
        }
        if q == QUARANTINE_ISOLATE {
            isolate.push(n(*ix));
        } else {
            restrict.push(n(*ix));
        }
        if let Some((v4, v6)) = r.dev_addrs.get(id) {
            a4.extend(v4.iter().map(|a| s(a.to_string())));
            a6.extend(v6.iter().map(|a| s(a.to_string())));
        }
        if let Some((mac, families)) = r.dev_mac_only.get(id) {
            for (fi, set) in macs.iter_mut().enumerate() {
                if families[fi] {
                    set.push(s(mac.clone()));
                }
            }
        }
    }
    let [mac4, mac6] = macs;
    for (name, elems) in [
        (names::QUAR_RESTRICT.to_string(), restrict),
        (names::QUAR_ISOLATE.to_string(), isolate),
        ("quar4".to_string(), a4),
        ("quar6".to_string(), a6),
        (format!("{}4", names::QUAR_MAC), mac4),
        (format!("{}6", names::QUAR_MAC), mac6),
    ] {
        let set = Set {
            family: r.family.nf(),
            table: r.table.clone().into(),
            name: name.clone().into(),
            ..Set::default()
        };
        b.add_cmd(NfCmd::Flush(FlushObject::Set(Box::new(set))));
        if !elems.is_empty() {
            b.add(NfListObject::Element(nftables::schema::Element {
                family: r.family.nf(),
                table: r.table.clone().into(),
                name: name.into(),
                elem: elems.into(),
            }));
        }
    }
    b.to_nftables()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `nft -j list` prints for the frame stage's dynamic sets and maps, read back:
    /// a raw IPv6 key is a hex string, or a number when it is small (`::2`).
    #[test]
    fn listed_owners_are_read_back_whatever_nft_prints_their_keys_as() {
        let set: serde_json::Value = serde_json::from_str(
            r#"{"nftables": [{"set": {"elem": [
                {"elem": {"val": {"concat": ["0xfd000020000000000000000000000050", "02:00:00:00:0a:01"]}, "expires": 30}},
                {"elem": {"val": {"concat": [2, "02:00:00:00:0a:02"]}, "expires": 40}}
            ]}}]}"#,
        )
        .expect("json");
        let pairs = concat_pairs(&set);
        let addrs: Vec<Option<std::net::Ipv6Addr>> =
            pairs.iter().map(|(a, _, _)| parse_raw6(a)).collect();
        assert_eq!(
            addrs,
            vec![
                Some("fd00:20::50".parse().expect("addr")),
                Some("::2".parse().expect("addr"))
            ]
        );
        assert_eq!(pairs[1].2, Some(40));
        let map: serde_json::Value = serde_json::from_str(
            r#"{"nftables": [{"map": {"elem": [
                [{"elem": {"val": "10.20.0.50", "expires": 599}}, 2147483651],
                [{"elem": {"val": 2, "expires": 1}}, 2147483652]
            ]}}]}"#,
        )
        .expect("json");
        assert_eq!(
            map_keys(&map),
            vec![
                ("10.20.0.50".to_string(), Some(599)),
                ("0x2".to_string(), Some(1))
            ]
        );
        // With their values: an owner's mark (`ownidx4`), and a MAC's (`macidx4`, whose
        // keys are plain strings, without a timeout).
        assert_eq!(
            map_pairs(&map),
            vec![
                ("10.20.0.50".to_string(), 2_147_483_651, Some(599)),
                ("0x2".to_string(), 2_147_483_652, Some(1))
            ]
        );
        let macs: serde_json::Value = serde_json::from_str(
            r#"{"nftables": [{"map": {"elem": [["02:00:00:00:0a:01", 2147483651]]}}]}"#,
        )
        .expect("json");
        assert_eq!(
            map_pairs(&macs),
            vec![("02:00:00:00:0a:01".to_string(), 2_147_483_651, None)]
        );
    }
}
