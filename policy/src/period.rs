//! Budget periods: calendar days, weeks (from Monday) and months in the budget's time zone,
//! or all time. The aggregator and the edges compute them with this same function.

use chrono::{DateTime, Datelike, Days, Months, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

use crate::model::Period;

/// The period containing `at`: its start, and its end (none for `total`). An unknown time
/// zone is read as UTC (`decide` never lets one into the log).
pub fn period_bounds(
    period: Period,
    timezone: &str,
    at: DateTime<Utc>,
) -> (DateTime<Utc>, Option<DateTime<Utc>>) {
    let tz: Tz = timezone.parse().unwrap_or(Tz::UTC);
    let local = at.with_timezone(&tz).date_naive();
    let (start, end) = match period {
        Period::Total => return (DateTime::UNIX_EPOCH, None),
        Period::Daily => (local, local + Days::new(1)),
        Period::Weekly => {
            let monday = local - Days::new(u64::from(local.weekday().num_days_from_monday()));
            (monday, monday + Days::new(7))
        }
        Period::Monthly => {
            let first = local.with_day(1).unwrap_or(local);
            (first, first + Months::new(1))
        }
    };
    (midnight(tz, start), Some(midnight(tz, end)))
}

/// The first instant of `day` in `tz` (a day whose midnight a DST change skips starts at the
/// first instant that exists).
fn midnight(tz: Tz, day: NaiveDate) -> DateTime<Utc> {
    let naive = day.and_hms_opt(0, 0, 0).unwrap_or_default();
    (0..4)
        .find_map(|hours| {
            tz.from_local_datetime(&(naive + chrono::Duration::hours(hours)))
                .earliest()
        })
        .map_or_else(|| naive.and_utc(), |t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap_or_default()
    }

    #[test]
    fn periods_follow_the_budgets_calendar() {
        use Period::{Daily, Monthly, Weekly};
        let at = utc("2026-03-18T23:30:00Z"); // a Wednesday; already the 19th in Paris
        let hour = |h: &str| utc(&format!("{h}:00:00Z"));
        for (period, timezone, start, end) in [
            (Daily, "UTC", "2026-03-18T00", "2026-03-19T00"),
            (Daily, "Europe/Paris", "2026-03-18T23", "2026-03-19T23"),
            (Weekly, "UTC", "2026-03-16T00", "2026-03-23T00"),
            (Monthly, "UTC", "2026-03-01T00", "2026-04-01T00"),
        ] {
            assert_eq!(
                period_bounds(period, timezone, at),
                (hour(start), Some(hour(end))),
                "{period:?} in {timezone}"
            );
        }
        assert_eq!(
            period_bounds(Period::Total, "UTC", at),
            (DateTime::UNIX_EPOCH, None)
        );
        // Paris switches to summer time on 2026-03-29: that day lasts 23 hours.
        let (start, end) =
            period_bounds(Period::Daily, "Europe/Paris", utc("2026-03-29T12:00:00Z"));
        assert_eq!(end.map(|e| e - start), Some(chrono::Duration::hours(23)));
    }
}
