//! A1111 prompt syntax: attention weights, BREAK, 75-token chunks, emphasis.
//!
//! * [`parse_prompt_attention`]: `(a)`, `[a]`, `(a:1.3)`, escapes and `BREAK`, exactly as
//!   A1111's `modules/prompt_parser.py`.
//! * [`PromptTokenizer`]: CLIP tokens in 77-token chunks with per-token multipliers, after
//!   `modules/sd_hijack_clip.py` (comma backtracking, BREAK, SD 1.x and SD 2.x padding,
//!   textual-inversion placeholders through [`EmbeddingLookup`]).
//! * [`apply_emphasis`]: the multipliers applied to the text encoder output
//!   (`modules/sd_emphasis.py`).
//!
//! * [`prompt_schedule`]: prompt editing `[a:b:0.5]` and alternation `[a|b]` resolved into
//!   one text per step range (A1111 `get_learned_conditioning_prompt_schedules`); each text
//!   then goes through the tokenizer.
//!
//! * [`parse_extra_networks`]: `<lora:...>`, `<lyco:...>`, `<hypernet:...>` tags removed from the
//!   prompt before tokenizing (A1111 `modules/extra_networks.py`), read by [`PromptNetworks`].
//!
//! Not yet supported: `AND` composition (A1111 `get_multicond_prompt_list`).

mod attention;
mod chunks;
mod emphasis;
mod extra_networks;
mod schedule;

pub use attention::{Piece, parse_prompt_attention};
pub use chunks::{
    BOS, CHUNK_LENGTH, COMMA, COMMA_PADDING_BACKTRACK, Chunk, EOS, EmbeddingLookup, EmbeddingMatch,
    Emphasis, NoEmbeddings, Padding, PromptTokenizer, Token, TokenizedPrompt, clean_text,
};
pub use emphasis::apply_emphasis;
pub use extra_networks::{
    ExtraNetworkPrompt, ExtraNetworkTag, HypernetTag, LoraTag, PromptNetworks, parse_extra_networks,
};
pub use schedule::{prompt_schedule, text_at_step};
