//! Times as `ls -l` and `stat(1)` print them, in the local time zone, or
//! raw (seconds.nanoseconds since the epoch) for scripts.
//!
//! The zone is read (TZ, /etc/localtime) when a [`TimeStyle`] is made,
//! which the offline commands do before entering the sandbox: afterwards
//! no file can be opened, so formatting must not need one.

use jiff::tz::TimeZone;

use crate::types::Timestamp;

/// How the offline commands print times.
#[derive(Debug, Clone)]
pub enum TimeStyle {
    /// `seconds.nanoseconds` since the epoch, e.g. `1795990260.000000000`.
    Epoch,
    /// As ls and stat show them, in `zone`; `now` decides ls's recent form.
    Local { zone: TimeZone, now: jiff::Timestamp },
}

/// About six months (coreutils' 31556952 / 2 seconds): older or future
/// times show the year instead of the time of day in `ls -l`.
const RECENT_SECS: i64 = 31_556_952 / 2;

impl TimeStyle {
    /// The local style with the system's zone and the current time.
    pub fn local() -> Self {
        let zone = TimeZone::try_system().unwrap_or(TimeZone::UTC);
        TimeStyle::Local { zone, now: jiff::Timestamp::now() }
    }

    /// As `ls -l` shows a time: `Nov 30 00:31` within six months of now,
    /// `Nov 30  2025` otherwise.
    pub fn ls(&self, t: Timestamp) -> String {
        let TimeStyle::Local { zone, now } = self else { return epoch(t) };
        let Some(z) = stamp(t).map(|s| s.to_zoned(zone.clone())) else { return epoch(t) };
        let age = now.as_second().saturating_sub(t.seconds);
        if (0..=RECENT_SECS).contains(&age) { z.strftime("%b %e %H:%M") } else { z.strftime("%b %e  %Y") }.to_string()
    }

    /// As `stat(1)` shows a time: `2026-11-30 00:31:42.123456789 +0000`.
    pub fn full(&self, t: Timestamp) -> String {
        let TimeStyle::Local { zone, .. } = self else { return epoch(t) };
        match stamp(t) {
            Some(s) => s.to_zoned(zone.clone()).strftime("%Y-%m-%d %H:%M:%S.%N %z").to_string(),
            None => epoch(t),
        }
    }
}

fn stamp(t: Timestamp) -> Option<jiff::Timestamp> {
    jiff::Timestamp::new(t.seconds, i32::try_from(t.nanoseconds).ok()?).ok()
}

fn epoch(t: Timestamp) -> String {
    format!("{}.{:09}", t.seconds, t.nanoseconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc_at(now: i64) -> TimeStyle {
        TimeStyle::Local { zone: TimeZone::UTC, now: jiff::Timestamp::from_second(now).unwrap() }
    }

    #[test]
    fn stat_form_has_nanoseconds_and_offset() {
        let t = Timestamp { seconds: 1_795_990_260, nanoseconds: 123_456_789 };
        assert_eq!(utc_at(0).full(t), "2026-11-29 22:11:00.123456789 +0000");
        let before_epoch = Timestamp { seconds: -86_400, nanoseconds: 5 };
        assert_eq!(utc_at(0).full(before_epoch), "1969-12-31 00:00:00.000000005 +0000");
    }

    #[test]
    fn ls_form_shows_the_year_for_old_and_future_times() {
        let now = 1_795_990_260;
        let style = utc_at(now);
        assert_eq!(style.ls(Timestamp { seconds: now - 3600, nanoseconds: 0 }), "Nov 29 21:11");
        assert_eq!(style.ls(Timestamp { seconds: now - 400 * 86_400, nanoseconds: 0 }), "Oct 25  2025");
        assert_eq!(style.ls(Timestamp { seconds: now + 86_400, nanoseconds: 0 }), "Nov 30  2026");
    }

    #[test]
    fn epoch_style_and_unrepresentable_times_print_raw() {
        let t = Timestamp { seconds: 1_795_990_260, nanoseconds: 0 };
        assert_eq!(TimeStyle::Epoch.full(t), "1795990260.000000000");
        let far = Timestamp { seconds: i64::MAX / 2, nanoseconds: 0 };
        assert_eq!(utc_at(0).full(far), format!("{}.000000000", i64::MAX / 2));
    }
}
