//! Game settings: the small JSON Schema subset a manifest may use, a builder
//! that writes such a schema, and the validator that checks a settings
//! object against it and fills in the defaults.
//!
//! The subset is what a lobby needs to draw a form and what the platform
//! can check without running the engine: one flat object whose properties
//! are integers (`minimum`, `maximum`), numbers (the same), booleans, or
//! strings (`enum`, `minLength`, `maxLength`), each with a `default` and
//! optionally a `title` and `description`; `additionalProperties` is false.
//! Because the validator reads the schema itself, an engine written in any
//! language gets the same checks from the platform as a kit engine gets
//! from the kit.

use serde_json::{Map, Value, json};

use crate::protocol::Problem;

/// One setting, for [`schema`].
#[derive(Debug, Clone)]
pub struct Setting {
    name: &'static str,
    description: &'static str,
    kind: SettingKind,
}

#[derive(Debug, Clone)]
enum SettingKind {
    Integer {
        min: i64,
        max: i64,
        default: i64,
    },
    Choice {
        values: &'static [&'static str],
        default: &'static str,
    },
    Boolean {
        default: bool,
    },
}

impl Setting {
    /// An integer in `min..=max`.
    pub fn integer(
        name: &'static str,
        description: &'static str,
        min: i64,
        max: i64,
        default: i64,
    ) -> Self {
        Setting {
            name,
            description,
            kind: SettingKind::Integer { min, max, default },
        }
    }

    /// One of a fixed list of strings.
    pub fn choice(
        name: &'static str,
        description: &'static str,
        values: &'static [&'static str],
        default: &'static str,
    ) -> Self {
        Setting {
            name,
            description,
            kind: SettingKind::Choice { values, default },
        }
    }

    pub fn boolean(name: &'static str, description: &'static str, default: bool) -> Self {
        Setting {
            name,
            description,
            kind: SettingKind::Boolean { default },
        }
    }
}

/// The JSON Schema of a settings object made of `settings`.
pub fn schema(settings: &[Setting]) -> Value {
    let mut properties = Map::new();
    for setting in settings {
        let property = match &setting.kind {
            SettingKind::Integer { min, max, default } => json!({
                "type": "integer", "minimum": min, "maximum": max, "default": default,
            }),
            SettingKind::Choice { values, default } => json!({
                "type": "string", "enum": values, "default": default,
            }),
            SettingKind::Boolean { default } => json!({"type": "boolean", "default": default}),
        };
        let mut property = property;
        if let Some(object) = property.as_object_mut() {
            object.insert("description".into(), json!(setting.description));
        }
        properties.insert(setting.name.to_string(), property);
    }
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": false,
        "properties": properties,
    })
}

/// Checks that `schema` keeps to the subset and that every property has a
/// default its own rules accept. Each problem's path points into the schema.
pub fn check_schema(schema: &Value) -> Vec<Problem> {
    let mut problems = Vec::new();
    let Some(root) = schema.as_object() else {
        return vec![Problem::new("", "the settings schema must be an object")];
    };
    if root.get("type") != Some(&json!("object")) {
        problems.push(Problem::new("/type", "must be \"object\""));
    }
    if root.get("additionalProperties") != Some(&json!(false)) {
        problems.push(Problem::new("/additionalProperties", "must be false"));
    }
    for key in root.keys() {
        if !matches!(
            key.as_str(),
            "$schema" | "type" | "additionalProperties" | "properties" | "title" | "description"
        ) {
            problems.push(Problem::new(
                format!("/{key}"),
                "keyword outside the settings subset",
            ));
        }
    }
    let Some(properties) = root.get("properties").and_then(Value::as_object) else {
        problems.push(Problem::new("/properties", "must be an object"));
        return problems;
    };
    for (name, property) in properties {
        let at = format!("/properties/{}", escape_pointer(name));
        let Some(object) = property.as_object() else {
            problems.push(Problem::new(at, "must be an object"));
            continue;
        };
        let kind = object.get("type").and_then(Value::as_str).unwrap_or("");
        let allowed: &[&str] = match kind {
            "integer" | "number" => &["minimum", "maximum"],
            "string" => &["enum", "minLength", "maxLength"],
            "boolean" => &[],
            _ => {
                problems.push(Problem::new(
                    format!("{at}/type"),
                    "must be integer, number, string or boolean",
                ));
                continue;
            }
        };
        for key in object.keys() {
            let common = matches!(key.as_str(), "type" | "default" | "title" | "description");
            if !common && !allowed.contains(&key.as_str()) {
                problems.push(Problem::new(
                    format!("{at}/{key}"),
                    format!("keyword outside the settings subset for a {kind}"),
                ));
            }
        }
        match object.get("default") {
            None => problems.push(Problem::new(
                format!("{at}/default"),
                "a default is required",
            )),
            Some(default) => {
                if let Err(reason) = check_value(object, default) {
                    problems.push(Problem::new(
                        format!("{at}/default"),
                        format!("the default breaks its own rule: {reason}"),
                    ));
                }
            }
        }
    }
    problems
}

/// Validates `input` (a settings object, possibly partial) against `schema`
/// and returns it with every missing property set to its default. Each
/// problem names the property (a JSON pointer into the settings) and the
/// rule it breaks.
pub fn apply(schema: &Value, input: &Value) -> Result<Value, Vec<Problem>> {
    let empty = Map::new();
    let properties = schema
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let Some(given) = input.as_object() else {
        return Err(vec![Problem::new("", "settings must be a JSON object")]);
    };
    let mut problems = Vec::new();
    let mut out = Map::new();
    for (name, value) in given {
        let at = format!("/{}", escape_pointer(name));
        match properties.get(name).and_then(Value::as_object) {
            None => problems.push(Problem::new(at, "unknown setting")),
            Some(rule) => match check_value(rule, value) {
                Ok(()) => {
                    out.insert(name.clone(), value.clone());
                }
                Err(reason) => problems.push(Problem::new(at, reason)),
            },
        }
    }
    for (name, rule) in properties {
        if !out.contains_key(name)
            && !given.contains_key(name)
            && let Some(default) = rule.get("default")
        {
            out.insert(name.clone(), default.clone());
        }
    }
    if problems.is_empty() {
        Ok(Value::Object(out))
    } else {
        Err(problems)
    }
}

/// Checks one value against one property's rules.
fn check_value(rule: &Map<String, Value>, value: &Value) -> Result<(), String> {
    match rule.get("type").and_then(Value::as_str).unwrap_or("") {
        "integer" => {
            let Some(number) = value.as_i64() else {
                return Err(format!("must be an integer, got {}", describe(value)));
            };
            check_range(rule, number as f64)
        }
        "number" => {
            let Some(number) = value.as_f64() else {
                return Err(format!("must be a number, got {}", describe(value)));
            };
            check_range(rule, number)
        }
        "boolean" => match value {
            Value::Bool(_) => Ok(()),
            other => Err(format!("must be true or false, got {}", describe(other))),
        },
        "string" => {
            let Some(text) = value.as_str() else {
                return Err(format!("must be a string, got {}", describe(value)));
            };
            if let Some(values) = rule.get("enum").and_then(Value::as_array)
                && !values.iter().any(|v| v == value)
            {
                let names: Vec<String> = values.iter().map(Value::to_string).collect();
                return Err(format!("must be one of {}", names.join(", ")));
            }
            let chars = text.chars().count() as u64;
            if let Some(min) = rule.get("minLength").and_then(Value::as_u64)
                && chars < min
            {
                return Err(format!("must be at least {min} characters long"));
            }
            if let Some(max) = rule.get("maxLength").and_then(Value::as_u64)
                && chars > max
            {
                return Err(format!("must be at most {max} characters long"));
            }
            Ok(())
        }
        other => Err(format!("the schema gives an unsupported type {other:?}")),
    }
}

fn check_range(rule: &Map<String, Value>, number: f64) -> Result<(), String> {
    if let Some(min) = rule.get("minimum").and_then(Value::as_f64)
        && number < min
    {
        return Err(format!("must be at least {}", show_number(min)));
    }
    if let Some(max) = rule.get("maximum").and_then(Value::as_f64)
        && number > max
    {
        return Err(format!("must be at most {}", show_number(max)));
    }
    Ok(())
}

fn show_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    }
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Escapes a name for a JSON pointer (RFC 6901).
pub fn escape_pointer(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Value {
        schema(&[
            Setting::integer("planets", "How many planets", 4, 500, 30),
            Setting::choice("timeout", "On timeout", &["pass", "forfeit"], "pass"),
            Setting::boolean("fog", "Fog of war", true),
        ])
    }

    #[test]
    fn built_schemas_keep_to_the_subset() {
        assert_eq!(check_schema(&sample()), vec![]);
    }

    #[test]
    fn defaults_fill_what_is_missing() {
        let filled = apply(&sample(), &json!({"planets": 12})).expect("valid");
        assert_eq!(
            filled,
            json!({"planets": 12, "timeout": "pass", "fog": true})
        );
    }

    #[test]
    fn every_problem_names_the_field_and_rule() {
        let cases = [
            (json!({"planets": 3}), "/planets", "must be at least 4"),
            (json!({"planets": 501}), "/planets", "must be at most 500"),
            (
                json!({"planets": 4.5}),
                "/planets",
                "must be an integer, got a number",
            ),
            (
                json!({"planets": "9"}),
                "/planets",
                "must be an integer, got a string",
            ),
            (
                json!({"timeout": "never"}),
                "/timeout",
                "must be one of \"pass\", \"forfeit\"",
            ),
            (
                json!({"fog": 1}),
                "/fog",
                "must be true or false, got an integer",
            ),
            (json!({"colour": "red"}), "/colour", "unknown setting"),
            (json!({"a/b": 1}), "/a~1b", "unknown setting"),
            (json!([1]), "", "settings must be a JSON object"),
        ];
        for (input, path, reason) in cases {
            let problems = apply(&sample(), &input).expect_err("invalid");
            assert_eq!(problems, vec![Problem::new(path, reason)], "{input}");
        }
    }

    #[test]
    fn schemas_outside_the_subset_are_named() {
        let bad = json!({
            "type": "object",
            "properties": {
                "a": {"type": "integer", "minimum": 5, "default": 1},
                "b": {"type": "array", "default": []},
                "c": {"type": "string", "pattern": "x", "default": "x"},
                "d": {"type": "boolean"},
            },
            "oneOf": [],
        });
        let paths: Vec<String> = check_schema(&bad).into_iter().map(|p| p.path).collect();
        assert_eq!(
            paths,
            [
                "/additionalProperties",
                "/oneOf",
                "/properties/a/default",
                "/properties/b/type",
                "/properties/c/pattern",
                "/properties/d/default",
            ]
        );
    }
}
