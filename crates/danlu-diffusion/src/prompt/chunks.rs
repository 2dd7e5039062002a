//! CLIP tokenization of weighted prompts into 75-token chunks, after A1111's
//! `modules/sd_hijack_clip.py` (`FrozenCLIPEmbedderWithCustomWordsBase.tokenize_line`).

use std::sync::Arc;

use instant_clip_tokenizer::Tokenizer;

use super::attention::{Piece, parse_prompt_attention};

/// `<|startoftext|>` of the CLIP vocabulary (SD 1.x and the OpenCLIP tokenizer of SD 2.x).
pub const BOS: u32 = 49406;
/// `<|endoftext|>`.
pub const EOS: u32 = 49407;
/// `,</w>`, where A1111 may move the end of a chunk back to.
pub const COMMA: u32 = 267;
/// Prompt tokens per chunk, without BOS and EOS.
pub const CHUNK_LENGTH: usize = 75;
/// A1111's default `comma_padding_backtrack`.
pub const COMMA_PADDING_BACKTRACK: usize = 20;

/// How the end of each 77-token sequence is filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Padding {
    /// SD 1.x (`FrozenCLIPEmbedderWithCustomWords`): `<|endoftext|>` repeated.
    EndOfText,
    /// SD 2.x (`FrozenOpenCLIPEmbedderWithCustomWords`, `id_pad = 0`): one `<|endoftext|>`
    /// after the prompt, then token 0.
    Zero,
}

/// A1111's emphasis mode (`opts.emphasis`, `modules/sd_emphasis.py`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Emphasis {
    /// No attention syntax at all: brackets are literal text and every weight is 1.
    None,
    /// Parse the syntax but give every token weight 1.
    Ignore,
    /// Scale the encoder output by the weights, then restore the original mean (the default).
    #[default]
    Original,
    /// Scale by the weights without restoring the mean.
    NoNorm,
}

/// One position of a chunk.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Token {
    /// A vocabulary id.
    Id(u32),
    /// Vector `vector` of a textual-inversion embedding: the text encoder puts that vector in
    /// place of the token embedding (A1111 `PromptChunkFix`; the id there is 0).
    Embedding {
        /// The embedding's name.
        name: Arc<str>,
        /// Which of its vectors.
        vector: usize,
    },
}

/// A textual-inversion embedding found in the token stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EmbeddingMatch {
    /// Its name.
    pub name: Arc<str>,
    /// How many vectors it has (each takes one chunk position).
    pub vectors: usize,
    /// How many prompt tokens its name spans.
    pub token_len: usize,
}

/// Finds textual-inversion embeddings by their token sequence (A1111
/// `EmbeddingDatabase.find_embedding_at_position`).
pub trait EmbeddingLookup {
    /// The embedding whose name's tokens start at `tokens[position]`, if any.
    fn find(&self, tokens: &[u32], position: usize) -> Option<EmbeddingMatch>;
}

/// No embeddings.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEmbeddings;

impl EmbeddingLookup for NoEmbeddings {
    fn find(&self, _tokens: &[u32], _position: usize) -> Option<EmbeddingMatch> {
        None
    }
}

/// 77 positions with their multipliers: BOS, 75 prompt positions, EOS.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// The tokens.
    pub tokens: Vec<Token>,
    /// One multiplier per token (A1111 turns them into a float32 tensor).
    pub multipliers: Vec<f32>,
}

impl Chunk {
    /// The ids fed to the text encoder: embedding positions are 0 (their vectors are patched
    /// in later), and for [`Padding::Zero`] everything after the first `<|endoftext|>` is 0
    /// (A1111 `process_tokens`).
    pub fn ids(&self, padding: Padding) -> Vec<u32> {
        let mut ids: Vec<u32> = self
            .tokens
            .iter()
            .map(|t| match t {
                Token::Id(id) => *id,
                Token::Embedding { .. } => 0,
            })
            .collect();
        if padding == Padding::Zero
            && let Some(first_end) = ids.iter().position(|&id| id == EOS)
        {
            for id in &mut ids[first_end + 1..] {
                *id = 0;
            }
        }
        ids
    }

    /// An empty chunk (`empty_chunk`): BOS, then EOS to the end, weights 1.
    pub fn empty() -> Self {
        let mut tokens = vec![Token::Id(BOS)];
        tokens.extend(std::iter::repeat_n(Token::Id(EOS), CHUNK_LENGTH + 1));
        Self {
            tokens,
            multipliers: vec![1.0; CHUNK_LENGTH + 2],
        }
    }
}

/// A prompt split into chunks.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizedPrompt {
    /// At least one chunk.
    pub chunks: Vec<Chunk>,
    /// A1111's token count (what the UI shows as `n/75`).
    pub token_count: usize,
}

/// CLIP tokenization with A1111's chunking rules.
pub struct PromptTokenizer {
    tokenizer: Tokenizer,
    comma_padding_backtrack: usize,
    emphasis: Emphasis,
}

impl std::fmt::Debug for PromptTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptTokenizer")
            .field("comma_padding_backtrack", &self.comma_padding_backtrack)
            .field("emphasis", &self.emphasis)
            .finish_non_exhaustive()
    }
}

impl Default for PromptTokenizer {
    fn default() -> Self {
        Self::new()
    }
}

impl PromptTokenizer {
    /// The CLIP ViT-L/14 vocabulary (shared by SD 1.x and SD 2.x's OpenCLIP), A1111 defaults:
    /// comma backtrack 20, emphasis "Original". Building the merge table takes a few
    /// milliseconds; reuse the value.
    pub fn new() -> Self {
        Self {
            tokenizer: Tokenizer::new(),
            comma_padding_backtrack: COMMA_PADDING_BACKTRACK,
            emphasis: Emphasis::Original,
        }
    }

    /// Sets A1111's `comma_padding_backtrack` (0 disables it).
    #[must_use]
    pub fn with_comma_padding_backtrack(mut self, tokens: usize) -> Self {
        self.comma_padding_backtrack = tokens;
        self
    }

    /// Sets the emphasis mode.
    #[must_use]
    pub fn with_emphasis(mut self, emphasis: Emphasis) -> Self {
        self.emphasis = emphasis;
        self
    }

    /// The emphasis mode.
    pub fn emphasis(&self) -> Emphasis {
        self.emphasis
    }

    /// Token ids of `text` without BOS/EOS, as `CLIPTokenizer(text, add_special_tokens=False)`
    /// with ftfy installed (A1111's environment): see [`clean_text`] for the text cleanup.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        self.tokenizer.encode(&clean_text(text), &mut out);
        out.into_iter().map(|t| u32::from(t.to_u16())).collect()
    }

    /// Splits a prompt into 77-token chunks with per-token multipliers (A1111 `tokenize_line`).
    pub fn tokenize(&self, prompt: &str, embeddings: &dyn EmbeddingLookup) -> TokenizedPrompt {
        let parsed = match self.emphasis {
            Emphasis::None => vec![Piece::Text {
                text: prompt.to_owned(),
                weight: 1.0,
            }],
            _ => parse_prompt_attention(prompt),
        };
        let mut builder = Builder {
            chunks: Vec::new(),
            tokens: Vec::new(),
            multipliers: Vec::new(),
            token_count: 0,
            last_comma: None,
        };
        for piece in parsed {
            let (text, weight) = match piece {
                Piece::Break => {
                    builder.next_chunk(false);
                    continue;
                }
                Piece::Text { text, weight } => (text, weight),
            };
            // Float64 products become the float32 multiplier tensor of A1111.
            let weight = weight as f32;
            let tokens = self.encode(&text);
            let mut position = 0;
            while position < tokens.len() {
                let token = tokens[position];
                if token == COMMA {
                    builder.last_comma = Some(builder.tokens.len());
                } else if self.comma_padding_backtrack != 0
                    && builder.tokens.len() == CHUNK_LENGTH
                    && let Some(last_comma) = builder.last_comma
                    && builder.tokens.len() - last_comma <= self.comma_padding_backtrack
                {
                    let break_location = last_comma + 1;
                    let reloc_tokens = builder.tokens.split_off(break_location);
                    let reloc_mults = builder.multipliers.split_off(break_location);
                    builder.next_chunk(false);
                    builder.tokens = reloc_tokens;
                    builder.multipliers = reloc_mults;
                }
                if builder.tokens.len() == CHUNK_LENGTH {
                    builder.next_chunk(false);
                }
                match embeddings.find(&tokens, position) {
                    None => {
                        builder.tokens.push(Token::Id(token));
                        builder.multipliers.push(weight);
                        position += 1;
                    }
                    Some(emb) => {
                        if builder.tokens.len() + emb.vectors > CHUNK_LENGTH {
                            builder.next_chunk(false);
                        }
                        for vector in 0..emb.vectors {
                            builder.tokens.push(Token::Embedding {
                                name: Arc::clone(&emb.name),
                                vector,
                            });
                            builder.multipliers.push(weight);
                        }
                        position += emb.token_len.max(1);
                    }
                }
            }
        }
        if !builder.tokens.is_empty() || builder.chunks.is_empty() {
            builder.next_chunk(true);
        }
        TokenizedPrompt {
            chunks: builder.chunks,
            token_count: builder.token_count,
        }
    }
}

struct Builder {
    chunks: Vec<Chunk>,
    tokens: Vec<Token>,
    multipliers: Vec<f32>,
    token_count: usize,
    last_comma: Option<usize>,
}

impl Builder {
    /// `next_chunk(is_last)`: pad to 75 with EOS, wrap in BOS/EOS, start a new chunk.
    fn next_chunk(&mut self, is_last: bool) {
        self.token_count += if is_last {
            self.tokens.len()
        } else {
            CHUNK_LENGTH
        };
        let mut tokens = Vec::with_capacity(CHUNK_LENGTH + 2);
        tokens.push(Token::Id(BOS));
        tokens.append(&mut self.tokens);
        let mut multipliers = Vec::with_capacity(CHUNK_LENGTH + 2);
        multipliers.push(1.0);
        multipliers.append(&mut self.multipliers);
        while tokens.len() < CHUNK_LENGTH + 1 {
            tokens.push(Token::Id(EOS));
            multipliers.push(1.0);
        }
        tokens.push(Token::Id(EOS));
        multipliers.push(1.0);
        self.last_comma = None;
        self.chunks.push(Chunk {
            tokens,
            multipliers,
        });
    }
}

/// The text cleanup `CLIPTokenizer` does with ftfy installed (`ftfy.fix_text`, then
/// whitespace collapsing), restricted to what changes tokens of typed prompts: HTML entities
/// (only when the text has no `<`, ftfy's "auto"), curly quotes to straight ones, Latin
/// ligatures, fullwidth ASCII and the ideographic space, and control characters removed.
/// Not done: mojibake repair, NFC normalization, halfwidth katakana.
pub fn clean_text(text: &str) -> String {
    let text = if text.contains('<') {
        text.to_owned()
    } else {
        unescape_html(text)
    };
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\u{2018}'..='\u{201b}' | '\u{02bc}' => out.push('\''),
            '\u{201c}'..='\u{201f}' => out.push('"'),
            '\u{fb00}' => out.push_str("ff"),
            '\u{fb01}' => out.push_str("fi"),
            '\u{fb02}' => out.push_str("fl"),
            '\u{fb03}' => out.push_str("ffi"),
            '\u{fb04}' => out.push_str("ffl"),
            '\u{fb05}' => out.push_str("\u{17f}t"),
            '\u{fb06}' => out.push_str("st"),
            '\u{3000}' => out.push(' '),
            '\u{ff01}'..='\u{ff5e}' => {
                out.push(char::from_u32(u32::from(c) - 0xff01 + 0x21).unwrap_or(c));
            }
            '\u{ffe0}' => out.push('\u{a2}'),
            '\u{ffe1}' => out.push('\u{a3}'),
            '\u{ffe2}' => out.push('\u{ac}'),
            '\u{ffe3}' => out.push_str(" \u{304}"),
            '\u{ffe4}' => out.push('\u{a6}'),
            '\u{ffe5}' => out.push('\u{a5}'),
            '\u{ffe6}' => out.push('\u{20a9}'),
            '\u{0}'..='\u{8}' | '\u{b}' | '\u{e}'..='\u{1f}' | '\u{7f}' => {}
            _ => out.push(c),
        }
    }
    out
}

/// HTML entities ftfy's `unescape_html` resolves in prompts: the common named ones and
/// numeric references.
fn unescape_html(text: &str) -> String {
    if !text.contains('&') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let tail = &rest[amp..];
        let end = tail.find(';').filter(|&e| e <= 10);
        let decoded = end.and_then(|e| {
            let name = &tail[1..e];
            let c = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some('\u{a0}'),
                _ => name
                    .strip_prefix("#x")
                    .or_else(|| name.strip_prefix("#X"))
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .or_else(|| name.strip_prefix('#').and_then(|d| d.parse().ok()))
                    .and_then(char::from_u32),
            };
            c.map(|c| (c, e + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &tail[len..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_prompt_is_one_padded_chunk() {
        let t = PromptTokenizer::new();
        let p = t.tokenize("a cat", &NoEmbeddings);
        assert_eq!(p.chunks.len(), 1);
        assert_eq!(p.token_count, 2);
        let ids = p.chunks[0].ids(Padding::EndOfText);
        assert_eq!(ids.len(), 77);
        assert_eq!(ids[..4], [BOS, 320, 2368, EOS]);
        assert!(ids[3..].iter().all(|&i| i == EOS));
        let sd2 = p.chunks[0].ids(Padding::Zero);
        assert_eq!(sd2[..4], [BOS, 320, 2368, EOS]);
        assert!(sd2[4..].iter().all(|&i| i == 0));
    }

    #[test]
    fn empty_prompt_is_one_empty_chunk() {
        let p = PromptTokenizer::new().tokenize("", &NoEmbeddings);
        assert_eq!(p.chunks, vec![Chunk::empty()]);
        assert_eq!(p.token_count, 0);
    }

    #[test]
    fn embeddings_take_one_position_per_vector() {
        struct One;
        impl EmbeddingLookup for One {
            fn find(&self, tokens: &[u32], position: usize) -> Option<EmbeddingMatch> {
                (tokens[position] == 2368).then(|| EmbeddingMatch {
                    name: Arc::from("cat"),
                    vectors: 3,
                    token_len: 1,
                })
            }
        }
        let t = PromptTokenizer::new();
        let p = t.tokenize("a (cat) b", &One);
        let c = &p.chunks[0];
        assert_eq!(
            c.tokens[2],
            Token::Embedding {
                name: Arc::from("cat"),
                vector: 0
            }
        );
        assert_eq!(
            c.tokens[4],
            Token::Embedding {
                name: Arc::from("cat"),
                vector: 2
            }
        );
        assert_eq!(c.multipliers[2..5], [1.1f32; 3]);
        let b = t.encode("b")[0];
        assert_eq!(c.ids(Padding::EndOfText)[2..6], [0, 0, 0, b]);
    }

    #[test]
    fn clean_text_straightens_quotes_and_widths() {
        assert_eq!(
            clean_text("\u{201c}Ｈｉ\u{201d} &amp; \u{fb01}"),
            "\"Hi\" & fi"
        );
        assert_eq!(clean_text("<b>&amp;"), "<b>&amp;");
    }
}
