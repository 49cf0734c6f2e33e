//! The `chunkwise-server` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chunkwise_server::metrics::{self, Metrics};
use chunkwise_server::serve::ConnLimits;
use chunkwise_server::{app, AppState, Backend, Limits, Site, Store};
use clap::Parser;

/// Receives chunkwise uploads (protocol v2, and v1's routes) and serves the demo page.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, env = "CHUNKWISE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Where uploads are stored.
    #[arg(long, env = "CHUNKWISE_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// Largest upload, in bytes.
    #[arg(long, env = "CHUNKWISE_MAX_UPLOAD_SIZE", default_value_t = 64 << 30)]
    max_upload_size: u64,
    /// Largest slice, in bytes.
    #[arg(long, env = "CHUNKWISE_MAX_CHUNK_SIZE", default_value_t = 256 << 20)]
    max_chunk_size: u64,
    /// Origin allowed to call the API from a browser (repeatable; `*` for any).
    #[arg(
        long = "allowed-origin",
        env = "CHUNKWISE_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    allowed_origins: Vec<String>,
    /// Bearer token required on every upload request.
    #[arg(long, env = "CHUNKWISE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Incomplete uploads untouched for this long are removed (e.g. 24h, 30m).
    #[arg(long, env = "CHUNKWISE_EXPIRE_AFTER", default_value = "24h", value_parser = humantime::parse_duration)]
    expire_after: Duration,
    /// Unfinished uploads kept at once; past it, creates are answered 503 with Retry-After.
    #[arg(
        long,
        env = "CHUNKWISE_MAX_UNFINISHED_UPLOADS",
        default_value_t = 10_000
    )]
    max_unfinished_uploads: u64,
    /// The demo page's folder, served at `/`.
    #[arg(long, env = "CHUNKWISE_WWW")]
    www: Option<PathBuf>,
    /// The wasm package's folder, served at `/pkg/`.
    #[arg(long, env = "CHUNKWISE_PKG")]
    pkg: Option<PathBuf>,
    /// The app's hook: events are POSTed here (pre-create, post-finish, post-terminate).
    #[arg(long, env = "CHUNKWISE_HOOK_URL", value_parser = chunkwise_server::hooks::HookConfig::parse_url)]
    hook_url: Option<reqwest::Url>,
    /// Signs every event (`Chunkwise-Signature: t=..,v1=HMAC-SHA256(secret, "t.body")`).
    #[arg(long, env = "CHUNKWISE_HOOK_SECRET", hide_env_values = true)]
    hook_secret: Option<String>,
    /// A hook that has not answered after this long counts as down (e.g. 10s).
    #[arg(long, env = "CHUNKWISE_HOOK_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    hook_timeout: Duration,
    /// Another request header for pre-create to see, besides Authorization and Cookie
    /// (repeatable).
    #[arg(
        long = "hook-forward-header",
        env = "CHUNKWISE_HOOK_FORWARD_HEADERS",
        value_delimiter = ','
    )]
    hook_forward_headers: Vec<axum::http::HeaderName>,
    /// Ask the hook before every complete (a pre-finish event, with the size then known),
    /// so that it can judge uploads created without a size.
    #[arg(long, env = "CHUNKWISE_HOOK_PRE_FINISH")]
    hook_pre_finish: bool,
    /// The S3-compatible store, for direct mode (--s3-bucket: browsers send slices straight
    /// to the bucket and this server only signs) or scale-out mode (--store). Credentials
    /// from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
    #[arg(long, env = "CHUNKWISE_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    /// The bucket (direct mode).
    #[arg(
        long,
        env = "CHUNKWISE_S3_BUCKET",
        requires = "s3_endpoint",
        conflicts_with = "store"
    )]
    s3_bucket: Option<String>,
    /// Scale-out mode: keep every byte and all upload state in this bucket
    /// (`s3://bucket/prefix`), slices streaming through this server into the store's
    /// multipart parts, so that any number of instances serve one upload. Needs
    /// --s3-endpoint; local disk stays the default.
    #[arg(long, env = "CHUNKWISE_STORE", requires = "s3_endpoint")]
    store: Option<String>,
    /// The store's region, as its signatures expect it.
    #[arg(long, env = "CHUNKWISE_S3_REGION", default_value = "us-east-1")]
    s3_region: String,
    /// Prepended to every object key (e.g. `uploads/`).
    #[arg(long, env = "CHUNKWISE_S3_PREFIX", default_value = "")]
    s3_prefix: String,
    /// The smallest part the store accepts, but the last (S3: 5 MiB).
    #[arg(long, env = "CHUNKWISE_S3_MIN_PART_SIZE", default_value_t = 5 << 20)]
    s3_min_part_size: u64,
    /// Serve Prometheus metrics at `http://ADDR/metrics`, on this listener only (keep it
    /// private: never the public port).
    #[arg(long, env = "CHUNKWISE_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Log lines as `text` (for people) or `json` (one object per line, for collectors).
    #[arg(long, env = "CHUNKWISE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// A request's headers, or a kept-alive connection's next request, must arrive within
    /// this (e.g. 30s); then the connection is closed.
    #[arg(long, env = "CHUNKWISE_HEADER_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    header_timeout: Duration,
    /// A request body none of whose bytes arrives for this long is cut off (e.g. 60s).
    #[arg(long, env = "CHUNKWISE_BODY_IDLE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    body_idle_timeout: Duration,
    /// The least rate of a request body, in bytes per second, after its first body idle
    /// timeout: a body gets one more second for every this many bytes (Apache's MinRate);
    /// slower ones are cut off (408). 0 turns it off.
    #[arg(long, env = "CHUNKWISE_BODY_MIN_RATE", default_value_t = chunkwise_server::pace::MIN_RATE)]
    body_min_rate: u64,
    /// Connections served at once; more are answered 503 with Retry-After. By default
    /// as many as the open files limit (raised to its hard limit at start) allows.
    #[arg(long, env = "CHUNKWISE_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Test only: honour fault-injection rules (`/_test/faults/{key}`). Never in production.
    #[arg(long, hide = true)]
    enable_fault_injection: bool,
}

/// How long requests in flight may go on after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(300);

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, with the request's span (request id, upload id) in it.
    Json,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "chunkwise_server=info,warn".into()),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("chunkwise-server: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    if cli.max_chunk_size == 0 || cli.max_upload_size == 0 {
        return Err("--max-chunk-size and --max-upload-size must be at least 1".into());
    }
    // clap reads an empty variable as unset; an operator who set one meant something.
    let empty_env = |name: &str| std::env::var_os(name).is_some_and(|v| v.is_empty());
    if cli.token.as_deref() == Some("") || empty_env("CHUNKWISE_TOKEN") {
        return Err("--token (CHUNKWISE_TOKEN) is empty: give a token, or leave it out for a server without one".into());
    }
    if cli.hook_secret.as_deref() == Some("") || empty_env("CHUNKWISE_HOOK_SECRET") {
        return Err("--hook-secret (CHUNKWISE_HOOK_SECRET) is empty: give a secret, or leave it out for unsigned events".into());
    }
    if cli.enable_fault_injection && !cli.listen.ip().is_loopback() {
        return Err(format!(
            "--enable-fault-injection is for tests on loopback only; --listen {} is not",
            cli.listen
        )
        .into());
    }
    if cli.hook_url.is_none() && cli.hook_secret.is_some() {
        return Err("--hook-secret needs --hook-url".into());
    }
    if cli.hook_timeout.is_zero() {
        return Err("--hook-timeout must be more than 0".into());
    }
    if cli.header_timeout.is_zero() || cli.body_idle_timeout.is_zero() {
        return Err("--header-timeout and --body-idle-timeout must be more than 0".into());
    }
    if cli.max_connections == Some(0) {
        return Err("--max-connections must be at least 1".into());
    }
    if let Some(endpoint) = cli.s3_endpoint.clone() {
        let (bucket, prefix, through) = match (&cli.s3_bucket, &cli.store) {
            (Some(bucket), _) => (bucket.clone(), cli.s3_prefix.clone(), false),
            (None, Some(store)) => {
                let (bucket, prefix) = parse_store(store)?;
                (bucket, prefix, true)
            }
            (None, None) => return Err("--s3-endpoint needs --s3-bucket (direct mode) or --store s3://bucket/prefix (scale-out mode)".into()),
        };
        return run_bucket(cli, endpoint, bucket, prefix, through).await;
    }
    let limits = Limits {
        max_upload_size_bytes: cli.max_upload_size,
        max_chunk_size_bytes: cli.max_chunk_size,
        expire_after: cli.expire_after,
        max_unfinished_uploads: cli.max_unfinished_uploads,
    };
    let store = Arc::new(
        Store::open(&cli.data_dir, limits)
            .map_err(|e| format!("cannot open --data-dir {}: {e}", cli.data_dir.display()))?,
    );
    let hooks = hooks(&cli, Some(&store)).await?;

    let metrics = Arc::new(Metrics::default());
    let expiry_store = store.clone();
    let expiry_hooks = hooks.clone();
    let expiry_metrics = metrics.clone();
    let sweep_every = (cli.expire_after / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(sweep_every);
        loop {
            tick.tick().await;
            for upload in expiry_store.expire().await {
                expiry_metrics.uploads_expired.inc();
                if let Some(hooks) = &expiry_hooks {
                    if let Err(error) = hooks.upload_terminated(&upload.info(), "expired").await {
                        tracing::error!(id = upload.id(), %error, "post-terminate not stored");
                    }
                }
            }
        }
    });

    let data_dir = cli.data_dir.display().to_string();
    serve(&cli, store, hooks, metrics, |addr| {
        tracing::info!(%addr, data_dir, "listening");
    })
    .await
}

/// `s3://bucket` or `s3://bucket/prefix` as the bucket and a prefix ending in `/`.
fn parse_store(store: &str) -> Result<(String, String), String> {
    let Some((bucket, prefix)) = store
        .strip_prefix("s3://")
        .map(|rest| rest.split_once('/').unwrap_or((rest, "")))
        .filter(|(bucket, _)| !bucket.is_empty())
    else {
        return Err(format!(
            "--store must be s3://bucket or s3://bucket/prefix; got {store:?}"
        ));
    };
    let prefix = match prefix {
        "" => String::new(),
        p if p.ends_with('/') => p.to_string(),
        p => format!("{p}/"),
    };
    Ok((bucket.to_string(), prefix))
}

/// Starts the hooks when `--hook-url` is set, replaying the `post-finish` of `completed`
/// uploads that never had one.
async fn hooks(
    cli: &Cli,
    store: Option<&Arc<Store>>,
) -> Result<Option<Arc<chunkwise_server::hooks::Hooks>>, Box<dyn std::error::Error>> {
    let Some(url) = cli.hook_url.clone() else {
        return Ok(None);
    };
    let config = chunkwise_server::hooks::HookConfig {
        url,
        secret: cli.hook_secret.clone().filter(|s| !s.is_empty()),
        timeout: cli.hook_timeout,
        forward_headers: cli.hook_forward_headers.clone(),
        pre_finish: cli.hook_pre_finish,
    };
    let completed = match store {
        Some(store) => store.completed_ids().await,
        None => Vec::new(),
    };
    let load = |id: String| {
        let store = store.cloned();
        async move { store?.completed_record(&id).await }
    };
    let hooks = chunkwise_server::hooks::Hooks::start(config, &cli.data_dir, completed, load)
        .await
        .map_err(|e| {
            format!(
                "cannot open the hook outbox in --data-dir {}: {e}",
                cli.data_dir.display()
            )
        })?;
    Ok(Some(hooks))
}

/// The bearer token, if one is set.
fn token(cli: &Cli) -> Option<Arc<str>> {
    cli.token
        .as_deref()
        .filter(|t| !t.is_empty())
        .map(Arc::from)
}

/// What every mode puts around its API: static files, CORS, and test-only faults.
fn site(cli: &Cli) -> Site {
    let faults = cli
        .enable_fault_injection
        .then(chunkwise_server::faults::Faults::default);
    if faults.is_some() {
        tracing::warn!("fault injection is enabled: this server is for tests only");
    }
    Site {
        www: cli.www.clone(),
        pkg: cli.pkg.clone(),
        allowed_origins: cli.allowed_origins.clone(),
        faults,
        body_idle_timeout: cli.body_idle_timeout,
        body_min_rate: cli.body_min_rate,
    }
}

/// Serves `backend` behind the HTTP layer (with the token, hooks, static files and CORS the
/// command line asks for) on `--listen`, printing the address, until SIGTERM or Ctrl-C.
async fn serve<B: Backend>(
    cli: &Cli,
    backend: Arc<B>,
    hooks: Option<Arc<chunkwise_server::hooks::Hooks>>,
    metrics: Arc<Metrics>,
    log: impl FnOnce(SocketAddr),
) -> Result<(), Box<dyn std::error::Error>> {
    let site = site(cli);
    if let Some(listen) = cli.metrics_listen {
        let present = metrics::Present {
            backend: backend.clone(),
            hooks: hooks.clone(),
            data_dir: cli.data_dir.clone(),
        };
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| format!("cannot listen on --metrics-listen {listen}: {e}"))?;
        let addr = listener.local_addr()?;
        println!("metrics: http://{addr}/metrics");
        let router = metrics::router(metrics.clone(), present);
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                tracing::error!(%error, "the metrics listener failed");
            }
        });
    }
    let state = AppState {
        backend,
        token: token(cli),
        hooks,
        metrics: metrics.clone(),
    };
    let router = app(state, &site);
    let listen = cli.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    let open_files = chunkwise_server::serve::raise_open_files_limit();
    let mut limits = ConnLimits::for_open_files(open_files, cli.max_connections);
    limits.header_timeout = cli.header_timeout;
    // Printed on stdout, alone on its line, so scripts and tests can find the port.
    println!("chunkwise-server listening on http://{addr}");
    if site.www.is_some() {
        println!("demo page: http://{addr}/");
    }
    log(addr);
    tracing::info!(
        open_files,
        max_connections = limits.max_connections,
        header_timeout = ?limits.header_timeout,
        body_idle_timeout = ?site.body_idle_timeout,
        body_min_rate = site.body_min_rate,
        "connection limits"
    );
    // Requests in flight get a moment to finish after SIGTERM, not forever: a slice
    // trickling in behind a proxy's kept-alive connection would hold a restart for as long
    // as it takes. A slice cut there was never recorded (only fsynced slices are), so its
    // client sends it again.
    chunkwise_server::serve::serve(
        listener,
        router,
        limits,
        metrics.connections_open.clone(),
        shutdown(),
        SHUTDOWN_GRACE,
    )
    .await;
    Ok(())
}

/// Uploads kept in a bucket: direct mode (a signer; browsers send slices to the bucket)
/// or scale-out mode (`through`: slices pass through this server into the bucket).
async fn run_bucket(
    cli: Cli,
    endpoint: String,
    bucket: String,
    prefix: String,
    through: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    use chunkwise_server::store::bucket::Bucket;
    use chunkwise_server::store::s3::{S3Config, S3};
    use chunkwise_server::store::token;
    let var = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("an object store needs its credentials in {name}"))
    };
    let config = S3Config {
        endpoint: endpoint.clone(),
        bucket: bucket.clone(),
        region: cli.s3_region.clone(),
        prefix: prefix.clone(),
        access_key_id: var("AWS_ACCESS_KEY_ID")?,
        secret_access_key: var("AWS_SECRET_ACCESS_KEY")?,
    };
    let store = S3::new(&config);
    store
        .check()
        .await
        .map_err(|e| format!("bucket {bucket} at {endpoint}: {e}"))?;
    let backend = Arc::new(Bucket {
        store,
        bucket: bucket.clone(),
        prefix: prefix.clone(),
        token_key: token::key(&config.secret_access_key, &bucket, &prefix),
        min_part_size: cli.s3_min_part_size,
        max_upload_size: cli.max_upload_size,
        max_chunk_size: cli.max_chunk_size,
        through,
    });
    // The store cannot list completed uploads whose post-finish was never stored; a
    // client retrying complete queues it again.
    let hooks = hooks(&cli, None).await?;
    serve(&cli, backend, hooks, Arc::default(), |addr| {
        if through {
            tracing::info!(%addr, %endpoint, %bucket, %prefix, "scale-out mode: slices pass through to the bucket");
        } else {
            tracing::info!(%addr, %endpoint, %bucket, %prefix, "direct mode: browsers upload to the bucket");
        }
    })
    .await
}

async fn shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return ctrl_c.await.unwrap_or_default(),
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.unwrap_or_default();
}
