//! Wiring: opens the store, starts the HTTP server and the worker for the configured roles,
//! and runs them until a signal asks for a graceful stop.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::config::RunArgs;
use crate::domain::backoff::Backoff;
use crate::domain::validate::Kinds;
use crate::events::EventHub;
use crate::executors::Registry;
use crate::worker::{self, Worker, WorkerConfig};
use crate::{http, store};

async fn open_store(args: &RunArgs) -> Result<(Arc<dyn store::Store>, Vec<i64>), String> {
    let redacted = crate::util::redact_url(&args.database);
    let store = store::open(&args.database)
        .await
        .map_err(|e| format!("cannot open the database {redacted}: {e}"))?;
    let applied = store
        .migrate()
        .await
        .map_err(|e| format!("cannot apply the schema to {redacted}: {e}"))?;
    if !applied.is_empty() {
        let versions: Vec<String> = applied.iter().map(i64::to_string).collect();
        tracing::info!(database = %redacted, applied = %versions.join(","), "applied schema migrations");
    }
    Ok((store, applied))
}

/// `taskd migrate`: says on stdout what it applied, or that there was nothing to do.
pub async fn migrate(args: &RunArgs) -> Result<(), String> {
    let (_, applied) = open_store(args).await?;
    let database = crate::util::redact_url(&args.database);
    match applied.as_slice() {
        [] => println!("{database}: the schema is up to date; nothing to apply"),
        versions => {
            let list: Vec<String> = versions.iter().map(|v| format!("{v:04}")).collect();
            let plural = if versions.len() == 1 { "" } else { "s" };
            println!("{database}: applied migration{plural} {}", list.join(", "));
        }
    }
    Ok(())
}

/// `taskd health`: one GET with a short timeout.
pub async fn health(url: &str) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(3))
        .build()
        .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("{url} answered {}", response.status()))
    }
}

pub async fn serve(args: RunArgs) -> Result<(), String> {
    // Settle who may call the API before opening anything.
    let auth = crate::auth::Verifier::from_config(&args.auth.config())?;
    if args.role.runs_api()
        && auth.is_none()
        && !args.insecure_no_auth
        && !args.listen.ip().is_loopback()
    {
        return Err(format!(
            "refusing to listen on {} without auth: anyone who can reach it could submit and cancel tasks. \
             Turn auth on with --jwt-secret-file (or TASKD_JWT_SECRET, or --jwt-public-key-file), \
             or pass --insecure-no-auth if something in front of taskd authenticates",
            args.listen
        ));
    }
    if auth.is_none() && args.auth.jwt_private_key_file.is_some() {
        tracing::warn!(
            "--jwt-private-key-file only signs tokens (taskd token issue); give the server \
             --jwt-public-key-file to turn auth on"
        );
    }
    if args.auth.jwt_public_key_file.is_some() && args.auth.jwt_audience.is_none() {
        tracing::warn!(
            "--jwt-public-key-file without --jwt-audience accepts every token that key signs, \
             whichever service it was meant for; set --jwt-audience"
        );
    }
    match &auth {
        Some(verifier) => tracing::info!(algorithm = %verifier.algorithm(), "auth is on"),
        None => tracing::info!("auth is off: the API answers anyone who can reach it"),
    }
    let hosts = http::guard::HostPolicy::new(&args.listen, auth.is_some(), &args.allowed_host);
    let guard = Arc::new(http::guard::Guard {
        auth,
        private_probes: args.private_probes,
        limiter: args.write_rate_limit.map(http::guard::RateLimiter::new),
        timeout: args.request_timeout,
        cors_origins: args.cors_origin.clone(),
        hosts,
        dashboard: if args.no_ui {
            http::Dashboard::Off
        } else {
            http::Dashboard::On {
                readonly: args.ui_readonly,
            }
        },
    });
    let (store, _) = open_store(&args).await?;
    let http_policy = crate::executors::AddressPolicy {
        allow_private: args.http_allow_private,
        allowed: args.http_allow_cidr.clone(),
    };
    let registry = Registry::builtin(
        args.enable_shell,
        &args.shell_pass_env,
        args.enable_provisioning,
        http_policy,
    );
    let shutdown = CancellationToken::new();
    let declared = args.declared_kinds();
    // Between attempts, for taskd's own workers and the lease protocol's reports alike.
    let backoff = Backoff {
        base: args.retry_base,
        max: args.retry_max,
    };
    let (broker, dispatcher) = Broker::open(&args.broker, store.clone())
        .map_err(|e| format!("--broker {}: {e}", crate::util::redact_url(&args.broker)))?;
    if let Some(dispatcher) = dispatcher {
        tokio::spawn(dispatcher.run(shutdown.clone()));
    }
    let broker = Arc::new(broker);
    if broker.transport().is_some()
        || args.role.runs_worker()
        || (args.role.runs_api() && !declared.is_empty())
    {
        // Submits by other processes (PostgreSQL), and tasks made ready when the tasks they
        // waited for succeeded, wake this worker (or, with a broker, the dispatcher, which
        // publishes them) and the lease requests waiting here at once.
        let ready = Arc::new(tokio::sync::Notify::new());
        tokio::spawn(store.listen_ready(ready.clone()));
        tokio::spawn(broker.clone().relay(ready));
    }
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let events = EventHub::new(store.clone());
    if args.role.runs_api() {
        tokio::spawn(events.clone().run(shutdown.clone()));
    }
    let kinds = Arc::new(Kinds::new(
        args.enable_shell,
        args.enable_provisioning,
        declared,
    ));
    // Every process fires schedules; the store's guarded fire makes one task per fire time.
    let scheduler = crate::scheduler::Scheduler::new(
        store.clone(),
        broker.clone(),
        metrics.clone(),
        events.clone(),
        kinds.clone(),
    );
    tokio::spawn(scheduler.clone().run(shutdown.clone()));
    let state = http::AppState {
        events,
        metrics: metrics.clone(),
        store: store.clone(),
        submits: crate::store::GroupCommit::start(store.clone()),
        kinds,
        broker: broker.clone(),
        role: args.role.as_str(),
        scheduler,
        leases: Arc::new(http::LeaseSettings {
            lease: args.lease,
            backoff,
        }),
    };

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listening address: {e}"))?;

    let worker_id = worker::worker_id();
    let releaser = args
        .role
        .runs_worker()
        .then(|| (store.clone(), worker_id.clone()));
    tokio::spawn(watch_signals(shutdown.clone(), releaser));

    let router = if args.role.runs_api() {
        http::api_router(state, guard, args.max_body)
    } else {
        http::probe_router(state, guard)
    };
    // In the `all` role the API stays up while the worker drains, so clients can follow the
    // last tasks to the end; it stops once the worker has.
    let http_shutdown = CancellationToken::new();
    let server_stop = http_shutdown.clone();
    let deadlines = http::server::Deadlines {
        header: args.header_timeout,
        idle: args.idle_timeout,
    };
    let server = tokio::spawn(http::server::serve(
        listener,
        router,
        deadlines,
        server_stop,
    ));
    tracing::info!(
        role = args.role.as_str(),
        database = %crate::util::redact_url(&args.database),
        broker = %crate::util::redact_url(&args.broker),
        "listening on http://{local}"
    );

    if args.role.runs_worker() {
        let worker = Worker {
            store,
            registry,
            config: WorkerConfig {
                id: worker_id,
                queues: args.queues.clone(),
                concurrency: args.concurrency,
                lease: args.lease,
                backoff,
                grace: args.grace,
                retention: args.retention,
                audit_retention: args.audit_retention,
            },
            broker,
            metrics,
        };
        worker.run(shutdown.clone()).await;
    } else {
        shutdown.cancelled().await;
    }
    http_shutdown.cancel();

    if let Err(error) = server.await {
        return Err(format!("the HTTP server task failed: {error}"));
    }
    tracing::info!("taskd stopped");
    Ok(())
}

/// The first SIGTERM or SIGINT starts a graceful shutdown; a second one exits at once,
/// killing the processes of running shell tasks and handing this worker's tasks back.
async fn watch_signals(
    shutdown: CancellationToken,
    releaser: Option<(Arc<dyn store::Store>, String)>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop taskd with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("signal received: shutting down gracefully (send it again to exit now)");
    shutdown.cancel();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::warn!("second signal: exiting now");
    crate::executors::kill_all_process_groups();
    if let Some((store, worker)) = releaser {
        let release = store.release_leases(&worker, crate::util::now_ms());
        match tokio::time::timeout(std::time::Duration::from_secs(1), release).await {
            Ok(Ok(n)) => tracing::warn!(tasks = n, "handed running tasks back to the queue"),
            _ => tracing::warn!(
                "could not hand running tasks back; they return when their leases expire"
            ),
        }
    }
    std::process::exit(1);
}
