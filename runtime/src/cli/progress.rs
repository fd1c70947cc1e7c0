//! Progress of a long command: a bar on a terminal, and when standard error is a file or a pipe
//! (a `nohup … > log` run, a batch job) a plain line at most every ten seconds, so that a log
//! shows a run is alive and how far it is.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// How often a line is written when standard error is not a terminal.
const LINE_EVERY: Duration = Duration::from_secs(10);

/// Counts items done out of a total; shared by worker threads.
pub struct Progress {
    bar: ProgressBar,
    lines: Option<Lines>,
}

/// The plain-line form.
struct Lines {
    unit: String,
    total: u64,
    done: AtomicU64,
    started: Instant,
    last: Mutex<Instant>,
}

impl Progress {
    /// Progress over `total` items of `unit`, `done` of them already done; silent when
    /// `hidden`.
    pub fn new(total: usize, done: usize, unit: &str, hidden: bool) -> Progress {
        if hidden {
            return Progress { bar: ProgressBar::hidden(), lines: None };
        }
        if !std::io::stderr().is_terminal() {
            let now = Instant::now();
            let lines = Lines {
                unit: unit.to_string(),
                total: total as u64,
                done: AtomicU64::new(done as u64),
                started: now,
                last: Mutex::new(now),
            };
            return Progress { bar: ProgressBar::hidden(), lines: Some(lines) };
        }
        let bar = ProgressBar::new(total as u64).with_position(done as u64);
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "{{bar:30}} {{pos}}/{{len}} {unit}  {{per_sec}}  ETA {{eta}}"
            ))
            .expect("valid progress template"),
        );
        Progress { bar, lines: None }
    }

    /// `n` more items done.
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
        let Some(lines) = &self.lines else { return };
        let done = lines.done.fetch_add(n, Ordering::Relaxed) + n;
        let Ok(mut last) = lines.last.lock() else { return };
        if last.elapsed() < LINE_EVERY && done < lines.total {
            return;
        }
        *last = Instant::now();
        let seconds = lines.started.elapsed().as_secs_f64();
        let rate = done as f64 / seconds.max(1e-9);
        let left = lines.total.saturating_sub(done) as f64 / rate.max(1e-9);
        eprintln!("{done}/{} {} ({rate:.2}/s, about {left:.0} s left)", lines.total, lines.unit);
    }

    /// Removes the bar (a terminal's); lines stay in the log.
    pub fn finish_and_clear(&self) {
        self.bar.finish_and_clear();
    }
}
