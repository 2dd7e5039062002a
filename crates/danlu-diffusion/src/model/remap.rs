//! Original (LDM, A1111 single-file) tensor names to the diffusers names the networks ask for.
//!
//! The renaming is data: per network, a table of `(original prefix, diffusers prefix, rule)` rows
//! generated from the network's configuration (levels, resnets per level, which levels have
//! attention), plus small fixed tables for the names inside a resnet, a VAE attention block and
//! an OpenCLIP residual block. The rules follow diffusers'
//! `src/diffusers/loaders/single_file_utils.py` (`convert_ldm_unet_checkpoint`,
//! `convert_ldm_vae_checkpoint`, `convert_open_clip_checkpoint`), which mirror ldm's
//! `openaimodel.py` (`input_blocks`, `middle_block`, `output_blocks`) and `model.py` (`down`,
//! `mid`, `up`, counted from the bottom in the decoder).
//!
//! [`Remap::build`] applies a table to a [`TensorIndex`]: every tensor under the network's prefix
//! is either renamed (once; OpenCLIP's fused `in_proj` becomes three targets), listed as known to
//! be unused (`position_ids`, `text_projection`, `logit_scale`), or reported as unmapped.

use danlu_format::TensorIndex;
use std::collections::BTreeMap;

/// How a stored tensor becomes the tensor a network asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    /// Used as stored.
    Whole,
    /// Part `index` of `count` equal parts along the first dimension (OpenCLIP's fused
    /// `in_proj_weight`/`in_proj_bias` hold q, k and v in this order).
    Chunk {
        /// Which part, from 0.
        index: usize,
        /// How many parts.
        count: usize,
    },
    /// A 1x1 convolution kernel `[out, in, 1, 1]` used as a linear weight `[out, in]` (ldm's VAE
    /// attention uses convolutions where diffusers uses linear layers).
    DropUnitDims,
}

/// Where one network tensor comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Full name of the stored tensor.
    pub key: String,
    /// What to do with it.
    pub transform: Transform,
}

/// How the names below a table row's prefix are renamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Kept as they are.
    Same,
    /// ldm `ResBlock` names (`in_layers.0`, `emb_layers.1`, ...) to diffusers `ResnetBlock2D`.
    UnetResnet,
    /// ldm VAE `ResnetBlock` names (`nin_shortcut`) to diffusers `ResnetBlock2D`.
    VaeResnet,
    /// ldm VAE `AttnBlock` (`norm`, `q`, `k`, `v`, `proj_out`, 1x1 convolutions) to diffusers
    /// `Attention` (`group_norm`, `to_q`, ..., linear).
    VaeAttention,
    /// open_clip `ResidualAttentionBlock` to transformers `CLIPEncoderLayer`.
    OpenClipBlock,
}

/// One row of a renaming table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Prefix of the stored names (ends with `.` unless it names one tensor).
    pub from: String,
    /// Prefix of the network's names.
    pub to: String,
    /// How the rest of the name is renamed.
    pub rule: Rule,
}

fn row(from: impl Into<String>, to: impl Into<String>, rule: Rule) -> Row {
    Row {
        from: from.into(),
        to: to.into(),
        rule,
    }
}

/// The shape of a UNet as far as its tensor names are concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnetLayout {
    /// Number of resolution levels (`len(channel_mult)`; 4 for SD1 and SD2).
    pub levels: usize,
    /// Resnets per level on the way down (`num_res_blocks`; 2 for SD1 and SD2); the up path has
    /// one more.
    pub layers_per_block: usize,
    /// Whether each level has spatial transformers (ldm `attention_resolutions`; SD1 and SD2:
    /// the first three).
    pub attention: Vec<bool>,
}

/// The shape of a VAE as far as its tensor names are concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaeLayout {
    /// Number of resolution levels (`len(ch_mult)`; 4 for SD).
    pub levels: usize,
    /// Resnets per encoder level (`num_res_blocks`; 2 for SD); the decoder has one more.
    pub layers_per_block: usize,
}

/// Stored prefix of the UNet in single-file checkpoints.
pub const UNET_PREFIX: &str = "model.diffusion_model.";
/// Stored prefix of the VAE in single-file checkpoints.
pub const VAE_PREFIX: &str = "first_stage_model.";
/// Stored prefix of SD1's CLIP text model (ldm `FrozenCLIPEmbedder`).
pub const CLIP_PREFIX: &str = "cond_stage_model.transformer.";
/// Stored prefix of SD2's OpenCLIP text model (ldm `FrozenOpenCLIPEmbedder`).
pub const OPEN_CLIP_PREFIX: &str = "cond_stage_model.model.";

/// The UNet table, generated from its layout (ldm `openaimodel.py` numbering: `input_blocks.0`
/// is `conv_in`, then per level `layers_per_block` resnet slots and one downsample slot;
/// `output_blocks` run from the lowest level up with `layers_per_block + 1` slots each, the last
/// holding the upsampler after the attention when there is one).
pub fn unet_table(layout: &UnetLayout) -> Vec<Row> {
    let per = layout.layers_per_block;
    let levels = layout.levels;
    let mut rows = vec![
        row("time_embed.0.", "time_embedding.linear_1.", Rule::Same),
        row("time_embed.2.", "time_embedding.linear_2.", Rule::Same),
        row("input_blocks.0.0.", "conv_in.", Rule::Same),
        row("out.0.", "conv_norm_out.", Rule::Same),
        row("out.2.", "conv_out.", Rule::Same),
        row("middle_block.0.", "mid_block.resnets.0.", Rule::UnetResnet),
        row("middle_block.1.", "mid_block.attentions.0.", Rule::Same),
        row("middle_block.2.", "mid_block.resnets.1.", Rule::UnetResnet),
    ];
    for level in 0..levels {
        let attention = layout.attention.get(level).copied().unwrap_or(false);
        for j in 0..per {
            let n = 1 + level * (per + 1) + j;
            rows.push(row(
                format!("input_blocks.{n}.0."),
                format!("down_blocks.{level}.resnets.{j}."),
                Rule::UnetResnet,
            ));
            if attention {
                rows.push(row(
                    format!("input_blocks.{n}.1."),
                    format!("down_blocks.{level}.attentions.{j}."),
                    Rule::Same,
                ));
            }
        }
        if level + 1 < levels {
            rows.push(row(
                format!("input_blocks.{}.0.op.", (level + 1) * (per + 1)),
                format!("down_blocks.{level}.downsamplers.0.conv."),
                Rule::Same,
            ));
        }
    }
    for i in 0..levels {
        let level = levels - 1 - i;
        let attention = layout.attention.get(level).copied().unwrap_or(false);
        for j in 0..=per {
            let n = i * (per + 1) + j;
            rows.push(row(
                format!("output_blocks.{n}.0."),
                format!("up_blocks.{i}.resnets.{j}."),
                Rule::UnetResnet,
            ));
            if attention {
                rows.push(row(
                    format!("output_blocks.{n}.1."),
                    format!("up_blocks.{i}.attentions.{j}."),
                    Rule::Same,
                ));
            }
        }
        if i + 1 < levels {
            let slot = if attention { 2 } else { 1 };
            rows.push(row(
                format!("output_blocks.{}.{slot}.conv.", i * (per + 1) + per),
                format!("up_blocks.{i}.upsamplers.0.conv."),
                Rule::Same,
            ));
        }
    }
    rows
}

/// The VAE table, generated from its layout (ldm `model.py`: the decoder's `up.{k}` counts from
/// the lowest resolution, diffusers' `up_blocks.{i}` from the highest).
pub fn vae_table(layout: &VaeLayout) -> Vec<Row> {
    let levels = layout.levels;
    let mut rows = vec![
        row("quant_conv.", "quant_conv.", Rule::Same),
        row("post_quant_conv.", "post_quant_conv.", Rule::Same),
    ];
    for part in ["encoder", "decoder"] {
        rows.push(row(
            format!("{part}.conv_in."),
            format!("{part}.conv_in."),
            Rule::Same,
        ));
        rows.push(row(
            format!("{part}.conv_out."),
            format!("{part}.conv_out."),
            Rule::Same,
        ));
        rows.push(row(
            format!("{part}.norm_out."),
            format!("{part}.conv_norm_out."),
            Rule::Same,
        ));
        rows.push(row(
            format!("{part}.mid.block_1."),
            format!("{part}.mid_block.resnets.0."),
            Rule::VaeResnet,
        ));
        rows.push(row(
            format!("{part}.mid.block_2."),
            format!("{part}.mid_block.resnets.1."),
            Rule::VaeResnet,
        ));
        rows.push(row(
            format!("{part}.mid.attn_1."),
            format!("{part}.mid_block.attentions.0."),
            Rule::VaeAttention,
        ));
    }
    for level in 0..levels {
        for j in 0..layout.layers_per_block {
            rows.push(row(
                format!("encoder.down.{level}.block.{j}."),
                format!("encoder.down_blocks.{level}.resnets.{j}."),
                Rule::VaeResnet,
            ));
        }
        if level + 1 < levels {
            rows.push(row(
                format!("encoder.down.{level}.downsample.conv."),
                format!("encoder.down_blocks.{level}.downsamplers.0.conv."),
                Rule::Same,
            ));
        }
        let i = levels - 1 - level;
        for j in 0..=layout.layers_per_block {
            rows.push(row(
                format!("decoder.up.{level}.block.{j}."),
                format!("decoder.up_blocks.{i}.resnets.{j}."),
                Rule::VaeResnet,
            ));
        }
        if level > 0 {
            rows.push(row(
                format!("decoder.up.{level}.upsample.conv."),
                format!("decoder.up_blocks.{i}.upsamplers.0.conv."),
                Rule::Same,
            ));
        }
    }
    rows
}

/// SD1's text model: transformers names under ldm's prefix (older checkpoints omit the
/// `text_model.` level).
pub fn clip_table() -> Vec<Row> {
    vec![row("text_model.", "", Rule::Same), row("", "", Rule::Same)]
}

/// SD2's OpenCLIP text tower (open_clip `TextTransformer`) to transformers `CLIPTextModel`
/// names, for `layers` residual blocks.
pub fn open_clip_table(layers: usize) -> Vec<Row> {
    let mut rows = vec![
        row(
            "token_embedding.weight",
            "embeddings.token_embedding.weight",
            Rule::Same,
        ),
        row(
            "positional_embedding",
            "embeddings.position_embedding.weight",
            Rule::Same,
        ),
        row("ln_final.", "final_layer_norm.", Rule::Same),
    ];
    for i in 0..layers {
        rows.push(row(
            format!("transformer.resblocks.{i}."),
            format!("encoder.layers.{i}."),
            Rule::OpenClipBlock,
        ));
    }
    rows
}

/// Stored names that belong to a network's prefix but that no network reads: transformers'
/// `position_ids` buffer, OpenCLIP's projection to the joint image-text space and its logit
/// scale, and the causal mask some exports save.
pub const KNOWN_UNUSED: &[&str] = &[
    "embeddings.position_ids",
    "text_model.embeddings.position_ids",
    "text_projection",
    "logit_scale",
    "attn_mask",
];

const UNET_RESNET: &[(&str, &str)] = &[
    ("in_layers.0.", "norm1."),
    ("in_layers.2.", "conv1."),
    ("emb_layers.1.", "time_emb_proj."),
    ("out_layers.0.", "norm2."),
    ("out_layers.3.", "conv2."),
    ("skip_connection.", "conv_shortcut."),
];

const VAE_RESNET: &[(&str, &str)] = &[("nin_shortcut.", "conv_shortcut.")];

const VAE_ATTENTION: &[(&str, &str)] = &[
    ("norm.", "group_norm."),
    ("q.", "to_q."),
    ("k.", "to_k."),
    ("v.", "to_v."),
    ("proj_out.", "to_out.0."),
];

const OPEN_CLIP_BLOCK: &[(&str, &str)] = &[
    ("ln_1.", "layer_norm1."),
    ("ln_2.", "layer_norm2."),
    ("mlp.c_fc.", "mlp.fc1."),
    ("mlp.c_proj.", "mlp.fc2."),
    ("attn.out_proj.", "self_attn.out_proj."),
];

fn rename(rest: &str, table: &[(&str, &str)]) -> Option<String> {
    table
        .iter()
        .find_map(|(from, to)| rest.strip_prefix(from).map(|tail| format!("{to}{tail}")))
}

/// Targets of one stored tensor under a rule, `None` when the rule does not know the name.
fn targets(to: &str, rest: &str, rule: Rule) -> Option<Vec<(String, Transform)>> {
    let one = |name: String, transform| Some(vec![(format!("{to}{name}"), transform)]);
    match rule {
        Rule::Same => one(rest.to_string(), Transform::Whole),
        Rule::UnetResnet => one(rename(rest, UNET_RESNET)?, Transform::Whole),
        Rule::VaeResnet => {
            let name = rename(rest, VAE_RESNET).unwrap_or_else(|| rest.to_string());
            let known = ["norm1.", "conv1.", "norm2.", "conv2.", "conv_shortcut."];
            if known.iter().any(|k| name.starts_with(k)) {
                one(name, Transform::Whole)
            } else {
                None
            }
        }
        Rule::VaeAttention => {
            let name = rename(rest, VAE_ATTENTION)?;
            let transform = if name.ends_with(".weight") && !name.starts_with("group_norm.") {
                Transform::DropUnitDims
            } else {
                Transform::Whole
            };
            one(name, transform)
        }
        Rule::OpenClipBlock => {
            let fused = match rest {
                "attn.in_proj_weight" => Some("weight"),
                "attn.in_proj_bias" => Some("bias"),
                _ => None,
            };
            match fused {
                Some(leaf) => Some(
                    ["q_proj", "k_proj", "v_proj"]
                        .iter()
                        .enumerate()
                        .map(|(index, p)| {
                            (
                                format!("{to}self_attn.{p}.{leaf}"),
                                Transform::Chunk { index, count: 3 },
                            )
                        })
                        .collect(),
                ),
                None => one(rename(rest, OPEN_CLIP_BLOCK)?, Transform::Whole),
            }
        }
    }
}

/// The renaming of one network's tensors in one checkpoint.
#[derive(Debug, Clone, Default)]
pub struct Remap {
    /// Network name to stored tensor.
    pub targets: BTreeMap<String, Source>,
    /// Stored names under the prefix that no row matched (should be empty).
    pub unmapped: Vec<String>,
    /// Stored names under the prefix that are known not to be needed ([`KNOWN_UNUSED`]).
    pub ignored: Vec<String>,
    /// Network names that two stored tensors both claimed (should be empty).
    pub conflicts: Vec<String>,
}

impl Remap {
    /// Applies `rows` to every tensor of `index` whose name starts with `prefix`. The longest
    /// matching row wins, so `text_model.` takes precedence over the catch-all `""`.
    pub fn build(index: &TensorIndex, prefix: &str, rows: &[Row]) -> Self {
        let mut rows: Vec<&Row> = rows.iter().collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.from.len()));
        let mut remap = Remap::default();
        for info in &index.tensors {
            let Some(name) = info.name.strip_prefix(prefix) else {
                continue;
            };
            if KNOWN_UNUSED.contains(&name) {
                remap.ignored.push(info.name.clone());
                continue;
            }
            let found = rows.iter().find_map(|r| {
                let rest = if r.from.ends_with('.') || r.from.is_empty() {
                    name.strip_prefix(r.from.as_str())?
                } else if name == r.from {
                    ""
                } else {
                    return None;
                };
                targets(&r.to, rest, r.rule)
            });
            match found {
                None => remap.unmapped.push(info.name.clone()),
                Some(list) => {
                    for (target, transform) in list {
                        let source = Source {
                            key: info.name.clone(),
                            transform,
                        };
                        if remap.targets.insert(target.clone(), source).is_some() {
                            remap.conflicts.push(target);
                        }
                    }
                }
            }
        }
        remap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sd_unet() -> UnetLayout {
        UnetLayout {
            levels: 4,
            layers_per_block: 2,
            attention: vec![true, true, true, false],
        }
    }

    fn find<'a>(rows: &'a [Row], from: &str) -> Option<&'a Row> {
        rows.iter().find(|r| r.from == from)
    }

    #[test]
    fn unet_table_matches_known_sd_names() {
        // Names as they appear in SD1.5 and SD2.1 single-file checkpoints, with the diffusers
        // names from `unet/diffusion_pytorch_model.safetensors` of the same releases.
        let rows = unet_table(&sd_unet());
        let pairs = [
            ("input_blocks.1.1.", "down_blocks.0.attentions.0."),
            ("input_blocks.3.0.op.", "down_blocks.0.downsamplers.0.conv."),
            ("input_blocks.11.0.", "down_blocks.3.resnets.1."),
            ("output_blocks.2.1.conv.", "up_blocks.0.upsamplers.0.conv."),
            ("output_blocks.5.2.conv.", "up_blocks.1.upsamplers.0.conv."),
            ("output_blocks.11.1.", "up_blocks.3.attentions.2."),
        ];
        for (from, to) in pairs {
            assert_eq!(find(&rows, from).map(|r| r.to.as_str()), Some(to), "{from}");
        }
        assert!(find(&rows, "input_blocks.10.1.").is_none());
        assert!(find(&rows, "output_blocks.2.1.").is_none());
    }

    #[test]
    fn every_unet_row_is_distinct() {
        let rows = unet_table(&sd_unet());
        let mut from: Vec<_> = rows.iter().map(|r| &r.from).collect();
        let mut to: Vec<_> = rows.iter().map(|r| &r.to).collect();
        let n = rows.len();
        from.sort();
        from.dedup();
        to.sort();
        to.dedup();
        assert_eq!((from.len(), to.len()), (n, n));
    }

    #[test]
    fn vae_decoder_counts_from_the_bottom() {
        let rows = vae_table(&VaeLayout {
            levels: 4,
            layers_per_block: 2,
        });
        let to = |from: &str| find(&rows, from).map(|r| r.to.clone());
        assert_eq!(
            to("decoder.up.3.block.2."),
            Some("decoder.up_blocks.0.resnets.2.".into())
        );
        assert_eq!(
            to("decoder.up.1.upsample.conv."),
            Some("decoder.up_blocks.2.upsamplers.0.conv.".into())
        );
        assert_eq!(to("decoder.up.0.upsample.conv."), None);
        assert_eq!(to("encoder.down.3.downsample.conv."), None);
    }

    #[test]
    fn open_clip_in_proj_splits_in_q_k_v_order() {
        let t = targets(
            "encoder.layers.5.",
            "attn.in_proj_weight",
            Rule::OpenClipBlock,
        );
        let names: Vec<_> = t.unwrap_or_default();
        assert_eq!(
            names,
            vec![
                (
                    "encoder.layers.5.self_attn.q_proj.weight".to_string(),
                    Transform::Chunk { index: 0, count: 3 }
                ),
                (
                    "encoder.layers.5.self_attn.k_proj.weight".to_string(),
                    Transform::Chunk { index: 1, count: 3 }
                ),
                (
                    "encoder.layers.5.self_attn.v_proj.weight".to_string(),
                    Transform::Chunk { index: 2, count: 3 }
                ),
            ]
        );
    }

    #[test]
    fn unknown_names_are_reported_not_guessed() {
        assert_eq!(targets("x.", "in_layers.1.weight", Rule::UnetResnet), None);
        assert_eq!(targets("x.", "attn.foo", Rule::OpenClipBlock), None);
        assert_eq!(targets("x.", "gamma", Rule::VaeResnet), None);
    }
}
