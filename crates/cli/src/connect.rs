//! `connect`: how a client reaches a lake — the details, a complete program per language
//! (`--lang`), and a live check of that program (`--check`).

use std::path::PathBuf;

use anyhow::{anyhow, Context as _};
use catalog_server::config::{Config, LakeConfig};
use catalog_server::connection::ConnectionInfo;
use connectors::{Connector, Storage, Target, Toolchain};
use storage::DataPath;

use crate::{Failure, Format};

#[derive(Debug, clap::Args)]
pub(crate) struct ConnectArgs {
    /// The lake; default: the only configured lake.
    #[arg(long)]
    lake: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Include the password (with --lang: print it beside the program, never inside it).
    #[arg(long)]
    show_password: bool,
    /// Print a complete program for this client: python, go, cli, node or rust.
    #[arg(long, value_name = "LANG")]
    lang: Option<String>,
    /// Run the --lang program against this server and check what it printed; the client's
    /// toolchain must be installed (see docs/connecting.md).
    #[arg(long, requires = "lang")]
    check: bool,
    /// Write the program's files into DIR (the Go, Node and Rust programs have several).
    #[arg(long, value_name = "DIR", requires = "lang")]
    out: Option<PathBuf>,
    /// libpq sslmode written into programs: require (TLS; the default), verify-ca or
    /// verify-full (TLS and a trusted certificate), prefer.
    #[arg(long, default_value = "require", value_parser = ["require", "verify-ca", "verify-full", "prefer"])]
    sslmode: String,
}

pub(crate) fn run(config: &Config, args: &ConnectArgs) -> Result<(), Failure> {
    let lake = choose_lake(config, args.lake.as_deref())?;
    let mut info = catalog_server::connection::for_lake(config, lake);
    if (args.show_password || args.check) && config.postgres.admin_password_secret.is_some() {
        // The secret is read now, as a client would, with this process's AWS identity.
        info.password = crate::commands::runtime()?
            .block_on(catalog_server::connection::admin_password(config))
            .map_err(anyhow::Error::new)?;
    }
    if args.show_password && info.password.is_none() {
        return Err(anyhow!(
            "the admin password is not readable ({}); start the server once or set postgres.admin_password",
            info.password_source
        )
        .into());
    }
    match &args.lang {
        None => {
            let settings = connectors::client_settings(config.client_pool_max());
            details(&info, &settings, args.format, args.show_password)?;
            Ok(())
        }
        Some(lang) => {
            let connector = connectors::connector(lang).map_err(Failure::config)?;
            let target = target(config, lake, &info, &args.sslmode);
            let program =
                connectors::render(connector.as_ref(), &target).map_err(Failure::config)?;
            if let Some(dir) = &args.out {
                program.write_to(dir).map_err(anyhow::Error::new)?;
            }
            if args.check {
                return check(connector.as_ref(), &program, &info, args.format);
            }
            print_program(&program, &info, args)
        }
    }
}

fn choose_lake<'c>(config: &'c Config, lake: Option<&str>) -> Result<&'c LakeConfig, Failure> {
    match lake {
        Some(name) => config.lake(name).map_err(Failure::config),
        None if config.lakes.len() == 1 => Ok(&config.lakes[0]),
        None => Err(Failure::config(anyhow!(
            "several lakes are configured ({}); choose one with --lake",
            config.lake_names()
        ))),
    }
}

/// What a program must be told: the server as clients see it, and how to reach the lake's data
/// (the AWS credential chain on S3, the configured endpoint for S3-compatible stores).
fn target(config: &Config, lake: &LakeConfig, info: &ConnectionInfo, sslmode: &str) -> Target {
    let storage = match (&lake.data_path, &config.s3.endpoint) {
        (DataPath::Local(_), _) => Storage::Local,
        (DataPath::S3 { .. }, None) => Storage::S3,
        (DataPath::S3 { .. }, Some(url)) => {
            let (scheme, rest) = url.split_once("://").unwrap_or(("https", url));
            Storage::S3Endpoint {
                endpoint: rest.trim_end_matches('/').to_owned(),
                region: config
                    .s3
                    .region
                    .clone()
                    .unwrap_or_else(|| "us-east-1".into()),
                use_ssl: scheme != "http",
            }
        }
    };
    Target {
        host: info.host.clone(),
        port: info.port,
        user: info.user.clone(),
        lake: info.lake.clone(),
        sslmode: sslmode.to_owned(),
        storage,
        pool_max: config.client_pool_max(),
    }
}

/// The connection details, and the ATTACH with the `settings` a client SETs before it.
fn details(
    info: &ConnectionInfo,
    settings: &[String],
    format: Format,
    show_password: bool,
) -> anyhow::Result<()> {
    let password = if show_password {
        info.password.as_ref().map_or("", |p| p.expose()).to_owned()
    } else {
        format!("(hidden: --show-password; {})", info.password_source)
    };
    match format {
        Format::Json => {
            let mut v = serde_json::to_value(info).context("serialise the connection info")?;
            v["attach"] = info.attach_sql(show_password).into();
            v["settings"] = settings.into();
            if show_password {
                v["password"] = password.into();
            }
            println!("{v}");
        }
        Format::Text => {
            println!("lake       {}", info.lake);
            println!("host       {}", info.host);
            println!("port       {}", info.port);
            println!("dbname     {}", info.dbname);
            println!("user       {}", info.user);
            println!("password   {password}");
            println!("data path  {}", info.data_path);
            println!();
            for s in settings {
                println!("{s};");
            }
            println!("{};", info.attach_sql(show_password));
        }
    }
    Ok(())
}

/// The main file on stdout (so `connect --lang python > main.py` works); how to run it, and the
/// other files it needs, on stderr.
fn print_program(
    program: &connectors::Program,
    info: &ConnectionInfo,
    args: &ConnectArgs,
) -> Result<(), Failure> {
    if args.format == Format::Json {
        let mut v = serde_json::to_value(program).context("serialise the program")?;
        if args.show_password {
            v["password"] = info
                .password
                .as_ref()
                .map(catalog_server::Secret::expose)
                .into();
        }
        println!("{v}");
        return Ok(());
    }
    print!("{}", program.main());
    let others: Vec<&str> = program.files[1..].iter().map(|f| f.name).collect();
    if !others.is_empty() && args.out.is_none() {
        eprintln!(
            "# {} also needs {}: add --out DIR to write every file",
            program.files[0].name,
            others.join(", ")
        );
    }
    eprintln!("# run: {}", program.run);
    if args.show_password {
        if let Some(pw) = &info.password {
            // Shell-quoted, ready to paste before the run command.
            eprintln!("# PGPASSWORD='{}'", pw.expose().replace('\'', "'\\''"));
        }
    }
    Ok(())
}

/// The folder of the `libduckdb.so` beside this binary or in its `../lib` (where the build tree
/// and the image put it); `None` for a build that compiled DuckDB in.
fn own_libduckdb_dir() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?;
    [bin.to_path_buf(), bin.join("../lib")]
        .into_iter()
        .find(|d| d.join("libduckdb.so").is_file())
        .and_then(|d| d.canonicalize().ok())
}

fn check(
    connector: &dyn Connector,
    program: &connectors::Program,
    info: &ConnectionInfo,
    format: Format,
) -> Result<(), Failure> {
    let mut tools = Toolchain::from_env();
    if tools.libduckdb_dir.is_none() {
        // The official library this binary itself runs on: the Rust program links it too.
        tools.libduckdb_dir = own_libduckdb_dir();
    }
    if std::env::var_os("PGPASSWORD").is_none() {
        let password = info.password.as_ref().ok_or_else(|| {
            anyhow!(
                "--check needs the catalog password ({}), which is not readable here: set PGPASSWORD",
                info.password_source
            )
        })?;
        tools
            .env
            .push(("PGPASSWORD".into(), password.expose().to_owned()));
    }
    let report = crate::commands::runtime()?
        .block_on(connectors::check(connector, program, &tools))
        .map_err(|e| anyhow!("connect --check {}: {e}", connector.language()))?;
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string(&report).context("serialise the report")?
        ),
        Format::Text => println!(
            "✓ {} — {}: {} rows ({} Parquet file{}), time travel to the version before the update ok, {} snapshots, {:.1} s",
            report.language,
            report.client,
            report.summary.rows,
            report.summary.data_files,
            if report.summary.data_files == 1 { "" } else { "s" },
            report.summary.snapshots,
            report.seconds
        ),
    }
    Ok(())
}
