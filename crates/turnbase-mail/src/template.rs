//! Mail templates: a subject, a plain-text body and an optional HTML body
//! with `{{name}}` placeholders. Values are inserted as they are into the
//! subject and text, and HTML-escaped into the HTML, so a display name can
//! never inject markup into a mail.
//!
//! A template names the values that are secrets (a sign-in code). A mail
//! rendered from it carries, beside what is sent, a subject with those
//! values masked: the only subject anyone sees of it after it was queued
//! (the admin API), and the one kept once its body is erased.

use std::collections::BTreeMap;

#[derive(Debug, Clone)]
pub struct Template {
    pub subject: &'static str,
    pub text: &'static str,
    pub html: Option<&'static str>,
    /// Placeholders whose values are secrets.
    pub secrets: &'static [&'static str],
}

/// What stands in for a secret value in a masked subject.
pub const MASK: &str = "******";

/// A template filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
    /// The subject with the template's secrets masked; `Some` exactly when
    /// the template declares secrets, and the mail then counts as carrying
    /// one.
    pub masked_subject: Option<String>,
}

impl Rendered {
    pub fn carries_secret(&self) -> bool {
        self.masked_subject.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("the template uses {{{{{0}}}}} but no value was given for it")]
    MissingValue(String),
    #[error("the template has an unclosed placeholder")]
    Unclosed,
}

impl Template {
    pub fn render(&self, values: &BTreeMap<&str, String>) -> Result<Rendered, TemplateError> {
        // Header injection: a subject never spans lines.
        let one_line = |v: &str| v.replace(['\r', '\n'], " ");
        let subject = fill(self.subject, values, one_line)?;
        let masked_subject = if self.secrets.is_empty() {
            None
        } else {
            let masked: BTreeMap<&str, String> = values
                .iter()
                .map(|(k, v)| {
                    let shown = if self.secrets.contains(k) {
                        MASK.to_string()
                    } else {
                        v.clone()
                    };
                    (*k, shown)
                })
                .collect();
            Some(fill(self.subject, &masked, one_line)?)
        };
        Ok(Rendered {
            subject,
            masked_subject,
            text: fill(self.text, values, |v| v.to_string())?,
            html: self
                .html
                .map(|h| fill(h, values, escape_html))
                .transpose()?,
        })
    }
}

fn fill(
    template: &str,
    values: &BTreeMap<&str, String>,
    encode: impl Fn(&str) -> String,
) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or(TemplateError::Unclosed)?;
        let name = after[..end].trim();
        let value = values
            .get(name)
            .ok_or_else(|| TemplateError::MissingValue(name.to_string()))?;
        out.push_str(&encode(value));
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TURN: Template = Template {
        subject: "Turn {{turn}} of {{game}}",
        text: "Hello {{name}},\nturn {{turn}} has run.",
        html: Some("<p>Hello {{ name }}, turn {{turn}} has run.</p>"),
        secrets: &[],
    };

    fn values(name: &str) -> BTreeMap<&'static str, String> {
        BTreeMap::from([
            ("name", name.to_string()),
            ("turn", "3".to_string()),
            ("game", "Galaxy\r\nBcc: evil@example.org".to_string()),
        ])
    }

    #[test]
    fn values_are_escaped_in_html_only_and_subjects_stay_on_one_line() {
        let r = TURN
            .render(&values("<b>Ann & \"Bo\"</b>"))
            .expect("renders");
        assert_eq!(r.subject, "Turn 3 of Galaxy  Bcc: evil@example.org");
        assert_eq!(r.text, "Hello <b>Ann & \"Bo\"</b>,\nturn 3 has run.");
        assert_eq!(
            r.html.as_deref(),
            Some("<p>Hello &lt;b&gt;Ann &amp; &quot;Bo&quot;&lt;/b&gt;, turn 3 has run.</p>")
        );
    }

    #[test]
    fn missing_values_and_broken_templates_are_errors() {
        let mut v = values("Ann");
        v.remove("turn");
        assert_eq!(
            TURN.render(&v),
            Err(TemplateError::MissingValue("turn".into()))
        );
        let broken = Template {
            subject: "Hi {{name",
            text: "",
            html: None,
            secrets: &[],
        };
        assert_eq!(broken.render(&values("Ann")), Err(TemplateError::Unclosed));
    }

    #[test]
    fn secrets_are_masked_in_the_shown_subject_only() {
        let code = Template {
            subject: "Code {{code}} for {{name}}",
            text: "{{code}}",
            html: None,
            secrets: &["code"],
        };
        let v = BTreeMap::from([("code", "123456".to_string()), ("name", "Ann".to_string())]);
        let r = code.render(&v).expect("renders");
        assert_eq!(r.subject, "Code 123456 for Ann");
        assert_eq!(r.text, "123456");
        assert_eq!(r.masked_subject.as_deref(), Some("Code ****** for Ann"));
        assert!(r.carries_secret());
        assert_eq!(
            TURN.render(&values("Ann")).expect("renders").masked_subject,
            None
        );
    }
}
