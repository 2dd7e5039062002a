//! diffusers model folders: a pipeline (`model_index.json` naming component subfolders) or a
//! single component (`config.json` beside its weights: a UNet, VAE, ControlNet, text encoder).
//!
//! Weight file names follow diffusers (`SAFETENSORS_WEIGHTS_NAME`, `WEIGHTS_NAME`,
//! `_add_variant` in `diffusers/utils/constants.py` and `modeling_utils.py`) and transformers
//! (`model.safetensors`, `pytorch_model.bin`): `<stem>[.<variant>].safetensors`,
//! `<stem>[.<variant>].bin`, and sharded `<stem>.safetensors.index[.<variant>].json` with
//! `weight_map` naming the shards. When several sets are present, safetensors wins over `.bin`,
//! and the full-precision set (no variant) over `fp16`, then `bf16`, then others: the original
//! weights describe the model best, variants are reduced copies of them.

use crate::{Error, Result, TensorIndex, read_index_file};
use danlu_types::Format;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Weight file stems of diffusers models and transformers models.
const STEMS: &[&str] = &["diffusion_pytorch_model", "model", "pytorch_model"];

fn io_err(path: &Path, action: &str) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    let action = action.to_owned();
    move |source| Error::Io {
        path,
        action,
        source,
    }
}

fn read_json(path: &Path, what: &'static str) -> Result<serde_json::Value> {
    let text = std::fs::read(path).map_err(io_err(path, "reading"))?;
    serde_json::from_slice(&text).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        what,
        source,
    })
}

/// Scalar fields (and arrays of scalars, compact JSON) of a JSON object, as text.
fn scalar_fields(value: &serde_json::Value, prefix: &str, out: &mut BTreeMap<String, String>) {
    let Some(map) = value.as_object() else {
        return;
    };
    for (k, v) in map {
        let text = match v {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            serde_json::Value::Bool(b) => Some(b.to_string()),
            serde_json::Value::Array(items)
                if items
                    .iter()
                    .all(|i| i.is_number() || i.is_string() || i.is_boolean() || i.is_null()) =>
            {
                Some(v.to_string())
            }
            _ => None,
        };
        if let Some(text) = text {
            out.insert(format!("{prefix}{k}"), text);
        }
    }
}

/// Which weight set a file name belongs to, and its preference (lower is better).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Candidate {
    /// 0 for safetensors, 1 for pickles.
    format: u8,
    /// 0 full precision, 1 fp16, 2 bf16, 3 any other variant.
    variant: u8,
    /// The stem's position in [`STEMS`].
    stem: usize,
    /// The single file or the shard index.
    file: PathBuf,
    /// Whether `file` is a shard index.
    sharded: bool,
}

fn variant_rank(v: &str) -> u8 {
    match v {
        "" => 0,
        "fp16" => 1,
        "bf16" => 2,
        _ => 3,
    }
}

/// Classifies a file name as a weight file or shard index.
fn classify(name: &str) -> Option<(u8, String, usize, bool)> {
    for (i, stem) in STEMS.iter().enumerate() {
        let Some(rest) = name.strip_prefix(stem) else {
            continue;
        };
        for (ext, format) in [("safetensors", 0u8), ("bin", 1u8)] {
            // <stem>.<ext>.index[.<variant>].json
            if let Some(tail) = rest
                .strip_prefix(&format!(".{ext}.index"))
                .and_then(|t| t.strip_suffix(".json"))
            {
                let variant = tail.strip_prefix('.').unwrap_or(tail);
                return Some((format, variant.to_owned(), i, true));
            }
            // <stem>[.<variant>].<ext>
            if let Some(tail) = rest.strip_suffix(&format!(".{ext}")) {
                if tail.is_empty() {
                    return Some((format, String::new(), i, false));
                }
                if let Some(v) = tail
                    .strip_prefix('.')
                    .filter(|v| !v.contains('.') && !v.contains('-'))
                {
                    return Some((format, v.to_owned(), i, false));
                }
            }
        }
    }
    None
}

/// The weight files of one component folder, best set first; empty when none.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut candidates = Vec::new();
    let mut loose_safetensors = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(io_err(dir, "listing the folder"))?;
    for entry in entries {
        let entry = entry.map_err(io_err(dir, "listing the folder"))?;
        let path = entry.path();
        if !path.is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some((format, variant, stem, sharded)) = classify(&name) {
            candidates.push(Candidate {
                format,
                variant: variant_rank(&variant),
                stem,
                file: path,
                sharded,
            });
        } else if name.ends_with(".safetensors") {
            loose_safetensors.push(path);
        }
    }
    candidates.sort();
    let Some(best) = candidates.into_iter().next() else {
        // A component saved under another name (IP-Adapter folders, ...): only when there is
        // exactly one safetensors file is it unambiguous.
        return Ok(if loose_safetensors.len() == 1 {
            loose_safetensors
        } else {
            Vec::new()
        });
    };
    if !best.sharded {
        return Ok(vec![best.file]);
    }
    let index = read_json(&best.file, "shard index")?;
    let Some(map) = index.get("weight_map").and_then(|m| m.as_object()) else {
        return Err(Error::InvalidHeader {
            path: best.file,
            format: "shard index",
            offset: 0,
            reason: "no `weight_map` object".into(),
        });
    };
    let mut shards: Vec<String> = map
        .values()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    shards.sort();
    shards.dedup();
    let mut files = Vec::with_capacity(shards.len());
    for shard in shards {
        // Shard names are plain file names in the same folder; refuse anything else.
        if shard.contains('/') || shard.contains('\\') || shard == ".." {
            return Err(Error::InvalidHeader {
                path: best.file,
                format: "shard index",
                offset: 0,
                reason: format!("shard name `{shard}` is not a file name"),
            });
        }
        files.push(dir.join(shard));
    }
    Ok(files)
}

/// Appends the tensors of `files` to `index` under `prefix` (`unet/` or empty).
fn add_weights(index: &mut TensorIndex, files: &[PathBuf], prefix: &str) -> Result<()> {
    for file in files {
        let part = read_index_file(file)?;
        let base = index.files.len();
        index.files.extend(part.files);
        for mut t in part.tensors {
            t.name = format!("{prefix}{}", t.name);
            t.data.file += base;
            index.tensors.push(t);
        }
        for (k, v) in part.values {
            index.values.insert(format!("{prefix}{k}"), v);
        }
        if let Some(safety) = part.pickle {
            match &mut index.pickle {
                None => index.pickle = Some(safety),
                Some(all) => {
                    all.safe &= safety.safe;
                    all.globals.extend(safety.globals);
                    all.globals.sort();
                    all.globals.dedup();
                    all.findings.extend(safety.findings);
                }
            }
        }
    }
    Ok(())
}

/// Reads one component folder (`config.json` + weights) into `index`.
fn add_component(index: &mut TensorIndex, dir: &Path, name: Option<&str>) -> Result<()> {
    let prefix = name.map(|n| format!("{n}/")).unwrap_or_default();
    let config = dir.join("config.json");
    if config.is_file() {
        let value = read_json(&config, "config.json")?;
        scalar_fields(&value, &format!("{prefix}config."), &mut index.metadata);
    }
    let files = weight_files(dir)?;
    if files.is_empty() {
        if name.is_none() {
            return Err(Error::NoWeights {
                path: dir.to_path_buf(),
                reason: "no diffusion_pytorch_model, model or pytorch_model weights".into(),
            });
        }
        index
            .metadata
            .insert(format!("{prefix}weights"), "none found".into());
        return Ok(());
    }
    add_weights(index, &files, &prefix)
}

/// Reads a diffusers folder into a [`TensorIndex`].
pub(crate) fn read_diffusers(dir: &Path) -> Result<TensorIndex> {
    let mut index = TensorIndex {
        format: Some(Format::DiffusersDir),
        ..TensorIndex::default()
    };
    let model_index = dir.join("model_index.json");
    if model_index.is_file() {
        let value = read_json(&model_index, "model_index.json")?;
        let Some(map) = value.as_object() else {
            return Err(Error::InvalidHeader {
                path: model_index,
                format: "model_index.json",
                offset: 0,
                reason: "not a JSON object".into(),
            });
        };
        scalar_fields(&value, "model_index.", &mut index.metadata);
        for (component, spec) in map {
            // Components are `"name": ["library", "Class"]`; `[null, null]` marks an absent one.
            let present = spec
                .as_array()
                .is_some_and(|a| a.iter().any(|v| !v.is_null()));
            let sub = dir.join(component);
            if component.starts_with('_') || !present || !sub.is_dir() {
                continue;
            }
            // Tokenizers, schedulers and feature extractors have no `config.json` or weights.
            if !sub.join("config.json").is_file() {
                continue;
            }
            add_component(&mut index, &sub, Some(component))?;
        }
    } else if dir.join("config.json").is_file() {
        add_component(&mut index, dir, None)?;
    } else {
        return Err(Error::Unsupported {
            path: dir.to_path_buf(),
            reason: "a folder without model_index.json or config.json".into(),
        });
    }
    index.sort();
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SafetensorsWriter, TensorSpec};
    use danlu_types::Dtype;

    fn weights(path: &Path, names: &[(&str, &[u64])]) {
        let specs = names
            .iter()
            .map(|(n, s)| TensorSpec {
                name: (*n).into(),
                dtype: Dtype::F16,
                shape: s.to_vec(),
            })
            .collect();
        let mut w =
            SafetensorsWriter::create(path, specs, &BTreeMap::new(), danlu_fs::Overwrite::Never)
                .unwrap();
        let plan: Vec<(String, u64)> = w.order().map(|(s, l)| (s.name.clone(), l)).collect();
        for (n, l) in plan {
            w.write_tensor(&n, &vec![0; l as usize]).unwrap();
        }
        w.commit().unwrap();
    }

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        danlu_fs::write_atomic(path, text.as_bytes(), danlu_fs::Overwrite::Replace).unwrap();
    }

    #[test]
    fn pipeline_folder_prefixes_components_and_reads_configs() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        write(
            &root.join("model_index.json"),
            r#"{"_class_name":"StableDiffusionPipeline","_diffusers_version":"0.30.0",
               "unet":["diffusers","UNet2DConditionModel"],"vae":["diffusers","AutoencoderKL"],
               "text_encoder":["transformers","CLIPTextModel"],"tokenizer":["transformers","CLIPTokenizer"],
               "scheduler":["diffusers","PNDMScheduler"],"safety_checker":[null,null]}"#,
        );
        write(
            &root.join("unet/config.json"),
            r#"{"_class_name":"UNet2DConditionModel","in_channels":4,"cross_attention_dim":768,"block_out_channels":[320,640,1280,1280],"nested":{"x":1}}"#,
        );
        // Both full and fp16 weights: the full set is read.
        weights(
            &root.join("unet/diffusion_pytorch_model.safetensors"),
            &[("conv_in.weight", &[320, 4, 3, 3])],
        );
        weights(
            &root.join("unet/diffusion_pytorch_model.fp16.safetensors"),
            &[("fp16_only", &[1])],
        );
        write(&root.join("vae/config.json"), r#"{"latent_channels":4}"#);
        weights(
            &root.join("vae/diffusion_pytorch_model.fp16.safetensors"),
            &[("decoder.conv_out.weight", &[3, 128, 3, 3])],
        );
        write(
            &root.join("text_encoder/config.json"),
            r#"{"hidden_size":768}"#,
        );
        // Sharded text encoder.
        weights(
            &root.join("text_encoder/model-00001-of-00002.safetensors"),
            &[("a", &[2])],
        );
        weights(
            &root.join("text_encoder/model-00002-of-00002.safetensors"),
            &[("b", &[3])],
        );
        write(
            &root.join("text_encoder/model.safetensors.index.json"),
            r#"{"metadata":{"total_size":10},"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}}"#,
        );
        write(&root.join("tokenizer/vocab.json"), "{}");
        write(&root.join("scheduler/scheduler_config.json"), "{}");

        let idx = crate::read_index(root).unwrap();
        assert_eq!(idx.format, Some(Format::DiffusersDir));
        let names: Vec<&str> = idx.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "text_encoder/a",
                "text_encoder/b",
                "unet/conv_in.weight",
                "vae/decoder.conv_out.weight"
            ]
        );
        assert_eq!(idx.files.len(), 4);
        for t in &idx.tensors {
            let f = &idx.files[t.data.file];
            let want = match t.name.as_str() {
                "text_encoder/a" => "model-00001-of-00002.safetensors",
                "text_encoder/b" => "model-00002-of-00002.safetensors",
                "unet/conv_in.weight" => "diffusion_pytorch_model.safetensors",
                _ => "diffusion_pytorch_model.fp16.safetensors",
            };
            assert_eq!(f.file_name().unwrap(), want, "{}", t.name);
        }
        let m = &idx.metadata;
        assert_eq!(m["model_index._class_name"], "StableDiffusionPipeline");
        assert_eq!(m["unet/config.in_channels"], "4");
        assert_eq!(m["unet/config._class_name"], "UNet2DConditionModel");
        assert_eq!(m["unet/config.block_out_channels"], "[320,640,1280,1280]");
        assert!(!m.contains_key("unet/config.nested"));
        assert_eq!(m["vae/config.latent_channels"], "4");
    }

    #[test]
    fn single_component_folder_uses_plain_keys() {
        let d = tempfile::tempdir().unwrap();
        write(
            &d.path().join("config.json"),
            r#"{"_class_name":"ControlNetModel","conditioning_channels":3}"#,
        );
        weights(
            &d.path().join("diffusion_pytorch_model.fp16.safetensors"),
            &[("controlnet_cond_embedding.conv_in.weight", &[16, 3, 3, 3])],
        );
        let idx = crate::read_index(d.path()).unwrap();
        assert_eq!(
            idx.tensors[0].name,
            "controlnet_cond_embedding.conv_in.weight"
        );
        assert_eq!(idx.metadata["config.conditioning_channels"], "3");
        assert_eq!(idx.metadata["config._class_name"], "ControlNetModel");
    }

    #[test]
    fn folder_without_weights_or_configs_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let err = crate::read_index(d.path()).unwrap_err();
        assert!(
            err.to_string().contains("without model_index.json"),
            "{err}"
        );
        write(&d.path().join("config.json"), "{}");
        let err = crate::read_index(d.path()).unwrap_err();
        assert!(matches!(err, Error::NoWeights { .. }), "{err}");
    }

    #[test]
    fn pickled_bin_weights_are_read_through_the_pytorch_reader() {
        // A real torch zip (corpus: diffusers textual-inversion `learned_embeds.bin`, one tensor
        // `<birb-style>` [768]) stored as a text encoder's `pytorch_model.bin`.
        let corpus = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/corpus/models/birb-style_learned_embeds.bin"
        ));
        assert!(corpus.exists(), "corpus file missing: {}", corpus.display());
        let d = tempfile::tempdir().unwrap();
        write(
            &d.path().join("model_index.json"),
            r#"{"_class_name":"X","text_encoder":["transformers","CLIPTextModel"]}"#,
        );
        write(
            &d.path().join("text_encoder/config.json"),
            r#"{"hidden_size":768}"#,
        );
        std::fs::copy(corpus, d.path().join("text_encoder/pytorch_model.bin")).unwrap();
        let idx = crate::read_index(d.path()).unwrap();
        let t = idx.get("text_encoder/<birb-style>").unwrap();
        assert_eq!(t.shape, vec![768]);
        assert!(idx.files[t.data.file].ends_with("text_encoder/pytorch_model.bin"));
        assert!(idx.pickle.is_some());
    }

    #[test]
    fn weight_names_are_classified_with_variants() {
        assert_eq!(
            classify("diffusion_pytorch_model.safetensors"),
            Some((0, String::new(), 0, false))
        );
        assert_eq!(
            classify("diffusion_pytorch_model.fp16.safetensors"),
            Some((0, "fp16".into(), 0, false))
        );
        assert_eq!(
            classify("model.bf16.safetensors"),
            Some((0, "bf16".into(), 1, false))
        );
        assert_eq!(
            classify("pytorch_model.bin"),
            Some((1, String::new(), 2, false))
        );
        assert_eq!(
            classify("diffusion_pytorch_model.safetensors.index.fp16.json"),
            Some((0, "fp16".into(), 0, true))
        );
        assert_eq!(
            classify("model.safetensors.index.json"),
            Some((0, String::new(), 1, true))
        );
        assert_eq!(classify("model-00001-of-00002.safetensors"), None);
        assert_eq!(classify("model.fp16-00001-of-00002.safetensors"), None);
        assert_eq!(classify("config.json"), None);
    }
}
