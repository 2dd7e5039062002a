//! Textual-inversion embeddings: reading them and placing their vectors in the prompt.
//!
//! Formats, after A1111 `modules/textual_inversion/textual_inversion.py`
//! `create_embedding_from_data`: A1111 `.pt` (`string_to_param` with one entry, `[vectors,
//! width]`), diffusers concept `.bin` (`{token: tensor}`, one entry, `[width]` or
//! `[vectors, width]`) and safetensors (`emb_params`, the same single-tensor form). The name is
//! the file stem (`EmbeddingDatabase.load_from_file`). In the prompt an embedding is found by
//! its name's tokens (`EmbeddingDatabase.register_embedding_by_name` and
//! `find_embedding_at_position`: candidates by first token, longest first), and its vectors
//! replace the token embeddings at the positions it occupies (`EmbeddingsWithFixes`), before the
//! position embeddings are added.

use super::read_tensors;
use crate::model::TextEncoder;
use crate::prompt::{Chunk, EmbeddingLookup, EmbeddingMatch, Padding, PromptTokenizer, Token};
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A textual-inversion embedding.
#[derive(Debug, Clone)]
pub struct Embedding {
    /// The file.
    pub path: PathBuf,
    /// The name prompts use (the file stem).
    pub name: String,
    /// The vectors, `[vectors, width]` float32 on the CPU.
    pub vectors: Tensor,
}

impl Embedding {
    /// Number of vectors (prompt positions it takes).
    pub fn len(&self) -> usize {
        self.vectors.dim(0).unwrap_or(0)
    }

    /// Whether it has no vectors.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Width of each vector (768 SD1, 1024 SD2).
    pub fn width(&self) -> usize {
        self.vectors.dim(1).unwrap_or(0)
    }
}

/// Reads an embedding file (`.pt` without running its pickle, `.bin`, `.safetensors`).
///
/// # Errors
/// When the file cannot be read, holds no or several embedding tensors, or is an SDXL
/// (`clip_l`/`clip_g`) embedding.
pub fn read_embedding(path: impl AsRef<Path>) -> Result<Embedding> {
    let path = path.as_ref();
    let (_, tensors) = read_tensors(path)?;
    let bad = |reason: String| Error::Adapter {
        path: path.to_path_buf(),
        reason,
    };
    let params: Vec<(&String, &Tensor)> = tensors
        .iter()
        .filter(|(k, _)| k.starts_with("string_to_param."))
        .collect();
    let tensor = if !params.is_empty() {
        match params.as_slice() {
            [(_, t)] => (*t).clone(),
            _ => return Err(bad("the embedding file has multiple terms in it".to_owned())),
        }
    } else if tensors.contains_key("clip_l") || tensors.contains_key("clip_g") {
        return Err(bad(
            "an SDXL embedding (clip_l/clip_g), which SD 1.x and 2.x models cannot use".to_owned(),
        ));
    } else {
        let mut floats = tensors.values();
        match (floats.next(), floats.next()) {
            (Some(t), None) => t.clone(),
            (None, _) => return Err(bad("no embedding tensor in the file".to_owned())),
            _ => return Err(bad("the embedding file has multiple terms in it".to_owned())),
        }
    };
    let tensor = match tensor.rank() {
        1 => tensor.unsqueeze(0)?,
        2 => tensor,
        _ => tensor.flatten_to(tensor.rank().saturating_sub(2))?,
    };
    let tensor = tensor.to_dtype(DType::F32)?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Embedding {
        path: path.to_path_buf(),
        name,
        vectors: tensor,
    })
}

/// An embedding's name tokens, name and vector count, filed under its first token.
type Candidate = (Vec<u32>, Arc<str>, usize);

/// The embeddings a prompt can use, looked up by their names' tokens.
#[derive(Debug, Clone, Default)]
pub struct EmbeddingSet {
    by_name: BTreeMap<String, Arc<Embedding>>,
    by_first: HashMap<u32, Vec<Candidate>>,
    /// Embeddings left out because their width is not the text encoder's, as messages.
    pub skipped: Vec<String>,
}

impl EmbeddingSet {
    /// Registers `embeddings` whose width is `width`, their names tokenized by `tokenizer`.
    pub fn new(
        embeddings: impl IntoIterator<Item = Embedding>,
        width: usize,
        tokenizer: &PromptTokenizer,
    ) -> Self {
        let mut set = Self::default();
        for e in embeddings {
            if e.width() != width {
                set.skipped.push(format!(
                    "{}: vectors of width {}, the text encoder's is {width}",
                    e.name,
                    e.width()
                ));
                continue;
            }
            let ids = tokenizer.encode(&e.name);
            let Some(&first) = ids.first() else {
                set.skipped
                    .push(format!("{}: the name has no tokens", e.name));
                continue;
            };
            let name: Arc<str> = Arc::from(e.name.as_str());
            let list = set.by_first.entry(first).or_default();
            list.retain(|(_, n, _)| **n != *name);
            list.push((ids, Arc::clone(&name), e.len()));
            // A1111 sorts by token count, longest first (a stable sort).
            list.sort_by_key(|(ids, _, _)| std::cmp::Reverse(ids.len()));
            set.by_name.insert(e.name.clone(), Arc::new(e));
        }
        set
    }

    /// The embedding called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Embedding>> {
        self.by_name.get(name)
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The names of the embeddings, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// The embeddings a tokenized chunk list uses, by name, each once, in name order.
    pub fn used_in<'a>(&self, chunks: impl IntoIterator<Item = &'a Chunk>) -> Vec<Arc<Embedding>> {
        let mut used = BTreeMap::new();
        for chunk in chunks {
            for t in &chunk.tokens {
                if let Token::Embedding { name, .. } = t
                    && let Some(e) = self.by_name.get(&**name)
                {
                    used.insert(e.name.clone(), Arc::clone(e));
                }
            }
        }
        used.into_values().collect()
    }

    /// The text encoder's output for one chunk, with the embeddings' vectors in their positions:
    /// `[1, 77, width]` in the encoder's dtype.
    ///
    /// # Errors
    /// When the chunk names an embedding not in the set, or the encoder fails.
    pub fn encode_chunk(
        &self,
        text: &TextEncoder,
        chunk: &Chunk,
        padding: Padding,
        skip: usize,
        device: &Device,
    ) -> Result<Tensor> {
        let embeds = self.input_embeds(text, chunk, padding, device)?;
        text.forward_embeds(&embeds, skip)
    }

    /// The token embeddings of one chunk with the embeddings' vectors in the positions they
    /// occupy (A1111 `EmbeddingsWithFixes.forward`): `[1, 77, width]`.
    ///
    /// # Errors
    /// When the chunk names an embedding not in the set.
    pub fn input_embeds(
        &self,
        text: &TextEncoder,
        chunk: &Chunk,
        padding: Padding,
        device: &Device,
    ) -> Result<Tensor> {
        let ids = chunk.ids(padding);
        let n = ids.len();
        let tokens = Tensor::from_vec(ids, (1, n), device)?;
        let mut embeds = text.embed_tokens(&tokens)?;
        for (position, token) in chunk.tokens.iter().enumerate() {
            let Token::Embedding { name, vector } = token else {
                continue;
            };
            let e = self.by_name.get(&**name).ok_or_else(|| Error::Invalid {
                what: "prompt",
                reason: format!("embedding `{name}` is not loaded"),
            })?;
            let v = e
                .vectors
                .narrow(0, *vector, 1)?
                .to_dtype(embeds.dtype())?
                .to_device(device)?
                .unsqueeze(0)?;
            embeds = embeds.slice_assign(&[0..1, position..position + 1, 0..e.width()], &v)?;
        }
        Ok(embeds)
    }
}

impl EmbeddingLookup for EmbeddingSet {
    fn find(&self, tokens: &[u32], position: usize) -> Option<EmbeddingMatch> {
        let first = tokens.get(position)?;
        self.by_first.get(first)?.iter().find_map(|(ids, name, n)| {
            let end = position.checked_add(ids.len())?;
            (tokens.get(position..end)? == ids.as_slice()).then(|| EmbeddingMatch {
                name: Arc::clone(name),
                vectors: *n,
                token_len: ids.len(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emb(name: &str, n: usize, width: usize) -> Embedding {
        Embedding {
            path: PathBuf::from(format!("{name}.pt")),
            name: name.into(),
            vectors: Tensor::ones((n, width), DType::F32, &Device::Cpu).unwrap(),
        }
    }

    #[test]
    fn embeddings_are_found_by_their_name_tokens_longest_first() {
        let tok = PromptTokenizer::new();
        let set = EmbeddingSet::new(
            [
                emb("bad", 2, 8),
                emb("bad-hands-5", 3, 8),
                emb("wide", 1, 9),
            ],
            8,
            &tok,
        );
        assert_eq!(set.skipped.len(), 1);
        let p = tok.tokenize("a bad-hands-5, bad", &set);
        let names: Vec<_> = p.chunks[0]
            .tokens
            .iter()
            .filter_map(|t| match t {
                Token::Embedding { name, vector } => Some(format!("{name}/{vector}")),
                Token::Id(_) => None,
            })
            .collect();
        assert_eq!(
            names,
            [
                "bad-hands-5/0",
                "bad-hands-5/1",
                "bad-hands-5/2",
                "bad/0",
                "bad/1"
            ]
        );
        // "a" + 3 vectors + "," + 2 vectors: seven of the 75 positions.
        assert_eq!(p.token_count, 7);
    }
}
