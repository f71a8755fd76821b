//! The sample dumps of `data/`, embedded in the binary so `calibscope` with no path works
//! anywhere (e.g. after `cargo install`).

use std::io;
use std::path::PathBuf;

/// (file name, bytes) of every sample.
pub const SAMPLES: &[(&str, &[u8])] = &[
    (
        "01_conv1_relu.npy",
        include_bytes!("../data/01_conv1_relu.npy"),
    ),
    (
        "02_block_gelu.npy",
        include_bytes!("../data/02_block_gelu.npy"),
    ),
    (
        "03_attn_scores_heavy_tail.npy",
        include_bytes!("../data/03_attn_scores_heavy_tail.npy"),
    ),
    (
        "04_layernorm_outlier_channels.npy",
        include_bytes!("../data/04_layernorm_outlier_channels.npy"),
    ),
    (
        "05_mlp_fp16_overflow.npy",
        include_bytes!("../data/05_mlp_fp16_overflow.npy"),
    ),
    (
        "06_tiny_grads_fp16_underflow.npy",
        include_bytes!("../data/06_tiny_grads_fp16_underflow.npy"),
    ),
    ("07_with_nan.npy", include_bytes!("../data/07_with_nan.npy")),
    (
        "08_embeddings_bf16.npy",
        include_bytes!("../data/08_embeddings_bf16.npy"),
    ),
    (
        "09_small_mlp.npz",
        include_bytes!("../data/09_small_mlp.npz"),
    ),
    (
        "10_attn_probs_fp16.npy",
        include_bytes!("../data/10_attn_probs_fp16.npy"),
    ),
    (
        "11_silu_bigendian.npy",
        include_bytes!("../data/11_silu_bigendian.npy"),
    ),
];

/// Writes the samples to a per-version folder under the temp dir (once) and returns it.
/// The loader reads files, so the embedded bytes need a home on disk.
pub fn extract() -> io::Result<PathBuf> {
    let dir =
        std::env::temp_dir().join(format!("calibscope-samples-{}", env!("CARGO_PKG_VERSION")));
    std::fs::create_dir_all(&dir)?;
    for (name, bytes) in SAMPLES {
        let path = dir.join(name);
        let same = std::fs::metadata(&path).is_ok_and(|m| m.len() == bytes.len() as u64);
        if !same {
            // Atomic, so a concurrent run never reads a half-written sample.
            crate::report::write::write_atomic(&path, bytes, &[]).map_err(io::Error::other)?;
        }
    }
    Ok(dir)
}
