//! Generators of key names and shapes, one function per family.

use super::FixtureTensor;
use danlu_types::Dtype;

/// Accumulates tensors with one default dtype.
struct Keys {
    out: Vec<FixtureTensor>,
    dtype: Dtype,
}

impl Keys {
    fn new(dtype: Dtype) -> Self {
        Keys {
            out: Vec::new(),
            dtype,
        }
    }
    fn t(&mut self, name: impl Into<String>, shape: &[u64]) {
        self.out.push(FixtureTensor {
            name: name.into(),
            dtype: self.dtype,
            shape: shape.to_vec(),
        });
    }
    fn typed(&mut self, name: impl Into<String>, dtype: Dtype, shape: &[u64]) {
        self.out.push(FixtureTensor {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
        });
    }
    /// `nn.Linear(i, o)`: `weight [o, i]`, `bias [o]`.
    fn lin(&mut self, p: &str, o: u64, i: u64) {
        self.t(format!("{p}.weight"), &[o, i]);
        self.t(format!("{p}.bias"), &[o]);
    }
    /// `nn.Linear(i, o, bias=False)`.
    fn lin_nb(&mut self, p: &str, o: u64, i: u64) {
        self.t(format!("{p}.weight"), &[o, i]);
    }
    /// `nn.Conv2d(i, o, k)`.
    fn conv(&mut self, p: &str, o: u64, i: u64, k: u64) {
        self.t(format!("{p}.weight"), &[o, i, k, k]);
        self.t(format!("{p}.bias"), &[o]);
    }
    /// GroupNorm / LayerNorm with affine weight and bias.
    fn norm(&mut self, p: &str, c: u64) {
        self.t(format!("{p}.weight"), &[c]);
        self.t(format!("{p}.bias"), &[c]);
    }
    fn done(self) -> Vec<FixtureTensor> {
        self.out
    }
}

// ---------------------------------------------------------------------------------------------
// UNets
// ---------------------------------------------------------------------------------------------

/// Hyper-parameters of a Stable Diffusion UNet, as in the `unet_config` of the LDM/SGM yaml files
/// (and ComfyUI `comfy/supported_models.py`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnetConfig {
    /// Channels of the first level (`model_channels`).
    pub model_channels: u64,
    /// Channel multiplier per level.
    pub channel_mult: Vec<u64>,
    /// Residual blocks per level on the input side (output side has one more).
    pub num_res_blocks: u64,
    /// Transformer blocks per spatial transformer, per level (0: no attention at that level).
    pub transformer_depth: Vec<u64>,
    /// Transformer blocks in the middle block.
    pub transformer_depth_middle: u64,
    /// Cross-attention context width.
    pub context_dim: u64,
    /// Input latent channels (4; 9 inpaint, 8 pix2pix, 5 depth).
    pub in_channels: u64,
    /// `adm_in_channels` of the SDXL `label_emb` (2816 base, 2560 refiner).
    pub adm_in_channels: Option<u64>,
    /// Linear (SD2, SDXL) or 1x1-conv (SD1) `proj_in`/`proj_out`.
    pub linear_proj: bool,
}

impl UnetConfig {
    /// SD1.x (`v1-inference.yaml`).
    pub fn sd1() -> Self {
        UnetConfig {
            model_channels: 320,
            channel_mult: vec![1, 2, 4, 4],
            num_res_blocks: 2,
            transformer_depth: vec![1, 1, 1, 0],
            transformer_depth_middle: 1,
            context_dim: 768,
            in_channels: 4,
            adm_in_channels: None,
            linear_proj: false,
        }
    }
    /// SD2.x (`v2-inference.yaml`).
    pub fn sd2() -> Self {
        UnetConfig {
            context_dim: 1024,
            linear_proj: true,
            ..Self::sd1()
        }
    }
    /// SDXL base (`sd_xl_base.yaml`).
    pub fn sdxl() -> Self {
        UnetConfig {
            model_channels: 320,
            channel_mult: vec![1, 2, 4],
            num_res_blocks: 2,
            transformer_depth: vec![0, 2, 10],
            transformer_depth_middle: 10,
            context_dim: 2048,
            in_channels: 4,
            adm_in_channels: Some(2816),
            linear_proj: true,
        }
    }
    /// SDXL refiner (`sd_xl_refiner.yaml`).
    pub fn sdxl_refiner() -> Self {
        UnetConfig {
            model_channels: 384,
            channel_mult: vec![1, 2, 4, 4],
            num_res_blocks: 2,
            transformer_depth: vec![0, 4, 4, 0],
            transformer_depth_middle: 4,
            context_dim: 1280,
            in_channels: 4,
            adm_in_channels: Some(2560),
            linear_proj: true,
        }
    }
}

fn ldm_resblock(k: &mut Keys, p: &str, cin: u64, cout: u64, emb: u64) {
    k.norm(&format!("{p}.in_layers.0"), cin);
    k.conv(&format!("{p}.in_layers.2"), cout, cin, 3);
    k.lin(&format!("{p}.emb_layers.1"), cout, emb);
    k.norm(&format!("{p}.out_layers.0"), cout);
    k.conv(&format!("{p}.out_layers.3"), cout, cout, 3);
    if cin != cout {
        k.conv(&format!("{p}.skip_connection"), cout, cin, 1);
    }
}

/// A `BasicTransformerBlock` (shared by the LDM and diffusers layouts).
fn transformer_block(k: &mut Keys, p: &str, ch: u64, ctx: u64) {
    for (attn, kv) in [("attn1", ch), ("attn2", ctx)] {
        k.lin_nb(&format!("{p}.{attn}.to_q"), ch, ch);
        k.lin_nb(&format!("{p}.{attn}.to_k"), ch, kv);
        k.lin_nb(&format!("{p}.{attn}.to_v"), ch, kv);
        k.lin(&format!("{p}.{attn}.to_out.0"), ch, ch);
    }
    k.lin(&format!("{p}.ff.net.0.proj"), ch * 8, ch);
    k.lin(&format!("{p}.ff.net.2"), ch, ch * 4);
    for n in ["norm1", "norm2", "norm3"] {
        k.norm(&format!("{p}.{n}"), ch);
    }
}

fn spatial_transformer(k: &mut Keys, p: &str, ch: u64, depth: u64, cfg: &UnetConfig) {
    k.norm(&format!("{p}.norm"), ch);
    for proj in ["proj_in", "proj_out"] {
        if cfg.linear_proj {
            k.lin(&format!("{p}.{proj}"), ch, ch);
        } else {
            k.conv(&format!("{p}.{proj}"), ch, ch, 1);
        }
    }
    for d in 0..depth {
        transformer_block(
            k,
            &format!("{p}.transformer_blocks.{d}"),
            ch,
            cfg.context_dim,
        );
    }
}

fn ldm_unet_into(k: &mut Keys, p: &str, cfg: &UnetConfig) {
    let mc = cfg.model_channels;
    let emb = mc * 4;
    k.lin(&format!("{p}time_embed.0"), emb, mc);
    k.lin(&format!("{p}time_embed.2"), emb, emb);
    if let Some(adm) = cfg.adm_in_channels {
        k.lin(&format!("{p}label_emb.0.0"), emb, adm);
        k.lin(&format!("{p}label_emb.0.2"), emb, emb);
    }
    k.conv(&format!("{p}input_blocks.0.0"), mc, cfg.in_channels, 3);
    let mut chans = vec![mc];
    let mut ch = mc;
    let mut idx = 1;
    let last = cfg.channel_mult.len() - 1;
    for (level, mult) in cfg.channel_mult.iter().enumerate() {
        let depth = cfg.transformer_depth.get(level).copied().unwrap_or(0);
        for _ in 0..cfg.num_res_blocks {
            ldm_resblock(k, &format!("{p}input_blocks.{idx}.0"), ch, mult * mc, emb);
            ch = mult * mc;
            if depth > 0 {
                spatial_transformer(k, &format!("{p}input_blocks.{idx}.1"), ch, depth, cfg);
            }
            chans.push(ch);
            idx += 1;
        }
        if level != last {
            k.conv(&format!("{p}input_blocks.{idx}.0.op"), ch, ch, 3);
            chans.push(ch);
            idx += 1;
        }
    }
    ldm_resblock(k, &format!("{p}middle_block.0"), ch, ch, emb);
    spatial_transformer(
        k,
        &format!("{p}middle_block.1"),
        ch,
        cfg.transformer_depth_middle,
        cfg,
    );
    ldm_resblock(k, &format!("{p}middle_block.2"), ch, ch, emb);
    let mut idx = 0;
    for (level, mult) in cfg.channel_mult.iter().enumerate().rev() {
        let depth = cfg.transformer_depth.get(level).copied().unwrap_or(0);
        for i in 0..=cfg.num_res_blocks {
            let ich = chans.pop().unwrap_or(mc);
            ldm_resblock(
                k,
                &format!("{p}output_blocks.{idx}.0"),
                ch + ich,
                mult * mc,
                emb,
            );
            ch = mult * mc;
            let mut sub = 1;
            if depth > 0 {
                spatial_transformer(k, &format!("{p}output_blocks.{idx}.1"), ch, depth, cfg);
                sub = 2;
            }
            if level > 0 && i == cfg.num_res_blocks {
                k.conv(&format!("{p}output_blocks.{idx}.{sub}.conv"), ch, ch, 3);
            }
            idx += 1;
        }
    }
    k.norm(&format!("{p}out.0"), mc);
    k.conv(&format!("{p}out.2"), 4, mc, 3);
}

/// An LDM/SGM UNet (`openaimodel.UNetModel` state dict) with every key prefixed by `prefix`
/// (`"model.diffusion_model."` in checkpoints, `""` for a bare UNet file).
pub fn ldm_unet(prefix: &str, cfg: &UnetConfig, dtype: Dtype) -> Vec<FixtureTensor> {
    let mut k = Keys::new(dtype);
    ldm_unet_into(&mut k, prefix, cfg);
    k.done()
}

fn diffusers_resnet(k: &mut Keys, p: &str, cin: u64, cout: u64, temb: u64) {
    k.norm(&format!("{p}.norm1"), cin);
    k.conv(&format!("{p}.conv1"), cout, cin, 3);
    k.lin(&format!("{p}.time_emb_proj"), cout, temb);
    k.norm(&format!("{p}.norm2"), cout);
    k.conv(&format!("{p}.conv2"), cout, cout, 3);
    if cin != cout {
        k.conv(&format!("{p}.conv_shortcut"), cout, cin, 1);
    }
}

/// The down and middle half of a diffusers UNet (shared with diffusers ControlNets); returns the
/// skip channels of every down-side output, in order.
fn diffusers_down_mid(k: &mut Keys, p: &str, cfg: &UnetConfig) -> (Vec<u64>, u64) {
    let mc = cfg.model_channels;
    let temb = mc * 4;
    k.conv(&format!("{p}conv_in"), mc, cfg.in_channels, 3);
    k.lin(&format!("{p}time_embedding.linear_1"), temb, mc);
    k.lin(&format!("{p}time_embedding.linear_2"), temb, temb);
    if let Some(adm) = cfg.adm_in_channels {
        k.lin(&format!("{p}add_embedding.linear_1"), temb, adm);
        k.lin(&format!("{p}add_embedding.linear_2"), temb, temb);
    }
    let mut chans = vec![mc];
    let mut ch = mc;
    let last = cfg.channel_mult.len() - 1;
    for (level, mult) in cfg.channel_mult.iter().enumerate() {
        let depth = cfg.transformer_depth.get(level).copied().unwrap_or(0);
        for r in 0..cfg.num_res_blocks {
            diffusers_resnet(
                k,
                &format!("{p}down_blocks.{level}.resnets.{r}"),
                ch,
                mult * mc,
                temb,
            );
            ch = mult * mc;
            if depth > 0 {
                spatial_transformer(
                    k,
                    &format!("{p}down_blocks.{level}.attentions.{r}"),
                    ch,
                    depth,
                    cfg,
                );
            }
            chans.push(ch);
        }
        if level != last {
            k.conv(
                &format!("{p}down_blocks.{level}.downsamplers.0.conv"),
                ch,
                ch,
                3,
            );
            chans.push(ch);
        }
    }
    diffusers_resnet(k, &format!("{p}mid_block.resnets.0"), ch, ch, temb);
    spatial_transformer(
        k,
        &format!("{p}mid_block.attentions.0"),
        ch,
        cfg.transformer_depth_middle,
        cfg,
    );
    diffusers_resnet(k, &format!("{p}mid_block.resnets.1"), ch, ch, temb);
    (chans, ch)
}

/// A diffusers `UNet2DConditionModel` state dict, keys prefixed by `prefix` (`"unet/"` in a
/// pipeline folder as `danlu-format` names them, `""` for a bare file).
pub fn diffusers_unet(prefix: &str, cfg: &UnetConfig, dtype: Dtype) -> Vec<FixtureTensor> {
    let mut k = Keys::new(dtype);
    let (mut chans, mut ch) = diffusers_down_mid(&mut k, prefix, cfg);
    let mc = cfg.model_channels;
    let temb = mc * 4;
    let levels = cfg.channel_mult.len();
    for (u, level) in (0..levels).rev().enumerate() {
        let mult = cfg.channel_mult[level];
        let depth = cfg.transformer_depth.get(level).copied().unwrap_or(0);
        for i in 0..=cfg.num_res_blocks {
            let ich = chans.pop().unwrap_or(mc);
            diffusers_resnet(
                &mut k,
                &format!("{prefix}up_blocks.{u}.resnets.{i}"),
                ch + ich,
                mult * mc,
                temb,
            );
            ch = mult * mc;
            if depth > 0 {
                spatial_transformer(
                    &mut k,
                    &format!("{prefix}up_blocks.{u}.attentions.{i}"),
                    ch,
                    depth,
                    cfg,
                );
            }
        }
        if level > 0 {
            k.conv(
                &format!("{prefix}up_blocks.{u}.upsamplers.0.conv"),
                ch,
                ch,
                3,
            );
        }
    }
    k.norm(&format!("{prefix}conv_norm_out"), mc);
    k.conv(&format!("{prefix}conv_out"), 4, mc, 3);
    k.done()
}

// ---------------------------------------------------------------------------------------------
// VAEs
// ---------------------------------------------------------------------------------------------

fn vae_resnet(k: &mut Keys, p: &str, cin: u64, cout: u64) {
    k.norm(&format!("{p}.norm1"), cin);
    k.conv(&format!("{p}.conv1"), cout, cin, 3);
    k.norm(&format!("{p}.norm2"), cout);
    k.conv(&format!("{p}.conv2"), cout, cout, 3);
    if cin != cout {
        k.conv(&format!("{p}.nin_shortcut"), cout, cin, 1);
    }
}

fn vae_mid(k: &mut Keys, p: &str) {
    vae_resnet(k, &format!("{p}.block_1"), 512, 512);
    k.norm(&format!("{p}.attn_1.norm"), 512);
    for n in ["q", "k", "v", "proj_out"] {
        k.conv(&format!("{p}.attn_1.{n}"), 512, 512, 1);
    }
    vae_resnet(k, &format!("{p}.block_2"), 512, 512);
}

/// An LDM `AutoencoderKL` (kl-f8, `ch 128, ch_mult [1,2,4,4]`) with `z_channels` latent channels
/// (4 for SD1/SD2/SDXL, 16 for SD3 and Flux). `quant_conv` adds `quant_conv`/`post_quant_conv`
/// (present in the 4-channel VAEs, absent in SD3's and Flux's).
pub fn ldm_vae(
    prefix: &str,
    z_channels: u64,
    quant_conv: bool,
    dtype: Dtype,
) -> Vec<FixtureTensor> {
    let mut k = Keys::new(dtype);
    let p = prefix;
    let mult = [1u64, 2, 4, 4];
    k.conv(&format!("{p}encoder.conv_in"), 128, 3, 3);
    let mut bin = 128;
    for (l, m) in mult.iter().enumerate() {
        let bout = 128 * m;
        for b in 0..2 {
            vae_resnet(&mut k, &format!("{p}encoder.down.{l}.block.{b}"), bin, bout);
            bin = bout;
        }
        if l != 3 {
            k.conv(&format!("{p}encoder.down.{l}.downsample.conv"), bin, bin, 3);
        }
    }
    vae_mid(&mut k, &format!("{p}encoder.mid"));
    k.norm(&format!("{p}encoder.norm_out"), 512);
    k.conv(&format!("{p}encoder.conv_out"), 2 * z_channels, 512, 3);
    if quant_conv {
        k.conv(&format!("{p}quant_conv"), 2 * z_channels, 2 * z_channels, 1);
        k.conv(&format!("{p}post_quant_conv"), z_channels, z_channels, 1);
    }
    k.conv(&format!("{p}decoder.conv_in"), 512, z_channels, 3);
    vae_mid(&mut k, &format!("{p}decoder.mid"));
    let mut bin = 512;
    for l in (0..4).rev() {
        let bout = 128 * mult[l];
        for b in 0..3 {
            vae_resnet(&mut k, &format!("{p}decoder.up.{l}.block.{b}"), bin, bout);
            bin = bout;
        }
        if l != 0 {
            k.conv(&format!("{p}decoder.up.{l}.upsample.conv"), bin, bin, 3);
        }
    }
    k.norm(&format!("{p}decoder.norm_out"), 128);
    k.conv(&format!("{p}decoder.conv_out"), 3, 128, 3);
    k.done()
}

/// A diffusers `AutoencoderKL` (`encoder.down_blocks`, `decoder.up_blocks`, `mid_block.attentions`);
/// `quant_conv` as in [`ldm_vae`] (`use_quant_conv` is false in the SD3 and Flux configs).
pub fn diffusers_vae(
    prefix: &str,
    z_channels: u64,
    quant_conv: bool,
    dtype: Dtype,
) -> Vec<FixtureTensor> {
    let mut k = Keys::new(dtype);
    let p = prefix;
    let mult = [1u64, 2, 4, 4];
    let resnet = |k: &mut Keys, p: &str, cin: u64, cout: u64| {
        k.norm(&format!("{p}.norm1"), cin);
        k.conv(&format!("{p}.conv1"), cout, cin, 3);
        k.norm(&format!("{p}.norm2"), cout);
        k.conv(&format!("{p}.conv2"), cout, cout, 3);
        if cin != cout {
            k.conv(&format!("{p}.conv_shortcut"), cout, cin, 1);
        }
    };
    let mid = |k: &mut Keys, p: &str| {
        resnet(k, &format!("{p}.resnets.0"), 512, 512);
        resnet(k, &format!("{p}.resnets.1"), 512, 512);
        k.norm(&format!("{p}.attentions.0.group_norm"), 512);
        for n in ["to_q", "to_k", "to_v", "to_out.0"] {
            k.lin(&format!("{p}.attentions.0.{n}"), 512, 512);
        }
    };
    k.conv(&format!("{p}encoder.conv_in"), 128, 3, 3);
    let mut bin = 128;
    for (l, m) in mult.iter().enumerate() {
        let bout = 128 * m;
        for b in 0..2 {
            resnet(
                &mut k,
                &format!("{p}encoder.down_blocks.{l}.resnets.{b}"),
                bin,
                bout,
            );
            bin = bout;
        }
        if l != 3 {
            k.conv(
                &format!("{p}encoder.down_blocks.{l}.downsamplers.0.conv"),
                bin,
                bin,
                3,
            );
        }
    }
    mid(&mut k, &format!("{p}encoder.mid_block"));
    k.norm(&format!("{p}encoder.conv_norm_out"), 512);
    k.conv(&format!("{p}encoder.conv_out"), 2 * z_channels, 512, 3);
    if quant_conv {
        k.conv(&format!("{p}quant_conv"), 2 * z_channels, 2 * z_channels, 1);
        k.conv(&format!("{p}post_quant_conv"), z_channels, z_channels, 1);
    }
    k.conv(&format!("{p}decoder.conv_in"), 512, z_channels, 3);
    mid(&mut k, &format!("{p}decoder.mid_block"));
    let mut bin = 512;
    for (u, l) in (0..4).rev().enumerate() {
        let bout = 128 * mult[l];
        for b in 0..3 {
            resnet(
                &mut k,
                &format!("{p}decoder.up_blocks.{u}.resnets.{b}"),
                bin,
                bout,
            );
            bin = bout;
        }
        if l != 0 {
            k.conv(
                &format!("{p}decoder.up_blocks.{u}.upsamplers.0.conv"),
                bin,
                bin,
                3,
            );
        }
    }
    k.norm(&format!("{p}decoder.conv_norm_out"), 128);
    k.conv(&format!("{p}decoder.conv_out"), 3, 128, 3);
    k.done()
}

// ---------------------------------------------------------------------------------------------
// Text encoders
// ---------------------------------------------------------------------------------------------

/// Shape of a CLIP text transformer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClipText {
    /// Hidden width (768 CLIP-L, 1024 OpenCLIP-H, 1280 OpenCLIP-bigG).
    pub width: u64,
    /// Transformer layers (12, 24, 32).
    pub layers: u64,
}

impl ClipText {
    /// OpenAI CLIP ViT-L/14 text model (SD1, SDXL `text_encoder`, SD3/Flux `clip_l`).
    pub const L: ClipText = ClipText {
        width: 768,
        layers: 12,
    };
    /// OpenCLIP ViT-H/14 text model (SD2).
    pub const H: ClipText = ClipText {
        width: 1024,
        layers: 24,
    };
    /// OpenCLIP ViT-bigG/14 text model (SDXL `text_encoder_2`, SD3 `clip_g`).
    pub const G: ClipText = ClipText {
        width: 1280,
        layers: 32,
    };
}

fn hf_clip_layers(k: &mut Keys, p: &str, w: u64, layers: u64) {
    for i in 0..layers {
        let l = format!("{p}encoder.layers.{i}");
        k.norm(&format!("{l}.layer_norm1"), w);
        k.norm(&format!("{l}.layer_norm2"), w);
        k.lin(&format!("{l}.mlp.fc1"), 4 * w, w);
        k.lin(&format!("{l}.mlp.fc2"), w, 4 * w);
        for n in ["k_proj", "q_proj", "v_proj", "out_proj"] {
            k.lin(&format!("{l}.self_attn.{n}"), w, w);
        }
    }
}

/// An HF transformers `CLIPTextModel` (keys `{prefix}text_model.…`); `position_ids` adds the int64
/// buffer older transformers saved; `projection` adds `text_projection.weight`
/// (`CLIPTextModelWithProjection`).
pub fn hf_clip_text(
    prefix: &str,
    shape: ClipText,
    position_ids: bool,
    projection: bool,
    dtype: Dtype,
) -> Vec<FixtureTensor> {
    let mut k = Keys::new(dtype);
    let w = shape.width;
    let p = format!("{prefix}text_model.");
    k.t(format!("{p}embeddings.position_embedding.weight"), &[77, w]);
    if position_ids {
        k.typed(format!("{p}embeddings.position_ids"), Dtype::I64, &[1, 77]);
    }
    k.t(format!("{p}embeddings.token_embedding.weight"), &[49408, w]);
    hf_clip_layers(&mut k, &p, w, shape.layers);
    k.norm(&format!("{p}final_layer_norm"), w);
    if projection {
        k.lin_nb(&format!("{prefix}text_projection"), w, w);
    }
    k.done()
}

/// An OpenCLIP text tower as SD2/SDXL checkpoints store it (`{prefix}transformer.resblocks.…`,
/// `positional_embedding`, `text_projection`).
pub fn open_clip_text(prefix: &str, shape: ClipText, dtype: Dtype) -> Vec<FixtureTensor> {
    let mut k = Keys::new(dtype);
    let w = shape.width;
    let p = prefix;
    k.t(format!("{p}positional_embedding"), &[77, w]);
    k.t(format!("{p}text_projection"), &[w, w]);
    k.t(format!("{p}token_embedding.weight"), &[49408, w]);
    k.norm(&format!("{p}ln_final"), w);
    k.t(format!("{p}logit_scale"), &[]);
    for i in 0..shape.layers {
        let l = format!("{p}transformer.resblocks.{i}");
        k.norm(&format!("{l}.ln_1"), w);
        k.norm(&format!("{l}.ln_2"), w);
        k.t(format!("{l}.attn.in_proj_weight"), &[3 * w, w]);
        k.t(format!("{l}.attn.in_proj_bias"), &[3 * w]);
        k.lin(&format!("{l}.attn.out_proj"), w, w);
        k.lin(&format!("{l}.mlp.c_fc"), 4 * w, w);
        k.lin(&format!("{l}.mlp.c_proj"), w, 4 * w);
    }
    k.done()
}

/// A T5 v1.1 XXL encoder (`T5EncoderModel`: `shared`, `encoder.block.N.layer.…`), 24 blocks,
/// width 4096, feed-forward 10240, 64 heads.
pub fn t5xxl_encoder(prefix: &str, dtype: Dtype) -> Vec<FixtureTensor> {
    let mut k = Keys::new(dtype);
    let p = prefix;
    let (d, ff) = (4096, 10240);
    k.t(format!("{p}shared.weight"), &[32128, d]);
    for i in 0..24 {
        let b = format!("{p}encoder.block.{i}.layer");
        for n in ["q", "k", "v", "o"] {
            k.lin_nb(&format!("{b}.0.SelfAttention.{n}"), d, d);
        }
        if i == 0 {
            k.t(
                format!("{b}.0.SelfAttention.relative_attention_bias.weight"),
                &[32, 64],
            );
        }
        k.t(format!("{b}.0.layer_norm.weight"), &[d]);
        k.lin_nb(&format!("{b}.1.DenseReluDense.wi_0"), ff, d);
        k.lin_nb(&format!("{b}.1.DenseReluDense.wi_1"), ff, d);
        k.lin_nb(&format!("{b}.1.DenseReluDense.wo"), d, ff);
        k.t(format!("{b}.1.layer_norm.weight"), &[d]);
    }
    k.t(format!("{p}encoder.final_layer_norm.weight"), &[d]);
    k.done()
}

// ---------------------------------------------------------------------------------------------
// Transformers (Flux, SD3)
// ---------------------------------------------------------------------------------------------

/// Options of a Flux.1 transformer (black-forest-labs `flux/model.py`, `FluxParams`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FluxConfig {
    /// `guidance_in` present (dev: guidance-distilled; schnell has none).
    pub guidance: bool,
    /// `img_in` input width: 64 (16 channels x 2x2 patches), 384 for Fill, 128 for Depth/Canny.
    pub in_channels: u64,
    /// Double-stream blocks (19).
    pub double_blocks: u64,
    /// Single-stream blocks (38).
    pub single_blocks: u64,
}

impl FluxConfig {
    /// FLUX.1-dev.
    pub const DEV: FluxConfig = FluxConfig {
        guidance: true,
        in_channels: 64,
        double_blocks: 19,
        single_blocks: 38,
    };
    /// FLUX.1-schnell.
    pub const SCHNELL: FluxConfig = FluxConfig {
        guidance: false,
        ..Self::DEV
    };
    /// FLUX.1-Fill-dev.
    pub const FILL: FluxConfig = FluxConfig {
        in_channels: 384,
        ..Self::DEV
    };
}

/// A Flux.1 transformer in BFL naming (`double_blocks`, `single_blocks`, `img_in`, …). Weights of
/// 2-D or larger shape take `dtype`; 1-D tensors (biases, norm scales) take `small_dtype` (for
/// GGUF files: `Quantized` weights and `F32` vectors).
pub fn flux_transformer(
    prefix: &str,
    cfg: &FluxConfig,
    dtype: Dtype,
    small_dtype: Dtype,
) -> Vec<FixtureTensor> {
    let mut k = Keys::new(dtype);
    let p = prefix;
    let h = 3072;
    k.lin(&format!("{p}img_in"), h, cfg.in_channels);
    k.lin(&format!("{p}txt_in"), h, 4096);
    k.lin(&format!("{p}time_in.in_layer"), h, 256);
    k.lin(&format!("{p}time_in.out_layer"), h, h);
    k.lin(&format!("{p}vector_in.in_layer"), h, 768);
    k.lin(&format!("{p}vector_in.out_layer"), h, h);
    if cfg.guidance {
        k.lin(&format!("{p}guidance_in.in_layer"), h, 256);
        k.lin(&format!("{p}guidance_in.out_layer"), h, h);
    }
    for i in 0..cfg.double_blocks {
        let b = format!("{p}double_blocks.{i}");
        for s in ["img", "txt"] {
            k.t(format!("{b}.{s}_attn.norm.key_norm.scale"), &[128]);
            k.t(format!("{b}.{s}_attn.norm.query_norm.scale"), &[128]);
            k.lin(&format!("{b}.{s}_attn.proj"), h, h);
            k.lin(&format!("{b}.{s}_attn.qkv"), 3 * h, h);
            k.lin(&format!("{b}.{s}_mlp.0"), 4 * h, h);
            k.lin(&format!("{b}.{s}_mlp.2"), h, 4 * h);
            k.lin(&format!("{b}.{s}_mod.lin"), 6 * h, h);
        }
    }
    for i in 0..cfg.single_blocks {
        let b = format!("{p}single_blocks.{i}");
        k.lin(&format!("{b}.linear1"), 7 * h, h);
        k.lin(&format!("{b}.linear2"), h, 5 * h);
        k.lin(&format!("{b}.modulation.lin"), 3 * h, h);
        k.t(format!("{b}.norm.key_norm.scale"), &[128]);
        k.t(format!("{b}.norm.query_norm.scale"), &[128]);
    }
    k.lin(&format!("{p}final_layer.adaLN_modulation.1"), 2 * h, h);
    k.lin(&format!("{p}final_layer.linear"), 64, h);
    let mut out = k.done();
    for t in &mut out {
        if t.shape.len() < 2 {
            t.dtype = small_dtype;
        }
    }
    out
}

/// A diffusers `FluxTransformer2DModel` (`x_embedder`, `transformer_blocks`,
/// `single_transformer_blocks`, `time_text_embed`), keys prefixed by `prefix` (`"transformer/"` in
/// a pipeline folder).
pub fn diffusers_flux_transformer(
    prefix: &str,
    cfg: &FluxConfig,
    dtype: Dtype,
) -> Vec<FixtureTensor> {
    let mut k = Keys::new(dtype);
    let p = prefix;
    let h = 3072;
    k.lin(&format!("{p}x_embedder"), h, cfg.in_channels);
    k.lin(&format!("{p}context_embedder"), h, 4096);
    let mut embedders = vec![("timestep_embedder", 256), ("text_embedder", 768)];
    if cfg.guidance {
        embedders.push(("guidance_embedder", 256));
    }
    for (e, i) in embedders {
        k.lin(&format!("{p}time_text_embed.{e}.linear_1"), h, i);
        k.lin(&format!("{p}time_text_embed.{e}.linear_2"), h, h);
    }
    for i in 0..cfg.double_blocks {
        let b = format!("{p}transformer_blocks.{i}");
        k.lin(&format!("{b}.norm1.linear"), 6 * h, h);
        k.lin(&format!("{b}.norm1_context.linear"), 6 * h, h);
        for n in [
            "to_q",
            "to_k",
            "to_v",
            "to_out.0",
            "add_q_proj",
            "add_k_proj",
            "add_v_proj",
            "to_add_out",
        ] {
            k.lin(&format!("{b}.attn.{n}"), h, h);
        }
        for n in ["norm_q", "norm_k", "norm_added_q", "norm_added_k"] {
            k.t(format!("{b}.attn.{n}.weight"), &[128]);
        }
        for ff in ["ff", "ff_context"] {
            k.lin(&format!("{b}.{ff}.net.0.proj"), 4 * h, h);
            k.lin(&format!("{b}.{ff}.net.2"), h, 4 * h);
        }
    }
    for i in 0..cfg.single_blocks {
        let b = format!("{p}single_transformer_blocks.{i}");
        k.lin(&format!("{b}.norm.linear"), 3 * h, h);
        k.lin(&format!("{b}.proj_mlp"), 4 * h, h);
        k.lin(&format!("{b}.proj_out"), h, 5 * h);
        for n in ["to_q", "to_k", "to_v"] {
            k.lin(&format!("{b}.attn.{n}"), h, h);
        }
        k.t(format!("{b}.attn.norm_q.weight"), &[128]);
        k.t(format!("{b}.attn.norm_k.weight"), &[128]);
    }
    k.lin(&format!("{p}norm_out.linear"), 2 * h, h);
    k.lin(&format!("{p}proj_out"), 64, h);
    k.done()
}

/// A diffusers Flux pipeline folder as `danlu-format` indexes it (`transformer/`, `vae/` without
/// `quant_conv`, `text_encoder/` CLIP-L, `text_encoder_2/` T5-XXL).
pub fn diffusers_flux_pipeline(cfg: &FluxConfig, dtype: Dtype) -> Vec<FixtureTensor> {
    let mut out = diffusers_flux_transformer("transformer/", cfg, dtype);
    out.extend(diffusers_vae("vae/", 16, false, dtype));
    out.extend(hf_clip_text(
        "text_encoder/",
        ClipText::L,
        false,
        false,
        dtype,
    ));
    out.extend(t5xxl_encoder("text_encoder_2/", dtype));
    out
}

/// An SD3 MMDiT in Stability naming (`joint_blocks`, `x_embedder`, `context_embedder`, …) with
/// `depth` joint blocks (24 for SD3 medium, 38 for SD3.5 large) and hidden width `64 * depth`.
pub fn sd3_mmdit(prefix: &str, depth: u64, dtype: Dtype) -> Vec<FixtureTensor> {
    let mut k = Keys::new(dtype);
    let p = prefix;
    let h = 64 * depth;
    k.t(format!("{p}pos_embed"), &[1, 36864, h]);
    k.conv(&format!("{p}x_embedder.proj"), h, 16, 2);
    k.lin(&format!("{p}context_embedder"), h, 4096);
    k.lin(&format!("{p}t_embedder.mlp.0"), h, 256);
    k.lin(&format!("{p}t_embedder.mlp.2"), h, h);
    k.lin(&format!("{p}y_embedder.mlp.0"), h, 2048);
    k.lin(&format!("{p}y_embedder.mlp.2"), h, h);
    for i in 0..depth {
        let last = i == depth - 1;
        for blk in ["context_block", "x_block"] {
            let b = format!("{p}joint_blocks.{i}.{blk}");
            let pre_only = last && blk == "context_block";
            k.lin(
                &format!("{b}.adaLN_modulation.1"),
                if pre_only { 2 * h } else { 6 * h },
                h,
            );
            k.lin(&format!("{b}.attn.qkv"), 3 * h, h);
            if !pre_only {
                k.lin(&format!("{b}.attn.proj"), h, h);
                k.lin(&format!("{b}.mlp.fc1"), 4 * h, h);
                k.lin(&format!("{b}.mlp.fc2"), h, 4 * h);
            }
        }
    }
    k.lin(&format!("{p}final_layer.adaLN_modulation.1"), 2 * h, h);
    k.lin(&format!("{p}final_layer.linear"), 64, h);
    k.done()
}

// ---------------------------------------------------------------------------------------------
// Checkpoints
// ---------------------------------------------------------------------------------------------

/// What a generated single-file checkpoint carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointOpts {
    /// Baked VAE (`first_stage_model.`).
    pub vae: bool,
    /// Text encoder(s).
    pub text_encoder: bool,
    /// EMA copy (`model_ema.`), SD1/SD2 only.
    pub ema: bool,
    /// LDM scheduler buffers (`alphas_cumprod`, `betas`, …), SD1/SD2/SDXL.
    pub schedule: bool,
    /// UNet input channels (4; 9 inpaint, 8 pix2pix, 5 depth).
    pub in_channels: u64,
    /// Dtype of the weights.
    pub dtype: Dtype,
}

impl Default for CheckpointOpts {
    fn default() -> Self {
        CheckpointOpts {
            vae: true,
            text_encoder: true,
            ema: false,
            schedule: false,
            in_channels: 4,
            dtype: Dtype::F16,
        }
    }
}

impl CheckpointOpts {
    /// Every optional part on (as the sd-mecha `sd1-ldm` listing has them), f32.
    pub fn full() -> Self {
        CheckpointOpts {
            ema: true,
            schedule: true,
            dtype: Dtype::F32,
            ..Self::default()
        }
    }
}

const SCHEDULE_BUFFERS: [&str; 12] = [
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "betas",
    "log_one_minus_alphas_cumprod",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "posterior_variance",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
];

fn ldm_checkpoint(
    cfg: UnetConfig,
    opts: &CheckpointOpts,
    te: impl FnOnce(Dtype) -> Vec<FixtureTensor>,
) -> Vec<FixtureTensor> {
    let cfg = UnetConfig {
        in_channels: opts.in_channels,
        ..cfg
    };
    let unet = ldm_unet("model.diffusion_model.", &cfg, opts.dtype);
    let mut out = Vec::new();
    if opts.ema {
        let mut k = Keys::new(opts.dtype);
        k.typed("model_ema.decay", Dtype::F32, &[]);
        k.typed("model_ema.num_updates", Dtype::I32, &[]);
        out.extend(k.done());
        // LDM `LitEma` registers buffers named after the parameters with the dots removed.
        out.extend(unet.iter().map(|t| FixtureTensor {
            name: format!(
                "model_ema.{}",
                t.name.trim_start_matches("model.").replace('.', "")
            ),
            ..t.clone()
        }));
    }
    out.extend(unet);
    if opts.vae {
        out.extend(ldm_vae("first_stage_model.", 4, true, opts.dtype));
    }
    if opts.text_encoder {
        out.extend(te(opts.dtype));
    }
    if opts.schedule {
        for b in SCHEDULE_BUFFERS {
            out.push(FixtureTensor {
                name: b.into(),
                dtype: Dtype::F32,
                shape: vec![1000],
            });
        }
    }
    out
}

/// An SD1.x single-file checkpoint (LDM layout, CLIP-L under `cond_stage_model.transformer.`).
pub fn sd1_checkpoint(opts: &CheckpointOpts) -> Vec<FixtureTensor> {
    ldm_checkpoint(UnetConfig::sd1(), opts, |d| {
        hf_clip_text("cond_stage_model.transformer.", ClipText::L, true, false, d)
    })
}

/// An SD2.x single-file checkpoint (OpenCLIP-H under `cond_stage_model.model.`).
pub fn sd2_checkpoint(opts: &CheckpointOpts) -> Vec<FixtureTensor> {
    ldm_checkpoint(UnetConfig::sd2(), opts, |d| {
        open_clip_text("cond_stage_model.model.", ClipText::H, d)
    })
}

/// An SDXL base single-file checkpoint (SGM layout: `conditioner.embedders.0` CLIP-L,
/// `conditioner.embedders.1` OpenCLIP-bigG). `ema` is ignored (SGM checkpoints carry none).
pub fn sdxl_checkpoint(opts: &CheckpointOpts) -> Vec<FixtureTensor> {
    let opts = CheckpointOpts {
        ema: false,
        ..opts.clone()
    };
    ldm_checkpoint(UnetConfig::sdxl(), &opts, |d| {
        let mut te = hf_clip_text(
            "conditioner.embedders.0.transformer.",
            ClipText::L,
            false,
            false,
            d,
        );
        te.extend(open_clip_text(
            "conditioner.embedders.1.model.",
            ClipText::G,
            d,
        ));
        te
    })
}

/// An SDXL refiner single-file checkpoint (OpenCLIP-bigG only, as `conditioner.embedders.0`).
pub fn sdxl_refiner_checkpoint(opts: &CheckpointOpts) -> Vec<FixtureTensor> {
    let opts = CheckpointOpts {
        ema: false,
        ..opts.clone()
    };
    ldm_checkpoint(UnetConfig::sdxl_refiner(), &opts, |d| {
        open_clip_text("conditioner.embedders.0.model.", ClipText::G, d)
    })
}

/// An SD3 medium checkpoint in ComfyUI single-file layout (`model.diffusion_model.joint_blocks`,
/// 16-channel `first_stage_model.`, `text_encoders.clip_l/clip_g/t5xxl` when `text_encoder`).
pub fn sd3_checkpoint(opts: &CheckpointOpts) -> Vec<FixtureTensor> {
    let mut out = sd3_mmdit("model.diffusion_model.", 24, opts.dtype);
    out.push(FixtureTensor {
        name: "model.model_sampling.sigmas".into(),
        dtype: Dtype::F32,
        shape: vec![1000],
    });
    if opts.vae {
        out.extend(ldm_vae("first_stage_model.", 16, false, opts.dtype));
    }
    if opts.text_encoder {
        out.extend(hf_clip_text(
            "text_encoders.clip_l.transformer.",
            ClipText::L,
            false,
            true,
            opts.dtype,
        ));
        out.extend(hf_clip_text(
            "text_encoders.clip_g.transformer.",
            ClipText::G,
            false,
            true,
            opts.dtype,
        ));
        out.extend(t5xxl_encoder(
            "text_encoders.t5xxl.transformer.",
            opts.dtype,
        ));
        for te in ["clip_g", "clip_l", "t5xxl"] {
            out.push(FixtureTensor {
                name: format!("text_encoders.{te}.logit_scale"),
                dtype: opts.dtype,
                shape: vec![],
            });
        }
    }
    out
}

/// A Flux.1 all-in-one checkpoint (ComfyUI layout: `model.diffusion_model.`, `vae.` 16-channel,
/// `text_encoders.clip_l` and `text_encoders.t5xxl`).
pub fn flux_checkpoint(cfg: &FluxConfig, opts: &CheckpointOpts) -> Vec<FixtureTensor> {
    let mut out = flux_transformer("model.diffusion_model.", cfg, opts.dtype, opts.dtype);
    if opts.vae {
        out.extend(ldm_vae("vae.", 16, false, opts.dtype));
    }
    if opts.text_encoder {
        out.extend(hf_clip_text(
            "text_encoders.clip_l.transformer.",
            ClipText::L,
            false,
            false,
            opts.dtype,
        ));
        out.extend(t5xxl_encoder(
            "text_encoders.t5xxl.transformer.",
            opts.dtype,
        ));
    }
    out
}

/// A diffusers pipeline folder as `danlu-format` indexes it (`unet/…`, `vae/…`, `text_encoder/…`,
/// `text_encoder_2/…` for SDXL).
pub fn diffusers_pipeline(cfg: &UnetConfig, dtype: Dtype) -> Vec<FixtureTensor> {
    let mut out = diffusers_unet("unet/", cfg, dtype);
    out.extend(diffusers_vae("vae/", 4, true, dtype));
    if cfg.context_dim == 2048 {
        out.extend(hf_clip_text(
            "text_encoder/",
            ClipText::L,
            false,
            false,
            dtype,
        ));
        out.extend(hf_clip_text(
            "text_encoder_2/",
            ClipText::G,
            false,
            true,
            dtype,
        ));
    } else if cfg.context_dim == 1024 {
        out.extend(hf_clip_text(
            "text_encoder/",
            ClipText::H,
            false,
            false,
            dtype,
        ));
    } else {
        out.extend(hf_clip_text(
            "text_encoder/",
            ClipText::L,
            false,
            false,
            dtype,
        ));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// LoRA and LyCORIS
// ---------------------------------------------------------------------------------------------

/// How a LoRA's keys are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoraStyle {
    /// kohya-ss sd-scripts: `lora_unet_…`/`lora_te_…` + `.lora_down.weight`, `.lora_up.weight`, `.alpha`
    /// (attention and projection layers only).
    Kohya,
    /// LyCORIS LoCon: kohya keys that also target the 3x3 convolutions of the ResNet blocks.
    Locon,
    /// LyCORIS LoHa: `.hada_w1_a`, `.hada_w1_b`, `.hada_w2_a`, `.hada_w2_b`, `.alpha`.
    Loha,
    /// LyCORIS LoKr: `.lokr_w1`, `.lokr_w2_a`, `.lokr_w2_b`, `.alpha`.
    Lokr,
    /// LyCORIS (IA)^3: `.weight` and `.on_input`.
    Ia3,
    /// kohya keys plus `.dora_scale` (DoRA).
    Dora,
    /// PEFT / diffusers: dotted names under `unet.`/`text_encoder.`/`transformer.` with
    /// `.lora_A.weight`, `.lora_B.weight`.
    Peft,
}

/// One layer a LoRA patches: its module path (dotted, as in the model) and weight shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoraTarget {
    /// Key prefix in kohya form (`lora_unet`, `lora_te1`, …).
    pub kohya_prefix: &'static str,
    /// Key prefix in PEFT/diffusers form (`unet`, `text_encoder`, `transformer`, …).
    pub peft_prefix: &'static str,
    /// The module path inside its model.
    pub module: String,
    /// Shape of the patched weight (`[out, in]` or `[out, in, kh, kw]`).
    pub shape: Vec<u64>,
}

fn is_attention_target(name: &str) -> bool {
    const ENDS: [&str; 12] = [
        "attn1.to_q.weight",
        "attn1.to_k.weight",
        "attn1.to_v.weight",
        "attn1.to_out.0.weight",
        "attn2.to_q.weight",
        "attn2.to_k.weight",
        "attn2.to_v.weight",
        "attn2.to_out.0.weight",
        "ff.net.0.proj.weight",
        "ff.net.2.weight",
        "proj_in.weight",
        "proj_out.weight",
    ];
    ENDS.iter().any(|e| name.ends_with(e))
}

fn is_resnet_conv(name: &str) -> bool {
    name.contains(".resnets.")
        && (name.ends_with(".conv1.weight") || name.ends_with(".conv2.weight"))
        || name.contains(".0.in_layers.2.weight")
        || name.contains(".0.out_layers.3.weight")
}

fn is_clip_target(name: &str) -> bool {
    [
        "self_attn.q_proj.weight",
        "self_attn.k_proj.weight",
        "self_attn.v_proj.weight",
        "self_attn.out_proj.weight",
        "mlp.fc1.weight",
        "mlp.fc2.weight",
    ]
    .iter()
    .any(|e| name.ends_with(e))
}

fn targets_from(
    tensors: Vec<FixtureTensor>,
    strip: &str,
    kohya_prefix: &'static str,
    peft_prefix: &'static str,
    keep: impl Fn(&str) -> bool,
) -> Vec<LoraTarget> {
    tensors
        .into_iter()
        .filter(|t| keep(&t.name))
        .map(|t| LoraTarget {
            kohya_prefix,
            peft_prefix,
            module: t
                .name
                .trim_start_matches(strip)
                .trim_end_matches(".weight")
                .to_owned(),
            shape: t.shape,
        })
        .collect()
}

/// The layers a UNet LoRA patches: attention and projection layers (and with `convs` the ResNet
/// 3x3 convs, as LoCon does), named the diffusers way (`diffusers_names`, as kohya names SD1/SD2)
/// or the LDM/SGM way (as kohya `sdxl_train_network` names SDXL).
pub fn unet_lora_targets(cfg: &UnetConfig, diffusers_names: bool, convs: bool) -> Vec<LoraTarget> {
    let unet = if diffusers_names {
        diffusers_unet("", cfg, Dtype::F16)
    } else {
        ldm_unet("", cfg, Dtype::F16)
    };
    targets_from(unet, "", "lora_unet", "unet", |n| {
        is_attention_target(n) || (convs && is_resnet_conv(n))
    })
}

/// The layers a LoRA patches in an HF CLIP text model of `shape` (attention and MLP linears).
pub fn text_encoder_lora_targets(
    shape: ClipText,
    kohya_prefix: &'static str,
    peft_prefix: &'static str,
) -> Vec<LoraTarget> {
    targets_from(
        hf_clip_text("", shape, false, false, Dtype::F16),
        "",
        kohya_prefix,
        peft_prefix,
        is_clip_target,
    )
}

/// The layers an SD1 LoRA patches: diffusers-named UNet attention layers (kohya sd-scripts names
/// SD1 UNet modules the diffusers way) and CLIP-L; with `convs`, the ResNet 3x3 convs too.
pub fn sd1_lora_targets(convs: bool) -> Vec<LoraTarget> {
    let mut out = unet_lora_targets(&UnetConfig::sd1(), true, convs);
    out.extend(text_encoder_lora_targets(
        ClipText::L,
        "lora_te",
        "text_encoder",
    ));
    out
}

/// The layers an SDXL LoRA patches: SGM-named UNet attention layers (kohya `sdxl_train_network`
/// keeps the original module names), CLIP-L as `te1`, OpenCLIP-bigG (HF naming) as `te2`.
pub fn sdxl_lora_targets(convs: bool) -> Vec<LoraTarget> {
    let mut out = unet_lora_targets(&UnetConfig::sdxl(), false, convs);
    out.extend(text_encoder_lora_targets(
        ClipText::L,
        "lora_te1",
        "text_encoder",
    ));
    out.extend(text_encoder_lora_targets(
        ClipText::G,
        "lora_te2",
        "text_encoder_2",
    ));
    out
}

/// The layers an SD3 LoRA patches in Stability naming (`joint_blocks.N.{x,context}_block.attn.qkv`…).
pub fn sd3_lora_targets() -> Vec<LoraTarget> {
    targets_from(
        sd3_mmdit("", 24, Dtype::F16),
        "",
        "lora_unet",
        "transformer",
        |n| n.starts_with("joint_blocks.") && n.ends_with(".weight") && !n.contains("adaLN"),
    )
}

/// The layers a LoRA patches in a diffusers DiT (`FluxTransformer2DModel` with `width` 3072,
/// `double` `transformer_blocks` and `single` `single_transformer_blocks`; or
/// `SD3Transformer2DModel` with width 1536 and no single blocks).
pub fn diffusers_transformer_lora_targets(width: u64, double: u64, single: u64) -> Vec<LoraTarget> {
    let mut out = Vec::new();
    let mut push = |module: String, shape: Vec<u64>| {
        out.push(LoraTarget {
            kohya_prefix: "lora_transformer",
            peft_prefix: "transformer",
            module,
            shape,
        })
    };
    for i in 0..double {
        for n in [
            "to_q",
            "to_k",
            "to_v",
            "to_out.0",
            "add_q_proj",
            "add_k_proj",
            "add_v_proj",
            "to_add_out",
        ] {
            push(
                format!("transformer_blocks.{i}.attn.{n}"),
                vec![width, width],
            );
        }
        push(
            format!("transformer_blocks.{i}.ff.net.0.proj"),
            vec![4 * width, width],
        );
        push(
            format!("transformer_blocks.{i}.ff.net.2"),
            vec![width, 4 * width],
        );
    }
    for i in 0..single {
        for n in ["to_q", "to_k", "to_v"] {
            push(
                format!("single_transformer_blocks.{i}.attn.{n}"),
                vec![width, width],
            );
        }
        push(
            format!("single_transformer_blocks.{i}.proj_mlp"),
            vec![4 * width, width],
        );
        push(
            format!("single_transformer_blocks.{i}.proj_out"),
            vec![width, 5 * width],
        );
    }
    out
}

/// The layers a Flux LoRA patches (BFL names: every linear of the double and single blocks).
pub fn flux_lora_targets() -> Vec<LoraTarget> {
    let t = flux_transformer("", &FluxConfig::DEV, Dtype::Bf16, Dtype::Bf16);
    targets_from(t, "", "lora_unet", "transformer", |n| {
        (n.starts_with("double_blocks.") || n.starts_with("single_blocks."))
            && n.ends_with(".weight")
            && !n.contains("norm")
    })
}

/// Writes LoRA keys for `targets` in `style` with `rank`.
pub fn lora(
    targets: &[LoraTarget],
    style: LoraStyle,
    rank: u64,
    dtype: Dtype,
) -> Vec<FixtureTensor> {
    let mut k = Keys::new(dtype);
    for t in targets {
        let out = t.shape.first().copied().unwrap_or(1);
        let inn = t.shape.get(1).copied().unwrap_or(1);
        let kernel: u64 = t.shape.iter().skip(2).product();
        let is_conv = t.shape.len() == 4;
        let kohya = format!("{}_{}", t.kohya_prefix, t.module.replace('.', "_"));
        let down_shape = if is_conv {
            vec![rank, inn, t.shape[2], t.shape[3]]
        } else {
            vec![rank, inn]
        };
        let up_shape = if is_conv {
            vec![out, rank, 1, 1]
        } else {
            vec![out, rank]
        };
        match style {
            LoraStyle::Kohya | LoraStyle::Locon | LoraStyle::Dora => {
                k.t(format!("{kohya}.lora_down.weight"), &down_shape);
                k.t(format!("{kohya}.lora_up.weight"), &up_shape);
                k.t(format!("{kohya}.alpha"), &[]);
                if style == LoraStyle::Dora {
                    k.t(format!("{kohya}.dora_scale"), &[1, inn * kernel.max(1)]);
                }
            }
            LoraStyle::Loha => {
                k.t(format!("{kohya}.hada_w1_a"), &[out, rank]);
                k.t(format!("{kohya}.hada_w1_b"), &[rank, inn * kernel.max(1)]);
                k.t(format!("{kohya}.hada_w2_a"), &[out, rank]);
                k.t(format!("{kohya}.hada_w2_b"), &[rank, inn * kernel.max(1)]);
                k.t(format!("{kohya}.alpha"), &[]);
            }
            LoraStyle::Lokr => {
                let f = if out % 4 == 0 && inn % 4 == 0 { 4 } else { 1 };
                k.t(format!("{kohya}.lokr_w1"), &[f, f]);
                k.t(format!("{kohya}.lokr_w2_a"), &[out / f, rank]);
                k.t(
                    format!("{kohya}.lokr_w2_b"),
                    &[rank, inn / f * kernel.max(1)],
                );
                k.t(format!("{kohya}.alpha"), &[]);
            }
            LoraStyle::Ia3 => {
                k.t(format!("{kohya}.weight"), &[out]);
                k.typed(format!("{kohya}.on_input"), Dtype::Bool, &[]);
            }
            LoraStyle::Peft => {
                let p = format!("{}.{}", t.peft_prefix, t.module);
                k.t(format!("{p}.lora_A.weight"), &down_shape);
                k.t(format!("{p}.lora_B.weight"), &up_shape);
            }
        }
    }
    k.done()
}

/// An SD1 LoRA in `style` (LoCon adds the ResNet convs).
pub fn sd1_lora(style: LoraStyle, rank: u64) -> Vec<FixtureTensor> {
    lora(
        &sd1_lora_targets(style == LoraStyle::Locon),
        style,
        rank,
        Dtype::F16,
    )
}

/// An SDXL LoRA in `style` (LoCon adds the ResNet convs).
pub fn sdxl_lora(style: LoraStyle, rank: u64) -> Vec<FixtureTensor> {
    lora(
        &sdxl_lora_targets(style == LoraStyle::Locon),
        style,
        rank,
        Dtype::Bf16,
    )
}

/// A Flux LoRA in `style` (kohya `lora_unet_double_blocks_…`, or PEFT `transformer.double_blocks…`).
pub fn flux_lora(style: LoraStyle, rank: u64) -> Vec<FixtureTensor> {
    lora(&flux_lora_targets(), style, rank, Dtype::Bf16)
}

// ---------------------------------------------------------------------------------------------
// Embeddings, hypernetworks
// ---------------------------------------------------------------------------------------------

/// The tensors of an A1111 textual-inversion `.pt` (`string_to_param.*`, A1111
/// `modules/textual_inversion/textual_inversion.py`); the pickle's other leaves (`name`, `step`,
/// `string_to_token`) are values, not tensors.
pub fn a1111_embedding(vectors: u64, width: u64) -> Vec<FixtureTensor> {
    vec![FixtureTensor {
        name: "string_to_param.*".into(),
        dtype: Dtype::F32,
        shape: vec![vectors, width],
    }]
}

/// A safetensors textual inversion (`emb_params [n, width]`, A1111's safetensors save format).
pub fn safetensors_embedding(vectors: u64, width: u64) -> Vec<FixtureTensor> {
    vec![FixtureTensor {
        name: "emb_params".into(),
        dtype: Dtype::F32,
        shape: vec![vectors, width],
    }]
}

/// An SDXL embedding pair (`clip_l [n, 768]`, `clip_g [n, 1280]`).
pub fn sdxl_embedding(vectors: u64) -> Vec<FixtureTensor> {
    vec![
        FixtureTensor {
            name: "clip_g".into(),
            dtype: Dtype::F32,
            shape: vec![vectors, 1280],
        },
        FixtureTensor {
            name: "clip_l".into(),
            dtype: Dtype::F32,
            shape: vec![vectors, 768],
        },
    ]
}

/// The tensors of an A1111 hypernetwork `.pt` (A1111 `modules/hypernetworks/hypernetwork.py`):
/// for each size in `dims` a pair of `HypernetworkModule`s (`{dim}.0` for k, `{dim}.1` for v),
/// each a stack of linear layers following `layer_structure` (e.g. `[1, 2, 1]`).
pub fn hypernetwork(dims: &[u64], layer_structure: &[u64]) -> Vec<FixtureTensor> {
    let mut k = Keys::new(Dtype::F32);
    for d in dims {
        for kv in 0..2 {
            for (j, pair) in layer_structure.windows(2).enumerate() {
                k.lin(&format!("{d}.{kv}.linear.{j}"), d * pair[1], d * pair[0]);
            }
        }
    }
    k.done()
}

// ---------------------------------------------------------------------------------------------
// ControlNet, T2I-Adapter, IP-Adapter, CLIP vision
// ---------------------------------------------------------------------------------------------

/// An LDM ControlNet (lllyasviel `cldm/cldm.py` `ControlNet`, saved under `control_model.`):
/// the UNet's input half, `input_hint_block`, `zero_convs`, `middle_block_out`.
pub fn ldm_controlnet(cfg: &UnetConfig, dtype: Dtype) -> Vec<FixtureTensor> {
    let p = "control_model.";
    let mut all = Keys::new(dtype);
    ldm_unet_into(&mut all, p, cfg);
    let mut k = Keys::new(dtype);
    k.out = all
        .done()
        .into_iter()
        .filter(|t| !t.name.contains("output_blocks.") && !t.name.starts_with("control_model.out."))
        .collect();
    let hint = [
        (16, 3),
        (16, 16),
        (32, 16),
        (32, 32),
        (96, 32),
        (96, 96),
        (256, 96),
        (cfg.model_channels, 256),
    ];
    for (i, (o, inn)) in hint.iter().enumerate() {
        k.conv(&format!("{p}input_hint_block.{}", i * 2), *o, *inn, 3);
    }
    let mut chans = vec![cfg.model_channels];
    for (level, mult) in cfg.channel_mult.iter().enumerate() {
        for _ in 0..cfg.num_res_blocks {
            chans.push(mult * cfg.model_channels);
        }
        if level + 1 != cfg.channel_mult.len() {
            chans.push(mult * cfg.model_channels);
        }
    }
    for (i, c) in chans.iter().enumerate() {
        k.conv(&format!("{p}zero_convs.{i}.0"), *c, *c, 1);
    }
    let mid = cfg.model_channels * cfg.channel_mult.last().copied().unwrap_or(1);
    k.conv(&format!("{p}middle_block_out.0"), mid, mid, 1);
    k.done()
}

/// A diffusers `ControlNetModel` (`controlnet_cond_embedding`, `controlnet_down_blocks`,
/// `controlnet_mid_block` and the UNet's down and middle blocks).
pub fn diffusers_controlnet(cfg: &UnetConfig, dtype: Dtype) -> Vec<FixtureTensor> {
    let mut k = Keys::new(dtype);
    let (chans, ch) = diffusers_down_mid(&mut k, "", cfg);
    let p = "controlnet_cond_embedding";
    k.conv(&format!("{p}.conv_in"), 16, 3, 3);
    let blocks = [(16, 16), (32, 16), (32, 32), (96, 32), (96, 96), (256, 96)];
    for (i, (o, inn)) in blocks.iter().enumerate() {
        k.conv(&format!("{p}.blocks.{i}"), *o, *inn, 3);
    }
    k.conv(&format!("{p}.conv_out"), cfg.model_channels, 256, 3);
    for (i, c) in chans.iter().enumerate() {
        k.conv(&format!("controlnet_down_blocks.{i}"), *c, *c, 1);
    }
    k.conv("controlnet_mid_block", ch, ch, 1);
    k.done()
}

/// A TencentARC T2I-Adapter (`Adapter` of `ldm/modules/encoders/adapter.py`): `conv_in` over the
/// pixel-unshuffled image (`cin` = 3 x 64 = 192 for SD1 colour inputs, 64 for one-channel
/// sketches, 3 x 256 = 768 for SDXL) and `body.N` residual blocks over `[320, 640, 1280, 1280]`.
pub fn t2i_adapter(cin: u64, dtype: Dtype) -> Vec<FixtureTensor> {
    let mut k = Keys::new(dtype);
    let chans = [320u64, 640, 1280, 1280];
    k.conv("conv_in", 320, cin, 3);
    let mut prev = 320;
    for (i, c) in chans.iter().enumerate() {
        for r in 0..2 {
            let b = format!("body.{}", i * 2 + r);
            if r == 0 && prev != *c {
                k.conv(&format!("{b}.in_conv"), *c, prev, 1);
            }
            k.conv(&format!("{b}.block1"), *c, *c, 3);
            k.conv(&format!("{b}.block2"), *c, *c, 1);
        }
        prev = *c;
    }
    k.done()
}

/// An IP-Adapter (tencent-ailab `ip_adapter`): `image_proj` (linear projection of a CLIP image
/// embedding of `clip_dim` into 4 tokens) and `ip_adapter.N.to_k_ip/to_v_ip` for every
/// cross-attention layer of the UNet `cfg`.
pub fn ip_adapter(cfg: &UnetConfig, clip_dim: u64, dtype: Dtype) -> Vec<FixtureTensor> {
    let mut k = Keys::new(dtype);
    let ctx = cfg.context_dim;
    k.lin("image_proj.proj", 4 * ctx, clip_dim);
    k.norm("image_proj.norm", ctx);
    // One attention processor per attn1 and attn2, in diffusers order; the odd ones are attn2.
    // diffusers registers processors down blocks first, then up blocks, then the middle block.
    let mut unet = diffusers_unet("", cfg, dtype);
    unet.sort_by_key(|t| match t.name.split('.').next() {
        Some("down_blocks") => 0,
        Some("up_blocks") => 1,
        _ => 2,
    });
    let attentions = unet
        .iter()
        .filter(|t| t.name.ends_with("to_k.weight") && t.name.contains(".attn"));
    for (n, t) in attentions.enumerate() {
        if t.name.contains("attn2") {
            let ch = t.shape[0];
            k.lin_nb(&format!("ip_adapter.{n}.to_k_ip"), ch, ctx);
            k.lin_nb(&format!("ip_adapter.{n}.to_v_ip"), ch, ctx);
        }
    }
    k.done()
}

/// An HF `CLIPVisionModelWithProjection` (`vision_model.…`, `visual_projection`): ViT-H/14 is
/// `(1280, 32, 1024)`, ViT-L/14 `(1024, 24, 768)`, ViT-bigG/14 `(1664, 48, 1280)`.
pub fn clip_vision(width: u64, layers: u64, projection: u64, dtype: Dtype) -> Vec<FixtureTensor> {
    let mut k = Keys::new(dtype);
    let p = "vision_model.";
    k.t(format!("{p}embeddings.class_embedding"), &[width]);
    k.t(
        format!("{p}embeddings.patch_embedding.weight"),
        &[width, 3, 14, 14],
    );
    k.t(
        format!("{p}embeddings.position_embedding.weight"),
        &[257, width],
    );
    k.typed(format!("{p}embeddings.position_ids"), Dtype::I64, &[1, 257]);
    k.norm(&format!("{p}pre_layrnorm"), width);
    hf_clip_layers(&mut k, p, width, layers);
    k.norm(&format!("{p}post_layernorm"), width);
    k.lin_nb("visual_projection", projection, width);
    k.done()
}

// ---------------------------------------------------------------------------------------------
// Upscalers
// ---------------------------------------------------------------------------------------------

/// Upscaler architectures with generators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpscalerArch {
    /// ESRGAN in its original layout (`model.0.weight`, `model.1.sub.N.RDB1.conv1.0.weight`).
    EsrganOld,
    /// ESRGAN / Real-ESRGAN `RRDBNet` in BasicSR naming (`conv_first`, `body.N.rdb1.conv1`).
    Rrdb,
    /// Real-ESRGAN `SRVGGNetCompact` (`body.N.weight`, PReLU between convs).
    Compact,
    /// SwinIR (`layers.N.residual_group.blocks.M.attn…`).
    SwinIr,
}

/// The state dict of an upscaler (x4, 64 features, 23 RRDB blocks / 16 compact convs / 4x6 Swin
/// blocks of width 180).
pub fn upscaler(arch: UpscalerArch) -> Vec<FixtureTensor> {
    let mut k = Keys::new(Dtype::F32);
    match arch {
        UpscalerArch::EsrganOld => {
            k.conv("model.0", 64, 3, 3);
            for i in 0..23 {
                for r in 1..=3 {
                    for (c, inn) in [(1, 64), (2, 96), (3, 128), (4, 160), (5, 192)] {
                        let o = if c == 5 { 64 } else { 32 };
                        k.conv(&format!("model.1.sub.{i}.RDB{r}.conv{c}.0"), o, inn, 3);
                    }
                }
            }
            k.conv("model.1.sub.23", 64, 64, 3);
            for i in [3, 6, 8, 10] {
                let o = if i == 10 { 3 } else { 64 };
                k.conv(&format!("model.{i}"), o, 64, 3);
            }
        }
        UpscalerArch::Rrdb => {
            k.conv("conv_first", 64, 3, 3);
            for i in 0..23 {
                for r in 1..=3 {
                    for (c, inn) in [(1, 64), (2, 96), (3, 128), (4, 160), (5, 192)] {
                        let o = if c == 5 { 64 } else { 32 };
                        k.conv(&format!("body.{i}.rdb{r}.conv{c}"), o, inn, 3);
                    }
                }
            }
            for n in ["conv_body", "conv_up1", "conv_up2", "conv_hr"] {
                k.conv(n, 64, 64, 3);
            }
            k.conv("conv_last", 3, 64, 3);
        }
        UpscalerArch::Compact => {
            k.conv("body.0", 64, 3, 3);
            k.t("body.1.weight", &[64]);
            for i in 0..16 {
                k.conv(&format!("body.{}", 2 + 2 * i), 64, 64, 3);
                k.t(format!("body.{}.weight", 3 + 2 * i), &[64]);
            }
            k.conv("body.34", 48, 64, 3);
        }
        UpscalerArch::SwinIr => {
            let c = 180;
            k.conv("conv_first", c, 3, 3);
            k.norm("patch_embed.norm", c);
            for i in 0..4 {
                for j in 0..6 {
                    let b = format!("layers.{i}.residual_group.blocks.{j}");
                    k.norm(&format!("{b}.norm1"), c);
                    k.t(format!("{b}.attn.relative_position_bias_table"), &[225, 6]);
                    k.typed(
                        format!("{b}.attn.relative_position_index"),
                        Dtype::I64,
                        &[64, 64],
                    );
                    k.lin(&format!("{b}.attn.qkv"), 3 * c, c);
                    k.lin(&format!("{b}.attn.proj"), c, c);
                    k.norm(&format!("{b}.norm2"), c);
                    k.lin(&format!("{b}.mlp.fc1"), 2 * c, c);
                    k.lin(&format!("{b}.mlp.fc2"), c, 2 * c);
                }
                k.conv(&format!("layers.{i}.conv"), c, c, 3);
            }
            k.norm("norm", c);
            k.conv("conv_after_body", c, c, 3);
            k.conv("conv_before_upsample.0", 64, c, 3);
            k.conv("upsample.0", 256, 64, 3);
            k.conv("upsample.2", 256, 64, 3);
            k.conv("conv_last", 3, 64, 3);
        }
    }
    k.done()
}

/// Renames every tensor with `prefix` in front (e.g. `"state_dict."` as a pickled checkpoint
/// flattens, or `"params_ema."` as BasicSR saves upscalers).
pub fn prefixed(prefix: &str, tensors: Vec<FixtureTensor>) -> Vec<FixtureTensor> {
    tensors
        .into_iter()
        .map(|t| FixtureTensor {
            name: format!("{prefix}{}", t.name),
            ..t
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus;
    use std::collections::{BTreeMap, BTreeSet};

    type Listing = BTreeMap<String, Vec<u64>>;

    /// sd-mecha model configs: `components: {name: {key: {shape: [...], optional: bool}}}`.
    fn sdmecha(name: &str) -> (Listing, Listing) {
        let text = std::fs::read_to_string(corpus::path(&format!("models/keys/{name}"))).unwrap();
        let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let (mut all, mut required) = (Listing::new(), Listing::new());
        for (_, keys) in doc["components"].as_mapping().unwrap() {
            for (k, v) in keys.as_mapping().unwrap() {
                let shape: Vec<u64> = v["shape"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap())
                    .collect();
                let k = k.as_str().unwrap().to_owned();
                if v["optional"].as_bool() != Some(true) {
                    required.insert(k.clone(), shape.clone());
                }
                all.insert(k, shape);
            }
        }
        (all, required)
    }

    /// InvokeAI stripped state dicts: `{key: {"shape": [...], ...}}`.
    fn invokeai(name: &str) -> Listing {
        let text = std::fs::read_to_string(corpus::path(&format!("models/keys/{name}"))).unwrap();
        let doc: BTreeMap<String, serde_json::Value> = serde_json::from_str(&text).unwrap();
        doc.into_iter()
            .filter_map(|(k, v)| {
                let shape = v
                    .get("shape")?
                    .as_array()?
                    .iter()
                    .map(|d| d.as_u64().unwrap())
                    .collect();
                Some((k, shape))
            })
            .collect()
    }

    fn listing(tensors: &[FixtureTensor]) -> Listing {
        let l: Listing = tensors
            .iter()
            .map(|t| (t.name.clone(), t.shape.clone()))
            .collect();
        assert_eq!(l.len(), tensors.len(), "generator produced duplicate keys");
        l
    }

    fn diff(a: &Listing, b: &Listing) -> Vec<String> {
        let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        keys.into_iter()
            .filter(|k| a.get(*k) != b.get(*k))
            .map(|k| format!("{k}: generated {:?}, real {:?}", a.get(k), b.get(k)))
            .take(20)
            .collect()
    }

    fn assert_between(generated: &Listing, required: &Listing, all: &Listing) {
        let missing: Vec<_> = required
            .iter()
            .filter(|(k, s)| generated.get(*k) != Some(s))
            .take(10)
            .collect();
        assert!(
            missing.is_empty(),
            "required keys missing or misshapen: {missing:?}"
        );
        let extra: Vec<_> = generated
            .iter()
            .filter(|(k, s)| all.get(*k) != Some(s))
            .take(10)
            .collect();
        assert!(extra.is_empty(), "keys not in the real listing: {extra:?}");
    }

    #[test]
    fn sd1_checkpoint_has_exactly_the_keys_and_shapes_of_the_sdmecha_sd1_listing() {
        let (all, _) = sdmecha("sdmecha_sd1-ldm.yaml");
        let generated = listing(&sd1_checkpoint(&CheckpointOpts::full()));
        assert_eq!(diff(&generated, &all), Vec::<String>::new());
    }

    #[test]
    fn sdxl_checkpoint_matches_the_sdmecha_sdxl_listing() {
        let (all, required) = sdmecha("sdmecha_sdxl-sgm.yaml");
        let generated = listing(&sdxl_checkpoint(&CheckpointOpts::full()));
        assert_between(&generated, &required, &all);
    }

    #[test]
    fn flux_and_sd3_checkpoints_match_the_sdmecha_listings() {
        let (all, required) = sdmecha("sdmecha_flux-flux.yaml");
        assert_between(
            &listing(&flux_checkpoint(
                &FluxConfig::DEV,
                &CheckpointOpts::default(),
            )),
            &required,
            &all,
        );
        let (all, required) = sdmecha("sdmecha_sd3-comfyui.yaml");
        assert_between(
            &listing(&sd3_checkpoint(&CheckpointOpts::default())),
            &required,
            &all,
        );
    }

    #[test]
    fn diffusers_generators_match_real_juggernaut_xl_components() {
        let cases: [(&str, Vec<FixtureTensor>); 4] = [
            (
                "invokeai_sdxl_diffusers_unet_JuggernautXLv9.keys.json",
                diffusers_unet("", &UnetConfig::sdxl(), Dtype::F16),
            ),
            (
                "invokeai_sdxl_diffusers_vae_JuggernautXLv9.keys.json",
                diffusers_vae("", 4, true, Dtype::F16),
            ),
            (
                "invokeai_sdxl_diffusers_text_encoder_JuggernautXLv9.keys.json",
                hf_clip_text("", ClipText::L, false, false, Dtype::F16),
            ),
            (
                "invokeai_sdxl_diffusers_text_encoder_2_JuggernautXLv9.keys.json",
                hf_clip_text("", ClipText::G, false, true, Dtype::F16),
            ),
        ];
        for (file, generated) in cases {
            assert_eq!(
                diff(&listing(&generated), &invokeai(file)),
                Vec::<String>::new(),
                "{file}"
            );
        }
    }

    #[test]
    fn adapter_generators_match_real_controlnet_ip_adapter_and_clip_vision() {
        let cases: [(&str, Vec<FixtureTensor>); 3] = [
            (
                "invokeai_sd1_controlnet_diffusers_canny.keys.json",
                diffusers_controlnet(&UnetConfig::sd1(), Dtype::F16),
            ),
            (
                "invokeai_ip_adapter_sd1.keys.json",
                ip_adapter(&UnetConfig::sd1(), 1024, Dtype::F16),
            ),
            (
                "invokeai_clip_vision_vitH_ipadapter_encoder.keys.json",
                clip_vision(1280, 32, 1024, Dtype::F32),
            ),
        ];
        for (file, generated) in cases {
            assert_eq!(
                diff(&listing(&generated), &invokeai(file)),
                Vec::<String>::new(),
                "{file}"
            );
        }
    }

    #[test]
    fn sd1_kohya_lora_targets_are_those_of_a_real_sd1_kohya_lora() {
        let real: BTreeSet<String> = invokeai("invokeai_sd1_lora_kohya_fp16.keys.json")
            .into_keys()
            .collect();
        let generated: BTreeSet<String> = listing(&sd1_lora(LoraStyle::Kohya, 128))
            .into_keys()
            .collect();
        assert_eq!(
            generated
                .symmetric_difference(&real)
                .take(10)
                .collect::<Vec<_>>(),
            Vec::<&String>::new()
        );
        let real_xl: BTreeSet<String> = invokeai("invokeai_sdxl_lora_kohya_bf16.keys.json")
            .into_keys()
            .collect();
        let generated_xl: BTreeSet<String> = listing(&sdxl_lora(LoraStyle::Kohya, 32))
            .into_keys()
            .collect();
        assert_eq!(
            generated_xl
                .symmetric_difference(&real_xl)
                .take(10)
                .collect::<Vec<_>>(),
            Vec::<&String>::new()
        );
    }
}
