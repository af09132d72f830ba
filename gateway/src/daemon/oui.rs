//! Vendor names for MAC addresses: the IEEE's registry of MA-L assignments (OUIs), read at
//! start from the system's copy (Debian's `ieee-data`: `/usr/share/ieee-data/oui.txt`), so
//! an unknown device on a device port is listed with who made its network interface
//! (`devices --unknown`, the unknown-device event, the webhook). Not vendored: the system
//! package keeps it current.
//!
//! A locally administered MAC (the second-lowest bit of the first octet set) was not
//! assigned by the IEEE: it is chosen by software, typically randomised for privacy by a
//! phone or a laptop, and names no vendor. Such MACs are flagged as randomised instead.
//! Vendor names are outside text: whoever prints them makes them safe (`crate::text`).

use std::{collections::HashMap, path::Path};

/// The system's copy of the registry.
pub const SYSTEM_FILE: &str = "/usr/share/ieee-data/oui.txt";

/// Vendors by the first three octets of a MAC.
#[derive(Debug, Default)]
pub struct Vendors(HashMap<[u8; 3], String>);

impl Vendors {
    /// Reads `path`; an empty table (and why) when it cannot be read.
    pub fn load(path: &Path) -> (Vendors, Option<String>) {
        match std::fs::read(path) {
            Ok(bytes) => (Vendors::parse(&String::from_utf8_lossy(&bytes)), None),
            Err(e) => (
                Vendors::default(),
                Some(format!("{}: {e} (install ieee-data)", path.display())),
            ),
        }
    }

    /// The registry's text: lines `00-1A-2B   (hex)<TAB><TAB>Vendor`; everything else
    /// (addresses, the base-16 lines, headers) is skipped.
    pub fn parse(text: &str) -> Vendors {
        let mut map = HashMap::new();
        for line in text.lines() {
            let Some((prefix, rest)) = line.split_once("(hex)") else {
                continue;
            };
            let octets: Vec<u8> = prefix
                .trim()
                .split('-')
                .filter_map(|h| u8::from_str_radix(h, 16).ok())
                .collect();
            let name = rest.trim();
            if let ([a, b, c], false) = (octets.as_slice(), name.is_empty()) {
                map.insert([*a, *b, *c], name.to_string());
            }
        }
        Vendors(map)
    }

    /// How many assignments are known.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The vendor `mac` was assigned to; none for a locally administered MAC.
    pub fn name(&self, mac: &[u8; 6]) -> Option<&str> {
        if locally_administered(mac) {
            return None;
        }
        self.0.get(&[mac[0], mac[1], mac[2]]).map(String::as_str)
    }
}

/// Whether `mac` is locally administered (chosen by software, often randomised), not one
/// the IEEE assigned.
pub fn locally_administered(mac: &[u8; 6]) -> bool {
    mac[0] & 0x02 != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "OUI/MA-L                 Organization\n\
company_id               Organization\n\
                         Address\n\
\n\
00-22-72   (hex)\t\tAmerican Micro-Fuel Device Corp.\n\
002272     (base 16)\t\tAmerican Micro-Fuel Device Corp.\n\
\t\t\t\t2181 Buchanan Loop\n\
\n\
00-1A-2B   (hex)\t\tAyecom Technology Co., Ltd.\n\
zz-1A-2B   (hex)\t\tnot an assignment\n\
00-1A-2C   (hex)\t\t\n";

    #[test]
    fn the_registry_names_assigned_macs_and_nothing_else() {
        let v = Vendors::parse(SAMPLE);
        assert_eq!(v.len(), 2);
        assert_eq!(
            v.name(&[0x00, 0x22, 0x72, 1, 2, 3]),
            Some("American Micro-Fuel Device Corp.")
        );
        assert_eq!(
            v.name(&[0x00, 0x1a, 0x2b, 0, 0, 1]),
            Some("Ayecom Technology Co., Ltd.")
        );
        assert_eq!(v.name(&[0x00, 0x1a, 0x2c, 0, 0, 1]), None);
        // Locally administered: no vendor, whatever its first octets.
        assert!(locally_administered(&[0x02, 0x22, 0x72, 1, 2, 3]));
        assert!(!locally_administered(&[0x00, 0x22, 0x72, 1, 2, 3]));
        assert_eq!(v.name(&[0x02, 0x22, 0x72, 1, 2, 3]), None);
    }

    #[test]
    fn a_missing_registry_is_an_empty_table_with_a_reason() {
        let (v, why) = Vendors::load(Path::new("/nonexistent/oui.txt"));
        assert!(v.is_empty());
        assert!(why.is_some_and(|w| w.contains("ieee-data")));
    }
}
