//! Workflows: the bodies of `/api/v1/workflows…`. A workflow is a set of steps, each a task,
//! with dependencies between them (a DAG); a step runs once every step it `needs` has
//! succeeded, and may take their results into its payload (`${steps.ID.result…}`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::types::TaskStatus;

/// The most steps one workflow may have.
pub const MAX_WORKFLOW_STEPS: usize = 1000;
/// The most tasks one task may depend on.
pub const MAX_DEPENDENCIES: usize = 100;
/// The label every step's task carries, with its workflow's id as its value.
pub const WORKFLOW_LABEL: &str = "workflow";
/// The label with the step's id in its workflow.
pub const STEP_LABEL: &str = "workflow.step";

/// The body of `POST /api/v1/workflows`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowSpec {
    /// What the workflow is called (not unique: every run is a workflow of its own).
    #[schema(example = "deploy")]
    pub name: String,
    /// At least one, at most 1,000.
    pub steps: Vec<WorkflowStep>,
}

/// One step: a task, and the steps it needs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowStep {
    /// Unique in the workflow: `[A-Za-z0-9][A-Za-z0-9._:-]{0,127}`.
    #[schema(example = "apply")]
    pub id: String,
    #[schema(example = "echo")]
    pub kind: String,
    /// The task's payload. A string that is exactly `${steps.ID.result}` or
    /// `${steps.ID.result.a.b}` becomes that JSON value of a step it needs, when this step
    /// starts; inside a longer string it is put in as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    /// The ids of the steps that must succeed first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_base_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_max_ms: Option<u64>,
}

/// Where a workflow stands, from its steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowStatus {
    /// A step is still to finish.
    Running,
    /// Every step succeeded.
    Succeeded,
    /// Every step finished, and one failed.
    Failed,
    /// Every step finished, none failed, and one was cancelled.
    Cancelled,
}

impl WorkflowStatus {
    /// The workflow's status from its steps' statuses.
    pub fn of(steps: impl IntoIterator<Item = TaskStatus>) -> WorkflowStatus {
        let (mut failed, mut cancelled) = (false, false);
        for status in steps {
            match status {
                TaskStatus::Failed => failed = true,
                TaskStatus::Cancelled => cancelled = true,
                TaskStatus::Succeeded => {}
                _ => return WorkflowStatus::Running,
            }
        }
        if failed {
            WorkflowStatus::Failed
        } else if cancelled {
            WorkflowStatus::Cancelled
        } else {
            WorkflowStatus::Succeeded
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WorkflowStatus::Running => "running",
            WorkflowStatus::Succeeded => "succeeded",
            WorkflowStatus::Failed => "failed",
            WorkflowStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        self != WorkflowStatus::Running
    }
}

impl std::fmt::Display for WorkflowStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A step and the task that runs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StepRef {
    pub id: String,
    pub task_id: Uuid,
}

/// The answer to `POST /api/v1/workflows`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkflowCreated {
    pub id: Uuid,
    pub name: String,
    pub steps: Vec<StepRef>,
}

/// A step as `GET /api/v1/workflows/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkflowStepState {
    pub id: String,
    pub task_id: Uuid,
    pub kind: String,
    pub status: TaskStatus,
    pub needs: Vec<String>,
    pub attempts: u32,
    pub max_attempts: u32,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

/// A workflow and its steps, in the order they were given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Workflow {
    pub id: Uuid,
    pub name: String,
    pub status: WorkflowStatus,
    pub created_at: DateTime<Utc>,
    /// When its last step finished (null while it runs).
    pub finished_at: Option<DateTime<Utc>>,
    /// How many of its steps are in each status.
    pub counts: BTreeMap<String, u32>,
    /// Its steps; left out of a list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<WorkflowStepState>,
}

impl Workflow {
    /// Each step once, depth first from the steps that need nothing, under the first step
    /// it needs (in the order given), with the prefix that draws it as a tree (`├─ `,
    /// `│  └─ `). A step that needs several shows under the first of them only.
    pub fn tree(&self) -> Vec<(String, &WorkflowStepState)> {
        let steps = &self.steps;
        let mut children: std::collections::HashMap<&str, Vec<usize>> =
            std::collections::HashMap::new();
        let mut roots = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            match step.needs.first() {
                Some(first) => children.entry(first.as_str()).or_default().push(i),
                None => roots.push(i),
            }
        }
        let mut out = Vec::with_capacity(steps.len());
        // (step, the prefix of its own line, the prefix its children continue).
        let mut stack: Vec<(usize, String, String)> = roots
            .iter()
            .rev()
            .map(|&i| (i, String::new(), String::new()))
            .collect();
        while let Some((i, line, below)) = stack.pop() {
            let step = &steps[i];
            out.push((line, step));
            let kids = children
                .get(step.id.as_str())
                .map(Vec::as_slice)
                .unwrap_or_default();
            for (n, &kid) in kids.iter().enumerate().rev() {
                let (branch, rest) = if n + 1 == kids.len() {
                    ("└─ ", "   ")
                } else {
                    ("├─ ", "│  ")
                };
                stack.push((kid, format!("{below}{branch}"), format!("{below}{rest}")));
            }
        }
        out
    }

    /// The steps that need step `id`.
    pub fn needed_by(&self, id: &str) -> Vec<&WorkflowStepState> {
        self.steps
            .iter()
            .filter(|step| step.needs.iter().any(|need| need == id))
            .collect()
    }

    /// The step a task runs, if it is one of this workflow's.
    pub fn step_of(&self, task: Uuid) -> Option<&WorkflowStepState> {
        self.steps.iter().find(|step| step.task_id == task)
    }
}

/// The answer to `GET /api/v1/workflows`: newest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkflowList {
    pub workflows: Vec<Workflow>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Query parameters of `GET /api/v1/workflows`.
#[derive(
    Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema, utoipa::IntoParams,
)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WorkflowQuery {
    /// Only workflows of this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(example = "deploy")]
    pub name: Option<String>,
    /// At most this many (1 to 1000, default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(example = 20, minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(example = "01a20649-73ff-71a9-a177-5aa009d23a9d")]
    pub cursor: Option<Uuid>,
}

/// The answer to `POST /api/v1/workflows/{id}/cancel` and `…/retry`: the workflow now, and
/// how many steps the action changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkflowAction {
    pub changed: u64,
    pub workflow: Workflow,
}
