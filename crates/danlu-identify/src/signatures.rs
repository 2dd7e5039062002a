//! Deciding: ordered tables of family signatures, matched against a [`Fingerprint`].
//!
//! After ComfyUI `comfy/supported_models.py`: each row is a small partial description, rows are
//! ordered most specific first and the first full match wins. A new family is a new row.

use crate::fingerprint::{Fingerprint, Layout, LoraBlocks, Network, TextEncoderFamily};
use danlu_types::{Base, Kind, Subformat};

/// A constraint on one measured value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field<T: 'static> {
    /// Anything, including nothing.
    Any,
    /// Exactly this value.
    Is(T),
    /// One of these values.
    OneOf(&'static [T]),
    /// Not measured (absent from the file).
    Absent,
}

impl<T: PartialEq + Copy> Field<T> {
    /// Whether a measured value satisfies the constraint.
    pub fn matches(&self, value: Option<T>) -> bool {
        match (self, value) {
            (Field::Any, _) => true,
            (Field::Is(want), Some(v)) => *want == v,
            (Field::OneOf(set), Some(v)) => set.contains(&v),
            (Field::Absent, None) => true,
            _ => false,
        }
    }
}

use Field::{Absent, Any, Is, OneOf};

/// One family: what it is and the measurements that identify it.
#[derive(Debug, Clone, Copy)]
pub struct Signature {
    /// Short name of the row, reported in the evidence.
    pub name: &'static str,
    /// Kind it identifies (for diffusion networks: `checkpoint`, turned into `diffusion_model`
    /// when the file carries neither VAE nor text encoder).
    pub kind: Kind,
    /// Base it identifies.
    pub base: Base,
    /// When set, the row is a convention rather than a certainty: the text becomes a warning, and
    /// a file-name or metadata hint may override the base.
    pub guess: Option<&'static str>,
    /// Structure.
    pub layout: Field<Layout>,
    /// Diffusion network.
    pub network: Field<Network>,
    /// Model channels / hidden width.
    pub model_channels: Field<u64>,
    /// Cross-attention context width.
    pub context_dim: Field<u64>,
    /// SDXL `adm_in_channels`.
    pub adm_in_channels: Field<u64>,
    /// VAE latent channels.
    pub vae_latent_channels: Field<u64>,
    /// Width of the widest text encoder.
    pub text_encoder: Field<TextEncoderFamily>,
    /// Embedding layout.
    pub embedding: Field<Subformat>,
    /// Embedding vector width.
    pub embedding_width: Field<u64>,
    /// Hypernetwork context size.
    pub hypernetwork_context: Field<u64>,
    /// T2I-Adapter input channels.
    pub t2i_in_channels: Field<u64>,
    /// IP-Adapter context width.
    pub ip_adapter_context: Field<u64>,
    /// Blocks a LoRA targets.
    pub lora_blocks: Field<LoraBlocks>,
    /// LoRA cross-attention context width.
    pub lora_context_dim: Field<u64>,
    /// LoRA transformer-block width.
    pub lora_transformer_width: Field<u64>,
    /// LoRA first text-encoder width.
    pub lora_te_width: Field<u64>,
    /// LoRA patches a second text encoder.
    pub lora_te2: Field<bool>,
    /// LoRA keys name SDXL-only UNet blocks.
    pub lora_sdxl_names: Field<bool>,
}

/// A row that constrains nothing; rows are written as `Signature { …, ..ANY }`.
pub const ANY: Signature = Signature {
    name: "",
    kind: Kind::Unknown,
    base: Base::Unknown,
    guess: None,
    layout: Any,
    network: Any,
    model_channels: Any,
    context_dim: Any,
    adm_in_channels: Any,
    vae_latent_channels: Any,
    text_encoder: Any,
    embedding: Any,
    embedding_width: Any,
    hypernetwork_context: Any,
    t2i_in_channels: Any,
    ip_adapter_context: Any,
    lora_blocks: Any,
    lora_context_dim: Any,
    lora_transformer_width: Any,
    lora_te_width: Any,
    lora_te2: Any,
    lora_sdxl_names: Any,
};

const UNETS: &[Network] = &[Network::UnetLdm, Network::UnetDiffusers];
const MMDITS: &[Network] = &[Network::Mmdit, Network::MmditDiffusers];
const FLUXES: &[Network] = &[Network::Flux, Network::FluxDiffusers];

const NET: Signature = Signature {
    kind: Kind::Checkpoint,
    layout: Is(Layout::Network),
    ..ANY
};
const CONTROLNET: Signature = Signature {
    kind: Kind::Controlnet,
    layout: Is(Layout::Controlnet),
    ..ANY
};
const LORA: Signature = Signature {
    kind: Kind::Lora,
    layout: Is(Layout::Lora),
    ..ANY
};
/// A UNet LoRA whose context width was not measured (no `attn2.to_k` patched).
const LORA_UNET_NO_CTX: Signature = Signature {
    lora_blocks: OneOf(&[LoraBlocks::Unet, LoraBlocks::TextOnly]),
    lora_context_dim: Absent,
    ..LORA
};
const EMBEDDING: Signature = Signature {
    kind: Kind::Embedding,
    layout: Is(Layout::Embedding),
    ..ANY
};

/// SD1 and SDXL VAEs have identical shapes (ComfyUI and A1111 cannot tell them apart either).
const GUESS_VAE4: &str =
    "SD1/SD2 and SDXL VAEs have identical shapes; `sd1` is a convention, not a measurement";
/// SD3 and Flux VAEs are both 16-channel kl-f8 without `quant_conv`.
const GUESS_VAE16: &str = "SD3 and Flux VAEs have identical shapes; `flux` is a convention (the standalone 16-channel VAE in circulation is Flux's `ae.safetensors`), not a measurement";

/// Every family, most specific first; the first row that fully matches wins.
pub const SIGNATURES: &[Signature] = &[
    // --- diffusion networks (checkpoints and bare UNets/transformers) ---
    // The refiner before SDXL: both have `label_emb`, only the refiner is 384 wide with 1280 context.
    Signature {
        name: "sdxl refiner unet",
        base: Base::SdxlRefiner,
        network: OneOf(UNETS),
        model_channels: Is(384),
        context_dim: Is(1280),
        adm_in_channels: Is(2560),
        ..NET
    },
    Signature {
        name: "sdxl unet",
        base: Base::Sdxl,
        network: OneOf(UNETS),
        context_dim: Is(2048),
        adm_in_channels: Is(2816),
        ..NET
    },
    Signature {
        name: "sd2 unet",
        base: Base::Sd2,
        network: OneOf(UNETS),
        context_dim: Is(1024),
        adm_in_channels: Absent,
        ..NET
    },
    Signature {
        name: "sd1 unet",
        base: Base::Sd1,
        network: OneOf(UNETS),
        context_dim: Is(768),
        adm_in_channels: Absent,
        ..NET
    },
    Signature {
        name: "sd3 mmdit",
        base: Base::Sd3,
        network: OneOf(MMDITS),
        ..NET
    },
    Signature {
        name: "flux transformer",
        base: Base::Flux,
        network: OneOf(FLUXES),
        ..NET
    },
    // --- VAEs ---
    Signature {
        name: "kl-f8 4-channel vae",
        kind: Kind::Vae,
        base: Base::Sd1,
        guess: Some(GUESS_VAE4),
        layout: Is(Layout::Vae),
        vae_latent_channels: Is(4),
        ..ANY
    },
    Signature {
        name: "kl-f8 16-channel vae",
        kind: Kind::Vae,
        base: Base::Flux,
        guess: Some(GUESS_VAE16),
        layout: Is(Layout::Vae),
        vae_latent_channels: Is(16),
        ..ANY
    },
    // --- LoRAs: transformer families first (their `te2` is T5, not OpenCLIP-G) ---
    Signature {
        name: "flux lora (bfl blocks)",
        base: Base::Flux,
        lora_blocks: Is(LoraBlocks::DoubleSingle),
        ..LORA
    },
    Signature {
        name: "sd3 lora (joint blocks)",
        base: Base::Sd3,
        lora_blocks: Is(LoraBlocks::Joint),
        ..LORA
    },
    Signature {
        name: "flux lora (diffusers blocks)",
        base: Base::Flux,
        lora_blocks: Is(LoraBlocks::DiffusersTransformer),
        lora_transformer_width: Is(3072),
        ..LORA
    },
    Signature {
        name: "sd3 lora (diffusers blocks)",
        base: Base::Sd3,
        lora_blocks: Is(LoraBlocks::DiffusersTransformer),
        lora_transformer_width: OneOf(&[1536, 2432]),
        ..LORA
    },
    Signature {
        name: "sdxl lora (context 2048)",
        base: Base::Sdxl,
        lora_blocks: Is(LoraBlocks::Unet),
        lora_context_dim: Is(2048),
        ..LORA
    },
    Signature {
        name: "sdxl refiner lora (context 1280)",
        base: Base::SdxlRefiner,
        lora_blocks: Is(LoraBlocks::Unet),
        lora_context_dim: Is(1280),
        ..LORA
    },
    Signature {
        name: "sd2 lora (context 1024)",
        base: Base::Sd2,
        lora_blocks: Is(LoraBlocks::Unet),
        lora_context_dim: Is(1024),
        ..LORA
    },
    Signature {
        name: "sd1 lora (context 768)",
        base: Base::Sd1,
        lora_blocks: Is(LoraBlocks::Unet),
        lora_context_dim: Is(768),
        ..LORA
    },
    // Without a patched `attn2.to_k` (LyCORIS without linear dims, attn1-only, text-only):
    // SDXL-only block names, then a second text encoder, then the text encoder's width.
    Signature {
        name: "sdxl lora (block names)",
        base: Base::Sdxl,
        lora_sdxl_names: Is(true),
        ..LORA_UNET_NO_CTX
    },
    Signature {
        name: "sdxl lora (two text encoders)",
        base: Base::Sdxl,
        lora_sdxl_names: Is(false),
        lora_te2: Is(true),
        ..LORA_UNET_NO_CTX
    },
    Signature {
        name: "sd1 lora (text encoder 768)",
        base: Base::Sd1,
        lora_sdxl_names: Is(false),
        lora_te2: Is(false),
        lora_te_width: Is(768),
        ..LORA_UNET_NO_CTX
    },
    Signature {
        name: "sd2 lora (text encoder 1024)",
        base: Base::Sd2,
        lora_sdxl_names: Is(false),
        lora_te2: Is(false),
        lora_te_width: Is(1024),
        ..LORA_UNET_NO_CTX
    },
    // --- embeddings ---
    Signature {
        name: "sdxl embedding pair",
        base: Base::Sdxl,
        embedding: Is(Subformat::SdxlPair),
        ..EMBEDDING
    },
    Signature {
        name: "sd1 embedding (768)",
        base: Base::Sd1,
        embedding: OneOf(&[Subformat::A1111Pt, Subformat::Safetensors]),
        embedding_width: Is(768),
        ..EMBEDDING
    },
    Signature {
        name: "sd2 embedding (1024)",
        base: Base::Sd2,
        embedding: OneOf(&[Subformat::A1111Pt, Subformat::Safetensors]),
        embedding_width: Is(1024),
        ..EMBEDDING
    },
    // --- hypernetworks ---
    Signature {
        name: "sd1 hypernetwork",
        kind: Kind::Hypernetwork,
        base: Base::Sd1,
        layout: Is(Layout::Hypernetwork),
        hypernetwork_context: Is(768),
        ..ANY
    },
    Signature {
        name: "sd2 hypernetwork",
        kind: Kind::Hypernetwork,
        base: Base::Sd2,
        layout: Is(Layout::Hypernetwork),
        hypernetwork_context: Is(1024),
        ..ANY
    },
    // --- ControlNets (measured through their UNet/transformer copy) ---
    Signature {
        name: "sdxl controlnet",
        base: Base::Sdxl,
        context_dim: Is(2048),
        network: OneOf(UNETS),
        ..CONTROLNET
    },
    Signature {
        name: "sd2 controlnet",
        base: Base::Sd2,
        context_dim: Is(1024),
        network: OneOf(UNETS),
        ..CONTROLNET
    },
    Signature {
        name: "sd1 controlnet",
        base: Base::Sd1,
        context_dim: Is(768),
        network: OneOf(UNETS),
        ..CONTROLNET
    },
    Signature {
        name: "sd3 controlnet",
        base: Base::Sd3,
        network: OneOf(MMDITS),
        ..CONTROLNET
    },
    Signature {
        name: "flux controlnet",
        base: Base::Flux,
        network: OneOf(FLUXES),
        ..CONTROLNET
    },
    // --- T2I-Adapters: ComfyUI `comfy/t2i_adapter/adapter.py` (`xl = cin in (256, 768)`) ---
    Signature {
        name: "sd1 t2i-adapter",
        kind: Kind::T2iAdapter,
        base: Base::Sd1,
        layout: Is(Layout::T2iAdapter),
        t2i_in_channels: OneOf(&[64, 192]),
        ..ANY
    },
    Signature {
        name: "sdxl t2i-adapter",
        kind: Kind::T2iAdapter,
        base: Base::Sdxl,
        layout: Is(Layout::T2iAdapter),
        t2i_in_channels: OneOf(&[256, 768]),
        ..ANY
    },
    // --- IP-Adapters ---
    Signature {
        name: "sd1 ip-adapter",
        kind: Kind::IpAdapter,
        base: Base::Sd1,
        layout: Is(Layout::IpAdapter),
        ip_adapter_context: Is(768),
        ..ANY
    },
    Signature {
        name: "sd2 ip-adapter",
        kind: Kind::IpAdapter,
        base: Base::Sd2,
        layout: Is(Layout::IpAdapter),
        ip_adapter_context: Is(1024),
        ..ANY
    },
    Signature {
        name: "sdxl ip-adapter",
        kind: Kind::IpAdapter,
        base: Base::Sdxl,
        layout: Is(Layout::IpAdapter),
        ip_adapter_context: Is(2048),
        ..ANY
    },
    // --- text encoders: only OpenCLIP-H belongs to one family (SD2); CLIP-L, CLIP-G and T5
    // serve several and stay `unknown` with the encoder named in the evidence ---
    Signature {
        name: "sd2 text encoder (OpenCLIP-H)",
        kind: Kind::TextEncoder,
        base: Base::Sd2,
        layout: Is(Layout::TextEncoder),
        text_encoder: Is(TextEncoderFamily::OpenClipH),
        ..ANY
    },
];

impl Signature {
    /// Whether every field of the row matches the fingerprint.
    pub fn matches(&self, fp: &Fingerprint) -> bool {
        let lora = fp.lora.as_ref();
        let emb = fp.embedding.as_ref();
        self.layout.matches(fp.layout)
            && self.network.matches(fp.network)
            && self.model_channels.matches(fp.model_channels)
            && self.context_dim.matches(fp.context_dim)
            && self.adm_in_channels.matches(fp.adm_in_channels)
            && self.vae_latent_channels.matches(fp.vae_latent_channels)
            && self
                .text_encoder
                .matches(fp.main_text_encoder().map(|t| t.family))
            && self.embedding.matches(emb.map(|e| e.subformat))
            && self.embedding_width.matches(emb.map(|e| e.width))
            && self.hypernetwork_context.matches(fp.hypernetwork_context)
            && self.t2i_in_channels.matches(fp.t2i_in_channels)
            && self.ip_adapter_context.matches(fp.ip_adapter_context)
            && self.lora_blocks.matches(lora.and_then(|l| l.blocks))
            && self
                .lora_context_dim
                .matches(lora.and_then(|l| l.context_dim))
            && self
                .lora_transformer_width
                .matches(lora.and_then(|l| l.transformer_width))
            && self.lora_te_width.matches(lora.and_then(|l| l.te_width))
            && self.lora_te2.matches(lora.map(|l| l.te2))
            && self.lora_sdxl_names.matches(lora.map(|l| l.sdxl_names))
    }
}

/// The first row of [`SIGNATURES`] that matches, if any.
pub fn first_match(fp: &Fingerprint) -> Option<&'static Signature> {
    SIGNATURES.iter().find(|s| s.matches(fp))
}

/// Every row of [`SIGNATURES`] that matches (more than one means the table is ambiguous).
pub fn all_matches(fp: &Fingerprint) -> Vec<&'static Signature> {
    SIGNATURES.iter().filter(|s| s.matches(fp)).collect()
}

/// The rows of [`SIGNATURES`] as a Markdown table (row, kind, base, convention), in match order.
/// The crate documentation embeds it and a test keeps the two in sync.
pub fn rows_markdown() -> String {
    let mut out = String::from("| # | row | kind | base | convention |\n|---|---|---|---|---|\n");
    for (i, r) in SIGNATURES.iter().enumerate() {
        let guess = if r.guess.is_some() { "yes" } else { "" };
        out.push_str(&format!(
            "| {} | {} | `{}` | `{}` | {guess} |\n",
            i + 1,
            r.name,
            r.kind,
            r.base
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_constraints_match_as_documented() {
        assert!(Field::<u64>::Any.matches(None));
        assert!(Field::<u64>::Any.matches(Some(3)));
        assert!(Is(768u64).matches(Some(768)));
        assert!(!Is(768u64).matches(Some(1024)));
        assert!(!Is(768u64).matches(None));
        assert!(OneOf(&[1u64, 2]).matches(Some(2)));
        assert!(!OneOf(&[1u64, 2]).matches(Some(3)));
        assert!(Field::<u64>::Absent.matches(None));
        assert!(!Field::<u64>::Absent.matches(Some(0)));
    }

    #[test]
    fn an_empty_fingerprint_matches_no_row() {
        assert!(first_match(&Fingerprint::default()).is_none());
    }

    #[test]
    fn row_table_lists_every_row_once() {
        let md = rows_markdown();
        assert_eq!(md.lines().count(), SIGNATURES.len() + 2);
        assert!(md.contains("| 1 | sdxl refiner unet | `checkpoint` | `sdxl_refiner` |  |"));
    }
}
