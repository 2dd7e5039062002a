//! The SQLite cache of a library (`ROOT/.danlu/library.sqlite`), keyed by path, size and mtime.
//!
//! The schema is one SQL string versioned with `PRAGMA user_version`. On a version mismatch the
//! file-derived table (`models`) is dropped and rebuilt by the next scan (style.md §2.7: the
//! cache is rebuilt, not migrated); the user-set `labels` table is kept, since it cannot be
//! derived again from the files. The database runs in WAL mode and every file's row is its own
//! transaction, so an interrupted scan loses nothing already done.

use crate::error::{Error, Result};
use crate::labels::{Category, LabelSource};
use danlu_identify::Identity;
use danlu_types::{Base, Format, Kind};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The schema version written to `PRAGMA user_version`.
pub const SCHEMA_VERSION: i64 = 1;

/// The whole schema. `models` holds what was read from each file; `labels` holds categories
/// and tags, set by the user or taken from sidecars.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS models (
    path        TEXT PRIMARY KEY,
    size        INTEGER NOT NULL,
    mtime_ns    INTEGER NOT NULL,
    format      TEXT,
    kind        TEXT NOT NULL,
    base        TEXT NOT NULL,
    identity    TEXT,
    safe        INTEGER,
    findings    TEXT,
    error       TEXT,
    sha256      TEXT,
    autov1      TEXT,
    autov2      TEXT,
    autov3      TEXT,
    blake3      TEXT,
    hash_source TEXT
);
CREATE INDEX IF NOT EXISTS models_sha256 ON models(sha256);
CREATE INDEX IF NOT EXISTS models_size ON models(size);
CREATE TABLE IF NOT EXISTS labels (
    path        TEXT NOT NULL,
    label       TEXT NOT NULL,
    category    INTEGER NOT NULL,
    source      TEXT NOT NULL,
    PRIMARY KEY (path, label, category)
);
";

/// Hashes of a cached file, lower-case hex; each is null until computed (hashes imported from
/// A1111's `cache.json` carry only `sha256`, `autov2` and sometimes `autov3`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RecordHashes {
    /// SHA-256 of the whole file.
    pub sha256: Option<String>,
    /// A1111's old 8-hex model hash.
    pub autov1: Option<String>,
    /// First 10 hex of `sha256`.
    pub autov2: Option<String>,
    /// A1111's LoRA hash (first 12 hex).
    pub autov3: Option<String>,
    /// BLAKE3 of the whole file.
    pub blake3: Option<String>,
    /// `danlu` when danlu hashed the file, `a1111_cache` when taken from A1111's `cache.json`.
    pub source: Option<String>,
}

impl RecordHashes {
    /// All hashes from danlu's own pass.
    pub fn from_hashes(h: &danlu_hash::Hashes) -> Self {
        RecordHashes {
            sha256: Some(h.sha256.clone()),
            autov1: Some(h.autov1.clone()),
            autov2: Some(h.autov2.clone()),
            autov3: Some(h.autov3.clone()),
            blake3: Some(h.blake3.clone()),
            source: Some("danlu".to_owned()),
        }
    }

    /// Whether any hash matches `q` (a full hash or a prefix of at least 8 hex digits).
    pub fn matches(&self, q: &str) -> bool {
        let q = q.to_ascii_lowercase();
        if q.len() < 8 || !q.bytes().all(|b| b.is_ascii_hexdigit()) {
            return false;
        }
        [
            &self.sha256,
            &self.autov1,
            &self.autov2,
            &self.autov3,
            &self.blake3,
        ]
        .into_iter()
        .flatten()
        .any(|h| h.starts_with(&q) || (h.len() < q.len() && q.starts_with(h.as_str())))
    }
}

/// For pickles: the safety verdict as cached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordSafety {
    /// Whether A1111's safe unpickler would load it.
    pub safe: bool,
    /// Why not, one line per problem.
    pub findings: Vec<String>,
}

/// One model file as the cache knows it (`list --json` and `show --json` print these).
#[derive(Debug, Clone, Serialize)]
pub struct ModelRecord {
    /// Absolute path.
    pub path: String,
    /// File name without its extension (what A1111 and prompts call the model).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// The container.
    pub format: Option<Format>,
    /// What the file is (kind, base, variant, ...), absent when it could not be read.
    #[serde(flatten)]
    pub identity: Option<Identity>,
    /// Hashes, null until hashed.
    pub hashes: Option<RecordHashes>,
    /// For pickles: whether loading it would run only allowed code.
    pub safety: Option<RecordSafety>,
    /// Why the file could not be read.
    pub error: Option<String>,
    /// Style categories.
    pub categories: Vec<Category>,
    /// Free tags.
    pub tags: Vec<String>,
}

impl ModelRecord {
    /// The kind, `unknown` for unreadable files.
    pub fn kind(&self) -> Kind {
        self.identity.as_ref().map_or(Kind::Unknown, |i| i.kind)
    }

    /// The base, `unknown` for unreadable files.
    pub fn base(&self) -> Base {
        self.identity.as_ref().map_or(Base::Unknown, |i| i.base)
    }

    /// The file's sha256, when known.
    pub fn sha256(&self) -> Option<&str> {
        self.hashes.as_ref().and_then(|h| h.sha256.as_deref())
    }

    /// The path as a `Path`.
    pub fn as_path(&self) -> &Path {
        Path::new(&self.path)
    }
}

/// The file name without extension, as A1111 names models.
pub fn model_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A library's SQLite cache.
#[derive(Debug)]
pub struct Cache {
    conn: Connection,
    path: PathBuf,
}

impl Cache {
    /// Opens (or creates) the cache file, in WAL mode, rebuilding `models` when the schema
    /// version differs.
    ///
    /// # Errors
    /// When the folder cannot be made or the database cannot be opened or set up.
    pub fn open(path: &Path) -> Result<Cache> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(crate::error::io_err(dir, "creating folder"))?;
        }
        let conn = Connection::open(path).map_err(cache_err(path, "opening"))?;
        let mut cache = Cache {
            conn,
            path: path.to_path_buf(),
        };
        cache.setup(true)?;
        Ok(cache)
    }

    /// An empty cache in memory (tests, dry runs without a root).
    ///
    /// # Errors
    /// When SQLite fails to set up the schema.
    pub fn open_in_memory() -> Result<Cache> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory().map_err(cache_err(&path, "opening"))?;
        let mut cache = Cache { conn, path };
        cache.setup(false)?;
        Ok(cache)
    }

    fn setup(&mut self, wal: bool) -> Result<()> {
        let p = self.path.clone();
        if wal {
            self.conn
                .pragma_update(None, "journal_mode", "WAL")
                .map_err(cache_err(&p, "enabling WAL"))?;
            // WAL with NORMAL sync: each commit is durable against a process kill, and only an
            // OS crash can lose the last commits (SQLite `wal.html`).
            self.conn
                .pragma_update(None, "synchronous", "NORMAL")
                .map_err(cache_err(&p, "setting synchronous"))?;
        }
        self.conn
            .busy_timeout(std::time::Duration::from_secs(10))
            .map_err(cache_err(&p, "setting busy timeout"))?;
        let version: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(cache_err(&p, "reading schema version"))?;
        if version != SCHEMA_VERSION && version != 0 {
            tracing::info!(path = %p.display(), version, "cache schema changed; rebuilding");
            self.conn
                .execute_batch("DROP TABLE IF EXISTS models;")
                .map_err(cache_err(&p, "dropping old schema"))?;
        }
        self.conn
            .execute_batch(SCHEMA)
            .map_err(cache_err(&p, "creating schema"))?;
        self.conn
            .pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(cache_err(&p, "writing schema version"))?;
        Ok(())
    }

    /// The cache file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size and mtime of every cached path.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn stats(&self) -> Result<std::collections::HashMap<String, (u64, i64)>> {
        let p = &self.path;
        let mut st = self
            .conn
            .prepare("SELECT path, size, mtime_ns FROM models")
            .map_err(cache_err(p, "reading"))?;
        let rows = st
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, (r.get::<_, i64>(1)?, r.get(2)?)))
            })
            .map_err(cache_err(p, "reading"))?;
        let mut out = std::collections::HashMap::new();
        for row in rows {
            let (path, (size, mtime)) = row.map_err(cache_err(p, "reading"))?;
            out.insert(path, (u64::try_from(size).unwrap_or(0), mtime));
        }
        Ok(out)
    }

    /// Stores what was read from a file, replacing any older row (hashes are cleared unless
    /// given, since the file changed).
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn put(&self, rec: &ModelRecord) -> Result<()> {
        let p = &self.path;
        let identity = rec
            .identity
            .as_ref()
            .and_then(|i| serde_json::to_string(i).ok());
        let findings = rec
            .safety
            .as_ref()
            .and_then(|s| serde_json::to_string(&s.findings).ok());
        let h = rec.hashes.clone().unwrap_or_default();
        self.conn
            .execute(
                "INSERT OR REPLACE INTO models (path, size, mtime_ns, format, kind, base, identity,
                 safe, findings, error, sha256, autov1, autov2, autov3, blake3, hash_source)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
                params![
                    rec.path,
                    i64::try_from(rec.size).unwrap_or(i64::MAX),
                    rec.mtime_ns,
                    rec.format.map(|f| f.as_str()),
                    rec.kind().as_str(),
                    rec.base().as_str(),
                    identity,
                    rec.safety.as_ref().map(|s| s.safe),
                    findings,
                    rec.error,
                    h.sha256,
                    h.autov1,
                    h.autov2,
                    h.autov3,
                    h.blake3,
                    h.source,
                ],
            )
            .map_err(cache_err(p, "writing"))?;
        Ok(())
    }

    /// Stores a file's hashes.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn set_hashes(&self, path: &str, h: &RecordHashes) -> Result<()> {
        self.conn
            .execute(
                "UPDATE models SET sha256 = ?2, autov1 = ?3, autov2 = ?4, autov3 = ?5,
                 blake3 = ?6, hash_source = ?7 WHERE path = ?1",
                params![
                    path, h.sha256, h.autov1, h.autov2, h.autov3, h.blake3, h.source
                ],
            )
            .map_err(cache_err(&self.path, "writing hashes"))?;
        Ok(())
    }

    /// Forgets a path (and its labels).
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn remove(&self, path: &str) -> Result<()> {
        self.conn
            .execute("DELETE FROM models WHERE path = ?1", params![path])
            .map_err(cache_err(&self.path, "removing"))?;
        Ok(())
    }

    /// Moves a path's row and labels to a new path (after the file was moved).
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn rename(&self, from: &str, to: &str) -> Result<()> {
        self.conn
            .execute(
                "UPDATE OR REPLACE models SET path = ?2 WHERE path = ?1",
                params![from, to],
            )
            .map_err(cache_err(&self.path, "renaming"))?;
        self.conn
            .execute(
                "UPDATE OR REPLACE labels SET path = ?2 WHERE path = ?1",
                params![from, to],
            )
            .map_err(cache_err(&self.path, "renaming"))?;
        Ok(())
    }

    /// Every cached model, sorted by path, with its labels.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn all(&self) -> Result<Vec<ModelRecord>> {
        self.query("SELECT path, size, mtime_ns, format, identity, safe, findings, error, sha256, autov1, autov2, autov3, blake3, hash_source FROM models ORDER BY path", [])
    }

    /// One cached model by path.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn get(&self, path: &str) -> Result<Option<ModelRecord>> {
        Ok(self
            .query("SELECT path, size, mtime_ns, format, identity, safe, findings, error, sha256, autov1, autov2, autov3, blake3, hash_source FROM models WHERE path = ?1", [path])?
            .into_iter()
            .next())
    }

    fn query<P: rusqlite::Params>(&self, sql: &str, params: P) -> Result<Vec<ModelRecord>> {
        let p = &self.path;
        let mut st = self.conn.prepare(sql).map_err(cache_err(p, "reading"))?;
        let rows = st
            .query_map(params, |r| {
                let path: String = r.get(0)?;
                let size: i64 = r.get(1)?;
                let format: Option<String> = r.get(3)?;
                let identity: Option<String> = r.get(4)?;
                let safe: Option<bool> = r.get(5)?;
                let findings: Option<String> = r.get(6)?;
                let hashes = RecordHashes {
                    sha256: r.get(8)?,
                    autov1: r.get(9)?,
                    autov2: r.get(10)?,
                    autov3: r.get(11)?,
                    blake3: r.get(12)?,
                    source: r.get(13)?,
                };
                let has_hash = hashes.sha256.is_some() || hashes.autov3.is_some();
                Ok(ModelRecord {
                    name: model_name(Path::new(&path)),
                    path,
                    size: u64::try_from(size).unwrap_or(0),
                    mtime_ns: r.get(2)?,
                    format: format.and_then(|f| f.parse().ok()),
                    identity: identity.and_then(|i| serde_json::from_str(&i).ok()),
                    hashes: has_hash.then_some(hashes),
                    safety: safe.map(|safe| RecordSafety {
                        safe,
                        findings: findings
                            .and_then(|f| serde_json::from_str(&f).ok())
                            .unwrap_or_default(),
                    }),
                    error: r.get(7)?,
                    categories: Vec::new(),
                    tags: Vec::new(),
                })
            })
            .map_err(cache_err(p, "reading"))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row.map_err(cache_err(p, "reading"))?);
        }
        let labels = self.labels()?;
        for rec in &mut out {
            if let Some(ls) = labels.get(&rec.path) {
                for (label, category) in ls {
                    if *category {
                        if let Ok(c) = label.parse() {
                            rec.categories.push(c);
                        }
                    } else {
                        rec.tags.push(label.clone());
                    }
                }
                rec.categories.sort();
                rec.categories.dedup();
            }
        }
        Ok(out)
    }

    fn labels(&self) -> Result<std::collections::HashMap<String, Vec<(String, bool)>>> {
        let p = &self.path;
        let mut st = self
            .conn
            .prepare("SELECT path, label, category FROM labels ORDER BY path, category DESC, label")
            .map_err(cache_err(p, "reading labels"))?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?)))
            .map_err(cache_err(p, "reading labels"))?;
        let mut out: std::collections::HashMap<String, Vec<(String, bool)>> = Default::default();
        for row in rows {
            let (path, label, cat) = row.map_err(cache_err(p, "reading labels"))?;
            out.entry(path).or_default().push((label, cat));
        }
        Ok(out)
    }

    /// Adds a category to a path.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn add_category(&self, path: &str, c: Category, source: LabelSource) -> Result<()> {
        self.add_label(path, c.as_str(), true, source)
    }

    /// Adds a free tag to a path.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn add_tag(&self, path: &str, tag: &str, source: LabelSource) -> Result<()> {
        self.add_label(path, tag, false, source)
    }

    fn add_label(&self, path: &str, label: &str, cat: bool, source: LabelSource) -> Result<()> {
        self.conn
            .execute(
                "INSERT OR IGNORE INTO labels (path, label, category, source) VALUES (?1, ?2, ?3, ?4)",
                params![path, label, cat, source.as_str()],
            )
            .map_err(cache_err(&self.path, "writing labels"))?;
        Ok(())
    }

    /// Removes a category or tag from a path.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn remove_label(&self, path: &str, label: &str) -> Result<()> {
        self.conn
            .execute(
                "DELETE FROM labels WHERE path = ?1 AND label = ?2",
                params![path, label],
            )
            .map_err(cache_err(&self.path, "writing labels"))?;
        Ok(())
    }

    /// Removes labels a sidecar gave a path (before reading the sidecar again).
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn clear_sidecar_labels(&self, path: &str) -> Result<()> {
        self.conn
            .execute(
                "DELETE FROM labels WHERE path = ?1 AND source = ?2",
                params![path, LabelSource::Sidecar.as_str()],
            )
            .map_err(cache_err(&self.path, "writing labels"))?;
        Ok(())
    }

    /// The sha256 of a cached path if the cached row still matches the file's size and mtime.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn fresh_sha256(&self, path: &str, size: u64, mtime_ns: i64) -> Result<Option<String>> {
        self.conn
            .query_row(
                "SELECT sha256 FROM models WHERE path = ?1 AND size = ?2 AND mtime_ns = ?3",
                params![path, i64::try_from(size).unwrap_or(i64::MAX), mtime_ns],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()
            .map(Option::flatten)
            .map_err(cache_err(&self.path, "reading"))
    }
}

fn cache_err<'a>(
    path: &'a Path,
    action: &'static str,
) -> impl FnOnce(rusqlite::Error) -> Error + 'a {
    move |source| Error::Cache {
        path: path.to_path_buf(),
        action,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(path: &str) -> ModelRecord {
        ModelRecord {
            path: path.into(),
            name: model_name(Path::new(path)),
            size: 10,
            mtime_ns: 5,
            format: Some(Format::Safetensors),
            identity: None,
            hashes: None,
            safety: Some(RecordSafety {
                safe: false,
                findings: vec!["os.system".into()],
            }),
            error: Some("x".into()),
            categories: vec![],
            tags: vec![],
        }
    }

    #[test]
    fn rows_round_trip_with_labels_and_hashes() {
        let c = Cache::open_in_memory().unwrap();
        c.put(&rec("/r/a.safetensors")).unwrap();
        let h = RecordHashes {
            sha256: Some("ab".repeat(32)),
            ..Default::default()
        };
        c.set_hashes("/r/a.safetensors", &h).unwrap();
        c.add_category("/r/a.safetensors", Category::Anime, LabelSource::User)
            .unwrap();
        c.add_tag("/r/a.safetensors", "girl", LabelSource::User)
            .unwrap();
        let all = c.all().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].name, "a");
        assert_eq!(all[0].sha256(), Some("ab".repeat(32).as_str()));
        assert_eq!(all[0].categories, vec![Category::Anime]);
        assert_eq!(all[0].tags, vec!["girl".to_string()]);
        assert_eq!(all[0].safety.as_ref().unwrap().findings, vec!["os.system"]);
        assert_eq!(c.fresh_sha256("/r/a.safetensors", 10, 5).unwrap(), h.sha256);
        assert_eq!(c.fresh_sha256("/r/a.safetensors", 10, 6).unwrap(), None);
        c.rename("/r/a.safetensors", "/r/b.safetensors").unwrap();
        assert_eq!(c.all().unwrap()[0].tags, vec!["girl".to_string()]);
        assert!(h.matches("abababab"));
        assert!(!h.matches("abab"));
    }

    #[test]
    fn a_cache_of_another_schema_version_is_rebuilt_but_labels_stay() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("library.sqlite");
        {
            let c = Cache::open(&p).unwrap();
            c.put(&rec("/r/a.safetensors")).unwrap();
            c.add_tag("/r/a.safetensors", "keep", LabelSource::User)
                .unwrap();
            c.conn.pragma_update(None, "user_version", 99).unwrap();
        }
        let c = Cache::open(&p).unwrap();
        assert!(c.stats().unwrap().is_empty());
        c.put(&rec("/r/a.safetensors")).unwrap();
        assert_eq!(c.all().unwrap()[0].tags, vec!["keep".to_string()]);
        let v: i64 = c
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
    }
}
