//! `klaxon incidents …`: list, show and act on incidents over the API.

use serde_json::{json, Value};
use uuid::Uuid;

use super::client::{parse, Client, RemoteError};
use super::table::{cell, render};
use super::Output;

#[derive(Debug, clap::Subcommand)]
pub enum IncidentsCommand {
    /// List incidents, newest first.
    List {
        /// Only incidents in this status: open, acknowledged, escalating, resolved, cancelled.
        #[arg(long)]
        status: Option<String>,
        /// Only the incidents of this service (its id).
        #[arg(long)]
        service: Option<Uuid>,
        /// How many, 1 to 200 [server's default: 50].
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=200))]
        limit: Option<u32>,
        /// The next page: the cursor a previous list printed.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Show an incident with its escalations and timeline.
    Show { id: Uuid },
    /// Acknowledge an incident: someone is on it; pending escalations are cancelled.
    #[command(visible_alias = "acknowledge")]
    Ack {
        id: Uuid,
        /// Written on the timeline with the action.
        #[arg(long)]
        note: Option<String>,
    },
    /// Resolve an incident; the note is kept as its resolution note.
    Resolve {
        id: Uuid,
        #[arg(long)]
        note: Option<String>,
    },
    /// Start escalating an incident: level 1 of its policy is scheduled.
    Escalate {
        id: Uuid,
        #[arg(long)]
        note: Option<String>,
    },
    /// Cancel an incident (a false alarm); pending escalations are cancelled.
    Cancel {
        id: Uuid,
        #[arg(long)]
        note: Option<String>,
    },
}

pub async fn run(
    client: &Client,
    output: Output,
    command: IncidentsCommand,
) -> Result<(), RemoteError> {
    let (action, id, note) = match command {
        IncidentsCommand::List {
            status,
            service,
            limit,
            cursor,
        } => {
            let query: Vec<(&str, String)> = [
                ("status", status),
                ("service", service.map(|id| id.to_string())),
                ("limit", limit.map(|limit| limit.to_string())),
                ("cursor", cursor),
            ]
            .into_iter()
            .filter_map(|(name, value)| Some((name, value?)))
            .collect();
            return list(client, output, &query).await;
        }
        IncidentsCommand::Show { id } => return show(client, output, id).await,
        IncidentsCommand::Ack { id, note } => ("acknowledge", id, note),
        IncidentsCommand::Resolve { id, note } => ("resolve", id, note),
        IncidentsCommand::Escalate { id, note } => ("escalate", id, note),
        IncidentsCommand::Cancel { id, note } => ("cancel", id, note),
    };
    // Resolve keeps its note as the incident's resolution note (SPEC §4).
    let note_field = if action == "resolve" {
        "resolution_note"
    } else {
        "note"
    };
    let body = match note {
        Some(note) => json!({ note_field: note }),
        None => json!({}),
    };
    let answer = client
        .post(&["incidents", &id.to_string(), action], body)
        .await?;
    match output {
        Output::Json => println!("{answer}"),
        Output::Table => {
            let incident = parse(&answer)?;
            println!("incident {id} is {}", cell(&incident, "status"));
        }
    }
    Ok(())
}

async fn list(
    client: &Client,
    output: Output,
    query: &[(&str, String)],
) -> Result<(), RemoteError> {
    let answer = client.get(&["incidents"], query).await?;
    if output == Output::Json {
        println!("{answer}");
        return Ok(());
    }
    let page = parse(&answer)?;
    let incidents = page["incidents"].as_array().map_or(&[][..], Vec::as_slice);
    if incidents.is_empty() {
        println!("no incidents");
    } else {
        let rows: Vec<Vec<String>> = incidents
            .iter()
            .map(|incident| {
                ["id", "status", "severity", "title", "created_at"]
                    .iter()
                    .map(|key| cell(incident, key))
                    .collect()
            })
            .collect();
        print!(
            "{}",
            render(&["ID", "STATUS", "SEVERITY", "TITLE", "CREATED"], &rows)
        );
    }
    if let Some(cursor) = page["next_cursor"].as_str() {
        eprintln!("more: klaxon incidents list --cursor {cursor}");
    }
    Ok(())
}

async fn show(client: &Client, output: Output, id: Uuid) -> Result<(), RemoteError> {
    let id = id.to_string();
    let (incident_path, escalations_path, timeline_path) = (
        ["incidents", &id],
        ["incidents", "escalations", &id],
        ["incidents", &id, "timeline"],
    );
    let (incident, escalations, timeline) = tokio::try_join!(
        client.get(&incident_path, &[]),
        client.get(&escalations_path, &[]),
        client.get(&timeline_path, &[]),
    )?;
    let incident = parse(&incident)?;
    let escalations = parse(&escalations)?["escalations"].take();
    let timeline = parse(&timeline)?["timeline"].take();
    if output == Output::Json {
        let record = json!({
            "incident": incident,
            "escalations": escalations,
            "timeline": timeline,
        });
        println!("{record}");
        return Ok(());
    }
    let fields = [
        "id",
        "title",
        "status",
        "severity",
        "service_id",
        "dedup_key",
        "event_count",
        "escalation_level",
        "resolution_note",
        "created_at",
        "updated_at",
        "acknowledged_at",
        "resolved_at",
        "cancelled_at",
    ];
    let rows: Vec<Vec<String>> = fields
        .iter()
        .filter(|key| incident.get(**key).is_some())
        .map(|key| vec![format!("{key}:"), cell(&incident, key)])
        .collect();
    print!("{}", render(&["INCIDENT", ""], &rows));
    println!();
    let rows = rows_of(
        &escalations,
        &[
            "escalation_level",
            "status",
            "scheduled_at",
            "executed_at",
            "cancelled_at",
        ],
    );
    if rows.is_empty() {
        println!("no escalations");
    } else {
        print!(
            "{}",
            render(
                &["LEVEL", "STATUS", "SCHEDULED", "EXECUTED", "CANCELLED"],
                &rows
            )
        );
    }
    println!();
    let rows: Vec<Vec<String>> = timeline
        .as_array()
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .map(|entry| {
            let detail = match &entry["detail"] {
                Value::Object(detail) if detail.is_empty() => String::new(),
                Value::Null => String::new(),
                detail => detail.to_string(),
            };
            vec![
                cell(entry, "at"),
                cell(entry, "kind"),
                cell(entry, "actor"),
                detail,
            ]
        })
        .collect();
    print!("{}", render(&["AT", "KIND", "ACTOR", "DETAIL"], &rows));
    Ok(())
}

/// A row of `keys` for each object of the array `list`.
fn rows_of(list: &Value, keys: &[&str]) -> Vec<Vec<String>> {
    list.as_array()
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .map(|object| keys.iter().map(|key| cell(object, key)).collect())
        .collect()
}
