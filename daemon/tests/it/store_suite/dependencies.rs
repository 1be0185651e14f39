//! Dependencies on a store: a task waits for its parents, becomes ready in the transaction
//! that settles the last of them, and is cancelled (with its own waiting children) when one
//! fails; a workflow's cancel and retry.

use std::sync::Arc;

use taskd::domain::lifecycle::Settlement;
use taskd::domain::validate::NewTask;
use taskd::store::{Graph, GraphRefused, Store, WorkflowRow};
use taskplane_api::TaskStatus;
use uuid::Uuid;

use super::{NOW, new_task};

async fn status(store: &Arc<dyn Store>, id: Uuid) -> TaskStatus {
    store.get(id).await.expect("get").expect("exists").status
}

async fn last_error(store: &Arc<dyn Store>, id: Uuid) -> String {
    let task = store.get(id).await.expect("get").expect("exists");
    task.last_error.expect("an error")
}

fn child_of(parents: &[Uuid]) -> NewTask {
    let parents = parents.to_vec();
    new_task(move |task| task.depends_on = parents)
}

/// Claims `id` (it must be ready) and settles it as `settlement`.
async fn run(store: &Arc<dyn Store>, id: Uuid, settlement: Settlement) {
    let claimed = store
        .claim_ids("w", &[id], NOW, NOW + 60_000)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1, "{id} was ready");
    assert!(
        store
            .settle(id, "w", &settlement, NOW + 1)
            .await
            .expect("settle")
    );
}

fn succeeded() -> Settlement {
    Settlement::Succeeded {
        result: "{\"n\": 1}".into(),
    }
}

/// A diamond: a → b, c → d. d waits until both b and c succeeded; b's success alone frees
/// nothing.
pub async fn a_diamond_runs_in_order(store: Arc<dyn Store>) {
    let a = new_task(|_| {});
    let b = child_of(&[a.id]);
    let c = child_of(&[a.id]);
    let d = child_of(&[b.id, c.id]);
    let (a, b, c, d) = (a.id, b, c, d);
    let stored = store
        .insert_graph(Graph {
            tasks: vec![b.clone(), c.clone(), d.clone()],
            workflow: None,
        })
        .await
        .expect("insert");
    assert_eq!(
        stored,
        Err(GraphRefused::UnknownParent(a)),
        "a parent that does not exist is refused"
    );
    let a_task = new_task(|_| {});
    let a = a_task.id;
    let b = child_of(&[a]);
    let c = child_of(&[a]);
    let d = child_of(&[b.id, c.id]);
    let (b, c, d) = (b, c, d);
    let stored = store
        .insert_graph(Graph {
            tasks: vec![a_task, b.clone(), c.clone(), d.clone()],
            workflow: None,
        })
        .await
        .expect("insert")
        .expect("accepted");
    let statuses: Vec<TaskStatus> = stored.iter().map(|t| t.status).collect();
    assert_eq!(
        statuses,
        [
            TaskStatus::Queued,
            TaskStatus::Waiting,
            TaskStatus::Waiting,
            TaskStatus::Waiting
        ]
    );
    assert_eq!(store.parents(d.id).await.expect("parents").len(), 2);
    // Waiting tasks are not claimed.
    assert!(
        store
            .claim_ids("w", &[b.id, d.id], NOW, NOW + 60_000)
            .await
            .expect("claim")
            .is_empty()
    );
    run(&store, a, succeeded()).await;
    assert_eq!(status(&store, b.id).await, TaskStatus::Queued);
    assert_eq!(status(&store, c.id).await, TaskStatus::Queued);
    assert_eq!(status(&store, d.id).await, TaskStatus::Waiting);
    run(&store, b.id, succeeded()).await;
    assert_eq!(
        status(&store, d.id).await,
        TaskStatus::Waiting,
        "c has not succeeded yet"
    );
    run(&store, c.id, succeeded()).await;
    assert_eq!(status(&store, d.id).await, TaskStatus::Queued);
    run(&store, d.id, succeeded()).await;

    // A child of a task that succeeded already is ready at once; of a failed one, refused.
    let late = child_of(&[a]);
    let stored = store
        .insert_graph(Graph {
            tasks: vec![late],
            workflow: None,
        })
        .await
        .expect("insert")
        .expect("accepted");
    assert_eq!(stored[0].status, TaskStatus::Queued);
}

/// A failed parent cancels its waiting children and theirs, naming the parent; a task that
/// depends on a failed task is refused; a retry of the parent leaves them cancelled, and a
/// retry of a child whose parent has not succeeded makes it wait again.
pub async fn a_failed_parent_cancels_its_descendants(store: Arc<dyn Store>) {
    let a = new_task(|_| {});
    let b = child_of(&[a.id]);
    let c = child_of(&[b.id]);
    let other = new_task(|_| {});
    let both = child_of(&[a.id, other.id]);
    let (a_id, b_id, c_id, both_id) = (a.id, b.id, c.id, both.id);
    store
        .insert_graph(Graph {
            tasks: vec![a, b, c, other, both],
            workflow: None,
        })
        .await
        .expect("insert")
        .expect("accepted");
    run(
        &store,
        a_id,
        Settlement::Failed {
            error: "boom".into(),
        },
    )
    .await;
    for id in [b_id, c_id, both_id] {
        let task = store.get(id).await.expect("get").expect("exists");
        assert_eq!(task.status, TaskStatus::Cancelled, "{id}");
        let error = task.last_error.unwrap_or_default();
        assert!(error.starts_with("dependency_failed: task "), "{error}");
    }
    let b_error = last_error(&store, b_id).await;
    assert!(
        b_error.contains(&a_id.to_string()) && b_error.ends_with("failed"),
        "{b_error}"
    );
    let c_error = last_error(&store, c_id).await;
    assert!(c_error.contains(&b_id.to_string()), "{c_error}");

    let refused = store
        .insert_graph(Graph {
            tasks: vec![child_of(&[a_id])],
            workflow: None,
        })
        .await
        .expect("insert");
    assert_eq!(
        refused,
        Err(GraphRefused::ParentFinished(a_id, TaskStatus::Failed))
    );
    // Retrying c alone: its parent b is cancelled, so it waits again.
    store.retry(c_id, NOW + 2).await.expect("retry");
    assert_eq!(status(&store, c_id).await, TaskStatus::Waiting);
    // Cancelling a waiting task.
    store.cancel(c_id, NOW + 3).await.expect("cancel");
    assert_eq!(status(&store, c_id).await, TaskStatus::Cancelled);
}

/// A child added while its parent runs is freed by that parent's settle.
pub async fn a_child_added_to_a_running_parent_is_freed(store: Arc<dyn Store>) {
    let parent = new_task(|_| {});
    let parent_id = parent.id;
    store.insert(vec![parent]).await.expect("insert");
    let claimed = store
        .claim_ids("w", &[parent_id], NOW, NOW + 60_000)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    let child = child_of(&[parent_id]);
    let child_id = child.id;
    let stored = store
        .insert_graph(Graph {
            tasks: vec![child],
            workflow: None,
        })
        .await
        .expect("insert")
        .expect("accepted");
    assert_eq!(stored[0].status, TaskStatus::Waiting);
    assert!(
        store
            .settle(parent_id, "w", &succeeded(), NOW + 1)
            .await
            .expect("settle")
    );
    assert_eq!(status(&store, child_id).await, TaskStatus::Queued);
}

/// A workflow's cancel stops every unfinished step; its retry runs the failed and cancelled
/// steps again, keeping the ones that succeeded.
pub async fn workflows_cancel_and_retry(store: Arc<dyn Store>) {
    let workflow = Uuid::now_v7();
    let step = |name: &str, parents: &[Uuid]| {
        let mut task = child_of(parents);
        task.workflow_id = Some(workflow);
        task.step = Some(name.to_owned());
        task
    };
    let a = step("a", &[]);
    let b = step("b", &[a.id]);
    let c = step("c", &[b.id]);
    let (a_id, b_id, c_id) = (a.id, b.id, c.id);
    store
        .insert_graph(Graph {
            tasks: vec![a, b, c],
            workflow: Some(WorkflowRow {
                id: workflow,
                name: "chain".into(),
                created_at: NOW,
            }),
        })
        .await
        .expect("insert")
        .expect("accepted");
    run(&store, a_id, succeeded()).await;
    run(
        &store,
        b_id,
        Settlement::Failed {
            error: "boom".into(),
        },
    )
    .await;
    assert_eq!(status(&store, c_id).await, TaskStatus::Cancelled);
    let state = store
        .workflow(workflow)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(state.steps.len(), 3);
    assert_eq!(state.parents.get(&c_id), Some(&vec![b_id]));
    let list = store.workflows(None, None, 10).await.expect("list");
    assert_eq!(list.len(), 1);
    assert!(list[0].finished_at.is_some(), "every step finished");

    assert_eq!(
        store
            .retry_workflow(workflow, NOW, None)
            .await
            .expect("retry"),
        Some(2)
    );
    assert_eq!(status(&store, a_id).await, TaskStatus::Succeeded, "kept");
    assert_eq!(status(&store, b_id).await, TaskStatus::Queued);
    assert_eq!(status(&store, c_id).await, TaskStatus::Waiting);
    run(&store, b_id, succeeded()).await;
    assert_eq!(status(&store, c_id).await, TaskStatus::Queued);
    // The results a step's payload may take: of the steps that succeeded.
    let mut done = store.succeeded_steps(workflow).await.expect("steps");
    done.sort();
    assert_eq!(done, vec!["a".to_owned(), "b".to_owned()]);
    let results = store
        .step_results(workflow, vec!["b".into(), "c".into()])
        .await
        .expect("results");
    assert_eq!(results, vec![("b".to_owned(), "{\"n\": 1}".to_owned())]);

    assert_eq!(
        store
            .cancel_workflow(workflow, NOW + 6, None)
            .await
            .expect("cancel"),
        Some(1)
    );
    assert_eq!(status(&store, c_id).await, TaskStatus::Cancelled);
    assert_eq!(
        store
            .cancel_workflow(Uuid::now_v7(), NOW, None)
            .await
            .expect("cancel"),
        None
    );

    // A purge leaves a workflow's steps to their workflow (whose retry would otherwise run
    // the steps that need them without them).
    let purged = store
        .delete_finished(taskd::store::FinishedFilter {
            statuses: vec![TaskStatus::Succeeded, TaskStatus::Cancelled],
            finished_before: i64::MAX,
            kind: None,
            queue: None,
            steps: false,
        })
        .await
        .expect("purge");
    assert_eq!(purged, 0);
    assert!(store.workflow(workflow).await.expect("read").is_some());

    // Retention takes the workflow with its last step.
    let deleted = store
        .delete_finished(taskd::store::FinishedFilter {
            statuses: vec![TaskStatus::Succeeded, TaskStatus::Cancelled],
            finished_before: i64::MAX,
            kind: None,
            queue: None,
            steps: true,
        })
        .await
        .expect("delete");
    assert_eq!(deleted, 3);
    assert_eq!(store.workflow(workflow).await.expect("read"), None);
    assert!(
        store
            .workflows(None, None, 10)
            .await
            .expect("list")
            .is_empty()
    );
}
