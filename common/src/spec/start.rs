//! Start conditions: when a submitted app may be placed at all.
//!
//! An app may declare `start: {not_before: TIME, after: [APP, ...]}`. Until every
//! condition holds it waits in the master's queue (with the condition as its reason)
//! and takes no resources; the scheduler serves it only once they hold. `not_before`
//! is an RFC 3339 time in UTC (`2026-12-02T15:00:00Z`, fractions allowed) or
//! milliseconds since the Unix epoch; `after` names apps that must be running (placed
//! and not upgrading from nothing) first, for example a feature store before the
//! model that reads it.

use super::reader::{type_name, Obj};
use crate::problem::Sink;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The most apps one `after` may name.
pub const MAX_AFTER: usize = 16;

/// What must hold before an app is placed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartConditions {
    /// Not placed before this time, ms since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before_ms: Option<u64>,
    /// Apps that must be running first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
}

impl StartConditions {
    /// Whether there is no condition.
    pub fn is_empty(&self) -> bool {
        self.not_before_ms.is_none() && self.after.is_empty()
    }
}

/// Reads `start` (at `path`), recording each problem with its field.
pub(crate) fn start(sink: &mut Sink, path: &str, v: &Value, app: Option<&str>) -> StartConditions {
    let Some(mut o) = Obj::new(sink, path.to_string(), v) else {
        return StartConditions::default();
    };
    let not_before_ms = o.raw("not_before").and_then(|v| match v {
        Value::String(s) => match parse_rfc3339_ms(s) {
            Some(ms) => Some(ms),
            None => {
                sink.push(
                    o.at("not_before"),
                    format!(
                        "{:?} is not an RFC 3339 UTC time like 2026-12-02T15:00:00Z",
                        s.chars().take(40).collect::<String>()
                    ),
                );
                None
            }
        },
        Value::Number(n) => match n.as_u64() {
            Some(ms) => Some(ms),
            None => {
                sink.push(
                    o.at("not_before"),
                    "milliseconds since the epoch must be a non-negative integer",
                );
                None
            }
        },
        other => {
            sink.push(
                o.at("not_before"),
                format!(
                    "expected a time (RFC 3339 string or epoch ms), found {}",
                    type_name(other)
                ),
            );
            None
        }
    });
    let after = o.opt_str_list(sink, "after").unwrap_or_default();
    if after.len() > MAX_AFTER {
        sink.push(
            o.at("after"),
            format!("at most {MAX_AFTER} apps (got {})", after.len()),
        );
    }
    for (i, a) in after.iter().enumerate() {
        super::reader::check_name(sink, &format!("{}[{i}]", o.at("after")), a, false);
        if Some(a.as_str()) == app {
            sink.push(
                format!("{}[{i}]", o.at("after")),
                "an app cannot wait for itself",
            );
        }
    }
    o.finish(sink);
    StartConditions {
        not_before_ms,
        after,
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fff…](Z|+00:00)` as ms since the epoch; `None` for anything
/// else (other offsets included: times in specs are UTC, so nobody has to guess).
pub fn parse_rfc3339_ms(s: &str) -> Option<u64> {
    let s = s.trim();
    let body = s
        .strip_suffix('Z')
        .or_else(|| s.strip_suffix('z'))
        .or_else(|| s.strip_suffix("+00:00"))?;
    let (date, time) = body.split_once(['T', 't', ' '])?;
    let num = |t: &str, len: usize| -> Option<u64> {
        (t.len() == len && t.bytes().all(|b| b.is_ascii_digit()))
            .then(|| t.parse().ok())
            .flatten()
    };
    let mut d = date.split('-');
    let (y, mo, da) = (num(d.next()?, 4)?, num(d.next()?, 2)?, num(d.next()?, 2)?);
    if d.next().is_some() {
        return None;
    }
    let (hms, frac) = match time.split_once('.') {
        Some((hms, f))
            if !f.is_empty() && f.len() <= 9 && f.bytes().all(|b| b.is_ascii_digit()) =>
        {
            (hms, &f[..f.len().min(3)])
        }
        Some(_) => return None,
        None => (time, ""),
    };
    let mut t = hms.split(':');
    let (h, mi, se) = (num(t.next()?, 2)?, num(t.next()?, 2)?, num(t.next()?, 2)?);
    if t.next().is_some() {
        return None;
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days_in = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1970..=9999).contains(&y)
        || !(1..=12).contains(&mo)
        || da < 1
        || da > days_in[mo as usize - 1]
        || h > 23
        || mi > 59
        || se > 59
    {
        return None;
    }
    let ms_frac = if frac.is_empty() {
        0
    } else {
        frac.parse::<u64>().ok()? * 10u64.pow(3 - frac.len() as u32)
    };
    let days = days_from_civil(y as i64, mo as i64, da as i64);
    Some((days as u64 * 86_400 + h * 3600 + mi * 60 + se) * 1000 + ms_frac)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{parse_app, SpecFormat};

    #[test]
    fn rfc3339_times_in_utc() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2000-03-01T00:00:00Z"),
            Some(951_868_800_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-12-02T15:00:00.25Z"),
            Some(1_796_223_600_250)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-12-02T15:00:00+00:00"),
            Some(1_796_223_600_000)
        );
        for bad in [
            "2026-12-02T15:00:00",
            "2026-12-02T15:00:00+01:00",
            "2026-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-12-02T24:00:00Z",
            "26-12-02T15:00:00Z",
            "2026-12-02T15:00:00.Z",
            "tomorrow",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad}");
        }
        assert!(parse_rfc3339_ms("2024-02-29T12:00:00Z").is_some());
    }

    const BODY: &str = "operators:\n  - {name: g, kind: source.generator, params: {count: 1}}\n  - {name: s, kind: sink.null}\nstreams:\n  - {from: g, to: s}\n";

    #[test]
    fn start_conditions_parse_and_refuse_with_their_field() {
        let ok =
            format!("name: b\nstart: {{not_before: \"2026-12-02T15:00:00Z\", after: [a]}}\n{BODY}");
        let spec = parse_app(&ok, SpecFormat::Yaml).unwrap();
        assert_eq!(spec.start.not_before_ms, Some(1_796_223_600_000));
        assert_eq!(spec.start.after, vec!["a".to_string()]);
        let ms = format!("name: b\nstart: {{not_before: 5}}\n{BODY}");
        assert_eq!(
            parse_app(&ms, SpecFormat::Yaml)
                .unwrap()
                .start
                .not_before_ms,
            Some(5)
        );
        let none = format!("name: b\n{BODY}");
        assert!(parse_app(&none, SpecFormat::Yaml).unwrap().start.is_empty());
        for (text, field, rule) in [
            (
                "start: {not_before: yesterday}",
                "start.not_before",
                "RFC 3339",
            ),
            (
                "start: {not_before: -3}",
                "start.not_before",
                "non-negative",
            ),
            ("start: {after: [b]}", "start.after[0]", "itself"),
            ("start: {after: b}", "start.after", "list"),
            ("start: {when: now}", "start.when", "unknown"),
        ] {
            let e = parse_app(&format!("name: b\n{text}\n{BODY}"), SpecFormat::Yaml).unwrap_err();
            let p =
                e.0.iter()
                    .find(|p| p.path == field)
                    .unwrap_or_else(|| panic!("{text}: {e}"));
            assert!(p.rule.contains(rule), "{text}: {p}");
        }
    }
}
