//! `herald`: the command line.
//!
//! - `herald serve` runs the service;
//! - `herald migrate` applies database migrations;
//! - `herald tenant create|list` manages tenants.
//!
//! Exit status: 0 on success, 1 on a runtime failure, 2 on a bad
//! configuration or bad arguments.

use std::process::ExitCode;

/// Not glibc's malloc: Herald allocates small, short-lived buffers across
/// many threads (AMQP frames, JSON, HTTP), where glibc spent a fifth of
/// Herald's CPU in malloc/free (BENCHMARKS.md). mimalloc only when asked
/// for (`--features mimalloc`): it costs the same CPU as jemalloc here but
/// keeps much more memory after load peaks (BENCHMARKS.md, session 6).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// jemalloc (the default feature `jemalloc`), also for its heap profiler
/// (`--features heap-profile`; profiling is switched on at run time with
/// `_RJEM_MALLOC_CONF=prof:true,…`).
#[cfg(all(feature = "jemalloc", not(feature = "mimalloc")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use clap::{Parser, Subcommand};
use herald::config::Config;
use herald::store::Store;
use herald::tenant::{generate_api_key, hash_api_key, parse_channels};

#[derive(Parser)]
#[command(
    name = "herald",
    version,
    about = "Herald: real-time delivery of SMS, voice and WhatsApp"
)]
struct Cli {
    /// Configuration profile: config/<profile>.toml over config/default.toml.
    #[arg(long, global = true, env = "HERALD_PROFILE", default_value = "dev")]
    profile: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (migrations are applied first).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Manage tenants.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Run a carrier simulator (a real protocol server) until Ctrl-C.
    Sim {
        #[command(subcommand)]
        kind: SimKind,
        /// Simulator settings (TOML; every key optional; see the simulator's
        /// config struct in carriers/).
        #[arg(long, global = true)]
        config: Option<std::path::PathBuf>,
        /// Listen address, e.g. 127.0.0.1:2775 (overrides the file).
        #[arg(long, global = true)]
        listen: Option<std::net::SocketAddr>,
    },
}

#[derive(Subcommand, Clone, Copy)]
enum SimKind {
    /// SMPP 3.4 SMSC (default 127.0.0.1:2775, control HTTP on 127.0.0.1:8775).
    Smsc,
    /// WhatsApp Cloud API.
    Whatsapp,
    /// Voice provider (Twilio-like).
    Voice,
    /// Generic JSON HTTP SMS provider.
    HttpSms,
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Create a tenant and print its API key (shown once).
    Create {
        /// Display name.
        #[arg(long)]
        name: String,
        /// Messages per second (default: limits.default_rate).
        #[arg(long)]
        rate: Option<f64>,
        /// Allowed channels, comma separated.
        #[arg(long, default_value = "sms,whatsapp,voice")]
        channels: String,
    },
    /// List tenants.
    List,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Sim {
        kind,
        config,
        listen,
    } = &cli.command
    {
        return sim::run(*kind, config.as_deref(), *listen);
    }
    let config = match Config::load(&Config::default_dir(), &cli.profile) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("herald: {e}");
            return ExitCode::from(2);
        }
    };
    herald::telemetry::init_logging(&config.log);
    let result = actix_web::rt::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime builds")
    })
    .block_on(run(cli.command, config));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("herald: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve => {
            #[cfg(feature = "heap-profile")]
            actix_web::rt::spawn(heap_dump_on_sigusr2());
            herald::app::serve(config).await?;
        }
        Command::Migrate => {
            let applied = herald::store::migrate(config.database.url.expose()).await?;
            println!("migrations applied: {applied}");
        }
        Command::Sim { .. } => unreachable!("handled before the configuration is loaded"),
        Command::Tenant { command } => {
            let store = Store::open(&config.database).await?;
            match command {
                TenantCommand::Create {
                    name,
                    rate,
                    channels,
                } => {
                    let channels = match parse_channels(&channels) {
                        Ok(c) => c,
                        Err(e) => {
                            eprintln!("herald: --channels: {e}");
                            return Ok(ExitCode::from(2));
                        }
                    };
                    let rate = rate.unwrap_or(config.limits.default_rate);
                    if !(rate > 0.0 && rate.is_finite()) {
                        eprintln!("herald: --rate must be a positive number");
                        return Ok(ExitCode::from(2));
                    }
                    if name.trim().is_empty() {
                        eprintln!("herald: --name must not be empty");
                        return Ok(ExitCode::from(2));
                    }
                    let key = generate_api_key();
                    let tenant = store
                        .create_tenant(name.trim(), rate, &channels, &hash_api_key(&key))
                        .await?;
                    println!("tenant created");
                    println!("  id:       {}", tenant.id);
                    println!("  name:     {}", tenant.name);
                    println!("  rate:     {} messages/s", tenant.rate_limit);
                    println!(
                        "  channels: {}",
                        tenant
                            .channels
                            .iter()
                            .map(|c| c.as_str())
                            .collect::<Vec<_>>()
                            .join(",")
                    );
                    println!("  api key:  {key}");
                    println!("The API key is shown once and only its hash is stored: keep it now.");
                }
                TenantCommand::List => {
                    println!("{:<36}  {:>8}  {:<20}  name", "id", "rate", "channels");
                    for t in store.list_tenants().await? {
                        let channels: Vec<&str> = t.channels.iter().map(|c| c.as_str()).collect();
                        println!(
                            "{:<36}  {:>8}  {:<20}  {}",
                            t.id,
                            t.rate_limit,
                            channels.join(","),
                            t.name
                        );
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

mod sim {
    //! `herald sim …`: the carrier simulators from herald-carriers, standalone.

    use std::net::SocketAddr;
    use std::path::Path;
    use std::process::ExitCode;

    use herald_carriers::smpp::{SmscConfig, SmscSim};
    use herald_carriers::{http_sms, voice, whatsapp};

    use super::SimKind;

    fn load<T: serde::de::DeserializeOwned + Default>(file: Option<&Path>) -> Result<T, String> {
        match file {
            None => Ok(T::default()),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
            }
        }
    }

    pub fn run(kind: SimKind, file: Option<&Path>, listen: Option<SocketAddr>) -> ExitCode {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "info".into()),
            )
            .with_writer(std::io::stderr)
            .try_init();
        let result = actix_web::rt::System::new().block_on(async move {
            match kind {
                SimKind::Smsc => {
                    let mut c: SmscConfig = load(file)?;
                    if file.is_none() {
                        c.smpp_addr = SocketAddr::from(([127, 0, 0, 1], 2775));
                        c.http_addr = Some(SocketAddr::from(([127, 0, 0, 1], 8775)));
                        c.credentials = vec![("herald".into(), "secret".into())];
                        c.record = false;
                    }
                    if let Some(a) = listen {
                        c.smpp_addr = a;
                    }
                    println!(
                        "SMSC simulator on {} (system_id/password from its config)",
                        c.smpp_addr
                    );
                    SmscSim::run_forever(c).await.map_err(|e| e.to_string())
                }
                SimKind::Whatsapp => {
                    let mut c: whatsapp::sim::WhatsappSimConfig = load(file)?;
                    if let Some(a) = listen {
                        c.bind = a;
                    }
                    whatsapp::sim::run(c).await.map_err(|e| e.to_string())
                }
                SimKind::Voice => {
                    let mut c: voice::sim::VoiceSimConfig = load(file)?;
                    if let Some(a) = listen {
                        c.bind = a;
                    }
                    voice::sim::run(c).await.map_err(|e| e.to_string())
                }
                SimKind::HttpSms => {
                    let mut c: http_sms::sim::HttpSmsSimConfig = load(file)?;
                    if let Some(a) = listen {
                        c.bind = a;
                    }
                    http_sms::sim::run(c).await.map_err(|e| e.to_string())
                }
            }
        });
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("herald sim: {e}");
                ExitCode::from(1)
            }
        }
    }
}

/// With `--features heap-profile`: each SIGUSR2 writes a jemalloc heap
/// profile (to `prof_prefix` of `_RJEM_MALLOC_CONF`), read with `jeprof`.
#[cfg(feature = "heap-profile")]
async fn heap_dump_on_sigusr2() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut usr2) = signal(SignalKind::user_defined2()) else {
        return;
    };
    while usr2.recv().await.is_some() {
        // SAFETY: `prof.dump` takes a C string or null (null: the default
        // file name under `prof_prefix`).
        let r = unsafe {
            tikv_jemalloc_ctl::raw::write::<*const std::ffi::c_char>(
                b"prof.dump\0",
                std::ptr::null(),
            )
        };
        if let Err(e) = r {
            eprintln!("herald: heap profile not written: {e}");
        }
    }
}
