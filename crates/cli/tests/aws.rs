//! AWS integration against moto (S3, Secrets Manager, IAM) and, where no emulator exists (the
//! ECS container credentials endpoint, Marketplace Metering), a loopback endpoint that checks
//! each request the way the AWS API documents it and answers in the documented shape.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{
    admin_client, error_line, extensions, home, run_cli, serve_fails, venv, Moto, Server, Stub,
};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

const REGION: &str = "us-east-1";

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// moto as the S3 endpoint, without keys: the credential chain under test supplies them.
fn s3_endpoint(moto: &Moto) -> Vec<(String, String)> {
    env(&[
        ("DUCKLAKE_CATALOG_S3__ENDPOINT", &moto.endpoint()),
        ("DUCKLAKE_CATALOG_S3__ALLOW_HTTP", "true"),
        ("DUCKLAKE_CATALOG_S3__FORCE_PATH_STYLE", "true"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ])
}

/// moto for Secrets Manager, reached the SDK's standard way, with keys from the environment.
fn secrets_env(moto: &Moto) -> Vec<(String, String)> {
    env(&[
        ("AWS_ENDPOINT_URL_SECRETS_MANAGER", &moto.endpoint()),
        ("AWS_REGION", REGION),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ])
}

/// `doctor --format json`: exit code and report.
fn doctor(dir: &Path, env: &[(String, String)], extra: &[&str]) -> (i32, Value) {
    let mut args = vec!["doctor", "--format", "json"];
    args.extend_from_slice(extra);
    let out = run_cli(dir, &refs(env), &args);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor printed no JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check `{name}` in {report:#}"))
}

/// The ECS container credentials endpoint (`AWS_CONTAINER_CREDENTIALS_FULL_URI`): requires the
/// `AWS_CONTAINER_AUTHORIZATION_TOKEN`, hands out `ASIAECS<n>` keys valid for `ttl_secs`.
fn ecs_credentials(ttl_secs: i64) -> Stub {
    Stub::start(move |req, n| {
        if req.method != "GET" || req.header("authorization") != Some("ecs-token") {
            return (401, json!({"message": "bad token"}).to_string());
        }
        let expiration = chrono::Utc::now() + chrono::Duration::seconds(ttl_secs);
        let body = json!({
            "AccessKeyId": format!("ASIAECS{n}"),
            "SecretAccessKey": "ecs-secret-key",
            "Token": "ecs-session-token",
            "Expiration": expiration.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "RoleArn": "arn:aws:iam::123456789012:role/catalog-task",
        });
        (200, body.to_string())
    })
}

/// A lake on moto whose only credentials come from the ECS endpoint, checked by `doctor` while
/// moto records which keys signed each request.
struct EcsRun {
    moto: Moto,
    stub: Stub,
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    report: Value,
}

impl EcsRun {
    fn doctor(ttl_secs: i64) -> EcsRun {
        let moto = Moto::start(&[]);
        moto.python("s3.create_bucket(Bucket='ecs-lake')");
        let stub = ecs_credentials(ttl_secs);
        let mut e = s3_endpoint(&moto);
        e.extend(env(&[
            ("AWS_REGION", REGION),
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                &stub.url("/v2/credentials"),
            ),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "ecs-token"),
            ("DUCKLAKE_CATALOG_DATA_PATH", "s3://ecs-lake/lake/"),
        ]));
        let dir = home();
        moto.start_recording();
        let (code, report) = doctor(dir.path(), &e, &[]);
        assert_eq!(code, 0, "{report:#}");
        EcsRun {
            moto,
            stub,
            dir,
            env: e,
            report,
        }
    }
}

#[test]
fn static_keys_sign_s3_and_doctor_passes_before_and_after_the_first_start() {
    let moto = Moto::start(&[]);
    moto.python("s3.create_bucket(Bucket='static-lake')");
    let dir = home();
    let mut e = s3_endpoint(&moto);
    e.extend(env(&[
        ("DUCKLAKE_CATALOG_S3__REGION", REGION),
        ("DUCKLAKE_CATALOG_S3__ACCESS_KEY_ID", "AKIDSTATIC0001"),
        ("DUCKLAKE_CATALOG_S3__SECRET_ACCESS_KEY", "static-secret"),
        ("DUCKLAKE_CATALOG_DATA_PATH", "s3://static-lake/lake/"),
    ]));
    moto.start_recording();
    let (code, report) = doctor(dir.path(), &e, &[]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(check(&report, "postgres")["state"], "skip", "{report:#}");
    assert!(check(&report, "credentials")["detail"]
        .as_str()
        .unwrap()
        .starts_with("from config"));
    assert_eq!(
        check(&report, "region")["detail"],
        "us-east-1 (from config)"
    );
    assert_eq!(check(&report, "clock")["state"], "pass");
    let keys = moto.recorded_access_keys();
    assert!(
        !keys.is_empty() && keys.iter().all(|k| k == "AKIDSTATIC0001"),
        "{keys:?}"
    );

    // Against the running server: PostgreSQL's TLS login and the lake's catalog are checked too.
    let server = Server::start(dir.path(), &refs(&e));
    let e2 = [
        e.clone(),
        env(&[(
            "DUCKLAKE_CATALOG_POSTGRES__PORT",
            &server.pg_port.to_string(),
        )]),
    ]
    .concat();
    let (code, report) = doctor(dir.path(), &e2, &[]);
    assert_eq!(code, 0, "{report:#}");
    let pg = check(&report, "postgres")["detail"].as_str().unwrap();
    assert!(
        pg.starts_with("accepts TLS logins as admin") && pg.contains("TLSv1."),
        "{pg}"
    );
    assert_eq!(
        check(&report, "lake lakehouse")["detail"],
        "initialised, DuckLake spec 1.0"
    );
    // The text form: one ✓ line per check and a verdict.
    let out = run_cli(dir.path(), &refs(&e2), &["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("✓ postgres") && text.ends_with("all checks passed\n"),
        "{text}"
    );
}

#[test]
fn ecs_task_role_credentials_sign_s3_and_are_refreshed_before_they_expire() {
    // Credentials valid for one minute are inside the five-minute refresh window: every use
    // loads fresh ones, as an expiring task-role session would.
    let run = EcsRun::doctor(60);
    let (moto, stub, dir, e, report) = (&run.moto, &run.stub, &run.dir, &run.env, &run.report);
    let creds = check(report, "credentials")["detail"].as_str().unwrap();
    assert!(
        creds.starts_with("from ECS task role (access key ASIA"),
        "{creds}"
    );
    assert_eq!(
        check(report, "region")["detail"],
        "us-east-1 (from environment)"
    );
    let keys = moto.recorded_access_keys();
    let mut distinct = keys.clone();
    distinct.dedup();
    assert!(
        distinct.len() >= 2 && keys.iter().all(|k| k.starts_with("ASIAECS")),
        "expected refreshed task-role keys to sign S3 requests: {keys:?}"
    );
    assert!(stub.requests().len() >= 2);
    assert!(stub
        .requests()
        .iter()
        .all(|r| r.path == "/v2/credentials" && r.header("authorization") == Some("ecs-token")));

    // `serve` uses the same chain: the lake's preflight on S3 passes with the task role.
    let server = Server::start(dir.path(), &refs(e));
    let (_, body) = server.get("/readyz").unwrap();
    assert_eq!(body["lakes"]["lakehouse"]["state"], "ready");
}

#[test]
fn long_lived_ecs_credentials_are_loaded_once_and_cached() {
    let run = EcsRun::doctor(3600);
    assert_eq!(run.stub.requests().len(), 1);
    let keys = run.moto.recorded_access_keys();
    assert!(
        keys.len() >= 4 && keys.iter().all(|k| k == "ASIAECS0"),
        "{keys:?}"
    );
}

#[test]
fn a_missing_region_is_a_one_line_error() {
    let dir = home();
    let empty_home = home();
    let (code, stderr) = serve_fails(
        dir.path(),
        &[
            ("DUCKLAKE_CATALOG_DATA_PATH", "s3://some-bucket/lake/"),
            ("HOME", empty_home.path().to_str().unwrap()),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
    );
    assert_eq!(code, 2, "{stderr}");
    let line = error_line(&stderr);
    assert!(line.contains("no AWS region: set s3.region"), "{line}");
}

/// Creates a secret and returns its ARN.
fn create_secret(moto: &Moto, name: &str, value: &str) -> String {
    moto.secrets(&format!(
        "print(sm.create_secret(Name={name:?}, SecretString={value:?})['ARN'])"
    ))
    .trim()
    .to_owned()
}

fn attach_env(server: &Server, password: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "DLC_ATTACH",
            format!(
                "ducklake:postgres:host=127.0.0.1 port={} user=admin dbname=lakehouse",
                server.pooler_port
            ),
        ),
        ("PGPASSWORD", password.to_owned()),
        (
            "DLC_EXTENSIONS",
            extensions().to_string_lossy().into_owned(),
        ),
    ]
}

fn can_log_in(server: &Server, password: &str) -> bool {
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(admin_client(server, password, "lakehouse"))
        .is_ok()
}

#[test]
fn admin_password_from_a_json_secret_is_rotated_on_sighup_while_a_client_stays_attached() {
    let moto = Moto::start(&[]);
    let first = "first-rotation-pw-1";
    let arn = create_secret(
        &moto,
        "catalog/admin",
        &json!({"username": "admin", "password": first}).to_string(),
    );
    let dir = home();
    let mut e = secrets_env(&moto);
    e.extend(env(&[
        (
            "DUCKLAKE_CATALOG_POSTGRES__ADMIN_PASSWORD_SECRET",
            &format!("{arn}:password"),
        ),
        // Only SIGHUP triggers a read here, so the test knows what applied the rotation.
        ("DUCKLAKE_CATALOG_POSTGRES__ADMIN_PASSWORD_REFRESH", "0s"),
    ]));
    let mut server = Server::start(dir.path(), &refs(&e));
    let (_, body) = server.get("/readyz").unwrap();
    let pw = &body["admin_password"];
    assert_eq!(
        pw["source"],
        format!("Secrets Manager secret {arn} (JSON key `password`)")
    );
    assert_eq!(pw["rotations"], 0);
    assert!(can_log_in(&server, first));

    // A DuckDB client attaches with the first password and keeps its session.
    let mut client = Command::new(venv().join("bin/python"));
    client
        .arg(
            Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo"))
                .join("tests/python/stay_attached.py"),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in attach_env(&server, first) {
        client.env(k, v);
    }
    let mut client = client.spawn().unwrap();
    let mut stdin = client.stdin.take().unwrap();
    let mut lines = BufReader::new(client.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "attached");

    let second = "second-rotation-pw-2";
    moto.secrets(&format!(
        "sm.put_secret_value(SecretId={arn:?}, SecretString={:?})",
        json!({"username": "admin", "password": second}).to_string()
    ));
    let pid_before = server.postgres_pid();
    server.signal(Signal::SIGHUP);
    let body = server.wait_for(Duration::from_secs(30), |_, b| {
        b["admin_password"]["rotations"] == 1
    });
    assert!(body["admin_password"]["last_error"].is_null(), "{body:#}");
    assert_eq!(
        server.postgres_pid(),
        pid_before,
        "PostgreSQL was restarted"
    );

    // The attached client keeps committing; new logins need the new password.
    writeln!(stdin, "commit").unwrap();
    let step: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(step, json!({"step": 1, "rows": 2}));
    assert!(can_log_in(&server, second));
    assert!(!can_log_in(&server, first));
    drop(stdin);
    assert!(client.wait().unwrap().success());
    assert_eq!(server.get("/readyz").unwrap().0, 200);
    let logs = server.logs();
    assert!(
        logs.contains("applied the rotated admin password"),
        "{logs}"
    );
    assert!(
        !logs.contains(first) && !logs.contains(second),
        "a password reached the log"
    );
}

#[test]
fn a_plain_secret_is_read_at_start_and_checked_again_on_its_interval() {
    let moto = Moto::start(&[]);
    let first = "plain-secret-password-1";
    let arn = create_secret(&moto, "catalog/plain", first);
    let dir = home();
    let mut e = secrets_env(&moto);
    e.extend(env(&[
        (
            "DUCKLAKE_CATALOG_POSTGRES__ADMIN_PASSWORD_SECRET",
            "catalog/plain",
        ),
        ("DUCKLAKE_CATALOG_POSTGRES__ADMIN_PASSWORD_REFRESH", "1s"),
    ]));
    let mut server = Server::start(dir.path(), &refs(&e));
    assert!(can_log_in(&server, first));
    let second = "plain-secret-password-2";
    moto.secrets(&format!(
        "sm.put_secret_value(SecretId={arn:?}, SecretString={second:?})"
    ));
    server.wait_for(Duration::from_secs(30), |_, b| {
        b["admin_password"]["rotations"] == 1
    });
    assert!(can_log_in(&server, second));
    // `connect --show-password` reads the secret the same way.
    let out = run_cli(
        dir.path(),
        &[
            refs(&e),
            vec![(
                "DUCKLAKE_CATALOG_POSTGRES__PORT",
                &*server.pg_port.to_string(),
            )],
        ]
        .concat(),
        &["connect", "--show-password", "--format", "json"],
    );
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["password"], second);
}

#[test]
fn unusable_secrets_stop_the_start_with_one_line_naming_the_secret_never_the_value() {
    let moto = Moto::start(&[]);
    let json_arn = create_secret(
        &moto,
        "catalog/json",
        &json!({"username": "admin", "password": "json-secret-value-1"}).to_string(),
    );
    create_secret(&moto, "catalog/weak", "short");
    // boto3 refuses an empty SecretString; a lone newline is empty once read.
    create_secret(&moto, "catalog/blank", "\n");
    create_secret(&moto, "catalog/text", "plain-text-value-12345");
    let cases = [
        (
            "catalog/missing",
            "Secrets Manager secret `catalog/missing` was not found in region us-east-1",
        ),
        (
            &*format!("{json_arn}:pass"),
            "has no JSON key `pass` (its keys: password, username)",
        ),
        (
            "catalog/text:password",
            "is not a JSON object, so it has no key `password`",
        ),
        (
            "catalog/weak",
            "is too weak (5 characters); use at least 12",
        ),
        (
            "catalog/blank",
            "the password from Secrets Manager secret `catalog/blank` is empty",
        ),
    ];
    for (reference, expected) in cases {
        let dir = home();
        let mut e = secrets_env(&moto);
        e.push((
            "DUCKLAKE_CATALOG_POSTGRES__ADMIN_PASSWORD_SECRET".into(),
            reference.into(),
        ));
        let (code, stderr) = serve_fails(dir.path(), &refs(&e));
        assert_eq!(code, 1, "{reference}: {stderr}");
        let line = error_line(&stderr);
        assert!(line.contains(expected), "{reference}: {line}");
        for value in ["json-secret-value-1", "plain-text-value-12345", "short\""] {
            assert!(
                !stderr.contains(value),
                "{reference}: the value leaked: {stderr}"
            );
        }
        assert!(
            !dir.path().join("pgdata/PG_VERSION").exists(),
            "{reference}: the cluster was created before the password was known"
        );
    }
}

/// moto with IAM enforced after `setup` ran: a `catalog` user may use S3 but not Secrets
/// Manager. Returns moto and the user's keys.
fn moto_with_iam(setup: &str, setup_calls: usize) -> (Moto, String, String) {
    let moto = Moto::start(&[("INITIAL_NO_AUTH_ACTION_COUNT", &setup_calls.to_string())]);
    let out = moto.python(&format!(
        "import json\niam = boto3.client('iam', endpoint_url='{0}', region_name='us-east-1', aws_access_key_id='testing', aws_secret_access_key='testing')\nsm = boto3.client('secretsmanager', endpoint_url='{0}', region_name='us-east-1', aws_access_key_id='testing', aws_secret_access_key='testing')\niam.create_user(UserName='catalog')\nk = iam.create_access_key(UserName='catalog')['AccessKey']\niam.put_user_policy(UserName='catalog', PolicyName='s3-only', PolicyDocument=json.dumps({{'Version': '2012-10-17', 'Statement': [{{'Effect': 'Allow', 'Action': 's3:*', 'Resource': '*'}}]}}))\n{setup}\nprint(k['AccessKeyId'], k['SecretAccessKey'])",
        moto.endpoint()
    ));
    let mut parts = out.split_whitespace();
    let (id, secret) = (parts.next().unwrap(), parts.next().unwrap());
    (moto, id.to_owned(), secret.to_owned())
}

fn iam_env(moto: &Moto, id: &str, secret: &str) -> Vec<(String, String)> {
    let mut e = s3_endpoint(moto);
    e.extend(env(&[
        ("AWS_ENDPOINT_URL_SECRETS_MANAGER", &moto.endpoint()),
        ("DUCKLAKE_CATALOG_S3__REGION", REGION),
        ("DUCKLAKE_CATALOG_S3__ACCESS_KEY_ID", id),
        ("DUCKLAKE_CATALOG_S3__SECRET_ACCESS_KEY", secret),
    ]));
    e
}

#[test]
fn a_denied_secret_names_the_iam_action() {
    let (moto, id, secret) = moto_with_iam(
        "sm.create_secret(Name='catalog/denied', SecretString='denied-secret-value-1')",
        4,
    );
    let dir = home();
    let mut e = iam_env(&moto, &id, &secret);
    e.push((
        "DUCKLAKE_CATALOG_POSTGRES__ADMIN_PASSWORD_SECRET".into(),
        "catalog/denied".into(),
    ));
    let (code, stderr) = serve_fails(dir.path(), &refs(&e));
    assert_eq!(code, 1, "{stderr}");
    let line = error_line(&stderr);
    assert!(
        line.contains("access to Secrets Manager secret `catalog/denied` was denied")
            && line.contains("grant secretsmanager:GetSecretValue"),
        "{line}"
    );
    assert!(!stderr.contains("denied-secret-value-1"));
}

#[test]
fn doctor_names_each_broken_piece_with_its_fix() {
    // No bucket for one lake, another lake's bucket in another region, a denied secret.
    let (moto, id, secret) = moto_with_iam(
        "s3 = boto3.client('s3', endpoint_url=sm.meta.endpoint_url, region_name='eu-west-1', aws_access_key_id='testing', aws_secret_access_key='testing')\ns3.create_bucket(Bucket='euro-lake', CreateBucketConfiguration={'LocationConstraint': 'eu-west-1'})\nsm.create_secret(Name='catalog/denied', SecretString='denied-secret-value-1')",
        5,
    );
    let dir = home();
    let config = dir.path().join("catalog.toml");
    std::fs::write(
        &config,
        "[postgres]\nadmin_password_secret = \"catalog/denied\"\n\n[[lakes]]\nname = \"missing\"\ndata_path = \"s3://no-such-bucket/lake/\"\n\n[[lakes]]\nname = \"euro\"\ndata_path = \"s3://euro-lake/lake/\"\n",
    )
    .unwrap();
    let e = iam_env(&moto, &id, &secret);
    let (code, report) = doctor(dir.path(), &e, &["--config", config.to_str().unwrap()]);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["ok"], false);
    let missing = check(&report, "data path missing");
    assert_eq!(missing["state"], "fail");
    assert!(
        missing["detail"]
            .as_str()
            .unwrap()
            .contains("bucket `no-such-bucket` does not exist"),
        "{missing}"
    );
    assert_eq!(missing["fix"], "create it or fix the configured path");
    let euro = check(&report, "data path euro");
    assert_eq!(euro["state"], "fail");
    assert!(
        euro["detail"]
            .as_str()
            .unwrap()
            .contains("is in eu-west-1, but the configured region is us-east-1"),
        "{euro}"
    );
    assert_eq!(
        euro["fix"],
        "set s3.region = \"eu-west-1\" (env DUCKLAKE_CATALOG_S3__REGION)"
    );
    let denied = check(&report, "admin password secret");
    assert_eq!(denied["state"], "fail");
    assert!(
        denied["fix"]
            .as_str()
            .unwrap()
            .contains("grant secretsmanager:GetSecretValue"),
        "{denied}"
    );
    assert_eq!(check(&report, "credentials")["state"], "pass");
    // The text form marks the same three with ✗ and says how many failed.
    let out = run_cli(
        dir.path(),
        &refs(&e),
        &["doctor", "--config", config.to_str().unwrap()],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text.lines().filter(|l| l.starts_with('✗')).count(),
        3,
        "{text}"
    );
    assert!(text.ends_with("3 check(s) failed\n"), "{text}");
    assert!(!text.contains("denied-secret-value-1"));
}

#[test]
fn doctor_reports_an_invalid_config_as_its_first_and_only_line() {
    let dir = home();
    let (code, report) = doctor(
        dir.path(),
        &env(&[("DUCKLAKE_CATALOG_POSTGRES__ADMIN_PASSWORD", "short")]),
        &[],
    );
    assert_eq!(code, 1);
    let checks = report["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 1, "{report:#}");
    assert_eq!(checks[0]["name"], "config");
    assert!(checks[0]["detail"]
        .as_str()
        .unwrap()
        .contains("postgres.admin_password"));
}

/// Marketplace Metering's `RegisterUsage` as documented: a POST with
/// `X-Amz-Target: AWSMPMeteringService.RegisterUsage`, signed with SigV4 for the
/// `aws-marketplace` service, a JSON body with ProductCode, PublicKeyVersion and Nonce.
/// `answers` gives the error type for each call (`None`: success).
fn metering(answers: Vec<Option<&'static str>>) -> Stub {
    Stub::start(move |req, n| {
        let body: Value = serde_json::from_str(&req.body).unwrap_or(Value::Null);
        let auth = req.header("authorization").unwrap_or_default();
        let well_formed = req.method == "POST"
            && req.header("x-amz-target") == Some("AWSMPMeteringService.RegisterUsage")
            && auth.starts_with("AWS4-HMAC-SHA256 Credential=testing/")
            && auth.contains(&format!("/{REGION}/aws-marketplace/aws4_request"))
            && auth.contains("Signature=")
            && body["ProductCode"] == "prodcode123abc"
            && body["PublicKeyVersion"] == 1
            && body["Nonce"].as_str().is_some_and(|s| !s.is_empty());
        if !well_formed {
            return (
                400,
                json!({"__type": "ValidationException", "message": format!("malformed: {req:?}")})
                    .to_string(),
            );
        }
        match answers.get(n).copied().flatten() {
            None => (
                200,
                json!({"PublicKeyRotationTimestamp": 1.7e9, "Signature": "eyJhbGciOiJQUzI1NiJ9.signed.usage"}).to_string(),
            ),
            Some(kind) => (400, json!({"__type": kind, "message": format!("{kind} from the stub")}).to_string()),
        }
    })
}

fn metering_env(stub: &Stub, product: Option<&str>) -> Vec<(String, String)> {
    let mut e = env(&[
        ("AWS_ENDPOINT_URL_MARKETPLACE_METERING", &stub.url("")),
        ("AWS_REGION", REGION),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]);
    if let Some(p) = product {
        e.push((
            "DUCKLAKE_CATALOG_MARKETPLACE__PRODUCT_CODE".into(),
            p.into(),
        ));
    }
    e
}

#[test]
fn register_usage_is_called_once_before_serving_and_throttling_is_retried() {
    let stub = metering(vec![
        Some("ThrottlingException"),
        Some("ThrottlingException"),
    ]);
    let dir = home();
    let server = Server::start(
        dir.path(),
        &refs(&metering_env(&stub, Some("prodcode123abc"))),
    );
    let requests = stub.requests();
    assert_eq!(requests.len(), 3, "{requests:#?}");
    assert!(server.logs().contains("AWS Marketplace: usage registered"));
    // Each attempt carries a fresh nonce.
    let nonces: std::collections::HashSet<String> = requests
        .iter()
        .map(|r| serde_json::from_str::<Value>(&r.body).unwrap()["Nonce"].to_string())
        .collect();
    assert_eq!(nonces.len(), 3);
}

#[test]
fn a_customer_without_entitlement_stops_the_container() {
    for (kind, expected, calls) in [
        (
            "CustomerNotEntitledException",
            "this AWS account is not subscribed to product prodcode123abc",
            1,
        ),
        (
            "InvalidProductCodeException",
            "AWS Marketplace rejected marketplace.product_code `prodcode123abc`",
            1,
        ),
        (
            "PlatformNotSupportedException",
            "RegisterUsage is not supported here",
            1,
        ),
    ] {
        let stub = metering(vec![Some(kind); 10]);
        let dir = home();
        let (code, stderr) = serve_fails(
            dir.path(),
            &refs(&metering_env(&stub, Some("prodcode123abc"))),
        );
        assert_eq!(code, 1, "{kind}: {stderr}");
        let line = error_line(&stderr);
        assert!(line.contains(expected), "{kind}: {line}");
        assert_eq!(
            stub.requests().len(),
            calls,
            "{kind}: a final answer is not retried"
        );
        assert!(
            !dir.path().join("pgdata").exists(),
            "{kind}: PostgreSQL was prepared anyway"
        );
    }
}

#[test]
fn without_a_product_code_nothing_is_metered() {
    let stub = metering(vec![]);
    let dir = home();
    let _server = Server::start(dir.path(), &refs(&metering_env(&stub, None)));
    assert_eq!(stub.requests().len(), 0);
}
