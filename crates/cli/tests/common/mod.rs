//! Test harness: runs the real `ducklake-catalog` binary with its own home, free loopback
//! ports and a clean environment; starts `moto_server` for S3. Test dependencies come from
//! `cargo xtask deps` (env `DUCKLAKE_TEST_VENV`, `DUCKLAKE_TEST_EXTENSIONS`).

#![allow(dead_code, unreachable_pub)]

pub mod durable;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub const BIN: &str = env!("CARGO_BIN_EXE_ducklake-catalog");

/// Where `cargo xtask` keeps the test dependencies.
pub fn cache() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    std::env::var_os("DUCKLAKE_CATALOG_CACHE")
        .map_or_else(|| home.join(".cache/ducklake-catalog"), PathBuf::from)
}

/// The venv `cargo xtask deps` made.
pub fn venv() -> PathBuf {
    let v =
        std::env::var_os("DUCKLAKE_TEST_VENV").map_or_else(|| cache().join("venv"), PathBuf::from);
    assert!(
        v.join("bin/python").is_file(),
        "no test venv at {}: run `cargo xtask test`",
        v.display()
    );
    v
}

/// The DuckDB extension directory `cargo xtask deps` assembled.
pub fn extensions() -> PathBuf {
    std::env::var_os("DUCKLAKE_TEST_EXTENSIONS")
        .map_or_else(|| cache().join("extensions"), PathBuf::from)
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh home folder (removed on drop).
pub fn home() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("dlc-").tempdir().unwrap()
}

/// The pooler's port for servers and commands in `home`: one free port per home, the same for
/// every call in this test process (the pooler runs by default, and tests run in parallel).
pub fn pooler_port(home: &Path) -> u16 {
    pooler_port_avoiding(home, &[])
}

/// [`pooler_port`], never one of `taken` (the server's PostgreSQL and HTTP ports, themselves
/// free ports picked a moment ago: two picks can meet).
fn pooler_port_avoiding(home: &Path, taken: &[u16]) -> u16 {
    static PORTS: std::sync::Mutex<Vec<(PathBuf, u16)>> = std::sync::Mutex::new(Vec::new());
    let mut ports = PORTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, p)) = ports.iter_mut().find(|(h, _)| h == home) {
        while taken.contains(p) {
            *p = free_port();
        }
        return *p;
    }
    let mut port = free_port();
    while taken.contains(&port) {
        port = free_port();
    }
    ports.push((home.to_path_buf(), port));
    port
}

/// The health port of the server last spawned on `home`, so commands run beside it (`run_cli`)
/// reach it as a user's shell in the task would (`lake create` waits for its pooler, `status`).
static HTTP_PORTS: std::sync::Mutex<Vec<(PathBuf, u16)>> = std::sync::Mutex::new(Vec::new());

fn http_port_of(home: &Path) -> Option<u16> {
    HTTP_PORTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .rev()
        .find(|(h, _)| h == home)
        .map(|(_, p)| *p)
}

/// The base environment for the binary: nothing from the developer's shell but PATH and HOME.
pub fn base_command(home: &Path, pg_port: u16, http_port: u16) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::var_os("HOME").unwrap_or_default())
        .env("DUCKLAKE_CATALOG_HOME", home)
        .env("DUCKLAKE_CATALOG_POSTGRES__PORT", pg_port.to_string())
        .env(
            "DUCKLAKE_CATALOG_POOLER__PORT",
            pooler_port_avoiding(home, &[pg_port, http_port]).to_string(),
        )
        .env(
            "DUCKLAKE_CATALOG_HTTP__LISTEN",
            format!("127.0.0.1:{http_port}"),
        )
        .env("DUCKLAKE_CATALOG_DUCKDB__EXTENSION_DIRECTORY", extensions())
        .env("DUCKLAKE_CATALOG_LOG__FORMAT", "json")
        .env("DUCKLAKE_CATALOG_POSTGRES__STOP_TIMEOUT_SECS", "20");
    cmd
}

/// A running `ducklake-catalog serve`.
pub struct Server {
    pub child: Option<Child>,
    pub home: PathBuf,
    /// PostgreSQL's port: the direct session path.
    pub pg_port: u16,
    /// The pooler's port (on by default): what clients are given.
    pub pooler_port: u16,
    pub http_port: u16,
    pub log: PathBuf,
    /// `DUCKLAKE_CATALOG_S3__ENDPOINT` it was started with, for clients.
    pub s3_endpoint: Option<String>,
}

impl Server {
    /// Starts `serve` with `env` on top of the base environment; does not wait for readiness.
    pub fn spawn(home: &Path, env: &[(&str, &str)]) -> Server {
        Self::spawn_on(home, free_port(), free_port(), env)
    }

    pub fn spawn_on(home: &Path, pg_port: u16, http_port: u16, env: &[(&str, &str)]) -> Server {
        let mut cmd = base_command(home, pg_port, http_port);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.arg("serve");
        let mut server = Self::spawn_command(cmd, home, pg_port, http_port);
        server.s3_endpoint = env
            .iter()
            .find(|(k, _)| *k == "DUCKLAKE_CATALOG_S3__ENDPOINT")
            .map(|(_, v)| (*v).to_owned());
        server
    }

    /// Spawns `cmd` (a `serve` on these ports, possibly wrapped) with its output in a log file.
    pub fn spawn_command(mut cmd: Command, home: &Path, pg_port: u16, http_port: u16) -> Server {
        HTTP_PORTS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((home.to_path_buf(), http_port));
        let log = home.join(format!("serve-{pg_port}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Server {
            child: Some(child),
            home: home.to_path_buf(),
            pg_port,
            pooler_port: pooler_port(home),
            http_port,
            log,
            s3_endpoint: None,
        }
    }

    /// Starts `serve` and waits until `/readyz` answers 200.
    pub fn start(home: &Path, env: &[(&str, &str)]) -> Server {
        let mut s = Self::spawn(home, env);
        s.wait_ready(Duration::from_mins(2));
        s
    }

    pub fn readyz_url(&self) -> String {
        format!("http://127.0.0.1:{}/readyz", self.http_port)
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET a health endpoint: (status code, JSON body); `None` while nothing listens.
    /// `GET path` on the health listener: status, content type and the body as it could be
    /// read; `None` when the request could not be sent.
    fn fetch(&self, path: &str) -> Option<(u16, String, reqwest::Result<String>)> {
        let url = format!("http://127.0.0.1:{}{path}", self.http_port);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let resp = reqwest::Client::new()
                .get(url)
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .ok()?;
            let code = resp.status().as_u16();
            let ctype = resp
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            Some((code, ctype, resp.text().await))
        })
    }

    /// `GET path`: status and JSON body (`null` when it is not JSON); `None` when unreachable.
    pub fn get(&self, path: &str) -> Option<(u16, serde_json::Value)> {
        let (code, _, body) = self.fetch(path)?;
        let json = body
            .ok()
            .and_then(|b| serde_json::from_str(&b).ok())
            .unwrap_or(serde_json::Value::Null);
        Some((code, json))
    }

    /// `GET path` on the health listener: status, content type and body text.
    pub fn get_text(&self, path: &str) -> (u16, String, String) {
        let (code, ctype, body) = self
            .fetch(path)
            .unwrap_or_else(|| panic!("GET {path}: the server is not reachable"));
        (code, ctype, body.unwrap())
    }

    pub fn wait_ready(&mut self, timeout: Duration) -> serde_json::Value {
        self.wait_for(timeout, |code, _| code == 200)
    }

    /// Polls `/readyz` until `pred` holds; panics with the server log if it exits or times out.
    pub fn wait_for(
        &mut self,
        timeout: Duration,
        pred: impl Fn(u16, &serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "serve exited ({status}) before the condition held:\n{}",
                    self.logs()
                );
            }
            if let Some((code, body)) = self.get("/readyz") {
                if pred(code, &body) {
                    return body;
                }
            }
            assert!(
                Instant::now() < deadline,
                "condition not met within {timeout:?}:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Sends `sig` to the supervisor.
    pub fn signal(&self, sig: Signal) {
        let pid = self.child.as_ref().unwrap().id();
        kill(Pid::from_raw(i32::try_from(pid).unwrap()), sig).unwrap();
    }

    /// SIGTERM, then waits (bounded) for the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        self.wait_exit(Duration::from_mins(1))
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "serve did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The admin password the server generated.
    pub fn admin_password(&self) -> String {
        std::fs::read_to_string(self.home.join("secrets/admin.password"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// The postmaster's pid, from `/readyz`.
    pub fn postgres_pid(&self) -> i32 {
        let (_, body) = self.get("/readyz").unwrap();
        i32::try_from(body["postgres"]["pid"].as_i64().unwrap()).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.signal(Signal::SIGTERM);
            let _ = self.wait_exit(Duration::from_mins(1));
        }
    }
}

/// Runs the binary with `args` (not `serve`) and returns its output.
pub fn run_cli(home: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = base_command(home, 5432, http_port_of(home).unwrap_or(8080));
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(args).stdin(Stdio::null()).output().unwrap()
}

/// Runs `serve` expecting it to fail within two minutes; returns (exit code, stderr). A server
/// that comes up instead is stopped and the test fails.
pub fn serve_fails(home: &Path, env: &[(&str, &str)]) -> (i32, String) {
    let mut server = Server::spawn(home, env);
    let deadline = Instant::now() + Duration::from_mins(2);
    loop {
        if let Some(status) = server.child.as_mut().unwrap().try_wait().unwrap() {
            server.child = None;
            let out = server.logs();
            let stderr = out
                .lines()
                .filter(|l| !l.starts_with('{'))
                .collect::<Vec<_>>()
                .join("\n");
            return (status.code().unwrap_or(-1), stderr);
        }
        let came_up = server.get("/readyz").is_some_and(|(c, _)| c == 200);
        assert!(
            Instant::now() < deadline && !came_up,
            "serve did not fail:\n{}",
            server.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The single `error:` line a failed command printed.
pub fn error_line(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("ducklake-catalog: error:"))
        .collect();
    assert_eq!(lines.len(), 1, "expected one error line, got:\n{stderr}");
    lines[0].to_owned()
}

/// True while some process runs `postgres -D <pgdata>`.
pub fn postgres_running(pgdata: &Path) -> bool {
    let needle = pgdata.to_string_lossy().into_owned();
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
            let c = String::from_utf8_lossy(&c).replace('\0', " ");
            c.contains("postgres") && c.contains(&needle)
        })
    })
}

/// Connects to `db` as `user` over TCP on loopback `port` (PostgreSQL's or the pooler's),
/// without TLS (as loopback allows).
pub async fn connect(
    port: u16,
    user: &str,
    password: &str,
    db: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user(user)
        .password(password)
        .dbname(db)
        .connect_timeout(Duration::from_secs(10))
        .connect(tokio_postgres::NoTls)
        .await?;
    tokio::spawn(conn);
    Ok(client)
}

/// Connects to the lake's database as the admin over TCP.
pub async fn admin_client(
    server: &Server,
    password: &str,
    db: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    connect(server.pg_port, "admin", password, db).await
}

/// `moto_server` on a free loopback port, killed on drop.
pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Moto {
    pub fn start(env: &[(&str, &str)]) -> Moto {
        let port = free_port();
        // Each moto records into its own, new file (the default is one file in the cwd; a file
        // named by the port alone kept an earlier moto's requests when the port came again).
        let recording = std::env::temp_dir().join(format!(
            "moto-recording-{}-{port}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        let _ = std::fs::remove_file(&recording);
        let mut cmd = Command::new(venv().join("bin/moto_server"));
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("MOTO_RECORDER_FILEPATH", &recording)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto { child, port }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Runs a Python snippet with boto3 pointed at this moto; `s3` is a client in scope.
    pub fn python(&self, code: &str) -> String {
        let script = format!(
            "import boto3\ns3 = boto3.client('s3', endpoint_url='{}', region_name='us-east-1', aws_access_key_id='testing', aws_secret_access_key='testing')\n{code}",
            self.endpoint()
        );
        let out = Command::new(venv().join("bin/python"))
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "python failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The S3 settings the server needs to reach this moto with static test keys.
    pub fn server_env(&self) -> Vec<(String, String)> {
        vec![
            ("DUCKLAKE_CATALOG_S3__ENDPOINT".into(), self.endpoint()),
            ("DUCKLAKE_CATALOG_S3__REGION".into(), "us-east-1".into()),
            ("DUCKLAKE_CATALOG_S3__ALLOW_HTTP".into(), "true".into()),
            (
                "DUCKLAKE_CATALOG_S3__FORCE_PATH_STYLE".into(),
                "true".into(),
            ),
            (
                "DUCKLAKE_CATALOG_S3__ACCESS_KEY_ID".into(),
                "testing".into(),
            ),
            (
                "DUCKLAKE_CATALOG_S3__SECRET_ACCESS_KEY".into(),
                "testing".into(),
            ),
        ]
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request a [`Stub`] received.
#[derive(Debug, Clone)]
pub struct StubRequest {
    pub method: String,
    pub path: String,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl StubRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A small HTTP/1.1 endpoint on loopback standing in for an AWS endpoint no emulator covers
/// (Marketplace Metering, the ECS credentials endpoint): `answer` gets each request (and how
/// many came before it) and returns the status and JSON body AWS documents; every request is
/// kept for the test to check.
pub struct Stub {
    pub port: u16,
    pub requests: std::sync::Arc<std::sync::Mutex<Vec<StubRequest>>>,
}

impl Stub {
    pub fn start(
        answer: impl Fn(&StubRequest, usize) -> (u16, String) + Send + Sync + 'static,
    ) -> Stub {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    continue;
                }
                let mut parts = line.split_whitespace();
                let method = parts.next().unwrap_or_default().to_owned();
                let path = parts.next().unwrap_or_default().to_owned();
                let mut headers = Vec::new();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
                    }
                }
                let len = headers
                    .iter()
                    .find(|(k, _)| k == "content-length")
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0; len];
                let _ = reader.read_exact(&mut body);
                let req = StubRequest {
                    method,
                    path,
                    headers,
                    body: String::from_utf8_lossy(&body).into_owned(),
                };
                let n = seen.lock().unwrap().len();
                let (status, body) = answer(&req, n);
                seen.lock().unwrap().push(req);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\nx-amzn-requestid: stub-{n}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Stub { port, requests }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn requests(&self) -> Vec<StubRequest> {
        self.requests.lock().unwrap().clone()
    }
}

impl Moto {
    /// Starts recording requests (moto's recorder keeps method, URL, headers).
    pub fn start_recording(&self) {
        self.python(&format!(
            "import urllib.request\nurllib.request.urlopen(urllib.request.Request('{}/moto-api/recorder/start-recording', method='POST'))",
            self.endpoint()
        ));
    }

    /// The access key ids that signed the recorded S3 requests, in order.
    pub fn recorded_access_keys(&self) -> Vec<String> {
        let out = self.python(&format!(
            "import urllib.request, json\nfor line in urllib.request.urlopen('{}/moto-api/recorder/download-recording').read().decode().splitlines():\n    if line.strip():\n        a = json.loads(line)['headers'].get('Authorization', '')\n        if 'Credential=' in a:\n            print(a.split('Credential=')[1].split('/')[0])",
            self.endpoint()
        ));
        out.lines().map(str::to_owned).collect()
    }

    /// Runs a Python snippet with a boto3 Secrets Manager client `sm` (test keys) in scope.
    pub fn secrets(&self, code: &str) -> String {
        self.python(&format!(
            "sm = boto3.client('secretsmanager', endpoint_url='{}', region_name='us-east-1', aws_access_key_id='testing', aws_secret_access_key='testing')\n{code}",
            self.endpoint()
        ))
    }
}

/// Runs the DuckDB client script `tests/python/<name>` with `args` and the test extensions
/// (`DLC_EXTENSIONS`), and returns the one JSON value it printed.
pub fn client_script(name: &str, args: &[&str]) -> serde_json::Value {
    client_script_with(&venv(), &extensions(), name, args)
}

/// The venv and extension folder of an older DuckDB release `cargo xtask test` installed for
/// the compatibility tests (`OLDEST_CLIENT_VERSION`, `TOO_OLD_CLIENT_VERSION`).
pub fn older_client(version: &str) -> (PathBuf, PathBuf) {
    let root = std::env::var_os("DUCKLAKE_TEST_CLIENTS")
        .map_or_else(|| cache().join("clients"), PathBuf::from)
        .join(format!("duckdb-{version}"));
    assert!(
        root.join("venv/bin/python").is_file(),
        "no DuckDB {version} client in {}: run `cargo xtask test`",
        root.display()
    );
    (root.join("venv"), root.join("extensions"))
}

/// [`client_script`] with another DuckDB: the venv and extension folder given.
/// `<home>/catalog.toml` with two lakes, `sales` and `hr`, their data under `<home>/data/`.
pub fn two_lakes(home: &Path) -> PathBuf {
    let config = home.join("catalog.toml");
    std::fs::write(
        &config,
        format!(
            "[[lakes]]\nname = \"sales\"\ndata_path = \"{0}/data/sales\"\n\n[[lakes]]\nname = \"hr\"\ndata_path = \"{0}/data/hr\"\n",
            home.display()
        ),
    )
    .unwrap();
    config
}

/// A script in `tests/python`.
pub fn python_script(name: &str) -> PathBuf {
    Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo"))
        .join("tests/python")
        .join(name)
}

pub fn client_script_with(
    venv: &Path,
    extensions: &Path,
    name: &str,
    args: &[&str],
) -> serde_json::Value {
    let out = Command::new(venv.join("bin/python"))
        .arg(python_script(name))
        .args(args)
        .env("DLC_EXTENSIONS", extensions)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// DuckDB reports either PostgreSQL's refusal or, when its pool sent the refused statement on
/// another connection of the same commit (or a parallel step failed first), the aborted
/// transaction that follows it, or only that a query of the step failed (seen in CI for a
/// reader's `ducklake_flush_inlined_data`). Callers prove separately that nothing changed.
pub fn refused_by_permission(text: &str) -> bool {
    text.contains("permission denied")
        || text.contains("Current transaction is aborted")
        || text.contains("Attempting to fetch from an unsuccessful query result")
}

/// As whoever `conninfo` logs in as: a Parquet table `shared` (5,000 rows) and an inlined one
/// `small` (3 rows) in the lake `conninfo` names.
pub fn seed_shared_and_small(conninfo: &str) {
    let code = format!(
        "import duckdb, os\ncon = duckdb.connect(config={{'extension_directory': os.environ['DLC_EXTENSIONS'], 'autoinstall_known_extensions': 'false'}})\ncon.execute('LOAD ducklake; LOAD postgres;')\ncon.execute(\"ATTACH 'ducklake:postgres:{conninfo}' AS lake\")\ncon.execute('CREATE TABLE lake.shared AS SELECT i AS x FROM range(5000) r(i)')\ncon.execute('CREATE TABLE lake.small (x INTEGER)')\ncon.execute('INSERT INTO lake.small VALUES (1), (2), (3)')"
    );
    let out = Command::new(venv().join("bin/python"))
        .arg("-c")
        .arg(code)
        .env("DLC_EXTENSIONS", extensions())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
