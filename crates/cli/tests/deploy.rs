//! The deployment artefacts agree with the server: the CloudFormation template passes cfn-lint,
//! and every environment variable the ECS task definition and the Dockerfile set is
//! configuration the server accepts (an unknown key would stop the task at start).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use catalog_server::config::{Config, Sources};
use catalog_server::versions;
use serde_yaml::value::TaggedValue;
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
/// secret, whether it administers an external PostgreSQL, whether the pooler runs, and whether a
/// standby does (EnableStandby).
#[allow(clippy::struct_excessive_bools)] // one flag per template condition
#[derive(Clone, Copy)]
struct Conditions {
    create_secret: bool,
    external: bool,
    pooled: bool,
    standby: bool,
}

impl Conditions {
    fn holds(self, name: &str) -> bool {
        match name {
            "CreateSecret" => self.create_secret,
            "External" => self.external,
            "Pooled" => self.pooled,
            "Standby" => self.standby,
            other => panic!("the test does not know condition {other}"),
        }
    }
}

/// The default stack with EnableStandby: the supervised PostgreSQL, pooled, with a standby.
const STANDBY: Conditions = Conditions {
    create_secret: true,
    external: false,
    pooled: true,
    standby: true,
};

/// The conditions that hold only with a standby: a resource under one exists only then.
const STANDBY_CONDITIONS: [&str; 2] = ["Standby", "PooledStandby"];

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

/// A template value with `!Ref`/`!GetAtt`/`!Sub` resolved against the parameters' defaults (or a
/// sample for parameters without one) and a few pseudo parameters and attributes, `!If` decided
/// by `when`.
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
        Value::Tagged(t) if t.tag == "!Ref" || t.tag == "!GetAtt" => {
            params[t.value.as_str().unwrap()].clone()
        }
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

/// The template's parameters at their defaults (a sample for those without one), the pseudo
/// parameters the task definition uses and the load balancer's name (with EnableStandby).
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
                    standby: false,
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
        (
            "LoadBalancer.DNSName",
            "ducklake-0123456789abcdef.elb.us-east-1.amazonaws.com",
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
            standby: false,
        },
    );
    // The server reads the admin password from Secrets Manager itself (so rotations apply),
    // with the task role; ECS injects nothing (but a standby stack's replication password).
    assert!(is_no_value(&without_standby(&container["Secrets"])));
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
            standby: false,
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
            standby: false,
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
            standby: false,
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
    assert_rule(
        &t,
        "ExternalPostgresNeedsItsSecret",
        &["ExternalPostgresHost", "AdminPasswordSecretArn"],
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
            standby: false,
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

/// The template's rule `name` exists and names each of `parameters`.
fn assert_rule(t: &Value, name: &str, parameters: &[&str]) {
    let rule = serde_yaml::to_string(&t["Rules"][name]).unwrap();
    for p in parameters {
        assert!(rule.contains(p), "rule {name} does not name {p}: {rule}");
    }
}

/// `v` is `!If [cond, then, !Ref AWS::NoValue]`, there only under `cond`: its `then`.
fn only_with<'a>(v: &'a Value, cond: &str) -> &'a Value {
    match v {
        Value::Tagged(t) if t.tag == "!If" => {
            assert_eq!(t.value[0].as_str(), Some(cond), "{v:?}");
            assert!(is_no_value(&t.value[2]), "{v:?}");
            &t.value[1]
        }
        other => panic!("not `!If [{cond}, …, !Ref AWS::NoValue]`: {other:?}"),
    }
}

fn is_no_value(v: &Value) -> bool {
    matches!(v, Value::Tagged(t) if t.tag == "!Ref" && t.value == "AWS::NoValue")
}

/// `v` as the stack has it without a standby: `!If [Standby, a, b]` (or `PooledStandby`) is `b`.
fn without_standby(v: &Value) -> Value {
    match v {
        Value::Tagged(t)
            if t.tag == "!If"
                && STANDBY_CONDITIONS.contains(&t.value[0].as_str().unwrap_or_default()) =>
        {
            without_standby(&t.value[2])
        }
        Value::Tagged(t) => Value::Tagged(Box::new(TaggedValue {
            tag: t.tag.clone(),
            value: without_standby(&t.value),
        })),
        Value::Sequence(items) => Value::Sequence(items.iter().map(without_standby).collect()),
        Value::Mapping(map) => Value::Mapping(
            map.iter()
                .map(|(k, item)| (k.clone(), without_standby(item)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// What a template value names: the targets of `!Ref`s and `!GetAtt`s and the variables of
/// `!Sub`s (resources, parameters and pseudo parameters).
fn names(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Tagged(t) if t.tag == "!Ref" || t.tag == "!GetAtt" => match t.value.as_str() {
            Some(name) => out.push(name.split('.').next().unwrap_or(name).to_owned()),
            None => names(&t.value, out),
        },
        Value::Tagged(t) if t.tag == "!Sub" => {
            let text = t.value.as_str().or_else(|| t.value[0].as_str());
            for part in text.unwrap_or_default().split("${").skip(1) {
                let var = part.split('}').next().unwrap_or_default();
                out.push(var.split('.').next().unwrap_or_default().to_owned());
            }
            names(&t.value, out);
        }
        Value::Tagged(t) => names(&t.value, out),
        Value::Sequence(items) => {
            for item in items {
                names(item, out);
            }
        }
        Value::Mapping(map) => {
            for item in map.values() {
                names(item, out);
            }
        }
        _ => {}
    }
}

/// The target group a service's `TargetGroupArn` names: `!Ref G`, or `!Select [0, [!Ref G,
/// !Ref Listener]]` (which makes the service wait for the listener as well).
fn target_group(v: &Value) -> String {
    match v {
        Value::Tagged(t) if t.tag == "!Select" => {
            let i = usize::try_from(t.value[0].as_u64().unwrap()).unwrap();
            t.value[1][i].as_str().unwrap().to_owned()
        }
        other => other.as_str().unwrap().to_owned(),
    }
}

/// EnableStandby=false (the default), or an external PostgreSQL: the stack is what it was before
/// the standby existed. Every resource of the standby is under its condition; nothing else names
/// one, nor sets failover up, outside an `!If [Standby, …]`.
#[test]
fn without_a_standby_the_stack_has_nothing_of_it() {
    let t = template();
    let text = read(TEMPLATE);
    assert!(text
        .contains("Standby: !And [!Equals [!Ref EnableStandby, \"true\"], !Condition Supervised]"));
    assert!(text.contains("PooledStandby: !And [!Condition Pooled, !Condition Standby]"));
    assert_eq!(t["Parameters"]["EnableStandby"]["Default"], "false");
    assert_eq!(t["Parameters"]["ZeroLoss"]["Default"], "false");
    let resources = t["Resources"].as_mapping().unwrap();
    let standby_only: Vec<&str> = resources
        .iter()
        .filter(|(_, r)| STANDBY_CONDITIONS.iter().any(|c| r["Condition"] == *c))
        .map(|(name, _)| name.as_str().unwrap())
        .collect();
    for name in [
        "ReplicationPassword",
        "SecondService",
        "LoadBalancer",
        "LoadBalancerSecurityGroup",
        "WriterTargetGroup",
        "ReaderTargetGroup",
        "WriterListener",
        "ReaderListener",
        "TaskReplicationIngress",
        "TaskReplicationEgress",
        "TaskFromLoadBalancer",
        "TaskPoolerFromLoadBalancer",
        "TaskHealthFromLoadBalancer",
    ] {
        assert!(
            standby_only.contains(&name),
            "{name} exists without EnableStandby"
        );
    }
    for (name, resource) in resources {
        let name = name.as_str().unwrap();
        if standby_only.contains(&name) {
            continue;
        }
        // No load balancer, no second service, no second secret.
        let kind = resource["Type"].as_str().unwrap();
        assert!(!kind.starts_with("AWS::ElasticLoadBalancingV2::"), "{name}");
        assert!(kind != "AWS::ECS::Service" || name == "Service", "{name}");
        assert!(
            kind != "AWS::SecretsManager::Secret" || name == "AdminPassword",
            "{name}"
        );
        let mut referenced = Vec::new();
        names(&without_standby(resource), &mut referenced);
        let depends = &resource["DependsOn"];
        let depends = depends.as_sequence().into_iter().flatten().chain([depends]);
        referenced.extend(depends.filter_map(Value::as_str).map(str::to_owned));
        for other in &referenced {
            assert!(
                !standby_only.contains(&other.as_str()),
                "{name} names {other} outside `!If [Standby, …]`"
            );
        }
    }
    for (name, output) in t["Outputs"].as_mapping().unwrap() {
        if STANDBY_CONDITIONS.iter().any(|c| output["Condition"] == *c) {
            continue;
        }
        let mut referenced = Vec::new();
        names(&without_standby(output), &mut referenced);
        assert!(
            referenced
                .iter()
                .all(|n| !standby_only.contains(&n.as_str())),
            "output {name:?} names {referenced:?}"
        );
    }
}

/// Without a standby the task has no failover settings and no injected secret, and clients are
/// given catalog.<namespace>.
#[test]
fn without_a_standby_the_task_runs_alone() {
    let t = template();
    let params = parameters(&t);
    let env = environment(
        container(&t),
        &params,
        Conditions {
            standby: false,
            ..STANDBY
        },
    );
    assert!(
        env.iter()
            .all(|(k, _)| !k.starts_with("DUCKLAKE_CATALOG_HA__")),
        "{env:?}"
    );
    let config = load(&env).unwrap_or_else(|e| panic!("the task's environment: {e}"));
    assert!(!config.ha.enabled());
    assert_eq!(
        config.client_host(),
        format!("catalog.{}", params["NamespaceName"])
    );
    assert!(is_no_value(&without_standby(&container(&t)["Secrets"])));
}

/// EnableStandby: a second service (the same task definition, one task, the other zone); both
/// services register their task in both target groups (writers and readers), and ECS leaves the
/// target groups' health to the load balancer (a task is healthy in its role's only).
#[test]
fn a_standby_stack_runs_two_candidates_behind_a_load_balancer() {
    let t = template();
    let mut params = parameters(&t);
    params.insert("EnableStandby".into(), "true".into());
    let res = &t["Resources"];
    let first = &res["Service"]["Properties"];
    let second = &res["SecondService"]["Properties"];
    assert_eq!(res["SecondService"]["Type"], "AWS::ECS::Service");
    assert_eq!(second["TaskDefinition"], "TaskDefinition");
    assert_eq!(second["DesiredCount"].as_u64(), Some(1));
    assert_eq!(first["DesiredCount"].as_u64(), Some(1));
    // One task per zone: the first subnet's and the second's.
    let subnets =
        |service: &Value| service["NetworkConfiguration"]["AwsvpcConfiguration"]["Subnets"].clone();
    // The first service: `!If [Standby, [the first subnet], all subnets]`.
    let Value::Tagged(choice) = subnets(first) else {
        panic!("the first service's subnets depend on Standby")
    };
    assert_eq!(choice.tag, "!If");
    assert_eq!(choice.value[0].as_str(), Some("Standby"));
    assert_eq!(choice.value[1][0][0].as_u64(), Some(0));
    assert!(
        matches!(&choice.value[2], Value::Tagged(t) if t.tag == "!Ref" && t.value == "SubnetIds"),
        "{choice:?}"
    );
    assert_eq!(subnets(second)[0][0].as_u64(), Some(1));
    // CloudFormation replaces one task at a time: the second service after the first.
    let depends: Vec<&str> = res["SecondService"]["DependsOn"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for needed in ["Service", "WriterListener", "ReaderListener"] {
        assert!(depends.contains(&needed), "{depends:?}");
    }
    // Both services register both roles' target groups, each with the container's port for that
    // role; the first waits for the listeners through its target group ARNs.
    let mut first_names = Vec::new();
    names(&first["LoadBalancers"], &mut first_names);
    for listener in ["WriterListener", "ReaderListener"] {
        assert!(first_names.iter().any(|n| n == listener), "{first_names:?}");
    }
    for service in [first, second] {
        let grace: u64 = resolve(&service["HealthCheckGracePeriodSeconds"], &params, STANDBY)
            .parse()
            .unwrap();
        assert!(grace > 10 * 365 * 24 * 3600, "{grace}");
        let balancers = match &service["LoadBalancers"] {
            v @ Value::Tagged(_) => only_with(v, "Standby"),
            v => v,
        };
        let registered: Vec<(String, String)> = balancers
            .as_sequence()
            .unwrap()
            .iter()
            .map(|lb| {
                assert_eq!(lb["ContainerName"], container(&t)["Name"]);
                let port = resolve(&lb["ContainerPort"], &params, STANDBY);
                (target_group(&lb["TargetGroupArn"]), port)
            })
            .collect();
        let expected = [("WriterTargetGroup", "6432"), ("ReaderTargetGroup", "5432")];
        let expected = expected.map(|(g, p)| (g.to_owned(), p.to_owned()));
        assert_eq!(registered, expected);
        // Without the pooler writers reach the primary's PostgreSQL directly.
        let unpooled = Conditions {
            pooled: false,
            ..STANDBY
        };
        let writer_port = resolve(&balancers[0]["ContainerPort"], &params, unpooled);
        assert_eq!(writer_port, "5432");
    }
}

/// EnableStandby's internal Network Load Balancer: writers on 6432 to the task whose
/// `/readyz/primary` answers 200, readers on 5432 to the one whose `/readyz/standby` does; the
/// outputs name both endpoints.
#[test]
fn a_standby_stack_routes_writers_to_the_primary_and_readers_to_the_standby() {
    let t = template();
    let mut params = parameters(&t);
    params.insert("EnableStandby".into(), "true".into());
    let res = &t["Resources"];
    for (group, path, port) in [
        ("WriterTargetGroup", "/readyz/primary", "6432"),
        ("ReaderTargetGroup", "/readyz/standby", "5432"),
    ] {
        let r = &res[group];
        assert_eq!(
            r["Type"], "AWS::ElasticLoadBalancingV2::TargetGroup",
            "{group}"
        );
        let p = &r["Properties"];
        assert_eq!(p["TargetType"], "ip", "{group}");
        assert_eq!(p["Protocol"], "TCP", "{group}");
        assert_eq!(resolve(&p["Port"], &params, STANDBY), port, "{group}");
        assert_eq!(p["HealthCheckProtocol"], "HTTP", "{group}");
        assert_eq!(p["HealthCheckPort"], "8080", "{group}");
        assert_eq!(p["HealthCheckPath"], path, "{group}");
        assert_eq!(
            p["HealthCheckIntervalSeconds"].as_u64(),
            Some(10),
            "{group}"
        );
        assert_eq!(p["HealthyThresholdCount"].as_u64(), Some(2), "{group}");
        assert_eq!(p["UnhealthyThresholdCount"].as_u64(), Some(2), "{group}");
    }
    for (listener, port, group) in [
        ("WriterListener", 6432, "WriterTargetGroup"),
        ("ReaderListener", 5432, "ReaderTargetGroup"),
    ] {
        let p = &res[listener]["Properties"];
        assert_eq!(p["LoadBalancerArn"], "LoadBalancer", "{listener}");
        assert_eq!(p["Protocol"], "TCP", "{listener}");
        assert_eq!(p["Port"].as_u64(), Some(port), "{listener}");
        assert_eq!(p["DefaultActions"][0]["Type"], "forward", "{listener}");
        assert_eq!(
            p["DefaultActions"][0]["TargetGroupArn"], group,
            "{listener}"
        );
    }
    let nlb = &res["LoadBalancer"]["Properties"];
    assert_eq!(nlb["Type"], "network");
    assert_eq!(nlb["Scheme"], "internal");
    assert_eq!(nlb["SecurityGroups"][0], "LoadBalancerSecurityGroup");

    let dns = &params["LoadBalancer.DNSName"];
    for (output, port) in [("WriterEndpoint", 6432), ("ReaderEndpoint", 5432)] {
        assert_eq!(t["Outputs"][output]["Condition"], "Standby", "{output}");
        let value = resolve(&t["Outputs"][output]["Value"], &params, STANDBY);
        assert_eq!(value, format!("{dns}:{port}"));
    }
    let attach = resolve(&t["Outputs"]["AttachString"]["Value"], &params, STANDBY);
    assert!(
        attach.contains(&format!("host={dns} port=6432")),
        "{attach}"
    );
    let readers = resolve(
        &t["Outputs"]["ReaderAttachString"]["Value"],
        &params,
        STANDBY,
    );
    assert!(
        readers.contains(&format!("host={dns} port=5432")) && readers.ends_with("(READ_ONLY)"),
        "{readers}"
    );
}

/// EnableStandby's network paths: the tasks reach each other on 5432 (the standby streams from
/// the primary), the load balancer reaches them on the clients' ports and 8080 (health checks),
/// clients reach the load balancer from AllowedCidr only.
#[test]
fn a_standby_stack_opens_replication_and_the_load_balancer() {
    let t = template();
    let res = &t["Resources"];
    for (rule, peer) in [
        ("TaskReplicationIngress", "SourceSecurityGroupId"),
        ("TaskReplicationEgress", "DestinationSecurityGroupId"),
    ] {
        let p = &res[rule]["Properties"];
        assert_eq!(p["GroupId"], "TaskSecurityGroup", "{rule}");
        assert_eq!(p[peer], "TaskSecurityGroup", "{rule}");
        assert_eq!(p["FromPort"].as_u64(), Some(5432), "{rule}");
        assert_eq!(p["ToPort"].as_u64(), Some(5432), "{rule}");
    }
    for (rule, port) in [
        ("TaskFromLoadBalancer", 5432),
        ("TaskPoolerFromLoadBalancer", 6432),
        ("TaskHealthFromLoadBalancer", 8080),
    ] {
        let p = &res[rule]["Properties"];
        assert_eq!(p["GroupId"], "TaskSecurityGroup", "{rule}");
        assert_eq!(
            p["SourceSecurityGroupId"], "LoadBalancerSecurityGroup",
            "{rule}"
        );
        assert_eq!(p["FromPort"].as_u64(), Some(port), "{rule}");
        assert_eq!(p["ToPort"].as_u64(), Some(port), "{rule}");
    }
    let clients = &res["LoadBalancerSecurityGroup"]["Properties"]["SecurityGroupIngress"];
    for (i, port) in [6432, 5432].into_iter().enumerate() {
        assert_eq!(clients[i]["FromPort"].as_u64(), Some(port));
        assert_eq!(clients[i]["CidrIp"], "AllowedCidr");
    }
    assert_eq!(clients.as_sequence().unwrap().len(), 2);

    // Both tasks need a home of their own: CloudFormation refuses EnableStandby with UseEfs.
    assert_rule(&t, "StandbyNeedsTaskStorage", &["EnableStandby", "UseEfs"]);
}

/// EnableStandby's task: `ha.mode = auto` with the replication password ECS injects from the
/// stack's generated secret (which the execution role may read), zero-loss mode as ZeroLoss
/// says, clients told the load balancer's name; the server accepts that configuration.
#[test]
fn a_standby_stack_configures_failover_in_the_task() {
    let t = template();
    let mut params = parameters(&t);
    params.insert("EnableStandby".into(), "true".into());
    params.insert("ZeroLoss".into(), "true".into());
    let container = container(&t);
    let mut env = environment(container, &params, STANDBY);
    let vars: BTreeMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(vars.get("DUCKLAKE_CATALOG_HA__MODE"), Some(&"auto"));
    assert_eq!(vars.get("DUCKLAKE_CATALOG_HA__SYNCHRONOUS"), Some(&"true"));
    assert_eq!(
        vars.get("DUCKLAKE_CATALOG_HA__SYNCHRONOUS_TIMEOUT"),
        Some(&"10s")
    );
    // ha.advertise_host defaults to the host name, on Fargate the task's own IP's name; the
    // password is never in the task definition.
    assert!(!vars.contains_key("DUCKLAKE_CATALOG_HA__ADVERTISE_HOST"));
    assert!(!vars.contains_key("DUCKLAKE_CATALOG_HA__REPLICATION_PASSWORD"));

    let secrets = only_with(&container["Secrets"], "Standby");
    assert_eq!(secrets.as_sequence().unwrap().len(), 1);
    assert_eq!(
        secrets[0]["Name"],
        "DUCKLAKE_CATALOG_HA__REPLICATION_PASSWORD"
    );
    assert_eq!(secrets[0]["ValueFrom"], "ReplicationPassword");
    let secret = &t["Resources"]["ReplicationPassword"];
    assert_eq!(secret["Type"], "AWS::SecretsManager::Secret");
    let generated = &secret["Properties"]["GenerateSecretString"];
    assert_eq!(generated["PasswordLength"].as_u64(), Some(32));
    assert_eq!(generated["ExcludePunctuation"].as_bool(), Some(true));
    let role = &t["Resources"]["ExecutionRole"]["Properties"]["Policies"];
    let statement = &only_with(role, "Standby")[0]["PolicyDocument"]["Statement"][0];
    assert_eq!(statement["Effect"], "Allow");
    assert_eq!(statement["Action"], "secretsmanager:GetSecretValue");
    assert_eq!(statement["Resource"], "ReplicationPassword");
    let mut task_roles = Vec::new();
    let task = &t["Resources"]["TaskDefinition"]["Properties"];
    names(&task["ExecutionRoleArn"], &mut task_roles);
    assert_eq!(task_roles, ["ExecutionRole"]);

    // What ECS starts the task with: the generated password (32 letters and digits) as well.
    let password = "Abcdefghijklmnopqrstuvwxyz012345";
    env.push((
        "DUCKLAKE_CATALOG_HA__REPLICATION_PASSWORD".into(),
        password.into(),
    ));
    let config = load(&env).unwrap_or_else(|e| panic!("the standby stack's task: {e}"));
    assert!(config.ha.enabled());
    assert!(config.ha.synchronous);
    assert_eq!(
        config.ha.synchronous_timeout.map(|d| d.0),
        Some(std::time::Duration::from_secs(10))
    );
    assert!(config.ha.advertise_host.is_none());
    assert_eq!(
        config.ha.replication_password.as_ref().unwrap().expose(),
        password
    );
    assert!(
        config.backup.target.is_some(),
        "the lease lives on the target"
    );
    assert!(config.pooler_enabled());
    assert_eq!(config.pooler.port, 6432);
    assert_eq!(config.postgres.port, 5432);
    assert_eq!(config.client_host(), params["LoadBalancer.DNSName"]);

    // ZeroLoss=false (the default): asynchronous replication.
    let mut asynchronous = environment(container, &parameters(&t), STANDBY);
    asynchronous.push((
        "DUCKLAKE_CATALOG_HA__REPLICATION_PASSWORD".into(),
        password.into(),
    ));
    let config = load(&asynchronous).unwrap_or_else(|e| panic!("ZeroLoss=false: {e}"));
    assert!(config.ha.enabled() && !config.ha.synchronous);
}
