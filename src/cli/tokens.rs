//! `klaxon token list|revoke`: API tokens, over the API (admin). `token create` stays local: it
//! writes to the database, so it works before any server or token exists (`src/main.rs`).

use uuid::Uuid;

use super::client::{parse, Client, RemoteError};
use super::table::{cell, render};
use super::Output;

/// Every token, revoked ones included, without secrets.
pub async fn list(client: &Client, output: Output) -> Result<(), RemoteError> {
    let answer = client.get(&["tokens"], &[]).await?;
    if output == Output::Json {
        println!("{answer}");
        return Ok(());
    }
    let tokens = parse(&answer)?["tokens"].take();
    let rows: Vec<Vec<String>> = tokens
        .as_array()
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .map(|token| {
            ["id", "name", "role", "user_id", "created_at", "revoked_at"]
                .iter()
                .map(|key| cell(token, key))
                .collect()
        })
        .collect();
    print!(
        "{}",
        render(&["ID", "NAME", "ROLE", "USER", "CREATED", "REVOKED"], &rows)
    );
    Ok(())
}

/// Revokes a token: it stops working at once, and is kept, marked revoked.
pub async fn revoke(client: &Client, id: Uuid) -> Result<(), RemoteError> {
    let token = parse(&client.delete(&["tokens", &id.to_string()]).await?)?;
    println!(
        "revoked token `{}` ({id}) at {}",
        cell(&token, "name"),
        cell(&token, "revoked_at")
    );
    Ok(())
}
