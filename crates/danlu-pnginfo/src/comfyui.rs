//! ComfyUI graphs: the API graph (`prompt` chunk) and the UI graph (`workflow` chunk).
//!
//! The API graph maps node ids to `{"class_type", "inputs"}`; an input is a literal or a link
//! `[node_id, output_slot]` (ComfyUI `execution.py`, `server.py` `post_prompt`). danlu picks the
//! first sampler that does not take its latent from another sampler (the first pass, as A1111
//! reports it), then follows links: `positive`/`negative` to text-encoder nodes (through
//! combiners, area setters, ControlNet appliers, reroutes), `model` to the checkpoint loader
//! (collecting LoRA loaders on the way), `latent_image` to the empty latent's size. Every walk
//! keeps a visited set and a depth limit, so cycles and missing nodes give a partial result with
//! a finding. The UI graph is used when there is no API graph: its nodes' `widgets_values` are
//! mapped to input names for the common node types.

use std::collections::HashSet;

use serde_json::{Map, Value};

use crate::text::parse_json_lenient;
use crate::{GenerationParams, Lora, Source, json_to_string};

/// Deepest link chain followed.
const MAX_DEPTH: usize = 64;
/// Most nodes visited by one walk.
const MAX_VISITS: usize = 10_000;

/// Node types that sample (ComfyUI `nodes.py`, `comfy_extras/nodes_custom_sampler.py`, and the
/// Efficiency Nodes pack).
const SAMPLERS: &[&str] = &[
    "KSampler",
    "KSamplerAdvanced",
    "SamplerCustom",
    "SamplerCustomAdvanced",
    "KSampler (Efficient)",
    "KSampler Adv. (Efficient)",
    "KSamplerSDXL (Eff.)",
];

struct Graph<'a> {
    nodes: &'a Map<String, Value>,
    findings: Vec<String>,
}

/// A link input `[node_id, slot]`.
fn link_target(v: &Value) -> Option<String> {
    let arr = v.as_array()?;
    if arr.len() != 2 || !arr[1].is_u64() {
        return None;
    }
    match &arr[0] {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl<'a> Graph<'a> {
    fn class(&self, id: &str) -> Option<&'a str> {
        self.nodes.get(id)?.get("class_type")?.as_str()
    }

    fn inputs(&self, id: &str) -> Option<&'a Map<String, Value>> {
        self.nodes.get(id)?.get("inputs")?.as_object()
    }

    fn note_once(&mut self, finding: String) {
        if !self.findings.contains(&finding) {
            self.findings.push(finding);
        }
    }

    fn is_sampler(&self, id: &str) -> bool {
        let Some(class) = self.class(id) else {
            return false;
        };
        if SAMPLERS.contains(&class) {
            return true;
        }
        self.inputs(id).is_some_and(|i| {
            i.contains_key("positive")
                && i.contains_key("negative")
                && (i.contains_key("seed") || i.contains_key("noise_seed"))
        })
    }

    /// Follows a link, noting a missing target.
    fn follow(&mut self, from: &str, v: &Value) -> Option<String> {
        let target = link_target(v)?;
        if self.nodes.contains_key(&target) {
            Some(target)
        } else {
            self.note_once(format!(
                "node `{target}` linked from node `{from}` is missing from the graph"
            ));
            None
        }
    }

    /// Depth-first walk from `start` through link inputs (only `through` names when given),
    /// calling `visit` on each node; `visit` returns false to stop descending from a node.
    fn walk(
        &mut self,
        start: &str,
        through: Option<&[&str]>,
        visit: &mut dyn FnMut(&mut Self, &str) -> bool,
    ) {
        self.walk_from(start, 0, through, visit);
    }

    /// [`walk`](Self::walk) from a node reached through its output `slot`.
    fn walk_from(
        &mut self,
        start: &str,
        slot: u64,
        through: Option<&[&str]>,
        visit: &mut dyn FnMut(&mut Self, &str) -> bool,
    ) {
        let mut seen = HashSet::new();
        let mut path = Vec::new();
        self.walk_inner(start, slot, through, visit, &mut seen, &mut path);
    }

    fn walk_inner(
        &mut self,
        id: &str,
        slot: u64,
        through: Option<&[&str]>,
        visit: &mut dyn FnMut(&mut Self, &str) -> bool,
        seen: &mut HashSet<String>,
        path: &mut Vec<String>,
    ) {
        if path.iter().any(|p| p == id) {
            self.note_once(format!(
                "graph has a cycle through node `{id}`; not followed"
            ));
            return;
        }
        if path.len() >= MAX_DEPTH {
            self.note_once(format!(
                "graph is deeper than {MAX_DEPTH} links at node `{id}`; not followed further"
            ));
            return;
        }
        if seen.len() >= MAX_VISITS || !seen.insert(id.to_owned()) {
            return;
        }
        if !visit(self, id) {
            return;
        }
        let Some(inputs) = self.inputs(id) else {
            return;
        };
        // A node with both `positive` and `negative` inputs that is not a sampler (ControlNet
        // appliers, `InpaintModelConditioning`) outputs them on slots 0 and 1: follow only the
        // one this walk came through.
        let skip = (inputs.contains_key("positive")
            && inputs.contains_key("negative")
            && !self.is_sampler(id))
        .then_some(if slot == 1 { "positive" } else { "negative" });
        path.push(id.to_owned());
        for (name, value) in inputs {
            if through.is_some_and(|t| !t.contains(&name.as_str())) || skip == Some(name.as_str()) {
                continue;
            }
            let next_slot = value
                .as_array()
                .and_then(|a| a.get(1))
                .and_then(Value::as_u64)
                .unwrap_or(0);
            if let Some(next) = self.follow(id, value) {
                self.walk_inner(&next, next_slot, through, visit, seen, path);
            }
        }
        path.pop();
    }

    /// A literal input, following a link to a primitive-like node when needed.
    fn scalar(&mut self, id: &str, names: &[&str]) -> Option<Value> {
        let inputs = self.inputs(id)?;
        for name in names {
            let Some(v) = inputs.get(*name) else { continue };
            if link_target(v).is_none() {
                return Some(v.clone());
            }
            let target = self.follow(id, v)?;
            return self.primitive(&target, name, 0);
        }
        None
    }

    /// The value a primitive-like node (`PrimitiveNode`, `Seed (rgthree)`, `Int Literal`...)
    /// outputs.
    fn primitive(&mut self, id: &str, name: &str, depth: usize) -> Option<Value> {
        if depth > 8 {
            self.note_once(format!(
                "value of `{name}` is linked through too many nodes"
            ));
            return None;
        }
        let inputs = self.inputs(id)?;
        let keys = [
            name,
            "value",
            "seed",
            "noise_seed",
            "int",
            "float",
            "string",
            "text",
            "number",
            "Number",
        ];
        for key in keys {
            let Some(v) = inputs.get(key) else { continue };
            if link_target(v).is_none() {
                return Some(v.clone());
            }
            let next = self.follow(id, v)?;
            return self.primitive(&next, name, depth + 1);
        }
        None
    }

    /// A literal from the sampler or from the nodes it takes `noise`, `guider`, `sampler` and
    /// `sigmas` from (the custom-sampler family).
    fn sampler_value(&mut self, sampler: &str, names: &[&str]) -> Option<Value> {
        if let Some(v) = self.scalar(sampler, names) {
            return Some(v);
        }
        let mut found = None;
        let through: &[&str] = &["noise", "guider", "sampler", "sigmas"];
        self.walk(sampler, Some(through), &mut |g, id| {
            if found.is_some() {
                return false;
            }
            if id != sampler
                && let Some(v) = g.scalar(id, names)
            {
                found = Some(v);
                return false;
            }
            true
        });
        found
    }

    /// The texts reached from a conditioning input, in input order.
    fn texts(&mut self, from: &str, input: &str) -> Vec<String> {
        let Some(link) = self.inputs(from).and_then(|i| i.get(input)).cloned() else {
            return Vec::new();
        };
        let Some(start) = self.follow(from, &link) else {
            return Vec::new();
        };
        let slot = link
            .as_array()
            .and_then(|a| a.get(1))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let mut texts = Vec::new();
        self.walk_from(&start, slot, None, &mut |g, id| {
            // Stop at models, CLIP and images: they never lead to prompt text.
            let class = g.class(id).unwrap_or("");
            let mut own = Vec::new();
            for key in [
                "text",
                "text_g",
                "text_l",
                "prompt",
                "positive",
                "wildcard_text",
            ] {
                // `positive`/`prompt` are text only as literals (Efficiency loaders' widgets);
                // as links they are conditioning.
                let linked = g
                    .inputs(id)
                    .and_then(|i| i.get(key))
                    .is_some_and(|v| link_target(v).is_some());
                if matches!(key, "positive" | "prompt") && linked {
                    continue;
                }
                if let Some(v) = g.scalar(id, &[key])
                    && let Some(s) = v.as_str()
                    && !s.is_empty()
                    && !own.iter().any(|o: &String| o == s)
                {
                    own.push(s.to_owned());
                }
            }
            let is_encoder = !own.is_empty() || class.contains("TextEncode");
            texts.extend(own);
            !is_encoder
        });
        texts
    }

    /// Whether a sampler takes its latent from another sampler.
    fn depends_on_sampler(&mut self, sampler: &str) -> bool {
        let Some(start) = self
            .inputs(sampler)
            .and_then(|i| i.get("latent_image"))
            .cloned()
            .and_then(|v| link_target(&v))
        else {
            return false;
        };
        if !self.nodes.contains_key(&start) {
            return false;
        }
        let mut hit = false;
        self.walk(&start, None, &mut |g, id| {
            if hit {
                return false;
            }
            if g.is_sampler(id) {
                hit = true;
                return false;
            }
            true
        });
        hit
    }
}

fn as_u64(v: &Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| {
            v.as_f64()
                .filter(|f| *f >= 0.0 && f.fract() == 0.0)
                .map(|f| f as u64)
        })
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

fn as_f64(v: &Value) -> Option<f64> {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

/// Parses ComfyUI's `prompt` (API graph) and/or `workflow` (UI graph) chunks.
pub(crate) fn parse(prompt: Option<&str>, workflow: Option<&str>) -> GenerationParams {
    let raw = prompt.or(workflow).unwrap_or("");
    let mut params = GenerationParams::new(Source::ComfyUi, raw);
    let api = prompt.and_then(|p| match parse_json_lenient(p) {
        Some(Value::Object(map)) => Some(map),
        _ => {
            params
                .findings
                .push("ComfyUI `prompt` chunk is not a JSON object".to_owned());
            None
        }
    });
    let nodes = match api {
        Some(map) => map,
        None => match workflow.and_then(parse_json_lenient) {
            Some(wf) => {
                params.findings.push(
                    "no ComfyUI API graph; parameters read from the UI workflow's widget values"
                        .to_owned(),
                );
                workflow_to_api(&wf, &mut params.findings)
            }
            None => {
                params
                    .findings
                    .push("ComfyUI graph JSON could not be parsed".to_owned());
                return params;
            }
        },
    };
    let mut g = Graph {
        nodes: &nodes,
        findings: Vec::new(),
    };
    let samplers: Vec<String> = nodes
        .keys()
        .filter(|id| g.is_sampler(id))
        .cloned()
        .collect();
    if samplers.is_empty() {
        params
            .findings
            .push("ComfyUI graph has no sampler node".to_owned());
    }
    let first_pass: Vec<&String> = samplers
        .iter()
        .filter(|id| !g.depends_on_sampler(id))
        .collect();
    let chosen = first_pass.first().copied().or(samplers.first()).cloned();

    if samplers.len() > 1 {
        let mut all = Vec::new();
        for id in &samplers {
            let mut o = Map::new();
            o.insert("id".into(), Value::String(id.clone()));
            o.insert(
                "class_type".into(),
                Value::String(g.class(id).unwrap_or("").to_owned()),
            );
            for (key, names) in [
                ("seed", &["seed", "noise_seed"][..]),
                ("steps", &["steps"][..]),
                ("cfg", &["cfg"][..]),
                ("sampler_name", &["sampler_name"][..]),
                ("scheduler", &["scheduler"][..]),
                ("denoise", &["denoise"][..]),
            ] {
                if let Some(v) = g.sampler_value(id, names) {
                    o.insert(key.into(), v);
                }
            }
            all.push(Value::Object(o));
        }
        params
            .extra
            .insert("comfyui_samplers".into(), Value::Array(all).to_string());
    }

    if let Some(s) = chosen.as_deref() {
        params.seed = g
            .sampler_value(s, &["seed", "noise_seed"])
            .as_ref()
            .and_then(as_u64);
        params.steps = g.sampler_value(s, &["steps"]).as_ref().and_then(as_u64);
        params.cfg_scale = g.sampler_value(s, &["cfg"]).as_ref().and_then(as_f64);
        params.sampler = g
            .sampler_value(s, &["sampler_name"])
            .map(|v| json_to_string(&v));
        params.scheduler = g
            .sampler_value(s, &["scheduler"])
            .map(|v| json_to_string(&v));
        params.denoising_strength = g.sampler_value(s, &["denoise"]).as_ref().and_then(as_f64);

        // Conditioning: on the sampler, or on its guider (SamplerCustomAdvanced).
        let mut cond_node = s.to_owned();
        let has_positive = g.inputs(s).is_some_and(|i| i.contains_key("positive"));
        if !has_positive
            && let Some(guider) = g
                .inputs(s)
                .and_then(|i| i.get("guider"))
                .cloned()
                .and_then(|v| g.follow(s, &v))
        {
            cond_node = guider;
        }
        let positive_input = if g
            .inputs(&cond_node)
            .is_some_and(|i| i.contains_key("positive"))
        {
            "positive"
        } else {
            "conditioning"
        };
        params.prompt = g.texts(&cond_node, positive_input).join("\n");
        params.negative_prompt = g.texts(&cond_node, "negative").join("\n");

        // Model and LoRAs along the model path.
        let model_from = if g.inputs(s).is_some_and(|i| i.contains_key("model")) {
            s.to_owned()
        } else {
            cond_node.clone()
        };
        let mut model = None;
        let mut loras: Vec<Lora> = Vec::new();
        if let Some(start) = g
            .inputs(&model_from)
            .and_then(|i| i.get("model"))
            .cloned()
            .and_then(|v| g.follow(&model_from, &v))
        {
            g.walk(&start, None, &mut |g, id| {
                if let Some(name) = g
                    .scalar(id, &["lora_name"])
                    .and_then(|v| v.as_str().map(str::to_owned))
                {
                    let weight = g
                        .scalar(id, &["strength_model", "strength", "lora_strength"])
                        .as_ref()
                        .and_then(as_f64)
                        .unwrap_or(1.0);
                    if loras.iter().all(|l| l.name != name) {
                        loras.push(Lora {
                            name,
                            weight,
                            hash: None,
                        });
                    }
                }
                if let Some(name) = g
                    .scalar(id, &["ckpt_name", "unet_name", "model_name"])
                    .and_then(|v| v.as_str().map(str::to_owned))
                {
                    model.get_or_insert(name);
                    return false;
                }
                true
            });
        }
        params.model = model;
        params.loras = loras;

        // Clip skip from the positive encoder's CLIP path.
        let mut clip_skip = None;
        if let Some(start) = g
            .inputs(&cond_node)
            .and_then(|i| i.get(positive_input))
            .cloned()
            .and_then(|v| g.follow(&cond_node, &v))
        {
            g.walk(&start, None, &mut |g, id| {
                if clip_skip.is_some() {
                    return false;
                }
                if g.class(id) == Some("CLIPSetLastLayer")
                    && let Some(v) = g
                        .scalar(id, &["stop_at_clip_layer"])
                        .and_then(|v| v.as_i64())
                {
                    clip_skip = u32::try_from(v.unsigned_abs()).ok();
                    return false;
                }
                true
            });
        }
        params.clip_skip = clip_skip;

        // Size from the latent path.
        let mut size = None;
        if let Some(start) = g
            .inputs(s)
            .and_then(|i| i.get("latent_image"))
            .cloned()
            .and_then(|v| g.follow(s, &v))
        {
            g.walk(&start, None, &mut |g, id| {
                if size.is_some() {
                    return false;
                }
                let w = g.scalar(id, &["width"]).as_ref().and_then(as_u64);
                let h = g.scalar(id, &["height"]).as_ref().and_then(as_u64);
                if let (Some(w), Some(h)) = (w, h) {
                    size = Some((w, h));
                    return false;
                }
                true
            });
        }
        if let Some((w, h)) = size {
            params.width = u32::try_from(w).ok();
            params.height = u32::try_from(h).ok();
        }
    }

    // VAE: the first VAE loader in the graph.
    let vae = nodes.keys().find_map(|id| {
        (g.class(id) == Some("VAELoader"))
            .then(|| g.inputs(id)?.get("vae_name")?.as_str().map(str::to_owned))
            .flatten()
    });
    params.vae = vae;
    params.findings.append(&mut g.findings);
    params
}

/// Input names of the widgets of common node types, in `widgets_values` order (ComfyUI
/// `nodes.py` `INPUT_TYPES`; the seed widgets are followed by the UI's `control_after_generate`).
fn widget_names(class: &str) -> &'static [&'static str] {
    match class {
        "KSampler" => &[
            "seed",
            "control_after_generate",
            "steps",
            "cfg",
            "sampler_name",
            "scheduler",
            "denoise",
        ],
        "KSamplerAdvanced" => &[
            "add_noise",
            "noise_seed",
            "control_after_generate",
            "steps",
            "cfg",
            "sampler_name",
            "scheduler",
            "start_at_step",
            "end_at_step",
            "return_with_leftover_noise",
        ],
        "CLIPTextEncode" => &["text"],
        "CheckpointLoaderSimple" => &["ckpt_name"],
        "CheckpointLoader" => &["config_name", "ckpt_name"],
        "EmptyLatentImage" => &["width", "height", "batch_size"],
        "LoraLoader" => &["lora_name", "strength_model", "strength_clip"],
        "LoraLoaderModelOnly" => &["lora_name", "strength_model"],
        "CLIPSetLastLayer" => &["stop_at_clip_layer"],
        "VAELoader" => &["vae_name"],
        "UNETLoader" => &["unet_name", "weight_dtype"],
        _ => &[],
    }
}

/// Builds an API-style graph from a UI workflow (`nodes`, `links`).
fn workflow_to_api(wf: &Value, findings: &mut Vec<String>) -> Map<String, Value> {
    let mut out = Map::new();
    let Some(nodes) = wf.get("nodes").and_then(Value::as_array) else {
        findings.push("ComfyUI workflow has no `nodes` list".to_owned());
        return out;
    };
    // link id -> (origin node id, origin slot)
    let mut links = std::collections::HashMap::new();
    for l in wf
        .get("links")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(a) = l.as_array()
            && a.len() >= 3
        {
            links.insert(a[0].to_string(), (json_to_string(&a[1]), a[2].clone()));
        } else if let Some(o) = l.as_object()
            && let (Some(id), Some(origin)) = (o.get("id"), o.get("origin_id"))
        {
            let slot = o.get("origin_slot").cloned().unwrap_or(Value::from(0));
            links.insert(id.to_string(), (json_to_string(origin), slot));
        }
    }
    for node in nodes {
        let Some(id) = node.get("id") else { continue };
        let id = json_to_string(id);
        let Some(class) = node.get("type").and_then(Value::as_str) else {
            continue;
        };
        // Mode 2 is muted, 4 bypassed (litegraph `LGraphNode.mode`).
        if matches!(node.get("mode").and_then(Value::as_u64), Some(2 | 4)) {
            continue;
        }
        let mut inputs = Map::new();
        for input in node
            .get("inputs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let (Some(name), Some(link)) = (
                input.get("name").and_then(Value::as_str),
                input.get("link").filter(|l| !l.is_null()),
            ) else {
                continue;
            };
            if let Some((origin, slot)) = links.get(&link.to_string()) {
                inputs.insert(
                    name.to_owned(),
                    Value::Array(vec![Value::String(origin.clone()), slot.clone()]),
                );
            }
        }
        if let Some(values) = node.get("widgets_values").and_then(Value::as_array) {
            let mut names: Vec<&str> = widget_names(class).to_vec();
            // Older saves have no `control_after_generate` value.
            if let Some(pos) = names.iter().position(|n| *n == "control_after_generate") {
                let is_control = values.get(pos).and_then(Value::as_str).is_some_and(|s| {
                    matches!(s, "fixed" | "increment" | "decrement" | "randomize")
                });
                if !is_control {
                    names.remove(pos);
                }
            }
            for (name, value) in names.iter().zip(values) {
                inputs
                    .entry((*name).to_owned())
                    .or_insert_with(|| value.clone());
            }
        }
        let mut n = Map::new();
        n.insert("class_type".into(), Value::String(class.to_owned()));
        n.insert("inputs".into(), Value::Object(inputs));
        out.insert(id, Value::Object(n));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRAPH: &str = r#"{
      "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "m.safetensors"}},
      "10": {"class_type": "LoraLoader", "inputs": {"lora_name": "a.safetensors", "strength_model": 0.7, "strength_clip": 1.0, "model": ["4", 0], "clip": ["4", 1]}},
      "11": {"class_type": "CLIPSetLastLayer", "inputs": {"stop_at_clip_layer": -2, "clip": ["10", 1]}},
      "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["11", 0]}},
      "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "ugly", "clip": ["11", 0]}},
      "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 640, "height": 768, "batch_size": 1}},
      "3": {"class_type": "KSampler", "inputs": {"seed": 5, "steps": 25, "cfg": 6.5, "sampler_name": "dpmpp_2m", "scheduler": "karras", "denoise": 1.0, "model": ["10", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}}
    }"#;

    #[test]
    fn sampler_graph_is_followed() {
        let p = parse(Some(GRAPH), None);
        assert_eq!(p.prompt, "a cat");
        assert_eq!(p.negative_prompt, "ugly");
        assert_eq!(p.seed, Some(5));
        assert_eq!(p.steps, Some(25));
        assert_eq!(p.cfg_scale, Some(6.5));
        assert_eq!(p.sampler.as_deref(), Some("dpmpp_2m"));
        assert_eq!(p.scheduler.as_deref(), Some("karras"));
        assert_eq!(p.model.as_deref(), Some("m.safetensors"));
        assert_eq!(p.clip_skip, Some(2));
        assert_eq!((p.width, p.height), (Some(640), Some(768)));
        assert_eq!(
            p.loras,
            [Lora {
                name: "a.safetensors".into(),
                weight: 0.7,
                hash: None
            }]
        );
        assert!(p.findings.is_empty(), "{:?}", p.findings);
    }

    #[test]
    fn cycles_and_missing_nodes_give_partial_results() {
        let g = r#"{
          "1": {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["2", 0], "conditioning_2": ["9", 0]}},
          "2": {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["1", 0], "conditioning_2": ["6", 0]}},
          "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "loop text", "clip": ["99", 1]}},
          "3": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 2, "cfg": 3, "sampler_name": "euler", "scheduler": "normal", "denoise": 1, "model": ["3", 0], "positive": ["1", 0], "negative": ["42", 0], "latent_image": ["3", 0]}}
        }"#;
        let p = parse(Some(g), None);
        assert_eq!(p.prompt, "loop text");
        assert_eq!(p.steps, Some(2));
        assert!(
            p.findings.iter().any(|f| f.contains("cycle")),
            "{:?}",
            p.findings
        );
        assert!(
            p.findings
                .iter()
                .any(|f| f.contains("`42`") && f.contains("missing")),
            "{:?}",
            p.findings
        );
    }

    #[test]
    fn controlnet_apply_splits_positive_and_negative_by_slot() {
        let g = r#"{
          "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat"}},
          "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "ugly"}},
          "9": {"class_type": "ControlNetApplyAdvanced", "inputs": {"positive": ["6", 0], "negative": ["7", 0], "control_net": ["8", 0], "strength": 1.0}},
          "3": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 2, "cfg": 3, "sampler_name": "euler", "scheduler": "normal", "denoise": 1, "positive": ["9", 0], "negative": ["9", 1]}}
        }"#;
        let p = parse(Some(g), None);
        assert_eq!(p.prompt, "a cat");
        assert_eq!(p.negative_prompt, "ugly");
    }

    #[test]
    fn custom_sampler_advanced_reads_its_helper_nodes() {
        let g = r#"{
          "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "flux1-dev.safetensors", "weight_dtype": "default"}},
          "2": {"class_type": "LoraLoaderModelOnly", "inputs": {"lora_name": "x.safetensors", "strength_model": 0.9, "model": ["1", 0]}},
          "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a castle"}},
          "7": {"class_type": "CLIPTextEncode", "inputs": {"text": ""}},
          "22": {"class_type": "CFGGuider", "inputs": {"cfg": 3.5, "model": ["2", 0], "positive": ["6", 0], "negative": ["7", 0]}},
          "25": {"class_type": "RandomNoise", "inputs": {"noise_seed": 123}},
          "16": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
          "17": {"class_type": "BasicScheduler", "inputs": {"scheduler": "simple", "steps": 28, "denoise": 1.0, "model": ["2", 0]}},
          "27": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 1024, "height": 768, "batch_size": 1}},
          "13": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["25", 0], "guider": ["22", 0], "sampler": ["16", 0], "sigmas": ["17", 0], "latent_image": ["27", 0]}}
        }"#;
        let p = parse(Some(g), None);
        assert_eq!(p.prompt, "a castle");
        assert_eq!(p.seed, Some(123));
        assert_eq!(p.steps, Some(28));
        assert_eq!(p.cfg_scale, Some(3.5));
        assert_eq!(p.sampler.as_deref(), Some("euler"));
        assert_eq!(p.scheduler.as_deref(), Some("simple"));
        assert_eq!(p.model.as_deref(), Some("flux1-dev.safetensors"));
        assert_eq!(p.loras[0].weight, 0.9);
        assert_eq!((p.width, p.height), (Some(1024), Some(768)));
    }

    #[test]
    fn invalid_json_is_a_finding() {
        let p = parse(Some("{not json"), None);
        assert_eq!(p.source, Source::ComfyUi);
        assert!(!p.findings.is_empty());
    }

    #[test]
    fn workflow_only_is_read_from_widgets() {
        let wf = r#"{"nodes": [
          {"id": 4, "type": "CheckpointLoaderSimple", "inputs": [], "widgets_values": ["m.ckpt"]},
          {"id": 6, "type": "CLIPTextEncode", "inputs": [{"name": "clip", "link": 1}], "widgets_values": ["a dog"]},
          {"id": 7, "type": "CLIPTextEncode", "inputs": [{"name": "clip", "link": 2}], "widgets_values": ["blurry"]},
          {"id": 5, "type": "EmptyLatentImage", "inputs": [], "widgets_values": [512, 512, 1]},
          {"id": 3, "type": "KSampler", "inputs": [{"name": "model", "link": 3}, {"name": "positive", "link": 4}, {"name": "negative", "link": 5}, {"name": "latent_image", "link": 6}],
           "widgets_values": [77, "randomize", 12, 8, "euler", "normal", 1]}
        ], "links": [[1, 4, 1, 6, 0, "CLIP"], [2, 4, 1, 7, 0, "CLIP"], [3, 4, 0, 3, 0, "MODEL"], [4, 6, 0, 3, 1, "CONDITIONING"], [5, 7, 0, 3, 2, "CONDITIONING"], [6, 5, 0, 3, 3, "LATENT"]]}"#;
        let p = parse(None, Some(wf));
        assert_eq!(p.prompt, "a dog");
        assert_eq!(p.negative_prompt, "blurry");
        assert_eq!(p.seed, Some(77));
        assert_eq!(p.steps, Some(12));
        assert_eq!(p.model.as_deref(), Some("m.ckpt"));
        assert_eq!((p.width, p.height), (Some(512), Some(512)));
    }
}
