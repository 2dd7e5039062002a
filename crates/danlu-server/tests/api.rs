//! The server bound on `127.0.0.1:0`, driven over real HTTP: A1111's JSON shapes, auth, the
//! listen rule, bad input, the queue, and generation with a tiny checkpoint.

// Test helpers outside `#[test]` functions fail loudly, and fixtures are written directly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use base64::Engine as _;
use danlu_server::{Server, ServerConfig, parse_api_auth};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The tiny SD1 checkpoint (its shapes sidecar beside it).
fn tiny() -> std::path::PathBuf {
    danlu_fixtures::tiny::model_dir().join("sd1_tiny.safetensors")
}

/// Shapes of the tiny checkpoint (written by `scripts/reference`; same as the CLI tests').
struct TestServer {
    base: String,
    root: PathBuf,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl TestServer {
    async fn start(configure: impl FnOnce(&mut ServerConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("webui");
        let mut config = ServerConfig::new(&root);
        config.port = 0;
        configure(&mut config);
        let server = Server::bind(config).await.unwrap();
        let base = format!("http://{}", server.local_addr());
        tokio::spawn(server.run(std::future::pending()));
        Self {
            base,
            root,
            client: reqwest::Client::new(),
            _dir: dir,
        }
    }

    /// A server whose root holds the tiny checkpoint (with its shapes sidecar).
    async fn with_tiny() -> Self {
        Self::with_tiny_config(|_| {}).await
    }

    async fn with_tiny_config(configure: impl FnOnce(&mut ServerConfig)) -> Self {
        let s = Self::start(configure).await;
        let dir = s.root.join("models/Stable-diffusion");
        danlu_fixtures::tiny::install("sd1_tiny", &dir, "tiny").unwrap();
        let r = s.post("/sdapi/v1/refresh-checkpoints", &json!({})).await;
        assert_eq!(r.status(), 200);
        s
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    async fn get_json(&self, path: &str) -> Value {
        let r = self.get(path).await;
        assert_eq!(r.status(), 200, "GET {path}");
        r.json().await.unwrap()
    }

    async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    k.sort_unstable();
    k
}

fn png_with_parameters(text: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    {
        let mut e = png::Encoder::new(&mut bytes, 8, 8);
        e.set_color(png::ColorType::Rgb);
        e.set_depth(png::BitDepth::Eight);
        e.write_header()
            .unwrap()
            .write_image_data(&[128; 8 * 8 * 3])
            .unwrap();
    }
    danlu_pnginfo::write_png_parameters(&bytes, text).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_root_is_created_and_serves_an_empty_library_that_explains_itself() {
    let s = TestServer::start(|_| {}).await;
    assert!(s.root.join("models/Stable-diffusion").is_dir());
    assert!(s.root.join("embeddings").is_dir());
    let status = s.get_json("/danlu/v1/status").await;
    assert_eq!(status["checkpoints"], 0);
    let hint = status["hint"].as_str().unwrap();
    assert!(hint.contains("models/Stable-diffusion"), "{hint}");
    assert_eq!(status["device"], "auto");
    assert_eq!(status["backends"][0], "cpu");
    assert_eq!(s.get_json("/sdapi/v1/sd-models").await, json!([]));
    assert_eq!(s.get_json("/sdapi/v1/loras").await, json!([]));
    assert_eq!(
        s.get_json("/sdapi/v1/embeddings").await,
        json!({"loaded": {}, "skipped": {}})
    );
    // No checkpoint: generation is a clear 404, not a crash.
    let r = s.post("/sdapi/v1/txt2img", &json!({"prompt": "x"})).await;
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert!(body["detail"].as_str().unwrap().contains("no checkpoint"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_endpoints_have_a1111_shapes() {
    let s = TestServer::start(|_| {}).await;
    // A1111 1.10 `samplers_k_diffusion`: the first sampler and its options.
    let samplers = s.get_json("/sdapi/v1/samplers").await;
    let first = &samplers[0];
    assert_eq!(keys(first), ["aliases", "name", "options"]);
    assert_eq!(first["name"], "DPM++ 2M");
    assert_eq!(first["aliases"], json!(["k_dpmpp_2m"]));
    assert_eq!(first["options"]["scheduler"], "karras");
    assert!(
        samplers
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["name"] == "Euler a")
    );
    let schedulers = s.get_json("/sdapi/v1/schedulers").await;
    let karras = schedulers
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "karras")
        .unwrap();
    assert_eq!(
        keys(karras),
        [
            "aliases",
            "default_rho",
            "label",
            "name",
            "need_inner_model"
        ]
    );
    assert_eq!(karras["default_rho"], 7.0);
    let up = s.get_json("/sdapi/v1/upscalers").await;
    assert_eq!(
        keys(&up[0]),
        ["model_name", "model_path", "model_url", "name", "scale"]
    );
    let opts = s.get_json("/sdapi/v1/options").await;
    for k in [
        "sd_model_checkpoint",
        "sd_vae",
        "CLIP_stop_at_last_layers",
        "randn_source",
        "eta_ancestral",
        "eta_ddim",
        "sd_checkpoint_hash",
    ] {
        assert!(opts.get(k).is_some(), "options lack {k}");
    }
    assert_eq!(opts["sd_vae"], "Automatic");
    let flags = s.get_json("/sdapi/v1/cmd-flags").await;
    assert_eq!(flags["listen"], false);
    if cfg!(not(any(feature = "cuda", feature = "metal"))) {
        // A CPU build runs everything on the CPU in float32, as A1111's `--use-cpu all`.
        assert_eq!(flags["use_cpu"], json!(["all"]));
        assert_eq!(flags["no_half"], true);
        assert_eq!(flags["device_id"], Value::Null);
    }
    let mem = s.get_json("/sdapi/v1/memory").await;
    assert!(mem["ram"]["total"].as_u64().unwrap() > 0);
    let progress = s.get_json("/sdapi/v1/progress").await;
    assert_eq!(
        keys(&progress),
        [
            "current_image",
            "eta_relative",
            "progress",
            "queued",
            "state",
            "textinfo"
        ]
    );
    assert_eq!(progress["state"]["job_count"], 0);
    // Every documented GET route answers.
    let doc = s.get_json("/openapi.json").await;
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.contains_key("/sdapi/v1/txt2img"));
    for (path, ops) in paths {
        if ops.get("get").is_some()
            && !["/danlu/v1/preview", "/danlu/v1/events", "/danlu/v1/vae"].contains(&path.as_str())
        {
            assert_eq!(s.get(path).await.status(), 200, "GET {path}");
        }
    }
    // Progress as server-sent events: the first event comes at once.
    let mut events = s.get("/danlu/v1/events").await;
    assert_eq!(events.status(), 200);
    assert!(
        events.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let first = tokio::time::timeout(Duration::from_secs(10), events.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let first = String::from_utf8_lossy(&first);
    assert!(first.contains("event: progress"), "{first}");
    assert!(first.contains("\"job_count\":0"), "{first}");
    drop(events);
    let docs = s.get("/docs").await;
    assert_eq!(docs.status(), 200);
    let ui = s.get("/").await.text().await.unwrap();
    assert!(ui.contains("/ui/app.js"));
    assert_eq!(s.get("/ui/app.js").await.status(), 200);
    assert_eq!(s.get("/ui/style.css").await.status(), 200);
    assert_eq!(s.get("/nope").await.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_auth_guards_every_route() {
    let s = TestServer::start(|c| c.auth = parse_api_auth("alice:secret").unwrap()).await;
    let r = s.get("/sdapi/v1/samplers").await;
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["detail"], "Incorrect username or password");
    assert_eq!(s.get("/").await.status(), 401);
    let bad = s
        .client
        .get(s.url("/sdapi/v1/samplers"))
        .basic_auth("alice", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    let ok = s
        .client
        .get(s.url("/sdapi/v1/samplers"))
        .basic_auth("alice", Some("secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_without_auth_is_refused_before_anything_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("never");
    let mut config = ServerConfig::new(&root);
    config.port = 0;
    config.listen = true;
    let err = Server::bind(config.clone()).await.unwrap_err();
    assert!(err.to_string().contains("--api-auth"), "{err}");
    assert!(!root.exists());
    config.insecure = true;
    let server = Server::bind(config).await.unwrap();
    assert!(server.local_addr().ip().is_unspecified());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_clear_4xx_and_the_server_goes_on() {
    let s = TestServer::start(|c| c.body_limit = 4096).await;
    let malformed = s
        .client
        .post(s.url("/sdapi/v1/txt2img"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 422);
    let body: Value = malformed.json().await.unwrap();
    assert_eq!(body["detail"][0]["loc"], json!(["body"]));
    for bad in [
        json!({"steps": "many"}),
        json!({"width": -64}),
        json!({"steps": 1_000_000}),
        json!({"batch_size": 1000}),
        json!({"sampler_name": "No such sampler"}),
        json!({"override_settings": {"sd_model_checkpoint": "../../etc/passwd"}}),
        json!({"override_settings": {"CLIP_stop_at_last_layers": "two"}}),
    ] {
        let r = s.post("/sdapi/v1/txt2img", &bad).await;
        assert_eq!(r.status(), 422, "{bad}");
    }
    let r = s
        .post(
            "/sdapi/v1/options",
            &json!({"sd_model_checkpoint": "nope.safetensors"}),
        )
        .await;
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(keys(&body), ["body", "detail", "error", "errors"]);
    let r = s.post("/sdapi/v1/png-info", &json!({"image": "%%%"})).await;
    assert_eq!(r.status(), 422);
    let big = s
        .client
        .post(s.url("/sdapi/v1/png-info"))
        .body(vec![b'a'; 10_000])
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 413);
    let upload = s
        .client
        .post(s.url("/danlu/v1/inspect"))
        .header("x-file-name", "../evil.safetensors")
        .body(vec![0u8; 16])
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), 422);
    assert_eq!(s.get("/sdapi/v1/samplers").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn png_info_reads_a1111_parameters() {
    let s = TestServer::start(|_| {}).await;
    let text = "a cat\nNegative prompt: dog\nSteps: 12, Sampler: DPM++ 2M, Schedule type: Karras, \
                CFG scale: 6.5, Seed: 42, Size: 8x8, Model hash: 0123456789, Model: sd15";
    let png = png_with_parameters(text);
    let r = s
        .post(
            "/sdapi/v1/png-info",
            &json!({"image": format!("data:image/png;base64,{}", b64(&png))}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(keys(&v), ["info", "items", "parameters"]);
    assert_eq!(v["info"], text);
    assert_eq!(v["parameters"]["Prompt"], "a cat");
    assert_eq!(v["parameters"]["Steps"], 12);
    assert_eq!(v["parameters"]["Size-1"], 8);
    assert_eq!(v["parameters"]["Seed"], 42);
    // danlu's own: the model the image needs is missing.
    let own: Value = s
        .client
        .post(s.url("/danlu/v1/png-info"))
        .body(png)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(own["params"]["source"], "a1111");
    assert_eq!(own["missing"][0]["name"], "sd15");
    assert_eq!(own["missing"][0]["kind"], "checkpoint");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_model_is_identified_and_filed_where_it_belongs() {
    let s = TestServer::start(|_| {}).await;
    let bytes = std::fs::read(tiny()).unwrap();
    let r = s
        .client
        .post(s.url("/danlu/v1/inspect"))
        .header("x-file-name", "dropped.safetensors")
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["report"]["kind"], "checkpoint");
    let dest = v["destination"].as_str().unwrap();
    assert!(
        dest.ends_with("models/Stable-diffusion/dropped.safetensors"),
        "{dest}"
    );
    let id = v["upload"].as_str().unwrap();
    let placed = s
        .post(&format!("/danlu/v1/uploads/{id}/place"), &json!({}))
        .await;
    assert_eq!(placed.status(), 200);
    assert!(Path::new(dest).is_file());
    let models = s.get_json("/sdapi/v1/sd-models").await;
    // Hashed in the background, the title may already carry its short hash.
    let title = models[0]["title"].as_str().unwrap();
    assert!(
        title == "dropped.safetensors" || title.starts_with("dropped.safetensors ["),
        "{title}"
    );
    assert_eq!(models[0]["model_name"], "dropped");
    assert_eq!(
        keys(&models[0]),
        [
            "config",
            "filename",
            "hash",
            "model_name",
            "sha256",
            "title"
        ]
    );
    let lib = s
        .get_json("/danlu/v1/library?kind=checkpoint&sort=size")
        .await;
    assert_eq!(lib["models"].as_array().unwrap().len(), 1);
    assert_eq!(s.get("/danlu/v1/library?kind=nonsense").await.status(), 422);
    // Placing twice: the upload is gone.
    let again = s
        .post(&format!("/danlu/v1/uploads/{id}/place"), &json!({}))
        .await;
    assert_eq!(again.status(), 404);
}

async fn wait_for_running(s: &TestServer) -> Value {
    for _ in 0..600 {
        let p = s.get_json("/sdapi/v1/progress").await;
        // Hashing and loading count as steps too; a preview comes only from sampling.
        if p["state"]["sampling_step"].as_u64().unwrap_or(0) > 0 && p["current_image"].is_string() {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the job never started sampling");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txt2img_and_img2img_answer_like_a1111() {
    let s = TestServer::with_tiny().await;
    let models = s.get_json("/sdapi/v1/sd-models").await;
    assert_eq!(models[0]["model_name"], "tiny");
    let r = s
        .post(
            "/sdapi/v1/txt2img",
            &json!({
                "prompt": "a red house", "steps": 2, "width": 64, "height": 64,
                "seed": 1234, "n_iter": 2, "sampler_name": "Euler a",
                "override_settings": {"randn_source": "CPU"},
                "an_unknown_field": {"ignored": true}
            }),
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(keys(&v), ["images", "info", "parameters"]);
    assert_eq!(v["parameters"]["steps"], 2);
    assert_eq!(
        v["parameters"]["cfg_scale"], 7.0,
        "A1111's default is echoed"
    );
    let images = v["images"].as_array().unwrap();
    assert_eq!(images.len(), 2);
    let info: Value = serde_json::from_str(v["info"].as_str().unwrap()).unwrap();
    assert_eq!(info["all_seeds"], json!([1234, 1235]));
    assert_eq!(info["seed"], 1234);
    assert_eq!(info["sd_model_name"], "tiny");
    assert_eq!(info["sampler_name"], "Euler a");
    for k in [
        "infotexts",
        "all_prompts",
        "job_timestamp",
        "sd_model_hash",
        "clip_skip",
    ] {
        assert!(info.get(k).is_some(), "info lacks {k}");
    }
    let opts = s.get_json("/sdapi/v1/options").await;
    assert_eq!(
        opts["randn_source"], "GPU",
        "override_settings applied to that request only"
    );
    let infotext = info["infotexts"][1].as_str().unwrap();
    assert!(infotext.contains("Seed: 1235"), "{infotext}");
    // The PNG carries the same parameters, read back by png-info.
    let back: Value = s
        .post("/sdapi/v1/png-info", &json!({"image": images[1]}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(back["info"], infotext);
    assert_eq!(back["parameters"]["Seed"], 1235);
    // Made again from the PNG alone, through the queue: the same parameters.
    let png = base64::engine::general_purpose::STANDARD
        .decode(images[0].as_str().unwrap())
        .unwrap();
    let again: Value = s
        .client
        .post(s.url("/danlu/v1/reproduce?run=true"))
        .body(png)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["plan"]["blockers"], json!([]), "{again}");
    // Rows whose expectation is unknown (an unhashed library file has no expected hash) are
    // left out; every other field must match.
    let rows = again["comparison"].as_array().unwrap();
    assert!(rows.iter().any(|r| r["field"] == "seed"));
    for r in rows.iter().filter(|r| !r["expected"].is_null()) {
        assert_eq!(r["equal"], true, "{r}");
    }
    assert_eq!(again["parameters"], info["infotexts"][0]);

    let r = s
        .post(
            "/sdapi/v1/img2img",
            &json!({
                "init_images": [images[0]], "prompt": "a blue house", "steps": 2,
                "width": 64, "height": 64, "seed": 7, "denoising_strength": 0.5,
                "override_settings": {"CLIP_stop_at_last_layers": 2},
                "override_settings_restore_afterwards": false
            }),
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["images"].as_array().unwrap().len(), 1);
    assert!(
        v["parameters"]["init_images"].is_null(),
        "init images are not echoed"
    );
    let info: Value = serde_json::from_str(v["info"].as_str().unwrap()).unwrap();
    assert_eq!(info["denoising_strength"], 0.5);
    assert_eq!(info["clip_skip"], 2);
    // A LoRA tag naming nothing installed is a warning, not a failure.
    let r = s
        .post(
            "/sdapi/v1/txt2img",
            &json!({"prompt": "a house <lora:nothing_here:0.5>", "steps": 1, "width": 64, "height": 64}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let info: Value = serde_json::from_str(v["info"].as_str().unwrap()).unwrap();
    let warnings = info["warnings"].to_string();
    assert!(warnings.contains("nothing_here"), "{warnings}");
    let opts = s.get_json("/sdapi/v1/options").await;
    assert_eq!(
        opts["CLIP_stop_at_last_layers"], 2,
        "kept: restore_afterwards was false"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_queue_one_at_a_time_and_interrupt_keeps_what_is_done() {
    let s = TestServer::with_tiny().await;
    let long = json!({"prompt": "x", "steps": 150, "width": 64, "height": 64, "seed": 1,
                      "n_iter": 40, "force_task_id": "long"});
    let first = {
        let (client, url, body) = (s.client.clone(), s.url("/sdapi/v1/txt2img"), long.clone());
        tokio::spawn(async move { client.post(url).json(&body).send().await.unwrap() })
    };
    let p = wait_for_running(&s).await;
    assert_eq!(p["state"]["job_count"], 40);
    // A live preview as a base64 PNG.
    let preview = p["current_image"]
        .as_str()
        .expect("a preview while sampling");
    let png = base64::engine::general_purpose::STANDARD
        .decode(preview)
        .unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    // A second job waits behind the first, its place visible.
    let second = {
        let (client, url) = (s.client.clone(), s.url("/sdapi/v1/txt2img"));
        tokio::spawn(async move {
            client
                .post(url)
                .json(
                    &json!({"prompt": "y", "steps": 1, "width": 64, "height": 64,
                              "force_task_id": "short"}),
                )
                .send()
                .await
                .unwrap()
        })
    };
    let mut placed = false;
    for _ in 0..200 {
        let q = s.get_json("/danlu/v1/queue").await;
        let jobs = q["jobs"].as_array().unwrap();
        if jobs
            .iter()
            .any(|j| j["task"] == "short" && j["position"] == 1)
        {
            assert!(
                jobs.iter()
                    .any(|j| j["task"] == "long" && j["position"] == 0)
            );
            placed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(placed, "the second job never showed in the queue");
    assert_eq!(
        s.post("/sdapi/v1/interrupt", &json!({})).await.status(),
        200
    );
    let r = first.await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let info: Value = serde_json::from_str(v["info"].as_str().unwrap()).unwrap();
    assert_eq!(info["interrupted"], true);
    assert!(v["images"].as_array().unwrap().len() < 40);
    // The queue goes on with the second job.
    let r = second.await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["images"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_mid_job_stops_it_and_skip_drops_one_batch() {
    let s = TestServer::with_tiny().await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(1500))
        .build()
        .unwrap();
    let gone = impatient
        .post(s.url("/sdapi/v1/txt2img"))
        .json(&json!({"prompt": "x", "steps": 150, "width": 64, "height": 64, "n_iter": 40}))
        .send()
        .await;
    assert!(gone.is_err(), "the client should have timed out");
    let mut idle = false;
    for _ in 0..400 {
        let p = s.get_json("/sdapi/v1/progress").await;
        if p["state"]["job_count"] == 0 {
            idle = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(idle, "the abandoned job kept running");
    // Skip: three batches, the first skipped while it samples.
    let job = {
        let (client, url) = (s.client.clone(), s.url("/sdapi/v1/txt2img"));
        tokio::spawn(async move {
            client
                .post(url)
                .json(
                    &json!({"prompt": "x", "steps": 150, "width": 64, "height": 64,
                              "seed": 10, "n_iter": 3}),
                )
                .send()
                .await
                .unwrap()
        })
    };
    let p = wait_for_running(&s).await;
    assert_eq!(p["state"]["job_no"], 0);
    assert_eq!(s.post("/sdapi/v1/skip", &json!({})).await.status(), 200);
    let v: Value = job.await.unwrap().json().await.unwrap();
    let info: Value = serde_json::from_str(v["info"].as_str().unwrap()).unwrap();
    assert_eq!(
        info["all_seeds"],
        json!([11, 12]),
        "batch 0 (seed 10) was skipped"
    );
}

/// SHA-256 of a file as hex (A1111's `sha256`; its first 10 digits are the short hash).
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A1111's old hash (`modules/sd_models.py` `model_hash`): SHA-256 of the 64 KiB at 1 MiB, 8
/// digits.
fn autov1_hex(bytes: &[u8]) -> String {
    sha256_hex(&bytes[0x10_0000..0x11_0000])[..8].to_owned()
}

async fn wait_for_hashed(s: &TestServer) -> Value {
    for _ in 0..1200 {
        let models = s.get_json("/sdapi/v1/sd-models").await;
        if models
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["sha256"].is_string())
        {
            return models;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the library was never hashed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_are_hashed_in_the_background_and_titles_gain_the_short_hash() {
    let s = TestServer::with_tiny().await;
    let bytes = std::fs::read(tiny()).unwrap();
    let (full, short) = (sha256_hex(&bytes), sha256_hex(&bytes)[..10].to_owned());
    let models = wait_for_hashed(&s).await;
    assert_eq!(models[0]["sha256"], full.as_str());
    assert_eq!(models[0]["hash"], autov1_hex(&bytes).as_str());
    assert_eq!(models[0]["title"], format!("tiny.safetensors [{short}]"));
    let opts = s.get_json("/sdapi/v1/options").await;
    assert_eq!(
        opts["sd_model_checkpoint"],
        format!("tiny.safetensors [{short}]")
    );
    assert_eq!(opts["sd_checkpoint_hash"], full.as_str());
    // A file added later is hashed after the refresh that finds it.
    let dir = s.root.join("models/Stable-diffusion");
    danlu_fixtures::tiny::install("sd1_tiny", &dir, "later").unwrap();
    let r = s.post("/sdapi/v1/refresh-checkpoints", &json!({})).await;
    assert_eq!(r.status(), 200);
    let models = wait_for_hashed(&s).await;
    let titles: Vec<&str> = models
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["title"].as_str().unwrap())
        .collect();
    assert_eq!(
        titles,
        [
            format!("later.safetensors [{short}]"),
            format!("tiny.safetensors [{short}]")
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_is_hashed_when_loaded_and_images_are_saved_when_asked() {
    let s = TestServer::with_tiny_config(|c| c.hash_in_background = false).await;
    let models = s.get_json("/sdapi/v1/sd-models").await;
    assert!(models[0]["sha256"].is_null(), "no background hashing here");
    let body = json!({"prompt": "a red house", "steps": 1, "width": 64, "height": 64,
                      "seed": 1234, "n_iter": 2, "save_images": true});
    let r = s.post("/sdapi/v1/txt2img", &body).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let bytes = std::fs::read(tiny()).unwrap();
    let full = sha256_hex(&bytes);
    let info: Value = serde_json::from_str(v["info"].as_str().unwrap()).unwrap();
    assert_eq!(info["sd_model_hash"], &full[..10]);
    // Hashed on load, and stored: the list and the title know it now.
    let models = s.get_json("/sdapi/v1/sd-models").await;
    assert_eq!(models[0]["sha256"], full.as_str());
    assert_eq!(
        models[0]["title"],
        format!("tiny.safetensors [{}]", &full[..10])
    );
    // Saved as A1111 names them: outputs/txt2img-images/DATE/NNNNN-SEED.png, the same bytes.
    let day_dirs: Vec<PathBuf> = std::fs::read_dir(s.root.join("outputs/txt2img-images"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(day_dirs.len(), 1);
    let day = day_dirs[0]
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        day.len() == 10 && day.as_bytes()[4] == b'-' && day.as_bytes()[7] == b'-',
        "{day}"
    );
    let images = v["images"].as_array().unwrap();
    for (i, (name, image)) in ["00000-1234.png", "00001-1235.png"]
        .iter()
        .zip(images)
        .enumerate()
    {
        let saved = std::fs::read(day_dirs[0].join(name)).unwrap();
        let sent = base64::engine::general_purpose::STANDARD
            .decode(image.as_str().unwrap())
            .unwrap();
        assert_eq!(saved, sent, "image {i}");
    }
    // The API's default is not to save; numbering goes on after the files present.
    let mut quiet = body.clone();
    quiet["save_images"] = json!(false);
    assert_eq!(s.post("/sdapi/v1/txt2img", &quiet).await.status(), 200);
    assert_eq!(std::fs::read_dir(&day_dirs[0]).unwrap().count(), 2);
    let mut one = body.clone();
    one["n_iter"] = json!(1);
    one["seed"] = json!(5);
    assert_eq!(s.post("/sdapi/v1/txt2img", &one).await.status(), 200);
    assert!(day_dirs[0].join("00002-5.png").is_file());
    // img2img goes to its own folder; the init image is resized to the request's size.
    let init = b64(&png_with_parameters("x"));
    let r = s
        .post(
            "/sdapi/v1/img2img",
            &json!({"init_images": [init], "steps": 2, "width": 64, "height": 64, "seed": 3,
                    "resize_mode": 1, "save_images": true}),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let saved: Vec<PathBuf> = std::fs::read_dir(s.root.join("outputs/img2img-images"))
        .unwrap()
        .map(|e| e.unwrap().path().join("00000-3.png"))
        .collect();
    assert!(saved[0].is_file(), "{saved:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn img2img_settings_out_of_range_are_422() {
    let s = TestServer::with_tiny_config(|c| c.hash_in_background = false).await;
    let init = b64(&png_with_parameters("x"));
    let mask = b64(&png_with_parameters("mask"));
    for (extra, needle) in [
        (json!({"resize_mode": 3}), "resize_mode"),
        (json!({"resize_mode": 9}), "resize_mode"),
        (
            json!({"mask": mask, "inpaint_full_res_padding": -1}),
            "inpaint_full_res_padding",
        ),
        (
            json!({"mask": mask, "inpaint_full_res": false, "inpainting_fill": 7}),
            "inpainting_fill",
        ),
        (
            json!({"mask": mask, "inpaint_full_res": false, "mask_blur": -1}),
            "mask_blur",
        ),
        (
            json!({"mask": mask, "inpaint_full_res": false, "inpainting_mask_invert": 2}),
            "inpainting_mask_invert",
        ),
        (
            json!({"mask": "bm90IGEgcG5n", "inpaint_full_res": false}),
            "mask",
        ),
    ] {
        let mut body = json!({"init_images": [init], "steps": 1, "width": 64, "height": 64});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let r = s.post("/sdapi/v1/img2img", &body).await;
        assert_eq!(r.status(), 422, "{extra}");
        let text = r.text().await.unwrap();
        assert!(text.contains(needle), "{extra}: {text}");
    }
}

/// A grey 8-bit PNG.
fn grey_png(width: u32, height: u32, pixel: impl Fn(u32, u32) -> u8) -> Vec<u8> {
    let data: Vec<u8> = (0..height)
        .flat_map(|y| (0..width).map(move |x| (x, y)))
        .map(|(x, y)| pixel(x, y))
        .collect();
    let mut bytes = Vec::new();
    {
        let mut e = png::Encoder::new(&mut bytes, width, height);
        e.set_color(png::ColorType::Grayscale);
        e.set_depth(png::BitDepth::Eight);
        e.write_header().unwrap().write_image_data(&data).unwrap();
    }
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn img2img_with_a_mask_inpaints_and_writes_a1111s_mask_fields() {
    let s = TestServer::with_tiny_config(|c| c.hash_in_background = false).await;
    let init = b64(&png_with_parameters("x"));
    // The left half is repainted; the mask (32x32) is resized to the request's size like the
    // init image (8x8).
    let mask = b64(&grey_png(32, 32, |x, _| if x < 16 { 255 } else { 0 }));
    let r = s
        .post(
            "/sdapi/v1/img2img",
            &json!({"init_images": [init], "mask": mask, "inpaint_full_res": false,
                    "inpainting_fill": 1, "mask_blur_x": 2, "mask_blur_y": 2,
                    "inpainting_mask_invert": 1, "steps": 2, "width": 64, "height": 64,
                    "seed": 11, "denoising_strength": 0.5, "sampler_name": "Euler"}),
        )
        .await;
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{v}");
    let info: Value = serde_json::from_str(v["info"].as_str().unwrap()).unwrap();
    let infotext = info["infotexts"][0].as_str().unwrap();
    assert!(infotext.contains("Mask blur: 2"), "{infotext}");
    assert!(
        infotext.contains("Mask mode: Inpaint not masked"),
        "{infotext}"
    );
    assert_eq!(info["all_seeds"], json!([11]));
    // `mask_blur` sets both directions (A1111's property).
    let r = s
        .post(
            "/sdapi/v1/img2img",
            &json!({"init_images": [init], "mask": mask, "inpaint_full_res": false,
                    "mask_blur": 3, "steps": 2, "width": 64, "height": 64, "seed": 11,
                    "denoising_strength": 0.5}),
        )
        .await;
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{v}");
    let info: Value = serde_json::from_str(v["info"].as_str().unwrap()).unwrap();
    let infotext = info["infotexts"][0].as_str().unwrap();
    assert!(infotext.contains("Mask blur: 3"), "{infotext}");
    assert!(infotext.contains("Masked content: fill"), "{infotext}");
}

/// RGB pixels of a PNG.
fn png_pixels(png_bytes: &[u8]) -> (u32, u32, Vec<u8>) {
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_masked_inpaints_a_region_at_the_requested_size_and_pastes_it_back() {
    let s = TestServer::with_tiny_config(|c| c.hash_in_background = false).await;
    // A 96x64 picture; the mask is a small square near the top left.
    let init = grey_png(96, 64, |x, y| ((x * 5) ^ (y * 3)) as u8);
    let mask = grey_png(96, 64, |x, y| {
        if (8..20).contains(&x) && (8..20).contains(&y) {
            255
        } else {
            0
        }
    });
    let r = s
        .post(
            "/sdapi/v1/img2img",
            &json!({"init_images": [b64(&init)], "mask": b64(&mask), "inpaint_full_res": true,
                    "inpaint_full_res_padding": 4, "inpainting_fill": 1, "steps": 2,
                    "width": 64, "height": 64, "seed": 5, "denoising_strength": 0.9}),
        )
        .await;
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{v}");
    let info: Value = serde_json::from_str(v["info"].as_str().unwrap()).unwrap();
    let infotext = info["infotexts"][0].as_str().unwrap();
    for field in [
        "Inpaint area: Only masked",
        "Masked area padding: 4",
        "Mask blur: 4",
    ] {
        assert!(infotext.contains(field), "{field}: {infotext}");
    }
    let png = base64::engine::general_purpose::STANDARD
        .decode(v["images"][0].as_str().unwrap())
        .unwrap();
    // The picture keeps its own size; far from the mask it is the original, pixel for pixel.
    let (w, h, made) = png_pixels(&png);
    assert_eq!((w, h), (96, 64));
    let original = |x: u32, y: u32| ((x * 5) ^ (y * 3)) as u8;
    for (x, y) in [(95, 63), (60, 10), (10, 60), (90, 0)] {
        let i = ((y * w + x) * 3) as usize;
        assert_eq!(made[i..i + 3], [original(x, y); 3], "({x}, {y})");
    }
    // Inside the mask the picture was repainted.
    let changed = (10..18)
        .flat_map(|y| (10..18).map(move |x| (x, y)))
        .filter(|&(x, y)| made[((y * w + x) * 3) as usize] != original(x, y))
        .count();
    assert!(changed > 0, "nothing repainted inside the mask");
}
