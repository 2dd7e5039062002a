//! A pickle reader that never imports or calls anything.

use serde::Serialize;

/// What the restricted reader saw in a pickle, and whether A1111's safe unpickler would allow it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Safety {
    /// True when every global is on A1111's allow-list (and the archive layout is allowed).
    pub safe: bool,
    /// Every global met, as `module.name`, sorted and de-duplicated.
    pub globals: Vec<String>,
    /// Human-readable reasons for `safe: false`, one per problem.
    pub findings: Vec<String>,
}
