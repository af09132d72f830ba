//! Vendor service windows (`[exceptions.NAME]`): named workflows granted to some devices
//! for a bounded interval, under a ticket and an approver.
//!
//! A window is policy, reviewed like any other change, but it takes effect by the clock:
//! the compiler is given the time ([`compile_at`]) and adds each open window's workflows
//! to its devices ([`Policy::at`]), so what a device may do at a second is a plain
//! compiled policy, judged by the same maps and the same reference classifier as always.
//! The daemon recompiles at every opening and closing ([`Schedule::due`]) and
//! installs the result through the generation switch, so a closing window re-judges every
//! flow it allowed, established sessions included.
//!
//! A quarantine still wins: a window's workflows may not be essential (validation refuses
//! them), and only essential workflows reach a restricted device's policy; an isolated one
//! has the site's quarantine policy alone.

use super::compiled::Compiled;
use super::diag::PolicyErrors;
use super::model::{Date, Device, Exception, Policy};
use std::collections::{BTreeMap, BTreeSet};

/// The service windows of an enforcing generation: the policy's, as written, and which
/// of them were open when it was compiled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Schedule {
    pub exceptions: BTreeMap<String, Exception>,
    pub open: BTreeSet<String>,
}

impl Schedule {
    pub fn of(policy: &Policy, open: BTreeSet<String>) -> Schedule {
        Schedule {
            exceptions: policy.exceptions.clone(),
            open,
        }
    }

    /// When the enforcing generation next stops matching the clock (Unix seconds): `now`
    /// or earlier when it already does not (a boundary passed while a reload ran or
    /// failed), else the next opening or closing; `None` when no window will change.
    pub fn due(&self, now: i64) -> Option<i64> {
        let stale = self
            .exceptions
            .values()
            .any(|e| e.open_at(now) != self.open.contains(&e.name));
        if stale {
            return Some(now);
        }
        self.exceptions
            .values()
            .flat_map(|e| [e.from, e.until])
            .filter(|t| *t > now)
            .min()
    }

    /// The windows open in `next` and not here, and those open here and not in `next`.
    pub fn changes<'s>(&'s self, next: &'s Schedule) -> (Vec<&'s Exception>, Vec<&'s Exception>) {
        let opened = (next.open.difference(&self.open))
            .filter_map(|n| next.exceptions.get(n))
            .collect();
        let closed = (self.open.difference(&next.open))
            .filter_map(|n| self.exceptions.get(n))
            .collect();
        (opened, closed)
    }
}

impl Exception {
    /// Open at `now` (Unix seconds): `from <= now < until`.
    pub fn open_at(&self, now: i64) -> bool {
        self.from <= now && now < self.until
    }

    /// Whether the window is granted to `d` (by id, or by its class).
    pub fn applies_to(&self, d: &Device) -> bool {
        self.devices.contains(&d.id)
            || self
                .class
                .as_ref()
                .is_some_and(|c| d.class.as_ref() == Some(c))
    }

    /// `from – until` in UTC, for people.
    pub fn interval(&self) -> String {
        format!("{} – {}", format_time(self.from), format_time(self.until))
    }
}

impl Policy {
    /// The names of the windows open at `now`.
    pub fn open_windows(&self, now: i64) -> BTreeSet<String> {
        self.exceptions
            .values()
            .filter(|e| e.open_at(now))
            .map(|e| e.name.clone())
            .collect()
    }

    /// The policy with the windows named in `open` applied: each one's workflows added to
    /// the devices it names. A copy; the policy as written is kept for the next change.
    pub fn at(&self, open: &BTreeSet<String>) -> Policy {
        let mut p = self.clone();
        for e in self.exceptions.values().filter(|e| open.contains(&e.name)) {
            for d in p.devices.iter_mut().filter(|d| e.applies_to(d)) {
                d.workflows.extend(e.workflows.iter().cloned());
            }
        }
        p
    }
}

/// Compiles `policy` as it stands at `now`: with the windows open then. Returns the open
/// windows' names too.
///
/// A window that has not ended is compiled open as well (all of them at once, the most
/// they could grant together), and its errors are the policy's: a window whose workflow
/// cannot apply to its devices (an address family they lack, a map it would overflow) is
/// refused by `check` and by the reload that brings it, not found failing at its `from`.
pub fn compile_at(policy: &Policy, now: i64) -> Result<(Compiled, BTreeSet<String>), PolicyErrors> {
    let open = policy.open_windows(now);
    let coming: BTreeSet<String> = (policy.exceptions.values())
        .filter(|e| e.until > now)
        .map(|e| e.name.clone())
        .collect();
    if coming != open {
        super::compile(&policy.at(&coming))?;
    }
    let compiled = if open.is_empty() {
        super::compile(policy)?
    } else {
        super::compile(&policy.at(&open))?
    };
    Ok((compiled, open))
}

/// The wall clock in Unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// An RFC 3339 date-time with a UTC offset (`2026-12-04T09:00:00Z`,
/// `2026-12-04T10:00:00+01:00`, fractions of a second ignored) in Unix seconds. A local
/// date-time without an offset is refused: a window must mean the same second on every
/// gateway and in every reviewer's head.
pub fn parse_time(text: &str) -> Option<i64> {
    let t = text.trim();
    let (date, rest) = t.split_at_checked(10)?;
    let date: Date = date.parse().ok()?;
    let rest = rest.strip_prefix(['T', 't', ' '])?;
    let (hms, rest) = rest.split_at_checked(8)?;
    let mut it = hms.split(':');
    let (Some(h), Some(m), Some(s), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return None;
    };
    let field = |x: &str, max: i64| -> Option<i64> {
        (x.len() == 2 && x.bytes().all(|b| b.is_ascii_digit()))
            .then(|| x.parse::<i64>().ok())
            .flatten()
            .filter(|v| *v <= max)
    };
    let (h, m, s) = (field(h, 23)?, field(m, 59)?, field(s, 60)?);
    let rest = match rest.strip_prefix('.') {
        Some(frac) => {
            let after = frac.trim_start_matches(|c: char| c.is_ascii_digit());
            if after.len() == frac.len() {
                // A point with no digits after it.
                return None;
            }
            after
        }
        None => rest,
    };
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let (sign, hm) = match rest.split_at_checked(1)? {
                ("+", hm) => (1, hm),
                ("-", hm) => (-1, hm),
                _ => return None,
            };
            let (oh, om) = hm.split_once(':')?;
            sign * (field(oh, 23)? * 3600 + field(om, 59)? * 60)
        }
    };
    Some(date.days() * 86_400 + h * 3600 + m * 60 + s - offset)
}

/// Unix seconds as an RFC 3339 UTC date-time (`2026-12-04T09:00:00Z`).
pub fn format_time(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let d = Date::from_days(days);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        d.year,
        d.month,
        d.day,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Seconds as the policy writes durations (`2h`, `90m`, `45s`), for messages.
pub fn format_duration(secs: i64) -> String {
    match secs {
        s if s % 86_400 == 0 && s > 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 && s > 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 && s > 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_times_parse_with_their_offset_and_print_in_utc() {
        let t = parse_time("2026-12-04T09:00:00Z");
        assert_eq!(t, Some(1_796_374_800));
        assert_eq!(parse_time("2026-12-04T10:00:00+01:00"), t);
        assert_eq!(parse_time("2026-12-04T08:30:00.250-00:30"), t);
        assert_eq!(parse_time("2026-12-04 09:00:00Z"), t);
        assert_eq!(format_time(1_796_374_800), "2026-12-04T09:00:00Z");
        for bad in [
            "2026-12-04T09:00:00",
            "2026-12-04",
            "2026-13-04T09:00:00Z",
            "2026-12-04T24:00:00Z",
            "2026-12-04T09:00Z",
            "2026-12-04T09:00:00+1:00",
            "2026-12-04T09:00:00.Z",
            "2026-+1-+4T09:00:00Z",
            "tomorrow",
            "",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }

    fn window(name: &str, from: i64, until: i64) -> Exception {
        Exception {
            name: name.into(),
            span: Default::default(),
            devices: vec!["pump-01".into()],
            class: None,
            workflows: vec!["vendor".into()],
            from,
            until,
            ticket: "CHG-1".into(),
            approved_by: "biomed".into(),
            description: String::new(),
        }
    }

    #[test]
    fn a_schedule_is_due_at_each_boundary_and_at_once_when_stale() {
        let mut s = Schedule::default();
        s.exceptions.insert("a".into(), window("a", 100, 200));
        s.exceptions.insert("b".into(), window("b", 150, 300));
        assert_eq!(s.due(50), Some(100));
        // Compiled before 100 and still enforcing at 120: due now.
        assert_eq!(s.due(120), Some(120));
        s.open.insert("a".into());
        assert_eq!(s.due(120), Some(150));
        s.open.insert("b".into());
        assert_eq!(s.due(150), Some(200), "from is inclusive");
        assert_eq!(s.due(200), Some(200), "until is exclusive: a closes at 200");
        s.open.clear();
        assert_eq!(s.due(300), None);
        let mut next = s.clone();
        next.open.insert("b".into());
        let (opened, closed) = s.changes(&next);
        assert_eq!((opened.len(), closed.len()), (1, 0));
        let (opened, closed) = next.changes(&s);
        assert_eq!((opened.len(), closed[0].name.as_str()), (0, "b"));
    }

    #[test]
    fn durations_print_in_the_largest_whole_unit() {
        assert_eq!(format_duration(7200), "2h");
        assert_eq!(format_duration(5400), "90m");
        assert_eq!(format_duration(86_400), "1d");
        assert_eq!(format_duration(45), "45s");
    }
}
