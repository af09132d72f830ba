//! The cells of an export: which device key a column can fill, how each kind of value is
//! read (and refused, with what to write instead), and how it compares with what the
//! repository already says.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lazaret_policy::{
    model::{Date, Mac},
    text::printable,
};
use toml_edit::Item;

/// The device keys a column can fill, and how each value is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Kind {
    Text,
    Mac,
    Ipv4,
    Ipv6,
    Vlan,
    Date,
    Bool,
    PatientConnection,
}

pub(super) const KEYS: &[(&str, Kind)] = &[
    ("id", Kind::Text),
    ("mac", Kind::Mac),
    ("ipv4", Kind::Ipv4),
    ("ipv6", Kind::Ipv6),
    ("vlan", Kind::Vlan),
    ("interface", Kind::Text),
    ("port", Kind::Text),
    ("vendor", Kind::Text),
    ("model", Kind::Text),
    ("serial", Kind::Text),
    ("firmware", Kind::Text),
    ("last_patched", Kind::Date),
    ("location", Kind::Text),
    ("owner", Kind::Text),
    ("life_critical", Kind::Bool),
    ("stores_phi", Kind::Bool),
    ("patient_connection", Kind::PatientConnection),
    ("patchable", Kind::Bool),
    ("notes", Kind::Text),
];

/// A normalised cell value, with the text it is written and compared as.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Value {
    Text(String),
    /// Addresses (`ipv4`, `ipv6`): one is written as a string, more as an array.
    Addrs(Vec<IpAddr>),
    Int(i64),
    Bool(bool),
    Date(Date),
}

impl Value {
    pub(super) fn item(&self) -> Item {
        match self {
            Value::Text(s) => toml_edit::value(s.as_str()),
            Value::Addrs(a) if a.len() == 1 => toml_edit::value(a[0].to_string()),
            Value::Addrs(a) => {
                let arr: toml_edit::Array = a.iter().map(ToString::to_string).collect();
                toml_edit::value(arr)
            }
            Value::Int(i) => toml_edit::value(*i),
            Value::Bool(b) => toml_edit::value(*b),
            Value::Date(d) => toml_edit::value(toml_edit::Datetime {
                date: Some(toml_edit::Date {
                    year: u16::try_from(d.year).unwrap_or(0),
                    month: d.month,
                    day: d.day,
                }),
                time: None,
                offset: None,
            }),
        }
    }

    pub(super) fn show(&self) -> String {
        match self {
            Value::Text(s) => format!("{s:?}"),
            Value::Addrs(a) => a
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            Value::Int(i) => i.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Date(d) => d.to_string(),
        }
    }

    /// Whether the repository's `item` already says this (a MAC in another spelling, one
    /// address as a string or an array, a date as a string or a TOML date).
    pub(super) fn same_as(&self, kind: Kind, item: &Item) -> bool {
        match (self, kind) {
            (Value::Text(s), Kind::Mac) => item
                .as_str()
                .and_then(|t| t.parse::<Mac>().ok())
                .is_some_and(|m| m.to_string() == *s),
            (Value::Text(s), _) => item.as_str() == Some(s.as_str()),
            (Value::Addrs(a), _) => {
                let old: Option<Vec<IpAddr>> = match item {
                    Item::Value(toml_edit::Value::String(s)) => {
                        s.value().parse().ok().map(|a| vec![a])
                    }
                    Item::Value(toml_edit::Value::Array(arr)) => arr
                        .iter()
                        .map(|v| v.as_str().and_then(|s| s.parse().ok()))
                        .collect(),
                    _ => None,
                };
                old.as_ref() == Some(a)
            }
            (Value::Int(i), _) => item.as_integer() == Some(*i),
            (Value::Bool(b), _) => item.as_bool() == Some(*b),
            (Value::Date(d), _) => match item {
                Item::Value(toml_edit::Value::Datetime(dt)) => {
                    let dt = dt.value();
                    dt.time.is_none()
                        && dt.date.is_some_and(|x| {
                            i32::from(x.year) == d.year && x.month == d.month && x.day == d.day
                        })
                }
                Item::Value(toml_edit::Value::String(s)) => s.value().parse::<Date>() == Ok(*d),
                _ => false,
            },
        }
    }
}

/// The repository's text of a key, for the plan.
pub(super) fn show_item(item: &Item) -> String {
    match item {
        Item::Value(toml_edit::Value::String(s)) => format!("{:?}", s.value()),
        Item::Value(v) => v.to_string().trim().to_string(),
        other => other.to_string().trim().to_string(),
    }
}

/// Reads one cell as `kind`; `Err` says what is wrong and how to write it.
pub(super) fn parse_cell(kind: Kind, cell: &str) -> Result<Value, String> {
    match kind {
        Kind::Text => Ok(Value::Text(cell.to_string())),
        Kind::Mac => parse_mac(cell)
            .map(|m| Value::Text(m.to_string()))
            .ok_or_else(|| {
                format!(
                    "{:?} is not a MAC address (00:1a:2b:30:00:11, 00-1A-2B-30-00-11, \
001a.2b30.0011 or 001A2B300011)",
                    printable(cell)
                )
            }),
        Kind::Ipv4 => addrs(cell, |a| a.parse::<Ipv4Addr>().ok().map(IpAddr::V4), "IPv4"),
        Kind::Ipv6 => addrs(cell, |a| a.parse::<Ipv6Addr>().ok().map(IpAddr::V6), "IPv6"),
        Kind::Vlan => match cell.parse::<i64>() {
            Ok(v) if (1..=4094).contains(&v) => Ok(Value::Int(v)),
            _ => Err(format!("{:?} is not a VLAN id (1–4094)", printable(cell))),
        },
        Kind::Date => {
            // A CMMS often appends a midnight time: the date is what is meant.
            let date = cell.split([' ', 'T']).next().unwrap_or_default();
            date.parse::<Date>().map(Value::Date).map_err(|()| {
                format!(
                    "{:?} is not a date: write it as YYYY-MM-DD (the export's day/month \
order cannot be known)",
                    printable(cell)
                )
            })
        }
        Kind::Bool => match cell.to_ascii_lowercase().as_str() {
            "yes" | "y" | "true" | "1" | "x" => Ok(Value::Bool(true)),
            "no" | "n" | "false" | "0" => Ok(Value::Bool(false)),
            _ => Err(format!(
                "{:?} is not yes or no (yes/no, y/n, true/false, 1/0)",
                printable(cell)
            )),
        },
        Kind::PatientConnection => match cell.to_ascii_lowercase().as_str() {
            p @ ("direct" | "indirect" | "none") => Ok(Value::Text(p.to_string())),
            _ => Err(format!(
                "{:?} is not a patient connection (direct, indirect or none)",
                printable(cell)
            )),
        },
    }
}

/// Addresses in one cell, separated by spaces or commas.
fn addrs(
    cell: &str,
    parse: impl Fn(&str) -> Option<IpAddr>,
    family: &str,
) -> Result<Value, String> {
    let mut out = Vec::new();
    for a in cell.split([' ', ',']).filter(|a| !a.is_empty()) {
        out.push(parse(a).ok_or_else(|| format!("{:?} is not an {family} address", printable(a)))?);
    }
    if out.is_empty() {
        return Err(format!("{:?} holds no {family} address", printable(cell)));
    }
    Ok(Value::Addrs(out))
}

/// A MAC in the spellings exports use: six pairs with `:` or `-`, three quads with `.`
/// (Cisco), or twelve bare hex digits.
pub(super) fn parse_mac(text: &str) -> Option<Mac> {
    let hex: String = match text.len() {
        17 => {
            let sep = text.as_bytes()[2];
            if sep != b':' && sep != b'-' {
                return None;
            }
            let parts: Vec<&str> = text.split(sep as char).collect();
            if parts.len() != 6 || parts.iter().any(|p| p.len() != 2) {
                return None;
            }
            parts.concat()
        }
        14 => {
            let parts: Vec<&str> = text.split('.').collect();
            if parts.len() != 3 || parts.iter().any(|p| p.len() != 4) {
                return None;
            }
            parts.concat()
        }
        12 => text.to_string(),
        _ => return None,
    };
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut mac = [0u8; 6];
    for (i, byte) in mac.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(Mac(mac))
}
