//! The deployment artefacts agree with the server: the CloudFormation template passes cfn-lint,
//! and every environment variable the ECS task definition and the Dockerfile set is
//! configuration the server accepts (an unknown key would stop the task at start).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use catalog_server::config::{Config, Sources};
use catalog_server::versions;
use serde_yaml::Value;

const TEMPLATE: &str = "deploy/cloudformation/ducklake-catalog.yaml";

fn root() -> PathBuf {
    Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap()
}

fn template() -> Value {
    serde_yaml::from_str(&read(TEMPLATE)).unwrap()
}

/// Loads a configuration from exactly `env`, as the server would at start.
fn load(env: &[(String, String)]) -> Result<Config, String> {
    let home = common::home();
    Config::load(&Sources {
        file: None,
        env: env.to_vec(),
        overrides: None,
        cwd: home.path().to_path_buf(),
    })
    .map_err(|e| e.to_string())
}

#[test]
fn cloudformation_template_passes_cfn_lint() {
    let out = Command::new(common::venv().join("bin/cfn-lint"))
        .arg(root().join(TEMPLATE))
        .output()
        .expect("run cfn-lint from the test venv");
    assert!(
        out.status.success(),
        "cfn-lint {TEMPLATE}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The template's conditions this test evaluates: whether the stack makes the admin password's
/// secret, and whether it administers an external PostgreSQL.
#[derive(Clone, Copy)]
struct Conditions {
    create_secret: bool,
    external: bool,
    pooled: bool,
}

impl Conditions {
    fn holds(self, name: &str) -> bool {
        match name {
            "CreateSecret" => self.create_secret,
            "External" => self.external,
            "Pooled" => self.pooled,
            other => panic!("the test does not know condition {other}"),
        }
    }
}

/// The container's environment with the template's `!If`s decided by `when`: an entry that is
/// `!If [cond, entry, AWS::NoValue]` (or the reverse) is there or not.
fn environment(
    container: &Value,
    params: &BTreeMap<String, String>,
    when: Conditions,
) -> Vec<(String, String)> {
    container["Environment"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Value::Tagged(t) if t.tag == "!If" => {
                let branch = if when.holds(t.value[0].as_str().unwrap()) {
                    1
                } else {
                    2
                };
                Some(t.value[branch].clone())
                    .filter(|v| !matches!(v, Value::Tagged(r) if r.tag == "!Ref"))
            }
            other => Some(other.clone()),
        })
        .map(|e| {
            (
                e["Name"].as_str().unwrap().to_owned(),
                resolve(&e["Value"], params, when),
            )
        })
        .collect()
}

/// A template value with `!Ref`/`!Sub` resolved against the parameters' defaults (or a sample
/// for parameters without one) and a few pseudo parameters, `!If` decided by `when`.
fn resolve(v: &Value, params: &BTreeMap<String, String>, when: Conditions) -> String {
    let sub = |s: &str| {
        let mut out = s.to_owned();
        for (k, v) in params {
            out = out.replace(&format!("${{{k}}}"), v);
        }
        out
    };
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Tagged(t) if t.tag == "!Ref" => params[t.value.as_str().unwrap()].clone(),
        Value::Tagged(t) if t.tag == "!Sub" => sub(t.value.as_str().unwrap()),
        Value::Tagged(t) if t.tag == "!If" => {
            let branch = if when.holds(t.value[0].as_str().unwrap()) {
                1
            } else {
                2
            };
            resolve(&t.value[branch], params, when)
        }
        other => panic!("unexpected value in the environment: {other:?}"),
    }
}

/// The template's parameters at their defaults (a sample for those without one) and the pseudo
/// parameters the task definition uses.
fn parameters(t: &Value) -> BTreeMap<String, String> {
    let mut params: BTreeMap<String, String> = BTreeMap::new();
    for (name, spec) in t["Parameters"].as_mapping().unwrap() {
        let name = name.as_str().unwrap().to_owned();
        let value = match &spec["Default"] {
            Value::Null => match name.as_str() {
                "DataBucket" => "acme-lake".to_owned(),
                "ImageUri" => "example/ducklake-catalog:1".to_owned(),
                _ => "sample".to_owned(),
            },
            v => resolve(
                v,
                &BTreeMap::new(),
                Conditions {
                    create_secret: true,
                    external: false,
                    pooled: false,
                },
            ),
        };
        params.insert(name, value);
    }
    for (k, v) in [
        ("AWS::Region", "us-east-1"),
        ("AWS::StackName", "catalog"),
        ("AWS::AccountId", "123456789012"),
        ("AWS::Partition", "aws"),
        (
            "AdminPassword",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:pw",
        ),
    ] {
        params.insert(k.into(), v.into());
    }
    params
}

/// The task definition's container.
fn container(t: &Value) -> &Value {
    &t["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"][0]
}

#[test]
fn task_definition_environment_is_accepted_configuration() {
    let t = template();
    let params = parameters(&t);
    let container = container(&t);
    // At the defaults: the supervised PostgreSQL with the pooler in front.
    let env = environment(
        container,
        &params,
        Conditions {
            create_secret: true,
            external: false,
            pooled: true,
        },
    );
    // The server reads the admin password from Secrets Manager itself (so rotations apply),
    // with the task role; ECS injects nothing.
    assert!(container["Secrets"].is_null());
    assert!(env.iter().all(|(k, _)| k.starts_with("DUCKLAKE_CATALOG_")));
    let config = load(&env).unwrap_or_else(|e| panic!("the task definition's environment: {e}"));
    assert_eq!(config.lakes[0].name, params["LakeName"]);
    let secret = config.postgres.admin_password_secret.as_ref().unwrap();
    assert_eq!(secret.secret, params["AdminPassword"]);
    let task_role = t["Resources"]["TaskRole"]["Properties"]["Policies"][0]["PolicyDocument"]
        ["Statement"]
        .as_sequence()
        .unwrap();
    assert!(task_role
        .iter()
        .any(|s| s["Action"] == "secretsmanager:GetSecretValue"));

    // ECS's own `secrets: valueFrom` injection, the alternative docs/aws.md describes, sets the
    // password variable itself; that is accepted configuration as well.
    let mut injected = env.clone();
    injected.retain(|(k, _)| k != "DUCKLAKE_CATALOG_POSTGRES__ADMIN_PASSWORD_SECRET");
    injected.push((
        "DUCKLAKE_CATALOG_POSTGRES__ADMIN_PASSWORD".into(),
        "a-password-from-secrets-manager".into(),
    ));
    let config = load(&injected).unwrap();
    assert_eq!(
        config.postgres.admin_password.as_ref().unwrap().expose(),
        "a-password-from-secrets-manager"
    );
    assert!(config.backup.target.is_some(), "backups configured");
    assert!(config.external().is_none());
    assert!(config.pooler_enabled());

    // The health check is the image's, and PostgreSQL's stop budget fits ECS's stop timeout.
    let check: Vec<&str> = container["HealthCheck"]["Command"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(check, ["CMD", "ducklake-catalog", "health"]);
    let stop_timeout = container["StopTimeout"].as_u64().unwrap();
    assert!(config.postgres.stop_timeout_secs < stop_timeout);
}

#[test]
fn a_pooled_stack_runs_the_pooler_and_opens_its_port_to_the_allowed_network_only() {
    let t = template();
    let mut params = parameters(&t);
    params.insert("EnablePooler".into(), "true".into());
    let env = environment(
        container(&t),
        &params,
        Conditions {
            create_secret: true,
            external: false,
            pooled: true,
        },
    );
    let config = load(&env).unwrap_or_else(|e| panic!("the pooled task's environment: {e}"));
    assert!(config.pooler_enabled());
    assert_eq!(config.pooler.port, 6432);
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/cloudformation/ducklake-catalog.yaml"),
    )
    .unwrap();
    let ingress = &t["Resources"]["TaskSecurityGroup"]["Properties"]["SecurityGroupIngress"][1];
    assert!(
        format!("{ingress:?}").contains("6432") && format!("{ingress:?}").contains("AllowedCidr"),
        "{ingress:?}"
    );
    assert!(text
        .contains("Pooled: !And [!Equals [!Ref EnablePooler, \"true\"], !Condition Supervised]"));
    // EnablePooler=false (or an external PostgreSQL): the pooler is turned off explicitly, as
    // the server's default is on.
    let plain = environment(
        container(&t),
        &parameters(&t),
        Conditions {
            create_secret: true,
            external: false,
            pooled: false,
        },
    );
    assert!(plain
        .iter()
        .any(|(k, v)| k == "DUCKLAKE_CATALOG_POOLER__ENABLED" && v == "false"));
    let config = load(&plain).unwrap_or_else(|e| panic!("the unpooled task's environment: {e}"));
    assert!(!config.pooler_enabled());
}

#[test]
fn an_external_postgres_stack_gives_the_task_postgres_url_and_no_wal_shipping() {
    let t = template();
    let mut params = parameters(&t);
    let container = container(&t);
    // With ExternalPostgresHost: the task administers that PostgreSQL as ExternalPostgresAdmin,
    // with the given secret, and ships no WAL (the server would refuse backup.target).
    params.insert(
        "ExternalPostgresHost".into(),
        "db.cluster-x.us-east-1.rds.amazonaws.com".into(),
    );
    params.insert(
        "AdminPasswordSecretArn".into(),
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:rds!db-1:password".into(),
    );
    let external = environment(
        container,
        &params,
        Conditions {
            create_secret: false,
            external: true,
            pooled: false,
        },
    );
    let ext = load(&external).unwrap_or_else(|e| panic!("the external task's environment: {e}"));
    let remote = ext.external().expect("postgres.url set");
    assert_eq!(remote.host, "db.cluster-x.us-east-1.rds.amazonaws.com");
    assert_eq!(remote.port, 5432);
    assert_eq!(ext.postgres.admin_user, params["ExternalPostgresAdmin"]);
    assert!(ext.backup.target.is_none());
    // The pooler is off in front of RDS, whatever EnablePooler says.
    assert!(!ext.pooler_enabled());
    assert_eq!(
        ext.postgres
            .admin_password_secret
            .as_ref()
            .unwrap()
            .key
            .as_deref(),
        Some("password")
    );
    // CloudFormation itself refuses an external stack without the secret.
    let rule = serde_yaml::to_string(&t["Rules"]["ExternalPostgresNeedsItsSecret"]).unwrap();
    assert!(
        rule.contains("ExternalPostgresHost") && rule.contains("AdminPasswordSecretArn"),
        "{rule}"
    );
}

#[test]
fn dockerfile_matches_the_server() {
    let file = read("docker/Dockerfile");
    let arg = |name: &str| {
        file.lines()
            .find_map(|l| l.strip_prefix(&format!("ARG {name}=")))
            .unwrap_or_else(|| panic!("docker/Dockerfile has no `ARG {name}=` default"))
            .to_owned()
    };
    assert_eq!(arg("DUCKDB_VERSION"), versions::DUCKDB_VERSION);
    assert_eq!(
        arg("DUCKLAKE_SPEC_VERSION"),
        versions::DUCKLAKE_SPEC_VERSION
    );
    assert_eq!(arg("PG_MAJOR"), versions::PG_MAJOR.to_string());
    assert_eq!(arg("VERSION"), env!("CARGO_PKG_VERSION"));

    // Every DUCKLAKE_CATALOG_ variable of the ENV instruction is accepted configuration.
    let block = file.split("\nENV ").nth(1).expect("an ENV instruction");
    let mut env: Vec<(String, String)> = Vec::new();
    for line in block.lines() {
        let line = line.trim();
        if let Some((k, v)) = line.trim_end_matches('\\').trim().split_once('=') {
            let v = v.replace("${PG_MAJOR}", &versions::PG_MAJOR.to_string());
            env.push((k.to_owned(), v));
        }
        if !line.ends_with('\\') {
            break;
        }
    }
    assert!(env.len() >= 4, "ENV parsed: {env:?}");
    let config = load(&env).unwrap_or_else(|e| panic!("the Dockerfile's ENV: {e}"));
    assert_eq!(config.home, PathBuf::from("/var/lib/ducklake-catalog"));
    assert_eq!(config.http.listen.port(), 8080);
    assert!(file.contains(r#"CMD ["ducklake-catalog", "health"]"#));
    assert!(file.contains(r#"ENTRYPOINT ["ducklake-catalog", "serve"]"#));
    // The direct port, the pooler's and the health port.
    let expose = format!(
        "EXPOSE {} {} {}",
        config.postgres.port,
        config.pooler.port,
        config.http.listen.port()
    );
    assert!(file.contains(&expose), "{expose}");
}

/// The stack turns the EMF lines on with its name as the `Service` dimension, and every alarm
/// and dashboard graph watches a metric those lines carry, under that dimension.
#[test]
fn the_alarms_and_the_dashboard_watch_what_the_server_emits() {
    use catalog_server::telemetry::{self, BackupFacts, Facts, LakeFacts, MaintenanceFacts};
    let t = template();
    let params = parameters(&t);
    let env = environment(
        container(&t),
        &params,
        Conditions {
            create_secret: true,
            external: false,
            pooled: true,
        },
    );
    let config = load(&env).unwrap_or_else(|e| panic!("the task's environment: {e}"));
    assert_eq!(
        config.metrics.cloudwatch,
        catalog_server::config::CloudWatch::Emf
    );
    assert_eq!(config.metrics.cloudwatch_service, params["AWS::StackName"]);

    // What a server with backups, maintenance and a lake emits.
    let mut facts = Facts::default();
    facts.postgres.up = true;
    facts.postgres.max_connections = 100;
    facts.backup = Some(BackupFacts::default());
    facts
        .maintenance
        .insert("lakehouse".into(), MaintenanceFacts::default());
    facts.lakes.insert("lakehouse".into(), LakeFacts::default());
    let lines = telemetry::emf(
        &config.metrics.cloudwatch_service,
        &facts,
        None,
        1,
        Some(1.0),
    );
    let mut emitted: Vec<(String, Vec<String>)> = Vec::new();
    for line in &lines {
        telemetry::validate_emf(line).unwrap();
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let d = &v["_aws"]["CloudWatchMetrics"][0];
        let dims: Vec<String> = d["Dimensions"][0]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(v["Service"], params["AWS::StackName"].as_str());
        for m in d["Metrics"].as_array().unwrap() {
            emitted.push((m["Name"].as_str().unwrap().to_owned(), dims.clone()));
        }
    }
    let resources = t["Resources"].as_mapping().unwrap();
    let mut alarms = 0;
    for (name, r) in resources {
        if r["Type"] != "AWS::CloudWatch::Alarm" {
            continue;
        }
        alarms += 1;
        let p = &r["Properties"];
        assert_eq!(p["Namespace"], telemetry::EMF_NAMESPACE);
        let metric = p["MetricName"].as_str().unwrap();
        assert!(
            emitted
                .iter()
                .any(|(n, dims)| n == metric && dims == &["Service".to_owned()]),
            "{name:?} watches {metric}, which the server does not emit per Service"
        );
        assert_eq!(p["Dimensions"][0]["Name"], "Service");
    }
    assert_eq!(alarms, 5, "not ready, RPO, connections, maintenance, disk");

    // The dashboard is JSON once CloudFormation substitutes it, and names emitted metrics.
    let body = match &t["Resources"]["Dashboard"]["Properties"]["DashboardBody"] {
        Value::Tagged(tag) if tag.tag == "!Sub" => tag.value.as_str().unwrap().to_owned(),
        other => panic!("DashboardBody: {other:?}"),
    };
    let body = body
        .replace("${AWS::Region}", "us-east-1")
        .replace("${AWS::StackName}", &params["AWS::StackName"]);
    let dashboard: serde_json::Value = serde_json::from_str(&body).unwrap();
    let text = dashboard.to_string();
    for widget in dashboard["widgets"].as_array().unwrap() {
        let shown = widget["properties"]["metrics"][0].to_string();
        assert!(
            emitted
                .iter()
                .any(|(n, _)| shown.contains(&format!("\"{n}\""))
                    || shown.contains(&format!("\\\"{n}\\\""))),
            "a dashboard graph shows no emitted metric: {shown}"
        );
    }
    assert!(text.contains("CommitConflicts"));
}
