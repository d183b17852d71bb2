//! `user create|list|rotate|drop`: per-lake reader and writer credentials.

use std::io::Read as _;

use anyhow::Context as _;
use catalog_server::config::Config;
use catalog_server::users::{self, LakeRole, UserInfo};
use catalog_server::Secret;
use clap::Subcommand;
use rand::distr::{Alphanumeric, SampleString};

use crate::commands::runtime;
use crate::{Failure, Format};

#[derive(Debug, Subcommand)]
pub(crate) enum UserCommand {
    /// Create a user of one lake. The password is generated and printed once, unless given on
    /// stdin with --password-stdin.
    Create {
        name: String,
        #[arg(long)]
        lake: String,
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Read the password from stdin (one line) instead of generating one.
        #[arg(long)]
        password_stdin: bool,
        /// How many sessions the user may hold at once (default: a quarter of PostgreSQL's
        /// max_connections, at least 8).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        max_connections: Option<u32>,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Change how many sessions a user may hold at once.
    Limit {
        name: String,
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        max_connections: u32,
    },
    /// List the users of every lake (or of --lake).
    List {
        #[arg(long)]
        lake: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Give a user a new password (generated and printed, or --password-stdin); open sessions
    /// stay open.
    Rotate {
        name: String,
        #[arg(long)]
        password_stdin: bool,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Remove a user: its sessions end and it can no longer log in.
    Drop { name: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum RoleArg {
    Reader,
    Writer,
    Owner,
}

pub(crate) fn run(config: &Config, command: &UserCommand) -> Result<(), Failure> {
    let rt = runtime()?;
    let admin = crate::commands::admin(&rt, config)?;
    match command {
        UserCommand::Create {
            name,
            lake,
            role,
            password_stdin,
            max_connections,
            format,
        } => {
            let lake = config.lake(lake).map_err(Failure::config)?;
            let mut limits = users::UserLimits::default_for(&admin.settings);
            if let Some(n) = max_connections {
                limits.connections = *n;
            }
            let role = match role {
                RoleArg::Reader => LakeRole::Reader,
                RoleArg::Writer => LakeRole::Writer,
                RoleArg::Owner => LakeRole::Owner,
            };
            let password = password(*password_stdin)?;
            let user = rt
                .block_on(users::create(&admin, name, lake, role, &password, limits))
                .map_err(failure)?;
            print_credentials(config, &user, &password, *format);
            Ok(())
        }
        UserCommand::List { lake, format } => {
            if let Some(l) = lake {
                config.lake(l).map_err(Failure::config)?;
            }
            let all = rt
                .block_on(users::list(&admin, lake.as_deref()))
                .map_err(failure)?;
            match format {
                Format::Json => println!("{}", serde_json::to_string(&all).context("serialise")?),
                Format::Text => {
                    println!("{:<24} {:<24} role", "user", "lake");
                    for u in &all {
                        println!("{:<24} {:<24} {}", u.name, u.lake, u.role);
                    }
                }
            }
            Ok(())
        }
        UserCommand::Rotate {
            name,
            password_stdin,
            format,
        } => {
            let password = password(*password_stdin)?;
            let user = rt
                .block_on(users::rotate(&admin, name, &password))
                .map_err(failure)?;
            print_credentials(config, &user, &password, *format);
            Ok(())
        }
        UserCommand::Limit {
            name,
            max_connections,
        } => {
            let limits = users::UserLimits {
                connections: *max_connections,
            };
            let user = rt
                .block_on(users::set_limits(&admin, name, limits))
                .map_err(failure)?;
            println!(
                "{} may hold {} sessions at once",
                user.name, limits.connections
            );
            Ok(())
        }
        UserCommand::Drop { name } => {
            let user = rt.block_on(users::drop(&admin, name)).map_err(failure)?;
            println!(
                "dropped {} ({} of lake {})",
                user.name, user.role, user.lake
            );
            Ok(())
        }
    }
}

/// Bad names and weak passwords are usage errors (exit 2); the rest happen at run time.
fn failure(e: users::UserError) -> Failure {
    match e {
        users::UserError::BadName { .. } | users::UserError::Weak(_) => Failure::config(e),
        other => anyhow::Error::new(other).into(),
    }
}

fn password(from_stdin: bool) -> Result<Secret, Failure> {
    if !from_stdin {
        return Ok(Secret::new(
            Alphanumeric.sample_string(&mut rand::rng(), 32),
        ));
    }
    let mut raw = String::new();
    std::io::stdin()
        .read_to_string(&mut raw)
        .context("read the password from stdin")?;
    Ok(Secret::new(raw.trim_end_matches(['\r', '\n'])))
}

/// The user's ATTACH details and password, shown once.
fn print_credentials(config: &Config, user: &UserInfo, password: &Secret, format: Format) {
    let lake = config
        .lake(&user.lake)
        .expect("the user's lake is configured");
    let mut info = catalog_server::connection::for_lake(config, lake);
    info.user.clone_from(&user.name);
    info.password = Some(password.clone());
    let read_only = if user.role == LakeRole::Reader {
        " (READ_ONLY)"
    } else {
        ""
    };
    match format {
        Format::Json => println!(
            "{}",
            serde_json::json!({
                "user": user.name,
                "lake": user.lake,
                "role": user.role,
                "password": password.expose(),
                "attach": format!("{}{read_only}", info.attach_sql(false)),
            })
        ),
        Format::Text => {
            println!(
                "user       {} ({} of lake {})",
                user.name, user.role, user.lake
            );
            println!(
                "password   {}   (shown once; store it now)",
                password.expose()
            );
            println!("{}{read_only};", info.attach_sql(false));
        }
    }
}
