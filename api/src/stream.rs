//! Reading streamed responses: Server-Sent Events (`/api/v1/events`) and NDJSON
//! (`/logs?follow=true`). The parsers are pure and take bytes as they arrive.

use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::types::{LogLine, TaskEvent};

/// One complete Server-Sent Event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseMessage {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// Splits a byte stream into SSE messages (comments and unknown fields are skipped).
#[derive(Debug, Default)]
pub struct SseParser {
    buffer: Vec<u8>,
    current: SseMessage,
    has_data: bool,
}

impl SseParser {
    /// Feeds bytes; returns the messages they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseMessage> {
        self.buffer.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if self.has_data {
                    out.push(std::mem::take(&mut self.current));
                }
                self.current = SseMessage::default();
                self.has_data = false;
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => self.current.id = Some(value.to_owned()),
                "event" => self.current.event = Some(value.to_owned()),
                "data" => {
                    if self.has_data {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(value);
                    self.has_data = true;
                }
                _ => {}
            }
        }
        out
    }
}

/// Splits a byte stream into JSON values, one per line.
#[derive(Debug, Default)]
pub struct LineParser {
    buffer: Vec<u8>,
}

impl LineParser {
    pub fn push<T: DeserializeOwned>(&mut self, bytes: &[u8]) -> Result<Vec<T>, serde_json::Error> {
        self.buffer.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            out.push(serde_json::from_slice(&line)?);
        }
        Ok(out)
    }
}

fn bad(url: &str, detail: impl std::fmt::Display) -> Error {
    Error::BadResponse {
        url: url.to_owned(),
        status: 200,
        detail: detail.to_string(),
    }
}

/// Live task events from `/api/v1/events`.
pub struct EventStream {
    pub(crate) response: reqwest::Response,
    pub(crate) parser: SseParser,
    pub(crate) pending: std::collections::VecDeque<TaskEvent>,
    pub(crate) url: String,
    /// The `seq` of the last event returned, for resuming.
    pub last_seq: Option<i64>,
    pub(crate) closed: bool,
}

impl EventStream {
    /// The next event; `None` when the server closed the stream. After `None` or an error
    /// the stream is closed: reconnect with [`Client::events`](crate::Client::events) and
    /// `last_seq` to resume.
    pub async fn next(&mut self) -> Option<Result<TaskEvent, Error>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                self.last_seq = Some(event.seq);
                return Some(Ok(event));
            }
            if self.closed {
                return None;
            }
            let chunk = match self.response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => {
                    self.closed = true;
                    return None;
                }
                Err(e) => {
                    self.closed = true;
                    return Some(Err(Error::Unreachable {
                        url: self.url.clone(),
                        reason: crate::client::error_chain(&e),
                    }));
                }
            };
            for message in self.parser.push(&chunk) {
                match serde_json::from_str::<TaskEvent>(&message.data) {
                    Ok(event) => self.pending.push_back(event),
                    Err(e) => return Some(Err(bad(&self.url, e))),
                }
            }
        }
    }

    /// True once the server has closed the stream or it failed.
    pub fn is_closed(&self) -> bool {
        self.closed && self.pending.is_empty()
    }
}

/// A task's output as it is produced, from `/logs?follow=true`.
pub struct LogTail {
    pub(crate) response: reqwest::Response,
    pub(crate) parser: LineParser,
    pub(crate) pending: std::collections::VecDeque<LogLine>,
    pub(crate) url: String,
}

impl LogTail {
    /// The next line; `None` once the task has finished and every line is out.
    pub async fn next(&mut self) -> Option<Result<LogLine, Error>> {
        loop {
            if let Some(line) = self.pending.pop_front() {
                return Some(Ok(line));
            }
            let chunk = match self.response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => return None,
                Err(e) => {
                    return Some(Err(Error::Unreachable {
                        url: self.url.clone(),
                        reason: crate::client::error_chain(&e),
                    }));
                }
            };
            match self.parser.push::<LogLine>(&chunk) {
                Ok(lines) => self.pending.extend(lines),
                Err(e) => return Some(Err(bad(&self.url, e))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndjson_skips_the_blank_heartbeat_lines() {
        let mut parser = LineParser::default();
        let values: Vec<serde_json::Value> =
            parser.push(b"\n{\"a\":1}\n\n\r\n{\"a\"").expect("parse");
        assert_eq!(values, vec![serde_json::json!({"a": 1})]);
        let rest: Vec<serde_json::Value> = parser.push(b":2}\n\n").expect("parse");
        assert_eq!(rest, vec![serde_json::json!({"a": 2})]);
    }

    #[test]
    fn sse_messages_split_across_chunks() {
        let mut parser = SseParser::default();
        assert!(
            parser
                .push(b": keep-alive\n\nid: 7\nevent: succ")
                .is_empty()
        );
        let messages = parser.push(b"eeded\ndata: {\"a\":1}\n\nid: 8\ndata: x\ndata: y\n\n");
        assert_eq!(
            messages,
            vec![
                SseMessage {
                    id: Some("7".into()),
                    event: Some("succeeded".into()),
                    data: "{\"a\":1}".into()
                },
                SseMessage {
                    id: Some("8".into()),
                    event: None,
                    data: "x\ny".into()
                },
            ]
        );
    }

    #[test]
    fn sse_comments_alone_produce_nothing() {
        let mut parser = SseParser::default();
        assert!(parser.push(b":\n\n:\r\n\r\n").is_empty());
    }

    #[test]
    fn json_lines_split_across_chunks() {
        let mut parser = LineParser::default();
        let first: Vec<serde_json::Value> = parser.push(b"{\"a\":1}\n{\"b\"").expect("valid");
        assert_eq!(first, vec![serde_json::json!({"a": 1})]);
        let rest: Vec<serde_json::Value> = parser.push(b":2}\n\n").expect("valid");
        assert_eq!(rest, vec![serde_json::json!({"b": 2})]);
        assert!(parser.push::<serde_json::Value>(b"nope\n").is_err());
    }
}
