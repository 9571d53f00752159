//! Which ports of a Container may be forwarded: `kubectl hatch
//! port-forward` and SSH `direct-tcpip` (`ssh -L`, `-W`, `-D`) obey one
//! rule. The operator decides it from the Container's
//! `spec.portForward.ports`, its published ports and the cluster's default
//! ([`ForwardDefault`]), writes it into the sidecar's environment
//! ([`crate::pod::env::FORWARD_PORTS`], [`crate::pod::env::FORWARD_RULE`]),
//! and the gateway enforces it — so no route, direct or tunnel-only, skips
//! it. A Container's spec is immutable, so the rule is fixed for its pod.

use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;

/// A set of TCP ports: any, or ports and ranges (possibly none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortSet {
    /// Every port.
    Any,
    /// These ports and ranges, sorted and merged; empty: none.
    Ranges(Vec<RangeInclusive<u16>>),
}

/// An item of a port list that is not a port, a range or `any`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a port (1-65535), a range of them (9000-9010) or `any`")]
pub struct BadPortItem(pub String);

impl PortSet {
    /// No port at all.
    pub fn none() -> Self {
        PortSet::Ranges(Vec::new())
    }

    /// Whether `port` is in the set.
    pub fn contains(&self, port: u16) -> bool {
        match self {
            PortSet::Any => true,
            PortSet::Ranges(ranges) => ranges.iter().any(|r| r.contains(&port)),
        }
    }

    /// Whether the set has no port.
    pub fn is_empty(&self) -> bool {
        matches!(self, PortSet::Ranges(ranges) if ranges.is_empty())
    }

    /// The set of `items`, each `N`, `N-M` or `any` (surrounding spaces
    /// allowed).
    pub fn from_items<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<Self, BadPortItem> {
        let mut ranges = Vec::new();
        for item in items {
            let item = item.trim();
            if item == "any" {
                return Ok(PortSet::Any);
            }
            ranges.push(parse_range(item).ok_or_else(|| BadPortItem(item.to_owned()))?);
        }
        Ok(PortSet::Ranges(merge(ranges)))
    }

    /// Every port of `self` and of `other`.
    pub fn union(self, other: PortSet) -> PortSet {
        match (self, other) {
            (PortSet::Any, _) | (_, PortSet::Any) => PortSet::Any,
            (PortSet::Ranges(mut a), PortSet::Ranges(b)) => {
                a.extend(b);
                PortSet::Ranges(merge(a))
            }
        }
    }
}

fn parse_range(item: &str) -> Option<RangeInclusive<u16>> {
    let port = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u16>().ok())
            .flatten()
            .filter(|p| *p > 0)
    };
    match item.split_once('-') {
        None => port(item).map(|p| p..=p),
        Some((low, high)) => {
            let (low, high) = (port(low)?, port(high)?);
            (low <= high).then_some(low..=high)
        }
    }
}

/// Sorted, overlapping and adjacent ranges joined.
fn merge(mut ranges: Vec<RangeInclusive<u16>>) -> Vec<RangeInclusive<u16>> {
    ranges.sort_by_key(|r| (*r.start(), *r.end()));
    let mut merged: Vec<RangeInclusive<u16>> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match merged.last_mut() {
            Some(last) if u32::from(*range.start()) <= u32::from(*last.end()) + 1 => {
                if range.end() > last.end() {
                    *last = *last.start()..=*range.end();
                }
            }
            _ => merged.push(range),
        }
    }
    merged
}

/// `any`, `8080,9000-9010`, or `none`.
impl fmt::Display for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortSet::Any => f.write_str("any"),
            PortSet::Ranges(ranges) if ranges.is_empty() => f.write_str("none"),
            PortSet::Ranges(ranges) => {
                for (i, range) in ranges.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    if range.start() == range.end() {
                        write!(f, "{}", range.start())?;
                    } else {
                        write!(f, "{}-{}", range.start(), range.end())?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// What [`fmt::Display`] writes: comma-separated items, or `none` (or
/// nothing).
impl FromStr for PortSet {
    type Err = BadPortItem;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.trim().is_empty() || text.trim() == "none" {
            return Ok(PortSet::none());
        }
        PortSet::from_items(text.split(','))
    }
}

/// The cluster's rule for Containers whose spec does not say
/// (`spec.portForward` unset), and its lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ForwardDefault {
    /// Any port, unless the Container narrows it.
    #[default]
    Any,
    /// Only the ports a Container declares (`spec.portForward.ports`) and
    /// publishes (`spec.publishedPorts`).
    Declared,
    /// Only published ports, whatever a Container declares: the cluster
    /// admin's lock.
    Published,
}

impl FromStr for ForwardDefault {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "any" => Ok(ForwardDefault::Any),
            "declared" => Ok(ForwardDefault::Declared),
            "published" => Ok(ForwardDefault::Published),
            other => Err(format!(
                "{other:?} is not a port-forward default: any, declared or published"
            )),
        }
    }
}

impl fmt::Display for ForwardDefault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ForwardDefault::Any => "any",
            ForwardDefault::Declared => "declared",
            ForwardDefault::Published => "published",
        })
    }
}

/// A Container's forwarding rule: the ports, and where they come from
/// (for the refusal: `port 5432 is not forwardable: {why}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardRule {
    /// The ports that may be forwarded.
    pub ports: PortSet,
    /// Why these: `spec.portForward.ports allows 8080,9000-9010`.
    pub why: String,
}

impl ForwardRule {
    /// Every port (no operator said otherwise).
    pub fn any() -> Self {
        ForwardRule {
            ports: PortSet::Any,
            why: "every port may be forwarded".to_owned(),
        }
    }

    /// The rule of a Container that declares `declared`
    /// (`spec.portForward.ports`, if set) and publishes `published`, in a
    /// cluster whose default is `default`. Published ports are always
    /// forwardable (they are reachable as web apps anyway).
    pub fn decide(declared: Option<&[String]>, published: &[u16], default: ForwardDefault) -> Self {
        let published_set = PortSet::Ranges(merge(published.iter().map(|p| *p..=*p).collect()));
        let shown = |set: &PortSet| {
            if set.is_empty() {
                "no port".to_owned()
            } else {
                set.to_string()
            }
        };
        // (`none` reads badly in a sentence.)
        if default == ForwardDefault::Published {
            return ForwardRule {
                why: format!(
                    "the cluster allows published ports only (spec.publishedPorts: {})",
                    shown(&published_set)
                ),
                ports: published_set,
            };
        }
        match declared {
            Some(items) => match PortSet::from_items(items.iter().map(String::as_str)) {
                Ok(ports) => {
                    let ports = ports.union(published_set);
                    ForwardRule {
                        why: format!("spec.portForward.ports allows {}", shown(&ports)),
                        ports,
                    }
                }
                Err(error) => ForwardRule {
                    why: format!(
                        "spec.portForward.ports is not valid ({error}), so only published ports are: {}",
                        shown(&published_set)
                    ),
                    ports: published_set,
                },
            },
            None if default == ForwardDefault::Declared => ForwardRule {
                why: format!(
                    "the cluster allows declared ports only and this Container declares none \
                     (spec.portForward.ports); published: {}",
                    shown(&published_set)
                ),
                ports: published_set,
            },
            None => ForwardRule::any(),
        }
    }

    /// The refusal of `port`, or `None` when it may be forwarded.
    pub fn refusal(&self, port: u16) -> Option<String> {
        (!self.ports.contains(port)).then(|| format!("port {port} is not forwardable: {}", self.why))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(text: &str) -> PortSet {
        text.parse().unwrap()
    }

    #[test]
    fn lists_parse_merge_and_print_back() {
        assert_eq!(set("9000-9010, 8080,9011,80-80").to_string(), "80,8080,9000-9011");
        assert_eq!(set("any"), PortSet::Any);
        assert_eq!(set("1,any"), PortSet::Any);
        assert!(set("").is_empty());
        assert_eq!(set("1-65535").to_string(), "1-65535");
        for bad in ["0", "65536", "x", "10-5", "-5", "5-", "+5", "1,,2", "1-2-3"] {
            assert!(bad.parse::<PortSet>().is_err(), "{bad:?}");
        }
        assert!(set(" ").is_empty() && set("none").is_empty());
        assert_eq!(PortSet::none().to_string(), "none");
    }

    #[test]
    fn membership_follows_the_ranges() {
        let s = set("8080,9000-9010");
        for (port, inside) in [
            (8080, true),
            (8081, false),
            (9000, true),
            (9010, true),
            (9011, false),
            (1, false),
        ] {
            assert_eq!(s.contains(port), inside, "{port}");
        }
        assert!(PortSet::Any.contains(1) && !PortSet::none().contains(1));
    }

    #[test]
    fn the_container_narrows_any_and_declares_under_declared() {
        let declared = vec!["8080".to_owned(), "9000-9010".to_owned()];
        for default in [ForwardDefault::Any, ForwardDefault::Declared] {
            let rule = ForwardRule::decide(Some(&declared), &[8888], default);
            assert_eq!(rule.ports.to_string(), "8080,8888,9000-9010");
            assert_eq!(
                rule.refusal(5432).unwrap(),
                "port 5432 is not forwardable: spec.portForward.ports allows 8080,8888,9000-9010"
            );
            assert_eq!(rule.refusal(9005), None);
        }
        let open = ForwardRule::decide(None, &[8888], ForwardDefault::Any);
        assert_eq!((open.refusal(5432), open.ports), (None, PortSet::Any));
        let closed = ForwardRule::decide(None, &[8888], ForwardDefault::Declared);
        assert_eq!(closed.ports.to_string(), "8888");
        assert!(
            closed.refusal(5432).unwrap().contains("declares none"),
            "{}",
            closed.why
        );
    }

    #[test]
    fn published_locks_whatever_the_container_declares() {
        let declared = vec!["any".to_owned()];
        let rule = ForwardRule::decide(Some(&declared), &[8888, 8889], ForwardDefault::Published);
        assert_eq!(rule.ports.to_string(), "8888-8889");
        assert_eq!(
            rule.refusal(22).unwrap(),
            "port 22 is not forwardable: the cluster allows published ports only (spec.publishedPorts: 8888-8889)"
        );
        let none = ForwardRule::decide(None, &[], ForwardDefault::Published);
        assert!(
            none.why.ends_with("(spec.publishedPorts: no port)"),
            "{}",
            none.why
        );
        assert!(none.ports.is_empty());
    }

    #[test]
    fn an_invalid_declaration_allows_only_published_ports() {
        let declared = vec!["9010-9000".to_owned()];
        let rule = ForwardRule::decide(Some(&declared), &[8888], ForwardDefault::Any);
        assert_eq!(rule.ports.to_string(), "8888");
        assert!(rule.why.contains("\"9010-9000\" is not a port"), "{}", rule.why);
    }

    #[test]
    fn defaults_parse_and_print_back() {
        for text in ["any", "declared", "published"] {
            assert_eq!(text.parse::<ForwardDefault>().unwrap().to_string(), text);
        }
        assert!(
            "all"
                .parse::<ForwardDefault>()
                .unwrap_err()
                .contains("any, declared or published")
        );
    }

    proptest::proptest! {
        #[test]
        fn printing_then_parsing_gives_the_same_ports(items in proptest::collection::vec((1u16..=65535, 0u16..50), 0..8)) {
            let text: Vec<String> = items
                .iter()
                .map(|(low, width)| format!("{low}-{}", low.saturating_add(*width)))
                .collect();
            let parsed = PortSet::from_items(text.iter().map(String::as_str)).unwrap();
            let again: PortSet = parsed.to_string().parse().unwrap();
            proptest::prop_assert_eq!(&again, &parsed);
            for (low, width) in items {
                proptest::prop_assert!(parsed.contains(low) && parsed.contains(low.saturating_add(width)));
            }
        }
    }
}
