//! Configuration primitives shared by every Turnbase process.
//!
//! A process declares its variables as a list of [`VarSpec`]s. [`Source`]
//! layers the optional TOML file under the environment, and [`Reader`] parses
//! each variable while collecting every problem, so that an operator sees all
//! mistakes in one message instead of fixing them one restart at a time.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// `var!("NAME", Some("default"), "meaning")`: one [`VarSpec`], written
/// the way the processes' variable lists read best.
#[macro_export]
macro_rules! var {
    ($name:literal, $default:expr, $help:literal) => {
        $crate::config::VarSpec {
            name: $name,
            default: $default,
            help: $help,
        }
    };
}

/// One configuration variable: its name, its default as text (parsed like a
/// value from the environment) and a one-line meaning for the README table.
#[derive(Debug, Clone, Copy)]
pub struct VarSpec {
    pub name: &'static str,
    /// `None` means the variable is optional and unset by default, or required
    /// when the reader asks for it with [`Reader::required`].
    pub default: Option<&'static str>,
    pub help: &'static str,
}

/// A value that must never be printed: `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The wrapped value. Callers use it at the point of use only.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Every problem found in a configuration, each naming its variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The variable (or file) the problem is about.
    pub subject: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "invalid configuration ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  {}: {}", p.subject, p.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Where each variable's text comes from: the environment, else the TOML file.
#[derive(Debug, Clone, Default)]
pub struct Source {
    values: BTreeMap<String, String>,
    problems: Vec<Problem>,
}

impl Source {
    /// Layers `env` over the optional TOML `file`. In the file, a variable is
    /// written as its name without the prefix, in lower case
    /// (`BACKEND_HTTP_ADDR` is `http_addr`). Unknown keys and unknown
    /// prefixed environment variables are reported as problems, since they
    /// are almost always typos.
    pub fn load(
        prefix: &str,
        specs: &[VarSpec],
        env: impl IntoIterator<Item = (String, String)>,
        file: Option<&Path>,
    ) -> Self {
        let mut source = Source::default();
        let known = |name: &str| specs.iter().any(|s| s.name == name);
        if let Some(path) = file {
            source.load_file(prefix, path, &known);
        }
        for (name, value) in env {
            if !name.starts_with(prefix) {
                continue;
            }
            if !known(&name) {
                let hint = closest(&name, specs)
                    .map(|s| format!(" (did you mean {s}?)"))
                    .unwrap_or_default();
                source.problems.push(Problem {
                    subject: name,
                    message: format!("unknown variable{hint}"),
                });
                continue;
            }
            // An empty value means "unset", so `FOO=` falls back to the default.
            if value.trim().is_empty() {
                source.values.remove(&name);
            } else {
                source.values.insert(name, value);
            }
        }
        source
    }

    fn load_file(&mut self, prefix: &str, path: &Path, known: &dyn Fn(&str) -> bool) {
        let subject = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) => {
                self.problems.push(Problem {
                    subject,
                    message: format!("cannot read config file: {err}"),
                });
                return;
            }
        };
        let table: toml::Table = match text.parse() {
            Ok(table) => table,
            Err(err) => {
                self.problems.push(Problem {
                    subject,
                    message: format!("not valid TOML: {}", err.message()),
                });
                return;
            }
        };
        for (key, value) in table {
            let name = format!("{prefix}{}", key.to_ascii_uppercase());
            if key.chars().any(|c| c.is_ascii_uppercase()) || !known(&name) {
                self.problems.push(Problem {
                    subject: format!("{subject}: {key}"),
                    message: "unknown key".into(),
                });
                continue;
            }
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Array(items) => {
                    let mut parts = Vec::new();
                    for item in items {
                        match item {
                            toml::Value::String(s) => parts.push(s),
                            other => parts.push(other.to_string()),
                        }
                    }
                    parts.join(",")
                }
                other => {
                    self.problems.push(Problem {
                        subject: format!("{subject}: {key}"),
                        message: format!(
                            "expected a string, number or list, found {}",
                            other.type_str()
                        ),
                    });
                    continue;
                }
            };
            self.values.insert(name, text);
        }
    }

    /// Sets a value as if it came from the environment; used by `turnbase up`
    /// for its embedded defaults, which the real environment still overrides.
    pub fn set_default(&mut self, name: &str, value: &str) {
        self.values
            .entry(name.to_string())
            .or_insert_with(|| value.to_string());
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }
}

fn closest<'a>(name: &str, specs: &'a [VarSpec]) -> Option<&'a str> {
    specs
        .iter()
        .map(|s| (edit_distance(name, s.name), s.name))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, n)| n)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(row[j]).min(cur)
            };
            prev = cur;
        }
    }
    row[b.len()]
}

/// Parses variables out of a [`Source`], collecting problems as it goes.
///
/// A value that fails to parse is reported and replaced by its default, so
/// the caller can keep building its config struct; [`Reader::finish`] then
/// refuses the whole config if anything was reported.
pub struct Reader<'a> {
    source: &'a Source,
    specs: &'a [VarSpec],
    problems: Vec<Problem>,
}

impl<'a> Reader<'a> {
    pub fn new(source: &'a Source, specs: &'a [VarSpec]) -> Self {
        Self {
            source,
            specs,
            problems: source.problems.clone(),
        }
    }

    fn spec(&self, name: &str) -> &VarSpec {
        self.specs
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("{name} is read but missing from the variable list"))
    }

    /// A variable with a default in its spec.
    pub fn get<T>(&mut self, name: &'static str, parse: fn(&str) -> Result<T, String>) -> T {
        let default = self
            .spec(name)
            .default
            .unwrap_or_else(|| panic!("{name} is read with a default but its spec has none"));
        let fallback = || {
            parse(default)
                .unwrap_or_else(|e| panic!("the default of {name} ({default:?}) must parse: {e}"))
        };
        match self.source.get(name) {
            None => fallback(),
            Some(text) => match parse(text.trim()) {
                Ok(v) => v,
                Err(message) => {
                    self.report(name, message);
                    fallback()
                }
            },
        }
    }

    /// A variable that is unset by default.
    pub fn optional<T>(
        &mut self,
        name: &'static str,
        parse: fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        self.spec(name);
        let text = self.source.get(name)?;
        match parse(text.trim()) {
            Ok(v) => Some(v),
            Err(message) => {
                self.report(name, message);
                None
            }
        }
    }

    /// A variable that must be set.
    pub fn required<T>(
        &mut self,
        name: &'static str,
        parse: fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        if self.source.get(name).is_none() {
            self.report(name, "is required but not set".into());
            return None;
        }
        self.optional(name, parse)
    }

    /// Reports a problem found while checking variables against each other.
    pub fn report(&mut self, subject: &str, message: String) {
        self.problems.push(Problem {
            subject: subject.to_string(),
            message,
        });
    }

    pub fn has_problem(&self, name: &str) -> bool {
        self.problems.iter().any(|p| p.subject == name)
    }

    pub fn finish(self) -> Result<(), ConfigError> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError {
                problems: self.problems,
            })
        }
    }
}

/// Longer durations are mistakes, and refusing them keeps deadline
/// arithmetic far from overflow.
const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Parses durations such as `500ms`, `30s`, `5m`, `720h`, or `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration (expected e.g. 500ms, 30s, 5m, 720h)");
    let text = text.trim();
    if text.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86_400),
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        let part = u32::try_from(number)
            .ok()
            .and_then(|n| unit.checked_mul(n))
            .ok_or_else(|| format!("{text:?} is too long a duration"))?;
        total = total
            .checked_add(part)
            .filter(|t| *t <= MAX_DURATION)
            .ok_or_else(|| format!("{text:?} is too long a duration"))?;
    }
    Ok(total)
}

/// A duration that must be greater than zero.
pub fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

/// Parses a byte size: `1048576`, `64KiB`, `1MiB`, `2GiB`, `500KB`, `1MB`.
pub fn parse_byte_size(text: &str) -> Result<u64, String> {
    let bad = || format!("{text:?} is not a size (expected e.g. 65536, 64KiB, 1MiB)");
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    if split == 0 {
        return Err(bad());
    }
    let number: u64 = text[..split].parse().map_err(|_| bad())?;
    let factor: u64 = match text[split..].trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1000,
        "KiB" => 1024,
        "MB" => 1000 * 1000,
        "MiB" => 1024 * 1024,
        "GB" => 1000 * 1000 * 1000,
        "GiB" => 1024 * 1024 * 1024,
        _ => return Err(bad()),
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

pub fn parse_socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not a socket address (expected e.g. 127.0.0.1:8080)"))
}

pub fn parse_u32_positive(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(0) => Err("must be greater than zero".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{text:?} is not a positive whole number")),
    }
}

/// A count above zero that fits in memory (connections, slots, events).
pub fn parse_usize_positive(text: &str) -> Result<usize, String> {
    let n = parse_u32_positive(text)?;
    usize::try_from(n).map_err(|_| format!("{text:?} is too large"))
}

/// A byte size above zero (`512KiB`, `4MiB`), as a `usize`.
pub fn parse_size_positive(text: &str) -> Result<usize, String> {
    match parse_byte_size(text)? {
        0 => Err("must be greater than zero".into()),
        n => usize::try_from(n).map_err(|_| format!("{text:?} is too large")),
    }
}

pub fn parse_string(text: &str) -> Result<String, String> {
    Ok(text.to_string())
}

pub fn parse_secret(text: &str) -> Result<Secret<String>, String> {
    Ok(Secret::new(text.to_string()))
}

pub fn parse_bool(text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!(
            "{text:?} is not a boolean (expected true or false)"
        )),
    }
}

/// Comma-separated list, blanks removed.
pub fn parse_list(text: &str) -> Result<Vec<String>, String> {
    Ok(text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect())
}

/// Parses one of a fixed set of lower-case words.
/// `count/period`, e.g. `5/15m`: a rate for [`crate::limiter::RateLimiter`].
pub fn parse_rate(text: &str) -> Result<crate::limiter::Rate, String> {
    let (count, per) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?} is not a rate like 5/15m"))?;
    let count = count
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{text:?}: the count before / must be a whole number above zero"))?;
    let per = parse_positive_duration(per.trim())?;
    Ok(crate::limiter::Rate { count, per })
}

pub fn parse_choice<T: Copy>(text: &str, choices: &[(&str, T)]) -> Result<T, String> {
    let lower = text.to_ascii_lowercase();
    choices
        .iter()
        .find(|(word, _)| *word == lower)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let words: Vec<&str> = choices.iter().map(|(w, _)| *w).collect();
            format!("{text:?} is not one of {}", words.join(", "))
        })
}

/// Renders the variables as the Markdown table kept in the README.
pub fn markdown_table(specs: &[VarSpec]) -> String {
    let mut out = String::from("| Variable | Default | Meaning |\n| --- | --- | --- |\n");
    for s in specs {
        let default = match s.default {
            Some(d) => format!("`{d}`"),
            None => "—".into(),
        };
        out.push_str(&format!("| `{}` | {} | {} |\n", s.name, default, s.help));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let cases: &[(&str, Result<u64, ()>)] = &[
            ("500ms", Ok(500)),
            ("30s", Ok(30_000)),
            ("5m", Ok(300_000)),
            ("720h", Ok(2_592_000_000)),
            ("1h30m", Ok(5_400_000)),
            ("2d", Ok(172_800_000)),
            ("0s", Ok(0)),
            (" 10s ", Ok(10_000)),
            ("", Err(())),
            ("30", Err(())),
            ("s", Err(())),
            ("nonsense", Err(())),
            ("-5s", Err(())),
            ("1.5s", Err(())),
            ("10 s", Err(())),
            ("5w", Err(())),
            ("99999999999999999999h", Err(())),
            ("4294967295h4294967295h", Err(())),
        ];
        for (text, want) in cases {
            let got = parse_duration(text)
                .map(|d| d.as_millis() as u64)
                .map_err(|_| ());
            assert_eq!(&got, want, "parse_duration({text:?})");
        }
    }

    #[test]
    fn sizes() {
        let cases: &[(&str, Option<u64>)] = &[
            ("1024", Some(1024)),
            ("64KiB", Some(65_536)),
            ("1MiB", Some(1_048_576)),
            ("1MB", Some(1_000_000)),
            ("2GiB", Some(2_147_483_648)),
            ("10 KiB", Some(10_240)),
            ("KiB", None),
            ("1TiB", None),
            ("-1", None),
            ("99999999999999999999GiB", None),
        ];
        for (text, want) in cases {
            assert_eq!(
                parse_byte_size(text).ok(),
                *want,
                "parse_byte_size({text:?})"
            );
        }
    }

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2".to_string());
        assert_eq!(format!("{s:?} {s}"), "*** ***");
        assert_eq!(s.expose(), "hunter2");
    }

    const SPECS: &[VarSpec] = &[
        VarSpec {
            name: "T_ADDR",
            default: Some("127.0.0.1:1"),
            help: "",
        },
        VarSpec {
            name: "T_WAIT",
            default: Some("5s"),
            help: "",
        },
        VarSpec {
            name: "T_NEEDED",
            default: None,
            help: "",
        },
    ];

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reader_collects_every_problem() {
        let source = Source::load(
            "T_",
            SPECS,
            env(&[("T_WAIT", "forever"), ("T_ADRR", "x"), ("OTHER", "ignored")]),
            None,
        );
        let mut r = Reader::new(&source, SPECS);
        let wait = r.get("T_WAIT", parse_duration);
        assert_eq!(wait, Duration::from_secs(5), "falls back to the default");
        let _ = r.required("T_NEEDED", parse_string);
        let err = r.finish().expect_err("three problems");
        let subjects: Vec<&str> = err.problems.iter().map(|p| p.subject.as_str()).collect();
        assert_eq!(subjects, ["T_ADRR", "T_WAIT", "T_NEEDED"]);
        let text = err.to_string();
        assert!(
            text.starts_with("invalid configuration (3 problems):"),
            "{text}"
        );
        assert!(text.contains("did you mean T_ADDR?"), "{text}");
    }

    #[test]
    fn environment_wins_over_file_and_empty_means_unset() {
        let dir = std::env::temp_dir().join(format!("turnbase-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("c.toml");
        std::fs::write(&file, "addr = \"127.0.0.1:9\"\nwait = \"7s\"\n").expect("write");
        let source = Source::load(
            "T_",
            SPECS,
            env(&[("T_WAIT", "9s"), ("T_NEEDED", "")]),
            Some(&file),
        );
        let mut r = Reader::new(&source, SPECS);
        assert_eq!(r.get("T_WAIT", parse_duration), Duration::from_secs(9));
        assert_eq!(r.get("T_ADDR", parse_socket_addr).port(), 9);
        assert_eq!(r.optional("T_NEEDED", parse_string), None);
        r.finish().expect("valid");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn bad_files_are_reported() {
        let dir = std::env::temp_dir().join(format!("turnbase-config-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("c.toml");
        std::fs::write(&file, "adr = \"x\"\nWAIT = \"1s\"\n").expect("write");
        let source = Source::load("T_", SPECS, Vec::new(), Some(&file));
        let err = Reader::new(&source, SPECS)
            .finish()
            .expect_err("unknown keys");
        assert_eq!(err.problems.len(), 2, "{err}");
        std::fs::write(&file, "addr = [").expect("write");
        let source = Source::load("T_", SPECS, Vec::new(), Some(&file));
        let err = Reader::new(&source, SPECS).finish().expect_err("bad toml");
        assert!(err.to_string().contains("not valid TOML"), "{err}");
        let missing = dir.join("missing.toml");
        let source = Source::load("T_", SPECS, Vec::new(), Some(&missing));
        let err = Reader::new(&source, SPECS)
            .finish()
            .expect_err("missing file");
        assert!(err.to_string().contains("cannot read config file"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(text in ".{0,40}") {
            let _ = parse_duration(&text);
            let _ = parse_byte_size(&text);
            let _ = parse_bool(&text);
        }
    }
}
