//! `taskctl schedule create|list|get|pause|resume|trigger|delete|history|next|apply`

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Local, Utc};
use clap::{Args, Subcommand, ValueEnum};
use serde::Deserialize;
use taskplane_api::{
    CatchUp, Client, CronQuery, FIRE_AT_LABEL, ListQuery, NextQuery, Overlap, SCHEDULE_LABEL,
    Schedule, ScheduleSpec, SubmitTask,
};

use super::submit::{TaskArgs, parse_duration};
use crate::error::CliError;
use crate::output::{self, Ui};

/// Recurring schedules: tasks submitted on a cron expression or an interval, exactly once
/// per fire time however many taskd processes run.
#[derive(Debug, Args)]
pub struct ScheduleArgs {
    #[command(subcommand)]
    pub command: ScheduleCommand,
}

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Create a schedule: NAME, its timing, and the task it submits (the flags of `submit`).
    #[command(after_help = "Examples:\n  \
        taskctl schedule create nightly-backup --cron '0 2 * * *' --tz Europe/Berlin shell -- /usr/local/bin/backup.sh\n  \
        taskctl schedule create heartbeat --every 30s http -p url=https://example.com/ping\n  \
        taskctl schedule create weekly-apply --cron '@weekly' --overlap skip salt -p target=web*")]
    Create(Box<CreateArgs>),
    /// List schedules with their next and last runs.
    #[command(visible_alias = "ls")]
    List,
    /// Show one schedule.
    Get(NameArg),
    /// Stop a schedule from firing (a trigger still runs it).
    Pause(NamesArg),
    /// Let a paused schedule fire again, from its next time after now.
    Resume(NamesArg),
    /// Submit one task of a schedule now, paused or not.
    Trigger(TriggerArgs),
    /// Delete schedules (the tasks they made stay).
    #[command(visible_alias = "rm")]
    Delete(NamesArg),
    /// A schedule's recent tasks and how they ended, newest first.
    History(HistoryArgs),
    /// The next fire times of a schedule, or of an expression.
    Next(NextArgs),
    /// Create or update the schedules a YAML file describes; with --prune, delete the others.
    #[command(
        after_help = "The file holds a list of schedules (or `schedules:` and a list):\n\n  \
        - name: nightly-backup\n    \
          cron: \"0 2 * * *\"\n    \
          timezone: Europe/Berlin\n    \
          overlap: skip\n    \
          task:\n      \
            kind: shell\n      \
            payload: {argv: [/usr/local/bin/backup.sh]}\n  \
        - name: heartbeat\n    \
          every: 30s\n    \
          task: {kind: http, payload: {url: \"https://example.com/ping\"}}\n\n\
        Applying the same file again changes nothing. A schedule paused by hand stays paused\n\
        unless its entry says `paused: false`."
    )]
    Apply(ApplyArgs),
}

#[derive(Debug, Args)]
pub struct NameArg {
    /// The schedule's name.
    #[arg(value_name = "NAME", add = clap_complete::ArgValueCandidates::new(crate::complete::schedules))]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct NamesArg {
    /// Schedule names.
    #[arg(value_name = "NAME", required = true, add = clap_complete::ArgValueCandidates::new(crate::complete::schedules))]
    pub names: Vec<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OverlapArg {
    Allow,
    Skip,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CatchUpArg {
    None,
    One,
    All,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// A unique name: letters, digits, '.', '_', ':' and '-'.
    #[arg(value_name = "NAME")]
    pub name: String,

    /// A cron expression: 5 fields, or 6 with seconds first; @hourly, @daily, @weekly,
    /// @monthly, @yearly.
    #[arg(
        long,
        value_name = "EXPR",
        required_unless_present = "every",
        conflicts_with = "every"
    )]
    pub cron: Option<String>,

    /// An interval instead (at least 1s): 30s, 5m, 1h30m.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub every: Option<Duration>,

    /// The IANA time zone the cron expression is read in [default: UTC].
    #[arg(long, value_name = "TZ", requires = "cron")]
    pub tz: Option<String>,

    /// While the previous task of this schedule is unfinished: fire anyway, or skip.
    #[arg(long, value_enum, default_value = "allow")]
    pub overlap: OverlapArg,

    /// Fire times passed while no taskd ran: skip them, run one, or run each (at most 100).
    #[arg(long, value_enum, default_value = "none")]
    pub catch_up: CatchUpArg,

    /// Create it paused.
    #[arg(long)]
    pub paused: bool,

    #[command(flatten)]
    pub task: TaskArgs,
}

#[derive(Debug, Args)]
pub struct TriggerArgs {
    /// The schedule's name.
    #[arg(value_name = "NAME", add = clap_complete::ArgValueCandidates::new(crate::complete::schedules))]
    pub name: String,

    /// Wait for the task to finish; exit 0 if it succeeded, 3 if it failed, 4 if cancelled.
    #[arg(short, long)]
    pub wait: bool,

    /// Print only the task id.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The schedule's name.
    #[arg(value_name = "NAME", add = clap_complete::ArgValueCandidates::new(crate::complete::schedules))]
    pub name: String,

    /// How many tasks.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
}

#[derive(Debug, Args)]
pub struct NextArgs {
    /// The schedule's name (or give --cron).
    #[arg(value_name = "NAME", required_unless_present = "cron", conflicts_with = "cron", add = clap_complete::ArgValueCandidates::new(crate::complete::schedules))]
    pub name: Option<String>,

    /// An expression to preview instead of a schedule.
    #[arg(long, value_name = "EXPR")]
    pub cron: Option<String>,

    /// The expression's time zone [default: UTC].
    #[arg(long, value_name = "TZ", requires = "cron")]
    pub tz: Option<String>,

    /// How many fire times.
    #[arg(short = 'n', long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub count: u32,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The YAML (or JSON) file; `-` reads stdin.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: String,

    /// Also delete the schedules the file does not name.
    #[arg(long)]
    pub prune: bool,

    /// Say what would change, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn run(client: &Client, ui: &Ui, args: ScheduleArgs) -> Result<(), CliError> {
    match args.command {
        ScheduleCommand::Create(args) => create(client, ui, *args).await,
        ScheduleCommand::List => {
            let schedules = client.schedules().await?;
            print_list(ui, &schedules)
        }
        ScheduleCommand::Get(arg) => {
            let schedule = client.schedule(&arg.name).await?;
            print_one(ui, &schedule)
        }
        ScheduleCommand::Pause(args) => each(client, ui, &args.names, "pause").await,
        ScheduleCommand::Resume(args) => each(client, ui, &args.names, "resume").await,
        ScheduleCommand::Delete(args) => each(client, ui, &args.names, "delete").await,
        ScheduleCommand::Trigger(args) => {
            let task = client.trigger_schedule(&args.name).await?;
            if args.wait {
                let finished = super::watch::follow(client, ui, &[task.id], args.quiet).await?;
                if ui.json() && !args.quiet {
                    ui.print_json(&finished)?;
                }
                return super::watch::outcome(&finished);
            }
            if args.quiet {
                return ui.line(&task.id.to_string());
            }
            if ui.json() {
                return ui.print_json(&task);
            }
            ui.line(&format!(
                "{} submitted by schedule {} ({} on queue {})",
                task.id,
                output::inline(&args.name),
                output::inline(&task.kind),
                output::inline(&task.queue)
            ))
        }
        ScheduleCommand::History(args) => history(client, ui, args).await,
        ScheduleCommand::Next(args) => next(client, ui, args).await,
        ScheduleCommand::Apply(args) => apply(client, ui, args).await,
    }
}

async fn create(client: &Client, ui: &Ui, args: CreateArgs) -> Result<(), CliError> {
    let every_secs = match args.every {
        Some(every) if every.subsec_nanos() != 0 || every.as_secs() == 0 => {
            return Err(CliError::Usage(format!(
                "--every {}: an interval is whole seconds, at least 1s",
                humantime::format_duration(every)
            )));
        }
        Some(every) => Some(every.as_secs()),
        None => None,
    };
    let spec = ScheduleSpec {
        name: args.name,
        cron: args.cron,
        every_secs,
        timezone: args.tz,
        overlap: match args.overlap {
            OverlapArg::Allow => Overlap::Allow,
            OverlapArg::Skip => Overlap::Skip,
        },
        catch_up: match args.catch_up {
            CatchUpArg::None => CatchUp::None,
            CatchUpArg::One => CatchUp::One,
            CatchUpArg::All => CatchUp::All,
        },
        paused: args.paused.then_some(true),
        task: args.task.request()?,
    };
    let schedule = client.create_schedule(&spec).await?;
    if ui.json() {
        return ui.print_json(&schedule);
    }
    ui.line(&format!(
        "schedule {} created ({}); next run {}",
        output::inline(&schedule.name),
        output::inline(&schedule.timing_text()),
        when(schedule.next_run_at, schedule.paused)
    ))
}

/// `pause`, `resume` or `delete` on each name; stops at the first error.
async fn each(client: &Client, ui: &Ui, names: &[String], action: &str) -> Result<(), CliError> {
    let mut done = Vec::with_capacity(names.len());
    for name in names {
        let schedule = match action {
            "delete" => client.delete_schedule(name).await?,
            _ => client.schedule_action(name, action).await?,
        };
        if !ui.json() {
            let verb = match action {
                "pause" => "paused",
                "resume" => "resumed",
                _ => "deleted",
            };
            let detail = match action {
                "resume" => format!("; next run {}", when(schedule.next_run_at, false)),
                _ => String::new(),
            };
            ui.line(&format!(
                "schedule {} {verb}{detail}",
                output::inline(&schedule.name)
            ))?;
        }
        done.push(schedule);
    }
    if ui.json() {
        return ui.print_collection(&done, &done);
    }
    Ok(())
}

/// `2026-12-03 02:00 CET (in 3h)`, `paused`, or `never`.
fn when(at: Option<DateTime<Utc>>, paused: bool) -> String {
    if paused {
        return "none while paused".to_owned();
    }
    match at {
        Some(at) => format!(
            "{} ({})",
            at.with_timezone(&Local).format("%Y-%m-%d %H:%M:%S %Z"),
            output::relative(at, Utc::now())
        ),
        None => "never (the expression has no time left)".to_owned(),
    }
}

fn print_list(ui: &Ui, schedules: &[Schedule]) -> Result<(), CliError> {
    if ui.json() {
        let document = taskplane_api::ScheduleList {
            schedules: schedules.to_vec(),
            next_cursor: None,
        };
        return ui.print_collection(&document, schedules);
    }
    if schedules.is_empty() {
        eprintln!("no schedules yet: taskctl schedule create NAME --cron EXPR KIND");
        return Ok(());
    }
    let mut headers = vec![
        "NAME",
        "SCHEDULE",
        "KIND",
        "NEXT RUN",
        "LAST RUN",
        "LAST STATUS",
        "PAUSED",
    ];
    if ui.wide() {
        headers.extend(["QUEUE", "OVERLAP", "CATCH-UP", "LAST TASK"]);
    }
    let mut table = ui.table(&headers);
    let now = Utc::now();
    for schedule in schedules {
        let next = match (schedule.paused, schedule.next_run_at) {
            (true, _) => "-".to_owned(),
            (false, Some(at)) => output::relative(at, now),
            (false, None) => "never".to_owned(),
        };
        let last = schedule
            .last_run_at
            .map_or_else(|| "-".to_owned(), |at| output::relative(at, now));
        let mut row = vec![
            output::cell(&schedule.name),
            output::cell(schedule.timing_text()),
            output::cell(&schedule.task.kind),
            output::cell(next),
            output::cell(last),
            match schedule.last_status {
                Some(status) => ui.status_cell(status),
                None => output::cell("-"),
            },
            output::cell(if schedule.paused { "yes" } else { "no" }),
        ];
        if ui.wide() {
            row.extend([
                output::cell(schedule.task.queue.as_deref().unwrap_or("default")),
                output::cell(schedule.overlap.as_str()),
                output::cell(schedule.catch_up.as_str()),
                output::cell(
                    schedule
                        .last_task_id
                        .map_or_else(|| "-".to_owned(), |id| id.to_string()),
                ),
            ]);
        }
        table.add_row(row);
    }
    ui.print_table(&table)
}

fn print_one(ui: &Ui, schedule: &Schedule) -> Result<(), CliError> {
    if ui.json() {
        return ui.print_json(schedule);
    }
    let now = Utc::now();
    let stamp = |at: Option<DateTime<Utc>>| {
        at.map_or_else(
            || "-".to_owned(),
            |at| format!("{} ({})", at.to_rfc3339(), output::relative(at, now)),
        )
    };
    let task = &schedule.task;
    let payload = task
        .payload
        .as_ref()
        .map_or_else(|| "{}".to_owned(), |p| p.to_string());
    let mut lines = vec![
        format!("Name:         {}", schedule.name),
        format!("Schedule:     {}", schedule.timing_text()),
        format!(
            "Paused:       {}",
            if schedule.paused { "yes" } else { "no" }
        ),
        format!("Overlap:      {}", schedule.overlap.as_str()),
        format!("Catch-up:     {}", schedule.catch_up.as_str()),
        format!(
            "Next run:     {}",
            if schedule.paused {
                "-".to_owned()
            } else {
                stamp(schedule.next_run_at)
            }
        ),
        format!("Last run:     {}", stamp(schedule.last_run_at)),
        format!(
            "Last task:    {}",
            match (schedule.last_task_id, schedule.last_status) {
                (Some(id), Some(status)) => format!("{id} ({status})"),
                (Some(id), None) => format!("{id} (deleted)"),
                _ => "-".to_owned(),
            }
        ),
        format!("Kind:         {}", task.kind),
        format!(
            "Queue:        {}",
            task.queue.as_deref().unwrap_or("default")
        ),
        format!("Payload:      {}", output::excerpt(&payload, 200)),
    ];
    if let Some(priority) = task.priority {
        lines.push(format!("Priority:     {priority}"));
    }
    if let Some(attempts) = task.max_attempts {
        lines.push(format!("Max attempts: {attempts}"));
    }
    if let Some(timeout) = task.timeout_secs {
        lines.push(format!("Timeout:      {timeout}s"));
    }
    if !task.labels.is_empty() {
        let labels: Vec<String> = task
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        lines.push(format!("Labels:       {}", labels.join(",")));
    }
    lines.push(format!(
        "Created:      {}",
        schedule.created_at.to_rfc3339()
    ));
    lines.push(format!(
        "Updated:      {}",
        schedule.updated_at.to_rfc3339()
    ));
    for line in lines {
        ui.line(&line)?;
    }
    Ok(())
}

async fn history(client: &Client, ui: &Ui, args: HistoryArgs) -> Result<(), CliError> {
    // The schedule must exist (a typo should not print an empty history).
    client.schedule(&args.name).await?;
    let page = client
        .list(&ListQuery {
            limit: Some(args.limit),
            label: vec![format!("{SCHEDULE_LABEL}={}", args.name)],
            ..ListQuery::default()
        })
        .await?;
    if ui.json() {
        return ui.print_collection(&page, &page.tasks);
    }
    if page.tasks.is_empty() {
        eprintln!(
            "schedule {} has made no task yet (or retention removed them)",
            output::inline(&args.name)
        );
        return Ok(());
    }
    let mut table = ui.table(&["ID", "FIRE TIME", "STATUS", "ATTEMPTS", "RAN", "FINISHED"]);
    let now = Utc::now();
    for task in &page.tasks {
        table.add_row(vec![
            output::cell(task.id),
            output::cell(task.labels.get(FIRE_AT_LABEL).map_or("-", String::as_str)),
            ui.status_cell(task.status),
            output::cell(format!("{}/{}", task.attempts, task.max_attempts)),
            output::cell(output::run_time(task, now)),
            output::cell(
                task.finished_at
                    .map_or_else(|| "-".to_owned(), |at| output::relative(at, now)),
            ),
        ]);
    }
    ui.print_table(&table)
}

async fn next(client: &Client, ui: &Ui, args: NextArgs) -> Result<(), CliError> {
    let fires = match (&args.name, args.cron) {
        (Some(name), _) => {
            let query = NextQuery {
                count: Some(args.count),
            };
            client.next_fires(name, &query).await?
        }
        (None, cron) => {
            let query = CronQuery {
                cron,
                timezone: args.tz,
                count: Some(args.count),
            };
            client.cron_next(&query).await?
        }
    };
    if ui.json() {
        return ui.print_collection(&fires, &fires.fire_times);
    }
    let local = format!("LOCAL ({})", fires.timezone);
    let mut table = ui.table(&["UTC", &local, "IN"]);
    let now = Utc::now();
    for (i, at) in fires.fire_times.iter().enumerate() {
        table.add_row(vec![
            output::cell(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            output::cell(fires.local_times.get(i).map_or("-", String::as_str)),
            output::cell(output::relative(*at, now)),
        ]);
    }
    ui.print_table(&table)
}

/// One schedule as a file writes it: the API's spec, with `every` as a duration too.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    name: String,
    #[serde(default)]
    cron: Option<String>,
    /// `30s`, `5m`, `1h`.
    #[serde(default)]
    every: Option<String>,
    #[serde(default)]
    every_secs: Option<u64>,
    #[serde(default)]
    timezone: Option<String>,
    #[serde(default)]
    overlap: Overlap,
    #[serde(default)]
    catch_up: CatchUp,
    #[serde(default)]
    paused: Option<bool>,
    task: SubmitTask,
}

fn read_file(path: &str) -> Result<Vec<ScheduleSpec>, CliError> {
    let text = super::read_file_arg(path)?;
    let bad = |e: &dyn std::fmt::Display| {
        CliError::Usage(format!(
            "{path}: not a list of schedules ({e}); see taskctl schedule apply --help"
        ))
    };
    let mut document: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).map_err(|e| bad(&e))?;
    // A list, or `schedules:` and a list (a ConfigMap's key, a file with room for more).
    if let Some(list) = document.get_mut("schedules") {
        document = std::mem::take(list);
    }
    let entries: Vec<FileEntry> = serde_yaml_ng::from_value(document).map_err(|e| bad(&e))?;
    let mut seen = BTreeSet::new();
    let mut specs = Vec::with_capacity(entries.len());
    for entry in entries {
        if !seen.insert(entry.name.clone()) {
            return Err(CliError::Usage(format!(
                "{path}: the schedule '{}' is there twice",
                entry.name
            )));
        }
        let every_secs = match (entry.every, entry.every_secs) {
            (Some(_), Some(_)) => {
                return Err(CliError::Usage(format!(
                    "{path}: {}: give every or every_secs, not both",
                    entry.name
                )));
            }
            (Some(text), None) => {
                let every = parse_duration(&text)
                    .map_err(|e| CliError::Usage(format!("{path}: {}: every: {e}", entry.name)))?;
                if every.subsec_nanos() != 0 || every.as_secs() == 0 {
                    return Err(CliError::Usage(format!(
                        "{path}: {}: every: an interval is whole seconds, at least 1s",
                        entry.name
                    )));
                }
                Some(every.as_secs())
            }
            (None, secs) => secs,
        };
        specs.push(ScheduleSpec {
            name: entry.name,
            cron: entry.cron,
            every_secs,
            timezone: entry.timezone,
            overlap: entry.overlap,
            catch_up: entry.catch_up,
            paused: entry.paused,
            task: entry.task,
        });
    }
    Ok(specs)
}

/// Whether applying `wanted` would change `current`: the same comparison taskd makes, with
/// its defaults filled in (a cron's zone is UTC; an absent `paused` keeps the state).
fn differs(current: &Schedule, wanted: &ScheduleSpec) -> bool {
    let mut have = current.spec();
    let mut want = wanted.clone();
    if want.cron.is_some() && want.timezone.is_none() {
        want.timezone = Some("UTC".to_owned());
    }
    if want.paused.is_none() {
        want.paused = have.paused;
    }
    have.name.clone_from(&want.name);
    have != want
}

async fn apply(client: &Client, ui: &Ui, args: ApplyArgs) -> Result<(), CliError> {
    let specs = read_file(&args.file)?;
    if specs.is_empty() && args.prune {
        // An empty file (a broken template, an empty pipe) must not wipe every schedule.
        return Err(CliError::Usage(format!(
            "{} lists no schedules, and --prune would delete every one; delete them with `taskctl schedule delete NAME…`",
            args.file
        )));
    }
    let current: BTreeMap<String, Schedule> = client
        .schedules()
        .await?
        .into_iter()
        .map(|s| (s.name.clone(), s))
        .collect();
    let mut outcomes: Vec<(String, &str)> = Vec::new();
    for spec in &specs {
        let outcome = match current.get(&spec.name) {
            Some(have) if !differs(have, spec) => "unchanged",
            Some(_) => {
                if !args.dry_run {
                    client.put_schedule(spec).await?;
                }
                "configured"
            }
            None => {
                if !args.dry_run {
                    client.put_schedule(spec).await?;
                }
                "created"
            }
        };
        outcomes.push((spec.name.clone(), outcome));
        if !ui.json() {
            // Said as it happens: if a later entry is refused, what was applied is known.
            let suffix = if args.dry_run { " (dry run)" } else { "" };
            ui.line(&format!(
                "schedule/{} {outcome}{suffix}",
                output::inline(&spec.name)
            ))?;
        }
    }
    if args.prune {
        let named: BTreeSet<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        for name in current.keys().filter(|name| !named.contains(name.as_str())) {
            if !args.dry_run {
                client.delete_schedule(name).await?;
            }
            outcomes.push((name.clone(), "pruned"));
        }
    }
    if ui.json() {
        let list: Vec<serde_json::Value> = outcomes
            .iter()
            .map(|(name, outcome)| serde_json::json!({"name": name, "outcome": outcome, "dry_run": args.dry_run}))
            .collect();
        return ui.print_collection(&list, &list);
    }
    let suffix = if args.dry_run { " (dry run)" } else { "" };
    for (name, outcome) in outcomes.into_iter().skip(specs.len()) {
        ui.line(&format!(
            "schedule/{} {outcome}{suffix}",
            output::inline(&name)
        ))?;
    }
    Ok(())
}
