//! The device risk score: a documented, explainable 0-100 number from inventory attributes.
//! Pure: "today" is an argument, never read from the clock here.
//!
//! | factor | points |
//! |---|---|
//! | `life_critical = true` | 30 |
//! | `patient_connection`: direct / indirect / none | 20 / 10 / 0 |
//! | `stores_phi = true` | 15 |
//! | `patchable = false` | 15 |
//! | last patch more than 2 years ago / more than 1 year ago / never recorded | 20 / 10 / 10 |
//!
//! The factors add up to at most 100. Bands: 70 and above `high`, 40 and above `medium`,
//! else `low`.

use super::model::{Inventory, PatientConnection};
use serde::Serialize;

/// A risk score and the factors behind it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Risk {
    pub score: u8,
    pub band: &'static str,
    pub factors: Vec<(&'static str, u8)>,
}

/// The risk score of a device as of `today` (days since 1970-01-01).
pub fn score(inv: &Inventory, today: i64) -> Risk {
    let mut factors = Vec::new();
    if inv.life_critical {
        factors.push(("life-critical", 30));
    }
    match inv.patient_connection {
        PatientConnection::Direct => factors.push(("direct patient connection", 20)),
        PatientConnection::Indirect => factors.push(("indirect patient connection", 10)),
        PatientConnection::None => {}
    }
    if inv.stores_phi {
        factors.push(("stores PHI", 15));
    }
    if !inv.patchable {
        factors.push(("not patchable", 15));
    }
    match inv.last_patched {
        None => factors.push(("no patch date recorded", 10)),
        Some(d) => {
            let age = today - d.days();
            if age > 730 {
                factors.push(("last patched over 2 years ago", 20));
            } else if age > 365 {
                factors.push(("last patched over a year ago", 10));
            }
        }
    }
    let score = factors
        .iter()
        .map(|(_, p)| u32::from(*p))
        .sum::<u32>()
        .min(100) as u8;
    let band = match score {
        70.. => "high",
        40.. => "medium",
        _ => "low",
    };
    Risk {
        score,
        band,
        factors,
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
        assert_eq!(score(&worst, day(2025, 6, 1)).score, 100);
        assert_eq!(score(&worst, day(2025, 6, 1)).band, "high");
        let clean = Inventory {
            patchable: true,
            last_patched: Some(Date {
                year: 2025,
                month: 5,
                day: 1,
            }),
            ..Inventory::default()
        };
        assert_eq!(score(&clean, day(2025, 6, 1)).score, 0);
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
        assert_eq!(score(&inv, day(2024, 6, 1)).score, 0);
        assert_eq!(score(&inv, day(2025, 6, 1)).score, 10);
        assert_eq!(score(&inv, day(2026, 6, 1)).score, 20);
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
