//! The reference engines' answers checked against the protocol's OpenAPI
//! file: a scripted session touches every operation, each answer's status
//! must be documented for its operation and its body must fit the
//! documented schema; every operation must have been exercised.

use std::collections::BTreeSet;

use serde_json::{Value, json};

const OPENAPI: &str = include_str!("../../../../docs/engine-protocol.openapi.json");

struct Spec {
    doc: Value,
    exercised: BTreeSet<String>,
}

impl Spec {
    fn load() -> Self {
        Spec {
            doc: serde_json::from_str(OPENAPI).expect("the OpenAPI file is JSON"),
            exercised: BTreeSet::new(),
        }
    }

    /// The path template matching `path`, e.g. `/games/{game}/state`.
    fn template(&self, path: &str) -> Option<String> {
        let parts: Vec<&str> = path.split('?').next().unwrap_or("").split('/').collect();
        self.doc["paths"]
            .as_object()?
            .keys()
            .find(|template| {
                let pattern: Vec<&str> = template.split('/').collect();
                pattern.len() == parts.len()
                    && pattern
                        .iter()
                        .zip(&parts)
                        .all(|(p, a)| p.starts_with('{') || p == a)
            })
            .cloned()
    }

    fn check(&mut self, method: &str, path: &str, status: u16, body: &Value) {
        let template = self
            .template(path)
            .unwrap_or_else(|| panic!("{method} {path}: no such path in the OpenAPI file"));
        let operation = &self.doc["paths"][&template][method.to_lowercase()];
        assert!(
            operation.is_object(),
            "{method} {template}: not in the OpenAPI file"
        );
        self.exercised.insert(format!("{method} {template}"));
        let response = &operation["responses"][status.to_string()];
        assert!(
            response.is_object(),
            "{method} {template}: status {status} is not documented ({body})"
        );
        if let Some(schema) = response.pointer("/content/application~1json/schema")
            && let Err(why) = fits(&self.doc, schema, body, "")
        {
            panic!("{method} {path} → {status}: {why}\n{body}");
        }
    }

    fn operations(&self) -> BTreeSet<String> {
        let mut all = BTreeSet::new();
        for (template, item) in self.doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("operations").keys() {
                all.insert(format!("{} {template}", method.to_uppercase()));
            }
        }
        all
    }
}

/// The subset of JSON Schema the file uses: $ref, type (with null), enum,
/// required, properties, additionalProperties, items.
fn fits(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(reference) = schema["$ref"].as_str() {
        let target = doc
            .pointer(reference.trim_start_matches('#'))
            .ok_or(format!("{reference} is missing"))?;
        return fits(doc, target, value, at);
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let type_ok = types.is_empty()
        || types.iter().any(|t| match *t {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "null" => value.is_null(),
            _ => false,
        });
    if !type_ok {
        return Err(format!("{at}: {value} is not of type {types:?}"));
    }
    if let Some(options) = schema["enum"].as_array()
        && !options.contains(value)
    {
        return Err(format!("{at}: {value} is not one of {options:?}"));
    }
    if let Some(object) = value.as_object() {
        for name in schema["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !object.contains_key(name) {
                return Err(format!("{at}: required field {name} is missing"));
            }
        }
        for (name, field) in object {
            let path = format!("{at}/{name}");
            match schema["properties"].get(name) {
                Some(rule) => fits(doc, rule, field, &path)?,
                None => match &schema["additionalProperties"] {
                    Value::Bool(false) => return Err(format!("{path}: not in the schema")),
                    rule @ Value::Object(_) => fits(doc, rule, field, &path)?,
                    _ => {}
                },
            }
        }
    }
    if let (Some(items), Some(rule)) = (value.as_array(), schema.get("items")) {
        for (index, item) in items.iter().enumerate() {
            fits(doc, rule, item, &format!("{at}/{index}"))?;
        }
    }
    Ok(())
}

async fn call(spec: &mut Spec, base: &str, method: &str, path: &str, body: Option<Value>) -> Value {
    let client = reqwest::Client::new();
    let mut request = client.request(method.parse().expect("method"), format!("{base}{path}"));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let answer = request.send().await.expect("an answer");
    let status = answer.status().as_u16();
    let text = answer.text().await.expect("a body");
    let value = if text.is_empty() || path == "/healthz" {
        Value::Null
    } else {
        serde_json::from_str(&text).expect("JSON")
    };
    spec.check(method, path, status, &value);
    value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_engines_answer_as_the_openapi_file_says() {
    let mut spec = Spec::load();
    for kind in ["conquest", "reversi"] {
        let dir = tempfile::tempdir().expect("temp dir");
        let command = format!(
            "{} {kind} --listen 127.0.0.1:0 --data-dir {}",
            crate::engines_bin(),
            dir.path().display()
        );
        let engine = turnbase_engine_kit::check::Spawned::start(&command)
            .await
            .expect("starts");
        let url = engine.url().to_string();
        let s = &mut spec;
        call(s, &url, "GET", "/healthz", None).await;
        call(s, &url, "GET", "/manifest", None).await;
        let init = json!({"seed": 5, "settings": {}, "players": [{"player_id": "a", "name": "A"}, {"player_id": "b", "name": "B", "bot": true}]});
        call(s, &url, "POST", "/games/g/init", Some(init.clone())).await;
        call(s, &url, "POST", "/games/g/init", Some(init)).await;
        call(
            s,
            &url,
            "POST",
            "/games/bad/init",
            Some(json!({"seed": 1, "players": []})),
        )
        .await;
        call(
            s,
            &url,
            "POST",
            "/games/bad/init",
            Some(json!({"seed": 1, "players": [], "x": 1})),
        )
        .await;
        let state = call(s, &url, "GET", "/games/g/state", None).await;
        let mover = state["to_move"][0].as_str().expect("a mover").to_string();
        let options = call(
            s,
            &url,
            "GET",
            &format!("/games/g/players/{mover}/options"),
            None,
        )
        .await;
        call(
            s,
            &url,
            "PUT",
            &format!("/games/g/players/{mover}/orders"),
            Some(json!({"turn": 1, "orders": [{"nonsense": 1}]})),
        )
        .await;
        call(
            s,
            &url,
            "PUT",
            &format!("/games/g/players/{mover}/orders"),
            Some(json!({"turn": 9, "orders": []})),
        )
        .await;
        call(
            s,
            &url,
            "PUT",
            &format!("/games/g/players/{mover}/orders?dry_run=true"),
            Some(json!({"turn": 1, "orders": options["example"]})),
        )
        .await;
        call(
            s,
            &url,
            "PUT",
            &format!("/games/g/players/{mover}/orders"),
            Some(json!({"turn": 1, "orders": options["example"]})),
        )
        .await;
        let open = call(s, &url, "GET", "/games/g/state", None).await["turn"]
            .as_u64()
            .expect("turn");
        call(
            s,
            &url,
            "POST",
            &format!("/games/g/turns/{open}/resolve"),
            None,
        )
        .await;
        call(
            s,
            &url,
            "POST",
            &format!("/games/g/turns/{open}/resolve"),
            None,
        )
        .await;
        call(s, &url, "POST", "/games/g/turns/99/resolve", None).await;
        call(s, &url, "GET", "/games/g/players/a/view", None).await;
        call(s, &url, "GET", "/games/g/players/a/view?turn=0", None).await;
        call(s, &url, "GET", "/games/g/players/a/view?turn=99", None).await;
        call(s, &url, "GET", "/games/g/players/zed/view", None).await;
        call(
            s,
            &url,
            "PUT",
            "/games/g/players/a/control",
            Some(json!({"bot": true})),
        )
        .await;
        call(
            s,
            &url,
            "PUT",
            "/games/g/players/a/control",
            Some(json!({"bot": "yes"})),
        )
        .await;
        call(s, &url, "GET", "/games/a%20b/state", None).await;
        call(s, &url, "DELETE", "/games/g", None).await;
        // Both seats are bots now: resolve until the game ends, then forget it.
        for _ in 0..200 {
            let state = call(s, &url, "GET", "/games/g/state", None).await;
            if state["finished"] == json!(true) {
                break;
            }
            let turn = state["turn"].as_u64().expect("turn");
            call(
                s,
                &url,
                "POST",
                &format!("/games/g/turns/{turn}/resolve"),
                None,
            )
            .await;
        }
        if kind == "reversi" {
            call(s, &url, "DELETE", "/games/g", None).await;
        }
        engine.stop().await;
    }
    let missing: Vec<String> = spec
        .operations()
        .difference(&spec.exercised)
        .cloned()
        .collect();
    assert!(
        missing.is_empty(),
        "operations never exercised: {missing:?}"
    );
}
