//! The bare programs the HTTP benchmarks are measured against (`cargo xtask bench` starts them
//! as child processes, on loopback, and stops them):
//!
//! - `xtask baseline-http PORT BODY_FILE`: actix-web answering every `GET` with the bytes of
//!   `BODY_FILE` as JSON (B4's baseline: no authentication, no middleware, no store);
//! - `xtask baseline-sqlx PORT DATABASE_URL`: actix-web answering `GET /api/v1/tasks/{id}` with
//!   the task's row, read by primary key through a sqlx pool and turned into JSON by PostgreSQL
//!   (B5's baseline).
//!
//! Both use actix-web's defaults (a worker per core), as the server does.

use actix_web::{web, App, HttpResponse, HttpServer};

/// Serves the bytes of `body_file` as JSON on `127.0.0.1:port` until killed.
pub fn http(args: &[String]) -> anyhow::Result<()> {
    let [port, body_file] = args else {
        anyhow::bail!("usage: xtask baseline-http PORT BODY_FILE");
    };
    let port: u16 = port.parse()?;
    let body = web::Bytes::from(std::fs::read(body_file)?);
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(move || {
            let body = body.clone();
            App::new().default_service(web::to(move || {
                let body = body.clone();
                async move {
                    HttpResponse::Ok()
                        .content_type("application/json")
                        .body(body)
                }
            }))
        })
        .bind(("127.0.0.1", port))?
        .run()
        .await
    })?;
    Ok(())
}

/// Serves tasks by primary key from `database_url` on `127.0.0.1:port` until killed.
pub fn sqlx(args: &[String]) -> anyhow::Result<()> {
    let [port, database_url] = args else {
        anyhow::bail!("usage: xtask baseline-sqlx PORT DATABASE_URL");
    };
    let port: u16 = port.parse()?;
    actix_web::rt::System::new().block_on(async move {
        // The pool the server uses by default: 16 connections.
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(16)
            .connect(database_url)
            .await?;
        HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(pool.clone()))
                .route("/api/v1/tasks/{id}", web::get().to(task))
        })
        .bind(("127.0.0.1", port))?
        .run()
        .await?;
        anyhow::Ok(())
    })
}

async fn task(pool: web::Data<sqlx::PgPool>, id: web::Path<uuid::Uuid>) -> HttpResponse {
    let row: Result<Option<String>, _> =
        sqlx::query_scalar("SELECT row_to_json(t)::text FROM tasks t WHERE id = $1")
            .bind(id.into_inner())
            .fetch_optional(pool.get_ref())
            .await;
    match row {
        Ok(Some(json)) => HttpResponse::Ok()
            .content_type("application/json")
            .body(json),
        Ok(None) => HttpResponse::NotFound().finish(),
        Err(_) => HttpResponse::ServiceUnavailable().finish(),
    }
}
