//! cp-out's progress line: MiB, objects (files, directories, links…) and
//! rate on stderr, redrawn in
//! place a few times a second, only when stderr is a terminal (a script or
//! a log gets nothing but the reports of failed objects).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How often the line is redrawn at most.
const EVERY: Duration = Duration::from_millis(250);

pub struct Progress {
    /// `None`: stderr is not a terminal, stay quiet.
    shown: Option<Shown>,
}

struct Shown {
    start: Instant,
    last: Instant,
    bytes: u64,
    objects: u64,
    /// A line is on the terminal and must be cleared before other output.
    drawn: bool,
}

impl Progress {
    /// Decided once, before the sandbox point (the check is an ioctl).
    pub fn on_terminal() -> Progress {
        let now = Instant::now();
        let shown = std::io::stderr().is_terminal().then_some(Shown {
            start: now,
            last: now,
            bytes: 0,
            objects: 0,
            drawn: false,
        });
        Progress { shown }
    }

    pub fn bytes(&mut self, n: u64) {
        if let Some(s) = &mut self.shown {
            s.bytes += n;
            s.draw(false);
        }
    }

    pub fn object_done(&mut self) {
        if let Some(s) = &mut self.shown {
            s.objects += 1;
            s.draw(false);
        }
    }

    /// Clear the line so that a message can be written.
    pub fn clear(&mut self) {
        if let Some(s) = &mut self.shown
            && s.drawn
        {
            eprint!("\r\x1b[K");
            s.drawn = false;
        }
    }

    /// The final count, left on the terminal.
    pub fn finish(&mut self) {
        if let Some(s) = &mut self.shown {
            s.draw(true);
            if s.drawn {
                eprintln!();
            }
        }
    }
}

impl Shown {
    fn draw(&mut self, now_anyway: bool) {
        let now = Instant::now();
        if !now_anyway && now.duration_since(self.last) < EVERY {
            return;
        }
        self.last = now;
        let secs = now.duration_since(self.start).as_secs_f64().max(1e-3);
        let mib = self.bytes as f64 / f64::from(1 << 20);
        let mut err = std::io::stderr().lock();
        let (n, plural) = (self.objects, if self.objects == 1 { "" } else { "s" });
        let _ = write!(err, "\r\x1b[Kfshost: cp-out: {mib:.1} MiB, {n} object{plural}, {:.1} MiB/s", mib / secs);
        let _ = err.flush();
        self.drawn = true;
    }
}
