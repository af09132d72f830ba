//! Values: names, durations, addresses, protocols and ports, each parsed with its position
//! and a hint when it is wrong.

use super::*;

pub(super) fn text(s: &Option<Sp<String>>) -> String {
    s.as_ref().map(|s| s.v.clone()).unwrap_or_default()
}

pub(super) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
}

/// `30s`, `5m`, `4h`, `2d` in seconds.
pub(super) fn parse_duration(text: &str) -> Option<u64> {
    let unit = text.chars().last()?;
    let n: u64 = text.get(..text.len() - 1)?.parse().ok()?;
    let mult = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    };
    n.checked_mul(mult).filter(|s| *s > 0)
}

/// An address (`10.1.2.3`, a host prefix) or a prefix (`10.1.0.0/16`), host bits clear.
pub fn parse_net(text: &str) -> Result<IpNet, Problem> {
    if let Ok(addr) = text.parse::<IpAddr>() {
        return Ok(IpNet::from(addr));
    }
    match text.parse::<IpNet>() {
        Ok(net) if net.trunc() == net => Ok(net),
        Ok(net) => Err(Problem::HostBits {
            text: text.to_string(),
            network: net.trunc().to_string(),
        }),
        Err(_) => Err(Problem::BadAddress {
            text: text.to_string(),
        }),
    }
}

/// Whether `word` could be the first group of an IPv6 address (`fd00:`, `dead:`).
pub(super) fn is_hex_group(word: &str) -> bool {
    word.len() <= 4 && word.chars().all(|c| c.is_ascii_hexdigit())
}

impl Validator<'_> {
    pub(super) fn check_name(&mut self, kind: NameKind, name: &Sp<String>) {
        if !valid_name(&name.v) {
            self.diags.err(
                Problem::InvalidName {
                    kind,
                    name: name.v.clone(),
                },
                name.span,
            );
        }
    }

    /// Whether `name` is defined; reports a dangling name with the nearest match.
    pub(super) fn known(&mut self, kind: NameKind, name: &Sp<String>) -> bool {
        self.known_str(kind, &name.v, name.span)
    }

    pub(super) fn known_str(&mut self, kind: NameKind, name: &str, span: Span) -> bool {
        let set = self.names_of(kind);
        if set.contains(name) {
            return true;
        }
        let hint = did_you_mean(name, set.iter().map(String::as_str));
        self.diags.push(
            Diagnostic::at(
                Problem::UnknownName {
                    kind,
                    name: name.to_string(),
                },
                span,
            )
            .maybe_hint(hint),
        );
        false
    }

    pub(super) fn bad_value(&mut self, key: &str, value: &Sp<String>, allowed: &[&str]) {
        self.diags.push(
            Diagnostic::at(
                Problem::BadValue {
                    key: key.to_string(),
                    value: value.v.clone(),
                    expected: allowed.join(", "),
                },
                value.span,
            )
            .maybe_hint(did_you_mean(&value.v, allowed.iter().copied())),
        );
    }

    pub(super) fn choice<T: Copy>(
        &mut self,
        key: &str,
        value: &Sp<String>,
        options: &[(&str, T)],
    ) -> Option<T> {
        if let Some((_, t)) = options.iter().find(|(n, _)| *n == value.v) {
            return Some(*t);
        }
        let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
        self.bad_value(key, value, &names);
        None
    }

    pub(super) fn mode(&mut self, m: &Sp<String>) -> Option<Mode> {
        self.choice(
            "mode",
            m,
            &[
                ("enforce", Mode::Enforce),
                ("audit", Mode::Audit),
                ("learn", Mode::Learn),
            ],
        )
    }

    pub(super) fn net(&mut self, s: &Sp<String>) -> Option<IpNet> {
        match parse_net(&s.v) {
            Ok(n) => Some(n),
            Err(p) => {
                let hint = match &p {
                    Problem::HostBits { network, .. } => {
                        Some(format!("did you mean \"{network}\"?"))
                    }
                    _ => None,
                };
                self.diags.push(Diagnostic::at(p, s.span).maybe_hint(hint));
                None
            }
        }
    }

    pub(super) fn duration(&mut self, s: &Sp<String>) -> Option<u64> {
        let d = parse_duration(&s.v);
        if d.is_none() {
            self.diags
                .err(Problem::BadDuration { text: s.v.clone() }, s.span);
        }
        d
    }

    pub(super) fn ranged(
        &mut self,
        key: &str,
        n: &Sp<i64>,
        lo: i64,
        hi: i64,
        expected: &'static str,
    ) -> Option<i64> {
        if (lo..=hi).contains(&n.v) {
            Some(n.v)
        } else {
            self.diags.err(
                Problem::OutOfRange {
                    key: key.to_string(),
                    value: n.v,
                    expected,
                },
                n.span,
            );
            None
        }
    }

    // === Site ===

    pub(super) fn action(&mut self, a: &Sp<String>) -> Option<QuarantineAction> {
        self.choice(
            "action",
            a,
            &[
                ("alert", QuarantineAction::Alert),
                ("restrict", QuarantineAction::Restrict),
                ("isolate", QuarantineAction::Isolate),
            ],
        )
    }

    pub(super) fn proto(&mut self, p: &Sp<NumOrText>) -> Option<Proto> {
        let bad = |this: &mut Self, text: String| {
            let hint = did_you_mean(&text, ["tcp", "udp", "icmp", "icmpv6", "any"]);
            this.diags
                .push(Diagnostic::at(Problem::BadProto { text }, p.span).maybe_hint(hint));
            None
        };
        match &p.v {
            NumOrText::Num(n) => match u8::try_from(*n) {
                Ok(n) => Some(Proto::from_number(n)),
                Err(_) => bad(self, n.to_string()),
            },
            NumOrText::Text(t) => match t.as_str() {
                "any" => Some(Proto::Any),
                "tcp" => Some(Proto::Tcp),
                "udp" => Some(Proto::Udp),
                "icmp" => Some(Proto::Icmp),
                "icmpv6" => Some(Proto::Icmpv6),
                other => match other.parse::<u8>() {
                    Ok(n) => Some(Proto::from_number(n)),
                    Err(_) => bad(self, other.to_string()),
                },
            },
        }
    }

    pub(super) fn port_number(&mut self, n: &Sp<i64>) -> Option<u16> {
        match u16::try_from(n.v) {
            Ok(p) => Some(p),
            Err(_) => {
                self.diags
                    .err(Problem::PortOutOfRange { value: n.v }, n.span);
                None
            }
        }
    }

    pub(super) fn port_text(&mut self, t: &str, span: Span) -> Option<u16> {
        match t.trim().parse::<i64>() {
            Ok(n) => self.port_number(&Sp { v: n, span }),
            Err(_) => {
                let name = t.trim();
                if let Some(p) = self.ports.get(name) {
                    return Some(*p);
                }
                let looks_like_name = name.chars().any(|c| c.is_ascii_alphabetic());
                if looks_like_name {
                    let hint = did_you_mean(name, self.ports.keys().map(String::as_str));
                    self.diags.push(
                        Diagnostic::at(
                            Problem::UnknownName {
                                kind: NameKind::Port,
                                name: name.to_string(),
                            },
                            span,
                        )
                        .maybe_hint(
                            hint.or_else(|| Some("define it under [site.ports]".to_string())),
                        ),
                    );
                } else {
                    self.diags.err(
                        Problem::BadPort {
                            text: t.to_string(),
                        },
                        span,
                    );
                }
                None
            }
        }
    }

    pub(super) fn port_range(&mut self, p: &Sp<NumOrText>) -> Option<PortRange> {
        match &p.v {
            NumOrText::Num(n) => self
                .port_number(&Sp {
                    v: *n,
                    span: p.span,
                })
                .map(|x| PortRange { lo: x, hi: x }),
            NumOrText::Text(t) => match t.split_once('-') {
                Some((a, b))
                    if !a.trim().is_empty() && a.trim().chars().all(|c| c.is_ascii_digit()) =>
                {
                    if !b.trim().chars().all(|c| c.is_ascii_digit()) || b.trim().is_empty() {
                        self.diags.err(Problem::BadPort { text: t.clone() }, p.span);
                        return None;
                    }
                    let lo = self.port_text(a, p.span)?;
                    let hi = self.port_text(b, p.span)?;
                    if lo > hi {
                        self.diags.push(
                            Diagnostic::at(Problem::ReversedPortRange { lo, hi }, p.span)
                                .hint(format!("did you mean \"{hi}-{lo}\"?")),
                        );
                        return None;
                    }
                    Some(PortRange { lo, hi })
                }
                _ => self
                    .port_text(t, p.span)
                    .map(|x| PortRange { lo: x, hi: x }),
            },
        }
    }
}
