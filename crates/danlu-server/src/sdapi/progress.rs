//! `GET /sdapi/v1/progress`, `POST /sdapi/v1/interrupt`, `POST /sdapi/v1/skip` and
//! `GET /sdapi/v1/memory`.

use crate::engine::Status;
use crate::state::Shared;
use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A1111 `ProgressRequest`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ProgressQuery {
    skip_current_image: bool,
}

/// A1111's `shared.state.dict()`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct StateDict {
    pub(crate) skipped: bool,
    pub(crate) interrupted: bool,
    pub(crate) job: String,
    pub(crate) job_count: usize,
    pub(crate) job_timestamp: String,
    pub(crate) job_no: usize,
    pub(crate) sampling_step: usize,
    pub(crate) sampling_steps: usize,
}

/// A1111 `ProgressResponse`, with danlu's queue length.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct ProgressResponse {
    pub(crate) progress: f64,
    pub(crate) eta_relative: f64,
    pub(crate) state: StateDict,
    pub(crate) current_image: Option<String>,
    pub(crate) textinfo: Option<String>,
    /// Jobs waiting behind the current one (a danlu addition).
    pub(crate) queued: usize,
}

/// The progress of the running job, computed as A1111 `progressapi` does: 0.01, plus the done
/// share of batches, plus the done share of the current batch's steps.
pub(crate) fn snapshot(status: &Status, with_image: bool) -> ProgressResponse {
    let inner = status.lock();
    let queued = inner.queue.len();
    let Some(c) = inner.current.as_ref() else {
        return ProgressResponse {
            progress: 0.0,
            eta_relative: 0.0,
            state: StateDict {
                skipped: false,
                interrupted: false,
                job: String::new(),
                job_count: 0,
                job_timestamp: "0".to_owned(),
                job_no: 0,
                sampling_step: 0,
                sampling_steps: 0,
            },
            current_image: None,
            textinfo: None,
            queued,
        };
    };
    let mut progress = 0.01;
    if c.job_count > 0 {
        progress += c.job_no as f64 / c.job_count as f64;
        if c.steps > 0 {
            progress += c.step as f64 / c.steps as f64 / c.job_count as f64;
        }
    }
    let progress = progress.min(1.0);
    let elapsed = c.started.elapsed().as_secs_f64();
    let eta_relative = elapsed / progress - elapsed;
    ProgressResponse {
        progress,
        eta_relative,
        state: StateDict {
            skipped: c.skipped,
            interrupted: c.interrupted,
            job: format!("{} {}", c.label, c.id),
            job_count: c.job_count,
            job_timestamp: c.timestamp.clone(),
            job_no: c.job_no,
            sampling_step: c.step,
            sampling_steps: c.steps,
        },
        current_image: if with_image { c.preview.clone() } else { None },
        textinfo: Some(match &c.activity {
            Some(activity) => activity.clone(),
            None if c.label == "load" => "Loading model".to_owned(),
            None => format!("Batch {} of {}", c.job_no + 1, c.job_count),
        }),
        queued,
    }
}

/// `GET /sdapi/v1/progress`.
pub(crate) async fn progress(
    State(state): State<Shared>,
    Query(q): Query<ProgressQuery>,
) -> Json<ProgressResponse> {
    Json(snapshot(&state.engine.status, !q.skip_current_image))
}

/// `POST /sdapi/v1/interrupt`: stops the running job; the images already made are answered.
pub(crate) async fn interrupt(State(state): State<Shared>) -> Json<Map<String, Value>> {
    state.engine.status.interrupt();
    Json(Map::new())
}

/// `POST /sdapi/v1/skip`: drops the running batch and goes on with the next.
pub(crate) async fn skip(State(state): State<Shared>) -> Json<Map<String, Value>> {
    state.engine.status.skip();
    Json(Map::new())
}

/// Bytes free, used and total, as A1111's `MemoryResponse` writes them.
#[derive(Debug, Serialize)]
pub(crate) struct MemoryStat {
    free: u64,
    used: u64,
    total: u64,
}

/// A1111 `MemoryResponse`.
#[derive(Debug, Serialize)]
pub(crate) struct MemoryResponse {
    ram: Value,
    cuda: Value,
}

/// Parses `/proc/meminfo` (`MemTotal`, `MemAvailable`, in KiB) into bytes.
pub(crate) fn parse_meminfo(text: &str) -> Option<MemoryStat> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kib| kib * 1024)
    };
    let total = field("MemTotal")?;
    let free = field("MemAvailable").or_else(|| field("MemFree"))?;
    Some(MemoryStat {
        free,
        used: total.saturating_sub(free),
        total,
    })
}

/// `GET /sdapi/v1/memory`: system RAM; `cuda` carries an `error` while danlu runs on the CPU.
pub(crate) async fn memory() -> Json<MemoryResponse> {
    let ram = fs_err::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| parse_meminfo(&t))
        .and_then(|m| serde_json::to_value(m).ok())
        .unwrap_or_else(|| serde_json::json!({"error": "memory statistics unavailable"}));
    Json(MemoryResponse {
        ram,
        cuda: serde_json::json!({"error": "danlu runs on the CPU"}),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_is_read_in_bytes() {
        let m = parse_meminfo("MemTotal:       2048 kB\nMemFree:  100 kB\nMemAvailable: 1024 kB\n")
            .unwrap();
        assert_eq!((m.total, m.free, m.used), (2_097_152, 1_048_576, 1_048_576));
        assert!(parse_meminfo("nothing").is_none());
    }

    #[test]
    fn idle_progress_is_zero_with_no_image() {
        let s = Status::default();
        let p = snapshot(&s, true);
        assert_eq!(p.progress, 0.0);
        assert_eq!(p.state.job_count, 0);
        assert!(p.current_image.is_none());
    }
}
