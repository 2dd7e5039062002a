//! Parity of `danlu_diffusion::prompt` with A1111 (`prompt_parser.py`, `sd_hijack_clip.py`,
//! `sd_emphasis.py`) and its SD 1.x CLIP tokenizer, on the prompts of
//! `scripts/reference/prompt_reference.py`.

// Helpers outside `#[test]` functions read the committed reference data; a panic there is
// the test failure.
#![allow(clippy::unwrap_used, clippy::panic)]

use candle_core::{Device, Tensor};
use danlu_diffusion::prompt::{
    Emphasis, NoEmbeddings, Padding, Piece, PromptTokenizer, apply_emphasis, parse_prompt_attention,
};
use serde_json::Value;

fn reference() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/reference/prompt/prompt_reference.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<Vec<u32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| {
            c.as_array()
                .unwrap()
                .iter()
                .map(|i| i.as_u64().unwrap() as u32)
                .collect()
        })
        .collect()
}

#[test]
fn attention_parsing_matches_a1111() {
    let r = reference();
    let cases = r["cases"].as_array().unwrap();
    assert!(cases.len() > 250);
    for case in cases {
        let prompt = case["prompt"].as_str().unwrap();
        let got = parse_prompt_attention(prompt);
        let want = case["parsed"].as_array().unwrap();
        assert_eq!(got.len(), want.len(), "{prompt:?}: {got:?}");
        for (g, w) in got.iter().zip(want) {
            let (wt, ww) = (w[0].as_str().unwrap(), w[1].as_f64().unwrap());
            match g {
                Piece::Break => assert!(wt == "BREAK" && ww == -1.0, "{prompt:?}"),
                Piece::Text { text, weight } => {
                    assert_eq!(text, wt, "{prompt:?}");
                    // Same float64 products in the same order; serde_json's default float
                    // parser may be one ulp off the exact value it reads.
                    assert!(
                        (*weight - ww).abs() <= 4.0 * f64::EPSILON * ww.abs(),
                        "{prompt:?}: {text:?}: {weight} vs {ww}"
                    );
                }
            }
        }
    }
}

#[test]
fn clip_tokens_match_a1111s_tokenizer() {
    let r = reference();
    let t = PromptTokenizer::new();
    let mut pieces = 0;
    for case in r["cases"].as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        let parsed = case["parsed"].as_array().unwrap();
        for (p, want) in parsed.iter().zip(ids(&case["piece_ids"])) {
            let text = p[0].as_str().unwrap();
            assert_eq!(t.encode(text), want, "{prompt:?}: piece {text:?}");
            pieces += 1;
        }
    }
    assert!(pieces > 1000, "{pieces}");
}

#[test]
fn chunks_and_multipliers_match_tokenize_line() {
    let r = reference();
    let t = PromptTokenizer::new();
    let mut multi_chunk = 0;
    let mut sd2_checked = 0;
    for case in r["cases"].as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        let got = t.tokenize(prompt, &NoEmbeddings);
        let want = ids(&case["sd1_ids"]);
        assert_eq!(got.chunks.len(), want.len(), "{prompt:?}");
        multi_chunk += usize::from(want.len() > 1);
        for (c, w) in got.chunks.iter().zip(&want) {
            assert_eq!(&c.ids(Padding::EndOfText), w, "{prompt:?}");
        }
        if !case["sd2_ids"].is_null() {
            for (c, w) in got.chunks.iter().zip(ids(&case["sd2_ids"])) {
                assert_eq!(c.ids(Padding::Zero), w, "{prompt:?} (SD 2.x)");
            }
            sd2_checked += 1;
        }
        for (c, w) in got
            .chunks
            .iter()
            .zip(case["multipliers"].as_array().unwrap())
        {
            let w: Vec<f32> = w
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m.as_f64().unwrap() as f32)
                .collect();
            assert_eq!(c.multipliers, w, "{prompt:?}");
        }
        assert_eq!(
            got.token_count,
            case["token_count"].as_u64().unwrap() as usize,
            "{prompt:?}"
        );
    }
    assert!(
        multi_chunk >= 20,
        "only {multi_chunk} prompts needed several chunks"
    );
    assert!(sd2_checked >= 50);
}

#[test]
fn emphasis_matches_sd_emphasis() {
    let r = reference();
    let e = &r["emphasis"];
    let floats = |v: &Value| -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    let z = Tensor::from_vec(floats(&e["z"]), (2, 77, 8), &Device::Cpu).unwrap();
    let m = Tensor::from_vec(floats(&e["multipliers"]), (2, 77), &Device::Cpu).unwrap();
    for (mode, key) in [
        (Emphasis::Original, "original"),
        (Emphasis::NoNorm, "no_norm"),
    ] {
        let got = apply_emphasis(&z, &m, mode)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let want = floats(&e[key]);
        let max = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        // The multiplication is exact-equal; the mean ratio is summed in another order
        // (float64 here, float32 pairwise in torch): a couple of ulps.
        assert!(max < 2e-6, "{key}: {max:e}");
    }
    let none = apply_emphasis(&z, &m, Emphasis::None).unwrap();
    assert_eq!(
        none.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        floats(&e["z"])
    );
}
