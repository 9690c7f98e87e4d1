//! Mail templates: a subject, a plain-text body and an optional HTML body
//! with `{{name}}` placeholders. Values are inserted as they are into the
//! subject and text, and HTML-escaped into the HTML, so a display name can
//! never inject markup into a mail.

use std::collections::BTreeMap;

#[derive(Debug, Clone)]
pub struct Template {
    pub subject: &'static str,
    pub text: &'static str,
    pub html: Option<&'static str>,
}

/// A template filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
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
        let subject = fill(self.subject, values, |v| v.replace(['\r', '\n'], " "))?;
        Ok(Rendered {
            subject,
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
        };
        assert_eq!(broken.render(&values("Ann")), Err(TemplateError::Unclosed));
    }
}
