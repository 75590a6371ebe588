// Throwaway timing of settle_due (not committed).
use std::time::Instant;

use klaxon::domain::{EscalationPolicy, Timestamp};
use sqlx::Connection;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let backend = args[1].as_str();
    let total: i64 = args[2].parse().unwrap();
    let batch: u32 = args[3].parse().unwrap();
    let workers: usize = args[4].parse().unwrap();
    let policy = serde_json::to_string(&EscalationPolicy::standard()).unwrap();
    let now = Timestamp::now();
    let url = if backend == "pg" {
        let admin = "postgres://postgres@127.0.0.1:5432/test";
        let schema = format!("klaxon_test_timing_{}", uuid::Uuid::now_v7().simple());
        let mut conn = sqlx::PgConnection::connect(admin).await.unwrap();
        sqlx::query(&format!("create schema {schema}"))
            .execute(&mut conn)
            .await
            .unwrap();
        format!("{admin}?options=-c%20search_path%3D{schema}")
    } else {
        let dir = std::env::temp_dir().join(format!("timing-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        format!("sqlite://{}/klaxon.db", dir.display())
    };
    let store = klaxon::store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    let t = Instant::now();
    if backend == "pg" {
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query("insert into incidents (id, title, severity, status, escalation_policy, created_at, updated_at)
                     select gen_random_uuid(), 'storm', 'error', 'ESCALATING', $1::jsonb, $2, $2 from generate_series(1, $3)")
            .bind(&policy).bind(now.as_datetime()).bind(total).execute(&mut conn).await.unwrap();
        sqlx::query("insert into escalations (id, incident_id, escalation_level, status, scheduled_at, created_at)
                     select gen_random_uuid(), id, 1, 'PENDING', $1 - (random() * interval '1 second'), $1 from incidents")
            .bind(now.as_datetime()).execute(&mut conn).await.unwrap();
        sqlx::query("vacuum analyze")
            .execute(&mut conn)
            .await
            .unwrap();
    } else {
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("with recursive n(i) as (select 1 union all select i + 1 from n where i < $3)
                     insert into incidents (id, title, severity, status, escalation_policy, created_at, updated_at)
                     select lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-7' || substr(hex(randomblob(2)), 2) || '-8' || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6))), 'storm', 'error', 'ESCALATING', $1, $2, $2 from n")
            .bind(&policy).bind(now.as_millis()).bind(total).execute(&mut conn).await.unwrap();
        sqlx::query("insert into escalations (id, incident_id, escalation_level, status, scheduled_at, created_at)
                     select lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-7' || substr(hex(randomblob(2)), 2) || '-8' || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6))), id, 1, 'PENDING', $1 - abs(random() % 1000), $1 from incidents")
            .bind(now.as_millis()).execute(&mut conn).await.unwrap();
        sqlx::query("analyze").execute(&mut conn).await.unwrap();
    }
    eprintln!("setup {:?}", t.elapsed());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0usize;
            let mut calls = 0usize;
            let mut worst = std::time::Duration::ZERO;
            loop {
                let t = Instant::now();
                let settled = store.settle_due(now, batch, None).await.unwrap();
                worst = worst.max(t.elapsed());
                calls += 1;
                if settled.is_empty() {
                    return (n, calls, worst);
                }
                n += settled.len();
            }
        }));
    }
    let mut n = 0;
    let mut worst = std::time::Duration::ZERO;
    for task in tasks {
        let (k, _, w) = task.await.unwrap();
        n += k;
        worst = worst.max(w);
    }
    let elapsed = started.elapsed();
    let b = store.backlog(now).await.unwrap();
    println!("{backend} total={total} batch={batch} workers={workers}: settled {n} in {:.2?} = {:.0}/s (worst batch {:.1?}); backlog {:?}",
        elapsed, n as f64 / elapsed.as_secs_f64(), worst, b);
}
