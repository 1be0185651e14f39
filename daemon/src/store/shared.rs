//! The [`Store`](super::Store) implementation both backends share, written once as a macro:
//! the statements (in [`sql`](super::sql)) and the binding code are the same for SQLite and
//! PostgreSQL pools; only the claim, migrations and notifications differ, and each backend
//! provides those as inherent methods named `dialect_*`.

macro_rules! impl_store {
    ($store:ty) => {
        impl $crate::store::Store for $store {
            fn migrate(&self) -> $crate::store::BoxFuture<'_, $crate::store::Result<Vec<i64>>> {
                Box::pin(self.dialect_migrate())
            }

            fn ping(&self) -> $crate::store::BoxFuture<'_, $crate::store::Result<()>> {
                Box::pin(async move {
                    sqlx::query("SELECT 1").execute(&self.read).await?;
                    // Reads may work while writes are refused (a full disk, a read-only
                    // file). A recent refusal answers; after an older one, only a write
                    // can tell whether it is over.
                    if let Some(reason) = self.health.refusal() {
                        return Err($crate::store::StoreError::WritesRefused(reason));
                    }
                    if self.health.refused() {
                        let probe = self
                            .health
                            .track(async {
                                sqlx::query($crate::store::sql::PROBE_WRITE)
                                    .execute(&self.write)
                                    .await?;
                                Ok(())
                            })
                            .await;
                        match probe {
                            Err(error) if error.is_unavailable() => return Err(error),
                            // Refused for its own reasons (say, a role that may not write
                            // that table): the database took the write, so writes work.
                            Err(error) => {
                                tracing::debug!(%error, "the write probe failed; not a refusal");
                                self.health.accepted();
                            }
                            Ok(()) => {}
                        }
                    }
                    Ok(())
                })
            }

            fn insert(
                &self,
                tasks: Vec<$crate::domain::validate::NewTask>,
            ) -> $crate::store::BoxFuture<
                '_,
                $crate::store::Result<Vec<($crate::store::StoredTask, bool)>>,
            > {
                Box::pin(self.health.track(async move {
                    use $crate::store::{decode, sql};
                    // One chunk's multi-row insert, answering the ids it inserted; a task the
                    // statement skipped had an idempotency key that exists.
                    macro_rules! insert_chunk {
                        ($chunk:expr, $executor:expr) => {{
                            let chunk = $chunk;
                            let statement = sql::insert_rows(chunk.len());
                            let mut query = sqlx::query(sqlx::AssertSqlSafe(statement));
                            for task in chunk {
                                query = query
                                    .bind(task.id.to_string())
                                    .bind(&task.kind)
                                    .bind(&task.queue)
                                    .bind(task.priority)
                                    .bind(&task.payload)
                                    .bind(task.status.as_str())
                                    .bind(i64::from(task.max_attempts))
                                    .bind(task.timeout_secs as i64)
                                    .bind(task.run_at_ms)
                                    .bind(task.created_at_ms)
                                    .bind(&task.idempotency_key)
                                    .bind(&task.labels)
                                    .bind(task.retry_base_ms.map(|ms| ms as i64))
                                    .bind(task.retry_max_ms.map(|ms| ms as i64))
                                    .bind(task.published_at);
                            }
                            let mut ids = Vec::with_capacity(chunk.len());
                            for row in query.fetch_all($executor).await? {
                                ids.push(sqlx::Row::try_get::<String, _>(&row, 0)?);
                            }
                            ids
                        }};
                    }
                    // The tasks skipped for an existing idempotency key: each key's first
                    // task, read back.
                    macro_rules! answer {
                        ($inserted:expr, $executor:expr) => {{
                            let inserted = $inserted;
                            let mut out = Vec::with_capacity(tasks.len());
                            for task in &tasks {
                                if inserted.contains(&task.id.to_string()) {
                                    out.push(($crate::store::StoredTask::from_new(task), true));
                                    continue;
                                }
                                let row = sqlx::query(sqlx::AssertSqlSafe(sql::select_by_key()))
                                    .bind(&task.idempotency_key)
                                    .fetch_one($executor)
                                    .await?;
                                out.push((decode::task(&row)?, false));
                            }
                            out
                        }};
                    }
                    // Workers that claim from the database wake on a notification. With a
                    // broker (the tasks carry a publisher's mark) nobody listens, and on
                    // PostgreSQL a notifying commit takes a lock every other notifying
                    // commit waits for: two API processes' submits queued behind each other.
                    let notify = tasks.iter().any(|task| {
                        task.published_at == Some(0)
                            && task.status == taskplane_api::TaskStatus::Queued
                    });
                    let labelled = tasks.iter().any(|task| !task.label_pairs.is_empty());
                    if tasks.len() <= sql::ROWS_PER_STATEMENT && !labelled && !notify {
                        // The common case is one statement, committed on its own: one round
                        // trip instead of three (BEGIN and COMMIT are two more, and on
                        // SQLite each is a hop to its writer thread). A replayed key's task is
                        // committed by then (the insert waited for it), so reading it after
                        // sees it.
                        let inserted: std::collections::HashSet<String> =
                            insert_chunk!(&tasks[..], &self.write).into_iter().collect();
                        return Ok(answer!(inserted, &self.write));
                    }
                    let mut tx = self.write.begin().await?;
                    let mut inserted = std::collections::HashSet::with_capacity(tasks.len());
                    for chunk in tasks.chunks(sql::ROWS_PER_STATEMENT) {
                        inserted.extend(insert_chunk!(chunk, &mut *tx));
                    }
                    // The inserted tasks' labels, as rows a selector finds by index.
                    let mut labels: Vec<(String, &str, &str)> = Vec::new();
                    for task in tasks.iter().filter(|task| !task.label_pairs.is_empty()) {
                        let id = task.id.to_string();
                        if inserted.contains(&id) {
                            for (key, value) in &task.label_pairs {
                                labels.push((id.clone(), key, value));
                            }
                        }
                    }
                    for chunk in labels.chunks(sql::ROWS_PER_STATEMENT) {
                        let mut query =
                            sqlx::query(sqlx::AssertSqlSafe(sql::insert_labels(chunk.len())));
                        for (id, key, value) in chunk {
                            query = query.bind(id.as_str()).bind(*key).bind(*value);
                        }
                        query.execute(&mut *tx).await?;
                    }
                    let out = answer!(inserted, &mut *tx);
                    if notify {
                        self.dialect_notify_ready(&mut tx).await?;
                    }
                    tx.commit().await?;
                    Ok(out)
                }))
            }

            fn get(
                &self,
                id: uuid::Uuid,
            ) -> $crate::store::BoxFuture<'_, $crate::store::Result<Option<$crate::store::StoredTask>>>
            {
                Box::pin(async move {
                    use $crate::store::{decode, sql};
                    let row = sqlx::query(sqlx::AssertSqlSafe(sql::select_by_id()))
                        .bind(id.to_string())
                        .fetch_optional(&self.read)
                        .await?;
                    row.as_ref().map(decode::task).transpose()
                })
            }

            fn list(
                &self,
                filter: $crate::store::ListFilter,
            ) -> $crate::store::BoxFuture<'_, $crate::store::Result<Vec<$crate::store::StoredTask>>>
            {
                Box::pin(async move {
                    use $crate::store::{decode, sql};
                    use futures_util::TryStreamExt;
                    // Row by row, so a page of large tasks stops at the byte budget instead
                    // of being read whole first; in statements of growing size (32, 64, …),
                    // so the database does not send (and sqlx drain) rows past the budget.
                    let mut tasks: Vec<$crate::store::StoredTask> = Vec::new();
                    let mut bytes = 0;
                    let mut before = filter.before;
                    let mut chunk: u32 = 32;
                    let statement = sql::list(&filter.labels, self.label_driver(&filter.labels).await?);
                    'pages: while tasks.len() < filter.limit as usize {
                        let want = chunk.min(filter.limit - tasks.len() as u32);
                        let mut query = sqlx::query(sqlx::AssertSqlSafe(statement.clone()))
                            .bind(filter.status.map(|s| s.as_str()))
                            .bind(filter.queue.as_deref())
                            .bind(filter.kind.as_deref())
                            .bind(before.map(|id| id.to_string()))
                            .bind(i64::from(want));
                        for selector in &filter.labels {
                            query = query.bind(selector.key());
                            if let Some(value) = selector.value() {
                                query = query.bind(value);
                            }
                        }
                        let mut rows = query.fetch(&self.read);
                        let mut got = 0;
                        while let Some(row) = rows.try_next().await? {
                            let task = decode::task(&row)?;
                            got += 1;
                            bytes += task.size();
                            before = Some(task.id);
                            tasks.push(task);
                            if bytes >= filter.max_bytes {
                                break 'pages;
                            }
                        }
                        if got < want {
                            break;
                        }
                        chunk = chunk.saturating_mul(2);
                    }
                    Ok(tasks)
                })
            }

            fn cancel(
                &self,
                id: uuid::Uuid,
                now: i64,
            ) -> $crate::store::BoxFuture<'_, $crate::store::Result<$crate::store::CancelOutcome>>
            {
                Box::pin(self.health.track(async move {
                    use $crate::store::{CancelOutcome, decode, sql};
                    let row = sqlx::query(sqlx::AssertSqlSafe(sql::cancel()))
                        .bind(id.to_string())
                        .bind(now)
                        .fetch_optional(&self.write)
                        .await?;
                    if let Some(row) = row {
                        let task = decode::task(&row)?;
                        return Ok(if task.status == taskplane_api::TaskStatus::Running {
                            CancelOutcome::Requested(task)
                        } else {
                            CancelOutcome::Cancelled(task)
                        });
                    }
                    Ok(match self.get(id).await? {
                        Some(task) => CancelOutcome::Finished(task),
                        None => CancelOutcome::NotFound,
                    })
                }))
            }

            fn retry(
                &self,
                id: uuid::Uuid,
                now: i64,
            ) -> $crate::store::BoxFuture<'_, $crate::store::Result<$crate::store::RetryOutcome>>
            {
                Box::pin(self.health.track(async move {
                    use $crate::store::{RetryOutcome, decode, sql};
                    let row = sqlx::query(sqlx::AssertSqlSafe(sql::retry()))
                        .bind(now)
                        .bind(id.to_string())
                        .fetch_optional(&self.write)
                        .await?;
                    if let Some(row) = row {
                        return Ok(RetryOutcome::Requeued(decode::task(&row)?));
                    }
                    Ok(match self.get(id).await? {
                        Some(task) => RetryOutcome::NotRetryable(task),
                        None => RetryOutcome::NotFound,
                    })
                }))
            }

            fn retry_failed(
                &self,
                kind: Option<String>,
                queue: Option<String>,
                skip_privileged: bool,
                now: i64,
            ) -> $crate::store::BoxFuture<'_, $crate::store::Result<u64>> {
                Box::pin(self.health.track(async move {
                    let done = sqlx::query(sqlx::AssertSqlSafe($crate::store::sql::retry_failed(Self::LOCKS)))
                        .bind(now)
                        .bind(kind)
                        .bind(queue)
                        .bind(skip_privileged)
                        .execute(&self.write)
                        .await?;
                    Ok(done.rows_affected())
                }))
            }

            fn delete_finished(
                &self,
                filter: $crate::store::FinishedFilter,
            ) -> $crate::store::BoxFuture<'_, $crate::store::Result<u64>> {
                Box::pin(async move {
                    let total = self.health.track(async {
                        use $crate::store::sql;
                        let statuses: Vec<&str> = filter.statuses.iter().map(|s| s.as_str()).collect();
                        let statuses = statuses.join(",");
                        let mut total = 0;
                        loop {
                            let mut tx = self.write.begin().await?;
                            let done = sqlx::query(sqlx::AssertSqlSafe(sql::delete_finished(Self::LOCKS)))
                                .bind(&statuses)
                                .bind(filter.finished_before)
                                .bind(&filter.kind)
                                .bind(&filter.queue)
                                .execute(&mut *tx)
                                .await?;
                            tx.commit().await?;
                            total += done.rows_affected();
                            if done.rows_affected() < 1000 {
                                break;
                            }
                        }
                        Ok(total)
                    })
                    .await?;
                    // The deletes are committed whatever happens here: a reclaim that fails
                    // (the file busy, the disk full) is retried after the next deletes.
                    if total > 0
                        && let Err(error) = self.dialect_reclaim().await
                    {
                        tracing::warn!(%error, "returning free pages to the file system failed");
                    }
                    Ok(total)
                })
            }

            fn claim<'a>(
                &'a self,
                worker: &'a str,
                queues: &'a [String],
                limit: u32,
                now: i64,
                lease_until: i64,
            ) -> $crate::store::BoxFuture<'a, $crate::store::Result<Vec<$crate::store::ClaimedTask>>>
            {
                Box::pin(self.health.track(self.dialect_claim(worker, queues, limit, now, lease_until)))
            }

            fn claim_ids<'a>(
                &'a self,
                worker: &'a str,
                ids: &'a [uuid::Uuid],
                now: i64,
                lease_until: i64,
            ) -> $crate::store::BoxFuture<'a, $crate::store::Result<Vec<$crate::store::ClaimedTask>>>
            {
                Box::pin(self.health.track(self.dialect_claim_ids(worker, ids, now, lease_until)))
            }

            fn settle_many<'a>(
                &'a self,
                worker: &'a str,
                items: &'a [(uuid::Uuid, $crate::domain::lifecycle::Settlement)],
                now: i64,
            ) -> $crate::store::BoxFuture<'a, $crate::store::Result<Vec<bool>>> {
                Box::pin(self.health.track(async move {
                    use $crate::domain::lifecycle::Settlement;
                    use $crate::store::sql;
                    if items.is_empty() {
                        return Ok(Vec::new());
                    }
                    // The common case, a few successes, is one statement committed on its own
                    // (one round trip; a transaction adds three: BEGIN, the lock, COMMIT).
                    if items.len() <= sql::ROWS_PER_STATEMENT
                        && items
                            .iter()
                            .all(|(_, settlement)| matches!(settlement, Settlement::Succeeded { .. }))
                    {
                        let statement = sql::settle_succeeded_rows(items.len(), Self::LOCKS);
                        let mut query = sqlx::query(sqlx::AssertSqlSafe(statement))
                            .bind(now)
                            .bind(worker);
                        for (id, settlement) in items {
                            if let Settlement::Succeeded { result } = settlement {
                                query = query.bind(id.to_string()).bind(result.as_str());
                            }
                        }
                        let done: std::collections::HashSet<String> = query
                            .fetch_all(&self.write)
                            .await?
                            .iter()
                            .filter_map(|row| sqlx::Row::try_get::<String, _>(row, 0).ok())
                            .collect();
                        return Ok(items
                            .iter()
                            .map(|(id, _)| done.contains(&id.to_string()))
                            .collect());
                    }
                    // One transaction for the lot: one commit (one WAL append, one fsync on
                    // PostgreSQL) however many tasks ended together.
                    let mut tx = self.write.begin().await?;
                    // The rows are locked in id order before any changes: the statements
                    // below group them by outcome, in no one order.
                    let ids: Vec<String> = items.iter().map(|(id, _)| id.to_string()).collect();
                    self.dialect_lock_rows(&mut tx, &ids).await?;
                    let mut settled = vec![false; items.len()];
                    // Successes, the common case, wait for one statement per chunk; every other
                    // outcome is one statement.
                    let mut successes: Vec<(usize, String, &str)> = Vec::new();
                    for (i, (id, settlement)) in items.iter().enumerate() {
                        let (statement, text, at) = match settlement {
                            Settlement::Succeeded { result } => {
                                successes.push((i, id.to_string(), result.as_str()));
                                continue;
                            }
                            Settlement::Retrying { error, run_at_ms } => {
                                (sql::settle_retrying(), Some(error.as_str()), Some(*run_at_ms))
                            }
                            Settlement::Failed { error } => {
                                (sql::settle_failed(), Some(error.as_str()), None)
                            }
                            Settlement::Cancelled => (sql::settle_cancelled(), None, None),
                            Settlement::Requeued => (sql::settle_requeued(), None, None),
                        };
                        let mut query = sqlx::query(sqlx::AssertSqlSafe(statement))
                            .bind(id.to_string())
                            .bind(worker)
                            .bind(now);
                        if let Some(text) = text {
                            query = query.bind(text);
                        }
                        if let Some(at) = at {
                            query = query.bind(at);
                        }
                        let done = query.execute(&mut *tx).await?;
                        settled[i] = done.rows_affected() == 1;
                    }
                    for chunk in successes.chunks(sql::ROWS_PER_STATEMENT) {
                        let statement = sql::settle_succeeded_rows(chunk.len(), Self::LOCKS);
                        let mut query = sqlx::query(sqlx::AssertSqlSafe(statement))
                            .bind(now)
                            .bind(worker);
                        for (_, id, result) in chunk {
                            query = query.bind(id.as_str()).bind(*result);
                        }
                        let done: std::collections::HashSet<String> = query
                            .fetch_all(&mut *tx)
                            .await?
                            .iter()
                            .filter_map(|row| sqlx::Row::try_get::<String, _>(row, 0).ok())
                            .collect();
                        for (i, id, _) in chunk {
                            settled[*i] = done.contains(id);
                        }
                    }
                    tx.commit().await?;
                    Ok(settled)
                }))
            }

            fn renew_leases<'a>(
                &'a self,
                worker: &'a str,
                until: i64,
            ) -> $crate::store::BoxFuture<'a, $crate::store::Result<u64>> {
                Box::pin(self.health.track(async move {
                    let done = sqlx::query(sqlx::AssertSqlSafe($crate::store::sql::renew(Self::LOCKS)))
                        .bind(worker)
                        .bind(until)
                        .execute(&self.write)
                        .await?;
                    Ok(done.rows_affected())
                }))
            }

            fn release_leases<'a>(
                &'a self,
                worker: &'a str,
                now: i64,
            ) -> $crate::store::BoxFuture<'a, $crate::store::Result<u64>> {
                Box::pin(self.health.track(async move {
                    let done = sqlx::query(sqlx::AssertSqlSafe($crate::store::sql::release_leases(Self::LOCKS)))
                        .bind(worker)
                        .bind(now)
                        .execute(&self.write)
                        .await?;
                    Ok(done.rows_affected())
                }))
            }

            fn cancel_requests<'a>(
                &'a self,
                worker: &'a str,
            ) -> $crate::store::BoxFuture<'a, $crate::store::Result<Vec<uuid::Uuid>>> {
                Box::pin(async move {
                    let ids: Vec<String> = sqlx::query_scalar($crate::store::sql::CANCEL_REQUESTS)
                        .bind(worker)
                        .fetch_all(&self.read)
                        .await?;
                    ids.iter().map(|id| $crate::store::decode::parse_id(id)).collect()
                })
            }

            fn promote_due(&self, now: i64) -> $crate::store::BoxFuture<'_, $crate::store::Result<u64>> {
                Box::pin(self.health.track(async move {
                    let done = sqlx::query(sqlx::AssertSqlSafe($crate::store::sql::promote(Self::LOCKS)))
                        .bind(now)
                        .execute(&self.write)
                        .await?;
                    Ok(done.rows_affected())
                }))
            }

            fn reap_expired(&self, now: i64) -> $crate::store::BoxFuture<'_, $crate::store::Result<u64>> {
                Box::pin(self.health.track(async move {
                    let done = sqlx::query(sqlx::AssertSqlSafe($crate::store::sql::reap(Self::LOCKS)))
                        .bind(now)
                        .execute(&self.write)
                        .await?;
                    Ok(done.rows_affected())
                }))
            }

            fn append_logs(
                &self,
                lines: Vec<$crate::store::NewLogLine>,
            ) -> $crate::store::BoxFuture<'_, $crate::store::Result<()>> {
                Box::pin(self.health.track(async move {
                    let mut tx = self.write.begin().await?;
                    for line in &lines {
                        sqlx::query($crate::store::sql::APPEND_LOG)
                            .bind(line.task_id.to_string())
                            .bind(i64::from(line.attempt))
                            .bind(line.stream.as_str())
                            .bind(line.ts)
                            .bind(&line.line)
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await?;
                    Ok(())
                }))
            }

            fn logs(
                &self,
                id: uuid::Uuid,
                after: i64,
                limit: u32,
            ) -> $crate::store::BoxFuture<'_, $crate::store::Result<Vec<$crate::store::StoredLogLine>>>
            {
                Box::pin(async move {
                    let id = id.to_string();
                    let rows = sqlx::query($crate::store::sql::LOGS)
                        .bind(&id)
                        .bind(after)
                        .bind(i64::from(limit))
                        .fetch_all(&self.read)
                        .await?;
                    rows.iter()
                        .map(|row| $crate::store::decode::log_line(row, &id))
                        .collect()
                })
            }

            fn event_rows(
                &self,
                after: i64,
                upto: i64,
                limit: u32,
            ) -> $crate::store::BoxFuture<'_, $crate::store::Result<Vec<$crate::store::EventRow>>>
            {
                Box::pin(async move {
                    let query = if upto == i64::MAX {
                        sqlx::query($crate::store::sql::EVENTS_AFTER)
                            .bind(after)
                            .bind(i64::from(limit))
                    } else {
                        sqlx::query($crate::store::sql::EVENTS)
                            .bind(after)
                            .bind(upto)
                            .bind(i64::from(limit))
                    };
                    let rows = query.fetch_all(&self.read).await?;
                    rows.iter().map($crate::store::decode::event_row).collect()
                })
            }

            fn event_rows_before(
                &self,
                before: i64,
                limit: u32,
            ) -> $crate::store::BoxFuture<'_, $crate::store::Result<Vec<$crate::store::EventRow>>>
            {
                Box::pin(async move {
                    let rows = sqlx::query($crate::store::sql::EVENTS_BEFORE)
                        .bind(before)
                        .bind(i64::from(limit))
                        .fetch_all(&self.read)
                        .await?;
                    rows.iter().map($crate::store::decode::event_row).collect()
                })
            }

            fn first_event_since(
                &self,
                at: i64,
            ) -> $crate::store::BoxFuture<'_, $crate::store::Result<Option<i64>>> {
                Box::pin(async move {
                    let seq: Option<i64> = sqlx::query_scalar($crate::store::sql::FIRST_EVENT_SINCE)
                        .bind(at)
                        .fetch_one(&self.read)
                        .await?;
                    Ok(seq)
                })
            }

            fn tend(&self) -> $crate::store::BoxFuture<'_, $crate::store::Result<Vec<String>>> {
                Box::pin(self.dialect_tend())
            }

            fn latest_event(&self) -> $crate::store::BoxFuture<'_, $crate::store::Result<i64>> {
                Box::pin(async move {
                    let seq: i64 = sqlx::query_scalar($crate::store::sql::LATEST_EVENT)
                        .fetch_one(&self.read)
                        .await?;
                    Ok(seq)
                })
            }

            fn trim_events(&self, before: i64) -> $crate::store::BoxFuture<'_, $crate::store::Result<u64>> {
                Box::pin(self.health.track(async move {
                    let done = sqlx::query($crate::store::sql::TRIM_EVENTS)
                        .bind(before)
                        .execute(&self.write)
                        .await?;
                    Ok(done.rows_affected())
                }))
            }

            fn queue_counts(
                &self,
                finished_since: Option<i64>,
            ) -> $crate::store::BoxFuture<'_, $crate::store::Result<Vec<$crate::store::QueueCount>>>
            {
                Box::pin(async move {
                    use $crate::store::sql;
                    let rows = match finished_since {
                        Some(since) => {
                            sqlx::query(sql::FINISHED_SINCE)
                                .bind(since)
                                .fetch_all(&self.read)
                                .await?
                        }
                        None => sqlx::query(sql::QUEUE_COUNTS).fetch_all(&self.read).await?,
                    };
                    rows.iter().map($crate::store::decode::queue_count).collect()
                })
            }

            fn heartbeat<'a>(
                &'a self,
                worker: &'a $crate::store::WorkerRow,
            ) -> $crate::store::BoxFuture<'a, $crate::store::Result<()>> {
                Box::pin(self.health.track(async move {
                    sqlx::query($crate::store::sql::HEARTBEAT)
                        .bind(&worker.id)
                        .bind(&worker.host)
                        .bind(i64::from(worker.pid))
                        .bind(&worker.queues)
                        .bind(i64::from(worker.concurrency))
                        .bind(i64::from(worker.busy))
                        .bind(worker.started_at)
                        .bind(worker.heartbeat_at)
                        .execute(&self.write)
                        .await?;
                    Ok(())
                }))
            }

            fn workers(
                &self,
                alive_since: i64,
            ) -> $crate::store::BoxFuture<'_, $crate::store::Result<Vec<$crate::store::WorkerRow>>>
            {
                Box::pin(async move {
                    let rows = sqlx::query($crate::store::sql::WORKERS)
                        .bind(alive_since)
                        .fetch_all(&self.read)
                        .await?;
                    rows.iter().map($crate::store::decode::worker).collect()
                })
            }

            fn remove_workers<'a>(
                &'a self,
                id: Option<&'a str>,
                before: i64,
            ) -> $crate::store::BoxFuture<'a, $crate::store::Result<u64>> {
                Box::pin(self.health.track(async move {
                    let done = match id {
                        Some(id) => {
                            sqlx::query($crate::store::sql::REMOVE_WORKER)
                                .bind(id)
                                .execute(&self.write)
                                .await?
                        }
                        None => {
                            sqlx::query($crate::store::sql::PRUNE_WORKERS)
                                .bind(before)
                                .execute(&self.write)
                                .await?
                        }
                    };
                    Ok(done.rows_affected())
                }))
            }

            fn unpublished(
                &self,
                limit: u32,
            ) -> $crate::store::BoxFuture<'_, $crate::store::Result<Vec<$crate::store::Publishable>>>
            {
                Box::pin(async move {
                    let rows = sqlx::query($crate::store::sql::UNPUBLISHED)
                        .bind(i64::from(limit))
                        .fetch_all(&self.read)
                        .await?;
                    rows.iter().map($crate::store::decode::publishable).collect()
                })
            }

            fn publisher_beat(
                &self,
                token: i64,
                now: i64,
            ) -> $crate::store::BoxFuture<'_, $crate::store::Result<()>> {
                Box::pin(self.health.track(async move {
                    sqlx::query($crate::store::sql::PUBLISHER_BEAT)
                        .bind(token)
                        .bind(now)
                        .execute(&self.write)
                        .await?;
                    Ok(())
                }))
            }

            fn hand_back<'a>(
                &'a self,
                mark: i64,
                ids: &'a [uuid::Uuid],
            ) -> $crate::store::BoxFuture<'a, $crate::store::Result<u64>> {
                Box::pin(self.health.track(async move {
                    use $crate::store::sql;
                    let mut ids: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
                    ids.sort_unstable();
                    let mut tx = self.write.begin().await?;
                    let mut handed = 0;
                    for chunk in ids.chunks(sql::ROWS_PER_STATEMENT) {
                        let statement = sql::hand_back_rows(chunk.len(), Self::LOCKS);
                        let mut query = sqlx::query(sqlx::AssertSqlSafe(statement)).bind(mark);
                        for id in chunk {
                            query = query.bind(id.as_str());
                        }
                        handed += query.execute(&mut *tx).await?.rows_affected();
                    }
                    tx.commit().await?;
                    Ok(handed)
                }))
            }

            fn reclaim_orphans(
                &self,
                stale_before: i64,
            ) -> $crate::store::BoxFuture<'_, $crate::store::Result<u64>> {
                Box::pin(self.health.track(async move {
                    use $crate::store::sql;
                    let handed = sqlx::query(sqlx::AssertSqlSafe(sql::orphaned(Self::LOCKS)))
                        .bind(stale_before)
                        .execute(&self.write)
                        .await?
                        .rows_affected();
                    sqlx::query(sql::PRUNE_PUBLISHERS)
                        .bind(stale_before - 3_600_000)
                        .execute(&self.write)
                        .await?;
                    Ok(handed)
                }))
            }

            fn mark_published<'a>(
                &'a self,
                tasks: &'a [(uuid::Uuid, i64)],
                now: i64,
            ) -> $crate::store::BoxFuture<'a, $crate::store::Result<()>> {
                Box::pin(self.health.track(async move {
                    use $crate::store::sql;
                    // In id order across the statements too, so the transaction takes its
                    // row locks in one order from start to end.
                    let mut rows: Vec<(String, i64)> =
                        tasks.iter().map(|(id, at)| (id.to_string(), *at)).collect();
                    rows.sort_unstable();
                    let mut tx = self.write.begin().await?;
                    for chunk in rows.chunks(sql::ROWS_PER_STATEMENT) {
                        let statement = sql::mark_published_rows(chunk.len(), Self::LOCKS);
                        let mut query = sqlx::query(sqlx::AssertSqlSafe(statement)).bind(now);
                        for (id, updated_at) in chunk {
                            query = query.bind(id.as_str()).bind(*updated_at);
                        }
                        query.execute(&mut *tx).await?;
                    }
                    tx.commit().await?;
                    Ok(())
                }))
            }

            fn listen_ready(
                &self,
                wake: std::sync::Arc<tokio::sync::Notify>,
            ) -> $crate::store::BoxFuture<'static, ()> {
                self.dialect_listen_ready(wake)
            }
        }

        impl $store {
            /// Which label selector finds a list's tasks through the label index (see
            /// [`sql::list`]($crate::store::sql::list)): the `key=value` one with the fewest
            /// tasks, else the first `key` one, else none.
            async fn label_driver(
                &self,
                selectors: &[$crate::domain::labels::Selector],
            ) -> $crate::store::Result<Option<usize>> {
                use $crate::domain::labels::Selector;
                let equals: Vec<(usize, &str, &str)> = selectors
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| match s {
                        Selector::Equals(key, value) => Some((i, key.as_str(), value.as_str())),
                        _ => None,
                    })
                    .collect();
                if equals.len() < 2 {
                    return Ok(equals.first().map(|(i, _, _)| *i).or_else(|| {
                        selectors.iter().position(|s| matches!(s, Selector::Exists(_)))
                    }));
                }
                let mut fewest: Option<(i64, usize)> = None;
                for (i, key, value) in equals {
                    let count: i64 = sqlx::query_scalar($crate::store::sql::LABEL_PROBE)
                        .bind(key)
                        .bind(value)
                        .fetch_one(&self.read)
                        .await?;
                    if fewest.is_none_or(|(least, _)| count < least) {
                        fewest = Some((count, i));
                    }
                }
                Ok(fewest.map(|(_, i)| i))
            }
        }
    };
}
