//! Dynamic shell completion: task and workflow ids, queue and schedule names and kinds come from the current server
//! (TASKCTL_SERVER / TASKCTL_TOKEN / TASKCTL_CONTEXT, else the current context, else the
//! default), read with a short timeout; on any failure a completion offers nothing rather
//! than an error.

use std::time::Duration;

use clap_complete::CompletionCandidate;
use taskplane_api::{Client, ListQuery};

const TIMEOUT: Duration = Duration::from_millis(800);

fn ask<F, Fut>(question: F) -> Vec<CompletionCandidate>
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<CompletionCandidate>, taskplane_api::Error>>,
{
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let Ok(client) = crate::commands::connect(
        env("TASKCTL_SERVER"),
        env("TASKCTL_CONTEXT").as_deref(),
        env("TASKCTL_TOKEN"),
        env("TASKCTL_CA_CERT").map(Into::into),
        crate::commands::timeouts(TIMEOUT),
    ) else {
        return Vec::new();
    };
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Vec::new();
    };
    runtime
        .block_on(async { tokio::time::timeout(TIMEOUT, question(client)).await })
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default()
}

/// The newest task ids, each with its kind and status as help.
pub fn task_ids() -> Vec<CompletionCandidate> {
    ask(|client| async move {
        let page = client
            .list(&ListQuery {
                limit: Some(200),
                ..ListQuery::default()
            })
            .await?;
        Ok(page
            .tasks
            .into_iter()
            .map(|task| {
                CompletionCandidate::new(task.id.to_string())
                    .help(Some(format!("{} {}", task.kind, task.status).into()))
            })
            .collect())
    })
}

/// The queues the server knows.
pub fn queues() -> Vec<CompletionCandidate> {
    ask(|client| async move {
        let list = client.queues().await?;
        Ok(list
            .queues
            .into_iter()
            .map(|q| CompletionCandidate::new(q.queue))
            .collect())
    })
}

/// The schedules the server has, each with its timing as help.
pub fn schedules() -> Vec<CompletionCandidate> {
    ask(|client| async move {
        Ok(client
            .schedules()
            .await?
            .into_iter()
            .map(|s| CompletionCandidate::new(s.name.clone()).help(Some(s.timing_text().into())))
            .collect())
    })
}

/// The newest workflow ids, each with its name and status as help.
pub fn workflow_ids() -> Vec<CompletionCandidate> {
    ask(|client| async move {
        let page = client
            .workflows(&taskplane_api::WorkflowQuery {
                limit: Some(200),
                ..Default::default()
            })
            .await?;
        Ok(page
            .workflows
            .into_iter()
            .map(|w| {
                CompletionCandidate::new(w.id.to_string())
                    .help(Some(format!("{} {}", w.name, w.status).into()))
            })
            .collect())
    })
}

/// Every task status.
pub fn statuses() -> Vec<CompletionCandidate> {
    taskplane_api::TaskStatus::ALL
        .iter()
        .map(|status| CompletionCandidate::new(status.as_str()))
        .collect()
}

/// The kinds the server knows (built in and declared), each with what serves it as help;
/// the built-in kinds when the server does not answer.
pub fn kinds() -> Vec<CompletionCandidate> {
    let known = served_kinds(false);
    if !known.is_empty() {
        return known;
    }
    taskplane_api::kinds::BUILTIN_KINDS
        .iter()
        .map(|kind| CompletionCandidate::new(*kind))
        .collect()
}

/// The kinds declared on the server (`taskd --kinds`): what `taskctl worker` can serve.
pub fn declared_kinds() -> Vec<CompletionCandidate> {
    served_kinds(true)
}

fn served_kinds(declared_only: bool) -> Vec<CompletionCandidate> {
    ask(|client| async move {
        let list = client.kinds().await?;
        Ok(list
            .kinds
            .into_iter()
            .filter(|k| !(declared_only && k.builtin))
            .map(|k| {
                let by = if k.builtin {
                    "taskd".to_owned()
                } else {
                    format!("remote workers: {}", k.workers.len())
                };
                CompletionCandidate::new(k.name).help(Some(by.into()))
            })
            .collect())
    })
}
