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

    /// Convert a model file to safetensors: `.ckpt` read without running any of its code,
    /// EMA pruned, precision changed, defects repaired, a VAE baked in or taken out.
    ///
    /// Streams tensor by tensor (memory stays far below the model's size), writes the output
    /// atomically and never over an existing file or the source. Exit status 2 when nothing
    /// could be written.
    Convert(ConvertArgs),

    /// Read the generation parameters stored in images (A1111, ComfyUI, NovelAI, InvokeAI, ...).
    ///
    /// Reads PNG text chunks, JPEG and WebP EXIF, and stealth metadata hidden in pixels. A folder
    /// is walked. Exit status 1 when any image could not be read.
    Pnginfo(PnginfoArgs),

    /// Index every model of a library root into its cache (`ROOT/.danlu/library.sqlite`).
    ///
    /// Incremental: a file whose path, size and mtime are unchanged is not opened. New files are
    /// identified from their headers and hashed on all cores; hashes in A1111's `cache.json` are
    /// imported. Ctrl-C stops cleanly and the next scan resumes. The root is ROOT, else
    /// `--root`, `DANLU_ROOT`, or `root:` in the config file.
    Scan(ScanArgs),

    /// List the models of a library, optionally filtered.
    List(ListArgs),

    /// Show one model of a library by name or hash.
    Show(ShowArgs),

    /// File model files into a library's folders (move by default), never overwriting.
    ///
    /// A file whose content is already in the library is reported as a duplicate and left
    /// where it is; a different file with a taken name is kept as `NAME-2.EXT`. Sidecars
    /// (`.preview.png`, `.civitai.info`, `.json`, `.txt`, `.yaml`, ...) travel along.
    Sort(SortArgs),

    /// Say which VAE a generation with a checkpoint will use, and why (A1111's rules).
    Vae(VaeArgs),

    /// Find what in a library makes generations fail: missing VAEs, wrong folders,
    /// LoRAs without a checkpoint of their family, unsafe or unreadable files, duplicates.
    Doctor(DoctorArgs),

    /// Set style categories and tags on a model.
    Tag(TagArgs),

    /// Write the initial noise of a seed as a NumPy `.npy` file.
    ///
    /// `--rng cpu` gives exactly `torch.manual_seed(SEED); torch.randn(SHAPE)` on CPU (what
    /// ComfyUI and A1111's "CPU" setting use); `--rng nv` gives what `torch.randn` gives on an
    /// NVIDIA GPU (A1111's "NV" setting), so anyone can check danlu's seeds against torch.
    Noise(NoiseArgs),

    /// Make images from a prompt (txt2img) or from an image (img2img, `--init-image`).
    ///
    /// SD 1.x and SD 2.x single-file checkpoints, A1111's samplers, schedules, prompt syntax and
    /// seeds, so the same parameters give the same picture. Each PNG carries A1111-format
    /// `parameters`. Ctrl-C stops after the current step.
    Generate(Box<GenerateArgs>),

    /// Make an image again from its metadata: find its checkpoint, VAE, LoRAs and embeddings in
    /// the library (by hash, then by name), map its sampler, generate, compare.
    ///
    /// Reads A1111, ComfyUI, NovelAI, InvokeAI, Fooocus and SwarmUI metadata. Prints what was
    /// found and what is missing (with the hash to look up on Civitai and the command that
    /// fetches it), names every parameter danlu does not reproduce (hires fix, ADetailer,
    /// ControlNet, ...), and generates unless something needed is missing. The new image's
    /// parameters are compared with the source's, field by field. Exit status 1 when nothing
    /// could be generated or a field differs.
    Reproduce(ReproduceArgs),

    /// Download a model from HuggingFace, Civitai, the catalogue or a URL, check it and file it.
    ///
    /// SOURCE: `hf:ORG/REPO/PATH[@REV]`, a HuggingFace `/resolve/` or `/blob/` URL,
    /// `civitai:MODEL[@VERSION]`, a Civitai model or version URL, `catalog:NAME`, or any http(s)
    /// URL. Data goes to `NAME.part` (resumed when the command is run again), is checked against
    /// the SHA-256 the source publishes, and only then gets its name. Civitai downloads get the
    /// sidecars A1111 extensions read (`.civitai.info`, `.preview.png`, `.json`). Reads
    /// `HF_ENDPOINT`, `HF_TOKEN`, `CIVITAI_ENDPOINT`, `CIVITAI_TOKEN` and `HTTPS_PROXY`.
    Download(DownloadArgs),

    /// List the recommended models of the lesson (anime, realistic, 2.5D) and where to get them.
    Catalog(CatalogArgs),

    /// Civitai metadata for files already on disk.
    Civitai(CivitaiArgs),

    /// Serve the web UI and the AUTOMATIC1111-compatible API (`/sdapi/v1`) on one port.
    ///
    /// Opens http://127.0.0.1:7860 by default. A missing root is created in A1111 layout and
    /// opens with an empty library that says how to add models. `--listen` (all interfaces)
    /// refuses to start without `--api-auth` unless `--insecure` is given. Ctrl-C stops.
    Serve(ServeArgs),
}

/// Arguments of `danlu convert`.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// The model file to convert (`.ckpt`, `.pt`, `.bin`, `.safetensors`, ...); required
    /// unless `--all-ckpt`.
    #[arg(value_name = "IN", required_unless_present = "all_ckpt")]
    pub input: Option<PathBuf>,

    /// Convert every pickle-format model (`.ckpt`, `.pt`, `.pth`, `.bin`) of a library root to
    /// `NAME.safetensors` beside it: checkpoints, diffusion models, VAEs, LoRAs, ControlNets and
    /// T2I-Adapters. Embeddings and hypernetworks stay (A1111 reads hypernetworks only as
    /// pickles), as do upscalers, IP-Adapters, CLIP vision and text encoders (not every UI
    /// version reads them as safetensors). Without `--yes` only lists what would be done.
    /// Unsafe pickles are converted too, without running them. Each original is moved to
    /// `ROOT/.danlu/converted-originals/` (never deleted); sidecars of the same stem keep
    /// matching; the library cache is refreshed.
    #[arg(long, conflicts_with_all = ["input", "output", "bake_vae", "extract_vae"])]
    pub all_ckpt: bool,

    /// With `--all-ckpt`: convert, instead of listing what would be converted.
    #[arg(long, requires = "all_ckpt")]
    pub yes: bool,

    /// The library root (with `--all-ckpt`).
    #[command(flatten)]
    pub root: RootArgs,

    /// Output file (default: `IN` with `.safetensors`, or `IN.converted.safetensors` when `IN`
    /// is safetensors); never an existing file.
    #[arg(long, short, value_name = "OUT")]
    pub output: Option<PathBuf>,

    /// Element type of floating-point tensors, rounded as PyTorch's `.half()`/`.bfloat16()`.
    #[arg(long, value_enum, default_value_t = ConvertDtype::Keep)]
    pub dtype: ConvertDtype,

    /// Drop EMA copies (`model_ema.*`) and optimizer, scheduler and loss state.
    #[arg(long)]
    pub prune: bool,

    /// Put the EMA weights in place of the UNet weights (and drop the copies).
    #[arg(long)]
    pub use_ema: bool,

    /// Bake this LDM-layout VAE into the checkpoint (`first_stage_model.*`).
    #[arg(long, value_name = "VAE")]
    pub bake_vae: Option<PathBuf>,

    /// Also write the checkpoint's VAE, without `first_stage_model.`, to this file.
    #[arg(long, value_name = "OUT")]
    pub extract_vae: Option<PathBuf>,

    /// Re-read the output, compare every tensor with the source, and check that `inspect`
    /// finds the same kind and base.
    #[arg(long)]
    pub verify: bool,
}

/// Element type asked of `danlu convert`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConvertDtype {
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
    /// Single precision.
    F32,
    /// Keep each tensor's element type.
    Keep,
}

/// Arguments of `danlu generate`, named like A1111's fields.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// The prompt (A1111 syntax: `(word:1.3)`, `[word]`, `BREAK`).
    #[arg(long, short, default_value = "")]
    pub prompt: String,
    /// The negative prompt.
    #[arg(long, short, default_value = "")]
    pub negative_prompt: String,
    /// Sampling steps.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Classifier-free guidance scale.
    #[arg(long, default_value_t = 7.0)]
    pub cfg_scale: f32,
    /// Sampler by its A1111 name (`Euler a`, `DPM++ 2M`, `DDIM`, ...; `DPM++ 2M Karras` also
    /// sets the schedule).
    #[arg(long, default_value = "DPM++ 2M")]
    pub sampler: String,
    /// Schedule (`Automatic`, `Uniform`, `Karras`, `Exponential`, ...).
    #[arg(long, default_value = "Automatic")]
    pub scheduler: String,
    /// Seed of the first image; -1 picks one at random.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub seed: i64,
    /// Width in pixels, a multiple of 8 (default 512, or the init image's).
    #[arg(long, short = 'W')]
    pub width: Option<usize>,
    /// Height in pixels, a multiple of 8 (default 512, or the init image's).
    #[arg(long, short = 'H')]
    pub height: Option<usize>,
    /// Images per sampler run.
    #[arg(long, default_value_t = 1)]
    pub batch_size: usize,
    /// Sampler runs (A1111 "Batch count"); the seed advances by the batch size per run.
    #[arg(long, default_value_t = 1)]
    pub n_iter: usize,
    /// The checkpoint (`.safetensors` or `.ckpt`, A1111 single-file layout).
    #[arg(long, short)]
    pub checkpoint: PathBuf,
    /// An external VAE file, `none` (the VAE baked into the checkpoint, the default) or `auto`
    /// (A1111 "Automatic": the library's pairing rule; needs `--root`).
    #[arg(long, value_name = "FILE|auto|none")]
    pub vae: Option<PathBuf>,
    /// The library root `--vae auto` pairs VAEs in.
    #[command(flatten)]
    pub root: RootArgs,
    /// A folder of LoRA/LyCORIS files that `<lora:NAME:W>` tags name by file stem (A1111
    /// `--lora-dir`); repeatable.
    #[arg(long, value_name = "DIR")]
    pub lora_dir: Vec<PathBuf>,
    /// A folder of textual-inversion embeddings, used wherever the prompt or negative prompt
    /// names one by file stem (A1111 `--embeddings-dir`); repeatable.
    #[arg(long, value_name = "DIR")]
    pub embeddings_dir: Vec<PathBuf>,
    /// A folder of hypernetworks that `<hypernet:NAME:W>` tags name by file stem (A1111
    /// `--hypernetwork-dir`); repeatable.
    #[arg(long, value_name = "DIR")]
    pub hypernetwork_dir: Vec<PathBuf>,
    /// A1111 "Clip skip" (SD 2.x always uses the penultimate layer).
    #[arg(long, default_value_t = 1)]
    pub clip_skip: usize,
    /// A PNG to start from (img2img).
    #[arg(long)]
    pub init_image: Option<PathBuf>,
    /// img2img: how much of the init image is repainted, 0 to 1.
    #[arg(long, default_value_t = 0.75)]
    pub denoising_strength: f32,
    /// img2img: how an init image of another size is fitted, A1111 "Resize mode":
    /// `just-resize`, `crop-and-resize` or `resize-and-fill` (Lanczos, as A1111).
    #[arg(long, default_value = "just-resize")]
    pub resize_mode: String,
    /// img2img: a mask PNG, white where the picture is repainted (inpainting).
    #[arg(long, value_name = "FILE")]
    pub mask: Option<PathBuf>,
    /// Inpainting: A1111 "Mask blur", the standard deviation of the Gaussian blur of the mask in
    /// pixels (0: none).
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub mask_blur: u32,
    /// Inpainting: A1111 "Masked content": `original`, `fill` (blurred colours from around the
    /// mask), `latent-noise` or `latent-nothing`.
    #[arg(long, default_value = "original")]
    pub inpainting_fill: String,
    /// Inpainting: repaint where the mask is black (A1111 "Mask mode: Inpaint not masked").
    #[arg(long)]
    pub inpainting_mask_invert: bool,
    /// Noise generator: `cpu` (torch on CPU, also ComfyUI) or `nv` (torch on NVIDIA GPUs).
    #[arg(long, default_value = "cpu")]
    pub rng: String,
    /// Eta of ancestral and SDE samplers (default A1111's: 1, DDIM 0).
    #[arg(long)]
    pub eta: Option<f64>,
    /// Device, precision and threads.
    #[command(flatten)]
    pub engine: EngineArgs,
    /// The UNet predicts v (SD 2.x 768-v); also read from a `.yaml` beside the checkpoint.
    #[arg(long)]
    pub v_pred: bool,
    /// Model family, `sd1` or `sd2`, when the checkpoint's identification should be overridden.
    #[arg(long)]
    pub base: Option<String>,
    /// JSON file with network shapes for checkpoints that are not the released sizes.
    #[arg(long, value_name = "JSON")]
    pub model_config: Option<PathBuf>,
    /// Output: a `.png` file, or a folder for A1111-style `NNNNN-SEED.png` names.
    #[arg(long, short, default_value = ".")]
    pub output: PathBuf,
}

/// Where and how the networks run (`generate`, `reproduce`, `serve`).
#[derive(Debug, Args)]
pub struct EngineArgs {
    /// Device: `auto` (a GPU this build can drive, else the CPU), `cpu`, `cuda[:N]` (build with
    /// `--features cuda`) or `metal[:N]` (build with `--features metal`).
    #[arg(
        long,
        value_name = "DEVICE",
        default_value = "auto",
        env = "DANLU_DEVICE"
    )]
    pub device: String,
    /// Compute precision of the networks (`auto`: f32 on the CPU, f16 on a GPU).
    #[arg(long, value_enum, default_value_t = Precision::Auto)]
    pub precision: Precision,
    /// CPU threads for the networks (default: every core).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

/// Compute precision of the networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Precision {
    /// The device's fastest correct precision: f32 on the CPU, f16 on a GPU.
    Auto,
    /// 32-bit floats.
    F32,
    /// 16-bit floats.
    F16,
    /// bfloat16.
    Bf16,
}

/// Arguments of `danlu noise`.
#[derive(Debug, Args)]
pub struct NoiseArgs {
    /// The seed.
    #[arg(long)]
    pub seed: u64,
    /// Tensor shape, dimensions separated by `x` (a latent for 512x512 is `1x4x64x64`).
    #[arg(long, default_value = "1x4x64x64")]
    pub shape: String,
    /// Random number generator: `cpu` (torch on CPU) or `nv` (torch on CUDA).
    #[arg(long, default_value = "cpu")]
    pub rng: String,
    /// Output `.npy` file (never overwritten).
    #[arg(long, short)]
    pub out: PathBuf,
}

/// The library root option shared by library commands.
#[derive(Debug, Args)]
pub struct RootArgs {
    /// Library root (an A1111 or ComfyUI install, or a plain folder); else `DANLU_ROOT`, else
    /// `root:` in `$XDG_CONFIG_HOME/danlu/config.yaml` (or `~/.config/danlu/config.yaml`).
    #[arg(long, value_name = "ROOT")]
    pub root: Option<PathBuf>,
}

/// Arguments of `danlu scan`.
#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Library root; else `--root`, `DANLU_ROOT` or the config file.
    #[arg(value_name = "ROOT")]
    pub path: Option<PathBuf>,
    /// The library root.
    #[command(flatten)]
    pub root: RootArgs,
    /// Only identify files; do not hash them.
    #[arg(long)]
    pub no_hash: bool,
    /// Files hashed at once (default: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Do not import hashes from A1111's `cache.json`.
    #[arg(long)]
    pub no_import: bool,
}

/// Arguments of `danlu list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The library root.
    #[command(flatten)]
    pub root: RootArgs,
    /// Only this kind (`checkpoint`, `lora`, `vae`, ...).
    #[arg(long)]
    pub kind: Option<String>,
    /// Only this family (`sd1`, `sdxl`, `flux`, ...).
    #[arg(long)]
    pub base: Option<String>,
    /// Only this style category (`anime`, `realistic`, `2.5d`, `other`).
    #[arg(long)]
    pub category: Option<String>,
}

/// Arguments of `danlu show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The library root.
    #[command(flatten)]
    pub root: RootArgs,
    /// A model's name, file name, or hash (sha256, AutoV1/V2/V3 or BLAKE3; 8 hex digits at least).
    #[arg(value_name = "NAME|HASH")]
    pub query: String,
}

/// Arguments of `danlu sort`.
#[derive(Debug, Args)]
pub struct SortArgs {
    /// Model files or folders (a downloads inbox is walked).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// The library root.
    #[command(flatten)]
    pub root: RootArgs,
    /// Move files (the default).
    #[arg(long, group = "mode")]
    pub r#move: bool,
    /// Copy files, leaving the sources.
    #[arg(long, group = "mode")]
    pub copy: bool,
    /// Hard-link files (symbolic links across file systems), leaving the sources.
    #[arg(long, group = "mode")]
    pub link: bool,
    /// Only say what would be done.
    #[arg(long)]
    pub dry_run: bool,
}

/// Arguments of `danlu vae`.
#[derive(Debug, Args)]
pub struct VaeArgs {
    /// The library root.
    #[command(flatten)]
    pub root: RootArgs,
    /// The checkpoint (name, file name or hash).
    #[arg(value_name = "CHECKPOINT")]
    pub checkpoint: String,
    /// An explicit VAE choice (file name; `None` for the baked VAE).
    #[arg(long, value_name = "VAE")]
    pub vae: Option<String>,
}

/// Arguments of `danlu doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The library root.
    #[command(flatten)]
    pub root: RootArgs,
    /// Apply the safe fixes (moves into the right folder, VAE pairs) after showing them.
    #[arg(long)]
    pub fix: bool,
}

/// Arguments of `danlu tag`.
#[derive(Debug, Args)]
pub struct TagArgs {
    /// The library root.
    #[command(flatten)]
    pub root: RootArgs,
    /// The model (name, file name or hash).
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Style categories to add (`anime`, `realistic`, `2.5d`, `other`).
    #[arg(long)]
    pub category: Vec<String>,
    /// Free tags to add.
    #[arg(long)]
    pub tag: Vec<String>,
    /// Categories or tags to remove.
    #[arg(long)]
    pub remove: Vec<String>,
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

/// Arguments of `danlu download`.
#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// What to download (several are downloaded at once).
    #[arg(required = true, value_name = "SOURCE")]
    pub sources: Vec<String>,
    /// The library root.
    #[command(flatten)]
    pub root: RootArgs,
    /// Download into this folder and leave the file there (no filing, no library needed);
    /// without it, downloads go to `ROOT/.danlu-downloads` and are filed with `sort`.
    #[arg(long, value_name = "FOLDER")]
    pub to: Option<PathBuf>,
    /// File name to save as (one source only).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
}

/// Arguments of `danlu serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The root to serve.
    #[command(flatten)]
    pub root: RootArgs,
    /// Address to bind without `--listen`.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// Port (0 picks a free one).
    #[arg(long, value_name = "PORT", default_value_t = 7860)]
    pub port: u16,
    /// Listen on all interfaces (needs `--api-auth` or `--insecure`).
    #[arg(long)]
    pub listen: bool,
    /// Allow a network-facing server without `--api-auth`.
    #[arg(long)]
    pub insecure: bool,
    /// HTTP basic credentials for the API and the UI: `user:pass[,user2:pass2]`.
    #[arg(
        long,
        value_name = "CREDENTIALS",
        env = "DANLU_API_AUTH",
        hide_env_values = true
    )]
    pub api_auth: Option<String>,
    /// Largest request body accepted, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    pub max_body_mib: usize,
    /// Device, precision and threads.
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// Arguments of `danlu reproduce`.
#[derive(Debug, Args)]
pub struct ReproduceArgs {
    /// The image whose parameters to reproduce (PNG, JPEG or WebP).
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,
    /// The library root searched for the files (scanned and hashed first, incrementally).
    #[command(flatten)]
    pub root: RootArgs,
    /// Output: a `.png` file, or a folder for A1111-style `NNNNN-SEED.png` names (default:
    /// `IMAGE-STEM.reproduced.png` in the current folder); never an existing file.
    #[arg(long, short, value_name = "OUT")]
    pub output: Option<PathBuf>,
    /// Print the plan only; generate nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Device, precision and threads.
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// Arguments of `danlu catalog`.
#[derive(Debug, Args)]
pub struct CatalogArgs {
    /// Only this style: `anime`, `realistic` or `2.5d`.
    #[arg(long, value_name = "C")]
    pub category: Option<String>,
}

/// Arguments of `danlu civitai`.
#[derive(Debug, Args)]
pub struct CivitaiArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: CivitaiCommand,
}

/// `danlu civitai` subcommands.
#[derive(Debug, Subcommand)]
pub enum CivitaiCommand {
    /// Find model files on Civitai by their SHA-256 and write the sidecars A1111 extensions read
    /// (`.civitai.info`, `.preview.png`, `.json`) beside them.
    Lookup(CivitaiLookupArgs),
}

/// Arguments of `danlu civitai lookup`.
#[derive(Debug, Args)]
pub struct CivitaiLookupArgs {
    /// Model files or folders (walked).
    #[arg(required_unless_present = "all", value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Look up every model of the library root that has no `.civitai.info` yet.
    #[arg(long, conflicts_with = "paths")]
    pub all: bool,
    /// The library root for `--all`.
    #[command(flatten)]
    pub root: RootArgs,
    /// Look files up again even when they have a `.civitai.info`.
    #[arg(long)]
    pub force: bool,
}
