//! Captured task output: a [`LogSink`] per attempt feeds one writer task that stores lines in
//! batches, so a chatty task costs one transaction per batch, not one per line.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use taskplane_api::LogStream;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::store::{NewLogLine, Store};

/// The output one attempt may store (1 MiB); past it, one note says the rest was dropped.
pub const MAX_LOG_BYTES_PER_ATTEMPT: usize = 1024 * 1024;
/// A longer line is cut to this many bytes (16 KiB).
pub const MAX_LINE_BYTES: usize = 16 * 1024;
/// The most lines written in one transaction.
const BATCH_LINES: usize = 2000;

enum Message {
    Line(NewLogLine),
    /// Answered once every line sent before it is stored.
    Flush(oneshot::Sender<()>),
}

/// The sending side: cheap to clone, one per worker.
#[derive(Clone)]
pub struct LogWriter {
    tx: mpsc::Sender<Message>,
}

impl LogWriter {
    /// Starts the writer task on `store`. It ends when every sender is gone.
    pub fn start(store: Arc<dyn Store>) -> LogWriter {
        let (tx, rx) = mpsc::channel(8192);
        tokio::spawn(write_loop(store, rx));
        LogWriter { tx }
    }

    /// A sink for one attempt of one task.
    pub fn sink(&self, task_id: Uuid, attempt: u32) -> LogSink {
        LogSink {
            tx: self.tx.clone(),
            task_id,
            attempt,
            bytes: Arc::new(AtomicUsize::new(0)),
            truncated: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// Where an executor writes its output.
#[derive(Clone)]
pub struct LogSink {
    tx: mpsc::Sender<Message>,
    task_id: Uuid,
    attempt: u32,
    bytes: Arc<AtomicUsize>,
    truncated: Arc<AtomicBool>,
}

impl LogSink {
    /// Records one line (without its newline).
    pub async fn line(&self, stream: LogStream, mut text: String) {
        if text.len() > MAX_LINE_BYTES {
            let mut end = MAX_LINE_BYTES;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
        }
        let total = self.bytes.fetch_add(text.len() + 1, Ordering::Relaxed) + text.len() + 1;
        if total > MAX_LOG_BYTES_PER_ATTEMPT {
            if !self.truncated.swap(true, Ordering::Relaxed) {
                self.send(
                    LogStream::System,
                    format!(
                        "output truncated: this attempt wrote more than {MAX_LOG_BYTES_PER_ATTEMPT} bytes; the rest is not kept"
                    ),
                )
                .await;
            }
            return;
        }
        self.send(stream, text).await;
    }

    async fn send(&self, stream: LogStream, line: String) {
        let message = Message::Line(NewLogLine {
            task_id: self.task_id,
            attempt: self.attempt,
            stream,
            ts: chrono::Utc::now().timestamp_millis(),
            line,
        });
        // The writer only stops when the worker does; a line sent then is lost with it.
        let _ = self.tx.send(message).await;
    }

    /// Waits until every line sent so far is stored (or the writer gave up on it). An
    /// attempt that wrote nothing (most tasks) skips the round trip to the writer.
    pub async fn flush(&self) {
        if self.bytes.load(Ordering::Relaxed) == 0 {
            return;
        }
        let (done, wait) = oneshot::channel();
        if self.tx.send(Message::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

async fn write_loop(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Message>) {
    let mut lines = Vec::with_capacity(BATCH_LINES);
    let mut flushes = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Line(line) => lines.push(line),
                Message::Flush(done) => flushes.push(done),
            }
            if lines.len() < BATCH_LINES {
                next = rx.try_recv().ok();
            }
        }
        if !lines.is_empty() {
            store_batch(store.as_ref(), std::mem::take(&mut lines)).await;
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

/// Stores a batch, retrying a few times; output is worth a retry but not a stuck worker.
async fn store_batch(store: &dyn Store, lines: Vec<NewLogLine>) {
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=5 {
        match store.append_logs(lines.clone()).await {
            Ok(()) => return,
            Err(error) if attempt < 5 => {
                tracing::warn!(%error, attempt, "storing task output failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(error) => {
                tracing::error!(%error, lines = lines.len(), "storing task output failed; dropping these lines");
            }
        }
    }
}
