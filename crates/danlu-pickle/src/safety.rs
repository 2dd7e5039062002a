//! The allow-list of AUTOMATIC1111's safe unpickler (A1111 `modules/safe.py`,
//! `RestrictedUnpickler.find_class` and `allowed_zip_names_re`).

use serde::Serialize;
use std::collections::BTreeSet;

/// What the restricted reader saw in a pickle, and whether A1111's safe unpickler would allow it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Safety {
    /// True when every global is on A1111's allow-list (and the archive layout is allowed).
    pub safe: bool,
    /// Every global met, as `module.name`, sorted and de-duplicated.
    pub globals: Vec<String>,
    /// Human-readable reasons for `safe: false`, one per problem.
    pub findings: Vec<String>,
}

impl Safety {
    /// A verdict from the globals met and the problems found: safe exactly when there are no
    /// findings. Globals that A1111 forbids each add a finding naming them.
    pub fn from_parts<I, S>(globals: I, findings: Vec<String>) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let set: BTreeSet<String> = globals.into_iter().map(Into::into).collect();
        let mut all = Vec::new();
        for g in &set {
            if !is_allowed_dotted(g) {
                all.push(format!("global `{g}` is not on A1111's allow-list"));
            }
        }
        all.extend(findings);
        let mut seen = BTreeSet::new();
        all.retain(|f| seen.insert(f.clone()));
        Self {
            safe: all.is_empty(),
            globals: set.into_iter().collect(),
            findings: all,
        }
    }

    /// Merges another verdict into this one (globals united, findings appended, safe only if
    /// both are).
    pub fn merge(&mut self, other: Safety) {
        let globals: BTreeSet<String> = self.globals.drain(..).chain(other.globals).collect();
        self.globals = globals.into_iter().collect();
        for f in other.findings {
            if !self.findings.contains(&f) {
                self.findings.push(f);
            }
        }
        self.safe = self.safe && other.safe && self.findings.is_empty();
    }

    /// Adds a problem, making the verdict unsafe.
    pub fn add_finding(&mut self, finding: impl Into<String>) {
        let f = finding.into();
        if !self.findings.contains(&f) {
            self.findings.push(f);
        }
        self.safe = false;
    }
}

/// Whether A1111's `RestrictedUnpickler.find_class` allows `module.name` (A1111
/// `modules/safe.py`). Everything else is forbidden there, and so unsafe here.
pub fn is_allowed(module: &str, name: &str) -> bool {
    match module {
        "collections" => name == "OrderedDict",
        "torch._utils" => matches!(
            name,
            "_rebuild_tensor_v2" | "_rebuild_parameter" | "_rebuild_device_tensor_from_numpy"
        ),
        "torch" => matches!(
            name,
            "FloatStorage"
                | "HalfStorage"
                | "IntStorage"
                | "LongStorage"
                | "DoubleStorage"
                | "ByteStorage"
                | "float32"
                | "BFloat16Storage"
        ),
        "torch.nn.modules.container" => name == "ParameterDict",
        "numpy.core.multiarray" => matches!(name, "scalar" | "_reconstruct"),
        "numpy" => matches!(name, "dtype" | "ndarray"),
        "_codecs" => name == "encode",
        "pytorch_lightning.callbacks" => name == "model_checkpoint",
        "pytorch_lightning.callbacks.model_checkpoint" => name == "ModelCheckpoint",
        "__builtin__" => name == "set",
        _ => false,
    }
}

/// [`is_allowed`] for a dotted `module.name` (split at the last dot).
fn is_allowed_dotted(global: &str) -> bool {
    match global.rsplit_once('.') {
        Some((module, name)) => is_allowed(module, name),
        None => false,
    }
}

/// Whether a member name of a PyTorch zip archive is one A1111 accepts:
/// `<dir>/data.pkl`, `<dir>/version`, `<dir>/data/<number>` (A1111 `modules/safe.py`
/// `allowed_zip_names_re`), plus the records PyTorch 2.x adds beside them (`byteorder`,
/// `.data/serialization_id`, `.data/version`, `.format_version`, `.storage_alignment`; PyTorch
/// `torch/serialization.py` `_save`), which A1111's pattern predates (A1111 issue #14261), and
/// directory entries (`<dir>/`, `<dir>/data/`) that zip tools add when re-packing an archive.
pub fn is_allowed_zip_name(name: &str) -> bool {
    let Some((dir, rest)) = name.split_once('/') else {
        return false;
    };
    if dir.is_empty() {
        return false;
    }
    match rest {
        ""
        | "data/"
        | "data.pkl"
        | "version"
        | "byteorder"
        | ".data/serialization_id"
        | ".data/version"
        | ".format_version"
        | ".storage_alignment" => true,
        _ => rest
            .strip_prefix("data/")
            .is_some_and(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a1111_allow_list_is_exact() {
        assert!(is_allowed("collections", "OrderedDict"));
        assert!(is_allowed("torch._utils", "_rebuild_tensor_v2"));
        assert!(is_allowed("torch", "BFloat16Storage"));
        assert!(is_allowed("__builtin__", "set"));
        assert!(is_allowed("numpy.core.multiarray", "_reconstruct"));
        // Not on A1111's list even though PyTorch writes them.
        assert!(!is_allowed("torch._utils", "_rebuild_tensor_v3"));
        assert!(!is_allowed("torch", "ShortStorage"));
        assert!(!is_allowed("torch.storage", "UntypedStorage"));
        assert!(!is_allowed("builtins", "set"));
        assert!(!is_allowed("builtins", "eval"));
        assert!(!is_allowed("os", "system"));
        assert!(!is_allowed("collections", "OrderedDictX"));
    }

    #[test]
    fn zip_names_follow_a1111_pattern() {
        for ok in [
            "archive/data.pkl",
            "archive/version",
            "archive/data/0",
            "model/data/1234567",
            "archive/byteorder",
            "archive/.data/serialization_id",
            "archive/",
        ] {
            assert!(is_allowed_zip_name(ok), "{ok}");
        }
        for bad in [
            "data.pkl",
            "archive/data.txt",
            "archive/data/x",
            "/data.pkl",
            "a/b/data.pkl",
            "archive/data/0/1",
        ] {
            assert!(!is_allowed_zip_name(bad), "{bad}");
        }
    }

    #[test]
    fn verdict_names_each_forbidden_global() {
        let s = Safety::from_parts(
            ["os.system", "collections.OrderedDict", "os.system"],
            vec![],
        );
        assert!(!s.safe);
        assert_eq!(s.globals, ["collections.OrderedDict", "os.system"]);
        assert_eq!(s.findings.len(), 1);
        assert!(s.findings[0].contains("os.system"));
        let ok = Safety::from_parts(["torch._utils._rebuild_tensor_v2"], vec![]);
        assert!(ok.safe);
    }
}
