//! Cron schedules as a CronJob's `spec.schedule` writes them: five fields
//! (minute, hour, day of month, month, day of week) with lists, ranges,
//! steps and names, or a macro such as `@hourly`; and the next time one
//! fires in a given time zone.

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;

/// Days searched for a next firing before giving up (a schedule such as
/// `0 0 30 2 *` never fires).
const SEARCH_DAYS: i64 = 366 * 5;

/// Why a schedule was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScheduleError {
    /// The text is not a schedule: the text, and why (in the words of the
    /// cron parser upstream uses).
    #[error("unparseable schedule {0:?}: {1}")]
    Invalid(String, String),
}

impl ScheduleError {
    /// Why the schedule was refused, without the schedule.
    pub fn reason(&self) -> &str {
        match self {
            ScheduleError::Invalid(_, why) => why,
        }
    }
}

/// A parsed cron schedule: the set of values each field allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    minutes: u64,
    hours: u64,
    days_of_month: u64,
    months: u64,
    days_of_week: u64,
    /// Day of month or day of week was `*`: then both must match, else
    /// either may (cron's rule).
    day_star: bool,
}

struct Field {
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTE: Field = Field {
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: Field = Field {
    min: 0,
    max: 23,
    names: &[],
};
const DAY_OF_MONTH: Field = Field {
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: Field = Field {
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
};
const DAY_OF_WEEK: Field = Field {
    min: 0,
    max: 7,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};

impl Schedule {
    /// Parses a five-field schedule or a macro.
    pub fn parse(text: &str) -> Result<Schedule, ScheduleError> {
        let err = |why: &str| ScheduleError::Invalid(text.to_owned(), why.to_owned());
        let expanded = match text.trim() {
            "" => return Err(err("empty spec string")),
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other if other.starts_with('@') => {
                return Err(err(&format!("unrecognized descriptor: {other}")));
            }
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let [min, hour, dom, month, dow] = fields.as_slice() else {
            return Err(err(&format!(
                "expected exactly 5 fields, found {}: [{}]",
                fields.len(),
                fields.join(" ")
            )));
        };
        let mut days_of_week = parse_field(dow, &DAY_OF_WEEK).map_err(|e| err(&e))?;
        // 7 is Sunday too.
        if days_of_week & (1 << 7) != 0 {
            days_of_week |= 1;
        }
        let star = |f: &str| f.starts_with('*') || f.starts_with('?');
        Ok(Schedule {
            minutes: parse_field(min, &MINUTE).map_err(|e| err(&e))?,
            hours: parse_field(hour, &HOUR).map_err(|e| err(&e))?,
            days_of_month: parse_field(dom, &DAY_OF_MONTH).map_err(|e| err(&e))?,
            months: parse_field(month, &MONTH).map_err(|e| err(&e))?,
            days_of_week,
            day_star: star(dom) || star(dow),
        })
    }

    fn day_matches(&self, d: Date) -> bool {
        let dom = self.days_of_month & (1 << d.day()) != 0;
        let dow = self.days_of_week & (1 << d.weekday().to_sunday_zero_offset()) != 0;
        if self.day_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first time after `after` the schedule fires, in `tz`'s wall
    /// clock; `None` when it never fires within five years.
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let local = after.to_zoned(tz.clone()).datetime();
        let mut day = local.date();
        for _ in 0..SEARCH_DAYS {
            let month_ok = self.months & (1 << day.month()) != 0;
            if month_ok && self.day_matches(day) {
                for h in (0..24).filter(|h| self.hours & (1 << h) != 0) {
                    for m in (0..60).filter(|m| self.minutes & (1u64 << m) != 0) {
                        let Ok(dt) = DateTime::new(day.year(), day.month(), day.day(), h, m, 0, 0)
                        else {
                            continue;
                        };
                        // A wall time in a DST gap fires at the shifted time.
                        let Ok(at) = dt.to_zoned(tz.clone()) else {
                            continue;
                        };
                        if at.timestamp() > after {
                            return Some(at.timestamp());
                        }
                    }
                }
            }
            day = day.tomorrow().ok()?;
        }
        None
    }
}

/// The bit set of values a field allows.
fn parse_field(text: &str, field: &Field) -> Result<u64, String> {
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s.parse().map_err(|_| not_int(s))?;
                if step == 0 {
                    return Err(format!("step of range should be a positive number: {part}"));
                }
                (r, step)
            }
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" || range == "?" {
            (field.min, field.max)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a, field, part)?, value(b, field, part)?)
        } else {
            let v = value(range, field, part)?;
            // `5/15` means from 5 to the end, stepping.
            (v, if part.contains('/') { field.max } else { v })
        };
        if lo > hi {
            return Err(format!(
                "beginning of range ({lo}) beyond end of range ({hi}): {part}"
            ));
        }
        for v in (lo..=hi).step_by(step as usize) {
            bits |= 1 << v;
        }
    }
    Ok(bits)
}

/// What Go's `strconv.Atoi` says of a number that is not one, as the cron
/// parser upstream uses quotes it.
fn not_int(text: &str) -> String {
    format!("failed to parse int from {text}: strconv.Atoi: parsing {text:?}: invalid syntax")
}

/// One value of a field (a number or a name); `part` is the list element it
/// came from, for the messages.
fn value(text: &str, field: &Field, part: &str) -> Result<u32, String> {
    let lower = text.to_ascii_lowercase();
    let named = field
        .names
        .iter()
        .position(|n| *n == lower)
        .map(|i| i as u32 + if field.min == 1 { 1 } else { 0 });
    let v = match named {
        Some(v) => v,
        None => text.parse().map_err(|_| not_int(text))?,
    };
    if v < field.min {
        return Err(format!(
            "beginning of range ({v}) below minimum ({}): {part}",
            field.min
        ));
    }
    if v > field.max {
        return Err(format!(
            "end of range ({v}) above maximum ({}): {part}",
            field.max
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn steps_ranges_and_names_parse() {
        let s = Schedule::parse("*/15 9-17 * JAN-MAR mon-fri").expect("parse");
        let utc = TimeZone::UTC;
        // Saturday 2026-01-03 → Monday 2026-01-05 09:00.
        assert_eq!(
            s.next_after(at("2026-01-03T12:00:00Z"), &utc),
            Some(at("2026-01-05T09:00:00Z"))
        );
        assert_eq!(
            s.next_after(at("2026-01-05T09:00:00Z"), &utc),
            Some(at("2026-01-05T09:15:00Z"))
        );
        assert_eq!(
            Schedule::parse("@hourly")
                .expect("macro")
                .next_after(at("2026-01-05T09:59:00Z"), &utc),
            Some(at("2026-01-05T10:00:00Z"))
        );
    }

    #[test]
    fn day_of_month_and_week_combine_as_cron_does() {
        // Both restricted: either matches (the 13th, or any Friday).
        let s = Schedule::parse("0 0 13 * 5").expect("parse");
        assert_eq!(
            s.next_after(at("2026-02-01T00:00:00Z"), &TimeZone::UTC),
            Some(at("2026-02-06T00:00:00Z"))
        );
    }

    #[test]
    fn time_zones_shift_the_wall_clock() {
        let s = Schedule::parse("30 2 * * *").expect("parse");
        let tz = TimeZone::get("Europe/Berlin").expect("zone");
        // 02:30 in Berlin in winter is 01:30 UTC.
        assert_eq!(
            s.next_after(at("2026-01-10T00:00:00Z"), &tz),
            Some(at("2026-01-10T01:30:00Z"))
        );
    }

    #[test]
    fn malformed_schedules_are_refused() {
        for bad in [
            "",
            "* * * *",
            "61 * * * *",
            "*/0 * * * *",
            "5-1 * * * *",
            "@fortnightly",
            "a b c d e",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad:?}");
        }
        let reason = |s: &str| Schedule::parse(s).err().map(|e| e.reason().to_owned());
        assert_eq!(
            reason("* * * *").as_deref(),
            Some("expected exactly 5 fields, found 4: [* * * *]")
        );
        assert_eq!(
            reason("61 * * * *").as_deref(),
            Some("end of range (61) above maximum (59): 61")
        );
        assert_eq!(
            reason("* * 0 * *").as_deref(),
            Some("beginning of range (0) below minimum (1): 0")
        );
        assert_eq!(
            reason("x * * * *").as_deref(),
            Some("failed to parse int from x: strconv.Atoi: parsing \"x\": invalid syntax")
        );
        assert_eq!(
            Schedule::parse("0 0 30 2 *")
                .expect("parse")
                .next_after(at("2026-01-01T00:00:00Z"), &TimeZone::UTC),
            None
        );
    }
}
