//! Reproducing an image from its metadata: find what made it, say what is missing, make it
//! again, and show that the new image's parameters equal the source's.
//!
//! - [`Library`]: a library root's records (scanned and hashed), and [`Library::find`], which
//!   finds a file by the hash an image gives (AutoV2 `Model hash`, the old 8-hex A1111 hash,
//!   AutoV3 `Lora hashes`, SHA-256, BLAKE3) and then by name.
//! - [`plan()`]: from an image's [`GenerationParams`] to a [`Plan`]: checkpoint, VAE, LoRAs,
//!   embeddings and hypernetworks found or missing (with the Civitai lookup URL and the
//!   `danlu download` command), the sampler mapped across tools
//!   ([`danlu_pnginfo::to_a1111_sampler`]) to one the engine runs, seeds, size, steps, CFG, clip
//!   skip, RNG, ENSD and variation seed, and every parameter the engine does not reproduce
//!   (hires fix, ADetailer, ControlNet, refiner, ...) named in [`Plan::not_reproduced`].
//! - [`to_job`], [`generate`], [`generate_with`]: the plan as a `danlu-generate` job, run; the
//!   [`Reproduced`] image carries a [`FieldComparison`] per supported field.
//!
//! ```no_run
//! use danlu_reproduce::{Library, generate, plan};
//! use std::sync::atomic::AtomicBool;
//! let cancel = AtomicBool::new(false);
//! let params = danlu_pnginfo::read_image("00001-1234.png")?;
//! let library = Library::open("/sd/webui".as_ref(), &danlu_types::NoProgress, &cancel)?;
//! let plan = plan("00001-1234.png", &params, Some(&library));
//! if plan.is_ready() {
//!     let done = generate(&plan, &params, &danlu_types::NoProgress, &cancel, &mut |_| {
//!         std::ops::ControlFlow::Continue(())
//!     })?;
//!     assert!(done.is_equal());
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
pub mod library;
pub mod plan;
mod run;

pub use danlu_pnginfo::GenerationParams;
pub use error::{Error, Result};
pub use library::{Library, Match, MatchedBy, hash_matches, model_stem};
pub use plan::{
    CIVITAI_BY_HASH, CIVITAI_SEARCH, Lookup, NotReproduced, Plan, Resource, SamplerPlan, Settings,
    Status, engine_sampler, plan,
};
pub use run::{FieldComparison, Reproduced, compare, generate, generate_with, to_job};
