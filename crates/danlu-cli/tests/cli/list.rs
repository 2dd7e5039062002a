//! `danlu list`: filters by kind, base and category.

use crate::scan::{Model, json, library};
use crate::util::{TestEnv, s};

#[test]
fn list_filters_by_kind_base_and_category() {
    let env = TestEnv::new();
    let root = library(&env, "lib", true);
    let r = s(&root);
    let all: Vec<Model> = json(&env.run(&["list", "--root", r, "--json"]));
    assert_eq!(all.len(), 14);
    let mut paths: Vec<&str> = all.iter().map(|m| m.path.as_str()).collect();
    let sorted = {
        let mut p = paths.clone();
        p.sort();
        p
    };
    assert_eq!(paths, sorted, "sorted by path");
    paths.clear();
    let loras: Vec<Model> = json(&env.run(&["list", "--root", r, "--json", "--kind", "lora"]));
    assert_eq!(loras.len(), 7);
    let xl: Vec<Model> = json(&env.run(&[
        "list", "--root", r, "--json", "--kind", "lora", "--base", "sdxl",
    ]));
    assert_eq!(xl.len(), 1);
    assert_eq!(xl[0].name, "xl_detail");
    assert_eq!(xl[0].subformat.as_deref(), Some("locon"));
    let ckpts: Vec<Model> =
        json(&env.run(&["list", "--root", r, "--json", "--kind", "checkpoint"]));
    assert_eq!(ckpts.len(), 3);
    let real: Vec<Model> =
        json(&env.run(&["list", "--root", r, "--json", "--category", "realistic"]));
    assert_eq!(real.len(), 1);
    assert_eq!(real[0].name, "style1");
    let bad = env.run(&["list", "--root", r, "--kind", "lorax"]);
    assert_eq!(bad.status.code(), Some(2));
    let text = crate::util::stdout(&env.run(&["list", "--root", r, "--kind", "embedding"]));
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(
        text.lines()
            .all(|l| l.contains("embedding") && l.contains("sd1")),
        "{text}"
    );
}
