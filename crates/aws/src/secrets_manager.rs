//! The admin password from AWS Secrets Manager (`postgres.admin_password_secret`): which secret
//! and JSON key, reading it with the process's AWS identity, and naming every failure by the
//! secret (never its value) and the IAM action that fixes it.

use std::fmt;

use crate::identity::{AwsContext, AwsError};
use serde::{Deserialize, Serialize};

use base::Secret;

pub use base::secret::{check_strength, WeakPassword, MIN_PASSWORD_LEN};

/// `postgres.admin_password_secret`: a secret ARN or name, optionally with the JSON key that
/// holds the password — `arn:aws:secretsmanager:…:secret:NAME:password`, `NAME:password`, or
/// `{ secret = "…", key = "password" }` (the shape RDS rotation writes: `username`, `password`…).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretRef {
    /// The ARN or name of the secret.
    pub secret: String,
    /// The JSON key holding the password; unset: the whole secret string is the password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(k) => write!(f, "{} (JSON key `{k}`)", self.secret),
            None => f.write_str(&self.secret),
        }
    }
}

impl SecretRef {
    /// Parses the one-string form the way ECS `valueFrom` does: an ARN's 8th field, or what
    /// follows the first `:` of a name, is the JSON key.
    pub fn parse(raw: &str) -> Result<SecretRef, String> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err("must not be empty: give a secret ARN or name".into());
        }
        let (secret, key) = if raw.starts_with("arn:") {
            let fields: Vec<&str> = raw.split(':').collect();
            if fields.len() < 7 || fields[2] != "secretsmanager" || fields[5] != "secret" {
                return Err(format!(
                    "`{raw}` is not a Secrets Manager ARN (arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME[:JSON_KEY])"
                ));
            }
            if fields.len() > 8 {
                return Err(format!(
                    "`{raw}`: version stages and ids are not supported; give ARN[:JSON_KEY] (the AWSCURRENT version is read)"
                ));
            }
            (
                fields[..7].join(":"),
                fields.get(7).map(|k| (*k).to_owned()),
            )
        } else {
            match raw.split_once(':') {
                Some((name, key)) => (name.to_owned(), Some(key.to_owned())),
                None => (raw.to_owned(), None),
            }
        };
        if key.as_deref().is_some_and(str::is_empty) {
            return Err(format!("`{raw}` ends with `:` but names no JSON key"));
        }
        Ok(SecretRef { secret, key })
    }

    /// The region in the ARN, when the secret is given by ARN.
    pub fn arn_region(&self) -> Option<&str> {
        self.secret
            .starts_with("arn:")
            .then(|| self.secret.split(':').nth(3))
            .flatten()
            .filter(|r| !r.is_empty())
    }
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Table { secret: String, key: Option<String> },
        }
        match Raw::deserialize(d)? {
            Raw::Text(s) => SecretRef::parse(&s).map_err(serde::de::Error::custom),
            Raw::Table { secret, key } => {
                let mut r = SecretRef::parse(&secret).map_err(serde::de::Error::custom)?;
                if key.is_some() {
                    if r.key.is_some() {
                        return Err(serde::de::Error::custom(
                            "give the JSON key either in `secret` or in `key`, not both",
                        ));
                    }
                    r.key = key;
                }
                Ok(r)
            }
        }
    }
}

/// Why the admin password could not be read from Secrets Manager. Every message names the
/// secret, never its value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    #[error("Secrets Manager secret `{secret}` was not found in region {region}; check postgres.admin_password_secret (ARN or name) and the region")]
    NotFound { secret: String, region: String },
    #[error("access to Secrets Manager secret `{secret}` was denied ({detail}); grant secretsmanager:GetSecretValue on it to the task role (and kms:Decrypt on its key if it uses a customer managed KMS key)")]
    AccessDenied { secret: String, detail: String },
    #[error("Secrets Manager secret `{secret}` could not be decrypted ({detail}); grant kms:Decrypt on the secret's KMS key to the task role")]
    Decryption { secret: String, detail: String },
    #[error("Secrets Manager secret `{secret}` holds binary data, not a string; store the password as the secret string")]
    Binary { secret: String },
    #[error("Secrets Manager secret `{secret}` is not a JSON object, so it has no key `{key}`; drop the key from postgres.admin_password_secret or store JSON such as {{\"password\": \"…\"}}")]
    NotJson { secret: String, key: String },
    #[error("Secrets Manager secret `{secret}` has no JSON key `{key}` (its keys: {keys}); fix the key in postgres.admin_password_secret")]
    MissingKey {
        secret: String,
        key: String,
        keys: String,
    },
    #[error(transparent)]
    Weak(#[from] WeakPassword),
    #[error("reading Secrets Manager secret `{secret}` failed: {detail}; check the network path to Secrets Manager (NAT or VPC endpoint) and AWS_ENDPOINT_URL_SECRETS_MANAGER if set")]
    Unreachable { secret: String, detail: String },
    #[error(transparent)]
    Aws(#[from] AwsError),
}

/// A password read from Secrets Manager, with the version it came from.
#[derive(Debug, Clone)]
pub struct FetchedPassword {
    pub password: Secret,
    pub version_id: Option<String>,
}

/// Reads the password `r` names (the AWSCURRENT version), in the ARN's region when it has one.
pub async fn fetch(aws: &AwsContext, r: &SecretRef) -> Result<FetchedPassword, SecretError> {
    use aws_sdk_secretsmanager::error::ProvideErrorMetadata as _;
    use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError as E;

    // Fail on credentials with their own message rather than as an SDK dispatch error.
    aws.credentials().await?;
    let region = r.arn_region().unwrap_or(aws.region()).to_owned();
    let conf = aws_sdk_secretsmanager::config::Builder::from(aws.sdk_config().await)
        .region(aws_sdk_secretsmanager::config::Region::new(region.clone()))
        .build();
    let client = aws_sdk_secretsmanager::Client::from_conf(conf);
    let secret = r.secret.clone();
    let out = match client.get_secret_value().secret_id(&r.secret).send().await {
        Ok(out) => out,
        Err(e) => {
            let detail = sdk_detail(&e);
            let status = e.raw_response().map(|r| r.status().as_u16());
            let service = e.into_service_error();
            let code = service.code().unwrap_or_default().to_owned();
            return Err(match service {
                E::ResourceNotFoundException(_) => SecretError::NotFound { secret, region },
                E::DecryptionFailure(_) => SecretError::Decryption { secret, detail },
                _ if code == "AccessDeniedException" || code == "AccessDenied" => {
                    SecretError::AccessDenied { secret, detail }
                }
                _ if code == "UnrecognizedClientException"
                    || code == "InvalidSignatureException"
                    || status == Some(403) =>
                {
                    SecretError::AccessDenied { secret, detail }
                }
                _ => SecretError::Unreachable { secret, detail },
            });
        }
    };
    let Some(text) = out.secret_string() else {
        return Err(SecretError::Binary { secret });
    };
    let password = match &r.key {
        None => Secret::new(text.trim_end_matches(['\r', '\n'])),
        Some(key) => json_value(text, key, &secret)?,
    };
    check_strength(&password, &format!("Secrets Manager secret `{r}`"))?;
    Ok(FetchedPassword {
        password,
        version_id: out.version_id().map(str::to_owned),
    })
}

/// The string under `key` of the JSON object `text`; errors name the keys, never the values.
fn json_value(text: &str, key: &str, secret: &str) -> Result<Secret, SecretError> {
    let not_json = || SecretError::NotJson {
        secret: secret.to_owned(),
        key: key.to_owned(),
    };
    let value: serde_json::Value = serde_json::from_str(text).map_err(|_| not_json())?;
    let object = value.as_object().ok_or_else(not_json)?;
    match object.get(key) {
        Some(serde_json::Value::String(s)) => Ok(Secret::new(s.clone())),
        Some(serde_json::Value::Number(n)) => Ok(Secret::new(n.to_string())),
        _ => Err(SecretError::MissingKey {
            secret: secret.to_owned(),
            key: key.to_owned(),
            keys: object.keys().cloned().collect::<Vec<_>>().join(", "),
        }),
    }
}

/// An SDK error and its causes on one line (AWS error messages never carry secret values).
pub(crate) fn sdk_detail<E: std::error::Error>(e: &E) -> String {
    crate::identity::error_chain(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/catalog-AbCdEf";

    #[test]
    fn arn_and_name_forms_parse_like_ecs_value_from() {
        let plain = SecretRef::parse(ARN).unwrap();
        assert_eq!(plain.arn_region(), Some("eu-west-1"));
        assert_eq!((plain.secret.as_str(), plain.key), (ARN, None));
        let keyed = SecretRef::parse(&format!("{ARN}:password")).unwrap();
        assert_eq!(keyed.secret, ARN);
        assert_eq!(keyed.key.as_deref(), Some("password"));
        let named = SecretRef::parse("prod/catalog:password").unwrap();
        assert_eq!(
            (named.secret.as_str(), named.key.as_deref()),
            ("prod/catalog", Some("password"))
        );
        assert_eq!(named.arn_region(), None);
    }

    #[test]
    fn malformed_references_are_refused_with_the_shape_to_use() {
        for (raw, needle) in [
            ("", "must not be empty"),
            ("arn:aws:s3:::bucket", "not a Secrets Manager ARN"),
            (&format!("{ARN}:password:AWSPREVIOUS:"), "version stages"),
            ("name:", "names no JSON key"),
        ] {
            let e = SecretRef::parse(raw).unwrap_err();
            assert!(e.contains(needle), "{raw}: {e}");
        }
    }

    #[test]
    fn table_form_takes_the_key_separately() {
        let r: SecretRef =
            toml::from_str::<toml::Value>("v = { secret = \"prod/catalog\", key = \"password\" }")
                .unwrap()["v"]
                .clone()
                .try_into()
                .unwrap();
        assert_eq!(r.key.as_deref(), Some("password"));
    }

    #[test]
    fn json_errors_name_keys_never_values() {
        let text = r#"{"username":"admin","password":"s3cr3t-value-123"}"#;
        assert_eq!(
            json_value(text, "password", "s").unwrap().expose(),
            "s3cr3t-value-123"
        );
        let e = json_value(text, "pass", "s").unwrap_err().to_string();
        assert!(
            e.contains("(its keys: password, username)") && !e.contains("s3cr3t"),
            "{e}"
        );
        let e = json_value("s3cr3t-value-123", "password", "s")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not a JSON object") && !e.contains("s3cr3t"),
            "{e}"
        );
    }

    #[test]
    fn short_and_empty_passwords_are_refused() {
        assert!(check_strength(&Secret::new("long-enough-pw"), "x").is_ok());
        let e = check_strength(&Secret::new("short"), "x").unwrap_err();
        assert!(e.to_string().contains("too weak (5 characters)"), "{e}");
        let e = check_strength(&Secret::new(""), "x").unwrap_err();
        assert!(e.to_string().contains("is empty"), "{e}");
    }
}
