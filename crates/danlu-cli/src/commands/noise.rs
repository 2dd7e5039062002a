//! `danlu noise`: a seed's initial noise as `.npy`, to check against torch.

use crate::ExitStatus;
use crate::args::NoiseArgs;
use crate::printer::Printer;
use anyhow::Context as _;
use danlu_diffusion::rng::{RngSource, noise, to_npy};
use serde::Serialize;

/// What `danlu noise --json` reports.
#[derive(Debug, Serialize)]
pub struct NoiseReport {
    /// The file written.
    pub path: String,
    /// The seed.
    pub seed: u64,
    /// The shape.
    pub shape: Vec<usize>,
    /// `cpu` or `nv`.
    pub rng: String,
    /// Mean of the values (about 0 for a large tensor).
    pub mean: f64,
    /// Standard deviation of the values (about 1 for a large tensor).
    pub std: f64,
}

/// Parses `1x4x64x64` into dimensions.
fn parse_shape(text: &str) -> anyhow::Result<Vec<usize>> {
    let dims = text
        .split(['x', 'X', ','])
        .map(|d| {
            d.trim()
                .parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
                .with_context(|| format!("`{text}`: `{d}` is not a positive dimension"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let total = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    match total {
        Some(n) if n <= 1 << 28 => Ok(dims),
        _ => anyhow::bail!("`{text}`: more than 2^28 elements"),
    }
}

/// Runs `danlu noise`.
///
/// # Errors
/// A bad shape or generator name, or a file that cannot be written (or already exists).
pub fn run(args: &NoiseArgs, printer: &Printer) -> anyhow::Result<ExitStatus> {
    let shape = parse_shape(&args.shape)?;
    let source = RngSource::parse_name(&args.rng)?;
    let values = noise(args.seed, &shape, source)?;
    danlu_fs::write_atomic(
        &args.out,
        &to_npy(&shape, &values),
        danlu_fs::Overwrite::Never,
    )?;
    let n = values.len() as f64;
    let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = values
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    let report = NoiseReport {
        path: args.out.display().to_string(),
        seed: args.seed,
        shape,
        rng: args.rng.to_ascii_lowercase(),
        mean,
        std: var.sqrt(),
    };
    if printer.json {
        printer.json(&report)?;
    } else {
        printer.text(&format!(
            "wrote `{}`: seed {}, shape {:?}, rng {}, mean {:.4}, std {:.4}\n",
            report.path, report.seed, report.shape, report.rng, report.mean, report.std
        ))?;
    }
    Ok(ExitStatus::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_parse_and_bad_ones_are_refused() {
        assert_eq!(parse_shape("1x4x64x64").unwrap(), vec![1, 4, 64, 64]);
        assert!(parse_shape("1x0").is_err());
        assert!(parse_shape("ax2").is_err());
        assert!(parse_shape("100000x100000x100").is_err());
    }
}
