//! The server's maintenance schedule: when each lake's job ([`lake_upkeep::maintenance::run`])
//! runs, and its result in the status.

use std::time::{Duration, Instant};

use lake_upkeep::maintenance::{self, JobContext};
use tokio_util::sync::CancellationToken;

/// The server's schedule: every lake's job runs `interval` after the previous one ended (the
/// first `interval` after start), one job at a time, while `stop` is not cancelled. Each job's
/// result is logged and published in the status (`/readyz` → `maintenance`).
pub async fn schedule(
    ctx: JobContext,
    status: crate::status::StatusSender,
    stop: CancellationToken,
) {
    let mut due: std::collections::HashMap<String, Instant> = std::collections::HashMap::new();
    let mut client = pg_conn::KeptSession::default();
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = stop.cancelled() => return,
        }
        let open = || ctx.admin.pg.postgres("ducklake-catalog maintenance");
        let Ok(c) = client.get(open).await else {
            continue;
        };
        let Ok(lakes) = lake_admin::lakes::serving_now(c, &ctx.admin).await else {
            continue;
        };
        for lake in lakes {
            let settings = ctx.admin.settings.maintenance_of(&lake).clone();
            if !settings.enabled {
                due.remove(&lake.name);
                continue;
            }
            let next = *due
                .entry(lake.name.clone())
                .or_insert_with(|| Instant::now() + settings.interval.0);
            let ready = status
                .borrow()
                .lakes
                .get(&lake.name)
                .is_some_and(|l| l.state == crate::status::LakeState::Ready);
            publish(&status, &lake.name, |m| m.next_run = Some(at(next)));
            if !ready || Instant::now() < next {
                continue;
            }
            // A file cleanup deletes only what was scheduled for deletion longer ago than
            // the threshold; a standby whose readers are that far behind could still read it.
            let lag = status
                .borrow()
                .ha
                .as_ref()
                .and_then(|h| h.standby_lag_secs)
                .unwrap_or(0.0);
            let threshold = maintenance::cleanup_threshold(&ctx.admin.settings, &settings);
            if lag > threshold.as_secs_f64() / 2.0 {
                tracing::warn!(lake = %lake.name, standby_lag_secs = lag, "maintenance postponed: a standby's readers are more than half the cleanup window behind and could still read files the cleanup would delete");
                due.insert(lake.name.clone(), Instant::now() + settings.interval.0);
                continue;
            }
            publish(&status, &lake.name, |m| m.running = true);
            let report = maintenance::run(&ctx, &lake, false, &stop).await;
            maintenance::log(&report);
            let next = Instant::now() + settings.interval.0;
            due.insert(lake.name.clone(), next);
            publish(&status, &lake.name, |m| {
                m.running = false;
                m.next_run = Some(at(next));
                m.last = Some(report);
            });
            if stop.is_cancelled() {
                return;
            }
        }
    }
}

fn at(instant: Instant) -> String {
    let ahead = instant.saturating_duration_since(Instant::now());
    (chrono::Utc::now() + chrono::Duration::from_std(ahead).unwrap_or_default())
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn publish(
    status: &crate::status::StatusSender,
    lake: &str,
    change: impl FnOnce(&mut crate::status::MaintenanceStatus),
) {
    status.send_modify(|s| change(s.maintenance.entry(lake.to_owned()).or_default()));
}
