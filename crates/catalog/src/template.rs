//! `{name}` placeholders in provider URLs, filled from settings and captured values.

use std::collections::BTreeMap;

use crate::CatalogError;

/// The placeholder names in `template`, in order.
pub(crate) fn placeholders(template: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else { break };
        names.push(&after[..close]);
        rest = &after[close + 1..];
    }
    names
}

/// `template` with every placeholder replaced by its value.
pub(crate) fn render(
    template: &str,
    values: &BTreeMap<String, String>,
) -> Result<String, CatalogError> {
    let mut out = template.to_owned();
    for name in placeholders(template) {
        let value = values
            .get(name)
            .ok_or_else(|| CatalogError::MissingSetting(name.to_owned()))?;
        out = out.replace(&format!("{{{name}}}"), value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_and_fills_placeholders() {
        let template = "https://{shop}.myshopify.com/admin/{version}/x";
        assert_eq!(placeholders(template), vec!["shop", "version"]);
        let values = BTreeMap::from([
            ("shop".to_string(), "acme".to_string()),
            ("version".to_string(), "v1".to_string()),
        ]);
        assert_eq!(
            render(template, &values).unwrap(),
            "https://acme.myshopify.com/admin/v1/x"
        );
        let err = render("https://{missing}.example", &values).unwrap_err();
        assert!(matches!(err, CatalogError::MissingSetting(name) if name == "missing"));
    }
}
