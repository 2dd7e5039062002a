//! Identification tests: one module for generated fixtures (every signature row), one for real
//! key listings of the shared corpus.

// Test crate: helpers that load the corpus fail the test on broken input, and one test writes a
// sidecar `.yaml` into a temp dir.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod corpus;
mod families;
mod files;

use danlu_fixtures::models::FixtureTensor;
use danlu_format::{DataRef, TensorIndex, TensorInfo};
use danlu_types::Dtype;
use std::collections::BTreeMap;

/// A tensor index built in memory from fixture tensors, laid out back to back.
pub(crate) fn index_of(tensors: &[FixtureTensor]) -> TensorIndex {
    let mut offset = 0;
    let mut index = TensorIndex::default();
    for t in tensors {
        let len = t.byte_len();
        index.tensors.push(TensorInfo {
            name: t.name.clone(),
            dtype: t.dtype,
            shape: t.shape.clone(),
            data: DataRef {
                file: 0,
                offset,
                len,
                strides: None,
                quant: None,
            },
        });
        offset += len;
    }
    index.sort();
    index
}

/// Like [`index_of`], with metadata.
pub(crate) fn index_with(tensors: &[FixtureTensor], metadata: &[(&str, &str)]) -> TensorIndex {
    let mut index = index_of(tensors);
    index.metadata = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect::<BTreeMap<_, _>>();
    index
}

/// A tensor index from `(name, shape)` pairs, all of one dtype.
pub(crate) fn index_from_shapes(shapes: &BTreeMap<String, (Dtype, Vec<u64>)>) -> TensorIndex {
    let tensors: Vec<FixtureTensor> = shapes
        .iter()
        .map(|(name, (dtype, shape))| FixtureTensor {
            name: name.clone(),
            dtype: *dtype,
            shape: shape.clone(),
        })
        .collect();
    index_of(&tensors)
}
