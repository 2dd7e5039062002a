//! What a model file is (kind, base, variant, subformat) from its keys, shapes and metadata.
