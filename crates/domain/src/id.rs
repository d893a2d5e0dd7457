//! Identifiers. User-chosen slugs for connectors and integrations, generated prefixed ids for
//! everything Splice creates, and tenant ids as the application names them.

use std::fmt;

use rand::RngCore;

use crate::InvalidValue;

/// Whether `s` matches `^[a-z0-9][a-z0-9-]{0,62}$`.
fn is_slug(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

macro_rules! string_id {
    ($(#[$meta:meta])* $name:ident, $field:literal, $check:expr, $rule:literal) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Validates `value`, naming the rule it breaks.
            pub fn parse(value: &str) -> Result<Self, InvalidValue> {
                let check: fn(&str) -> bool = $check;
                if check(value) {
                    Ok(Self(value.to_owned()))
                } else {
                    Err(InvalidValue::new($field, format!("{value:?} must match {}", $rule)))
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                Self::parse(&raw).map_err(serde::de::Error::custom)
            }
        }

        impl std::str::FromStr for $name {
            type Err = InvalidValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }
    };
}

string_id!(
    /// A connector's id, chosen by the user.
    ConnectorId, "id", is_slug, "^[a-z0-9][a-z0-9-]{0,62}$"
);
string_id!(
    /// An integration's id, chosen by the user.
    IntegrationId, "id", is_slug, "^[a-z0-9][a-z0-9-]{0,62}$"
);
string_id!(
    /// A tenant of the application, named by the application.
    TenantId, "tenant", is_tenant, "^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"
);

fn is_tenant(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"._:@-".contains(b))
}

/// 128 random bits as lowercase hex: unguessable, so a session id can sit in a public URL.
fn random_suffix() -> String {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

macro_rules! generated_id {
    ($(#[$meta:meta])* $name:ident, $prefix:literal) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A new random id.
            pub fn generate() -> Self {
                Self(format!("{}{}", $prefix, random_suffix()))
            }

            /// Accepts an id this type generated (prefix plus 32 lowercase hex digits).
            pub fn parse(value: &str) -> Result<Self, InvalidValue> {
                let valid = value.strip_prefix($prefix).is_some_and(|rest| {
                    rest.len() == 32 && rest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                });
                if valid {
                    Ok(Self(value.to_owned()))
                } else {
                    let reason = format!("{value:?} is not a {} id", $prefix);
                    Err(InvalidValue::new("id", reason))
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                Self::parse(&raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

generated_id!(
    /// An install's id (`ins_…`).
    InstallId, "ins_"
);
generated_id!(
    /// An identity's id (`idn_…`).
    IdentityId, "idn_"
);
generated_id!(
    /// A session's id (`ses_…`).
    SessionId, "ses_"
);
generated_id!(
    /// An event's id (`evt_…`).
    EventId, "evt_"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_follow_the_documented_pattern() {
        for good in ["a", "idp", "my-connector-2", "0abc", &"a".repeat(63)] {
            assert!(ConnectorId::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "A", "a_b", "a b", "é", &"a".repeat(64)] {
            let err = ConnectorId::parse(bad).unwrap_err();
            assert_eq!(err.field, "id", "{bad}");
        }
    }

    #[test]
    fn tenants_allow_common_application_ids() {
        for good in ["acme", "user@example.com", "org:42", "a.b-c"] {
            assert!(TenantId::parse(good).is_ok(), "{good}");
        }
        for bad in ["", " acme", "a/b", "a\nb", &"t".repeat(129)] {
            assert!(TenantId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn generated_ids_round_trip_and_reject_other_prefixes() {
        let id = SessionId::generate();
        assert!(id.as_str().starts_with("ses_"));
        assert_eq!(id.as_str().len(), 36);
        assert_eq!(SessionId::parse(id.as_str()).unwrap(), id);
        assert!(InstallId::parse(id.as_str()).is_err());
        assert!(SessionId::parse("ses_XYZ").is_err());
        assert_ne!(SessionId::generate(), SessionId::generate());
    }
}
