//! The subcommands.

use std::time::Duration;

use anyhow::{anyhow, Context as _};
use catalog_server::config::{Config, Sources};
use catalog_server::duckdb_worker::DuckDbRunner;
use catalog_server::{status, versions, Probe, Supervisor};
use health::HealthState;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::inspect::View;
use crate::{Cli, Command, ConfigCommand, Failure, Format};

pub(crate) fn run(cli: &Cli) -> Result<(), Failure> {
    let load = || load_config(cli);
    // Commands given `--lake` also find lakes created by command, when the server runs.
    let with_lakes = || -> Result<Config, Failure> {
        let mut config = load_config(cli)?;
        let rt = runtime()?;
        if let Ok(admin) = rt.block_on(catalog_server::admin::admin(&config)) {
            if let Ok(lakes) = rt.block_on(catalog_server::lakes::with_registered(&admin)) {
                config.lakes = lakes;
            }
        }
        Ok(config)
    };
    match &cli.command {
        Command::Serve => serve(load()?),
        Command::Health {
            url,
            timeout,
            ready,
        } => {
            let url = match url {
                Some(u) => u.clone(),
                None => load()?.health_url(if *ready { "/readyz" } else { "/healthz" }),
            };
            health_probe(&url, Duration::from_secs(*timeout))
        }
        Command::Status(args) => crate::status::run(args, load),
        Command::Config {
            command: ConfigCommand::Show,
        } => {
            print!("{}", load()?.to_redacted_toml());
            Ok(())
        }
        Command::Config {
            command: ConfigCommand::Reference { format },
        } => {
            config_reference(*format);
            Ok(())
        }
        Command::IamPolicy {
            lake,
            role,
            explain,
        } => iam_policy(&with_lakes()?, lake.as_deref(), *role, *explain),
        Command::Version { format } => version(*format),
        Command::Backup { command } => crate::backup::run(&load()?, command),
        Command::Switchover => crate::backup::switchover(&load()?),
        Command::Restore { to_time, format } => {
            crate::backup::restore(&load()?, to_time.as_deref(), *format)
        }
        Command::Connect(args) => crate::connect::run(&with_lakes()?, args),
        Command::Doctor { format } => doctor(load_config(cli), *format),
        Command::User { command } => crate::users::run(&with_lakes()?, command),
        Command::Lake { command } => crate::lakes::run(&load()?, command),
        upkeep @ (Command::Maintain { .. }
        | Command::Verify { .. }
        | Command::Orphans { .. }
        | Command::Gc { .. }) => crate::maintain::run(&with_lakes()?, upkeep),
        Command::Snapshots { lake, format } => {
            inspect(&with_lakes()?, lake, &View::Snapshots, *format)
        }
        Command::Tables {
            lake,
            snapshot,
            format,
        } => inspect(
            &with_lakes()?,
            lake,
            &View::Tables {
                snapshot: *snapshot,
            },
            *format,
        ),
        Command::Files {
            lake,
            table,
            format,
        } => inspect(
            &with_lakes()?,
            lake,
            &View::Files {
                table: table.clone(),
            },
            *format,
        ),
        Command::Usage { lake, format } => inspect(&with_lakes()?, lake, &View::Usage, *format),
    }
}

fn inspect(config: &Config, lake: &str, view: &View, format: Format) -> Result<(), Failure> {
    crate::inspect::run(config, lake, view, format)
}

fn load_config(cli: &Cli) -> Result<Config, Failure> {
    let mut sources = Sources::from_process();
    sources.file.clone_from(&cli.config);
    let mut overrides = serde_json::Map::new();
    if let Some(home) = &cli.home {
        overrides.insert("home".into(), home.to_string_lossy().into());
    }
    {
        let a = &cli.overrides;
        let mut pg = serde_json::Map::new();
        if let Some(p) = a.port {
            pg.insert("port".into(), p.into());
        }
        if let Some(l) = &a.listen_address {
            pg.insert("listen_address".into(), l.clone().into());
        }
        if !pg.is_empty() {
            overrides.insert("postgres".into(), pg.into());
        }
        if let Some(h) = &a.http_listen {
            overrides.insert("http".into(), serde_json::json!({ "listen": h }));
        }
    }
    if !overrides.is_empty() {
        sources.overrides = Some(overrides.into());
    }
    Config::load(&sources).map_err(Failure::config)
}

/// `config` with its region resolved, and the S3 settings signing with the process's AWS
/// identity, set up on `rt` (the runtime that will use it).
pub(crate) fn with_aws(
    rt: &tokio::runtime::Runtime,
    config: &Config,
) -> Result<(Config, storage::S3Settings), Failure> {
    let mut config = config.clone();
    let aws = rt
        .block_on(config.prepare_aws())
        .map_err(Failure::config)?
        .map(|(_, aws)| aws);
    let s3 = config.s3_settings(aws.as_ref());
    Ok((config, s3))
}

/// How this binary runs DuckDB work: its own `duckdb-worker` subcommand, with the extension
/// folder the configuration names.
pub(crate) fn duckdb_runner(config: &Config) -> Result<DuckDbRunner, Failure> {
    let dir = catalog_server::lake::find_extension_directory(
        config.duckdb.extension_directory.as_deref(),
        &config.home,
    )
    .map_err(Failure::config)?;
    let program = std::env::current_exe().context("find this program's path")?;
    Ok(DuckDbRunner::new(program, dir))
}

/// The DuckLake administration of `config`'s PostgreSQL (the running server's, or
/// `postgres.url`'s), for the commands that run beside `serve`.
pub(crate) fn admin(
    rt: &tokio::runtime::Runtime,
    config: &Config,
) -> Result<catalog_server::Admin, Failure> {
    Ok(rt
        .block_on(catalog_server::admin::admin(config))
        .context("reach the catalog's PostgreSQL")?)
}

/// `iam-policy`: the policy for `role`, or the table explaining it.
fn iam_policy(
    config: &Config,
    lake: Option<&str>,
    role: crate::IamRole,
    explain: bool,
) -> Result<(), Failure> {
    use catalog_server::iam::{self, PolicyRole};
    let role = match role {
        crate::IamRole::Server => PolicyRole::Server,
        crate::IamRole::Writer => PolicyRole::Writer,
        crate::IamRole::Reader => PolicyRole::Reader,
    };
    let inputs = config.iam_inputs(lake).map_err(Failure::config)?;
    let policy = iam::policy(&inputs, role).map_err(Failure::config)?;
    if explain {
        print!("{}", iam::explain(&policy));
    } else {
        println!("{}", policy.to_json());
    }
    Ok(())
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?)
}

/// What the health endpoints read out of the supervisor's status.
fn judge(s: &status::Status) -> health::Readiness {
    health::Readiness {
        alive: s.postgres.is_alive(),
        accepting: s.accepting(),
        blocker: s.blocker(),
        role: s.role(),
    }
}

/// `/metrics` and `/status`: the kept facts with the live status laid over them, in
/// Prometheus's format and as JSON.
fn metrics(
    token: Option<catalog_server::Secret>,
    status: status::StatusReceiver,
    facts: tokio::sync::watch::Receiver<catalog_server::telemetry::Facts>,
    started: std::time::Instant,
) -> health::Metrics {
    let current = std::sync::Arc::new(move || {
        let mut f = catalog_server::observe::current(&status.borrow(), &facts.borrow(), started);
        f.server.recent_problems = health::recent_problems();
        f
    });
    let json = current.clone();
    health::Metrics {
        prometheus: std::sync::Arc::new(move || catalog_server::telemetry::prometheus(&current())),
        json: std::sync::Arc::new(move || {
            serde_json::to_value(json()).unwrap_or(serde_json::Value::Null)
        }),
        token,
    }
}

/// The readiness check's `SELECT 1`, through the supervisor's probe.
struct PgPing(Probe);

impl health::Ping for PgPing {
    fn ping(
        &self,
        timeout: std::time::Duration,
    ) -> impl std::future::Future<Output = Result<(), String>> + Send {
        self.0.ping(timeout)
    }
}

fn serve(mut config: Config) -> Result<(), Failure> {
    health::init_tracing(config.log.format, &config.log.level).map_err(Failure::config)?;
    runtime()?.block_on(async move {
        let shutdown = CancellationToken::new();
        let immediate = CancellationToken::new();
        let reload = std::sync::Arc::new(tokio::sync::Notify::new());
        watch_signals(shutdown.clone(), immediate.clone(), reload.clone())?;
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            duckdb = versions::DUCKDB_VERSION,
            postgres_major = versions::PG_MAJOR,
            home = %config.home.display(),
            "starting ducklake-catalog"
        );
        let aws = match config.prepare_aws().await.map_err(Failure::config)? {
            Some((region, aws)) => {
                tracing::info!(region = %region.name, source = region.source, "AWS region");
                Some(aws)
            }
            None => None,
        };
        // A paid container checks its entitlement before it serves anything.
        catalog_server::marketplace::register(aws.as_ref(), &config.marketplace)
            .await
            .map_err(anyhow::Error::new)?;
        let (tx, rx) = status::channel();
        let listen = config.http.listen;
        let program = std::env::current_exe().context("find this program's path")?;
        let token = config.metrics.token.clone();
        let supervisor = Supervisor::new(config, aws, tx, program);
        let health_state = HealthState::new(rx.clone(), judge).with_metrics(metrics(
            token,
            rx,
            supervisor.facts(),
            std::time::Instant::now(),
        ));
        let http_stop = CancellationToken::new();
        let http = health::serve(listen, health_state.clone(), http_stop.clone())
            .await
            .map_err(|e| {
                anyhow!(
                    "http.listen: bind {listen}: {e}; choose another address with --http-listen or DUCKLAKE_CATALOG_HTTP__LISTEN"
                )
            })?;
        let checks = tokio::spawn(health::run_checks(
            health_state,
            PgPing(supervisor.probe()),
            http_stop.clone(),
        ));
        let supervisor_reload = supervisor.reload_handle();
        tokio::spawn(async move {
            loop {
                reload.notified().await;
                supervisor_reload.notify_one();
            }
        });
        let result = supervisor.run(shutdown, immediate).await;
        http_stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), http).await;
        let _ = checks.await;
        match result {
            Ok(()) => {
                tracing::info!("stopped cleanly");
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "ducklake-catalog stopped with an error");
                Err(anyhow::Error::new(e).into())
            }
        }
    })
}

/// First SIGTERM/SIGINT: orderly stop. Second: immediate stop. SIGHUP: `reload`.
fn watch_signals(
    shutdown: CancellationToken,
    immediate: CancellationToken,
    reload: std::sync::Arc<tokio::sync::Notify>,
) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("install the SIGHUP handler")?;
    tokio::spawn(async move {
        let mut seen = 0;
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
                _ = hup.recv() => {
                    tracing::info!(signal = "SIGHUP", "reloading the admin password secret");
                    reload.notify_one();
                    continue;
                }
            };
            seen += 1;
            if seen == 1 {
                tracing::info!(signal = name, "shutting down: fast shutdown of postgres");
                shutdown.cancel();
            } else {
                tracing::warn!(signal = name, "second signal: immediate shutdown");
                immediate.cancel();
            }
        }
    });
    Ok(())
}

fn doctor(config: Result<Config, Failure>, format: Format) -> Result<(), Failure> {
    let config = config.map_err(|f| {
        f.error
            .downcast::<catalog_server::config::ConfigError>()
            .unwrap_or_else(|e| catalog_server::config::ConfigError::Figment(format!("{e:#}")))
    });
    let report = runtime()?.block_on(::doctor::run(config));
    match format {
        Format::Text => print!("{}", report.to_text()),
        Format::Json => println!(
            "{}",
            serde_json::to_string(&report).context("serialise the report")?
        ),
    }
    if report.ok {
        Ok(())
    } else {
        Err(Failure {
            code: crate::EXIT_FAILURE,
            error: anyhow!("doctor: some checks failed (see above)"),
        })
    }
}

fn health_probe(url: &str, timeout: Duration) -> Result<(), Failure> {
    let body = runtime()?
        .block_on(health::probe(url, timeout))
        .map_err(anyhow::Error::new)?;
    println!("{body}");
    Ok(())
}

fn config_reference(format: Format) {
    use catalog_server::config_reference::{env_var, markdown_table, KEYS};
    match format {
        Format::Text => print!("{}", markdown_table()),
        Format::Json => {
            let keys: Vec<serde_json::Value> = KEYS
                .iter()
                .map(|k| {
                    let mut v = serde_json::to_value(k).expect("a key serialises");
                    v["env"] = env_var(k.key).into();
                    v
                })
                .collect();
            println!("{}", serde_json::Value::from(keys));
        }
    }
}

fn version(format: Format) -> Result<(), Failure> {
    // Ask the embedded engine itself, so the printed version is the one that runs.
    let conn = duckdb::Connection::open_in_memory().context("open the embedded DuckDB")?;
    let engine: String = conn
        .query_row("SELECT version()", [], |r| r.get(0))
        .context("read the DuckDB version")?;
    let info = serde_json::json!({
        "ducklake_catalog": env!("CARGO_PKG_VERSION"),
        "duckdb_engine": engine.trim_start_matches('v'),
        "ducklake_spec": versions::DUCKLAKE_SPEC_VERSION,
        "postgres_major": versions::PG_MAJOR,
        "clients": {
            "duckdb_oldest": versions::OLDEST_CLIENT_VERSION,
            "duckdb_tested": versions::DUCKDB_VERSION,
        },
        "extensions": versions::DUCKDB_EXTENSIONS.iter().map(|(_, f)| format!("{f} v{}", versions::DUCKDB_VERSION)).collect::<Vec<_>>(),
    });
    match format {
        Format::Json => println!("{info}"),
        Format::Text => {
            println!("ducklake-catalog {}", env!("CARGO_PKG_VERSION"));
            println!(
                "DuckDB engine    {}",
                info["duckdb_engine"].as_str().unwrap_or_default()
            );
            println!("DuckLake spec    {}", versions::DUCKLAKE_SPEC_VERSION);
            println!("PostgreSQL       {}", versions::PG_MAJOR);
            println!(
                "Clients          DuckDB {} to {} (older ones cannot attach spec {} lakes)",
                versions::OLDEST_CLIENT_VERSION,
                versions::DUCKDB_VERSION,
                versions::DUCKLAKE_SPEC_VERSION
            );
        }
    }
    Ok(())
}
