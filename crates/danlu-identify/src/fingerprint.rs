//! Measuring: what a [`TensorIndex`] looks like, without deciding what it is.
//!
//! After ComfyUI `comfy/model_detection.py` (`detect_unet_config`, `unet_prefix_from_state_dict`):
//! find the key prefix of each part, spot marker keys and read widths from weight shapes.

use danlu_format::TensorIndex;
use danlu_types::{Dtype, Subformat};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use tracing::debug;

/// The structure a file's keys show, found from marker keys in a fixed order (most specific
/// first: an adapter's keys contain UNet names, so adapters are tried before the UNet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// LoRA or LyCORIS patch keys (`lora_down`, `lora_A`, `hada_w1_a`, `lokr_w1`, `on_input`, …).
    Lora,
    /// Textual-inversion vectors (`string_to_param`, `emb_params`, `clip_l`+`clip_g`, one tensor).
    Embedding,
    /// A1111 hypernetwork (`{dim}.{n}.linear.{i}` layers, `layer_structure` value).
    Hypernetwork,
    /// IP-Adapter (`image_proj.` and `ip_adapter.`).
    IpAdapter,
    /// T2I-Adapter (`conv_in` + `body.N.block1`, or diffusers `adapter.`).
    T2iAdapter,
    /// ControlNet (`control_model.`, `input_hint_block`, `zero_convs`, `controlnet_cond_embedding`,
    /// `controlnet_blocks`).
    Controlnet,
    /// A diffusion network (UNet or transformer), alone or with VAE and text encoders.
    Network,
    /// A VAE alone (`encoder.conv_in`, `decoder.conv_in`).
    Vae,
    /// A CLIP image encoder (`vision_model.`, OpenCLIP `visual.`).
    ClipVision,
    /// A text encoder alone (CLIP, OpenCLIP, T5).
    TextEncoder,
    /// A super-resolution network.
    Upscaler,
}

/// The diffusion network found in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    /// LDM/SGM `UNetModel` (`input_blocks`, `middle_block`, `output_blocks`).
    UnetLdm,
    /// diffusers `UNet2DConditionModel` (`conv_in`, `down_blocks`, `up_blocks`).
    UnetDiffusers,
    /// Stability MMDiT (`joint_blocks`), SD3/SD3.5.
    Mmdit,
    /// diffusers `SD3Transformer2DModel` (`transformer_blocks` + `pos_embed.proj`).
    MmditDiffusers,
    /// Flux in BFL naming (`double_blocks`, `single_blocks`).
    Flux,
    /// diffusers `FluxTransformer2DModel` (`single_transformer_blocks`).
    FluxDiffusers,
}

/// Text encoder families, told apart by width and layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TextEncoderFamily {
    /// OpenAI CLIP ViT-L/14 text model, 768 wide.
    ClipL,
    /// OpenCLIP ViT-H/14 text model, 1024 wide (SD2).
    OpenClipH,
    /// OpenCLIP ViT-bigG/14 text model, 1280 wide (SDXL, SD3).
    ClipG,
    /// T5 v1.1 encoder (4096 wide for XXL).
    T5,
    /// A CLIP text model of another width.
    OtherClip,
}

impl TextEncoderFamily {
    fn of_clip_width(width: u64) -> Self {
        match width {
            768 => TextEncoderFamily::ClipL,
            1024 => TextEncoderFamily::OpenClipH,
            1280 => TextEncoderFamily::ClipG,
            _ => TextEncoderFamily::OtherClip,
        }
    }
}

/// One text encoder found in a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TextEncoder {
    /// Key prefix (`cond_stage_model.transformer.text_model.`, `conditioner.embedders.1.model.`, …).
    pub prefix: String,
    /// Family by width and layout.
    pub family: TextEncoderFamily,
    /// Hidden width.
    pub width: u64,
    /// Number of transformer layers.
    pub layers: u64,
}

/// Which blocks a LoRA's keys target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoraBlocks {
    /// Flux BFL blocks (`double_blocks`, `single_blocks`).
    DoubleSingle,
    /// MMDiT `joint_blocks` (SD3).
    Joint,
    /// diffusers transformer blocks (`transformer_blocks`, `single_transformer_blocks`): Flux or SD3.
    DiffusersTransformer,
    /// UNet blocks (`down_blocks`/`input_blocks`/`mid_block`/…).
    Unet,
    /// Text encoder layers only.
    TextOnly,
}

/// Measurements of a LoRA's keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoraPrint {
    /// Key layout (`lora`, `locon`, `loha`, `lokr`, `ia3`, `dora`, `diffusers`).
    pub subformat: Subformat,
    /// Which blocks are targeted.
    pub blocks: Option<LoraBlocks>,
    /// Input width of a patched cross-attention `to_k` (the UNet's context dim).
    pub context_dim: Option<u64>,
    /// Input width of a patched transformer-block attention (Flux 3072, SD3 1536/2432).
    pub transformer_width: Option<u64>,
    /// Input width of a patched first text encoder layer.
    pub te_width: Option<u64>,
    /// A second text encoder is patched (`lora_te2_`, `text_encoder_2.`).
    pub te2: bool,
    /// Key names only SDXL's UNet has (`input_blocks_4_1_transformer_blocks_1`, `label_emb`, …).
    pub sdxl_names: bool,
    /// Number of patched modules.
    pub modules: usize,
}

/// Measurements of an embedding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EmbeddingPrint {
    /// Layout (`a1111_pt`, `safetensors`, `sdxl_pair`).
    pub subformat: Subformat,
    /// Vector width (768, 1024; 2048 for an SDXL pair: 768 + 1280).
    pub width: u64,
    /// Number of vectors.
    pub vectors: u64,
}

/// Upscaler architectures told apart by key names (chaiNNer `spandrel` does the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpscalerArch {
    /// ESRGAN, original layout (`model.0.weight`, `model.1.sub.N.RDB1…`).
    EsrganOld,
    /// RRDBNet in BasicSR naming (`conv_first`, `body.N.rdb1` or `RRDB_trunk.N.RDB1`).
    Esrgan,
    /// Real-ESRGAN `SRVGGNetCompact` (`body.N.weight`).
    Compact,
    /// SwinIR (`layers.N.residual_group.blocks`).
    SwinIr,
    /// HAT (`layers.N.residual_group.overlap_attn` / `conv_block`).
    Hat,
}

/// Everything measured from a [`TensorIndex`]; see [`Fingerprint::from_index`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Fingerprint {
    /// Number of tensors.
    pub tensors: usize,
    /// Wrapper prefix stripped before measuring (`state_dict.`, `params_ema.`, `module.`, …).
    pub wrapper: Option<String>,
    /// First dotted (or `/`) segment of every key with its count, most frequent first.
    pub top_prefixes: Vec<(String, usize)>,
    /// The structure found.
    pub layout: Option<Layout>,
    /// The diffusion network, when one is present (also inside ControlNets).
    pub network: Option<Network>,
    /// Key prefix of the network (`model.diffusion_model.`, `unet/`, `` for a bare one).
    pub network_prefix: Option<String>,
    /// Input channels of the first conv or patch embedding.
    pub in_channels: Option<u64>,
    /// Width of the first conv (`model_channels`) or hidden width of a transformer.
    pub model_channels: Option<u64>,
    /// Cross-attention context width (`attn2.to_k` input).
    pub context_dim: Option<u64>,
    /// Input width of SDXL's `label_emb` / diffusers `add_embedding`.
    pub adm_in_channels: Option<u64>,
    /// Deepest spatial transformer (blocks per transformer).
    pub transformer_depth: Option<u64>,
    /// Flux double-stream blocks.
    pub double_blocks: Option<u64>,
    /// Flux single-stream blocks.
    pub single_blocks: Option<u64>,
    /// MMDiT joint blocks.
    pub joint_blocks: Option<u64>,
    /// Flux `guidance_in` (guidance-distilled: dev) present.
    pub guidance_in: bool,
    /// A `v_pred` marker key (ComfyUI `supported_models.SDXL.model_type`).
    pub v_pred_key: bool,
    /// Key prefix of the VAE.
    pub vae_prefix: Option<String>,
    /// VAE latent channels (`decoder.conv_in` input).
    pub vae_latent_channels: Option<u64>,
    /// VAE has `quant_conv` (the 4-channel VAEs do; SD3's and Flux's do not).
    pub vae_quant_conv: bool,
    /// Text encoders found.
    pub text_encoders: Vec<TextEncoder>,
    /// EMA weights (`model_ema.`) present.
    pub ema: bool,
    /// Input channels of a T2I-Adapter's `conv_in` (pixel-unshuffle factor² x image channels).
    pub t2i_in_channels: Option<u64>,
    /// Context width an IP-Adapter projects into (`to_k_ip` input).
    pub ip_adapter_context: Option<u64>,
    /// Width of a CLIP vision tower.
    pub vision_width: Option<u64>,
    /// Context size of an A1111 hypernetwork (the `768`/`1024` key).
    pub hypernetwork_context: Option<u64>,
    /// Embedding measurements.
    pub embedding: Option<EmbeddingPrint>,
    /// LoRA measurements.
    pub lora: Option<LoraPrint>,
    /// Upscaler architecture.
    pub upscaler: Option<UpscalerArch>,
    /// Dominant dtype by element count among floating-point tensors.
    pub dtype: Option<Dtype>,
    /// Number of scalar weights (elements of floating-point and quantized tensors).
    pub parameters: u64,
}

/// Names and shapes after stripping the wrapper, for prefix and suffix queries.
struct Keys<'a> {
    map: BTreeMap<&'a str, &'a [u64]>,
}

impl<'a> Keys<'a> {
    fn get(&self, name: &str) -> Option<&'a [u64]> {
        self.map.get(name).copied()
    }
    fn has(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }
    fn with_prefix<'s>(
        &'s self,
        prefix: &'s str,
    ) -> impl Iterator<Item = (&'a str, &'a [u64])> + 's {
        self.map
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (*k, *v))
    }
    fn has_prefix(&self, prefix: &str) -> bool {
        self.with_prefix(prefix).next().is_some()
    }
    fn iter(&self) -> impl Iterator<Item = (&'a str, &'a [u64])> + '_ {
        self.map.iter().map(|(k, v)| (*k, *v))
    }
    /// The shape's `i`-th dimension of `name`.
    fn dim(&self, name: &str, i: usize) -> Option<u64> {
        self.get(name).and_then(|s| s.get(i).copied())
    }
    /// Number of distinct integers `N` in keys `{prefix}N.…`.
    fn count_indexed(&self, prefix: &str) -> Option<u64> {
        let set: BTreeSet<u64> = self
            .with_prefix(prefix)
            .filter_map(|(k, _)| k[prefix.len()..].split('.').next()?.parse().ok())
            .collect();
        (!set.is_empty()).then_some(set.len() as u64)
    }
}

/// Wrapper prefixes that carry no meaning: pickled Lightning checkpoints (`state_dict.`), BasicSR
/// upscalers (`params_ema.` preferred over `params.`), `DataParallel` (`module.`).
const WRAPPERS: [&str; 4] = ["state_dict.", "params_ema.", "params.", "module."];

/// Prefixes under which a diffusion network is looked for, in order.
const NETWORK_PREFIXES: [&str; 6] = [
    "model.diffusion_model.",
    "",
    "unet/",
    "transformer/",
    "control_model.",
    "model.",
];

/// Prefixes under which a VAE is looked for, in order.
const VAE_PREFIXES: [&str; 4] = ["first_stage_model.", "vae.", "vae/", ""];

impl Fingerprint {
    /// Measures a tensor index: strips wrapper prefixes, counts top-level prefixes, spots marker
    /// keys and reads channel counts, context width, block depths, text-encoder widths, VAE latent
    /// channels and LoRA key styles. Pure: no I/O, no decisions beyond the [`Layout`].
    pub fn from_index(index: &TensorIndex) -> Fingerprint {
        let mut fp = Fingerprint {
            tensors: index.tensors.len(),
            ..Fingerprint::default()
        };
        let (dtype, parameters) = dominant_dtype(index);
        fp.dtype = dtype;
        fp.parameters = parameters;

        // Strip wrappers; a wrapper that holds at least half of the tensors is the state dict.
        let mut names: Vec<(&str, &[u64])> = index
            .tensors
            .iter()
            .map(|t| (t.name.as_str(), t.shape.as_slice()))
            .collect();
        let mut wrapper = String::new();
        for w in WRAPPERS {
            let n = names.iter().filter(|(k, _)| k.starts_with(w)).count();
            if n > 0 && n * 2 >= names.len() {
                names = names
                    .into_iter()
                    .filter_map(|(k, s)| Some((k.strip_prefix(w)?, s)))
                    .collect();
                wrapper.push_str(w);
            }
        }
        if !wrapper.is_empty() {
            fp.wrapper = Some(wrapper);
        }
        let keys = Keys {
            map: names.into_iter().collect(),
        };

        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for (k, _) in keys.iter() {
            let end = k.find(['.', '/']).unwrap_or(k.len());
            *counts.entry(&k[..end]).or_default() += 1;
        }
        let mut top: Vec<(String, usize)> =
            counts.into_iter().map(|(k, n)| (k.to_owned(), n)).collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        fp.top_prefixes = top;

        fp.measure_network(&keys);
        fp.measure_vae(&keys);
        fp.measure_text_encoders(&keys);
        fp.ema = keys
            .with_prefix("model_ema.")
            .any(|(k, _)| k != "model_ema.decay" && k != "model_ema.num_updates");
        fp.v_pred_key = keys.has("v_pred");
        fp.lora = measure_lora(&keys);
        fp.embedding = measure_embedding(&keys, index);
        fp.hypernetwork_context = measure_hypernetwork(&keys, index);
        fp.ip_adapter_context = if keys.has_prefix("image_proj.") && keys.has_prefix("ip_adapter.")
        {
            keys.with_prefix("ip_adapter.")
                .find(|(k, _)| k.ends_with("to_k_ip.weight"))
                .and_then(|(_, s)| s.get(1).copied())
        } else {
            None
        };
        fp.t2i_in_channels =
            if keys.has("body.0.block1.weight") || keys.has("body.0.resnets.0.block1.weight") {
                keys.dim("conv_in.weight", 1)
            } else if keys.has_prefix("adapter.body.") {
                keys.dim("adapter.conv_in.weight", 1)
            } else {
                None
            };
        fp.vision_width = keys
            .dim("vision_model.embeddings.patch_embedding.weight", 0)
            .or_else(|| keys.dim("visual.conv1.weight", 0));
        fp.upscaler = measure_upscaler(&keys);
        fp.layout = fp.detect_layout(&keys);
        debug!(layout = ?fp.layout, network = ?fp.network, context_dim = ?fp.context_dim, tensors = fp.tensors, "fingerprint");
        fp
    }

    fn measure_network(&mut self, keys: &Keys<'_>) {
        for p in NETWORK_PREFIXES {
            let k = |s: &str| format!("{p}{s}");
            let found = if let Some(s) = keys.get(&k("input_blocks.0.0.weight")) {
                self.in_channels = s.get(1).copied();
                self.model_channels = s.first().copied();
                self.adm_in_channels = keys.dim(&k("label_emb.0.0.weight"), 1);
                Some(Network::UnetLdm)
            } else if keys.has(&k("conv_in.weight"))
                && keys.has_prefix(&k("down_blocks."))
                && keys.has_prefix(&k("time_embedding."))
            {
                self.in_channels = keys.dim(&k("conv_in.weight"), 1);
                self.model_channels = keys.dim(&k("conv_in.weight"), 0);
                self.adm_in_channels = keys.dim(&k("add_embedding.linear_1.weight"), 1);
                Some(Network::UnetDiffusers)
            } else if keys.has(&k("joint_blocks.0.x_block.attn.qkv.weight")) {
                self.in_channels = keys.dim(&k("x_embedder.proj.weight"), 1);
                self.model_channels = keys.dim(&k("x_embedder.proj.weight"), 0);
                self.joint_blocks = keys.count_indexed(&k("joint_blocks."));
                Some(Network::Mmdit)
            } else if keys.has(&k("double_blocks.0.img_attn.qkv.weight")) {
                self.in_channels = keys.dim(&k("img_in.weight"), 1);
                self.model_channels = keys.dim(&k("img_in.weight"), 0);
                self.double_blocks = keys.count_indexed(&k("double_blocks."));
                self.single_blocks = keys.count_indexed(&k("single_blocks."));
                self.guidance_in = keys.has(&k("guidance_in.in_layer.weight"));
                Some(Network::Flux)
            } else if keys.has_prefix(&k("single_transformer_blocks."))
                && keys.has_prefix(&k("transformer_blocks."))
            {
                self.in_channels = keys.dim(&k("x_embedder.weight"), 1);
                self.model_channels = keys.dim(&k("x_embedder.weight"), 0);
                self.double_blocks = keys.count_indexed(&k("transformer_blocks."));
                self.single_blocks = keys.count_indexed(&k("single_transformer_blocks."));
                self.guidance_in = keys.has_prefix(&k("time_text_embed.guidance_embedder."));
                Some(Network::FluxDiffusers)
            } else if keys.has(&k("pos_embed.proj.weight"))
                && keys.has_prefix(&k("transformer_blocks."))
            {
                self.in_channels = keys.dim(&k("pos_embed.proj.weight"), 1);
                self.model_channels = keys.dim(&k("pos_embed.proj.weight"), 0);
                self.joint_blocks = keys.count_indexed(&k("transformer_blocks."));
                Some(Network::MmditDiffusers)
            } else {
                None
            };
            if let Some(net) = found {
                self.network = Some(net);
                self.network_prefix = Some(p.to_owned());
                let mut depth = None;
                for (name, shape) in keys.with_prefix(p) {
                    if self.context_dim.is_none() && name.ends_with("attn2.to_k.weight") {
                        self.context_dim = shape.get(1).copied();
                    }
                    if let Some(rest) = name.split(".transformer_blocks.").nth(1)
                        && (net == Network::UnetLdm || net == Network::UnetDiffusers)
                        && let Some(d) = rest.split('.').next().and_then(|d| d.parse::<u64>().ok())
                    {
                        depth = depth.max(Some(d + 1));
                    }
                }
                self.transformer_depth = depth;
                return;
            }
        }
    }

    fn measure_vae(&mut self, keys: &Keys<'_>) {
        for p in VAE_PREFIXES {
            if let Some(s) = keys.get(&format!("{p}decoder.conv_in.weight"))
                && (keys.has(&format!("{p}encoder.conv_in.weight"))
                    || keys.has(&format!("{p}decoder.conv_out.weight")))
            {
                self.vae_prefix = Some(p.to_owned());
                self.vae_latent_channels = s.get(1).copied();
                self.vae_quant_conv = keys.has(&format!("{p}quant_conv.weight"))
                    || keys.has(&format!("{p}post_quant_conv.weight"));
                return;
            }
        }
    }

    fn measure_text_encoders(&mut self, keys: &Keys<'_>) {
        for (name, shape) in keys.iter() {
            let te = if let Some(p) = name.strip_suffix("embeddings.token_embedding.weight") {
                // HF transformers CLIPTextModel.
                let layers = keys
                    .count_indexed(&format!("{p}encoder.layers."))
                    .unwrap_or(0);
                shape
                    .get(1)
                    .map(|&w| (p, TextEncoderFamily::of_clip_width(w), w, layers))
            } else if let Some(p) = name.strip_suffix("token_embedding.weight") {
                // OpenCLIP text tower.
                let layers = keys
                    .count_indexed(&format!("{p}transformer.resblocks."))
                    .unwrap_or(0);
                shape
                    .get(1)
                    .map(|&w| (p, TextEncoderFamily::of_clip_width(w), w, layers))
            } else if let Some(p) =
                name.strip_suffix("encoder.block.0.layer.0.SelfAttention.q.weight")
            {
                let layers = keys
                    .count_indexed(&format!("{p}encoder.block."))
                    .unwrap_or(0);
                shape.get(1).map(|&w| (p, TextEncoderFamily::T5, w, layers))
            } else if let Some(p) = name.strip_suffix("enc.blk.0.attn_q.weight") {
                // llama.cpp naming of T5 encoders in GGUF files.
                let layers = keys.count_indexed(&format!("{p}enc.blk.")).unwrap_or(0);
                shape
                    .iter()
                    .max()
                    .map(|&w| (p, TextEncoderFamily::T5, w, layers))
            } else {
                None
            };
            if let Some((prefix, family, width, layers)) = te
                && !prefix.contains("lora")
            {
                self.text_encoders.push(TextEncoder {
                    prefix: prefix.to_owned(),
                    family,
                    width,
                    layers,
                });
            }
        }
    }

    fn detect_layout(&self, keys: &Keys<'_>) -> Option<Layout> {
        let controlnet = keys.has_prefix("control_model.")
            || keys.has("input_hint_block.0.weight")
            || keys.has_prefix("zero_convs.")
            || keys.has("controlnet_cond_embedding.conv_in.weight")
            || keys.has_prefix("controlnet_blocks.")
            || keys.has_prefix("controlnet_down_blocks.");
        // Order matters: every later structure's keys can appear inside an earlier one's.
        let layout = if self.lora.is_some() {
            Layout::Lora
        } else if self.embedding.is_some() {
            Layout::Embedding
        } else if self.hypernetwork_context.is_some() {
            Layout::Hypernetwork
        } else if self.ip_adapter_context.is_some() {
            Layout::IpAdapter
        } else if self.t2i_in_channels.is_some() {
            Layout::T2iAdapter
        } else if controlnet {
            Layout::Controlnet
        } else if self.network.is_some() {
            Layout::Network
        } else if self.vae_prefix.is_some() {
            Layout::Vae
        } else if self.vision_width.is_some() {
            Layout::ClipVision
        } else if !self.text_encoders.is_empty() {
            Layout::TextEncoder
        } else if self.upscaler.is_some() {
            Layout::Upscaler
        } else {
            return None;
        };
        Some(layout)
    }

    /// The widest text encoder, which names the family of a standalone encoder file.
    pub fn main_text_encoder(&self) -> Option<&TextEncoder> {
        self.text_encoders.iter().max_by_key(|t| t.width)
    }
}

/// Dominant float dtype by element count, and the number of float elements.
fn dominant_dtype(index: &TensorIndex) -> (Option<Dtype>, u64) {
    let mut by: BTreeMap<Dtype, u64> = BTreeMap::new();
    let mut total = 0u64;
    for t in &index.tensors {
        if t.dtype.is_float() {
            let n = t.numel();
            total = total.saturating_add(n);
            *by.entry(t.dtype).or_default() += n;
        }
    }
    let dominant = by
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)))
        .map(|(d, _)| d);
    (dominant, total)
}

/// Suffixes of LoRA/LyCORIS keys (kohya-ss sd-scripts `networks/lora.py`, LyCORIS
/// `lycoris/modules/*.py`, PEFT `tuners/lora/layer.py`, diffusers `LoRAAttnProcessor`).
/// cloneofsimo/lora (LoRA-PTI) safetensors use `unet:N:down` / `text_encoder:N:up`.
const LORA_SUFFIXES: [&str; 16] = [
    ".lora_down.weight",
    ".lora_up.weight",
    ".lora_A.weight",
    ".lora_B.weight",
    ".lora.down.weight",
    ".lora.up.weight",
    ".hada_w1_a",
    ".hada_w1_b",
    ".lokr_w1",
    ".lokr_w1_a",
    ".lokr_w2",
    ".on_input",
    ".dora_scale",
    ".lora_magnitude_vector",
    ":down",
    ":up",
];

fn measure_lora(keys: &Keys<'_>) -> Option<LoraPrint> {
    let mut modules: BTreeSet<&str> = BTreeSet::new();
    let has = |s: &str| keys.iter().any(|(k, _)| k.ends_with(s));
    let (dora, loha, lokr, ia3) = (
        has(".dora_scale") || has(".lora_magnitude_vector"),
        has(".hada_w1_a"),
        has(".lokr_w1") || has(".lokr_w1_a"),
        has(".on_input"),
    );
    let peft = has(".lora_A.weight") || has(".lora.down.weight") || has("_lora.down.weight");
    let mut conv3x3 = false;
    let mut down_of: Vec<(&str, &[u64])> = Vec::new();
    for (k, s) in keys.iter() {
        if let Some(suffix) = LORA_SUFFIXES.iter().find(|x| k.ends_with(*x)) {
            let module = &k[..k.len() - suffix.len()];
            modules.insert(module);
            if matches!(
                *suffix,
                ".lora_down.weight"
                    | ".lora_A.weight"
                    | ".lora.down.weight"
                    | ".hada_w1_b"
                    | ":down"
            ) {
                down_of.push((module, s));
                if *suffix == ".lora_down.weight" && s.len() == 4 && s[2] * s[3] > 1 {
                    conv3x3 = true;
                }
            }
        }
    }
    if modules.is_empty() {
        return None;
    }
    // Priority: the extra tensors of LyCORIS and DoRA are decisive; kohya pairs are the default.
    let subformat = if dora {
        Subformat::Dora
    } else if loha {
        Subformat::Loha
    } else if lokr {
        Subformat::Lokr
    } else if ia3 {
        Subformat::Ia3
    } else if peft {
        Subformat::Diffusers
    } else if conv3x3 {
        Subformat::Locon
    } else {
        Subformat::Lora
    };
    let any_name = |pats: &[&str]| modules.iter().any(|m| pats.iter().any(|p| m.contains(p)));
    let unet = any_name(&[
        "down_blocks",
        "up_blocks",
        "mid_block",
        "input_blocks",
        "output_blocks",
        "middle_block",
    ]);
    let blocks = if any_name(&["double_blocks", "single_blocks"]) {
        Some(LoraBlocks::DoubleSingle)
    } else if any_name(&["joint_blocks"]) {
        Some(LoraBlocks::Joint)
    } else if unet {
        Some(LoraBlocks::Unet)
    } else if any_name(&["transformer_blocks"]) {
        Some(LoraBlocks::DiffusersTransformer)
    } else if any_name(&["te_", "te1_", "te2_", "text_encoder", "text_model"]) {
        Some(LoraBlocks::TextOnly)
    } else {
        None
    };
    let first_in = |pred: &dyn Fn(&str) -> bool| {
        down_of
            .iter()
            .find(|(m, _)| pred(m))
            .and_then(|(_, s)| s.get(1).copied())
    };
    let is_te = |m: &str| {
        m.starts_with("lora_te_")
            || m.starts_with("lora_te1_")
            || m.starts_with("text_encoder.")
            || m.starts_with("text_encoder:")
            || m.starts_with("te1.")
    };
    let lora = LoraPrint {
        subformat,
        blocks,
        context_dim: first_in(&|m| m.contains("attn2_to_k") || m.contains("attn2.to_k")),
        transformer_width: first_in(&|m| {
            m.contains("transformer_blocks") && (m.contains("attn.to_k") || m.contains("attn_to_k"))
        }),
        te_width: first_in(&|m| {
            is_te(m)
                && (m.contains("q_proj")
                    || m.contains("mlp_fc1")
                    || m.contains("mlp.fc1")
                    || m.contains(':'))
        }),
        te2: modules
            .iter()
            .any(|m| m.starts_with("lora_te2_") || m.starts_with("text_encoder_2.")),
        sdxl_names: any_name(&[
            "input_blocks_4_1_transformer_blocks_1",
            "input_blocks.4.1.transformer_blocks.1",
            "down_blocks_1_attentions_0_transformer_blocks_1",
            "down_blocks.1.attentions.0.transformer_blocks.1",
            "label_emb",
            "add_embedding",
        ]),
        modules: modules.len(),
    };
    Some(lora)
}

fn measure_embedding(keys: &Keys<'_>, index: &TensorIndex) -> Option<EmbeddingPrint> {
    let vectors = |s: &[u64]| if s.len() >= 2 { s[0] } else { 1 };
    if let Some((_, s)) = keys.with_prefix("string_to_param.").next() {
        return Some(EmbeddingPrint {
            subformat: Subformat::A1111Pt,
            width: *s.last()?,
            vectors: vectors(s),
        });
    }
    if let (Some(l), Some(g)) = (keys.get("clip_l"), keys.get("clip_g")) {
        return Some(EmbeddingPrint {
            subformat: Subformat::SdxlPair,
            width: l.last()? + g.last()?,
            vectors: vectors(l),
        });
    }
    if let Some(s) = keys.get("emb_params") {
        return Some(EmbeddingPrint {
            subformat: Subformat::Safetensors,
            width: *s.last()?,
            vectors: vectors(s),
        });
    }
    // A single vector or matrix of a text-encoder width (diffusers `learned_embeds.bin`
    // `{"<token>": [768]}`). Pickles with other leaves than tensors (a step count, a name) count.
    if keys.map.len() == 1 {
        let (_, s) = keys.iter().next()?;
        let width = *s.last()?;
        if s.len() <= 2
            && matches!(width, 768 | 1024 | 1280)
            && !index.values.contains_key("layer_structure")
        {
            return Some(EmbeddingPrint {
                subformat: Subformat::Safetensors,
                width,
                vectors: vectors(s),
            });
        }
    }
    None
}

/// A1111 `hypernetwork.py` saves `{size: [module_k.state_dict(), module_v.state_dict()], …}`
/// with sizes 768 (or 1024), 320, 640, 1280, plus `layer_structure`, `activation_func`.
fn measure_hypernetwork(keys: &Keys<'_>, index: &TensorIndex) -> Option<u64> {
    let mut sizes: BTreeSet<u64> = BTreeSet::new();
    for (k, _) in keys.iter() {
        let mut parts = k.split('.');
        if let (Some(size), Some(_), Some("linear")) = (parts.next(), parts.next(), parts.next())
            && let Ok(size) = size.parse::<u64>()
        {
            sizes.insert(size);
        }
    }
    let marked = index.values.contains_key("layer_structure")
        || index.values.contains_key("activation_func");
    if sizes.is_empty() || (!marked && sizes.len() < 2) {
        return None;
    }
    // The context size is the one key that is not a UNet channel count.
    Some(
        sizes
            .iter()
            .copied()
            .find(|s| !matches!(s, 320 | 640 | 1280))
            .unwrap_or(0),
    )
}

fn measure_upscaler(keys: &Keys<'_>) -> Option<UpscalerArch> {
    if keys.has("model.0.weight") && keys.has_prefix("model.1.sub.") {
        Some(UpscalerArch::EsrganOld)
    } else if keys.has("conv_first.weight")
        && (keys.has_prefix("body.0.rdb1.") || keys.has_prefix("RRDB_trunk."))
    {
        Some(UpscalerArch::Esrgan)
    } else if keys.has_prefix("layers.0.residual_group.overlap_attn.")
        || keys.has_prefix("layers.0.residual_group.blocks.0.conv_block.")
    {
        Some(UpscalerArch::Hat)
    } else if keys.has_prefix("layers.0.residual_group.blocks.0.attn.") {
        Some(UpscalerArch::SwinIr)
    } else if keys.dim("body.0.weight", 1) == Some(3)
        && keys.get("body.1.weight").is_some_and(|s| s.len() == 1)
    {
        Some(UpscalerArch::Compact)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use danlu_format::{DataRef, TensorInfo};

    fn index(names: &[(&str, &[u64])]) -> TensorIndex {
        let mut index = TensorIndex::default();
        for (name, shape) in names {
            index.tensors.push(TensorInfo {
                name: (*name).to_owned(),
                dtype: Dtype::F16,
                shape: shape.to_vec(),
                data: DataRef {
                    file: 0,
                    offset: 0,
                    len: 0,
                    strides: None,
                    quant: None,
                },
            });
        }
        index.sort();
        index
    }

    #[test]
    fn state_dict_wrapper_is_stripped_and_reported() {
        let fp = Fingerprint::from_index(&index(&[
            (
                "state_dict.model.diffusion_model.input_blocks.0.0.weight",
                &[320, 9, 3, 3],
            ),
            (
                "state_dict.model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
                &[320, 768],
            ),
        ]));
        assert_eq!(fp.wrapper.as_deref(), Some("state_dict."));
        assert_eq!(fp.network, Some(Network::UnetLdm));
        assert_eq!(
            (fp.in_channels, fp.model_channels, fp.context_dim),
            (Some(9), Some(320), Some(768))
        );
        assert_eq!(fp.transformer_depth, Some(1));
        assert_eq!(fp.top_prefixes, vec![("model".to_owned(), 2)]);
    }

    #[test]
    fn params_ema_is_preferred_over_params() {
        let fp = Fingerprint::from_index(&index(&[
            ("params.conv_first.weight", &[64, 3, 3, 3]),
            ("params_ema.conv_first.weight", &[64, 3, 3, 3]),
        ]));
        assert_eq!(fp.wrapper.as_deref(), Some("params_ema."));
        assert_eq!(fp.tensors, 2);
    }

    #[test]
    fn lora_subformat_priority_puts_lycoris_markers_first() {
        let fp = Fingerprint::from_index(&index(&[
            ("lora_unet_a.lora_down.weight", &[4, 320]),
            ("lora_unet_a.lora_up.weight", &[320, 4]),
            ("lora_unet_a.dora_scale", &[1, 320]),
        ]));
        assert_eq!(fp.lora.map(|l| l.subformat), Some(Subformat::Dora));
        let fp =
            Fingerprint::from_index(&index(&[("lora_unet_a.lora_down.weight", &[4, 320, 3, 3])]));
        assert_eq!(fp.lora.map(|l| l.subformat), Some(Subformat::Locon));
        let fp =
            Fingerprint::from_index(&index(&[("lora_unet_a.lora_down.weight", &[4, 320, 1, 1])]));
        assert_eq!(fp.lora.map(|l| l.subformat), Some(Subformat::Lora));
    }
}
