//! Progress bars on stderr for the libraries' [`Reporter`] events.

use danlu_types::{Reporter, TaskId};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Draws one indicatif bar per task; hidden when stderr is not a terminal or progress is off.
#[derive(Debug)]
pub struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<u64, ProgressBar>>,
    next: AtomicU64,
}

impl Bars {
    /// Bars on stderr, unless `hidden` or stderr is not a terminal.
    pub fn new(hidden: bool) -> Self {
        let target = if hidden || !std::io::stderr().is_terminal() {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        Self {
            multi: MultiProgress::with_draw_target(target),
            bars: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
        }
    }
}

impl Reporter for Bars {
    fn start(&self, label: &str, total: Option<u64>) -> TaskId {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let bar = match total {
            Some(n) => {
                let b = ProgressBar::new(n);
                if let Ok(style) = ProgressStyle::with_template(
                    "{msg:30!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                ) {
                    b.set_style(style.progress_chars("=> "));
                }
                b
            }
            None => ProgressBar::new_spinner(),
        };
        bar.set_message(label.to_owned());
        let bar = self.multi.add(bar);
        if let Ok(mut bars) = self.bars.lock() {
            bars.insert(id, bar);
        }
        TaskId(id)
    }

    fn advance(&self, task: TaskId, by: u64) {
        if let Ok(bars) = self.bars.lock()
            && let Some(b) = bars.get(&task.0)
        {
            b.inc(by);
        }
    }

    fn finish(&self, task: TaskId) {
        if let Ok(mut bars) = self.bars.lock()
            && let Some(b) = bars.remove(&task.0)
        {
            b.finish_and_clear();
        }
    }
}
