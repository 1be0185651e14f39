//! A remote worker written in Rust against the lease protocol, with this crate's client: it
//! serves the `resize` kind (declared with `taskd --kinds resize`), doubling the `w` and `h`
//! of each payload. Run it with `cargo run -p taskplane-api --example worker -- URL [TOKEN]`.
//!
//! The loop is the whole protocol: lease (a long-poll), run the handler while heartbeats keep
//! the lease (and bring cancellations), then complete or fail. See docs/worker-protocol.md.

use std::time::Duration;

use serde_json::{Value, json};
use taskplane_api::{Client, Complete, Fail, Heartbeat, LeaseRequest, LeasedTask};

/// The handler: what a `resize` task does.
async fn resize(payload: Value) -> Result<Value, String> {
    let side = |key: &str| payload.get(key).and_then(Value::as_u64);
    match (side("w"), side("h")) {
        (Some(w), Some(h)) => Ok(json!({"w": w * 2, "h": h * 2})),
        _ => Err("the payload needs numbers w and h".to_owned()),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let server = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:7070".to_owned());
    let client = Client::new(&server, args.next())?;
    let request = LeaseRequest {
        worker: format!("rust-example-{}", std::process::id()),
        kinds: vec!["resize".to_owned()],
        queues: Vec::new(),
        max: Some(4),
        wait_ms: Some(25_000),
        concurrency: Some(4),
    };
    eprintln!("serving resize for {server} as {}", request.worker);
    loop {
        let tasks = match client.lease(&request).await {
            Ok(list) => list.tasks,
            // Refused for good (an undeclared kind, a bad token): say so and stop.
            Err(error) if error.status().is_some_and(|s| s < 500 && s != 429) => {
                return Err(error.into());
            }
            Err(error) => {
                eprintln!("{error}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // One task at a time keeps the example short; spawn each for concurrency.
        for task in tasks {
            run(&client, task).await;
        }
    }
}

/// Runs one task to its end and reports it.
async fn run(client: &Client, task: LeasedTask) {
    let work = resize(task.payload.clone());
    tokio::pin!(work);
    let mut beat = tokio::time::interval(Duration::from_secs(5));
    beat.tick().await;
    let outcome = loop {
        tokio::select! {
            outcome = &mut work => break Some(outcome),
            _ = beat.tick() => {
                let heartbeat = Heartbeat { lease: task.lease.clone(), progress: None };
                match client.heartbeat(task.id, &heartbeat).await {
                    Ok(answer) if answer.cancel_requested => break Some(Err("cancelled".to_owned())),
                    Ok(_) => {}
                    // 409: the lease is gone (the task runs elsewhere); drop the work.
                    Err(error) if error.status() == Some(409) => break None,
                    Err(error) => eprintln!("heartbeat: {error}"),
                }
            }
        }
    };
    let reported = match outcome {
        None => return,
        Some(Ok(result)) => {
            let body = Complete {
                lease: task.lease.clone(),
                result: Some(result),
            };
            client.complete(task.id, &body).await
        }
        Some(Err(error)) => {
            let body = Fail {
                lease: task.lease.clone(),
                error,
                retry: false,
                interrupted: false,
            };
            client.fail(task.id, &body).await
        }
    };
    match reported {
        Ok(answer) => eprintln!("task {}: {}", task.id, answer.status.as_str()),
        Err(error) => eprintln!("task {}: reporting failed: {error}", task.id),
    }
}
