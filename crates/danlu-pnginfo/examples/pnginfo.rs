//! Prints the parameters of images as a JSON array (the `pnginfo` contract), and with
//! `--rewrite DIR` also writes each image's parameters as A1111 text into `DIR/<name>.png`
//! (pixels of `--base PNG`), so that other readers can be checked against danlu's output.
//!
//! `cargo run -p danlu-pnginfo --example pnginfo -- [--rewrite DIR --base PNG] IMAGE...`

// Reference tooling: prints its report and fails loudly on bad arguments.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::path::PathBuf;

fn main() {
    let mut args = std::env::args().skip(1);
    let mut rewrite: Option<PathBuf> = None;
    let mut base: Option<PathBuf> = None;
    let mut images = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rewrite" => rewrite = args.next().map(PathBuf::from),
            "--base" => base = args.next().map(PathBuf::from),
            _ => images.push(PathBuf::from(a)),
        }
    }
    let base_png = base.map(|b| std::fs::read(b).expect("reading --base"));
    let mut out = Vec::new();
    for path in &images {
        let mut value = match danlu_pnginfo::read_image(path) {
            Ok(p) => {
                if let (Some(dir), Some(png)) = (&rewrite, &base_png)
                    && p.source != danlu_pnginfo::Source::None
                {
                    let text = danlu_pnginfo::to_a1111_infotext(&p);
                    let bytes = danlu_pnginfo::write_png_parameters(png, &text).unwrap();
                    let name = path.file_name().unwrap().to_string_lossy();
                    let dest = dir.join(format!("{name}.png"));
                    danlu_fs::write_atomic(&dest, &bytes, danlu_fs::Overwrite::Replace).unwrap();
                }
                serde_json::to_value(&p).unwrap()
            }
            Err(e) => serde_json::json!({ "error": e.to_string() }),
        };
        value["path"] = serde_json::Value::String(path.display().to_string());
        out.push(value);
    }
    println!("{}", serde_json::to_string_pretty(&out).unwrap());
}
