//! Ranges as nftables interval sets need them: nested prefixes flattened into disjoint
//! ranges (the longest prefix wins, as in the XDP program's LPM lookup), and overlapping
//! ranges joined, because interval sets with concatenated keys (the kernel's pipapo
//! backend) do not do longest-prefix match and refuse elements that share a boundary with
//! a different one. Pure; the ranges come from the compiler's dataplane-neutral output
//! ([`crate::policy::Ranges`]), not from the XDP maps' keys.

/// An inclusive range of keys with its value.
pub(super) type Span<V> = (u128, u128, V);

/// Flattens prefixes (which nest or are disjoint, never overlap partially) into disjoint,
/// sorted ranges, each carrying the value of the longest prefix that covers it. Adjacent
/// ranges with equal values are merged. Two prefixes with the same span: the last wins.
pub(super) fn flatten<V: Copy + Eq>(mut spans: Vec<Span<V>>) -> Vec<Span<V>> {
    // Outer prefixes first at a common start, so the stack holds a chain of containers.
    spans.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    let mut out: Vec<Span<V>> = Vec::new();
    let mut stack: Vec<Span<V>> = Vec::new();
    // Next key not yet emitted; `done` once the key space's last key has been emitted.
    let mut cur: u128 = 0;
    let mut done = false;
    let emit = |out: &mut Vec<Span<V>>, s: u128, e: u128, v: V| {
        if let Some(last) = out.last_mut() {
            if last.2 == v && last.1.checked_add(1) == Some(s) {
                last.1 = e;
                return;
            }
        }
        out.push((s, e, v));
    };
    for (s, e, v) in spans {
        while let Some(&(_, te, tv)) = stack.last() {
            if te >= s {
                break;
            }
            if !done && cur <= te {
                emit(&mut out, cur, te, tv);
            }
            cur = te.saturating_add(1);
            done |= te == u128::MAX;
            stack.pop();
        }
        if let Some(&(ts, te, tv)) = stack.last() {
            if (ts, te) == (s, e) {
                stack.pop();
            } else if !done && cur < s {
                emit(&mut out, cur, s - 1, tv);
            }
        }
        cur = s;
        stack.push((s, e, v));
    }
    while let Some((_, te, tv)) = stack.pop() {
        if !done && cur <= te {
            emit(&mut out, cur, te, tv);
        }
        cur = te.saturating_add(1);
        done |= te == u128::MAX;
    }
    out
}

/// The union of `spans` (which may overlap, nest or touch) as disjoint, sorted ranges, touching
/// ones joined (for sets, where only membership counts).
pub(super) fn union(mut spans: Vec<(u128, u128)>) -> Vec<(u128, u128)> {
    spans.sort_unstable();
    let mut out: Vec<(u128, u128)> = Vec::new();
    for (s, e) in spans {
        match out.last_mut() {
            Some(last) if last.1 >= s || last.1.checked_add(1) == Some(s) => {
                last.1 = last.1.max(e);
            }
            _ => out.push((s, e)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The inclusive range covered by the top `len` bits of a `width`-bit key.
    fn prefix_span(key: u128, len: u32, width: u32) -> (u128, u128) {
        let host = width - len.min(width);
        let host_mask = if host == 0 {
            0
        } else if host >= 128 {
            u128::MAX
        } else {
            (1u128 << host) - 1
        };
        let full = if width >= 128 {
            u128::MAX
        } else {
            (1u128 << width) - 1
        };
        let start = key & !host_mask & full;
        (start, start | host_mask)
    }

    /// The value of the longest covering prefix, by brute force.
    fn lpm(spans: &[Span<u32>], k: u128) -> Option<u32> {
        spans
            .iter()
            .filter(|(s, e, _)| *s <= k && k <= *e)
            .min_by_key(|(s, e, _)| e - s)
            .map(|x| x.2)
    }

    #[test]
    fn nested_prefixes_become_disjoint_ranges_with_the_innermost_value() {
        let p = |k, l, v| {
            let (s, e) = prefix_span(k, l, 8);
            (s, e, v)
        };
        let spans = vec![
            p(0, 0, 1),
            p(0b0100_0000, 2, 2),
            p(0b0101_0000, 4, 3),
            p(0xff, 8, 4),
        ];
        let flat = flatten(spans.clone());
        for w in flat.windows(2) {
            assert!(w[0].1 < w[1].0, "overlap or unsorted: {flat:?}");
        }
        for k in 0..=255u128 {
            let got = flat
                .iter()
                .find(|(s, e, _)| *s <= k && k <= *e)
                .map(|x| x.2);
            assert_eq!(got, lpm(&spans, k), "key {k}: {flat:?}");
        }
    }

    #[test]
    fn the_whole_128_bit_space_does_not_overflow() {
        let (s, e) = prefix_span(0, 0, 128);
        let (s2, e2) = prefix_span(u128::MAX, 128, 128);
        let flat = flatten(vec![(s, e, 1), (s2, e2, 2)]);
        assert_eq!(flat, vec![(0, u128::MAX - 1, 1), (u128::MAX, u128::MAX, 2)]);
    }

    #[test]
    fn union_joins_overlapping_nested_and_touching_ranges() {
        assert_eq!(
            union(vec![(11, 12), (5, 9), (0, 4), (2, 3), (7, 10), (20, 20)]),
            vec![(0, 12), (20, 20)]
        );
        assert_eq!(union(vec![(0, u128::MAX), (5, 6)]), vec![(0, u128::MAX)]);
    }
}
