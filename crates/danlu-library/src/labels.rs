//! Style categories and free tags: set by the user, or taken from a Civitai `.civitai.info`
//! sidecar (written by the Civitai Helper extension: the Civitai model-version JSON).

use serde::Serialize;
use std::path::Path;

/// A model's style category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Category {
    /// Anime, manga, cartoon styles.
    #[serde(rename = "anime")]
    Anime,
    /// Photographic, realistic styles.
    #[serde(rename = "realistic")]
    Realistic,
    /// Semi-realistic ("2.5D") styles.
    #[serde(rename = "2.5d")]
    TwoPointFiveD,
    /// Anything else.
    #[serde(rename = "other")]
    Other,
}

impl Category {
    /// Every category.
    pub const ALL: &'static [Category] = &[
        Category::Anime,
        Category::Realistic,
        Category::TwoPointFiveD,
        Category::Other,
    ];

    /// The category's name as printed and stored.
    pub const fn as_str(self) -> &'static str {
        match self {
            Category::Anime => "anime",
            Category::Realistic => "realistic",
            Category::TwoPointFiveD => "2.5d",
            Category::Other => "other",
        }
    }
}

impl std::fmt::Display for Category {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Category {
    type Err = danlu_types::UnknownWord;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Category::ALL
            .iter()
            .copied()
            .find(|c| c.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| danlu_types::UnknownWord {
                what: "Category",
                word: s.to_owned(),
            })
    }
}

/// Who set a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelSource {
    /// `danlu tag`.
    User,
    /// A sidecar file's metadata.
    Sidecar,
}

impl LabelSource {
    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            LabelSource::User => "user",
            LabelSource::Sidecar => "sidecar",
        }
    }
}

/// The category a free tag implies, if any.
pub fn category_of_tag(tag: &str) -> Option<Category> {
    let t = tag.trim().to_ascii_lowercase();
    match t.as_str() {
        "anime" | "manga" | "cartoon" | "2d" | "hentai" | "illustration" => Some(Category::Anime),
        "realistic" | "photorealistic" | "photorealism" | "photo" | "photography" | "realism" => {
            Some(Category::Realistic)
        }
        "2.5d" | "2.5 d" | "semi-realistic" | "semirealistic" | "semi realistic" => {
            Some(Category::TwoPointFiveD)
        }
        _ => None,
    }
}

/// Tags and categories read from Civitai JSON: `tags` at the top level or under `model`, each a
/// string or an object with `name`.
pub fn parse_civitai_info(text: &str) -> (Vec<Category>, Vec<String>) {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
        return (Vec::new(), Vec::new());
    };
    let mut tags: Vec<String> = Vec::new();
    for list in [v.get("tags"), v.get("model").and_then(|m| m.get("tags"))]
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_array())
    {
        for t in list {
            let s = t
                .as_str()
                .or_else(|| t.get("name").and_then(|n| n.as_str()));
            if let Some(s) = s {
                let s = s.trim().to_lowercase();
                if !s.is_empty() && !tags.contains(&s) {
                    tags.push(s);
                }
            }
        }
    }
    let mut cats: Vec<Category> = tags.iter().filter_map(|t| category_of_tag(t)).collect();
    cats.sort();
    cats.dedup();
    (cats, tags)
}

/// Reads `STEM.civitai.info` beside a model, when present.
pub fn read_civitai_sidecar(model: &Path) -> Option<(Vec<Category>, Vec<String>)> {
    let stem = model.file_stem()?.to_string_lossy().into_owned();
    let info = model.with_file_name(format!("{stem}.civitai.info"));
    let text = std::fs::read_to_string(info).ok()?;
    Some(parse_civitai_info(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civitai_tags_map_to_categories() {
        let (c, t) = parse_civitai_info(
            r#"{"model":{"name":"x","tags":["Anime","character"]},"tags":[{"name":"semi-realistic"}]}"#,
        );
        assert_eq!(c, vec![Category::Anime, Category::TwoPointFiveD]);
        assert_eq!(t, vec!["semi-realistic", "anime", "character"]);
        assert_eq!(parse_civitai_info("not json"), (vec![], vec![]));
        assert_eq!("2.5D".parse::<Category>(), Ok(Category::TwoPointFiveD));
        assert!("cute".parse::<Category>().is_err());
    }
}
