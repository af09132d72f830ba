//! The device risk score: a documented, explainable 0-100 number from inventory attributes
//! and the advisories that apply to the device. Pure: "today" is an argument, never read
//! from the clock here.
//!
//! | factor | points |
//! |---|---|
//! | `life_critical = true` | 30 |
//! | `patient_connection`: direct / indirect / none | 20 / 10 / 0 |
//! | `stores_phi = true` | 15 |
//! | `patchable = false` | 15 |
//! | last patch more than 2 years ago / more than 1 year ago / never recorded | 20 / 10 / 10 |
//! | each advisory that applies (see [`crate::advisories`]) | 15 |
//! | ... of it, known exploited (a CVE in the KEV catalog) | 25 more |
//! | ... of it, on a device that cannot be patched | 10 more |
//!
//! The score is capped at 100. Bands: 70 and above `high`, 40 and above `medium`, else
//! `low`.

use super::advisories::Hit;
use super::model::{Inventory, PatientConnection};
use serde::Serialize;

/// A risk score and the factors behind it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Risk {
    pub score: u8,
    pub band: &'static str,
    pub factors: Vec<(String, u8)>,
    /// The advisories that apply, by id.
    pub advisories: Vec<Hit>,
}

/// Risk bands, ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Band {
    Low,
    Medium,
    High,
}

impl Band {
    pub fn of(score: u8) -> Band {
        match score {
            70.. => Band::High,
            40.. => Band::Medium,
            _ => Band::Low,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Band::Low => "low",
            Band::Medium => "medium",
            Band::High => "high",
        }
    }
}

/// The risk score of a device as of `today` (days since 1970-01-01), with the advisories
/// that apply to it.
pub fn score(inv: &Inventory, today: i64, hits: &[Hit]) -> Risk {
    let mut factors: Vec<(String, u8)> = Vec::new();
    let mut add = |name: &str, points: u8| factors.push((name.to_string(), points));
    if inv.life_critical {
        add("life-critical", 30);
    }
    match inv.patient_connection {
        PatientConnection::Direct => add("direct patient connection", 20),
        PatientConnection::Indirect => add("indirect patient connection", 10),
        PatientConnection::None => {}
    }
    if inv.stores_phi {
        add("stores PHI", 15);
    }
    if !inv.patchable {
        add("not patchable", 15);
    }
    match inv.last_patched {
        None => add("no patch date recorded", 10),
        Some(d) => {
            let age = today - d.days();
            if age > 730 {
                add("last patched over 2 years ago", 20);
            } else if age > 365 {
                add("last patched over a year ago", 10);
            }
        }
    }
    for h in hits {
        let cves = if h.cves.is_empty() {
            String::new()
        } else {
            format!(" ({})", h.cves.join(", "))
        };
        add(&format!("advisory {}{cves}", h.id), 15);
        if h.exploited {
            add(&format!("advisory {}: known exploited", h.id), 25);
        }
        if !inv.patchable {
            add(&format!("advisory {}: device not patchable", h.id), 10);
        }
    }
    let score = factors
        .iter()
        .map(|(_, p)| u32::from(*p))
        .sum::<u32>()
        .min(100) as u8;
    Risk {
        score,
        band: Band::of(score).name(),
        factors,
        advisories: hits.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Date;

    fn day(y: i32, m: u8, d: u8) -> i64 {
        Date {
            year: y,
            month: m,
            day: d,
        }
        .days()
    }

    #[test]
    fn worst_case_is_100_and_a_clean_device_is_0() {
        let worst = Inventory {
            life_critical: true,
            patient_connection: PatientConnection::Direct,
            stores_phi: true,
            patchable: false,
            last_patched: Some(Date {
                year: 2019,
                month: 1,
                day: 1,
            }),
            ..Inventory::default()
        };
        assert_eq!(score(&worst, day(2025, 6, 1), &[]).score, 100);
        assert_eq!(score(&worst, day(2025, 6, 1), &[]).band, "high");
        let clean = Inventory {
            patchable: true,
            last_patched: Some(Date {
                year: 2025,
                month: 5,
                day: 1,
            }),
            ..Inventory::default()
        };
        assert_eq!(score(&clean, day(2025, 6, 1), &[]).score, 0);
    }

    #[test]
    fn patch_age_is_relative_to_the_given_day() {
        let inv = Inventory {
            patchable: true,
            last_patched: Some(Date {
                year: 2024,
                month: 1,
                day: 10,
            }),
            ..Inventory::default()
        };
        assert_eq!(score(&inv, day(2024, 6, 1), &[]).score, 0);
        assert_eq!(score(&inv, day(2025, 6, 1), &[]).score, 10);
        assert_eq!(score(&inv, day(2026, 6, 1), &[]).score, 20);
    }

    #[test]
    fn dates_round_trip_through_day_counts() {
        for (y, m, d) in [(1970, 1, 1), (2000, 2, 29), (2024, 12, 31), (2100, 3, 1)] {
            let date = Date {
                year: y,
                month: m,
                day: d,
            };
            assert_eq!(Date::from_days(date.days()), date);
        }
        assert_eq!(
            Date {
                year: 1970,
                month: 1,
                day: 2
            }
            .days(),
            1
        );
        assert!("2023-02-29".parse::<Date>().is_err());
        assert!("2024-02-29".parse::<Date>().is_ok());
    }
}
