//! The `chunkwise-server` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chunkwise_server::{app, AppState, Limits, Site, Store};
use clap::Parser;

/// Receives chunkwise uploads (protocol v1) and serves the demo page.
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
    /// The demo page's folder, served at `/`.
    #[arg(long, env = "CHUNKWISE_WWW")]
    www: Option<PathBuf>,
    /// The wasm package's folder, served at `/pkg/`.
    #[arg(long, env = "CHUNKWISE_PKG")]
    pkg: Option<PathBuf>,
    /// Test only: honour fault-injection rules (`/_test/faults/{key}`). Never in production.
    #[arg(long, hide = true)]
    enable_fault_injection: bool,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "chunkwise_server=info,warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
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
    let limits = Limits {
        max_upload_size_bytes: cli.max_upload_size,
        max_chunk_size_bytes: cli.max_chunk_size,
        expire_after: cli.expire_after,
    };
    let store = Arc::new(
        Store::open(&cli.data_dir, limits)
            .map_err(|e| format!("cannot open --data-dir {}: {e}", cli.data_dir.display()))?,
    );
    let token = cli.token.filter(|t| !t.is_empty()).map(Arc::from);
    let faults = cli
        .enable_fault_injection
        .then(chunkwise_server::faults::Faults::default);
    if faults.is_some() {
        tracing::warn!("fault injection is enabled: this server is for tests only");
    }
    let site_has_www = cli.www.is_some();
    let site = Site {
        www: cli.www,
        pkg: cli.pkg,
        allowed_origins: cli.allowed_origins,
        faults,
    };
    let router = app(
        AppState {
            store: store.clone(),
            token,
        },
        &site,
    );

    let expiry_store = store.clone();
    let sweep_every = (cli.expire_after / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(sweep_every);
        loop {
            tick.tick().await;
            expiry_store.expire().await;
        }
    });

    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", cli.listen))?;
    let addr = listener.local_addr()?;
    // Printed on stdout, alone on its line, so scripts and tests can find the port.
    println!("chunkwise-server listening on http://{addr}");
    if site_has_www {
        println!("demo page: http://{addr}/");
    }
    tracing::info!(%addr, data_dir = %cli.data_dir.display(), "listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown())
        .await?;
    Ok(())
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
