//! Free-form tags: string keys to string values, carried by every entity and searchable.

use std::collections::BTreeMap;

use crate::InvalidValue;

const MAX_TAGS: usize = 64;
const MAX_KEY_LEN: usize = 64;
const MAX_VALUE_LEN: usize = 512;

/// Validated tags. Keys are 1–64 characters of `[A-Za-z0-9._/:-]`; values at most 512 bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct Tags(BTreeMap<String, String>);

impl Tags {
    pub fn parse(map: BTreeMap<String, String>) -> Result<Self, InvalidValue> {
        if map.len() > MAX_TAGS {
            return Err(InvalidValue::new(
                "tags",
                format!("at most {MAX_TAGS} tags"),
            ));
        }
        for (key, value) in &map {
            check_key(key)?;
            if value.len() > MAX_VALUE_LEN {
                let reason = format!("value of {key:?} is longer than {MAX_VALUE_LEN} bytes");
                return Err(InvalidValue::new("tags", reason));
            }
        }
        Ok(Self(map))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Whether every filter matches one of these tags.
    pub fn matches(&self, filters: &[TagFilter]) -> bool {
        filters
            .iter()
            .all(|f| self.get(&f.key) == Some(f.value.as_str()))
    }
}

fn check_key(key: &str) -> Result<(), InvalidValue> {
    let valid = !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._/:-".contains(&b));
    if valid {
        Ok(())
    } else {
        let reason = format!("key {key:?} must be 1-{MAX_KEY_LEN} characters of [A-Za-z0-9._/:-]");
        Err(InvalidValue::new("tags", reason))
    }
}

impl<'de> serde::Deserialize<'de> for Tags {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<String, String>::deserialize(d)?;
        Self::parse(map).map_err(serde::de::Error::custom)
    }
}

/// One `key=value` condition of a tag search.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagFilter {
    pub key: String,
    pub value: String,
}

impl TagFilter {
    /// Parses `key=value` (the value may itself contain `=`).
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let Some((key, value)) = raw.split_once('=') else {
            return Err(InvalidValue::new(
                "tag",
                format!("{raw:?} must be key=value"),
            ));
        };
        check_key(key).map_err(|e| InvalidValue::new("tag", e.reason))?;
        Ok(Self {
            key: key.to_owned(),
            value: value.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_and_match_all_conditions() {
        let tags: Tags = serde_json::from_str(r#"{"plan":"pro","region":"eu=west"}"#).unwrap();
        let plan = TagFilter::parse("plan=pro").unwrap();
        let region = TagFilter::parse("region=eu=west").unwrap();
        assert_eq!(region.value, "eu=west");
        assert!(tags.matches(&[plan.clone(), region]));
        assert!(!tags.matches(&[plan, TagFilter::parse("plan2=pro").unwrap()]));
        assert!(TagFilter::parse("novalue").is_err());
        assert!(TagFilter::parse("=x").is_err());
    }

    #[test]
    fn bad_keys_are_rejected_with_the_reason() {
        let err = serde_json::from_str::<Tags>(r#"{"has space":"x"}"#).unwrap_err();
        assert!(err.to_string().contains("has space"), "{err}");
    }
}
