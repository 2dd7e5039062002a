//! The recommended models of the lesson (`catalog.json`, embedded at build time).

use crate::error::{Error, Result};
use danlu_types::Base;
use serde::{Deserialize, Serialize};

/// The catalogue file, as data rather than code.
const CATALOG_JSON: &str = include_str!("../catalog.json");

/// One recommended model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogEntry {
    /// Short name used by `catalog:NAME`.
    pub name: String,
    /// Name as the model's authors write it.
    pub title: String,
    /// Style: `anime`, `realistic` or `2.5d`.
    pub category: String,
    /// The model family.
    pub base: Base,
    /// What `danlu download` takes; `null` when no source could be verified.
    pub source: Option<String>,
    /// Other places with the same model.
    pub alternatives: Vec<String>,
    /// Whether the repository and file were checked against public references.
    pub verified: bool,
    /// What could not be checked, or advice.
    pub note: String,
}

/// The whole catalogue file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(rename = "about")]
    _about: String,
    models: Vec<CatalogEntry>,
}

/// Every entry of the catalogue, in file order.
///
/// # Errors
/// [`Error::Api`] if the embedded file does not parse (a test guards this).
pub fn entries() -> Result<Vec<CatalogEntry>> {
    serde_json::from_str::<CatalogFile>(CATALOG_JSON)
        .map(|f| f.models)
        .map_err(|e| Error::Api {
            url: "catalog.json".to_owned(),
            reason: e.to_string(),
        })
}

/// The entry named `name` (case-insensitive), with a source to download.
///
/// # Errors
/// [`Error::NotInCatalog`], or [`Error::BadSource`] for an entry without a verified source.
pub fn find(name: &str) -> Result<CatalogEntry> {
    let entry = entries()?
        .into_iter()
        .find(|e| e.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| Error::NotInCatalog {
            name: name.to_owned(),
        })?;
    if entry.source.is_none() {
        return Err(Error::BadSource {
            source_text: format!("catalog:{name}"),
            reason: entry.note,
        });
    }
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Source;

    #[test]
    fn catalog_parses_and_lists_the_lessons_nine_models_by_style() {
        let all = entries().unwrap();
        let names = |cat: &str| -> Vec<String> {
            all.iter()
                .filter(|e| e.category == cat)
                .map(|e| e.name.clone())
                .collect()
        };
        assert_eq!(
            names("anime"),
            ["anything", "counterfeit", "dreamlike-diffusion"]
        );
        assert_eq!(
            names("realistic"),
            ["deliberate", "realistic-vision", "lofi"]
        );
        assert_eq!(names("2.5d"), ["neverending-dream", "protogen", "guofeng3"]);
        assert_eq!(all.len(), 9);
    }

    #[test]
    fn every_source_parses_and_unverified_entries_say_why() {
        for e in entries().unwrap() {
            for s in e.source.iter().chain(&e.alternatives) {
                let parsed = Source::parse(s, None, None).unwrap();
                assert!(
                    matches!(parsed, Source::HuggingFace { .. } | Source::Civitai { .. }),
                    "{s}"
                );
            }
            if !e.verified {
                assert!(e.note.contains("not verified"), "{}", e.name);
            }
        }
        assert!(matches!(find("LOFI"), Err(Error::BadSource { .. })));
        assert!(matches!(find("nope"), Err(Error::NotInCatalog { .. })));
        assert!(find("Counterfeit").is_ok());
    }
}
