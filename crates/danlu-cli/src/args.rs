//! Command-line arguments. The doc comments here are the `--help` text.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// danlu: a local Stable Diffusion model workstation.
///
/// Tells what a model file is and where it goes, keeps a models folder in order, and makes and
/// reproduces images, with no Python.
#[derive(Debug, Parser)]
#[command(
    name = "danlu",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,

    /// Global options shared by every command.
    #[command(flatten)]
    pub global: GlobalArgs,
}

/// Options every command accepts.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Print one machine-readable JSON document on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    /// Hide progress bars.
    #[arg(long, short, global = true)]
    pub quiet: bool,

    /// More log output on stderr (`-v` debug, `-vv` trace); `RUST_LOG` overrides.
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// When to use colour in text output.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
}

/// When to colour text output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// Colour when stdout is a terminal and `NO_COLOR` is unset.
    Auto,
    /// Always colour.
    Always,
    /// Never colour.
    Never,
}

/// danlu's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Tell what model files are (kind, family, contents, safety) and where they go.
    ///
    /// Reads only headers: a multi-GB checkpoint is analysed in milliseconds, and no code in a
    /// pickle is ever run. A folder is walked recursively. Exit status 1 when any file could not
    /// be read (the others are still reported).
    Inspect(InspectArgs),

    /// Read the generation parameters stored in images (A1111, ComfyUI, NovelAI, InvokeAI, ...).
    ///
    /// Reads PNG text chunks, JPEG and WebP EXIF, and stealth metadata hidden in pixels. A folder
    /// is walked. Exit status 1 when any image could not be read.
    Pnginfo(PnginfoArgs),
}

/// Arguments of `danlu pnginfo`.
#[derive(Debug, Args)]
pub struct PnginfoArgs {
    /// Images or folders of images.
    #[arg(required = true, value_name = "IMAGE")]
    pub paths: Vec<PathBuf>,
}

/// Arguments of `danlu inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Model files or folders (folders are walked; a diffusers folder counts as one model).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,

    /// Also compute SHA-256, AutoV1, AutoV2, AutoV3 and BLAKE3 (reads whole files).
    #[arg(long)]
    pub hash: bool,
}
