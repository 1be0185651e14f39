//! `taskctl logs ID [-f]`

use clap::Args;
use taskplane_api::{Client, LogLine, LogQuery, LogTail};
use uuid::Uuid;

use crate::error::CliError;
use crate::output::Ui;

/// Print a task's captured output (stdout and stderr, in order).
///
/// With -f, keep printing as the task produces output, and exit when it finishes. With
/// -o json or -o jsonl, each line is a JSON object with its stream, timestamp and attempt.
///
/// Control characters in the output (terminal escape sequences: colours, but also title,
/// clipboard and screen changes) are shown as text, `^[` for ESC; --raw prints them as the
/// task wrote them.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The task id.
    #[arg(value_name = "ID", value_parser = super::parse_id, add = clap_complete::ArgValueCandidates::new(crate::complete::task_ids))]
    pub id: Uuid,
    /// Keep printing new output until the task finishes.
    #[arg(short, long)]
    pub follow: bool,
    /// Prefix each line with its timestamp and stream.
    #[arg(long)]
    pub timestamps: bool,
    /// Print the lines exactly as the task wrote them, escape sequences included, so that
    /// a command's colours show; the terminal obeys whatever else they say too (window
    /// title, clipboard, screen), so use it only on output you trust.
    #[arg(long)]
    pub raw: bool,
}

/// Prints lines, marking where a new attempt starts.
struct Printer<'a> {
    ui: &'a Ui,
    timestamps: bool,
    raw: bool,
    attempt: u32,
}

impl Printer<'_> {
    fn print(&mut self, line: &LogLine) -> Result<(), CliError> {
        if matches!(
            self.ui.format,
            crate::cli::OutputFormat::Json | crate::cli::OutputFormat::Jsonl
        ) {
            return self.ui.json_line(line);
        }
        if line.attempt != self.attempt {
            if self.attempt != 0 || line.attempt > 1 {
                crate::output::note(&format!("--- attempt {} ---", line.attempt));
            }
            self.attempt = line.attempt;
        }
        let text = match (self.timestamps, line.stream) {
            (true, stream) => format!(
                "{} {} {}",
                line.ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                stream.as_str(),
                line.line
            ),
            (false, taskplane_api::LogStream::System) => format!("[taskd] {}", line.line),
            (false, _) => line.line.clone(),
        };
        if self.raw {
            self.ui.raw_line(&text)
        } else {
            self.ui.line(&text)
        }
    }
}

pub async fn run(client: &Client, ui: &Ui, args: LogsArgs) -> Result<(), CliError> {
    let mut printer = Printer {
        ui,
        timestamps: args.timestamps,
        raw: args.raw,
        attempt: 0,
    };
    if args.follow {
        let mut after = 0;
        let mut stream: LogTail = client.follow_logs(args.id, after).await?;
        let mut resumed = false;
        loop {
            match stream.next().await {
                Some(Ok(line)) => {
                    after = line.seq;
                    resumed = false;
                    printer.print(&line)?;
                }
                None => return Ok(()),
                // The stream broke off, or went silent for longer than a heartbeat allows:
                // resume once after the last line printed. If taskd does not answer that
                // either, its error (a timeout, a refused connection) is the one to report.
                Some(Err(_)) if !resumed => {
                    resumed = true;
                    stream = client.follow_logs(args.id, after).await?;
                }
                Some(Err(error)) => return Err(error.into()),
            }
        }
    }
    let mut after = 0;
    loop {
        let query = LogQuery {
            after: Some(after),
            ..LogQuery::default()
        };
        let page = client.logs(args.id, &query).await?;
        for line in &page.lines {
            printer.print(line)?;
        }
        if page.lines.len() < 1000 {
            return Ok(());
        }
        after = page.next_after;
    }
}
