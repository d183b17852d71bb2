//! Least-privilege IAM policies: the server's task role and the clients' writer and reader
//! roles, from the S3 places and AWS calls a configuration uses ([`PolicyInputs`], which the
//! configuration builds). `ducklake-catalog iam-policy` prints them, and
//! docs/iam-permissions.md shows them for an example configuration (a test in the config
//! crate keeps it current).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::secrets_manager::SecretRef;

/// A bucket and the prefix under it (empty: the whole bucket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Place {
    pub bucket: String,
    pub prefix: String,
}

/// What the policies are made from.
#[derive(Debug, Clone, Default)]
pub struct PolicyInputs {
    /// The lakes the policy covers, by name, with their data path when it is on S3 (`None`:
    /// on local disk, which no IAM permission covers).
    pub lakes: Vec<(String, Option<S3Place>)>,
    /// The backup target, when it is on S3 (the server's only).
    pub backup: Option<S3Place>,
    /// `postgres.admin_password_secret`: the server reads it.
    pub admin_secret: Option<SecretRef>,
    /// The configured region (`s3.region`), for a secret given by name.
    pub region: Option<String>,
    /// Whether the server registers with AWS Marketplace (`marketplace.product_code`).
    pub metering: bool,
}

/// Who the policy is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyRole {
    /// The server (the ECS task role): every lake's data path and the backup target.
    Server,
    /// A DuckDB client that writes a lake: read, write and delete its Parquet files.
    Writer,
    /// A DuckDB client that only reads a lake.
    Reader,
}

impl PolicyRole {
    pub fn name(self) -> &'static str {
        match self {
            PolicyRole::Server => "server",
            PolicyRole::Writer => "writer",
            PolicyRole::Reader => "reader",
        }
    }
}

/// Why no policy can be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IamError {
    #[error("{what} on local disk, so no IAM permission applies; IAM policies cover s3:// data paths and backup targets")]
    NothingOnS3 { what: String },
}

/// One statement, with the reason it exists.
#[derive(Debug, Clone, Serialize)]
pub struct Statement {
    #[serde(rename = "Sid")]
    pub sid: String,
    #[serde(rename = "Effect")]
    pub effect: &'static str,
    #[serde(rename = "Action")]
    pub actions: Vec<&'static str>,
    #[serde(rename = "Resource")]
    pub resources: Vec<String>,
    #[serde(rename = "Condition", skip_serializing_if = "Option::is_none")]
    pub condition: Option<serde_json::Value>,
    /// Why the server or client needs it (not part of the IAM document).
    #[serde(skip)]
    pub why: String,
}

/// An IAM policy document.
#[derive(Debug, Clone, Serialize)]
pub struct Policy {
    #[serde(rename = "Version")]
    pub version: &'static str,
    #[serde(rename = "Statement")]
    pub statements: Vec<Statement>,
}

impl Policy {
    /// The document as pretty JSON, ready for `aws iam put-role-policy`.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a policy serialises")
    }
}

/// The S3 places a role touches: bucket → prefixes, with what each prefix is.
type Places = BTreeMap<String, Vec<(String, String)>>;

fn add(places: &mut Places, place: Option<&S3Place>, what: String) {
    if let Some(S3Place { bucket, prefix }) = place {
        places
            .entry(bucket.clone())
            .or_default()
            .push((prefix.clone(), what));
    }
}

/// A statement id from a bucket name: IAM allows only letters and digits.
fn sid(stem: &str, bucket: &str) -> String {
    let mut s = stem.to_owned();
    let mut upper = true;
    for c in bucket.chars() {
        if c.is_ascii_alphanumeric() {
            s.push(if upper { c.to_ascii_uppercase() } else { c });
            upper = false;
        } else {
            upper = true;
        }
    }
    s
}

/// The least-privilege policy for `role` on the lakes of `inputs`.
pub fn policy(inputs: &PolicyInputs, role: PolicyRole) -> Result<Policy, IamError> {
    let mut places = Places::new();
    for (name, place) in &inputs.lakes {
        add(&mut places, place.as_ref(), format!("lake `{name}`"));
    }
    if role == PolicyRole::Server {
        add(
            &mut places,
            inputs.backup.as_ref(),
            "the backup target".into(),
        );
    }
    let services = if role == PolicyRole::Server {
        service_statements(inputs)
    } else {
        Vec::new()
    };
    if places.is_empty() && services.is_empty() {
        let names: Vec<&str> = inputs.lakes.iter().map(|(n, _)| n.as_str()).collect();
        return Err(IamError::NothingOnS3 {
            what: format!(
                "the data path of {} {}{}",
                if names.len() == 1 { "lake" } else { "lakes" },
                names.join(", "),
                if role == PolicyRole::Server {
                    " and the backup target (if any) are"
                } else {
                    " is"
                }
            ),
        });
    }
    let objects: Vec<&'static str> = match role {
        PolicyRole::Server => vec![
            "s3:GetObject",
            "s3:PutObject",
            "s3:DeleteObject",
            "s3:AbortMultipartUpload",
        ],
        PolicyRole::Writer => vec!["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
        PolicyRole::Reader => vec!["s3:GetObject"],
    };
    let why_objects = match role {
        PolicyRole::Server => "the storage check at start (put, get, delete a marker), WAL and base backups (multipart; an aborted upload is cleaned up), the lease, retention",
        PolicyRole::Writer => "DuckDB writes Parquet and delete files, reads them back, and deletes them when snapshots expire or files are merged",
        PolicyRole::Reader => "DuckDB reads the Parquet and delete files",
    };
    let mut statements = Vec::new();
    for (bucket, prefixes) in &places {
        let whats: Vec<&str> = prefixes.iter().map(|(_, w)| w.as_str()).collect();
        let patterns: Vec<String> = prefixes.iter().map(|(p, _)| format!("{p}*")).collect();
        let whole_bucket = prefixes.iter().any(|(p, _)| p.is_empty());
        statements.push(Statement {
            sid: sid("List", bucket),
            effect: "Allow",
            actions: vec!["s3:ListBucket"],
            resources: vec![format!("arn:aws:s3:::{bucket}")],
            condition: (!whole_bucket)
                .then(|| serde_json::json!({ "StringLike": { "s3:prefix": patterns } })),
            why: format!(
                "list only under the prefixes of {} in `{bucket}`",
                whats.join(" and ")
            ),
        });
        statements.push(Statement {
            sid: sid("Objects", bucket),
            effect: "Allow",
            actions: objects.clone(),
            resources: prefixes
                .iter()
                .map(|(p, _)| format!("arn:aws:s3:::{bucket}/{p}*"))
                .collect(),
            condition: None,
            why: format!("{why_objects}; only objects of {}", whats.join(" and ")),
        });
    }
    statements.extend(services);
    Ok(Policy {
        version: "2012-10-17",
        statements,
    })
}

/// The server's calls beyond S3: the admin password secret and Marketplace metering. (Logs need
/// nothing here: the ECS agent ships them with the task *execution* role.)
fn service_statements(inputs: &PolicyInputs) -> Vec<Statement> {
    let mut out = Vec::new();
    if let Some(r) = &inputs.admin_secret {
        let resource = if r.secret.starts_with("arn:") {
            r.secret.clone()
        } else {
            // A name: Secrets Manager appends `-` and six random characters to form the ARN.
            format!(
                "arn:aws:secretsmanager:{}:*:secret:{}-??????",
                inputs.region.as_deref().unwrap_or("*"),
                r.secret
            )
        };
        out.push(Statement {
            sid: "ReadAdminPasswordSecret".into(),
            effect: "Allow",
            actions: vec!["secretsmanager:GetSecretValue"],
            resources: vec![resource],
            condition: None,
            why: "read the admin password at start, every `postgres.admin_password_refresh` and on SIGHUP (add `kms:Decrypt` on the key if the secret uses a customer managed KMS key)".into(),
        });
    }
    if inputs.metering {
        out.push(Statement {
            sid: "MarketplaceRegisterUsage".into(),
            effect: "Allow",
            actions: vec!["aws-marketplace:RegisterUsage"],
            // RegisterUsage has no resource-level permissions.
            resources: vec!["*".into()],
            condition: None,
            why: "check the AWS Marketplace entitlement once at start".into(),
        });
    }
    out
}

/// The statements as a Markdown table: id, actions, resources, why.
pub fn explain(policy: &Policy) -> String {
    let mut out = String::from("| statement | actions | resources | why |\n|---|---|---|---|\n");
    for s in &policy.statements {
        let cond = s
            .condition
            .as_ref()
            .map(|c| format!(" when `{c}`"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "| `{}` | {} | {}{cond} | {} |",
            s.sid,
            s.actions
                .iter()
                .map(|a| format!("`{a}`"))
                .collect::<Vec<_>>()
                .join(", "),
            s.resources
                .iter()
                .map(|r| format!("`{r}`"))
                .collect::<Vec<_>>()
                .join(", "),
            s.why
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(bucket: &str, prefix: &str) -> S3Place {
        S3Place {
            bucket: bucket.into(),
            prefix: prefix.into(),
        }
    }

    /// The example docs/iam-permissions.md shows: lake `sales` on `s3://acme-data/lakes/sales/`,
    /// backups in `s3://acme-backups/catalog/`.
    fn example() -> PolicyInputs {
        PolicyInputs {
            lakes: vec![("sales".into(), Some(place("acme-data", "lakes/sales/")))],
            backup: Some(place("acme-backups", "catalog/")),
            admin_secret: Some(
                SecretRef::parse(
                    "arn:aws:secretsmanager:eu-west-1:123456789012:secret:catalog/admin-AbCdEf:password",
                )
                .expect("valid"),
            ),
            region: Some("eu-west-1".into()),
            metering: true,
        }
    }

    fn with(data: Option<S3Place>, backup: Option<S3Place>) -> PolicyInputs {
        PolicyInputs {
            lakes: vec![("sales".into(), data)],
            backup,
            admin_secret: None,
            metering: false,
            ..example()
        }
    }

    fn resources(p: &Policy, i: usize) -> Vec<&str> {
        p.statements[i]
            .resources
            .iter()
            .map(String::as_str)
            .collect()
    }

    #[test]
    fn the_server_gets_exactly_the_lake_and_backup_prefixes() {
        let p = policy(&example(), PolicyRole::Server).unwrap();
        let json: serde_json::Value = serde_json::from_str(&p.to_json()).unwrap();
        assert_eq!(json["Version"], "2012-10-17");
        assert_eq!(p.statements.len(), 6, "{}", p.to_json());
        // After S3: exactly the configured secret (its ARN without the JSON key), and metering.
        assert_eq!(
            resources(&p, 4),
            ["arn:aws:secretsmanager:eu-west-1:123456789012:secret:catalog/admin-AbCdEf"]
        );
        assert_eq!(p.statements[4].actions, ["secretsmanager:GetSecretValue"]);
        assert_eq!(p.statements[5].actions, ["aws-marketplace:RegisterUsage"]);
        // Buckets in name order: acme-backups, then acme-data.
        assert_eq!(resources(&p, 0), ["arn:aws:s3:::acme-backups"]);
        assert_eq!(
            json["Statement"][0]["Condition"]["StringLike"]["s3:prefix"],
            serde_json::json!(["catalog/*"])
        );
        assert_eq!(resources(&p, 1), ["arn:aws:s3:::acme-backups/catalog/*"]);
        assert_eq!(resources(&p, 3), ["arn:aws:s3:::acme-data/lakes/sales/*"]);
        assert!(p.statements[3].actions.contains(&"s3:AbortMultipartUpload"));
        for s in &p.statements {
            assert!(
                s.sid.chars().all(|c| c.is_ascii_alphanumeric()),
                "{}",
                s.sid
            );
        }
    }

    #[test]
    fn one_bucket_for_data_and_backups_is_one_list_statement_with_both_prefixes() {
        let inputs = with(
            Some(place("acme", "lakes/sales/")),
            Some(place("acme", "backups/")),
        );
        let p = policy(&inputs, PolicyRole::Server).unwrap();
        assert_eq!(p.statements.len(), 2);
        assert_eq!(
            p.statements[0].condition.as_ref().unwrap()["StringLike"]["s3:prefix"],
            serde_json::json!(["lakes/sales/*", "backups/*"])
        );
        assert_eq!(
            resources(&p, 1),
            [
                "arn:aws:s3:::acme/lakes/sales/*",
                "arn:aws:s3:::acme/backups/*"
            ]
        );
    }

    #[test]
    fn clients_get_only_their_lake_and_readers_cannot_write() {
        let w = policy(&example(), PolicyRole::Writer).unwrap();
        assert_eq!(
            w.statements.len(),
            2,
            "the backup target is the server's only"
        );
        assert_eq!(
            w.statements[1].actions,
            ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
        );
        let r = policy(&example(), PolicyRole::Reader).unwrap();
        assert_eq!(r.statements[1].actions, ["s3:GetObject"]);
        assert_eq!(resources(&r, 1), ["arn:aws:s3:::acme-data/lakes/sales/*"]);
    }

    #[test]
    fn a_secret_given_by_name_matches_its_arn_suffix_and_needs_no_s3() {
        let mut inputs = with(None, None);
        inputs.admin_secret = Some(SecretRef::parse("prod/catalog:password").unwrap());
        let p = policy(&inputs, PolicyRole::Server).unwrap();
        assert_eq!(p.statements.len(), 1);
        assert_eq!(
            resources(&p, 0),
            ["arn:aws:secretsmanager:eu-west-1:*:secret:prod/catalog-??????"]
        );
        // Clients never read the server's secret.
        assert!(policy(&inputs, PolicyRole::Reader).is_err());
    }

    #[test]
    fn a_whole_bucket_lake_lists_without_a_prefix_condition() {
        let p = policy(&with(Some(place("acme", "")), None), PolicyRole::Reader).unwrap();
        assert!(p.statements[0].condition.is_none());
        assert_eq!(resources(&p, 1), ["arn:aws:s3:::acme/*"]);
    }

    #[test]
    fn local_lakes_are_named() {
        let err = policy(&with(None, None), PolicyRole::Writer)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("lake sales") && err.contains("local disk"),
            "{err}"
        );
    }
}
