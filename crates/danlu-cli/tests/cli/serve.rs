//! `danlu serve`: the listen rule, and a fresh root created and served.

use crate::util::{TestEnv, s, stderr};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::Stdio;

#[test]
fn listen_without_api_auth_is_refused_and_creates_nothing() {
    let env = TestEnv::new();
    let root = env.path("webui");
    let o = env.run(&["serve", "--root", s(&root), "--listen", "--port", "0"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--api-auth"), "{}", stderr(&o));
    assert!(!root.exists());
}

#[test]
fn a_fresh_root_is_created_in_a1111_layout_and_served() {
    let env = TestEnv::new();
    let root = env.path("webui");
    let mut child = env
        .cmd()
        .args(["--json", "serve", "--root", s(&root), "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The one JSON document says where it listens.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut doc = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        doc.push_str(&line);
        if line == "}" {
            break;
        }
    }
    let report: serde_json::Value = serde_json::from_str(&doc).unwrap();
    let url = report["url"].as_str().unwrap();
    let host = url.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    write!(
        stream,
        "GET /danlu/v1/status HTTP/1.0\r\nHost: {host}\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    // The server runs the networks, so it re-executed itself under the allocator settings.
    let environ = std::fs::read(format!("/proc/{}/environ", child.id()));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    assert!(answer.contains("\"checkpoints\":0"), "{answer}");
    assert!(root.join("models/Stable-diffusion").is_dir());
    assert!(root.join("models/Lora").is_dir());
    if cfg!(all(target_os = "linux", target_env = "gnu"))
        && std::env::var_os("GLIBC_TUNABLES").is_none()
    {
        // The variable is there. glibc tokenises it in place in the process it starts (each
        // `:` becomes a NUL), so only its first setting may still read as the value.
        let environ = environ.unwrap();
        let value = environ
            .split(|&b| b == 0)
            .find_map(|v| v.strip_prefix(b"GLIBC_TUNABLES="))
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        let ours = danlu_diffusion::allocator::GLIBC_TUNABLES;
        assert!(
            !value.is_empty() && ours.starts_with(&value),
            "GLIBC_TUNABLES={value:?}, not {ours:?}"
        );
    }
}
