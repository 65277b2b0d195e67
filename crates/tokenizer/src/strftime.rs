//! `strftime_now(format)`, which Hugging Face templates call for today's date (Llama 3's
//! "Today Date: 26 Jul 2024"): a small strftime over the current UTC time, by hand (no date
//! crate for a dozen specifiers).
//!
//! Supported: `%Y %y %m %d %e %H %I %M %S %p %j %B %b %h %A %a %%`, and glibc's `-` flag on
//! the numeric ones (`%-d` prints `5`, not `05`). Any other specifier is printed as written.

use std::time::{SystemTime, UNIX_EPOCH};

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// Seconds since the Unix epoch, now (0 if the clock is before it).
pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A UTC date and time.
#[derive(Debug, PartialEq, Eq)]
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    /// 0 for Monday.
    weekday: u32,
    /// 1 for 1 January.
    yearday: u32,
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// The civil date of `secs` since the epoch (Howard Hinnant's `civil_from_days`).
fn civil(secs: i64) -> Civil {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400) as u32;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    const BEFORE: [u32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let leap_day = u32::from(month > 2 && is_leap(year));
    Civil {
        year,
        month,
        day,
        hour: rem / 3600,
        minute: rem / 60 % 60,
        second: rem % 60,
        // 1970-01-01 was a Thursday (3).
        weekday: (days + 3).rem_euclid(7) as u32,
        yearday: BEFORE[month as usize - 1] + day + leap_day,
    }
}

/// `format` with its specifiers replaced by the parts of `secs` (UTC).
pub(crate) fn strftime(format: &str, secs: i64) -> String {
    let t = civil(secs);
    let mut out = String::with_capacity(format.len() * 2);
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let unpadded = chars.next_if_eq(&'-').is_some();
        let num = |n: i64, width: usize| match unpadded {
            true => n.to_string(),
            false => format!("{n:0width$}"),
        };
        let Some(spec) = chars.next() else {
            out.push('%');
            break;
        };
        let hour12 = (t.hour + 11) % 12 + 1;
        let text = match spec {
            'Y' => t.year.to_string(),
            'y' => num(t.year.rem_euclid(100), 2),
            'm' => num(t.month.into(), 2),
            'd' => num(t.day.into(), 2),
            'e' => format!("{:>2}", t.day),
            'H' => num(t.hour.into(), 2),
            'I' => num(hour12.into(), 2),
            'M' => num(t.minute.into(), 2),
            'S' => num(t.second.into(), 2),
            'p' => (if t.hour < 12 { "AM" } else { "PM" }).to_string(),
            'j' => num(t.yearday.into(), 3),
            'B' => MONTHS[t.month as usize - 1].to_string(),
            'b' | 'h' => MONTHS[t.month as usize - 1][..3].to_string(),
            'A' => DAYS[t.weekday as usize].to_string(),
            'a' => DAYS[t.weekday as usize][..3].to_string(),
            '%' => "%".to_string(),
            other => format!("%{}{other}", if unpadded { "-" } else { "" }),
        };
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_match_pythons_strftime() {
        // time.strftime(f, time.gmtime(s)) for each.
        let cases = [
            (
                0,
                "%Y-%m-%d %H:%M:%S %A %a %j %y",
                "1970-01-01 00:00:00 Thursday Thu 001 70",
            ),
            (1_721_952_000, "%d %b %Y", "26 Jul 2024"),
            (1_721_952_000, "%B %-d, %Y", "July 26, 2024"),
            // 2024-02-29 13:05:09, a leap day.
            (1_709_211_909, "%j %I:%M %p %e %h", "060 01:05 PM 29 Feb"),
            // 2000-12-31 23:59:59: the last day of a leap century year.
            (978_307_199, "%j %A %%", "366 Sunday %"),
            (-1, "%Y-%m-%d %H:%M:%S", "1969-12-31 23:59:59"),
            (0, "%Q %-Q trailing %", "%Q %-Q trailing %"),
        ];
        for (secs, format, want) in cases {
            assert_eq!(strftime(format, secs), want, "{format} at {secs}");
        }
    }

    #[test]
    fn now_is_after_2024() {
        assert!(civil(now()).year >= 2024);
    }
}
