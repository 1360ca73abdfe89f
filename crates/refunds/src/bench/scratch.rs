//! The run's database: a fresh SQLite file in the run's temporary directory, or a PostgreSQL
//! database created on the given server for this run and dropped after it.

use std::path::Path;

use anyhow::Context;
use sqlx::{AnyConnection, Connection, Executor};

pub struct Scratch {
    /// What `serve --database-url` and the bench's own connections use.
    pub url: String,
    /// `sqlite` or `postgres`.
    pub kind: &'static str,
    /// PostgreSQL: the server URL and the scratch database's name, to drop it.
    postgres: Option<(String, String)>,
}

impl Scratch {
    pub fn sqlite(dir: &Path) -> Scratch {
        Scratch {
            url: format!("sqlite:{}", dir.join("bench.db").display()),
            kind: "sqlite",
            postgres: None,
        }
    }

    pub async fn postgres(server_url: &str) -> anyhow::Result<Scratch> {
        sqlx::any::install_default_drivers();
        let name = format!(
            "refunds_bench_{}_{}",
            std::process::id(),
            refunds_store::now_ms()
        );
        let mut conn = AnyConnection::connect(server_url)
            .await
            .context("cannot connect to the PostgreSQL server of --postgres-url")?;
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .with_context(|| format!("cannot create the scratch database {name}"))?;
        let _ = conn.close().await;
        Ok(Scratch {
            url: with_database(server_url, &name)?,
            kind: "postgres",
            postgres: Some((server_url.to_string(), name)),
        })
    }

    /// Drops a PostgreSQL scratch database (a SQLite file goes with its directory). Only
    /// reports a failure: the figures are already taken.
    pub async fn drop_database(&self) {
        let Some((server_url, name)) = &self.postgres else {
            return;
        };
        let dropped = async {
            let mut conn = AnyConnection::connect(server_url).await?;
            conn.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                .await?;
            conn.close().await
        }
        .await;
        if let Err(e) = dropped {
            tracing::warn!(database = %name, error = %e, "cannot drop the scratch database");
        }
    }
}

/// `server_url` with its database name replaced by `name`, its query string kept.
fn with_database(server_url: &str, name: &str) -> anyhow::Result<String> {
    let (base, query) = match server_url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (server_url, None),
    };
    let authority_start = base
        .find("://")
        .map(|i| i + 3)
        .context("--postgres-url must look like postgres://user@host:port/database")?;
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut url = format!("{}/{name}", &base[..path_start]);
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn the_database_name_is_replaced_and_the_rest_kept() {
        for (server, want) in [
            ("postgres://u@h:5432/postgres", "postgres://u@h:5432/x"),
            ("postgres://u@h:5432", "postgres://u@h:5432/x"),
            (
                "postgres://u@h/db?sslmode=disable",
                "postgres://u@h/x?sslmode=disable",
            ),
            ("postgresql://u:p@h:1/db", "postgresql://u:p@h:1/x"),
        ] {
            assert_eq!(with_database(server, "x").unwrap(), want, "{server}");
        }
        assert!(with_database("nonsense", "x").is_err());
    }
}
