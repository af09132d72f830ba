//! HMAC-SHA256 over a message given in parts, in hex: the webhook's signature header and the
//! pair's quarantine replication both sign this way.

use hmac::Mac as _;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

fn mac(key: &[u8], parts: &[&[u8]]) -> Option<HmacSha256> {
    // HMAC takes a key of any length: never `None` in practice.
    let mut m = HmacSha256::new_from_slice(key).ok()?;
    for p in parts {
        m.update(p);
    }
    Some(m)
}

/// The hex HMAC-SHA256 of the concatenated `parts` under `key` (empty if the key were
/// refused, which HMAC never does).
pub(super) fn hex(key: &[u8], parts: &[&[u8]]) -> String {
    use std::fmt::Write as _;
    let Some(m) = mac(key, parts) else {
        return String::new();
    };
    let mut out = String::with_capacity(64);
    for b in m.finalize().into_bytes() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Whether `given` (hex) is the HMAC-SHA256 of `parts` under `key`, compared in constant
/// time by the `hmac` crate.
pub(super) fn verify_hex(key: &[u8], parts: &[&[u8]], given: &str) -> bool {
    let Some(bytes) = decode(given) else {
        return false;
    };
    mac(key, parts).is_some_and(|m| m.verify_slice(&bytes).is_ok())
}

fn decode(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_signature_verifies_under_its_key_only() {
        let parts: [&[u8]; 2] = [b"1.", b"body"];
        let sig = super::hex(b"key", &parts);
        assert_eq!(sig.len(), 64);
        assert!(super::verify_hex(b"key", &parts, &sig));
        assert!(!super::verify_hex(b"other", &parts, &sig));
        assert!(!super::verify_hex(b"key", &[b"1.", b"bodY"], &sig));
        assert!(!super::verify_hex(b"key", &parts, &sig[..63]));
        assert!(!super::verify_hex(b"key", &parts, "zz"));
    }
}
